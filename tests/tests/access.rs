//! The access model on a multi-user host, attacked for real: the rig makes
//! group `ethflow`, a member and a non-member user, and runs clients as them.
//! Each test performs the attack it names.

use ethflow_tests::{pings_all_answered, procfs, users, Finished, Rig, User};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn rig(test: &str) -> Option<Rig> {
    // The group must exist before irmd starts, so its socket gets it.
    if std::env::var_os("ETHFLOW_SKIP_NETNS").is_none() {
        users::ensure();
    }
    Rig::pair(test)
}

fn refused(done: &Finished, what: &str) {
    assert!(
        !done.success(),
        "{what} must be refused: {}",
        done.describe()
    );
    assert!(
        done.stderr.contains("permission denied"),
        "{what}: the refusal must say so: {}",
        done.describe()
    );
}

/// `irm ARGS` as `user` must succeed.
fn irm_ok(rig: &Rig, host: usize, user: User, args: &[&str]) {
    let done = rig.host(host).irm_as(user, args);
    assert!(
        done.success(),
        "irm {} as {user:?}: {}",
        args.join(" "),
        done.describe()
    );
}

/// Bind and register `name` for `program` as `user` on host `host`, then start
/// the server as `user` and wait until irmd knows it.
fn serve_as(rig: &Rig, host: usize, user: User, program: &str, name: &str) -> ethflow_tests::Proc {
    irm_ok(rig, host, user, &["bind", "program", program, "name", name]);
    irm_ok(rig, host, user, &["name", "register", name, "layer", "eth"]);
    let server = rig.host(host).spawn_as(user, program, &["--listen"]);
    let line = format!("New instance ({}) of {program} added.", server.pid());
    rig.host(host).expect_log(&line, Duration::from_secs(10));
    server
}

#[test]
fn a_members_oecho_and_oping_work_across_namespaces() {
    let Some(rig) = rig("a_members_oecho_and_oping_work_across_namespaces") else {
        return;
    };
    let _echo = serve_as(&rig, 1, User::Member, "oecho", "m-echo");
    let done = rig.a().run_as(
        User::Member,
        "oecho",
        &["-n", "m-echo", "-m", "hello from a member"],
        LONG,
    );
    done.assert_success();
    done.assert_stdout_has("hello from a member");
    let _ping = serve_as(&rig, 1, User::Member, "oping", "m-ping");
    let done = rig.a().run_as(
        User::Member,
        "oping",
        &["-n", "m-ping", "-c", "50", "-i", "5"],
        LONG,
    );
    pings_all_answered(&done, 50);
}

#[test]
fn a_non_member_is_refused_with_the_group_named() {
    let Some(rig) = rig("a_non_member_is_refused_with_the_group_named") else {
        return;
    };
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(rig.a().socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    let gid = nix::unistd::Group::from_name(users::GROUP)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(meta.gid(), gid, "socket group");
    let sock = rig.a().socket().display().to_string();
    let want = format!("permission denied on {sock}: join group ethflow");
    let done = rig.a().irm_as(User::NonMember, &["ipcp", "list"]);
    assert!(!done.success(), "{}", done.describe());
    assert!(done.stderr.contains(&want), "{}", done.describe());
    let done = rig
        .a()
        .run_as(User::NonMember, "oecho", &["-n", "x", "-m", "hi"], LONG);
    assert!(!done.success(), "{}", done.describe());
    assert!(done.stderr.contains(&want), "{}", done.describe());
    // A member gets in.
    irm_ok(&rig, 0, User::Member, &["ipcp", "list"]);
}

#[test]
fn another_protocol_version_is_refused_clearly() {
    let Some(rig) = rig("another_protocol_version_is_refused_clearly") else {
        return;
    };
    let done = rig
        .a()
        .run_as(User::Member, "ctrlflood", &["version", "1"], LONG);
    let want = format!(
        "refused: control protocol version 1 is not {}",
        irm::proto::PROTO_VERSION
    );
    assert!(done.stdout.contains(&want), "{}", done.describe());
}

#[test]
fn a_member_cannot_bootstrap_or_destroy_an_ipcp() {
    let Some(rig) = rig("a_member_cannot_bootstrap_or_destroy_an_ipcp") else {
        return;
    };
    let pid = rig.a().ipcp_pid();
    let done = rig.a().irm_as(
        User::Member,
        &["ipcp", "destroy", "name", rig.a().ipcp_name()],
    );
    refused(&done, "destroying an IPCP");
    let done = rig.a().irm_as(
        User::Member,
        &[
            "ipcp",
            "bootstrap",
            "type",
            "eth",
            "name",
            "evil",
            "layer",
            "eth2",
            "dev",
            "lo",
        ],
    );
    refused(&done, "bootstrapping an IPCP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(procfs::is_alive(pid), "the IPCP must still run");
    let list = rig.a().irm_ok(&["ipcp", "list"]);
    assert!(
        list.contains(rig.a().ipcp_name())
            && list.contains("operational")
            && !list.contains("evil"),
        "{list}"
    );
}

#[test]
fn a_member_with_cap_net_admin_may_destroy_an_ipcp() {
    let Some(rig) = rig("a_member_with_cap_net_admin_may_destroy_an_ipcp") else {
        return;
    };
    let pid = rig.a().ipcp_pid();
    irm_ok(
        &rig,
        0,
        User::MemberNetAdmin,
        &["ipcp", "destroy", "name", rig.a().ipcp_name()],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while procfs::is_alive(pid) {
        assert!(Instant::now() < deadline, "IPCP {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = rig.a().irm_ok(&["ipcp", "list"]);
    assert!(!list.contains(rig.a().ipcp_name()), "{list}");
}

#[test]
fn a_member_cannot_change_names_of_root_or_another_member() {
    let Some(rig) = rig("a_member_cannot_change_names_of_root_or_another_member") else {
        return;
    };
    irm_ok(
        &rig,
        0,
        User::Root,
        &["bind", "program", "oecho", "name", "root-name"],
    );
    irm_ok(
        &rig,
        0,
        User::Root,
        &["name", "register", "root-name", "layer", "eth"],
    );
    irm_ok(
        &rig,
        0,
        User::SecondMember,
        &["bind", "program", "oecho", "name", "m2-name"],
    );
    irm_ok(
        &rig,
        0,
        User::SecondMember,
        &["name", "register", "m2-name", "layer", "eth"],
    );
    for name in ["root-name", "m2-name"] {
        let a = rig.a();
        refused(
            &a.irm_as(User::Member, &["name", "unregister", name, "layer", "eth"]),
            &format!("unregistering {name}"),
        );
        refused(
            &a.irm_as(User::Member, &["unbind", "program", "oecho", "name", name]),
            &format!("unbinding {name}"),
        );
        // Binding one's own program to another's name would steal its flows.
        refused(
            &a.irm_as(User::Member, &["bind", "program", "thief", "name", name]),
            &format!("binding to {name}"),
        );
    }
    let names = rig.a().irm_ok(&["name", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&names).unwrap();
    for name in ["root-name", "m2-name"] {
        let row = v["names"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} gone: {names}"));
        assert_eq!(row["layers"], serde_json::json!(["eth"]), "{names}");
        assert_eq!(row["programs"], serde_json::json!(["oecho"]), "{names}");
    }
    // The owner may change its own name.
    irm_ok(
        &rig,
        0,
        User::SecondMember,
        &["unbind", "program", "oecho", "name", "m2-name"],
    );
}

fn flow_pids(rig: &Rig, user: User) -> Vec<u64> {
    let done = rig.a().irm_as(user, &["flow", "list", "--json"]);
    assert!(done.success(), "{}", done.describe());
    let v: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let mut pids: Vec<u64> = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn a_member_sees_only_its_own_flows() {
    let Some(rig) = rig("a_member_sees_only_its_own_flows") else {
        return;
    };
    let _s1 = serve_as(&rig, 1, User::Root, "oping", "r-ping");
    // Both servers are `oping`: each accepts only the flows of its own uid's binding.
    let _s2 = serve_as(&rig, 1, User::SecondMember, "oping", "m2-ping");
    let root_client = rig.a().spawn_as(
        User::Root,
        "oping",
        &["-n", "r-ping", "-c", "2000", "-i", "10"],
    );
    let m2_client = rig.a().spawn_as(
        User::SecondMember,
        "oping",
        &["-n", "m2-ping", "-c", "2000", "-i", "10"],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while flow_pids(&rig, User::Root).len() < 2 {
        assert!(Instant::now() < deadline, "flows did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = flow_pids(&rig, User::Root);
    assert!(all.contains(&(root_client.pid() as u64)), "{all:?}");
    assert!(all.contains(&(m2_client.pid() as u64)), "{all:?}");
    assert_eq!(flow_pids(&rig, User::Member), Vec::<u64>::new());
    // The counters shown are the IPCP's reports (at most a second old).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let flows = rig.a().flows();
        let mine = flows
            .iter()
            .find(|f| f["pid"].as_u64() == Some(root_client.pid() as u64))
            .expect("root's flow");
        let (tx, rx) = (mine["tx_sdus"].as_u64(), mine["rx_sdus"].as_u64());
        if tx > Some(0) && rx > Some(0) && mine["last_rx_ms_ago"].as_u64() < Some(2_000) {
            break;
        }
        assert!(Instant::now() < deadline, "no counters reported: {mine}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        flow_pids(&rig, User::SecondMember),
        vec![m2_client.pid() as u64]
    );
}

#[test]
fn a_member_cannot_complete_another_users_allocation() {
    let Some(rig) = rig("a_member_cannot_complete_another_users_allocation") else {
        return;
    };
    let _server = rig.b().serve("oecho", "oecho", &["--listen"]);
    // Root's allocation to a name nobody has stays pending for a while ...
    let victim = rig
        .a()
        .spawn("flowtest", &["alloc", "-n", "nobody-has-this-name"]);
    // ... while a member forges the IPCP's answers with guessed ids.
    let forger = rig
        .a()
        .run_as(User::Member, "ctrlflood", &["forge", "256", "1500"], LONG);
    assert!(forger.success(), "{}", forger.describe());
    forger.assert_stdout_has("forged");
    let done = victim.wait(LONG);
    assert_eq!(
        done.code(),
        Some(2),
        "the allocation must fail as the real IPCP says: {}",
        done.describe()
    );
    done.assert_stdout_has("code=1007");
    // irmd still serves everyone.
    rig.a().irm_ok(&["ipcp", "list"]);
}

/// Round trips of a new `irm`-style connection (connect, hello, IPCP list)
/// as root: returns the median, which must be under 100 ms. The slowest one
/// is reported and held to a looser bound: on a machine shared with builds,
/// one scheduling delay can exceed 100 ms on its own.
fn probe_ms(rig: &Rig) -> f64 {
    let done = rig
        .a()
        .run_as(User::Root, "ctrlflood", &["probe", "20"], LONG);
    done.assert_success();
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("median-ms"))
        .unwrap_or_else(|| panic!("{}", done.describe()));
    let median: f64 = ethflow_tests::parse::kv_num(line, "median-ms");
    let max: f64 = ethflow_tests::parse::kv_num(line, "max-ms");
    assert!(line.contains("ok=20"), "{line}");
    eprintln!("probe: {line}");
    assert!(max < 1000.0, "a request waited {max} ms: {line}");
    median
}

#[test]
fn ten_thousand_connections_and_two_thousand_long_names_leave_irmd_answering() {
    let Some(rig) = rig("ten_thousand_connections_and_two_thousand_long_names") else {
        return;
    };
    let irmd = rig.a().irmd_pid();
    let flood = rig
        .a()
        .spawn_as(User::Member, "ctrlflood", &["conns", "10000", "20000"]);
    let line = flood.wait_for_stdout("opened", LONG);
    eprintln!("flood: {line}");
    let fds = procfs::fd_count(irmd);
    eprintln!("irmd fds while flooded: {fds}");
    assert!(
        fds < 1024,
        "irmd holds {fds} fds for one user's connections"
    );
    let ms = probe_ms(&rig);
    assert!(
        ms < 100.0,
        "irmd answered in {ms} ms (median) under 10 000 connections"
    );
    drop(flood);

    let done = rig.a().run_as(
        User::Root,
        "ctrlflood",
        &["names", "2000", "255", "root-"],
        LONG,
    );
    done.assert_stdout_has("registered 2000 refused 0");
    let done = rig.a().run_as(
        User::Member,
        "ctrlflood",
        &["names", "300", "255", "member-"],
        LONG,
    );
    assert!(
        done.stdout.contains("registered 256 refused 44") && done.stdout.contains("limit per user"),
        "{}",
        done.describe()
    );
    let ms = probe_ms(&rig);
    assert!(
        ms < 100.0,
        "irmd answered in {ms} ms (median) with 2 256 long names"
    );
    let list = rig.a().irm_ok(&["name", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["names"].as_array().unwrap().len(), 2256);
    // A name longer than 255 bytes is refused.
    let long = "n".repeat(256);
    let done = rig.a().irm(&["name", "register", &long, "layer", "eth"]);
    assert!(
        !done.success() && done.stderr.contains("longer than 255"),
        "{}",
        done.describe()
    );
}

#[test]
fn a_client_that_never_reads_cannot_make_irmd_hoard_replies() {
    let Some(rig) = rig("a_client_that_never_reads_cannot_make_irmd_hoard_replies") else {
        return;
    };
    // Pages of `irm name list` near their size limit.
    let done = rig.a().run_as(
        User::Root,
        "ctrlflood",
        &["names", "600", "255", "big-"],
        LONG,
    );
    done.assert_stdout_has("registered 600");
    let irmd = rig.a().irmd_pid();
    let before = procfs::rss_kib(irmd);
    // Ten members' connections each ask for pages and never read them.
    let hogs: Vec<_> = (0..10)
        .map(|_| {
            rig.a()
                .spawn_as(User::Member, "ctrlflood", &["noread", "5000", "20000"])
        })
        .collect();
    for h in &hogs {
        let line = h.wait_for_stdout("requested", LONG);
        eprintln!("hog: {line}");
    }
    let after = procfs::rss_kib(irmd);
    eprintln!("irmd VmRSS {before} KiB before, {after} KiB with 10 clients not reading");
    assert!(
        after < before + 16 * 1024,
        "irmd grew from {before} to {after} KiB"
    );
    let ms = probe_ms(&rig);
    assert!(ms < 100.0, "irmd answered in {ms} ms (median)");
}

#[test]
fn over_limit_control_messages_leave_no_fd_behind() {
    let Some(rig) = rig("over_limit_control_messages_leave_no_fd_behind") else {
        return;
    };
    let irmd = rig.a().irmd_pid();
    let before = procfs::fd_count(irmd);
    let done = rig
        .a()
        .run_as(User::Member, "ctrlflood", &["fds", "1000"], LONG);
    done.assert_stdout_has("sent 1000 answered 1000");
    // The connection is closed once the process is gone; give irmd a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = procfs::fd_count(irmd);
    while after != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = procfs::fd_count(irmd);
    }
    assert_eq!(after, before, "irmd fds before {before}, after {after}");
    irm_ok(&rig, 0, User::Member, &["ipcp", "list"]);
}
