//! End-to-end: named flows over raw Ethernet between namespaces (issue 3).
//! Each test builds its own rig; rigs in this process run one at a time.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ethflow_tests::parse::{kv, kv_num};
use ethflow_tests::{bins, proc, Rig};

/// ethflow's header, per docs/wire.md: max SDU = MTU - 20.
const ETHFLOW_HEADER: usize = 20;

/// Errors from docs/DESIGN numbering.
const EIRMD: i32 = 1002;
const ENAME: i32 = 1007;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn oecho_across_namespaces() {
    let Some(rig) = Rig::pair("oecho_across_namespaces") else {
        return;
    };
    let _server = rig.b().serve("oecho", "oecho", &["--listen"]);
    let done = rig
        .a()
        .run_ok("oecho", &["-n", "oecho", "-m", "hello across namespaces"]);
    assert!(
        done.stdout.contains("hello across namespaces"),
        "{}",
        done.describe()
    );
    for h in rig.hosts() {
        h.expect_log("Flow on flow_id", Duration::from_secs(5));
        let ipcps = h.irm_ok(&["ipcp", "list"]);
        assert!(
            ipcps.contains(h.ipcp_name()),
            "host {}: `irm ipcp list` lacks its IPCP:\n{ipcps}",
            h.name()
        );
    }
    let names = rig.b().irm_ok(&["name", "list"]);
    assert!(
        names.contains("oecho"),
        "`irm name list` lacks oecho:\n{names}"
    );
}

#[test]
fn oping_200_pings_without_loss() {
    let Some(rig) = Rig::pair("oping_200_pings_without_loss") else {
        return;
    };
    let _server = rig.b().serve("oping", "oping", &["--listen"]);
    let done = rig
        .a()
        .run("oping", &["-n", "oping", "-c", "200", "-i", "5"], LONG);
    let stats = ethflow_tests::pings_all_answered(&done, 200);
    assert_eq!(stats.loss_percent, 0.0);
    let mut seqs: Vec<u64> = stats.replies.iter().map(|r| r.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "one reply line per ping expected");
    let rtt = stats.rtt.expect("rtt line");
    assert!(
        rtt[0] <= rtt[1] && rtt[1] <= rtt[2],
        "rtt min/avg/max out of order: {rtt:?}"
    );

    // The same path with plain ICMP, for comparison in reports (not asserted).
    let ping = rig.a().run(
        "ping",
        &["-q", "-c", "200", "-i", "0.005", rig.b().ip4()],
        LONG,
    );
    let icmp = ping
        .stdout
        .lines()
        .find(|l| l.starts_with("rtt"))
        .unwrap_or("no rtt line");
    println!("oping rtt min/avg/max/mdev = {rtt:?} ms; ping {icmp}");
}

#[test]
fn sixty_four_flows_at_once_without_cross_talk() {
    let Some(rig) = Rig::pair("sixty_four_flows_at_once_without_cross_talk") else {
        return;
    };
    let server = rig.b().serve(
        "flowtest",
        "flowtest",
        &["serve", "--flows", "64", "--rounds", "3"],
    );
    let client = rig.a().run(
        "flowtest",
        &["multi", "-n", "flowtest", "--flows", "64", "--rounds", "3"],
        LONG,
    );
    client.assert_success();
    assert!(
        client.stdout.contains("ok flows=64"),
        "{}",
        client.describe()
    );
    let served = server.wait(Duration::from_secs(20));
    served.assert_success();
    let done = served
        .stdout
        .lines()
        .filter(|l| l.contains("flow-ended") && l.contains("rounds-done"))
        .count();
    assert_eq!(
        done, 64,
        "server did not finish every flow:\n{}",
        served.stdout
    );
    for h in rig.hosts() {
        if let Err(left) = h.wait_no_flows(Duration::from_secs(5)) {
            panic!("host {}: flows left after deallocation: {left:?}", h.name());
        }
    }
}

fn max_sdu_case(test: &str, mtu: Option<u32>) {
    let mut builder = Rig::builder(test);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    let Some(rig) = builder.build() else { return };
    check_max_sdu(&rig, mtu.unwrap_or(1500));
}

/// On `rig`, a flow from a to b carries exactly MTU − header bytes intact, and
/// one byte more is refused with EMSGSIZE at `write`.
fn check_max_sdu(rig: &Rig, mtu: u32) {
    let _server = rig
        .b()
        .serve("flowtest", "flowtest", &["serve", "--rounds", "2"]);
    let done = rig.a().run("flowtest", &["maxsdu", "-n", "flowtest"], LONG);
    done.assert_success();
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("ok "))
        .expect("ok line");
    let max: usize = kv_num(line, "max_sdu");
    assert_eq!(
        max,
        mtu as usize - ETHFLOW_HEADER,
        "max SDU must follow the MTU: {}",
        done.stdout
    );
    assert!(done.stdout.contains("exact-ok"), "{}", done.stdout);
    let refused = done
        .stdout
        .lines()
        .find(|l| l.starts_with("oversize-refused"))
        .expect("refusal line");
    assert_eq!(
        kv(refused, "code"),
        Some(libc::EMSGSIZE.to_string().as_str())
    );
}

#[test]
fn max_sdu_arrives_intact_and_one_more_byte_is_refused() {
    max_sdu_case("max_sdu_arrives_intact_and_one_more_byte_is_refused", None);
}

#[test]
fn max_sdu_follows_a_jumbo_mtu() {
    // Over backend xdp, MTU 9000 runs multi-buffer AF_XDP (frames of three
    // 4 KiB chunks; tests/tests/xdp.rs checks it is not the raw fallback).
    max_sdu_case("max_sdu_follows_a_jumbo_mtu", Some(9000));
}

#[test]
fn alloc_to_an_unregistered_name_fails_fast() {
    let Some(rig) = Rig::pair("alloc_to_an_unregistered_name_fails_fast") else {
        return;
    };
    // Something is registered, just not this name.
    let _server = rig.b().serve("oecho", "oecho", &["--listen"]);
    let done = rig.a().run(
        "flowtest",
        &["alloc", "-n", "nobody-has-this-name"],
        Duration::from_secs(10),
    );
    assert_eq!(
        done.code(),
        Some(2),
        "allocation to an unknown name must fail: {}",
        done.describe()
    );
    assert!(
        done.elapsed < Duration::from_secs(3),
        "took {:?}: {}",
        done.elapsed,
        done.describe()
    );
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("error"))
        .expect("error line");
    assert_eq!(kv_num::<i32>(line, "code"), ENAME, "{line}");

    let tool = rig.a().run(
        "oecho",
        &["-n", "nobody-has-this-name"],
        Duration::from_secs(10),
    );
    assert!(
        !tool.success(),
        "oecho to an unknown name must fail: {}",
        tool.describe()
    );
    assert!(
        tool.elapsed < Duration::from_secs(3),
        "oecho took {:?}",
        tool.elapsed
    );
    assert_eq!(
        tool.stderr.trim().lines().count(),
        1,
        "one clear error line expected: {}",
        tool.describe()
    );
}

/// Runs one of our programs outside any namespace with IRM_SOCKET at `socket`.
fn run_without_irmd(
    dir: &std::path::Path,
    socket: &std::path::Path,
    program: &str,
    args: &[&str],
) -> proc::Finished {
    let mut cmd = Command::new(bins::path(program));
    cmd.args(args).env("IRM_SOCKET", socket);
    proc::run(cmd, dir, program, Duration::from_secs(10))
}

#[test]
fn alloc_without_irmd_names_the_socket() {
    // No namespace needed: nothing listens at this path, so nothing is sent anywhere.
    let dir = std::env::temp_dir().join(format!("ethflow-noirmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket: PathBuf = dir.join("no-irmd-here.sock");
    let shown = socket.to_string_lossy().into_owned();

    let done = run_without_irmd(&dir, &socket, "flowtest", &["alloc", "-n", "oecho"]);
    assert_eq!(done.code(), Some(2), "{}", done.describe());
    assert!(
        done.elapsed < Duration::from_secs(3),
        "took {:?}",
        done.elapsed
    );
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("error"))
        .expect("error line");
    assert_eq!(kv_num::<i32>(line, "code"), EIRMD, "{line}");
    assert!(
        line.contains(&shown),
        "error does not name the socket: {line}"
    );

    for (program, args) in [
        ("oecho", &["-n", "oecho"][..]),
        ("irm", &["ipcp", "list"][..]),
    ] {
        let done = run_without_irmd(&dir, &socket, program, args);
        assert!(
            !done.success(),
            "{program} without irmd must fail: {}",
            done.describe()
        );
        assert!(
            done.stderr.contains(&shown),
            "{program} does not name the socket: {}",
            done.describe()
        );
        assert_eq!(
            done.stderr.trim().lines().count(),
            1,
            "{program}: one line expected: {}",
            done.describe()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bridge_with_three_hosts_a_flow_between_each_pair() {
    let Some(rig) = Rig::builder("bridge_with_three_hosts_a_flow_between_each_pair")
        .bridge()
        .hosts(3)
        .build()
    else {
        return;
    };
    let _servers: Vec<_> = rig
        .hosts()
        .iter()
        .map(|h| h.serve("oecho", &format!("echo-{}", h.name()), &["--listen"]))
        .collect();
    for from in rig.hosts() {
        for to in rig.hosts().iter().filter(|t| t.name() != from.name()) {
            let msg = format!("from {} to {}", from.name(), to.name());
            let done = from.run(
                "oecho",
                &["-n", &format!("echo-{}", to.name()), "-m", &msg],
                Duration::from_secs(20),
            );
            done.assert_success();
            assert!(done.stdout.contains(&msg), "{msg}: {}", done.describe());
        }
    }
}

/// The raw backend counts and drops frames no flow can take — a wrong
/// version, data for endpoints that do not exist — while a live flow keeps
/// working; `irm ipcp list --json` shows the counters.
#[test]
fn bad_frames_are_counted_and_dropped_while_a_flow_works() {
    let Some(rig) = Rig::pair("bad_frames_are_counted_and_dropped_while_a_flow_works") else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let _server = b.serve("oping", "oping", &["--listen"]);
    let a_mac = {
        let out = ethflow_tests::netns::ip_in(a.ns(), &["-j", "link", "show", "dev", a.ifname()]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link");
        v[0]["address"].as_str().expect("address").to_string()
    };
    let ping = a.spawn("oping", &["-n", "oping", "-c", "200", "-i", "5", "-Q"]);
    const FRAMES: u64 = 5000;
    for kind in ["malformed", "unknown"] {
        let mut cmd =
            ethflow_tests::netns::exec_cmd(b.ns(), &bins::path("rawflood").to_string_lossy());
        cmd.args([
            "--dev",
            b.ifname(),
            "--dst",
            &a_mac,
            "--count",
            &FRAMES.to_string(),
            "--kind",
            kind,
        ]);
        let done = proc::run(cmd, rig.dir(), &format!("rawflood-{kind}"), LONG);
        done.assert_success();
        let line = done
            .stdout
            .lines()
            .find(|l| l.starts_with("sent="))
            .expect("rawflood result");
        assert_eq!(kv_num::<u64>(line, "sent"), FRAMES, "{line}");
    }
    let done = ping.wait(LONG);
    ethflow_tests::pings_all_answered(&done, 200);
    // Counters reach irmd at most a second after they change.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&a.irm_ok(&["ipcp", "list", "--json"])).expect("ipcp list json");
        let c = &list["ipcps"][0]["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        // The xdp backend drops in the driver what the IPCP would have dropped
        // (a few unknown-endpoint frames still go up, for UNKNOWN_EID replies).
        let malformed = n("malformed") + n("xdp_drop_malformed");
        let unknown = n("unknown_eid") + n("xdp_drop_unknown_eid");
        if malformed >= FRAMES && unknown >= FRAMES {
            assert_eq!(malformed, FRAMES, "only the flood was malformed: {c}");
            assert_eq!(unknown, FRAMES, "only the flood had unknown endpoints: {c}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counters never showed the flood: {c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `irm flow list` pages through long lists: 1000 open flows are all listed,
/// on both hosts, each once; killing the client releases them all.
#[test]
fn flow_list_shows_hundreds_of_open_flows() {
    let Some(rig) = Rig::pair("flow_list_shows_hundreds_of_open_flows") else {
        return;
    };
    // Well past one control message (64 KiB) of rows.
    const FLOWS: usize = 1000;
    let _server = rig.b().serve("flowtest", "flowtest", &["serve"]);
    let client = rig.a().spawn(
        "flowtest",
        &[
            "multi",
            "-n",
            "flowtest",
            "--flows",
            &FLOWS.to_string(),
            "--rounds",
            "1",
            "--linger-ms",
            "30000",
        ],
    );
    client.wait_for_stdout("holding", LONG);
    for h in rig.hosts() {
        let flows = h.flows();
        let ids: std::collections::BTreeSet<u64> = flows
            .iter()
            .map(|f| f["flow_id"].as_u64().expect("flow_id"))
            .collect();
        assert_eq!(flows.len(), FLOWS, "host {}", h.name());
        assert_eq!(ids.len(), FLOWS, "host {}: a flow listed twice", h.name());
        assert!(
            flows.iter().all(|f| f["state"] == "ALLOCATED"),
            "host {}",
            h.name()
        );
    }
    drop(client);
    for h in rig.hosts() {
        if let Err(left) = h.wait_no_flows(Duration::from_secs(10)) {
            panic!(
                "host {}: flows left after the client died: {} of them",
                h.name(),
                left.len()
            );
        }
    }
}

/// The IPCP re-reads the MTU when it changes (netlink): new flows get the new
/// maximum SDU, and an SDU of exactly that size crosses.
#[test]
fn max_sdu_follows_an_mtu_raised_at_run_time() {
    let Some(rig) = Rig::pair("max_sdu_follows_an_mtu_raised_at_run_time") else {
        return;
    };
    // Native XDP on veth refuses MTUs above 3506 while attached.
    let mtu: u32 = if ethflow_tests::backend() == "xdp" {
        3000
    } else {
        9000
    };
    for h in rig.hosts() {
        ethflow_tests::netns::ip_in(
            h.ns(),
            &["link", "set", "dev", h.ifname(), "mtu", &mtu.to_string()],
        );
    }
    for h in rig.hosts() {
        h.expect_log(&format!("to {mtu}."), Duration::from_secs(5));
    }
    check_max_sdu(&rig, mtu);
}
