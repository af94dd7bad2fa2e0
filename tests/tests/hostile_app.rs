//! End-to-end: a hostile application harms only its own flows (issue 10).
//!
//! While a flow between the two hosts carries pings, `hostileapp` (tests'
//! helper program) gets flows through the irm library and attacks them: the
//! wake-up freeze (O_NONBLOCK cleared on every fd it holds, full pipes, every
//! sleeping/waiting flag set, nothing ever drained), garbage indices and
//! lengths in its tx ring, and a forked child writing as a second producer.
//! The attacker is an ordinary member of the `ethflow` group (not root).
//! The pings lose nothing, irmd keeps answering, each corrupted flow ends
//! DOWN on both sides with one IPCP log line, and the IPCP returns to idle.

use std::time::{Duration, Instant};

use ethflow_tests::{procfs, Rig, User};

const LONG: Duration = Duration::from_secs(60);
const PINGS: u64 = 2000;

/// How long an irm command may take while an application attacks (a frozen
/// irmd would never answer at all).
const IRM_BOUND: Duration = Duration::from_secs(2);

fn timed_irm(rig: &Rig, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    rig.a().irm_ok(args);
    t0.elapsed()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_hostile_application_harms_only_its_own_flows() {
    let Some(rig) = Rig::pair("hostile_app") else {
        return;
    };
    let _ping_server = rig.b().serve("oping", "oping", &["--listen"]);
    let echo = rig.b().serve("flowtest", "hostile-echo", &["serve"]);
    // The peer's side of each hostile flow ends DOWN (EFLOWDOWN) there too.
    let peer_ended = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = count(&echo.stdout(), "code=1005");
            if got >= n || Instant::now() >= deadline {
                assert_eq!(got, n, "flows ended DOWN at the peer:\n{}", echo.stdout());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let ipcp_a = rig.a().ipcp_pid();
    let ipcp_b = rig.b().ipcp_pid();
    let ping = rig.a().spawn(
        "oping",
        &["-n", "oping", "-c", &PINGS.to_string(), "-i", "5"],
    );
    std::thread::sleep(Duration::from_millis(300));

    // 1. The wake-up freeze, with irmd asked to answer in the middle of it.
    let freeze = rig.a().spawn_as(
        User::Member,
        "hostileapp",
        &["-n", "hostile-echo", "--mode", "freeze", "--secs", "3"],
    );
    freeze.wait_for_stdout("freeze pipes_filled=", Duration::from_secs(10));
    let status = std::fs::read_to_string(format!("/proc/{}/status", freeze.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(1) == Some(&User::Member.uid().to_string()),
        "the attacker should be the member: {uid_line}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    for args in [&["ipcp", "list"][..], &["flow", "list"][..]] {
        let took = timed_irm(&rig, args);
        assert!(
            took < IRM_BOUND,
            "irm {args:?} took {took:?} during the attack"
        );
    }
    let done = freeze.wait(Duration::from_secs(20));
    done.assert_success();
    done.assert_stdout_has("freeze-done");

    peer_ended(1);

    // 2. Garbage in the tx ring; 3. a forked second producer.
    let corrupt = rig.a().run_as(
        User::Member,
        "hostileapp",
        &["-n", "hostile-echo", "--mode", "corrupt"],
        LONG,
    );
    corrupt.assert_success();
    corrupt.assert_stdout_has("down after_ms=");
    let fork = rig.a().run_as(
        User::Member,
        "hostileapp",
        &["-n", "hostile-echo", "--mode", "fork"],
        LONG,
    );
    fork.assert_success();
    assert!(
        fork.stdout.contains("child library_refused=true")
            && fork.stdout.contains("down after_ms="),
        "{}",
        fork.describe()
    );
    peer_ended(3);

    // A child that merely drops its copy of a flow leaves the parent's alone.
    let fork_drop = rig.a().run_as(
        User::Member,
        "hostileapp",
        &["-n", "hostile-echo", "--mode", "fork-drop"],
        LONG,
    );
    fork_drop.assert_success();
    fork_drop.assert_stdout_has("parent-flow-works");

    // The other flow lost nothing.
    let pinged = ping.wait(LONG);
    let stats = ethflow_tests::pings_all_answered(&pinged, PINGS);
    assert_eq!(stats.loss_percent, 0.0);

    // Each corrupt flow: one IPCP line, irmd told (the peer's side was checked above).
    let log_a = rig.a().irmd_log();
    assert_eq!(
        count(&log_a, "corrupted its shared memory"),
        2,
        "want one IPCP line per corrupt flow:\n{log_a}"
    );
    assert_eq!(count(&log_a, "down: Corrupt flow memory."), 2, "{log_a}");

    // Same IPCPs, idle again, still allocating.
    assert_eq!((rig.a().ipcp_pid(), rig.b().ipcp_pid()), (ipcp_a, ipcp_b));
    let window = Duration::from_secs(2);
    let before = [ipcp_a, ipcp_b].map(|p| procfs::cpu_ticks(p).expect("IPCP stat"));
    std::thread::sleep(window);
    let after = [ipcp_a, ipcp_b].map(|p| procfs::cpu_ticks(p).expect("IPCP stat"));
    let budget = procfs::ticks_per_second() * window.as_secs() / 10;
    for i in 0..2 {
        let used = after[i] - before[i];
        assert!(
            used <= budget,
            "IPCP {i} used {used} ticks in {window:?} after the attacks (budget {budget})"
        );
    }
    rig.a().run_ok("flowtest", &["alloc", "-n", "hostile-echo"]);
    assert!(timed_irm(&rig, &["ipcp", "list"]) < IRM_BOUND);
}

/// irmd writes the wake-ups of every flow of an IPCP that dies (to mark them
/// DOWN). An application that froze its own wake-up fds must not freeze irmd
/// there: irmd logs the death, answers, and the frozen application's flow is
/// DOWN like every other.
#[test]
fn irmd_marks_a_frozen_applications_flow_down_when_its_ipcp_dies() {
    let Some(rig) = Rig::pair("hostile_app_ipcp_dies") else {
        return;
    };
    let _echo = rig.b().serve("flowtest", "hostile-echo", &["serve"]);
    let freeze = rig.a().spawn_as(
        User::Member,
        "hostileapp",
        &["-n", "hostile-echo", "--mode", "freeze", "--secs", "4"],
    );
    freeze.wait_for_stdout("freeze pipes_filled=", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    rig.a().signal_ipcp(nix::sys::signal::Signal::SIGKILL);
    rig.a()
        .expect_log("its flows are down.", Duration::from_secs(5));
    for args in [&["ipcp", "list"][..], &["flow", "list"][..]] {
        let took = timed_irm(&rig, args);
        assert!(
            took < IRM_BOUND,
            "irm {args:?} took {took:?} after the IPCP died"
        );
    }
    let done = freeze.wait(Duration::from_secs(20));
    done.assert_success();
    assert!(
        done.stdout.contains("freeze-done") && done.stdout.contains("state=Down"),
        "{}",
        done.describe()
    );
}
