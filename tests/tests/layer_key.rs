//! End-to-end: a layer key (`irm ipcp bootstrap ... key FILE [encrypt]`).
//!
//! Hosts with the layer's key exchange flows; a host without it, or with
//! another key, cannot allocate or inject anything (its frames are counted as
//! `auth_fail`); a frame captured on the segment and sent again is dropped
//! (`replay`); with `encrypt` the SDUs do not appear on the wire; a key file
//! others can read is refused at bootstrap; the key changes under a running
//! flow without losing an SDU. The attacker (host c) sees every frame: the
//! bridge forgets MACs at once (`ageing_time 0`), so it floods all unicast
//! (captured on the bridge's port to c, and sent again from c).
//! Both backends (`ETHFLOW_BACKEND=xdp`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ethflow_tests::capture::{enter_netns, Capture};
use ethflow_tests::forge::{format_mac, PacketSocket};
use ethflow_tests::{netns, Host, Rig};
use ipcpd_eth::layer_key::TRAILER_LEN;
use ipcpd_eth::wire::{Mac, DEFAULT_ETHERTYPE, ETH_HEADER_LEN, HEADER_LEN};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

/// A fresh key file in the rig's directory, made by `irm ipcp keygen`
/// (mode 0600, root's); a second keygen on it is refused.
fn keygen(rig: &Rig, name: &str) -> PathBuf {
    let path = rig.dir().join(name);
    let irm = ethflow_tests::bins::path("irm");
    let run = || {
        std::process::Command::new(&irm)
            .args(["ipcp", "keygen"])
            .arg(&path)
            .output()
            .expect("run irm ipcp keygen")
    };
    let out = run();
    assert!(out.status.success(), "irm ipcp keygen: {out:?}");
    let meta = std::fs::metadata(&path).expect("key file");
    assert_eq!(
        (
            meta.len(),
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777
        ),
        (32, 0o600)
    );
    let again = run();
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists"),
        "keygen over an existing key: {again:?}"
    );
    path
}

/// Hosts with irmd running and no IPCP yet: each test bootstraps them as it
/// needs (two hosts on a veth pair, more on a bridge).
fn rig(test: &str, hosts: usize) -> Option<Rig> {
    let mut b = Rig::builder(test).hosts(hosts).bare();
    if hosts > 2 {
        b = b.bridge();
    }
    let rig = b.build()?;
    for h in rig.hosts() {
        h.start_irmd(&[]);
    }
    Some(rig)
}

/// Bootstrap `host`'s IPCP with `extra` keywords and require success.
fn bootstrap(host: &Host, extra: &[&str]) {
    let done = host.bootstrap_with(extra);
    assert!(
        done.success(),
        "host {}: bootstrap {extra:?}: {}\n{}",
        host.name(),
        done.describe(),
        host.irmd_log()
    );
}

fn keyed(host: &Host, key: &Path, encrypt: bool) {
    let key = key.to_str().expect("utf-8 path");
    let mut extra = vec!["key", key];
    if encrypt {
        extra.push("encrypt");
    }
    bootstrap(host, &extra);
}

/// The IPCP's row of `irm ipcp list --json`.
fn ipcp_row(host: &Host) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&host.irm_ok(&["ipcp", "list", "--json"])).expect("ipcp list json");
    list["ipcps"][0].clone()
}

fn counters(host: &Host) -> BTreeMap<String, u64> {
    let row = ipcp_row(host);
    row["counters"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (counters reach irmd about once a second) until `pred` holds for
/// `host`'s counters; returns them.
fn wait_counters(
    host: &Host,
    what: &str,
    pred: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = counters(host);
        if pred(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "host {}: counters never showed {what}: {c:?}",
            host.name()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn n(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

/// Frames the layer key refused: a forged trailer whose key id happens to
/// match (a zero-padded short frame, when the key id is 0) fails as too old
/// before its tag is even checked.
fn key_refused(c: &BTreeMap<String, u64>) -> u64 {
    n(c, "auth_fail") + n(c, "replay")
}

fn mac_of(host: &Host) -> Mac {
    let out = netns::ip_in(host.ns(), &["-j", "link", "show", "dev", host.ifname()]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link");
    ethflow_tests::forge::parse_mac(v[0]["address"].as_str().expect("address")).expect("mac")
}

/// Send `frames` again, unchanged, from `dev` in `ns`; returns how many left.
fn resend(ns: &str, dev: &str, frames: Vec<Vec<u8>>) -> usize {
    let (ns, dev) = (ns.to_string(), dev.to_string());
    std::thread::spawn(move || {
        enter_netns(&ns);
        let sock = PacketSocket::open(&dev, None).expect("send socket");
        let mut sent = 0;
        for chunk in frames.chunks(32) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            sent += sock.send_batch(&refs).expect("send");
        }
        sent
    })
    .join()
    .expect("resend thread")
}

/// The SDU [`echo_and_ping_seen_by`] sends, to look for on the wire.
const MARKER: &str = "layer-key-plaintext-marker-0123456789";

/// a sends [`MARKER`] through b's oecho and `pings` pings to b's oping (both
/// servers returned, running until dropped), all captured where the bridge
/// hands frames to `c` (an XDP program on c's own interface would take them
/// before a packet socket there sees them): the frames captured.
fn echo_and_ping_seen_by(
    c: &Host,
    a: &Host,
    b: &Host,
    pings: u64,
) -> (Vec<Vec<u8>>, ethflow_tests::Proc, ethflow_tests::Proc) {
    let (port_ns, port) = c.peer_end();
    let capture = Capture::start(port_ns, port, Some(DEFAULT_ETHERTYPE));
    let echo = b.serve("oecho", "oecho", &["--listen"]);
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", MARKER]);
    done.assert_stdout_has(MARKER);
    let ping = b.serve("oping", "oping", &["--listen"]);
    let count = pings.to_string();
    let done = a.run("oping", &["-n", "oping", "-c", &count, "-i", "5"], LONG);
    ethflow_tests::pings_all_answered(&done, pings);
    (capture.finish(), echo, ping)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// a and b share the key and exchange flows (oecho, oping without loss) over
/// a bridge; c without a key and d with another key cannot allocate a flow
/// to b: b counts their frames as `auth_fail` and opens no flow. Max SDU shrinks by the trailer. Payloads are authenticated, not
/// hidden: c's capture contains them (the control for the `encrypt` test).
#[test]
fn hosts_with_the_key_talk_and_a_host_without_it_cannot_allocate() {
    let Some(rig) = rig(
        "hosts_with_the_key_talk_and_a_host_without_it_cannot_allocate",
        4,
    ) else {
        return;
    };
    let (a, b, c, d) = (rig.a(), rig.b(), rig.c(), rig.host(3));
    let key = keygen(&rig, "layer.key");
    keyed(a, &key, false);
    keyed(b, &key, false);
    bootstrap(c, &[]);
    keyed(d, &keygen(&rig, "other.key"), false);
    let row = ipcp_row(a);
    let mtu = row["mtu"].as_u64().expect("mtu");
    assert_eq!(
        row["max_sdu"].as_u64(),
        Some(mtu - (HEADER_LEN + TRAILER_LEN) as u64),
        "max SDU = MTU - header - trailer: {row}"
    );
    rig.flood_everything();
    let (frames, _echo, _ping) = echo_and_ping_seen_by(c, a, b, 100);
    assert!(
        frames.iter().any(|f| contains(f, MARKER.as_bytes())),
        "without encrypt the payload is only authenticated (c captured {} frames)",
        frames.len()
    );

    // c without a key, d with another key: nothing gets through.
    for h in [c, d] {
        let before = key_refused(&counters(b));
        let flows_before = b.flows().len();
        let done = h.run("oping", &["-n", "oping", "-c", "3", "-i", "100"], LONG);
        assert!(
            !done.success(),
            "host {} reached b's oping without the layer key: {}",
            h.name(),
            done.describe()
        );
        wait_counters(b, "c's frames refused", |k| key_refused(k) > before);
        assert_eq!(b.flows().len(), flows_before, "c opened a flow on b");
    }
    // a and b are unaffected.
    let done = a.run("oping", &["-n", "oping", "-c", "50", "-i", "5"], LONG);
    ethflow_tests::pings_all_answered(&done, 50);
}

/// With `key ... encrypt`: a capture of everything a and b send does not
/// contain the SDUs; every frame from a to b that c sends again is dropped
/// as a replay (b's `replay` counter grows by exactly that many — with
/// backend xdp, those for endpoints no longer live are dropped in the
/// driver instead — and nothing else happens), and the flow keeps working.
#[test]
fn encrypted_frames_hide_the_sdu_and_replays_are_dropped() {
    let Some(rig) = rig("encrypted_frames_hide_the_sdu_and_replays_are_dropped", 3) else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let key = keygen(&rig, "layer.key");
    keyed(a, &key, true);
    keyed(b, &key, true);
    rig.flood_everything();
    let (frames, _echo, _ping) = echo_and_ping_seen_by(c, a, b, 50);
    let (a_mac, b_mac) = (mac_of(a), mac_of(b));
    let captured = frames.len();
    let a_to_b: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| f.len() >= ETH_HEADER_LEN && f[..6] == b_mac && f[6..12] == a_mac)
        .collect();
    assert!(
        a_to_b.len() >= 50,
        "c should have seen a's pings to b ({} frames from {}, {} captured)",
        a_to_b.len(),
        format_mac(&a_mac),
        captured
    );
    assert!(
        !a_to_b.iter().any(|f| contains(f, MARKER.as_bytes())),
        "the SDU went over the wire in clear"
    );

    let before = counters(b);
    let sent = resend(c.ns(), c.ifname(), a_to_b) as u64;
    // Backend xdp drops frames for endpoints no longer live in the driver
    // (the oecho flow is gone) before the IPCP sees them; the rest, and
    // everything with backend raw, reach the IPCP and fail as replays.
    let refused = |k: &BTreeMap<String, u64>| {
        n(k, "replay") + n(k, "xdp_drop_unknown_eid")
            - n(&before, "replay")
            - n(&before, "xdp_drop_unknown_eid")
    };
    let after = wait_counters(b, "the replayed frames", |k| refused(k) >= sent);
    assert_eq!(
        refused(&after),
        sent,
        "every replayed frame, and only those, refused: {after:?}"
    );
    assert!(
        n(&after, "replay") > n(&before, "replay"),
        "the IPCP saw replays: {after:?}"
    );
    assert_eq!(n(&after, "auth_fail"), n(&before, "auth_fail"), "{after:?}");
    assert_eq!(n(&after, "malformed"), n(&before, "malformed"), "{after:?}");
    let done = a.run("oping", &["-n", "oping", "-c", "50", "-i", "5"], LONG);
    ethflow_tests::pings_all_answered(&done, 50);
}

/// A key file others can read is refused at bootstrap, with its mode in the
/// message; the same file with mode 0600 is taken.
#[test]
fn a_key_file_others_can_read_is_refused_at_bootstrap() {
    let Some(rig) = rig("a_key_file_others_can_read_is_refused_at_bootstrap", 2) else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let key = keygen(&rig, "layer.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let k = key.to_str().expect("utf-8");
    let done = a.bootstrap_with(&["key", k]);
    assert!(!done.success(), "bootstrapped with a 0644 key file");
    let text = format!("{}{}", done.stdout, done.stderr);
    assert!(
        text.contains("0644") && text.contains("layer.key"),
        "the error names the file and its mode: {text}"
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    keyed(a, &key, false);
    keyed(b, &key, false);
    let _ping = b.serve("oping", "oping", &["--listen"]);
    let done = a.run("oping", &["-n", "oping", "-c", "20", "-i", "5"], LONG);
    ethflow_tests::pings_all_answered(&done, 20);
}

/// The key changes under a running flow, in the three steps of
/// docs/security.md (announce FILE.next + SIGHUP; move it over FILE + SIGHUP;
/// SIGHUP to forget the old key), one host after the other: not one ping is
/// lost, and afterwards a host holding only the old key is refused.
#[test]
fn the_key_changes_under_a_running_flow_without_loss() {
    let Some(rig) = rig("the_key_changes_under_a_running_flow_without_loss", 3) else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    // Each host has its own copy of the key file, as on real machines.
    let dir = |h: &Host| {
        let d = rig.dir().join(format!("keys-{}", h.name()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d.join("layer.key")
    };
    let (ka, kb) = (dir(a), dir(b));
    irm::keyfile::keygen(&ka).expect("keygen");
    std::fs::copy(&ka, &kb).expect("copy");
    std::fs::set_permissions(&kb, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let old = rig.dir().join("old.key");
    std::fs::copy(&ka, &old).expect("copy");
    keyed(a, &ka, false);
    keyed(b, &kb, false);
    // c keeps the old key throughout.
    keyed(c, &old, false);
    let _ping = b.serve("oping", "oping", &["--listen"]);
    let ping = a.spawn("oping", &["-n", "oping", "-c", "1200", "-i", "5"]);
    let next = |k: &Path| ipcpd_eth::layer_key::next_path(k);
    let pause = || std::thread::sleep(Duration::from_millis(700));
    pause();
    // 1. announce the new key everywhere
    irm::keyfile::keygen(&next(&ka)).expect("keygen next");
    std::fs::copy(next(&ka), next(&kb)).expect("copy");
    std::fs::set_permissions(
        next(&kb),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    for h in [a, b] {
        h.signal_ipcp(Signal::SIGHUP);
        pause();
    }
    // 2. switch, one host after the other (a seals with the new key while b
    // still seals with the old one)
    for (h, k) in [(a, &ka), (b, &kb)] {
        std::fs::rename(next(k), k).expect("rename");
        h.signal_ipcp(Signal::SIGHUP);
        pause();
    }
    // 3. forget the old key
    for h in [a, b] {
        h.signal_ipcp(Signal::SIGHUP);
        pause();
    }
    let done = ping.wait(LONG);
    ethflow_tests::pings_all_answered(&done, 1200);
    for h in [a, b] {
        let log = h.irmd_log();
        assert_eq!(
            log.matches("Reloaded the layer key").count(),
            3,
            "host {}: three reloads expected:\n{log}",
            h.name()
        );
        assert_eq!(n(&counters(h), "auth_fail"), 0, "host {}", h.name());
    }
    // The host that kept the old key is refused now.
    let before = key_refused(&counters(b));
    let done = c.run("oping", &["-n", "oping", "-c", "3", "-i", "100"], LONG);
    assert!(!done.success(), "{}", done.describe());
    wait_counters(b, "c's frames refused", |k| key_refused(k) > before);
}

/// Keyed (and encrypting), a flow carries exactly MTU − header − trailer
/// bytes intact, and one byte more is refused with EMSGSIZE at `write`.
#[test]
fn max_sdu_shrinks_by_the_trailer_and_one_more_byte_is_refused() {
    let Some(rig) = rig(
        "max_sdu_shrinks_by_the_trailer_and_one_more_byte_is_refused",
        2,
    ) else {
        return;
    };
    let key = keygen(&rig, "layer.key");
    keyed(rig.a(), &key, true);
    keyed(rig.b(), &key, true);
    let (max, out) = ethflow_tests::max_sdu_round(&rig);
    let mtu = ipcp_row(rig.a())["mtu"].as_u64().expect("mtu") as usize;
    assert_eq!(max, mtu - HEADER_LEN - TRAILER_LEN, "{out}");
}

/// With a key, the attacks of issue 9 by a host that sees every frame fail:
/// c sends, with a's source MAC to b, a keep-alive claiming a restart (new
/// sender instance), deallocations, unknown-endpoint notices, data, flow
/// replies, requests for b's `oping` (liveness timeout u64::MAX), name
/// replies, random and garbage frames — while a pings b. Not one ping is
/// lost, b keeps no flow, and every forged frame is counted as refused.
#[test]
fn forged_frames_of_every_kind_change_nothing_with_a_key() {
    let Some(rig) = rig("forged_frames_of_every_kind_change_nothing_with_a_key", 3) else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let key = keygen(&rig, "layer.key");
    keyed(a, &key, false);
    keyed(b, &key, false);
    rig.flood_everything();
    let _ping = b.serve("oping", "oping", &["--listen"]);
    let ping = a.spawn("oping", &["-n", "oping", "-c", "600", "-i", "5"]);
    std::thread::sleep(Duration::from_millis(500));
    let before = counters(b);
    let (a_mac, b_mac) = (format_mac(&mac_of(a)), format_mac(&mac_of(b)));
    const EACH: u64 = 300;
    let kinds = [
        "keep-alive",
        "dealloc",
        "dealloc-ack",
        "unknown-eid",
        "data",
        "flow-reply",
        "flow-req",
        "name-reply",
        "random",
        "garbage",
    ];
    for kind in kinds {
        let mut cmd = netns::exec_cmd(c.ns(), &ethflow_tests::bins::resolve("forge"));
        cmd.args([
            "--dev",
            c.ifname(),
            "--dst",
            &b_mac,
            "--src",
            &a_mac,
            "--type",
            kind,
            "--name",
            "oping",
            "--timeout-ms",
            &u64::MAX.to_string(),
            "--count",
            &EACH.to_string(),
            "--rate",
            "2000",
            "--duration-s",
            "10",
        ]);
        let done = ethflow_tests::proc::run(cmd, rig.dir(), &format!("forge-{kind}"), LONG);
        done.assert_success();
    }
    let done = ping.wait(LONG);
    ethflow_tests::pings_all_answered(&done, 600);
    let total = EACH * kinds.len() as u64;
    // The XDP program drops DATA for endpoints that are not live in the
    // driver; everything else reaches the IPCP and fails authentication.
    let refused = |k: &BTreeMap<String, u64>| {
        key_refused(k) + n(k, "xdp_drop_unknown_eid") + n(k, "xdp_drop_malformed")
            - key_refused(&before)
            - n(&before, "xdp_drop_unknown_eid")
            - n(&before, "xdp_drop_malformed")
    };
    let after = wait_counters(b, "every forged frame refused", |k| refused(k) >= total);
    assert_eq!(refused(&after), total, "{after:?}");
    // The ping's flow is gone; a forged request would have left one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.flows().is_empty() {
        assert!(Instant::now() < deadline, "b keeps a flow: {:?}", b.flows());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only the ping's own end: a forged restart, deallocation or silence
    // would show another cause (and lost pings).
    for h in [a, b] {
        let log = h.irmd_log();
        let odd: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("down:") && !l.contains("down: Peer deallocated."))
            .collect();
        assert!(odd.is_empty(), "host {}: {odd:?}", h.name());
    }
}

/// With a key, a flood of management frames carrying b's MAC (DEALLOC at
/// 150 000/s, far over the per-MAC management budget the backends keep
/// without a key) spends nothing of b's budget at a: no budget is charged
/// before the tag is checked. b allocates flows to a and pings through the
/// flood; a's budget counters stay at zero and the flood is counted as
/// `auth_fail`.
#[test]
fn a_flood_with_a_members_mac_does_not_spend_its_budget() {
    let Some(rig) = rig("a_flood_with_a_members_mac_does_not_spend_its_budget", 3) else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    // Port security: c's forged source MAC must not steer the bridge (that
    // would cut b off whatever the IPCPs do).
    rig.set_learning(2, false);
    let key = keygen(&rig, "layer.key");
    keyed(a, &key, false);
    keyed(b, &key, false);
    let _ping = a.serve("oping", "oping", &["--listen"]);
    let (a_mac, b_mac) = (format_mac(&mac_of(a)), format_mac(&mac_of(b)));
    let flood = c.spawn(
        "forge",
        &[
            "--dev",
            c.ifname(),
            "--dst",
            &a_mac,
            "--src",
            &b_mac,
            "--type",
            "dealloc",
            "--count",
            "750000",
            "--rate",
            "150000",
            "--duration-s",
            "5",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    // Fresh allocations while the flood runs: each needs b's management
    // frames (name query, flow request) to get through at a.
    for _ in 0..3 {
        let done = b.run("oping", &["-n", "oping", "-c", "5", "-i", "100"], LONG);
        ethflow_tests::pings_all_answered(&done, 5);
    }
    flood.wait(LONG).assert_success();
    let k = wait_counters(a, "the flood refused", |k| key_refused(k) > 20_000);
    assert_eq!(
        n(&k, "mgmt_budget_drops") + n(&k, "xdp_drop_mgmt_budget"),
        0,
        "b's budget was spent by frames that did not verify: {k:?}"
    );
}
