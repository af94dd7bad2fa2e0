//! End-to-end: what applications and peers see when a daemon dies or is
//! stopped, and an irmd restarted on the same socket path (issue 14,
//! "Restarts"). A client streams SDUs (`flowtest stream`: a writer every
//! millisecond, a reader of the echoes, a FlowSet watching liveness) to an
//! echo server on the other host while the test kills or stops a daemon,
//! by the pid the rig recorded.

use std::time::Duration;

use ethflow_tests::clock::{monotonic_ns, ms_between};
use ethflow_tests::parse::{kv, kv_num};
use ethflow_tests::{procfs, Host, Proc, Rig};
use nix::sys::signal::Signal;

/// Errors from docs/DESIGN numbering.
const EIRMD: i32 = 1002;
const EFLOWDOWN: i32 = 1005;

/// How soon every part of the application must know (ms). The flows' keep-
/// alive timeout is irmd's default, 120 s: only a direct signal (hang-up,
/// state word, DEALLOC frame) can meet this.
const BOUND_MS: f64 = 1000.0;

/// A stream from `a` to an echo server on `b`, flowing.
fn stream(rig: &Rig) -> (Proc, Proc) {
    let server = rig.b().serve("flowtest", "echo", &["serve"]);
    let client = rig.a().spawn(
        "flowtest",
        &["stream", "-n", "echo", "--interval-us", "1000"],
    );
    client.wait_for_stdout("streaming", Duration::from_secs(10));
    // Some traffic in flight before the test acts.
    std::thread::sleep(Duration::from_millis(300));
    (server, client)
}

/// What the streaming client saw after `t0`.
struct Seen {
    write_ms: f64,
    write_code: i32,
    read_ms: f64,
    read_code: i32,
    event_ms: f64,
    event: String,
    accepted_after: u64,
    out: String,
}

fn seen(client: &Proc, t0: u64) -> Seen {
    let done = client.wait(Duration::from_secs(20));
    let out = done.stdout.clone();
    let line = |word: &str| {
        out.lines()
            .find(|l| l.starts_with(word))
            .unwrap_or_else(|| panic!("no {word} line: {}", done.describe()))
            .to_string()
    };
    let (w, r, e, a) = (
        line("write-failed"),
        line("read-failed"),
        line("event"),
        line("after-failure"),
    );
    Seen {
        write_ms: ms_between(t0, kv_num(&w, "t_ns")),
        write_code: kv_num(&w, "code"),
        read_ms: ms_between(t0, kv_num(&r, "t_ns")),
        read_code: kv_num(&r, "code"),
        event_ms: ms_between(t0, kv_num(&e, "t_ns")),
        event: kv(&e, "kind").unwrap_or_default().to_string(),
        accepted_after: kv_num(&a, "accepted"),
        out,
    }
}

/// Write, read and the event set all learned within the bound, with `code`.
fn assert_told(row: &str, s: &Seen, code: i32) {
    eprintln!(
        "{row}: write {:.1} ms (code {}), read {:.1} ms (code {}), event {} {:.1} ms",
        s.write_ms, s.write_code, s.read_ms, s.read_code, s.event, s.event_ms
    );
    assert_eq!(s.write_code, code, "{row}: write error:\n{}", s.out);
    assert_eq!(s.read_code, code, "{row}: read error:\n{}", s.out);
    assert_eq!(s.event, "Down", "{row}: FlowSet event:\n{}", s.out);
    for (what, ms) in [
        ("write", s.write_ms),
        ("read", s.read_ms),
        ("event", s.event_ms),
    ] {
        assert!(
            (0.0..BOUND_MS).contains(&ms),
            "{row}: {what} learned after {ms:.1} ms:\n{}",
            s.out
        );
    }
    assert_eq!(
        s.accepted_after, 0,
        "{row}: writes accepted after the failure:\n{}",
        s.out
    );
}

/// The peer host's irmd logs the flow down because the peer deallocated
/// it (a DEALLOC frame), within the bound of `t0`.
fn assert_peer_told(host: &Host, t0: u64) {
    let line = host.expect_log("down: Peer deallocated", Duration::from_secs(5));
    let ms = ms_between(t0, monotonic_ns());
    eprintln!(
        "peer host {} told ({ms:.0} ms, polled): {line}",
        host.name()
    );
    // Polled after the fact, so this is an upper bound; the keep-alive
    // timeout (120 s) could not have fired yet.
    assert!(ms < 5_000.0, "peer told only after {ms:.0} ms: {line}");
}

/// A live process (a zombie left to a non-reaping init counts as gone).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.get(s.rfind(')')? + 1..)?
                .split_whitespace()
                .next()
                .map(|st| st != "Z")
        })
        .unwrap_or(false)
}

fn wait_gone(pid: i32, bound: Duration) -> bool {
    let deadline = std::time::Instant::now() + bound;
    while running(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn irmd_killed_flows_fail_with_eirmd_at_once() {
    let Some(rig) = Rig::pair("irmd_killed_flows_fail_with_eirmd_at_once") else {
        return;
    };
    let (_server, client) = stream(&rig);
    let ipcp = rig.a().ipcp_pid();
    let t0 = monotonic_ns();
    rig.a().kill_irmd();
    let s = seen(&client, t0);
    assert_told("irmd SIGKILL", &s, EIRMD);
    assert!(
        wait_gone(ipcp, Duration::from_secs(2)),
        "the IPCP outlived its irmd"
    );
    // The IPCP told the peer before it exited.
    assert_peer_told(rig.b(), t0);
    rig.a().expect_log(
        "deallocates its 1 flows: irmd is gone",
        Duration::from_secs(1),
    );
}

/// irmd and its IPCP killed together (as SIGKILL to a whole service): no
/// daemon is left to set a state word, the library still knows.
#[test]
fn irmd_and_ipcp_killed_together_fail_with_eirmd() {
    let Some(rig) = Rig::pair("irmd_and_ipcp_killed_together_fail_with_eirmd") else {
        return;
    };
    let (_server, client) = stream(&rig);
    let ipcp = rig.a().ipcp_pid();
    let t0 = monotonic_ns();
    rig.a().kill_irmd();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(ipcp), Signal::SIGKILL);
    let s = seen(&client, t0);
    assert_told("irmd and ipcpd SIGKILL", &s, EIRMD);
}

#[test]
fn ipcp_killed_flows_fail_with_eflowdown_at_once() {
    let Some(rig) = Rig::pair("ipcp_killed_flows_fail_with_eflowdown_at_once") else {
        return;
    };
    let (_server, client) = stream(&rig);
    let t0 = monotonic_ns();
    rig.a().signal_ipcp(Signal::SIGKILL);
    let s = seen(&client, t0);
    assert_told("ipcpd SIGKILL", &s, EFLOWDOWN);
    rig.a()
        .expect_log("its flows are down.", Duration::from_secs(1));
}

#[test]
fn ipcp_stopped_tells_the_peer() {
    let Some(rig) = Rig::pair("ipcp_stopped_tells_the_peer") else {
        return;
    };
    let (_server, client) = stream(&rig);
    let t0 = monotonic_ns();
    let pid = rig.a().signal_ipcp(Signal::SIGTERM);
    let s = seen(&client, t0);
    assert_told("ipcpd SIGTERM", &s, EFLOWDOWN);
    assert_peer_told(rig.b(), t0);
    assert!(
        wait_gone(pid, Duration::from_secs(2)),
        "the IPCP still runs"
    );
}

#[test]
fn irmd_stopped_tells_the_apps_and_the_peer() {
    let Some(rig) = Rig::pair("irmd_stopped_tells_the_apps_and_the_peer") else {
        return;
    };
    let (_server, client) = stream(&rig);
    let t0 = monotonic_ns();
    rig.a().signal_irmd(Signal::SIGTERM);
    let s = seen(&client, t0);
    assert_told("irmd SIGTERM", &s, EIRMD);
    assert_peer_told(rig.b(), t0);
    rig.a().expect_log("irmd stopped.", Duration::from_secs(5));
    assert!(!rig.a().socket().exists(), "socket left behind");
}

/// irmd killed with SIGKILL leaves its socket file behind; started again on
/// the same path with the same arguments it takes over the path, and a new
/// flow works, with no manual cleanup. The old IPCP is gone by itself.
#[test]
fn restarted_irmd_accepts_new_flows() {
    let Some(rig) = Rig::pair("restarted_irmd_accepts_new_flows") else {
        return;
    };
    let (_server, client) = stream(&rig);
    let a = rig.a();
    let old_ipcp = a.ipcp_pid();
    a.kill_irmd();
    assert!(
        a.socket().exists(),
        "a killed irmd cannot remove its socket"
    );
    let _ = client.wait(Duration::from_secs(20));
    assert!(
        wait_gone(old_ipcp, Duration::from_secs(2)),
        "the old IPCP outlived its irmd"
    );
    a.start_irmd(&[]);
    // The path existed all along: wait for the new irmd to listen on it.
    a.expect_log("irmd listening on", Duration::from_secs(10));
    a.bootstrap().assert_success();
    let done = a.run_ok("flowtest", &["alloc", "-n", "echo"]);
    done.assert_stdout_has("allocated");
    let done = a.run_ok("oecho", &["-n", "echo", "-m", "after the restart"]);
    done.assert_stdout_has("after the restart");
    let left = procfs::children_named(a.irmd_pid(), "ipcpd-eth");
    assert_eq!(left.len(), 1, "IPCPs of the new irmd: {left:?}");
}
