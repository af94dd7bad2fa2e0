//! End-to-end: Ouroboros C programs built against ethflow's C library
//! (issue 12). `scripts/install.sh` installs the workspace's build into a
//! temporary prefix; the examples in `capi/examples/` are compiled with
//! `cc app.c $(pkg-config --cflags --libs ouroboros-dev)` against it and run
//! in the rig's namespaces, beside the Rust tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ethflow_tests::parse::{kv, kv_num};
use ethflow_tests::{bins, Finished, Host, Proc, Rig};
use nix::sys::signal::Signal;

/// The temporary install and the compiled examples.
struct Built {
    prefix: PathBuf,
    bin: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

fn run_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs (once per test process) and compiles every example with the
/// pkg-config line a user would type.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace();
        // The build output the other end-to-end tests use (same profile).
        let out_dir = bins::path("irmd")
            .parent()
            .expect("profile dir")
            .to_path_buf();
        let tmp = std::env::temp_dir();
        remove_stale_builds(&tmp);
        let base = tmp.join(format!("ethflow-capi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let prefix = base.join("prefix");
        let bin = base.join("bin");
        std::fs::create_dir_all(&bin).expect("create bin dir");
        run_checked(
            Command::new("bash")
                .arg(root.join("scripts/install.sh"))
                .arg("--prefix")
                .arg(&prefix)
                .arg("--from")
                .arg(&out_dir),
            "scripts/install.sh",
        );
        let pc = prefix.join("lib/pkgconfig");
        let flags = run_checked(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", "ouroboros-dev"])
                .env("PKG_CONFIG_PATH", &pc),
            "pkg-config --cflags --libs ouroboros-dev",
        );
        for ex in ["oecho", "ping", "fqserver", "constants", "cancel"] {
            let src = root.join("capi/examples").join(format!("{ex}.c"));
            let mut cc = Command::new("cc");
            cc.args([
                "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-pthread",
            ])
            .arg(&src)
            .arg("-o")
            .arg(bin.join(format!("c-{ex}")))
            .args(flags.split_whitespace())
            // Installed outside the linker's search path: find it at run time.
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
            run_checked(&mut cc, &format!("cc {ex}.c"));
        }
        Built { prefix, bin }
    })
}

/// A test process cannot clean up after itself (the build is shared by its
/// tests until it exits): remove the builds of test processes that are gone.
fn remove_stale_builds(tmp: &Path) {
    let Ok(dir) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("ethflow-capi-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Full path of a compiled example (`c-oecho` ...).
fn c_prog(name: &str) -> String {
    built().bin.join(name).to_string_lossy().into_owned()
}

/// Binds `name` to the C program `prog` and starts it with `args` on `host`.
fn serve_c(host: &Host, prog: &str, name: &str, args: &[&str]) -> Proc {
    host.register(prog, name);
    let server = host.spawn(&c_prog(prog), args);
    let line = format!("New instance ({}) of {prog} added.", server.pid());
    if host.wait_log(&line, Duration::from_secs(5)).is_none() {
        assert!(
            server.is_running(),
            "{prog} exited: {}",
            server.kill().describe()
        );
    }
    server
}

/// The `check NAME ...` line of the ping probe.
fn check<'a>(done: &'a Finished, name: &str) -> &'a str {
    let prefix = format!("check {name} ");
    done.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name:?} check: {}", done.describe()))
}

fn ret(done: &Finished, name: &str) -> i64 {
    kv_num(check(done, name), "ret")
}

#[test]
fn every_header_constant_matches_the_documented_table() {
    let done = Command::new(c_prog("c-constants"))
        .arg(workspace().join("docs/capi.md"))
        .output()
        .expect("run c-constants");
    let out = String::from_utf8_lossy(&done.stdout);
    println!("{out}");
    assert!(done.status.success(), "constants differ:\n{out}");
    assert!(out.contains("0 mismatches"), "{out}");
}

#[test]
fn the_static_library_links_and_runs() {
    let b = built();
    let pc = b.prefix.join("lib/pkgconfig");
    let cflags = run_checked(
        Command::new("pkg-config")
            .args(["--cflags", "ouroboros-dev"])
            .env("PKG_CONFIG_PATH", &pc),
        "pkg-config --cflags",
    );
    let libs = run_checked(
        Command::new("pkg-config")
            .args(["--static", "--libs-only-l", "ouroboros-dev"])
            .env("PKG_CONFIG_PATH", &pc),
        "pkg-config --static --libs-only-l",
    );
    let exe = b.bin.join("c-constants-static");
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Werror"])
        .args(cflags.split_whitespace())
        .arg(workspace().join("capi/examples/constants.c"))
        .arg("-o")
        .arg(&exe)
        .arg(b.prefix.join("lib/libouroboros-dev.a"))
        .args(libs.split_whitespace().filter(|l| *l != "-louroboros-dev"));
    run_checked(&mut cc, "static link of constants.c");
    let ldd = run_checked(Command::new("ldd").arg(&exe), "ldd");
    assert!(!ldd.contains("ouroboros"), "linked dynamically: {ldd}");
    let out = run_checked(
        Command::new(&exe).arg(workspace().join("docs/capi.md")),
        "static constants",
    );
    assert!(out.contains("0 mismatches"), "{out}");
}

#[test]
fn every_header_compiles_on_its_own_in_c_and_cpp() {
    let b = built();
    let inc = b.prefix.join("include");
    let dir = b.bin.join("headers");
    std::fs::create_dir_all(&dir).expect("create headers dir");
    let mut headers: Vec<String> = std::fs::read_dir(inc.join("ouroboros"))
        .expect("installed headers")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    headers.sort();
    for h in [
        "cdefs.h",
        "dev.h",
        "endian.h",
        "errno.h",
        "fccntl.h",
        "fqueue.h",
        "hash.h",
        "qos.h",
        "time.h",
        "time_utils.h",
        "version.h",
    ] {
        assert!(
            headers.iter().any(|x| x == h),
            "{h} not installed: {headers:?}"
        );
    }
    for h in &headers {
        let src = dir.join("one.c");
        std::fs::write(
            &src,
            format!("#include <ouroboros/{h}>\nint main(void) {{ return 0; }}\n"),
        )
        .expect("write test source");
        for (compiler, std) in [
            ("cc", "-std=gnu89"),
            ("cc", "-std=c11"),
            ("c++", "-std=c++11"),
        ] {
            let mut cmd = Command::new(compiler);
            cmd.args([std, "-Wall", "-Wextra", "-Werror", "-c"]);
            if compiler == "c++" {
                cmd.args(["-x", "c++"]);
            }
            cmd.arg("-I")
                .arg(&inc)
                .arg(&src)
                .arg("-o")
                .arg(dir.join("one.o"));
            run_checked(&mut cmd, &format!("{compiler} {std} <ouroboros/{h}>"));
        }
    }
    // The helpers compute what their names say.
    let src = dir.join("helpers.c");
    std::fs::write(
        &src,
        r#"#define _POSIX_C_SOURCE 200809L
#include <ouroboros/endian.h>
#include <ouroboros/time.h>
#include <ouroboros/hash.h>
#include <stdio.h>
int main(void)
{
        struct timespec a = TIMESPEC_INIT_MS(1500);
        struct timespec b = TIMESPEC_INIT_NS(700000000L);
        struct timespec c;
        unsigned char   h[4] = { 0xde, 0xad, 0xbe, 0xef };
        uint32_t        n = hton32(0x01020304);
        char            s[16];
        int             bad = 0;

        ts_add(&a, &b, &c);
        bad |= !(c.tv_sec == 2 && c.tv_nsec == 200000000L);
        ts_diff(&a, &b, &c);
        bad |= !(c.tv_sec == 0 && c.tv_nsec == 800000000L);
        bad |= ts_diff_ms(&b, &a) != 800;
        bad |= ts_diff_us(&b, &a) != 800000;
        bad |= ((unsigned char *) &n)[0] != 1 || ntoh32(n) != 0x01020304;
        bad |= ntoh64(hton64(0x0102030405060708ULL)) != 0x0102030405060708ULL;
        snprintf(s, sizeof(s), HASH_FMT32, HASH_VAL32(h));
        bad |= s[0] != 'd' || s[7] != 'f';
        bad |= hash_len(HASH_SHA3_256) != 32;
        printf("helpers %s\n", bad ? "wrong" : "ok");
        return bad;
}
"#,
    )
    .expect("write helpers.c");
    let flags = run_checked(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "ouroboros-dev"])
            .env("PKG_CONFIG_PATH", b.prefix.join("lib/pkgconfig")),
        "pkg-config",
    );
    let exe = dir.join("helpers");
    run_checked(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .args(flags.split_whitespace())
            .arg(format!("-Wl,-rpath,{}", b.prefix.join("lib").display())),
        "cc helpers.c",
    );
    let out = run_checked(&mut Command::new(&exe), "helpers");
    assert_eq!(out.trim(), "helpers ok");
}

#[test]
fn the_manual_pages_are_installed_and_render_cleanly() {
    let man3 = built().prefix.join("share/man/man3");
    for f in [
        "libouroboros-dev.3",
        "flow_alloc.3",
        "flow_read.3",
        "fccntl.3",
        "fevent.3",
    ] {
        assert!(man3.join(f).is_file(), "{f} not installed in {man3:?}");
    }
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(man3.join("libouroboros-dev.3"))
        .output()
        .expect("run groff");
    assert!(out.status.success(), "groff failed");
    assert!(
        out.stderr.is_empty(),
        "groff warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_irmd_flow_alloc_fails_with_eirmd() {
    let done = Command::new(c_prog("c-oecho"))
        .env("IRM_SOCKET", built().prefix.join("no-such-irmd.sock"))
        .output()
        .expect("run c-oecho");
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(
        out.contains("Failed to allocate flow: -1002."),
        "expected -EIRMD: {out}"
    );
}

#[test]
fn c_seed_scenario_second_read_fails_with_eflowdown_at_once() {
    let Some(rig) = Rig::pair("c_seed_scenario") else {
        return;
    };
    let _server = serve_c(rig.b(), "c-oecho", "oecho", &["-l"]);
    let done = rig.a().run(
        &c_prog("c-oecho"),
        &["-n", "oecho", "-d"],
        Duration::from_secs(10),
    );
    done.assert_success();
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Server replied with Client says hi!",
            "Failed to read packet: -1005."
        ],
        "{}",
        done.describe()
    );
    let us = second_read_us(&done);
    println!("C seed: second read failed after {:.1} ms", us / 1e3);
    // One round trip on the veth rig, with the same bound as the Rust seed test.
    assert!(us < 50_000.0, "second read took {us} us (bound 50 ms)");
    // A write to the dead flow fails the same way.
    let w = rig.a().run(
        &c_prog("c-oecho"),
        &["-n", "oecho", "-w"],
        Duration::from_secs(10),
    );
    w.assert_success();
    w.assert_stdout_has("Write after the read: -1005.");
    for h in rig.hosts() {
        if let Err(left) = h.wait_no_flows(Duration::from_secs(3)) {
            panic!("host {}: flows left: {left:?}", h.name());
        }
    }
}

/// How long (µs) the C client's second read took, from its stderr.
fn second_read_us(done: &Finished) -> f64 {
    done.stderr
        .lines()
        .find_map(|l| kv(l, "second_read_us"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no timing: {}", done.describe()))
}

#[test]
fn c_fccntl_timeouts_flags_and_partial_reads() {
    let Some(rig) = Rig::pair("c_fccntl") else {
        return;
    };
    let _server = serve_c(rig.b(), "c-ping", "oping", &["-l"]);
    let done = rig.a().run(
        &c_prog("c-ping"),
        &["-p", "-n", "oping", "-w", "200"],
        Duration::from_secs(20),
    );
    done.assert_success();
    println!("{}", done.stdout);
    assert_eq!(ret(&done, "get_unset_timeout"), -(libc::EPERM as i64));
    let set = check(&done, "set_timeout");
    assert_eq!(
        (
            kv_num::<i64>(set, "ret"),
            kv_num::<i64>(set, "sec"),
            kv_num::<i64>(set, "nsec")
        ),
        (0, 0, 200_000_000)
    );
    // The read timeout: -ETIMEDOUT, not before 200 ms and not much after.
    let t = check(&done, "read_timeout");
    assert_eq!(kv_num::<i64>(t, "ret"), -(libc::ETIMEDOUT as i64), "{t}");
    let ms: f64 = kv_num(t, "ms");
    assert!((200.0..300.0).contains(&ms), "read timed out after {ms} ms");
    assert_eq!(
        kv_num::<String>(check(&done, "default_flags"), "flags"),
        "20002"
    );
    // Non-blocking read on an empty flow: -EAGAIN at once.
    let nb = check(&done, "read_nonblock");
    assert_eq!(kv_num::<i64>(nb, "ret"), -(libc::EAGAIN as i64), "{nb}");
    assert!(kv_num::<f64>(nb, "ms") < 50.0, "{nb}");
    assert_eq!(ret(&done, "invalid_flags"), -(libc::EINVAL as i64));
    let q = check(&done, "qosspec");
    assert_eq!(kv_num::<u32>(q, "timeout"), 120_000, "{q}");
    assert_eq!(ret(&done, "unknown_cmd"), -(libc::ENOTSUP as i64));
    // FLOWFRNOPART: an SDU larger than the buffer is refused.
    assert_eq!(ret(&done, "nopart"), -(libc::EMSGSIZE as i64));
    // Partial reads: 100 bytes in ten parts of 10, then 0 marks the end.
    let p = check(&done, "partial");
    assert_eq!(
        (kv_num::<i64>(p, "parts"), kv_num::<i64>(p, "last")),
        (10, 0),
        "{p}"
    );
    assert_eq!(ret(&done, "rxqlen"), 0);
    assert_eq!(ret(&done, "oversize_write"), -(libc::EMSGSIZE as i64));
    assert_eq!(ret(&done, "write_rdonly"), -(libc::EPERM as i64));
    let child = check(&done, "fork_child");
    assert_eq!(
        (kv_num::<i64>(child, "write"), kv_num::<i64>(child, "alloc")),
        (-1000, -1002),
        "a fork child must not use the parent's flow or connection: {child}"
    );
    assert_eq!(ret(&done, "fork_parent"), 5);
    assert_eq!(ret(&done, "dealloc"), 0);
    // A thread blocked reading the flow is woken by the deallocation (its
    // wait is sliced: within 250 ms), not left hanging.
    let woke = check(&done, "dealloc_wakes_reader");
    assert_eq!(kv_num::<i64>(woke, "ret"), -1000, "{woke}");
    assert!(kv_num::<f64>(woke, "ms") < 1000.0, "{woke}");
    assert_eq!(ret(&done, "read_after_dealloc"), -1000);
    assert_eq!(ret(&done, "read_bad_fd"), -(libc::EBADF as i64));
    assert_eq!(ret(&done, "join"), -(libc::ENOTSUP as i64));

    // The ping client proper: every SDU answered within its timeout.
    let ping = rig.a().run(
        &c_prog("c-ping"),
        &[
            "-n", "oping", "-c", "5", "-i", "10", "-w", "1000", "-s", "256",
        ],
        Duration::from_secs(20),
    );
    ping.assert_success();
    ping.assert_stdout_has("5 SDUs transmitted, 5 received");
}

#[test]
fn c_fqueue_server_many_flows_then_pkt_and_down_when_the_peer_is_killed() {
    let Some(rig) = Rig::pair("c_fqueue") else {
        return;
    };
    let server = serve_c(rig.b(), "c-fqserver", "fqs", &[]);
    // Many flows at once, each served from the one event loop.
    let clients: Vec<Proc> = (0..12)
        .map(|i| {
            let msg = format!("flow{i}");
            rig.a()
                .spawn(&c_prog("c-oecho"), &["-n", "fqs", "-1", "-m", &msg])
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        let done = c.wait(Duration::from_secs(20));
        done.assert_success();
        assert!(
            done.stdout
                .contains(&format!("Server replied with flow{i}")),
            "{}",
            done.describe()
        );
    }
    // A client that blocks in its second read (the server does not
    // deallocate), then dies by SIGKILL.
    let victim = rig
        .a()
        .spawn(&c_prog("c-oecho"), &["-n", "fqs", "-m", "last"]);
    victim.wait_for_stdout("Server replied with last", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(50));
    victim.signal(Signal::SIGKILL);
    // Descriptors are reused (lowest free first): look after the victim's
    // "New flow" line only.
    let victim_events = || {
        let out = server.stdout();
        let start = out.rfind("New flow ").expect("a New flow line");
        let fd: String = out[start + "New flow ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let events: Vec<String> = out[start..]
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("event fd={fd} type=")))
            .map(str::to_string)
            .collect();
        (out, events)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (out, events) = loop {
        let (out, events) = victim_events();
        if events.iter().any(|e| e == "FLOW_DOWN") || std::time::Instant::now() >= deadline {
            break (out, events);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let pkt = events.iter().position(|e| e == "FLOW_PKT");
    let down = events.iter().position(|e| e == "FLOW_DOWN");
    assert!(
        matches!((pkt, down), (Some(p), Some(d)) if p < d),
        "the killed client's flow must report FLOW_PKT, then FLOW_DOWN: {events:?}\n{out}"
    );
    // Every one of the 12 finished clients' flows went down too.
    let downs = out
        .lines()
        .filter(|l| l.ends_with("type=FLOW_DOWN"))
        .count();
    assert_eq!(downs, 13, "FLOW_DOWN events:\n{out}");
}

#[test]
fn c_qos_timeout_gives_eflowpeer_and_flow_peer_when_all_frames_are_lost() {
    // As liveness.rs's all_frames_lost: hosts on a bridge, the server's
    // port disabled (no link event); only the liveness timeout can tell.
    const TIMEOUT_MS: u64 = 1000;
    let Some(rig) = Rig::builder("c_qos_timeout").bridge().hosts(2).build() else {
        return;
    };
    let server = serve_c(rig.b(), "c-fqserver", "fqs", &[]);
    let client = rig.a().spawn(
        &c_prog("c-oecho"),
        &["-n", "fqs", "-m", "p", "-d", "-t", &TIMEOUT_MS.to_string()],
    );
    client.wait_for_stdout("Server replied with p", Duration::from_secs(10));
    // Let a keep-alive exchange happen, then lose every frame.
    std::thread::sleep(Duration::from_millis(300));
    rig.block_host(1);
    let done = client.wait(Duration::from_secs(10));
    done.assert_success();
    assert!(
        done.stdout.contains("Failed to read packet: -1006."),
        "expected -EFLOWPEER from the qosspec_t timeout: {}",
        done.describe()
    );
    let us = second_read_us(&done);
    // Timeout after the last frame heard: between 3/4 and 5/4 of it (plus
    // slack), counted here from the start of the read, 300 ms before the block.
    let ms = us / 1e3;
    println!("C client: EFLOWPEER after {ms:.0} ms of reading (timeout {TIMEOUT_MS} ms)");
    assert!(
        ms >= (TIMEOUT_MS as f64) * 0.75 && ms <= (TIMEOUT_MS as f64) * 1.25 + 400.0,
        "EFLOWPEER after {ms} ms"
    );
    // The server's end times out too: fevent says FLOW_PEER.
    server.wait_for_stdout("type=FLOW_PEER", Duration::from_secs(5));
}

#[test]
fn c_client_rust_server_and_rust_client_c_server() {
    let Some(rig) = Rig::pair("c_and_rust") else {
        return;
    };
    let _rust = rig.b().serve("oecho", "oecho", &["--listen", "--linger"]);
    let done = rig.a().run(
        &c_prog("c-oecho"),
        &["-n", "oecho", "-1", "-m", "from C"],
        Duration::from_secs(10),
    );
    done.assert_success();
    done.assert_stdout_has("Server replied with from C");
    let _c = serve_c(rig.b(), "c-ping", "cping", &["-l"]);
    let rust = rig.a().run_ok("oecho", &["-n", "cping", "-m", "from Rust"]);
    rust.assert_stdout_has("from Rust");
    // And the Rust ping tool against the C ping server.
    let ping = rig
        .a()
        .run_ok("oping", &["-n", "cping", "-c", "3", "-i", "10"]);
    ethflow_tests::pings_all_answered(&ping, 3);
}

#[test]
fn c_blocked_reader_dies_by_sigint_and_its_peer_sees_the_flow_down() {
    let Some(rig) = Rig::pair("c_sigint") else {
        return;
    };
    let server = serve_c(rig.b(), "c-fqserver", "fqs", &[]);
    let client = rig.a().spawn(&c_prog("c-oecho"), &["-n", "fqs", "-m", "x"]);
    client.wait_for_stdout("Server replied with x", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(50));
    client.signal(Signal::SIGINT);
    let done = client.wait(Duration::from_secs(2));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        done.status.signal(),
        Some(libc::SIGINT),
        "a blocked flow_read must not keep SIGINT from ending the program: {}",
        done.describe()
    );
    server.wait_for_stdout("type=FLOW_DOWN", Duration::from_secs(3));
}

#[test]
fn c_threads_blocked_in_the_library_can_be_cancelled() {
    let Some(rig) = Rig::pair("c_cancel") else {
        return;
    };
    let server = serve_c(rig.b(), "c-cancel", "cancel", &[]);
    let client = rig
        .a()
        .spawn(&c_prog("c-oecho"), &["-n", "cancel", "-m", "c"]);
    client.wait_for_stdout("Server replied with c", Duration::from_secs(10));
    server.wait_for_stdout("cancel server ready", Duration::from_secs(5));
    server.wait_for_stdout("reader waiting", Duration::from_secs(5));
    // Let the three threads settle into their waits.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGINT);
    let done = server.wait(Duration::from_secs(5));
    done.assert_success();
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("cancelled 3 threads"))
        .unwrap_or_else(|| panic!("{}", done.describe()));
    println!("{line}");
    // Nothing returned from a wait: each thread was cancelled inside it.
    assert!(
        !done.stdout.contains("returned"),
        "a wait returned instead of being cancelled: {}",
        done.describe()
    );
    let ms: u64 = line
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    // Reads and fevent look every 250 ms, accept every second.
    assert!(ms < 2000, "cancellation took {ms} ms");
    // The server deallocated: the client's blocked second read ends.
    let c = client.wait(Duration::from_secs(5));
    c.assert_stdout_has("Failed to read packet: -1005.");
}

/// valgrind's verdict on one run: no invalid access, no leak.
fn assert_valgrind_clean(done: &Finished) {
    let log = &done.stderr;
    assert!(
        log.contains("ERROR SUMMARY: 0 errors"),
        "valgrind found errors: {}",
        done.describe()
    );
    for kind in ["definitely lost", "indirectly lost", "possibly lost"] {
        if let Some(line) = log.lines().find(|l| l.contains(kind)) {
            assert!(
                line.contains(&format!("{kind}: 0 bytes")),
                "valgrind: {line}\n{}",
                done.describe()
            );
        }
    }
}

#[test]
fn c_examples_run_clean_under_valgrind() {
    let Some(rig) = Rig::pair("c_valgrind") else {
        return;
    };
    let supp = format!(
        "--suppressions={}",
        workspace().join("capi/valgrind.supp").display()
    );
    let vg = [
        "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect,possible",
        "--error-exitcode=99",
        // The probe forks a child that only checks its calls are refused:
        // the parent's threads do not exist there, so the memory they hold
        // would show as lost in the child's report.
        "--child-silent-after-fork=yes",
        supp.as_str(),
    ];
    let _echo = serve_c(rig.b(), "c-oecho", "oecho", &["-l"]);
    let _ping = serve_c(rig.b(), "c-ping", "oping", &["-l"]);
    let with = |prog: &str, args: &[&str]| {
        let p = c_prog(prog);
        let mut all: Vec<&str> = vg.to_vec();
        all.push(&p);
        all.extend_from_slice(args);
        let done = rig.a().run("valgrind", &all, Duration::from_secs(120));
        println!(
            "valgrind {prog} {args:?}: {}",
            done.stderr
                .lines()
                .filter(|l| l.contains("lost") || l.contains("SUMMARY"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        done
    };
    let seed = with("c-oecho", &["-n", "oecho"]);
    seed.assert_stdout_has("Failed to read packet: -1005.");
    assert_valgrind_clean(&seed);
    let probe = with("c-ping", &["-p", "-n", "oping", "-w", "100"]);
    assert_valgrind_clean(&probe);
    assert_eq!(ret(&probe, "nopart"), -(libc::EMSGSIZE as i64));
    let ping = with("c-ping", &["-n", "oping", "-c", "3", "-i", "10"]);
    assert_valgrind_clean(&ping);
    // The fqueue server for one flow and two events (PKT, then DOWN after the
    // client deallocates): it returns from main and valgrind reports.
    rig.b().register("c-fqserver", "fqs");
    let fq_path = c_prog("c-fqserver");
    let mut fq_args: Vec<&str> = vg.to_vec();
    fq_args.extend_from_slice(&[&fq_path, "-a", "1", "-e", "2"]);
    let fq = rig.b().spawn("valgrind", &fq_args);
    fq.wait_for_stdout("fqserver started", Duration::from_secs(30));
    // Under valgrind the accept starts late: wait until irmd knows it.
    rig.b().expect_log(
        &format!("New instance ({}) of c-fqserver added.", fq.pid()),
        Duration::from_secs(30),
    );
    let client = rig.a().run(
        &c_prog("c-oecho"),
        &["-n", "fqs", "-1"],
        Duration::from_secs(30),
    );
    client.assert_success();
    let fq_done = fq.wait(Duration::from_secs(60));
    fq_done.assert_stdout_has("type=FLOW_PKT");
    assert_valgrind_clean(&fq_done);
}

/// An unmodified C program gets a secure flow from the name's configuration
/// (`irm name create`), and `flow_alloc` returns -EAUTH (-1009) when the
/// server's certificate comes from a CA the client does not trust.
#[test]
fn c_oecho_over_a_secure_flow_and_eauth_from_flow_alloc() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let Some(rig) = Rig::pair("c_oecho_secure") else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let dir = rig.dir().to_path_buf();
    let write = |file: &str, text: &str| {
        let p = dir.join(file);
        std::fs::write(&p, text).expect("write pem");
        p.to_string_lossy().into_owned()
    };
    // Two CAs; the server's certificate for oecho comes from `issuing`.
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let pem = p.self_signed(&key).expect("self-signed").pem();
        (Issuer::new(p, key), pem)
    };
    let (issuing, issuing_pem) = ca("issuing CA");
    let (_, other_pem) = ca("other CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["oecho".to_string()])
        .expect("params")
        .signed_by(&key, &issuing)
        .expect("signed");
    let crt = write("oecho.crt", &cert.pem());
    let skey = write("oecho.key", &key.serialize_pem());
    let good_ca = write("ca.pem", &issuing_pem);
    let bad_ca = write("other.pem", &other_pem);
    b.irm_ok(&[
        "name", "create", "oecho", "scrtpath", &crt, "skeypath", &skey,
    ]);
    a.irm_ok(&["name", "create", "oecho", "cacrtpath", &good_ca]);
    let _server = serve_c(b, "c-oecho", "oecho", &["-l"]);
    let done = a.run(
        &c_prog("c-oecho"),
        &["-n", "oecho"],
        Duration::from_secs(10),
    );
    done.assert_success();
    done.assert_stdout_has("Server replied with Client says hi!");
    a.irm_ok(&["name", "create", "oecho", "cacrtpath", &bad_ca]);
    let done = a.run(
        &c_prog("c-oecho"),
        &["-n", "oecho"],
        Duration::from_secs(10),
    );
    done.assert_stdout_has("Failed to allocate flow: -1009.");
}

/// irmd killed under a C client that pings: its `flow_read` (or
/// `flow_write`) fails with -EIRMD within a second, and the program ends
/// normally — not by SIGPIPE from a wake-up pipe nobody reads any more.
#[test]
fn c_client_gets_eirmd_when_its_irmd_is_killed() {
    let Some(rig) = Rig::pair("c_eirmd") else {
        return;
    };
    let _server = rig.b().serve("flowtest", "echo", &["serve"]);
    let client = rig.a().spawn(
        &c_prog("c-ping"),
        &["-n", "echo", "-c", "100000", "-i", "1", "-w", "2000"],
    );
    client.wait_for_stdout("seq=20 ", Duration::from_secs(10));
    let t0 = std::time::Instant::now();
    rig.a().kill_irmd();
    let done = client.wait(Duration::from_secs(5));
    let took = t0.elapsed();
    let failed = done.stdout.lines().find(|l| l.starts_with("Failed"));
    eprintln!("C client after its irmd's SIGKILL: {failed:?} within {took:?}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(done.status.signal(), None, "{}", done.describe());
    assert!(
        done.stdout.contains(": -1002.") || done.stdout.contains("Failed to send SDU"),
        "{}",
        done.describe()
    );
    assert!(
        took < Duration::from_secs(1),
        "the C client ended {took:?} after its irmd died: {}",
        done.describe()
    );
    done.assert_stdout_has("ping statistics");
}
