//! End-to-end: irmd configured by its file, with no `irm` command at all
//! (issue 14), and a configuration that cannot be applied leaves no
//! half-configured irmd behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ethflow_tests::{backend, bins, Host, Rig, LAYER};

fn write_config(rig: &Rig, host: &Host, extra: &str) -> PathBuf {
    let path = rig.dir().join(format!("irmd-{}.toml", host.name()));
    let text = format!(
        "[irmd]\nflow_timeout_ms = 10000\n\n[[ipcp]]\nname = \"{}\"\ntype = \"eth-dix\"\nlayer = \"{LAYER}\"\ndevice = \"{}\"\nethertype = 0x88b5\nbackend = \"{}\"\n{extra}",
        host.ipcp_name(),
        host.ifname(),
        backend(),
    );
    std::fs::write(&path, text).expect("write configuration");
    path
}

#[test]
fn configuration_brings_up_two_hosts_without_irm() {
    let Some(rig) = Rig::builder("configuration_brings_up_two_hosts_without_irm")
        .bare()
        .build()
    else {
        return;
    };
    let a_cfg = write_config(&rig, rig.a(), "");
    let b_cfg = write_config(
        &rig,
        rig.b(),
        &format!(
            "\n[[register]]\nname = \"oecho\"\nlayer = \"{LAYER}\"\n\n[[bind]]\nprogram = \"oecho\"\nname = \"oecho\"\n"
        ),
    );
    for (h, cfg) in [(rig.a(), &a_cfg), (rig.b(), &b_cfg)] {
        let check = h.run(
            "irmd",
            &["--check-config", "--config", cfg.to_str().unwrap()],
            Duration::from_secs(10),
        );
        assert!(check.success(), "{}", check.describe());
        assert!(
            check.stdout.contains("configuration is valid (1 IPCPs"),
            "{}",
            check.describe()
        );
        h.start_irmd(&["--config".into(), cfg.display().to_string()]);
        h.expect_log("applied", Duration::from_secs(20));
        h.expect_log("Bootstrapped IPCP", Duration::from_secs(1));
    }
    // The configuration's timeout reached irmd.
    rig.a()
        .expect_log("default flow timeout 10000 ms", Duration::from_secs(1));
    let server = rig.b().spawn("oecho", &["--listen"]);
    rig.b().expect_log(
        &format!("New instance ({}) of oecho added.", server.pid()),
        Duration::from_secs(5),
    );
    let done = rig
        .a()
        .run_ok("oecho", &["-n", "oecho", "-m", "configured, not commanded"]);
    assert!(
        done.stdout.contains("configured, not commanded"),
        "{}",
        done.describe()
    );
}

#[test]
fn configuration_that_cannot_be_applied_stops_irmd() {
    let Some(rig) = Rig::builder("configuration_that_cannot_be_applied_stops_irmd")
        .bare()
        .build()
    else {
        return;
    };
    // The first IPCP comes up; the second names a device that does not exist:
    // irmd must not stay up with only the first.
    let cfg = write_config(
        &rig,
        rig.a(),
        &format!(
            "\n[[ipcp]]\nname = \"eth-missing\"\ntype = \"eth\"\nlayer = \"{LAYER}2\"\ndev = \"nosuchdev0\"\n"
        ),
    );
    let done = rig.a().run(
        "irmd",
        &["--config", cfg.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert!(
        done.stderr.contains("not starting half-configured") && done.stderr.contains("eth-missing"),
        "{}",
        done.describe()
    );
    assert!(
        !rig.a().socket().exists(),
        "irmd left its socket behind: {}",
        done.describe()
    );
}

/// `irmd --check-config` on a file with one of each kind of mistake: every
/// problem is reported, each with file:line:column and key. No namespace
/// needed: the check reads only the file.
#[test]
fn check_config_locates_every_error() {
    let dir = std::env::temp_dir().join(format!("ethflow-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = "\
[irmd]
flow_timeout_ms = \"long\"
colour = 3

[[ipcp]]
name = \"a\"
type = \"eth\"
layer = \"lan\"
dev = \"d0\"
ethertype = \"0x0800\"

[[ipcp]]
name = \"a\"
type = \"eth\"
layer = \"lan\"
dev = \"d1\"

[[register]]
name = \"oecho\"
layer = \"wan\"
";
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bins::resolve("irmd"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run irmd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let p = path.display();
    for want in [
        format!("{p}:2:19: irmd.flow_timeout_ms: expected an integer, found string"),
        format!("{p}:3:1: irmd.colour: unknown key"),
        format!("{p}:10:13: ipcp[0].ethertype:"),
        format!("{p}:13:8: ipcp[1].name: duplicate IPCP `a`"),
        format!("{p}:20:9: register[0].layer: unknown layer `wan`"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(stderr.contains("5 problem(s)"), "{stderr}");
}

/// As systemd runs it: with `NOTIFY_SOCKET` irmd says READY=1 once up (and
/// pings the watchdog with `WATCHDOG_USEC`); with `JOURNAL_STREAM` naming its
/// stderr, log lines carry the journal's level prefixes. No namespace: this
/// irmd has no IPCP and sends nothing on any network.
#[test]
fn readiness_watchdog_and_journal_levels() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("ethflow-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log_path = dir.join("stderr");
    let log = std::fs::File::create(&log_path).unwrap();
    let m = log.metadata().unwrap();
    let mut child = Command::new(bins::resolve("irmd"))
        .env("IRM_SOCKET", dir.join("irmd.sock"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .env_remove("RUST_LOG")
        .stderr(log)
        .spawn()
        .expect("start irmd");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !(got.iter().any(|m: &String| m.contains("READY=1"))
        && got.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        match notify.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        got.iter().any(|m| m.contains("READY=1")),
        "no READY=1: {got:?}\n{stderr}"
    );
    assert!(
        got.iter().any(|m| m.contains("WATCHDOG=1")),
        "no WATCHDOG=1: {got:?}\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<6>irmd listening on")),
        "no journal-prefixed info line:\n{stderr}"
    );
}
