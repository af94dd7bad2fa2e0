//! End-to-end: irmd configured by its file, with no `irm` command at all
//! (issue 14), and a configuration that cannot be applied leaves no
//! half-configured irmd behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ethflow_tests::{backend, bins, Host, Rig, User, LAYER};

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

/// Configuration lines: `name` registered in the layer and `program` bound
/// to it, with `more` lines for the binding (`auto = [...]`, `user = ...`).
fn served(name: &str, program: &str, more: &str) -> String {
    format!(
        "\n[[register]]\nname = \"{name}\"\nlayer = \"{LAYER}\"\n\n[[bind]]\nprogram = \"{program}\"\nname = \"{name}\"\n{more}"
    )
}

/// Start `h`'s irmd with the file `cfg`, and wait until it says it applied it.
fn start_configured(h: &Host, cfg: &Path) {
    h.start_irmd(&["--config".into(), cfg.display().to_string()]);
    h.expect_log("applied", Duration::from_secs(20));
}

/// Both hosts configured by their files (b's with `b_extra`) and running;
/// returns b's file.
fn configure_pair(rig: &Rig, b_extra: &str) -> PathBuf {
    let a_cfg = write_config(rig, rig.a(), "");
    let b_cfg = write_config(rig, rig.b(), b_extra);
    for (h, cfg) in [(rig.a(), &a_cfg), (rig.b(), &b_cfg)] {
        start_configured(h, cfg);
    }
    b_cfg
}

/// Run `body`; then, whether it passed or panicked, kill the programs `b`'s
/// irmd started (see [`kill_started`]), and let a panic go on.
fn killing_started_after(b: &Host, body: impl FnOnce()) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    kill_started(b);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
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
    let b_cfg = write_config(&rig, rig.b(), &served("oecho", "oecho", ""));
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
        start_configured(h, cfg);
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
    done.assert_stdout_has("configured, not commanded");
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

/// The model's `irm` habits against a live irmd: command and keyword
/// prefixes, `device`, `eth-dix`, list filters, several `layer` keywords,
/// and exit status 2 for usage errors, 1 for refusals.
#[test]
fn irm_accepts_the_models_habits() {
    let Some(rig) = Rig::pair("irm_accepts_the_models_habits") else {
        return;
    };
    let a = rig.a();
    let ipcp = a.ipcp_name();
    let listed = a.irm_ok(&["i", "l"]);
    assert!(listed.contains(ipcp), "{listed}");
    let listed = a.irm_ok(&["ipcp", "list", "name", ipcp, "type", "eth-dix"]);
    assert!(listed.contains(ipcp), "{listed}");
    let listed = a.irm_ok(&["i", "l", "n", "eth-nothing"]);
    assert!(!listed.contains(ipcp), "{listed}");
    let listed = a.irm_ok(&["i", "l", "layer", "other"]);
    assert!(!listed.contains(ipcp), "{listed}");
    a.irm_ok(&["n", "reg", "habits", "lay", LAYER]);
    a.irm_ok(&["b", "p", "oecho", "n", "habits"]);
    let names = a.irm_ok(&["n", "l"]);
    assert!(
        names
            .lines()
            .any(|l| l.starts_with("habits") && l.contains("oecho")),
        "{names}"
    );
    // Usage errors: 2.
    for args in [
        &["frobnicate"][..],
        &["ipcp", "bootstrap", "colour", "red"],
        &[
            "i", "boot", "type", "udp4", "name", "x", "layer", "l", "device", "d",
        ],
        &["i", "l", "b", "x"],
        &["n", "reg", "habits", "layer"],
    ] {
        let done = a.irm(args);
        assert_eq!(done.code(), Some(2), "irm {args:?}: {}", done.describe());
    }
    // Refusals by irmd: 1.
    let done = a.irm(&["n", "reg", "habits", "layer", "no-such-layer"]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    let done = a.irm(&["i", "destroy", "n", "eth-nothing"]);
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    // `device` and `eth-dix` reach irmd: a second IPCP on the same link, in
    // its own layer, with its own ethertype.
    let done = a.irm(&[
        "i",
        "bootstrap",
        "type",
        "eth-dix",
        "name",
        "eth-dix-2",
        "lay",
        "second",
        "device",
        a.ifname(),
        "ethert",
        "0x88b6",
        "backend",
        "raw",
    ]);
    assert!(done.success(), "{}", done.describe());
    let listed = a.irm_ok(&["i", "l", "layer", "second"]);
    assert!(
        listed.contains("eth-dix-2") && listed.contains("0x88b6"),
        "{listed}"
    );
}

/// Kills (by pid, from irmd's log) every program irmd started on demand.
fn kill_started(h: &Host) {
    for line in h.irmd_log().lines() {
        if let Some(rest) = line
            .split("(process ")
            .nth(1)
            .filter(|_| line.contains("Started "))
        {
            if let Ok(pid) = rest.split(')').next().unwrap_or("").parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// `[[bind]] auto = [...]` in the file and `irm bind program … auto -- …`:
/// no server runs until a flow arrives; irmd starts it and the flow goes
/// through.
#[test]
fn auto_start_from_configuration_and_irm() {
    let Some(rig) = Rig::builder("auto_start_from_configuration_and_irm")
        .bare()
        .build()
    else {
        return;
    };
    let oecho = bins::resolve("oecho");
    configure_pair(
        &rig,
        &served("auto-echo", &oecho, "auto = [\"--listen\"]\n"),
    );
    let b = rig.b();
    killing_started_after(b, || {
        assert!(b.wait_log("Started ", Duration::from_millis(300)).is_none());
        let done = rig
            .a()
            .run_ok("oecho", &["-n", "auto-echo", "-m", "started for me"]);
        done.assert_stdout_has("started for me");
        b.expect_log(
            "Starting oecho for a flow to auto-echo.",
            Duration::from_secs(1),
        );
        // The CLI form, for a second name.
        b.irm_ok(&["name", "register", "auto-two", "layer", LAYER]);
        b.irm_ok(&[
            "bind", "program", &oecho, "name", "auto-two", "auto", "--", "--listen",
        ]);
        let done = rig.a().run_ok("oecho", &["-n", "auto-two", "-m", "me too"]);
        done.assert_stdout_has("me too");
        // Arguments after `--` without `auto` are a usage error.
        let done = b.irm(&["bind", "program", "oecho", "name", "x", "--", "-l"]);
        assert_eq!(done.code(), Some(2), "{}", done.describe());
    });
}

/// The uid and groups of a running process, from /proc/<pid>/status.
fn ids_of(pid: i32) -> (u32, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    (field("Uid:")[0], field("Groups:"))
}

/// `[[bind]] user = "ethflow-member"`: the name and binding belong to the
/// member, and the program irmd starts on demand runs as the member with the
/// member's groups (so it reaches irmd's group-only socket), not as root. A
/// user that does not exist stops irmd before anything starts.
#[test]
fn auto_start_runs_as_the_bindings_user() {
    ethflow_tests::users::ensure();
    let Some(rig) = Rig::builder("auto_start_runs_as_the_bindings_user")
        .bare()
        .build()
    else {
        return;
    };
    let oecho = bins::resolve_for_others("oecho");
    let bind = |user: &str| {
        served(
            "member-echo",
            &oecho,
            &format!("auto = [\"--listen\"]\nuser = \"{user}\"\n"),
        )
    };
    let missing = write_config(&rig, rig.b(), &bind("ethflow-nosuchuser"));
    let out = Command::new(bins::resolve("irmd"))
        .args(["--check-config", "--config"])
        .arg(&missing)
        .output()
        .expect("run irmd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no user ethflow-nosuchuser"), "{stderr}");

    configure_pair(&rig, &bind(ethflow_tests::users::MEMBER));
    let b = rig.b();
    killing_started_after(b, || {
        let done = rig.a().run_ok(
            "oecho",
            &["-n", "member-echo", "-m", "served by the member"],
        );
        done.assert_stdout_has("served by the member");
        let log = b.irmd_log();
        let pid: i32 = log
            .lines()
            .filter(|l| l.contains("Started "))
            .find_map(|l| l.split("(process ").nth(1)?.split(')').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no program started:\n{log}"));
        let (uid, groups) = ids_of(pid);
        assert_eq!(uid, User::Member.uid(), "started as uid {uid}");
        let group = nix::unistd::Group::from_name(ethflow_tests::users::GROUP)
            .ok()
            .flatten()
            .expect("group exists")
            .gid
            .as_raw();
        assert!(groups.contains(&group), "groups {groups:?} lack {group}");
    });
}

/// scripts/install.sh into a temporary prefix installs the unit (pointing at
/// the prefix's irmd), the example configuration (which checks clean), man
/// pages that render and bash completions that parse. (No namespace.)
#[test]
fn install_puts_unit_config_manuals_and_completions_in_place() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let prefix = std::env::temp_dir().join(format!("ethflow-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let irmd = bins::resolve("irmd");
    let from = std::path::Path::new(&irmd).parent().unwrap();
    let out = Command::new("bash")
        .arg(root.join("scripts/install.sh"))
        .arg("--from")
        .arg(from)
        .arg("--prefix")
        .arg(&prefix)
        .output()
        .expect("run install.sh");
    let cleanup = || {
        let _ = std::fs::remove_dir_all(&prefix);
    };
    if !out.status.success() {
        cleanup();
        panic!("install.sh: {}", String::from_utf8_lossy(&out.stderr));
    }
    let read = |p: &str| std::fs::read_to_string(prefix.join(p)).unwrap_or_default();
    let unit = read("lib/systemd/system/irmd.service");
    let check = Command::new(prefix.join("bin/irmd"))
        .args(["--check-config", "--config"])
        .arg(prefix.join("share/doc/ethflow/irmd.toml.example"))
        .output()
        .unwrap();
    let man = Command::new("groff")
        .args(["-man", "-Tascii"])
        .arg(prefix.join("share/man/man8/irmd.8"))
        .output();
    let bash = Command::new("bash")
        .arg("-n")
        .arg(prefix.join("share/bash-completion/completions/irm"))
        .output()
        .unwrap();
    let pages: Vec<String> = std::fs::read_dir(prefix.join("share/man/man1"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let lua = prefix.join("share/ethflow/wireshark/ethflow.lua").exists();
    let ipcpd_page = read("share/man/man8/ipcpd-eth.8");
    // A tool that can write its pages (all, once each has --generate) had
    // them installed.
    let tool_pages: Vec<(String, bool)> = ["oecho", "oping", "operf"]
        .into_iter()
        .filter(|t| {
            let probe = prefix.join("probe");
            Command::new(prefix.join("bin").join(t))
                .arg("--generate")
                .arg(&probe)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|t| {
            let page = format!("share/man/man1/{t}.1");
            (page.clone(), prefix.join(page).exists())
        })
        .collect();
    let json_doc = prefix.join("share/doc/ethflow/json.md").exists();
    let bootstrap_page = read("share/man/man1/irm-ipcp-bootstrap.1");
    cleanup();
    assert!(
        unit.contains(&format!("ExecStart={}/bin/irmd\n", prefix.display())),
        "{unit}"
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let man = man.expect("groff (scripts/setup.sh installs groff-base)");
    // Without grotty's overstrike (bold: `c\x08c`).
    let mut text = String::new();
    for c in String::from_utf8_lossy(&man.stdout).chars() {
        if c == '\x08' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    assert!(
        text.contains("--config") && text.contains("--check-config"),
        "{text}"
    );
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    for p in [
        "irm.1",
        "irm-ipcp-bootstrap.1",
        "irm-name-register.1",
        "irm-bind-program.1",
    ] {
        assert!(pages.iter().any(|x| x == p), "{p} not in {pages:?}");
    }
    // ipcpd-eth(8) beside irmd(8); irm's keyword commands list their keywords.
    assert!(
        ipcpd_page.contains("ctrl\\-fd"),
        "ipcpd-eth.8: {ipcpd_page}"
    );
    for (page, there) in tool_pages {
        assert!(there, "{page} not installed");
    }
    assert!(json_doc, "json.md not installed");
    for kw in [
        "busy\\-poll <µs>",
        "encrypt:",
        "vlan <id>",
        "ethertype <type>",
    ] {
        assert!(
            bootstrap_page.contains(kw),
            "irm-ipcp-bootstrap.1 lacks {kw}"
        );
    }
    assert!(!pages.iter().any(|x| x.contains("generate")), "{pages:?}");
    assert!(lua, "dissector not installed");
}

/// `[irmd] metrics = "127.0.0.1:9464"`: a scrape (curl inside the host's
/// namespace) shows the flows, allocations and the IPCP's frame counters
/// after a flow, in the Prometheus text format.
#[test]
fn metrics_are_scraped() {
    let Some(rig) = Rig::builder("metrics_are_scraped").bare().build() else {
        return;
    };
    let a_cfg = write_config(&rig, rig.a(), "");
    let b_cfg = write_config(&rig, rig.b(), &served("oecho", "oecho", ""));
    let b_cfg_text = std::fs::read_to_string(&b_cfg).unwrap().replacen(
        "[irmd]\n",
        "[irmd]\nmetrics = \"127.0.0.1:9464\"\n",
        1,
    );
    std::fs::write(&b_cfg, b_cfg_text).unwrap();
    for (h, cfg) in [(rig.a(), &a_cfg), (rig.b(), &b_cfg)] {
        start_configured(h, cfg);
    }
    let b = rig.b();
    b.expect_log(
        "Metrics at http://127.0.0.1:9464/metrics.",
        Duration::from_secs(1),
    );
    let server = b.spawn("oecho", &["--listen"]);
    b.expect_log(
        &format!("New instance ({}) of oecho added.", server.pid()),
        Duration::from_secs(5),
    );
    rig.a().run_ok("oecho", &["-n", "oecho", "-m", "count me"]);
    // The IPCP reports its counters periodically: wait (bounded) for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let done = b.run(
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:9464/metrics"],
            Duration::from_secs(10),
        );
        assert!(done.success(), "{}", done.describe());
        if done.stdout.contains("counter=\"rx_frames\"") || std::time::Instant::now() > deadline {
            break done.stdout;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for want in [
        "ethflow_allocations_total 1",
        "ethflow_flows{state=\"allocated\"}",
        "ethflow_ipcps 1",
        "# TYPE ethflow_ipcp_counter counter",
        "counter=\"rx_frames\"",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    let nf = b.run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9464/",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(nf.stdout.trim(), "404", "{}", nf.describe());
}

/// What `Restart=on-failure` relies on: an irmd killed with SIGKILL is
/// started again with the same file and re-applies it (the old IPCP is gone
/// or goes), with no manual cleanup, and flows work again.
#[test]
fn restarted_irmd_reapplies_its_configuration() {
    let Some(rig) = Rig::builder("restarted_irmd_reapplies_its_configuration")
        .bare()
        .build()
    else {
        return;
    };
    let oecho = bins::resolve("oecho");
    let b_cfg = configure_pair(&rig, &served("oecho", &oecho, "auto = [\"--listen\"]\n"));
    let b = rig.b();
    killing_started_after(b, || {
        rig.a().run_ok("oecho", &["-n", "oecho", "-m", "before"]);
        kill_started(b);
        b.kill_irmd();
        start_configured(b, &b_cfg);
        let done = rig
            .a()
            .run_ok("oecho", &["-n", "oecho", "-m", "after the restart"]);
        done.assert_stdout_has("after the restart");
    });
}

/// SIGTERM is a clean stop: irmd deallocates every flow through its IPCP,
/// which tells the peer, so the peer's application learns at once (not after
/// the 120 s liveness timeout); irmd removes its socket and exits 0.
#[test]
fn sigterm_deallocates_flows_and_tells_the_peers() {
    let Some(rig) = Rig::pair("sigterm_deallocates_flows_and_tells_the_peers") else {
        return;
    };
    let _server = rig.b().serve("oping", "oping", &["--listen"]);
    let client = rig
        .a()
        .spawn("oping", &["-n", "oping", "-c", "100000", "-i", "20"]);
    rig.b()
        .expect_log("Flow on flow_id", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let sent = std::time::Instant::now();
    rig.b().signal_irmd(nix::sys::signal::Signal::SIGTERM);
    let done = client.wait_timeout(Duration::from_secs(10));
    let Some(done) = done else {
        let killed = client.kill();
        panic!(
            "the client's oping still runs 10 s after the server's irmd got SIGTERM: {}\n{}",
            killed.describe(),
            rig.b().irmd_log()
        );
    };
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "oping ended only after {:?}: {}",
        sent.elapsed(),
        done.describe()
    );
    rig.b()
        .expect_log("Deallocating 1 flows", Duration::from_secs(5));
    rig.b().expect_log("irmd stopped.", Duration::from_secs(5));
    assert!(!rig.b().socket().exists(), "socket left behind");
    let line = rig.a().expect_log("down:", Duration::from_secs(5));
    assert!(line.contains("deallocated"), "{line}");
}

/// `irm -j ipcp list` of a host, parsed and checked against the documented
/// schema (docs/json.md): a version, and the IPCP's counters.
fn ipcp_json(h: &Host) -> serde_json::Value {
    let out = h.irm_ok(&["-j", "ipcp", "list"]);
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("host {}: `irm -j ipcp list`: {e}:\n{out}", h.name()));
    assert_eq!(v["version"], 1, "{v}");
    let ipcp = v["ipcps"][0].clone();
    assert_eq!(ipcp["name"], h.ipcp_name(), "{v}");
    for k in [
        "rx_frames",
        "tx_frames",
        "malformed",
        "unknown_eid",
        "rx_ring_full",
    ] {
        assert!(ipcp["counters"][k].is_u64(), "no counter {k}: {v}");
    }
    ipcp
}

/// The host's IPCP counters `rx_frames` and `tx_frames`, and their age.
fn frames(h: &Host) -> (u64, u64, Option<u64>) {
    let i = ipcp_json(h);
    let c = &i["counters"];
    (
        c["rx_frames"].as_u64().unwrap(),
        c["tx_frames"].as_u64().unwrap(),
        i["counters_age_ms"].as_u64(),
    )
}

/// Two flows, then at once (no sleep) `irm -j ipcp list` on both hosts:
/// every frame the flows needed is already counted, because irm asks the
/// IPCP instead of showing its last periodic report (issue 14: it showed
/// `rx_frames=0 tx_frames=1` right after two flows). `irm -j flow list`
/// parses with its version too.
#[test]
fn json_lists_and_current_ipcp_counters() {
    const PINGS: u64 = 20;
    let Some(rig) = Rig::pair("json_lists_and_current_ipcp_counters") else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let _echo = b.serve("oecho", "oecho", &["--listen"]);
    let _ping = b.serve("oping", "oping", &["--listen"]);
    let before = (frames(a), frames(b));
    // Flow 1: PINGS pings and their answers; flow 2: one message echoed.
    let done = a.run(
        "oping",
        &["-n", "oping", "-c", &PINGS.to_string(), "-i", "5"],
        Duration::from_secs(30),
    );
    ethflow_tests::pings_all_answered(&done, PINGS);
    a.run_ok("oecho", &["-n", "oecho", "-m", "fresh"]);
    let (after_a, after_b) = (frames(a), frames(b));
    // What the two flows sent from a: a flow request and PINGS + 1 SDUs;
    // back: a flow reply and PINGS + 1 SDUs. Each frame went through both
    // IPCPs, so each side counted at least that many each way.
    let least = 2 + PINGS + 1;
    for (host, (rx0, tx0, _), (rx1, tx1, age)) in
        [("a", before.0, after_a), ("b", before.1, after_b)]
    {
        assert!(
            rx1 - rx0 >= least && tx1 - tx0 >= least,
            "host {host}: the two flows' {least} frames each way are not all counted \
             yet: rx {rx0} -> {rx1}, tx {tx0} -> {tx1}"
        );
        assert!(
            age.is_some_and(|ms| ms < 1000),
            "host {host}: counters are {age:?} ms old"
        );
    }
    // Consistent across the link: what one side sent, the other received
    // (b may have sent a few more, e.g. replies to keep-alives still on the wire).
    let sent_by_a = after_a.1 - before.0 .1;
    let got_by_b = after_b.0 - before.1 .0;
    assert!(
        got_by_b + 4 >= sent_by_a && sent_by_a + 4 >= got_by_b,
        "a sent {sent_by_a} frames, b received {got_by_b}"
    );
    let out = a.irm_ok(&["-j", "flow", "list"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("`irm -j flow list`: {e}:\n{out}"));
    assert_eq!(v["version"], 1, "{v}");
    assert!(v["flows"].is_array(), "{v}");
    // The long form too, and text output shows no stale-counter note.
    let text = a.irm_ok(&["ipcp", "list"]);
    assert!(text.contains("rx_frames="), "{text}");
    assert!(!text.contains("s ago)"), "{text}");
    let long: serde_json::Value =
        serde_json::from_str(&a.irm_ok(&["ipcp", "list", "--json"])).expect("--json");
    assert_eq!(long["version"], 1);
}
