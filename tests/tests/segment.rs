//! End-to-end: a hostile host on the segment (issue 9), without a layer key.
//!
//! Three hosts on a bridge: a and b run irmd and an IPCP (backend
//! `ETHFLOW_BACKEND`) and hold a flow; c runs no IPCP and attacks with
//! `forge`. MAC learning is off at c's bridge port, so frames c sends with a
//! forged source MAC cannot steer the bridge (a switch with port security):
//! what is tested is the IPCPs, not the switch. c is off-path: it sees
//! broadcasts and floods, not a's and b's unicast frames.
//!
//! Each test performs one attack of the issue and asserts its effect did not
//! happen: the flow stays up (no `down` line in either irmd log, every ping
//! answered), no forged SDU is delivered, the counters show what was refused.
//! docs/security.md maps each attack to its test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ethflow_tests::parse::kv_num;
use ethflow_tests::{pings_all_answered, Finished, Host, Proc, Rig};

const LONG: Duration = Duration::from_secs(120);
/// The predicted endpoint id of the first flow of a fresh IPCP before issue 9
/// (slot 0, generation 1): what an attacker guesses first.
const FIRST_EID: &str = "0x1000000";
/// A unicast MAC no host has: the bridge floods frames for it to every port.
const NOBODY: &str = "02:00:5e:10:20:30";
/// Flows one remote MAC may hold open on a responder: the allocator's
/// default per-MAC budget (`fa::Policy::max_inbound_flows_per_mac`).
const PER_MAC_FLOW_CAP: usize = 4096;

/// a and b with irmd and an IPCP, c bare; no learning at c's port.
fn attack_rig(test: &str) -> Option<Rig> {
    let rig = Rig::builder(test).hosts(3).bridge().bare().build()?;
    for h in &rig.hosts()[..2] {
        h.start_irmd(&[]);
        let done = h.bootstrap();
        assert!(
            done.success(),
            "host {}: bootstrap: {}\n{}",
            h.name(),
            done.describe(),
            h.irmd_log()
        );
    }
    rig.set_learning(2, false);
    Some(rig)
}

/// `forge ARGS` on `host`'s interface; returns the frames it sent.
fn forge(host: &Host, args: &[&str]) -> u64 {
    let mut all = vec!["--dev", host.ifname()];
    all.extend_from_slice(args);
    let done = host.run("forge", &all, LONG);
    done.assert_success();
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("sent="))
        .unwrap_or_else(|| panic!("no result line: {}", done.describe()))
        .to_string();
    eprintln!("forge {}: {line}", args.join(" "));
    kv_num(&line, "sent")
}

/// A continuous ping from a to b's `oping` server (`count` pings, 10 ms
/// apart); returns the server and the ping.
/// From `c`, 100 frames of each kind an IPCP acts on (keep-alive with a
/// random instance, dealloc and data for the first endpoint id) at 2000
/// frames/s, with `head` (addresses, tag) after the type; returns how many
/// left.
fn forge_each_kind(c: &Host, head: &[&str]) -> u64 {
    let mut sent = 0;
    for (ty, extra) in [
        ("keep-alive", vec!["--instance", "random"]),
        (
            "dealloc",
            vec!["--dst-eid", FIRST_EID, "--src-eid", FIRST_EID],
        ),
        ("data", vec!["--dst-eid", FIRST_EID, "--src-eid", FIRST_EID]),
    ] {
        let mut args = vec!["--type", ty];
        args.extend_from_slice(head);
        args.extend(["--count", "100", "--rate", "2000"]);
        args.extend(extra);
        sent += forge(c, &args);
    }
    sent
}

fn start_ping(rig: &Rig, count: u32) -> (Proc, Proc) {
    let server = rig.b().serve("oping", "oping", &["--listen"]);
    let ping = rig.a().spawn(
        "oping",
        &["-n", "oping", "-c", &count.to_string(), "-i", "10"],
    );
    // The flow is up before the attack starts.
    std::thread::sleep(Duration::from_millis(500));
    (server, ping)
}

/// The flow survived: every ping answered, a's irmd logged no flow going
/// down, and b's only the one deallocation a made when oping ended.
fn assert_flow_survived(rig: &Rig, ping: Proc, count: u32) {
    let done = ping.wait(LONG);
    pings_all_answered(&done, u64::from(count));
    let downs = |h: &Host| -> Vec<String> {
        h.irmd_log()
            .lines()
            .filter(|l| l.contains(" down: "))
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (downs(rig.a()), downs(rig.b()));
    assert!(a.is_empty(), "host a: {a:#?}");
    // b also holds the flows c itself asked for (the FLOW_REQ flood); those
    // may end. a's flow to b has b's lowest flow id.
    let first = rig
        .b()
        .irmd_log()
        .lines()
        .find_map(|l| {
            l.split("Flow on flow_id ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let ours: Vec<&String> = b
        .iter()
        .filter(|l| l.contains(&format!("Flow {first} down")))
        .collect();
    assert!(
        ours.len() <= 1 && ours.iter().all(|l| l.ends_with("down: Peer deallocated.")),
        "host b, flow {first}: {b:#?}"
    );
}

/// Counter changes over `attack`, read (bounded) until `settled` holds:
/// counters reach irmd at most a second after they change.
fn counters_over(
    host: &Host,
    attack: impl FnOnce(),
    settled: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let before = host.ipcp_counters();
    attack();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = host.ipcp_counters();
        let delta: BTreeMap<String, u64> = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .collect();
        if settled(&delta) || Instant::now() >= deadline {
            return delta;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn n(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

/// The first attack: one KEEP_ALIVE with b's MAC and a new
/// `sender_instance` took down every a–b flow. A claimed restart must be
/// believed only after a challenge the real b answers.
#[test]
fn forged_keep_alive_with_a_new_instance_does_not_end_the_flow() {
    let Some(rig) = attack_rig("forged_keep_alive_with_a_new_instance_does_not_end_the_flow")
    else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let (_server, ping) = start_ping(&rig, 300);
    for (src, dst) in [
        (b.mac(), a.mac()),
        (a.mac(), b.mac()),
        (b.mac(), "ff:ff:ff:ff:ff:ff".to_string()),
    ] {
        forge(
            c,
            &[
                "--type",
                "keep-alive",
                "--src",
                &src,
                "--dst",
                &dst,
                "--instance",
                "random",
                "--count",
                "100",
                "--rate",
                "200",
            ],
        );
    }
    assert_flow_survived(&rig, ping, 300);
}

/// DEALLOC and UNKNOWN_EID with the predictable endpoint ids of a fresh
/// IPCP's first flow, from the peer's MAC, must not end the flow.
#[test]
fn forged_dealloc_and_unknown_eid_with_predicted_eids_do_not_end_the_flow() {
    let Some(rig) =
        attack_rig("forged_dealloc_and_unknown_eid_with_predicted_eids_do_not_end_the_flow")
    else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let (_server, ping) = start_ping(&rig, 300);
    for ty in ["dealloc", "unknown-eid"] {
        for (src, dst) in [(b.mac(), a.mac()), (a.mac(), b.mac())] {
            forge(
                c,
                &[
                    "--type",
                    ty,
                    "--src",
                    &src,
                    "--dst",
                    &dst,
                    "--dst-eid",
                    FIRST_EID,
                    "--src-eid",
                    FIRST_EID,
                    "--count",
                    "50",
                    "--rate",
                    "200",
                ],
            );
        }
    }
    assert_flow_survived(&rig, ping, 300);
}

/// The rx SDU count of the host's one flow (`irm flow list --json`).
fn rx_sdus(host: &Host) -> u64 {
    let flows = host.flows();
    assert_eq!(flows.len(), 1, "host {}: {flows:#?}", host.name());
    flows[0]["rx_sdus"].as_u64().expect("rx_sdus")
}

/// DATA with predicted endpoint ids from the peer's MAC must not be
/// delivered as SDUs, in either direction.
#[test]
fn forged_data_is_not_delivered() {
    let Some(rig) = attack_rig("forged_data_is_not_delivered") else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let _server = b.serve("flowtest", "flowtest", &["serve"]);
    let client = a.spawn(
        "flowtest",
        &[
            "multi",
            "-n",
            "flowtest",
            "--flows",
            "1",
            "--rounds",
            "1",
            "--linger-ms",
            "8000",
        ],
    );
    client.wait_for_stdout("holding", LONG);
    let before = (rx_sdus(a), rx_sdus(b));
    for (src, dst) in [(b.mac(), a.mac()), (a.mac(), b.mac())] {
        forge(
            c,
            &[
                "--type",
                "data",
                "--src",
                &src,
                "--dst",
                &dst,
                "--dst-eid",
                FIRST_EID,
                "--src-eid",
                FIRST_EID,
                "--payload",
                "666f72676564",
                "--count",
                "100",
                "--rate",
                "1000",
            ],
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (rx_sdus(a), rx_sdus(b)),
        before,
        "forged DATA was delivered (rx_sdus of a, b)"
    );
    client.wait(LONG).assert_success();
}

/// Starts `forge --impostor NAME` on c for `secs` seconds.
fn start_impostor(c: &Host, name: &str, secs: &str) -> Proc {
    let impostor = c.spawn(
        "forge",
        &[
            "--dev",
            c.ifname(),
            "--impostor",
            name,
            "--duration-s",
            secs,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    impostor
}

/// An impostor on c answers NAME_QUERY and FLOW_REQ for b's name. Once a has
/// found b, a's allocations keep reaching b (each oping gets its echoes) and
/// none reaches the impostor: an answer already known is not displaced by a
/// stranger's (and after the cache time, the known holder is preferred).
#[test]
fn impostor_is_not_reached_while_the_name_holder_is_up() {
    let Some(rig) = attack_rig("impostor_is_not_reached_while_the_name_holder_is_up") else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let _server = b.serve("oping", "oping", &["--listen"]);
    pings_all_answered(
        &a.run("oping", &["-n", "oping", "-c", "2", "-i", "10"], LONG),
        2,
    );
    let impostor = start_impostor(c, "oping", "30");
    for i in 0..10 {
        let done = a.run("oping", &["-n", "oping", "-c", "3", "-i", "10"], LONG);
        assert!(
            done.success(),
            "allocation {i} did not reach b: {}",
            done.describe()
        );
        pings_all_answered(&done, 3);
    }
    let out = impostor.kill();
    eprintln!("impostor: {}", out.stdout);
    assert!(
        !out.stdout.contains("answer flow-req"),
        "a's FLOW_REQ reached the impostor:\n{}",
        out.stdout
    );
}

/// Without a key, a name a has never resolved goes to whoever answers its
/// broadcast query first — an impostor may. What holds: a notices that two
/// MACs answered for the name and logs both (the layer key is what stops
/// the impostor; see docs/security.md).
#[test]
fn impostor_racing_for_a_new_name_is_logged_as_a_conflict() {
    let Some(rig) = attack_rig("impostor_racing_for_a_new_name_is_logged_as_a_conflict") else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let _server = b.serve("oping", "oping", &["--listen"]);
    let impostor = start_impostor(c, "oping", "30");
    // The outcome of the race is not asserted: either may win it.
    let _ = a.run("oping", &["-n", "oping", "-c", "1", "-i", "10"], LONG);
    let line = a.expect_log("answered by", Duration::from_secs(5));
    let (b_mac, c_mac) = (b.mac(), c.mac());
    let hex = |m: &str| {
        m.split(':')
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert!(
        line.contains(&hex(&b_mac)) && line.contains(&hex(&c_mac)),
        "conflict line does not name b ({b_mac}) and c ({c_mac}): {line}"
    );
    impostor.kill();
}

/// Frames from c that a must not process, only count under `counter`:
/// `send(c, a's MAC, b's MAC)` sends them (returns how many) while a flow
/// from a runs, `expect` of them; a counts exactly those, and the flow lives.
fn counted_and_ignored(
    test: &str,
    counter: &str,
    expect: u64,
    send: impl Fn(&Host, &str, &str) -> u64,
) {
    let Some(rig) = attack_rig(test) else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let (_server, ping) = start_ping(&rig, 200);
    let (a_mac, b_mac) = (a.mac(), b.mac());
    let mut sent = 0;
    let delta = counters_over(
        a,
        || sent = send(c, &a_mac, &b_mac),
        |d| n(d, counter) >= expect,
    );
    assert_eq!(sent, expect);
    assert_eq!(n(&delta, counter), sent, "a's counters: {delta:?}");
    assert_flow_survived(&rig, ping, 200);
}

/// Frames for another unicast MAC (flooded by the bridge) and broadcasts
/// other than NAME_QUERY are not processed, only counted (`not_for_us`).
#[test]
fn frames_for_another_mac_are_counted_and_ignored() {
    counted_and_ignored(
        "frames_for_another_mac_are_counted_and_ignored",
        "not_for_us",
        900,
        |c, _, b_mac| {
            [NOBODY, "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"]
                .into_iter()
                .map(|dst| forge_each_kind(c, &["--src", b_mac, "--dst", dst]))
                .sum()
        },
    );
}

/// 802.1Q-tagged frames are not processed by an IPCP without `vlan`, only
/// counted (`other_vlan`) — both backends alike.
#[test]
fn tagged_frames_are_ignored_without_vlan() {
    counted_and_ignored(
        "tagged_frames_are_ignored_without_vlan",
        "other_vlan",
        600,
        |c, a_mac, b_mac| {
            ["7", "4094"]
                .into_iter()
                .map(|vlan| forge_each_kind(c, &["--vlan", vlan, "--src", b_mac, "--dst", a_mac]))
                .sum()
        },
    );
}

/// A layer bootstrapped with `vlan 7` carries flows in tagged frames and
/// ignores untagged frames and frames of other VLANs.
#[test]
fn a_vlan_layer_carries_flows_and_ignores_other_vlans() {
    let Some(rig) = Rig::builder("a_vlan_layer_carries_flows_and_ignores_other_vlans")
        .hosts(3)
        .bridge()
        .bare()
        .build()
    else {
        return;
    };
    for h in &rig.hosts()[..2] {
        h.start_irmd(&[]);
        let done = h.bootstrap_with(&["vlan", "7"]);
        assert!(
            done.success(),
            "host {}: bootstrap with vlan 7: {}\n{}",
            h.name(),
            done.describe(),
            h.irmd_log()
        );
    }
    rig.set_learning(2, false);
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let (_server, ping) = start_ping(&rig, 200);
    let (a_mac, b_mac) = (a.mac(), b.mac());
    let mut sent = 0;
    let delta = counters_over(
        a,
        || {
            for vlan in [None, Some("8")] {
                let mut args = vec![
                    "--type",
                    "keep-alive",
                    "--instance",
                    "random",
                    "--src",
                    &b_mac,
                    "--dst",
                    &a_mac,
                    "--count",
                    "100",
                    "--rate",
                    "2000",
                ];
                if let Some(v) = vlan {
                    args.extend(["--vlan", v]);
                }
                sent += forge(c, &args);
            }
        },
        |d| n(d, "other_vlan") >= 200,
    );
    assert_eq!(n(&delta, "other_vlan"), sent, "a's counters: {delta:?}");
    assert_flow_survived(&rig, ping, 200);
}

/// Flows b holds (`irm flow list`).
fn flow_count(host: &Host) -> usize {
    host.flows().len()
}

/// 20 000 FLOW_REQs at 5 000/s from c, random eids and instances, timeout
/// u64::MAX, for a name b serves: b's flows stay under the per-MAC cap and
/// a's oping to b keeps working throughout.
#[test]
fn flow_req_flood_stays_under_the_per_mac_cap() {
    let Some(rig) = attack_rig("flow_req_flood_stays_under_the_per_mac_cap") else {
        return;
    };
    let (b, c) = (rig.b(), rig.c());
    let (_server, ping) = start_ping(&rig, 600);
    let b_mac = b.mac();
    let flood = c.spawn(
        "forge",
        &[
            "--dev",
            c.ifname(),
            "--type",
            "flow-req",
            "--name",
            "oping",
            "--timeout-ms",
            &u64::MAX.to_string(),
            "--dst",
            &b_mac,
            "--count",
            "20000",
            "--rate",
            "5000",
            "--duration-s",
            "30",
        ],
    );
    let mut most = 0;
    while flood.is_running() {
        most = most.max(flow_count(b));
        std::thread::sleep(Duration::from_millis(250));
    }
    let done = flood.wait(LONG);
    done.assert_success();
    eprintln!("flow-req flood: {}", done.stdout.trim());
    assert_eq!(kv_num::<u64>(&done.stdout, "sent"), 20_000);
    most = most.max(flow_count(b));
    eprintln!(
        "b held at most {most} flows during the flood; b's counters {:?}",
        b.ipcp_counters()
    );
    // One flow is a's ping.
    assert!(
        most <= PER_MAC_FLOW_CAP + 1,
        "b held {most} flows, per-MAC cap {PER_MAC_FLOW_CAP}"
    );
    assert_flow_survived(&rig, ping, 600);
}

/// The core a and b run on, and the core c floods from. This machine's cores
/// are shared by the attacker and its victims; on a real segment c has its
/// own machine. Pinning gives a and b one core of their own, before and
/// during the flood alike (the kernel's per-frame work for c's frames,
/// bridge and XDP included, runs in softirq on c's core).
const VICTIM_CPU: &str = "1";
const ATTACKER_CPU: &str = "0";

/// `taskset -a -p -c CPU PID`: every thread of `pid` onto `cpu`.
fn pin(pid: i32, cpu: &str) {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .output()
        .expect("run taskset");
    assert!(
        out.status.success(),
        "taskset {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// operf from a to b for `secs` on the victims' core, in SDUs per second at
/// the receiver.
fn operf_rate(a: &Host, secs: &str) -> f64 {
    let operf = ethflow_tests::bins::path("operf");
    let done: Finished = a.run(
        "taskset",
        &[
            "-c",
            VICTIM_CPU,
            &operf.to_string_lossy(),
            "-n",
            "operf",
            "-s",
            "1000",
            "-d",
            secs,
            "--json",
        ],
        LONG,
    );
    done.assert_success();
    let v: serde_json::Value = serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("operf json: {e}: {}", done.stdout));
    v["sdus_per_s"].as_f64().expect("sdus_per_s")
}

/// Share of its operf throughput the a→b flow must keep during the flood.
/// The target is 90 %; measured on this 2-core machine (debug build,
/// a and b on one core, c on the other): 84 % with backend raw (c at 386 k
/// frames/s) and 93 % with backend xdp (c at 320 k frames/s); 84–86 % and
/// 78–80 % in other runs, against 24–37 % before the per-MAC management budget;
/// backend xdp 87.5 % at 907 k frames/s once random-MAC keep-alives were
/// budgeted in the driver (41–48 % before, docs/security.md). This
/// floor catches a regression to that without failing on a loaded machine;
/// the figure itself is printed (docs/security.md). Since decision 0044 the
/// IPCP is optimized in dev builds too: 92 % with backend raw (c at 209 k
/// frames/s) on a day this machine ran three times slower, where the
/// unoptimized build kept 26–40 %.
const MIN_KEPT: f64 = 0.5;

/// Backend raw reads every frame into user space before its per-MAC budget
/// can drop it, on the one core a and b share here. On a quiet machine c sends
/// 860 k frames/s, which saturates that core (the kernel then drops operf's
/// frames with the attacker's): measured 32 % kept at 860 k/s, 53 % at 400 k/s,
/// 65 % at 250 k/s. The raw run floods at this rate; backend xdp, which drops
/// in the driver, is flooded at full speed.
const RAW_FLOOD_PPS: &str = "250000";

/// A 60 s flood of random well-formed ethflow frames from c to b at the
/// highest rate c can send (backend raw: [`RAW_FLOOD_PPS`]): both IPCPs stay alive, the a→b flow keeps at
/// least [`MIN_KEPT`] of its operf throughput, and b's counters account for
/// every frame c sent. a and b run on one core, c on the other (see
/// [`VICTIM_CPU`]).
#[test]
fn random_frame_flood_for_60_s() {
    let Some(rig) = attack_rig("random_frame_flood_for_60_s") else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let server = b.serve("operf", "operf", &["--listen"]);
    let ipcps = (a.ipcp_pid(), b.ipcp_pid());
    for pid in [a.irmd_pid(), b.irmd_pid(), ipcps.0, ipcps.1, server.pid()] {
        pin(pid, VICTIM_CPU);
    }
    let baseline = operf_rate(a, "5");
    // Counters reach irmd up to a second after they change.
    std::thread::sleep(Duration::from_millis(1500));
    let before_b = b.ipcp_counters();
    let before_a = a.ipcp_counters();
    let b_mac = b.mac();
    let forge = ethflow_tests::bins::path("forge");
    let forge = forge.to_string_lossy();
    let mut args = vec![
        "-c",
        ATTACKER_CPU,
        &forge,
        "--dev",
        c.ifname(),
        "--type",
        "random",
        "--dst",
        &b_mac,
        "--count",
        "100000000",
        "--duration-s",
        "60",
    ];
    let raw = ethflow_tests::backend() == "raw";
    if raw {
        args.extend(["--rate", RAW_FLOOD_PPS]);
    }
    let flood = c.spawn("taskset", &args);
    std::thread::sleep(Duration::from_secs(2));
    let during = operf_rate(a, "20");
    let done = flood.wait(LONG);
    done.assert_success();
    let sent: u64 = kv_num(&done.stdout, "sent");
    eprintln!(
        "random flood: {} ; operf {baseline:.0} SDU/s before, {during:.0} SDU/s during ({:.1} %)",
        done.stdout.trim(),
        100.0 * during / baseline
    );
    assert_eq!((a.ipcp_pid(), b.ipcp_pid()), ipcps, "an IPCP died");
    // Every frame c sent reached b's IPCP (rx_frames, or refused by the
    // backend before it) or was dropped by the kernel for want of room.
    std::thread::sleep(Duration::from_millis(1500));
    let after_b = b.ipcp_counters();
    let after_a = a.ipcp_counters();
    let d = |after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, k: &str| {
        after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
    };
    let seen_by_b = d(&after_b, &before_b, "rx_frames")
        + d(&after_b, &before_b, "rx_kernel_drops")
        + d(&after_b, &before_b, "xdp_drop_unknown_eid")
        + d(&after_b, &before_b, "xdp_drop_malformed")
        + d(&after_b, &before_b, "xdp_drop_no_socket")
        + d(&after_b, &before_b, "xdp_drop_mgmt_budget")
        + d(&after_b, &before_b, "mgmt_budget_drops")
        + d(&after_b, &before_b, "xsk_rx_dropped")
        + d(&after_b, &before_b, "not_for_us");
    let from_a = d(&after_a, &before_a, "tx_frames");
    eprintln!("b saw {seen_by_b} frames: {sent} from c, {from_a} sent by a; counters {after_b:?}");
    assert!(
        seen_by_b >= sent && seen_by_b <= sent + from_a,
        "b accounts for {seen_by_b} frames; c sent {sent}, a sent {from_a}"
    );
    assert!(
        during >= MIN_KEPT * baseline,
        "operf kept {during:.0} of {baseline:.0} SDU/s during the flood"
    );
}

/// `irm ipcp bootstrap ... ethertype X`: the registered types of other
/// protocols, lengths and ambiguous values are refused with a message naming
/// why; bare hex as the model's CLI writes it works, and carries flows.
#[test]
fn ethertypes_are_checked_at_bootstrap() {
    let Some(rig) = Rig::builder("ethertypes_are_checked_at_bootstrap")
        .bare()
        .build()
    else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    for h in [a, b] {
        h.start_irmd(&[]);
    }
    for (value, why) in [
        ("0x0800", "IPv4"),
        ("86dd", "IPv6"),
        ("0x8100", "802.1Q"),
        ("0x88cc", "LLDP"),
        ("0x05dc", "802.3"),
        ("ffff", "reserved"),
        ("8100", "ambiguous"),
    ] {
        let done = a.bootstrap_with(&["ethertype", value]);
        assert!(!done.success(), "ethertype {value} was accepted");
        assert!(
            done.stderr.contains(why),
            "ethertype {value}: the refusal does not say {why:?}: {}",
            done.describe()
        );
    }
    for h in [a, b] {
        let done = h.bootstrap_with(&["ethertype", "88b6"]);
        assert!(done.success(), "bare hex 88b6: {}", done.describe());
    }
    let _server = b.serve("oping", "oping", &["--listen"]);
    pings_all_answered(
        &a.run("oping", &["-n", "oping", "-c", "3", "-i", "10"], LONG),
        3,
    );
    assert!(
        a.irmd_log().contains("ethertype 0x88b6"),
        "the IPCP does not run on 0x88b6:\n{}",
        a.irmd_log()
    );
}
