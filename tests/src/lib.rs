//! Test harness for ethflow's end-to-end tests.
//!
//! A [`Rig`] builds hosts out of network namespaces joined by veth pairs or a
//! bridge, runs the real `irmd` (which spawns `ipcpd-eth`) in each, runs
//! programs inside them, keeps every log, and removes all of it on drop —
//! also when the test panics. Tests that need root fail loudly when they
//! cannot run, unless `ETHFLOW_SKIP_NETNS=1` is set.
//!
//! ```no_run
//! use ethflow_tests::Rig;
//! let Some(rig) = Rig::pair("example") else { return };
//! let _server = rig.b().serve("oecho", "oecho", &["--listen"]);
//! let done = rig.a().run_ok("oecho", &["-n", "oecho", "-m", "hi"]);
//! assert!(done.stdout.contains("hi"));
//! ```

pub mod bins;
pub mod capture;
pub mod clock;
pub mod forge;
pub mod liveness;
pub mod names;
pub mod netns;
pub mod parse;
pub mod proc;
pub mod procfs;
pub mod rig;
pub mod users;

pub use proc::{Finished, Proc};
pub use rig::{backend, wait_for_path, Host, Rig, RigBuilder, Topology, LAYER};
pub use users::User;

/// Checks that an oping run succeeded with every one of `count` pings
/// answered, and returns its statistics.
pub fn pings_all_answered(done: &Finished, count: u64) -> parse::PingStats {
    done.assert_success();
    let stats =
        parse::ping_stats(&done.stdout).unwrap_or_else(|e| panic!("{e}: {}", done.describe()));
    assert_eq!(
        (stats.transmitted, stats.received),
        (count, count),
        "not every ping was answered:\n{}",
        done.stdout
    );
    stats
}

/// On `rig`, `flowtest maxsdu` from a to a `flowtest serve --rounds 2` on b:
/// the flow carries an SDU of its max SDU intact, and one byte more is
/// refused with EMSGSIZE at `write`. Returns the max SDU the flow reported
/// (for the caller to hold against the link) and the client's output.
pub fn max_sdu_round(rig: &Rig) -> (usize, String) {
    let _server = rig
        .b()
        .serve("flowtest", "flowtest", &["serve", "--rounds", "2"]);
    let done = rig.a().run(
        "flowtest",
        &["maxsdu", "-n", "flowtest"],
        std::time::Duration::from_secs(60),
    );
    done.assert_success();
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("ok "))
        .expect("ok line");
    let max: usize = parse::kv_num(line, "max_sdu");
    assert!(done.stdout.contains("exact-ok"), "{}", done.stdout);
    let refused = done
        .stdout
        .lines()
        .find(|l| l.starts_with("oversize-refused"))
        .expect("refusal line");
    assert_eq!(
        parse::kv(refused, "code"),
        Some(libc::EMSGSIZE.to_string().as_str()),
        "{}",
        done.stdout
    );
    (max, done.stdout)
}
