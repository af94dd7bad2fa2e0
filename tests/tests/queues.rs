//! End-to-end: `irm ipcp bootstrap ... queues <n>` (issue 11, multi-queue).
//! On a veth pair with four receive and send queues per end, IPCPs with
//! `queues 4` carry eight flows flooding at once: each flow's SDUs arrive in
//! order, none lost (the flooder keeps a bounded window in flight, so a loss
//! is the stack's), and every queue's worker carried frames both ways, as
//! its counters in `irm ipcp list --json` show.
//!
//! The flow and liveness suites also run with queues: scripts/test.sh runs a
//! few of them with `ETHFLOW_TEST_QUEUES=4` (the rig then makes every veth
//! pair with four queues and bootstraps with `queues 4`).
//!
//! This machine has two cores: the tests show correctness with four workers,
//! not a speed-up (docs/decisions/0031-receive-queues.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ethflow_tests::{Host, Rig};

const QUEUES: u16 = 4;
const FLOWS: usize = 8;
const SDUS: u64 = 3000;
const LONG: Duration = Duration::from_secs(90);

/// The IPCP's counters once every queue shows frames both ways (counters
/// reach irmd once a second), or as they are after a bounded wait.
fn queue_counters(host: &Host) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = host.ipcp_counters();
        let all = (0..QUEUES).all(|q| {
            c.get(&format!("q{q}_rx_frames")).copied().unwrap_or(0) > 0
                && c.get(&format!("q{q}_tx_frames")).copied().unwrap_or(0) > 0
        });
        if all || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn flood_keeps_order_on_every_queue(test: &str, backend: &str) {
    let Some(rig) = Rig::builder(test).queues(QUEUES).bare_ipcps().build() else {
        return;
    };
    // The rig's queues: the bootstrap says `queues 4`.
    for h in rig.hosts() {
        h.bootstrap_ipcp(h.ipcp_name(), backend, &[])
            .assert_success();
    }
    let flows = FLOWS.to_string();
    let sink = rig
        .b()
        .serve("seqflood", "seqflood", &["sink", "--flows", &flows]);
    let sdus = SDUS.to_string();
    let flood = rig.a().run(
        "seqflood",
        &[
            "flood", "-n", "seqflood", "--flows", &flows, "--sdus", &sdus, "--size", "200",
        ],
        LONG,
    );
    let sunk = sink.wait(Duration::from_secs(30));
    flood.assert_success();
    sunk.assert_success();
    let in_order = sunk
        .stdout
        .lines()
        .filter(|l| l.starts_with("in-order") && l.ends_with(&format!("sdus={SDUS}")))
        .count();
    assert_eq!(
        in_order, FLOWS,
        "not every flow arrived whole and in order:\n{}",
        sunk.stdout
    );
    for h in rig.hosts() {
        let c = queue_counters(h);
        println!("host {} counters: {c:?}", h.name());
        assert_eq!(
            c.get("queues").copied(),
            Some(u64::from(QUEUES)),
            "host {}: {c:?}",
            h.name()
        );
        for q in 0..QUEUES {
            for dir in ["rx", "tx"] {
                let n = c.get(&format!("q{q}_{dir}_frames")).copied().unwrap_or(0);
                assert!(
                    n > 0,
                    "host {}: queue {q} carried no {dir} frames: {c:?}\n{}",
                    h.name(),
                    rig.logs()
                );
            }
            let drops = c.get(&format!("q{q}_forward_drops")).copied().unwrap_or(0);
            assert_eq!(drops, 0, "host {}: queue {q}: {c:?}", h.name());
        }
    }
}

#[test]
fn raw_queues_keep_each_flow_in_order_and_use_every_worker() {
    flood_keeps_order_on_every_queue("raw_queues_keep_each_flow_in_order", "raw");
}

#[test]
fn xdp_queues_keep_each_flow_in_order_and_use_every_worker() {
    flood_keeps_order_on_every_queue("xdp_queues_keep_each_flow_in_order", "xdp");
}

#[test]
fn one_queue_is_the_single_threaded_ipcp() {
    // veth's default single queue: no `queues` keyword, no worker, no
    // per-queue counters (exactly the IPCP without the feature).
    let Some(rig) = Rig::builder("one_queue_is_the_single_threaded_ipcp").build() else {
        return;
    };
    if ethflow_tests::rig::queues().is_some() {
        return;
    }
    let c = rig.a().ipcp_counters();
    assert!(
        !c.keys().any(|k| k == "queues" || k.starts_with("q0_")),
        "{c:?}"
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", ipcp_pid(rig.a())))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(threads, 1, "the IPCP runs {threads} threads");
}

/// The pid of the host's IPCP (irmd's child running ipcpd-eth).
fn ipcp_pid(host: &Host) -> i32 {
    let irmd = host.irmd_pid();
    let children =
        std::fs::read_to_string(format!("/proc/{irmd}/task/{irmd}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "ipcpd-eth")
        })
        .unwrap_or_else(|| panic!("no ipcpd-eth child of irmd {irmd}"))
}
