//! End-to-end: the Wireshark/tshark dissector (dist/wireshark/ethflow.lua)
//! on frames captured from a live rig and on hand-made malformed frames
//! (issue 14).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ethflow_tests::Rig;

fn dissector() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/wireshark/ethflow.lua")
}

/// `tshark -X lua_script:ethflow.lua -r FILE -T fields -e …`, one `|`-separated
/// row per frame.
fn tshark_fields(pcap: &std::path::Path, fields: &[&str]) -> Vec<Vec<String>> {
    tshark_fields_with(pcap, &[], fields)
}

/// [`tshark_fields`] with `-o pref:value` settings.
fn tshark_fields_with(pcap: &std::path::Path, prefs: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let lua = format!("lua_script:{}", dissector().display());
    let mut cmd = Command::new("tshark");
    cmd.args(["-X", &lua]);
    for p in prefs {
        cmd.args(["-o", p]);
    }
    cmd.arg("-r")
        .arg(pcap)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Frames of a live rig, captured with tshark inside host b's namespace,
/// decode field by field: name query/reply with the name's hash, FLOW_REQ
/// and FLOW_REPLY, DATA with the SDU, DEALLOC and its ACK; nothing is
/// flagged malformed.
#[test]
fn dissector_decodes_a_live_capture() {
    let Some(rig) = Rig::pair("dissector_decodes_a_live_capture") else {
        return;
    };
    let msg = "dissect me";
    rig.b().register("oecho", "oecho");
    let rows = live_capture(
        &rig,
        msg,
        &[],
        &[
            "ethflow.version",
            "ethflow.type",
            "ethflow.length",
            "ethflow.name_query.hash",
            "ethflow.name_reply.hash",
            "ethflow.flow_req.name_hash",
            "ethflow.flow_reply.code",
            "ethflow.data.sdu",
            "_ws.expert.message",
        ],
    );
    assert!(!rows.is_empty(), "nothing captured");
    let hash = sha256_hex("oecho");
    let sdu: String = msg.bytes().map(|b| format!("{b:02x}")).collect();
    let of_type = |t: &str| rows.iter().filter(|r| r[1] == t).collect::<Vec<_>>();
    for r in &rows {
        assert_eq!(r[0], "2", "version: {r:?}");
        assert_eq!(r[8], "", "flagged malformed: {r:?}");
    }
    assert!(
        of_type("1").iter().any(|r| r[3] == hash),
        "NAME_QUERY: {rows:?}"
    );
    assert!(
        of_type("2").iter().any(|r| r[4] == hash),
        "NAME_REPLY: {rows:?}"
    );
    assert!(
        of_type("3").iter().any(|r| r[2] == "78" && r[5] == hash),
        "FLOW_REQ: {rows:?}"
    );
    assert!(
        of_type("4").iter().any(|r| r[2] == "21" && r[6] == "0"),
        "FLOW_REPLY: {rows:?}"
    );
    assert!(of_type("0").iter().any(|r| r[7] == sdu), "DATA: {rows:?}");
    assert!(!of_type("5").is_empty(), "DEALLOC: {rows:?}");
    assert!(!of_type("6").is_empty(), "DEALLOC_ACK: {rows:?}");
}

/// Hand-made frames with one fault each are flagged with the codec's error
/// names; a padded DATA frame decodes by its length field. (No namespace: a
/// pcap file written here.)
#[test]
fn dissector_flags_malformed_frames() {
    fn frame(v: u8, t: u8, len: u16, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5, v, t];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&1u64.to_be_bytes());
        f.extend_from_slice(&2u64.to_be_bytes());
        f.extend_from_slice(rest);
        f
    }
    let reply = |code: u8| {
        let mut p = 7u64.to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(&1480u32.to_be_bytes());
        p.extend_from_slice(&5000u64.to_be_bytes());
        p
    };
    let frames = [
        frame(2, 4, 21, &reply(0)),
        frame(3, 0, 0, &[0; 26]),
        frame(2, 11, 0, &[0; 26]),
        frame(2, 5, 4, &[0; 26]),
        frame(2, 4, 21, &reply(9)),
        frame(2, 0, 100, &[b'x'; 10]),
        frame(2, 0, 1, &[b'Z'; 26]),
    ];
    // pcap global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    let mut pcap = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    for f in &frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            pcap.extend_from_slice(&v.to_le_bytes());
        }
        pcap.extend_from_slice(f);
    }
    let dir = std::env::temp_dir().join(format!("ethflow-dissect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.pcap");
    std::fs::write(&path, &pcap).unwrap();
    let rows = tshark_fields(
        &path,
        &[
            "ethflow.type",
            "ethflow.flow_reply.timeout",
            "ethflow.data.sdu",
            "_ws.expert.message",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(rows.len(), frames.len(), "{rows:?}");
    assert_eq!(rows[0][1], "5000", "{rows:?}");
    assert_eq!(rows[0][3], "", "{rows:?}");
    for (row, want) in rows[1..6].iter().zip([
        "BadVersion(3)",
        "BadType(11)",
        "BadLength",
        "BadField",
        "Truncated",
    ]) {
        assert!(row[3].contains(want), "want {want}: {row:?}");
    }
    assert_eq!(rows[6][2], "5a", "padding taken as SDU: {rows:?}");
    assert_eq!(rows[6][3], "", "{rows:?}");
}

/// Capture both hosts' interfaces while host a sends `msg` with oecho to
/// host b (which has `oecho` registered and bound), then decode both
/// captures with `prefs`. The IPCPs send with PACKET_QDISC_BYPASS, which
/// taps on the sending host do not see: each host's capture holds what the
/// other sent.
fn live_capture(rig: &Rig, msg: &str, prefs: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut caps = Vec::new();
    for h in rig.hosts() {
        let pcap = rig.dir().join(format!("{}.pcap", h.name()));
        let cap = h.spawn(
            "tshark",
            &[
                "-i",
                h.ifname(),
                "-f",
                "ether proto 0x88b5",
                "-w",
                pcap.to_str().unwrap(),
            ],
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cap.stderr().contains("Capturing on") {
            assert!(
                cap.is_running() && std::time::Instant::now() < deadline,
                "tshark did not start capturing: {}",
                cap.kill().describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        caps.push((pcap, cap));
    }
    // "Capturing on" comes a moment before frames are really taken (seen:
    // a capture that missed the first frames); give both a settle time.
    std::thread::sleep(Duration::from_secs(1));
    let server = rig.b().spawn("oecho", &["--listen"]);
    rig.b().expect_log(
        &format!("New instance ({}) of oecho added.", server.pid()),
        Duration::from_secs(5),
    );
    rig.a().run_ok("oecho", &["-n", "oecho", "-m", msg]);
    // The client's deallocation and its acknowledgement.
    std::thread::sleep(Duration::from_millis(700));
    let mut rows = Vec::new();
    for (pcap, cap) in &caps {
        cap.signal(nix::sys::signal::Signal::SIGINT);
        let done = cap.wait(Duration::from_secs(20));
        assert!(pcap.exists(), "no capture: {}", done.describe());
        rows.extend(tshark_fields_with(pcap, prefs, fields));
    }
    rows
}

/// With a layer key (not encrypting), the trailer decodes behind the
/// `ethflow.keyed` preference: key id and counter on every frame, the SDU
/// still readable, nothing flagged.
#[test]
fn dissector_decodes_the_layer_key_trailer() {
    let Some(rig) = Rig::builder("dissector_decodes_the_layer_key_trailer")
        .bare()
        .build()
    else {
        return;
    };
    let key = rig.dir().join("layer.key");
    let out = Command::new(ethflow_tests::bins::path("irm"))
        .args(["ipcp", "keygen"])
        .arg(&key)
        .output()
        .expect("irm ipcp keygen");
    assert!(out.status.success(), "{out:?}");
    for h in rig.hosts() {
        h.start_irmd(&[]);
        let done = h.bootstrap_with(&["key", key.to_str().unwrap()]);
        assert!(done.success(), "{}", done.describe());
    }
    rig.b().register("oecho", "oecho");
    let msg = "keyed but clear";
    let rows = live_capture(
        &rig,
        msg,
        &["ethflow.keyed:TRUE"],
        &[
            "ethflow.type",
            "ethflow.trailer.key_id",
            "ethflow.trailer.counter",
            "ethflow.data.sdu",
            "_ws.expert.message",
        ],
    );
    assert!(!rows.is_empty(), "nothing captured");
    for r in &rows {
        assert!(!r[1].is_empty() && !r[2].is_empty(), "no trailer: {r:?}");
        assert_eq!(r[4], "", "flagged: {r:?}");
    }
    let sdu: String = msg.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(rows.iter().any(|r| r[0] == "0" && r[3] == sdu), "{rows:?}");
    // Without the preference the trailer is taken as padding: still no error.
    let pcap = rig.dir().join(format!("{}.pcap", rig.b().name()));
    let plain = tshark_fields(&pcap, &["ethflow.trailer.key_id", "ethflow.padding"]);
    assert!(plain.iter().all(|r| r[0].is_empty()), "{plain:?}");
}
