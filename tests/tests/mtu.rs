//! End-to-end: the link MTU shrinks under a running flow (issue 11,
//! decision 0030). The application learns its flow's new max SDU (a larger
//! write fails with EMSGSIZE), smaller SDUs keep flowing, every SDU the
//! application wrote is either sent or counted as dropped on its flow, and
//! a raised MTU gives the flow its allocation's limit back.

use std::time::{Duration, Instant};

use ethflow_tests::netns::ip_in;
use ethflow_tests::parse::kv_num;
use ethflow_tests::rig::Host;
use ethflow_tests::Rig;
use nix::sys::signal::Signal;

/// ethflow's header, per docs/wire.md: max SDU = MTU - 20.
const ETHFLOW_HEADER: usize = 20;
const OLD_MTU: u32 = 1500;
const NEW_MTU: u32 = 1200;
const LONG: Duration = Duration::from_secs(60);
/// How long a's IPCP is stopped while its MTU shrinks; the writer writes an
/// SDU of the old max every 2 ms meanwhile.
const IPCP_PAUSE: Duration = Duration::from_millis(300);

fn set_mtu(h: &Host, mtu: u32) {
    ip_in(
        h.ns(),
        &["link", "set", "dev", h.ifname(), "mtu", &mtu.to_string()],
    );
    h.expect_log(&format!("to {mtu}."), Duration::from_secs(5));
}

/// The one flow `irm flow list` shows on `h`: (tx_sdus, rx_sdus, dropped).
fn flow_counters(h: &Host) -> (u64, u64, u64) {
    let flows = h.flows();
    assert_eq!(
        flows.len(),
        1,
        "host {}: one flow expected: {flows:?}",
        h.name()
    );
    let n = |k: &str| {
        flows[0][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {flows:?}"))
    };
    (n("tx_sdus"), n("rx_sdus"), n("dropped"))
}

#[test]
fn a_shrunk_mtu_reaches_the_writer_and_nothing_is_lost_uncounted() {
    let Some(rig) = Rig::builder("a_shrunk_mtu_reaches_the_writer")
        .mtu(OLD_MTU)
        .build()
    else {
        return;
    };
    let go = rig.dir().join("mtu-go");
    let regrow = rig.dir().join("mtu-regrow");
    let finish = rig.dir().join("mtu-finish");
    let _server = rig.b().serve("flowtest", "flowtest", &["serve"]);
    let probe = rig.a().spawn(
        "mtuprobe",
        &[
            "-n",
            "flowtest",
            "--go",
            go.to_str().unwrap(),
            "--regrow",
            regrow.to_str().unwrap(),
            "--finish",
            finish.to_str().unwrap(),
        ],
    );
    let ready = probe.wait_for_stdout("ready ", LONG);
    let old_max: usize = kv_num(&ready, "max_sdu");
    assert_eq!(old_max, OLD_MTU as usize - ETHFLOW_HEADER, "{ready}");

    // The writer's side first: while it still writes SDUs of the old max,
    // its link shrinks. (Lowering the receiver's side first would make veth
    // drop the larger frames on their way in, where no IPCP can count them.)
    // a's IPCP is stopped meanwhile, so SDUs of the old max are certainly in
    // flight — in the flow's ring, written before the IPCP could say the
    // limit changed — when it hears of the new MTU.
    rig.a().signal_ipcp(Signal::SIGSTOP);
    ip_in(
        rig.a().ns(),
        &[
            "link",
            "set",
            "dev",
            rig.a().ifname(),
            "mtu",
            &NEW_MTU.to_string(),
        ],
    );
    std::thread::sleep(IPCP_PAUSE);
    rig.a().signal_ipcp(Signal::SIGCONT);
    rig.a()
        .expect_log(&format!("to {NEW_MTU}."), Duration::from_secs(5));
    let refused = probe.wait_for_stdout("refused len=", LONG);
    let in_flight: u64 = kv_num(&refused, "written");
    let new_max = NEW_MTU as usize - ETHFLOW_HEADER;
    assert_eq!(kv_num::<usize>(&refused, "max_sdu"), new_max, "{refused}");
    assert_eq!(
        kv_num::<i32>(&refused, "code"),
        libc::EMSGSIZE,
        "the write of an SDU above the new limit must fail with EMSGSIZE: {refused}"
    );
    probe.wait_for_stdout("drained ", LONG);
    set_mtu(rig.b(), NEW_MTU);
    std::fs::write(&go, b"").unwrap();

    let after = probe.wait_for_stdout("after ", LONG);
    assert_eq!(kv_num::<usize>(&after, "max_sdu"), new_max, "{after}");
    assert!(after.contains("oversize-refused"), "{after}");

    // Raised again (the receiver's side first): back to the allocation's
    // limit, and no further.
    set_mtu(rig.b(), OLD_MTU);
    set_mtu(rig.a(), OLD_MTU);
    std::fs::write(&regrow, b"").unwrap();
    let regrown = probe.wait_for_stdout("regrown ", LONG);
    assert_eq!(kv_num::<usize>(&regrown, "max_sdu"), old_max, "{regrown}");
    let done = probe.wait_for_stdout("done ", LONG);
    let written: u64 = kv_num(&done, "written");

    // Every SDU the writer wrote left a's IPCP or is counted on its flow,
    // and b received every one a sent (less any the kernel refused in the
    // instant between the MTU change and the IPCP hearing of it, which the
    // backend counts). Counters reach irmd within a report interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a_tx, _, a_dropped) = flow_counters(rig.a());
        let (_, b_rx, _) = flow_counters(rig.b());
        let refused = rig
            .a()
            .ipcp_counters()
            .get("tx_refused")
            .copied()
            .unwrap_or(0);
        let balanced = a_tx + a_dropped == written && b_rx + refused == a_tx;
        // On backend raw the kernel sends nothing above the MTU: what was in
        // flight is counted, on the flow (dropped) or by the backend
        // (refused). (Backend xdp on veth may still send such a frame, which
        // b, whose MTU was still the old one, receives.)
        let counted = ethflow_tests::backend() != "raw" || a_dropped + refused > 0;
        if balanced && counted {
            eprintln!(
                "written {written} ({in_flight} of the old max in phase 2): sent {a_tx}, dropped on the flow {a_dropped}, refused by the kernel {refused}, received {b_rx}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SDUs lost uncounted (balanced: {balanced}; on raw, in flight counted: {counted}): written {written} ({in_flight} of the old max in phase 2), a's flow \
             sent {a_tx} and dropped {a_dropped}, the kernel refused {refused}, b's flow received {b_rx}\n{}",
            probe.stdout()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&finish, b"").unwrap();
    probe.wait(LONG).assert_success();
}
