//! Checks of the harness itself, with plain iproute2 tools and no ethflow
//! daemons: namespaces and links come up, programs run inside the right
//! namespace, impairments work, and everything is gone after the rig drops —
//! also after a panic.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ethflow_tests::{netns, procfs, Rig};

fn ping(rig: &Rig, from: usize, to: usize, count: &str) -> ethflow_tests::Finished {
    let target = rig.host(to).ip4().to_string();
    rig.host(from).run(
        "ping",
        &["-c", count, "-i", "0.05", "-W", "1", "-n", &target],
        Duration::from_secs(10),
    )
}

/// Inode of a process's network namespace.
fn netns_inode_of_pid(pid: i32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .ino()
}

fn netns_inode_of_name(ns: &str) -> u64 {
    std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino()
}

#[test]
fn pair_rig_pings_and_is_removed() {
    let Some(rig) = Rig::builder("pair_rig_pings_and_is_removed").bare().build() else {
        return;
    };
    let names: Vec<String> = rig.hosts().iter().map(|h| h.ns().to_string()).collect();
    for h in rig.hosts() {
        assert!(netns::netns_exists(h.ns()));
        assert!(h.ifname().len() <= 15);
        assert!(netns::link_brief(h.ns(), h.ifname()).contains("UP"));
    }
    let done = ping(&rig, 0, 1, "3");
    done.assert_success();
    assert!(done.stdout.contains("3 received"), "{}", done.stdout);
    drop(rig);
    for ns in names {
        assert!(!netns::netns_exists(&ns), "namespace {ns} left behind");
    }
}

#[test]
fn programs_run_inside_their_host_namespace() {
    let Some(rig) = Rig::builder("programs_run_inside_their_host_namespace")
        .bare()
        .build()
    else {
        return;
    };
    let sleeper = rig.b().spawn("sleep", &["30"]);
    // `ip netns exec` execs the program: the pid we hold becomes the program's own.
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    for _ in 0..500 {
        if comm(sleeper.pid()).trim() == "sleep" {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(comm(sleeper.pid()).trim(), "sleep");
    assert_eq!(
        netns_inode_of_pid(sleeper.pid()),
        netns_inode_of_name(rig.b().ns())
    );
    assert_ne!(
        netns_inode_of_pid(sleeper.pid()),
        netns_inode_of_pid(std::process::id() as i32)
    );
    // IRM_SOCKET reaches the program.
    let env = rig.a().run_ok("sh", &["-c", "echo $IRM_SOCKET"]);
    assert_eq!(env.stdout.trim(), rig.a().socket().to_str().unwrap());
    let pid = sleeper.pid();
    drop(rig);
    assert!(!procfs::is_alive(pid), "rig left pid {pid} running");
    drop(sleeper);
}

#[test]
fn cleanup_runs_when_the_test_panics() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let Some(rig) = Rig::builder("cleanup_runs_when_the_test_panics")
            .bare()
            .build()
        else {
            return;
        };
        let sleeper = rig.a().spawn("sleep", &["30"]);
        let names: Vec<String> = rig.hosts().iter().map(|h| h.ns().to_string()).collect();
        *seen.lock().unwrap() = Some((names, sleeper.pid(), rig.dir().to_path_buf()));
        // Keep the handle alive past the panic: the rig alone must kill it.
        std::mem::forget(sleeper);
        panic!("deliberate panic inside a rig");
    });
    let Some((names, pid, dir)) = seen.into_inner().unwrap() else {
        return;
    };
    assert!(result.is_err());
    for ns in names {
        assert!(
            !netns::netns_exists(&ns),
            "namespace {ns} left behind after a panic"
        );
    }
    assert!(
        !procfs::is_alive(pid),
        "pid {pid} still running after a panic"
    );
    // A failed test keeps its logs for a look afterwards.
    assert!(dir.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bridge_rig_joins_three_hosts_and_blocks_one() {
    let Some(rig) = Rig::builder("bridge_rig_joins_three_hosts_and_blocks_one")
        .bridge()
        .hosts(3)
        .bare()
        .build()
    else {
        return;
    };
    let switch = rig.switch_ns().unwrap().to_string();
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        ping(&rig, from, to, "2").assert_success();
    }
    rig.block_host(0);
    let blocked = ping(&rig, 0, 1, "2");
    assert!(
        !blocked.success(),
        "frames crossed a blocked port: {}",
        blocked.describe()
    );
    // Blocking keeps the carrier: no link event, only silence.
    assert!(netns::link_brief(rig.a().ns(), rig.a().ifname()).contains("LOWER_UP"));
    ping(&rig, 1, 2, "2").assert_success();
    rig.unblock_host(0);
    ping(&rig, 0, 1, "2").assert_success();
    drop(rig);
    assert!(!netns::netns_exists(&switch));
}

#[test]
fn link_events_reach_the_host() {
    let Some(rig) = Rig::builder("link_events_reach_the_host")
        .bare()
        .mtu(4000)
        .build()
    else {
        return;
    };
    let a = rig.a();
    assert!(netns::link_brief(a.ns(), a.ifname()).contains("UP"));
    let mtu = netns::ip_in(a.ns(), &["link", "show", "dev", a.ifname()]);
    assert!(mtu.contains("mtu 4000"), "{mtu}");

    a.peer_end_down();
    let brief = netns::link_brief(a.ns(), a.ifname());
    assert!(
        brief.contains("LOWERLAYERDOWN") || brief.contains("NO-CARRIER"),
        "{brief}"
    );
    assert!(!ping(&rig, 0, 1, "1").success());
    let (peer_ns, peer_if) = a.peer_end();
    netns::set_up(peer_ns, peer_if);

    a.link_down();
    assert!(netns::link_brief(a.ns(), a.ifname()).contains("DOWN"));
    a.link_up();

    a.delete_peer_end();
    let gone = netns::iproute("ip", &["-n", a.ns(), "link", "show", "dev", a.ifname()]);
    assert!(
        gone.is_err(),
        "deleting the veth peer must delete the pair: {gone:?}"
    );
}

#[test]
fn netem_is_applied_or_explained() {
    let Some(rig) = Rig::builder("netem_is_applied_or_explained").bare().build() else {
        return;
    };
    match rig.a().netem(&["delay", "20ms"]) {
        Ok(()) => {
            let done = ping(&rig, 0, 1, "3");
            done.assert_success();
            let stats = ethflow_tests::parse::ping_stats(&done.stdout).unwrap();
            assert!(
                stats.rtt.unwrap()[0] >= 19.0,
                "netem delay not applied: {}",
                done.stdout
            );
        }
        // This kernel may lack sch_netem: the helper must say so plainly.
        Err(e) => assert!(e.contains("netem"), "unclear netem error: {e}"),
    }
}
