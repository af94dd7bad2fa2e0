//! The timed checks of the liveness suite (`tests/tests/liveness.rs`), shared
//! with the same rows on secure flows (`tests/tests/secure.rs`).
//!
//! The client (`flowtest hold`) echoes once and blocks in `read`; the test
//! takes a CLOCK_MONOTONIC timestamp right before it acts; the client prints
//! the timestamp at which its read failed. The difference is the detection
//! time (it includes starting `ip` where the trigger is a command).

use std::time::Duration;

use crate::clock::ms_between;
use crate::parse::kv_num;
use crate::{Host, Proc, Rig};

pub const EFLOWDOWN: i32 = 1005;
pub const EFLOWPEER: i32 = 1006;

/// Liveness timeout for the rows where only the timeout can tell.
pub const SHORT_TIMEOUT_MS: u64 = 1000;

/// Starts the lingering echo server on host b under the name `oecho`.
pub fn lingering_server(rig: &Rig) -> Proc {
    rig.b().serve("oecho", "oecho", &["--listen", "--linger"])
}

/// Starts `flowtest hold` on `host` and returns once it blocks in its read.
pub fn blocked_client(host: &Host, timeout_ms: u64) -> Proc {
    let client = host.spawn(
        "flowtest",
        &["hold", "-n", "oecho", "--timeout", &timeout_ms.to_string()],
    );
    client.wait_for_stdout("ready", Duration::from_secs(10));
    // Let it enter the read, and let a keep-alive exchange happen.
    std::thread::sleep(Duration::from_millis(100));
    client
}

/// One timed row on `rig`: the lingering server on b, the client blocked
/// in its read on a (liveness timeout `timeout_ms`; 0: irmd's), then the
/// trigger `act`, right after the timestamp detection is measured from.
/// Returns how the read ended, and the server (it runs until dropped).
pub fn timed_row(rig: &Rig, timeout_ms: u64, act: impl FnOnce(&Rig, &Proc)) -> (Detection, Proc) {
    let server = lingering_server(rig);
    let client = blocked_client(rig.a(), timeout_ms);
    let t0 = crate::clock::monotonic_ns();
    act(rig, &server);
    (detection(&client, t0, Duration::from_secs(10)), server)
}

/// The row "peer IPCP restarted" on `rig`: as [`timed_row`], with b's IPCP
/// restarted ([`restart_peer_ipcp`]) and detection measured from the moment
/// the new one was up.
pub fn restart_row(rig: &Rig, timeout_ms: u64) -> (Detection, Proc) {
    let server = lingering_server(rig);
    let client = blocked_client(rig.a(), timeout_ms);
    let t_restart = restart_peer_ipcp(rig);
    (
        detection(&client, t_restart, Duration::from_secs(10)),
        server,
    )
}

/// How the client's blocked read ended, relative to `trigger_ns`.
pub struct Detection {
    pub code: i32,
    pub ms: f64,
    pub write_code: i32,
    /// The client's `ended …` line.
    pub line: String,
}

pub fn detection(client: &Proc, trigger_ns: u64, max_wait: Duration) -> Detection {
    let done = client.wait(max_wait);
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("ended"))
        .unwrap_or_else(|| {
            panic!(
                "client's read did not end with an error: {}",
                done.describe()
            )
        })
        .to_string();
    let write = done
        .stdout
        .lines()
        .find(|l| l.starts_with("write "))
        .unwrap_or("write code=-1");
    Detection {
        code: kv_num(&line, "code"),
        ms: ms_between(trigger_ns, kv_num(&line, "t_ns")),
        write_code: kv_num(write, "code"),
        line,
    }
}

/// Asserts the cause and that detection took at most `max_ms` (and not less than `min_ms`).
pub fn assert_detected(row: &str, d: &Detection, code: i32, min_ms: f64, max_ms: f64) {
    println!("{row}: detected after {:.1} ms: {}", d.ms, d.line);
    assert_eq!(d.code, code, "{row}: wrong error: {}", d.line);
    assert_eq!(
        d.write_code, code,
        "{row}: a write on the dead flow must fail the same way"
    );
    assert!(
        d.ms <= max_ms,
        "{row}: detected after {:.1} ms, bound {max_ms} ms",
        d.ms
    );
    assert!(
        d.ms >= min_ms,
        "{row}: detected after {:.1} ms, before {min_ms} ms was possible",
        d.ms
    );
}

/// The bound for rows only the liveness timeout can detect: timeout + timeout/4 + 50 ms.
pub fn peer_bound(timeout_ms: u64) -> f64 {
    (timeout_ms + timeout_ms / 4 + 50) as f64
}

/// Earliest a timeout can fire after the peer falls silent: it may have been
/// quiet for up to timeout/4 already (then a keep-alive was due).
pub fn peer_earliest(timeout_ms: u64) -> f64 {
    (timeout_ms - timeout_ms / 4) as f64 - 50.0
}

/// Kill host b's IPCP and bootstrap a new one (`eth-b2`) in the same layer;
/// returns the CLOCK_MONOTONIC time the new one was up, once the killed one
/// is gone.
pub fn restart_peer_ipcp(rig: &Rig) -> u64 {
    use nix::sys::signal::Signal;
    let b = rig.b();
    let old = b.signal_ipcp(Signal::SIGKILL);
    // irmd may need a moment to notice its IPCP died before a new one can start.
    let mut restarted = None;
    for _ in 0..100 {
        let done = b.bootstrap_as("eth-b2");
        if done.success() {
            restarted = Some(crate::clock::monotonic_ns());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t_restart = restarted.expect("a new IPCP could not be bootstrapped on host b");
    // With `queues` > 1 irmd hears of the death (the channel closes first)
    // while the kernel still tears down the dead IPCP's other packet sockets.
    let gone = std::time::Instant::now() + Duration::from_secs(2);
    while b.ipcp_pids().contains(&old) && std::time::Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !b.ipcp_pids().contains(&old),
        "the killed IPCP is still there"
    );
    t_restart
}

/// The bound of the restarted-IPCP row: the next keep-alive (within a
/// quarter of the timeout) hits the new IPCP, which does not know the
/// endpoint and says so; one round trip later the flow is down.
pub fn restart_bound(timeout_ms: u64) -> f64 {
    (timeout_ms / 4 + 50) as f64
}
