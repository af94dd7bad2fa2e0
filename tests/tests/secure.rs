//! End-to-end: secure flows (`irm name create <name> scrtpath … skeypath …`
//! on the server's host, `… cacrtpath …` on the client's). A test CA made
//! here with rcgen issues the certificates.
//!
//! Unmodified oecho and oping work over secure flows, and a capture on the
//! link never shows the marker the client sends (the control: the same
//! marker is seen on a plain flow). A server whose certificate is expired,
//! for another name or from an unknown CA is refused with EAUTH on the
//! client; ciphers that do not meet give ECRYPT.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ethflow_tests::capture::{enter_netns, Capture};
use ethflow_tests::forge::PacketSocket;
use ethflow_tests::{netns, Host, Rig};
use ipcpd_eth::wire::{FrameType, HeaderView, DEFAULT_ETHERTYPE, ETH_HEADER_LEN, HEADER_LEN};
use nix::sys::signal::Signal;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const LONG: Duration = Duration::from_secs(60);

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(p, key),
        pem,
    }
}

/// Write a certificate for `names` (valid `nb`..`na` days from now) and its
/// PKCS#8 key into `dir` as `<file>.crt` / `<file>.key`.
fn issue(ca: &Ca, dir: &Path, file: &str, names: &[&str], nb: i64, na: i64) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(nb);
    p.not_after = now + time::Duration::days(na);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let crt = dir.join(format!("{file}.crt"));
    let k = dir.join(format!("{file}.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (path(&crt), path(&k))
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let p: PathBuf = dir.join(file);
    std::fs::write(&p, text).unwrap();
    path(&p)
}

fn name_create(host: &Host, name: &str, kv: &[(&str, &str)]) {
    let mut args = vec!["name", "create", name];
    for (k, v) in kv {
        args.push(k);
        args.push(v);
    }
    host.irm_ok(&args);
}

fn seen(frames: &[Vec<u8>], needle: &str) -> bool {
    frames
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[test]
fn secure_oecho_and_oping_work_and_the_wire_shows_no_plaintext() {
    let Some(rig) = Rig::pair("secure_oecho_and_oping_work_and_the_wire_shows_no_plaintext") else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    secure_names(&rig, &["oecho", "oping"]);
    let (ns, dev) = (b.ns().to_string(), b.ifname().to_string());
    let capture = Capture::start(&ns, &dev, None);
    let _echo = b.serve("oecho", "oecho", &["--listen"]);
    let marker = "secure-flow-plaintext-marker-0123456789";
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", marker]);
    done.assert_stdout_has(marker);
    let _ping = b.serve("oping", "oping", &["--listen"]);
    let done = a.run("oping", &["-n", "oping", "-c", "50", "-i", "5"], LONG);
    ethflow_tests::pings_all_answered(&done, 50);
    let frames = capture.finish();
    assert!(frames.len() > 50, "the capture saw {} frames", frames.len());
    assert!(
        !seen(&frames, marker),
        "the marker crossed the wire in clear ({} frames captured)",
        frames.len()
    );

    // The control: without the client's configuration (and the server's),
    // the same marker is visible, so the capture would have caught it.
    a.irm_ok(&["name", "destroy", "oecho"]);
    b.irm_ok(&["name", "destroy", "oecho"]);
    let capture = Capture::start(&ns, &dev, None);
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", marker]);
    done.assert_stdout_has(marker);
    assert!(seen(&capture.finish(), marker), "plain flow not captured");
}

#[test]
fn bad_server_certificates_give_eauth_and_disjoint_ciphers_ecrypt() {
    let Some(rig) = Rig::pair("bad_server_certificates_give_eauth_and_disjoint_ciphers_ecrypt")
    else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let dir = rig.dir();
    let ca1 = ca("ethflow test CA");
    let ca_pem = write(dir, "ca.pem", &ca1.pem);
    name_create(a, "oecho", &[("cacrtpath", &ca_pem)]);
    let _echo = b.serve("oecho", "oecho", &["--listen"]);
    let stranger = ca("some other CA");
    let cases = [
        ("expired", issue(&ca1, dir, "expired", &["oecho"], -30, -1)),
        (
            "other-name",
            issue(&ca1, dir, "other", &["not-oecho"], -1, 30),
        ),
        (
            "unknown-ca",
            issue(&stranger, dir, "stranger", &["oecho"], -1, 30),
        ),
    ];
    for (what, (crt, key)) in &cases {
        name_create(b, "oecho", &[("scrtpath", crt), ("skeypath", key)]);
        refused(a, "EAUTH, -1009", what);
    }
    // A good certificate works (the server kept accepting after the refusals).
    let (crt, key) = issue(&ca1, dir, "good", &["oecho"], -1, 30);
    name_create(b, "oecho", &[("scrtpath", &crt), ("skeypath", &key)]);
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", "good"]);
    done.assert_stdout_has("good");
    // Client certificates required (the server has a CA): none → EAUTH,
    // one from the CA → a working flow.
    name_create(
        b,
        "oecho",
        &[
            ("scrtpath", &crt),
            ("skeypath", &key),
            ("cacrtpath", &ca_pem),
        ],
    );
    refused(a, "EAUTH, -1009", "no client certificate");
    let (ccrt, ckey) = issue(&ca1, dir, "client", &["client-a"], -1, 30);
    name_create(
        a,
        "oecho",
        &[
            ("cacrtpath", &ca_pem),
            ("ccrtpath", &ccrt),
            ("ckeypath", &ckey),
        ],
    );
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", "mutual"]);
    done.assert_stdout_has("mutual");
    // The server only speaks ChaCha20-Poly1305, the client only AES-256-GCM.
    let senc = write(dir, "s.conf", "cipher = chacha20-poly1305\n");
    let cenc = write(dir, "c.conf", "cipher = aes-256-gcm\n");
    name_create(
        b,
        "oecho",
        &[("scrtpath", &crt), ("skeypath", &key), ("sencpath", &senc)],
    );
    name_create(a, "oecho", &[("cacrtpath", &ca_pem), ("cencpath", &cenc)]);
    refused(a, "ECRYPT, -1008", "disjoint ciphers");
    // A server without any configuration (a plain oecho, as an impostor
    // that has no key would be): it echoes the client's hello, which is no
    // server hello → ECRYPT, never a plain flow.
    b.irm_ok(&["name", "destroy", "oecho"]);
    refused(a, "ECRYPT, -1008", "plain server");
}

fn mac_of(host: &Host) -> Vec<u8> {
    let out = netns::ip_in(host.ns(), &["-j", "link", "show", "dev", host.ifname()]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link");
    ethflow_tests::forge::parse_mac(v[0]["address"].as_str().expect("address"))
        .expect("mac")
        .to_vec()
}

/// Send `frames` from `dev` in `ns`; returns how many left.
fn inject(ns: &str, dev: &str, frames: Vec<Vec<u8>>) -> usize {
    let (ns, dev) = (ns.to_string(), dev.to_string());
    std::thread::spawn(move || {
        enter_netns(&ns);
        let sock = PacketSocket::open(&dev, None).expect("send socket");
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        sock.send_batch(&refs).expect("send")
    })
    .join()
    .expect("inject thread")
}

/// A DATA frame of b's secure flow, captured on the link, is sent to a again
/// unchanged (a replay) and with one bit of its tag flipped (tampered): the
/// IPCP delivers both (no layer key), a's library drops and counts both, the
/// application reads neither. Then b's server is killed: a's blocked read on
/// the secure flow still ends with EFLOWDOWN.
#[test]
fn injected_replayed_and_tampered_records_are_dropped_and_liveness_holds() {
    let Some(rig) =
        Rig::pair("injected_replayed_and_tampered_records_are_dropped_and_liveness_holds")
    else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let (ca, ca_pem) = secure_names(&rig, &["oecho"]);
    // Captured where a receives (the IPCP sends with PACKET_QDISC_BYPASS,
    // which a packet socket on the sender's side does not see).
    let capture = Capture::start(a.ns(), a.ifname(), None);
    let server = b.serve("oecho", "oecho", &["--listen", "--linger"]);
    let client = a.spawn("flowtest", &["hold", "-n", "oecho", "--max-wait", "30000"]);
    client.wait_for_stdout("ready", Duration::from_secs(10));
    let frames = capture.finish();
    let b_mac = mac_of(b);
    let data: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| {
            f.len() > ETH_HEADER_LEN
                && f[6..12] == b_mac[..]
                && f[12..14] == DEFAULT_ETHERTYPE.to_be_bytes()
                && HeaderView::new_checked(&f[ETH_HEADER_LEN..])
                    .is_ok_and(|h| h.frame_type() == FrameType::Data)
        })
        .collect();
    // The server's hello and the echo of "hold", at least.
    assert!(data.len() >= 2, "b sent {} DATA frames", data.len());
    let echo = data.last().expect("the echo").clone();
    let len = HeaderView::new_checked(&echo[ETH_HEADER_LEN..])
        .expect("header")
        .payload()
        .len();
    let mut tampered = echo.clone();
    tampered[ETH_HEADER_LEN + HEADER_LEN + len - 1] ^= 0x01;
    assert_eq!(inject(b.ns(), b.ifname(), vec![echo, tampered]), 2);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        client.is_running(),
        "the client read an injected record: {}",
        client.stdout()
    );
    server.signal(Signal::SIGKILL);
    let done = client.wait(Duration::from_secs(30));
    let ended = done
        .stdout
        .lines()
        .find(|l| l.starts_with("ended"))
        .unwrap_or_else(|| panic!("read did not end: {}", done.describe()))
        .to_string();
    assert!(
        ended.contains("code=1005") && ended.contains("secure=true"),
        "{ended}"
    );
    assert!(ended.contains("dropped_records=2"), "{ended}");

    // A secure flow's max SDU is the plain one less the record overhead
    // (sequence number and tag): exactly that many bytes arrive intact, one
    // more is refused with EMSGSIZE.
    let (crt, key) = issue(&ca, rig.dir(), "flowtest", &["flowtest"], -1, 30);
    name_create(b, "flowtest", &[("scrtpath", &crt), ("skeypath", &key)]);
    name_create(a, "flowtest", &[("cacrtpath", &ca_pem)]);
    let (max, out) = ethflow_tests::max_sdu_round(&rig);
    assert_eq!(max, 1500 - HEADER_LEN - 24, "{out}");
}

/// Secure flows set in irmd's configuration file (`[[name]]`), no `irm name
/// create`: the client's allocation is refused with EAUTH while its file
/// names the wrong CA, and works with the right one.
#[test]
fn secure_names_from_the_configuration_file() {
    use ethflow_tests::{backend, LAYER};
    let Some(rig) = Rig::builder("secure_names_from_the_configuration_file")
        .bare()
        .build()
    else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let dir = rig.dir();
    let ca1 = ca("ethflow test CA");
    let good = write(dir, "ca.pem", &ca1.pem);
    let bad = write(dir, "other.pem", &ca("other CA").pem);
    let (crt, key) = issue(&ca1, dir, "server", &["oecho"], -1, 30);
    let config = |host: &Host, file: &str, extra: &str| {
        let text = format!(
            "[[ipcp]]\nname = \"{}\"\ntype = \"eth-dix\"\nlayer = \"{LAYER}\"\ndevice = \"{}\"\nbackend = \"{}\"\n{extra}",
            host.ipcp_name(),
            host.ifname(),
            backend(),
        );
        write(dir, file, &text)
    };
    let b_cfg = config(
        b,
        "b.toml",
        &format!(
            "[[register]]\nname = \"oecho\"\nlayer = \"{LAYER}\"\n[[bind]]\nprogram = \"oecho\"\nname = \"oecho\"\n[[name]]\nname = \"oecho\"\nscrtpath = \"{crt}\"\nskeypath = \"{key}\"\n"
        ),
    );
    let a_cfg = config(
        a,
        "a.toml",
        &format!("[[name]]\nname = \"oecho\"\ncacrtpath = \"{bad}\"\n"),
    );
    for (h, cfg) in [(a, &a_cfg), (b, &b_cfg)] {
        h.start_irmd(&["--config".into(), cfg.clone()]);
        h.expect_log("applied", Duration::from_secs(20));
    }
    let server = b.spawn("oecho", &["--listen"]);
    b.expect_log(
        &format!("New instance ({}) of oecho added.", server.pid()),
        Duration::from_secs(5),
    );
    refused(a, "EAUTH, -1009", "the wrong CA in the client's file");
    name_create(a, "oecho", &[("cacrtpath", &good)]);
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", "from the file"]);
    done.assert_stdout_has("from the file");
}

/// The hybrid key exchange (X25519 + ML-KEM-768) on a link of MTU 1280: the
/// client's hello (an 1184-byte ML-KEM key) and the server's (a 1088-byte
/// ciphertext and the chain) do not fit one SDU, so they cross in fragments;
/// oecho works and the client's log names the hybrid. One side asking for the
/// hybrid only and the other for X25519 only fails with ECRYPT on the client
/// and a log line on the server, both ways round.
#[test]
fn hybrid_key_exchange_crosses_a_small_mtu_and_a_mismatch_is_ecrypt() {
    let Some(rig) =
        Rig::builder("hybrid_key_exchange_crosses_a_small_mtu_and_a_mismatch_is_ecrypt")
            .mtu(1280)
            .build()
    else {
        return;
    };
    let (a, b) = (rig.a(), rig.b());
    let dir = rig.dir();
    let ca = ca("ethflow test CA");
    let ca_pem = write(dir, "ca.pem", &ca.pem);
    let (crt, key) = issue(&ca, dir, "server", &["oecho"], -1, 30);
    let hybrid = write(dir, "hybrid.conf", "kex = x25519-mlkem768\n");
    let classic = write(dir, "classic.conf", "kex = x25519\n");
    let server = |enc: &str| {
        name_create(
            b,
            "oecho",
            &[("scrtpath", &crt), ("skeypath", &key), ("sencpath", enc)],
        )
    };
    let client = |enc: &str| name_create(a, "oecho", &[("cacrtpath", &ca_pem), ("cencpath", enc)]);
    let echo = b.serve("oecho", "oecho", &["--listen"]);
    server(&hybrid);
    client(&hybrid);
    let mut cmd = a.cmd("oecho", &["-n", "oecho", "-m", "post-quantum hello"]);
    cmd.env("RUST_LOG", "irm=info");
    let done = ethflow_tests::Proc::spawn(cmd, dir, "oecho-hybrid").wait(LONG);
    assert!(
        done.success() && done.stdout.contains("post-quantum hello"),
        "{}",
        done.describe()
    );
    assert!(
        done.stderr
            .contains("secure flow to oecho: aes-256-gcm, x25519-mlkem768"),
        "{}",
        done.describe()
    );
    for (srv, cli) in [(&hybrid, &classic), (&classic, &hybrid)] {
        server(srv);
        client(cli);
        let before = echo.stderr().matches("no key exchange in common").count();
        let done = refused(a, "ECRYPT, -1008", &format!("server {srv}, client {cli}"));
        assert!(
            done.stderr.contains("no key exchange in common"),
            "{}",
            done.describe()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while echo.stderr().matches("no key exchange in common").count() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not log the mismatch: {}",
                echo.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A self-signed certificate for `names` (its own CA), written as in [`issue`].
fn self_signed(dir: &Path, file: &str, names: &[&str]) -> (String, String) {
    let p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    let crt = dir.join(format!("{file}.crt"));
    let k = dir.join(format!("{file}.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (path(&crt), path(&k))
}

/// a's oecho to `oecho` fails with `code` (`"EAUTH, -1009"`) on stderr;
/// `what` names the case in the failure message. The failed run.
fn refused(a: &Host, code: &str, what: &str) -> ethflow_tests::Finished {
    let done = a.run("oecho", &["-n", "oecho", "-m", "x"], LONG);
    assert!(
        !done.success() && done.stderr.contains(code),
        "{what}: {}",
        done.describe()
    );
    done
}

/// Messages an oecho server printed as received.
fn received(server: &ethflow_tests::Proc) -> Vec<String> {
    server
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("Message from client is "))
        .map(|m| m.trim_end_matches('.').to_string())
        .collect()
}

/// A third host c on the same segment runs a real irmd, IPCP and oecho
/// server that register the names b serves, with certificates that do not
/// prove them: one from the trusted CA for another name, one self-signed
/// for the right name. The layer's name resolution keeps a known holder
/// (b) and otherwise takes the first answer, so:
/// * once a knows b, every secure allocation reaches b (its server receives
///   each message), none reaches c;
/// * for names only c answers, a's allocation fails with EAUTH, the failed
///   check is logged, and c's server never receives the message;
/// * for a name b and c both answer for the first time, whichever wins the
///   race, the message reaches b or the allocation fails with EAUTH — never c.
#[test]
fn an_impostor_on_a_third_host_never_gets_a_secure_flow() {
    let Some(rig) = Rig::builder("an_impostor_on_a_third_host_never_gets_a_secure_flow")
        .hosts(3)
        .bridge()
        .build()
    else {
        return;
    };
    let (a, b, c) = (rig.a(), rig.b(), rig.c());
    let dir = rig.dir();
    let ca1 = ca("ethflow test CA");
    let ca_pem = write(dir, "ca.pem", &ca1.pem);
    let (crt, key) = issue(&ca1, dir, "genuine", &["oecho", "gamma"], -1, 30);
    let (other_crt, other_key) = issue(&ca1, dir, "other", &["not-oecho"], -1, 30);
    let (self_crt, self_key) = self_signed(dir, "selfsigned", &["beta", "oecho", "gamma"]);
    for name in ["oecho", "alpha", "beta", "gamma"] {
        name_create(a, name, &[("cacrtpath", &ca_pem)]);
    }
    for name in ["oecho", "gamma"] {
        name_create(b, name, &[("scrtpath", &crt), ("skeypath", &key)]);
    }
    // c: a certificate from the trusted CA for another name, or a
    // self-signed one for the right name.
    for (name, crt, key) in [
        ("oecho", &other_crt, &other_key),
        ("alpha", &other_crt, &other_key),
        ("beta", &self_crt, &self_key),
        ("gamma", &other_crt, &other_key),
    ] {
        name_create(c, name, &[("scrtpath", crt), ("skeypath", key)]);
    }

    b.register("oecho", "gamma");
    let genuine = b.serve("oecho", "oecho", &["--listen"]);
    let done = a.run_ok("oecho", &["-n", "oecho", "-m", "first"]);
    done.assert_stdout_has("first");

    for name in ["alpha", "beta", "gamma"] {
        c.register("oecho", name);
    }
    let impostor = c.serve("oecho", "oecho", &["--listen"]);
    for i in 0..5 {
        let m = format!("to-b-{i}");
        let done = a.run_ok("oecho", &["-n", "oecho", "-m", &m]);
        assert!(done.stdout.contains(&m), "{}", done.describe());
    }
    for (name, check) in [
        ("alpha", "certificate is not for name alpha"),
        ("beta", "certificate not issued by a trusted CA"),
    ] {
        let m = format!("to-{name}");
        let done = a.run("oecho", &["-n", name, "-m", &m], LONG);
        assert!(
            !done.success() && done.stderr.contains("EAUTH, -1009"),
            "{name}: {}",
            done.describe()
        );
        assert!(done.stderr.contains(check), "{name}: {}", done.describe());
    }
    // The race for a name a never resolved.
    let done = a.run("oecho", &["-n", "gamma", "-m", "to-gamma"], LONG);
    let race = if done.success() {
        done.assert_stdout_has("to-gamma");
        "b"
    } else {
        assert!(done.stderr.contains("EAUTH, -1009"), "{}", done.describe());
        "c (refused)"
    };
    eprintln!("the race for gamma went to {race}");

    std::thread::sleep(Duration::from_millis(300));
    let to_b = received(&genuine);
    let to_c = received(&impostor);
    assert!(to_c.is_empty(), "the impostor received {to_c:?}");
    for i in 0..5 {
        assert!(to_b.contains(&format!("to-b-{i}")), "b received {to_b:?}");
    }
    assert_eq!(
        to_b.contains(&"to-gamma".to_string()),
        race == "b",
        "{to_b:?}"
    );
    // c's server ran handshakes for the names only it answered (so the test
    // did reach it), and the client refused each.
    assert!(
        impostor.stdout().contains("New flow"),
        "the impostor saw no allocation at all: {}",
        impostor.stdout()
    );
}

/// `names` as secure names: b serves them with one certificate from a test
/// CA, a trusts that CA for them. The CA, and the file a trusts.
fn secure_names(rig: &Rig, names: &[&str]) -> (Ca, String) {
    let dir = rig.dir();
    let ca = ca("ethflow test CA");
    let ca_pem = write(dir, "ca.pem", &ca.pem);
    let (crt, key) = issue(&ca, dir, "server", names, -1, 30);
    for &name in names {
        name_create(rig.b(), name, &[("scrtpath", &crt), ("skeypath", &key)]);
        name_create(rig.a(), name, &[("cacrtpath", &ca_pem)]);
    }
    (ca, ca_pem)
}

/// `oecho` as a secure name (see [`secure_names`]).
fn secure_oecho(rig: &Rig) {
    secure_names(rig, &["oecho"]);
}

/// The liveness rows whose rig or trigger time differ, on secure flows:
/// the check that the flow was secure, then the plain row's bound.
fn assert_secure_detected(
    row: &str,
    d: &ethflow_tests::liveness::Detection,
    code: i32,
    bounds: (f64, f64),
) {
    assert!(
        d.line.contains("secure=true"),
        "not a secure flow: {}",
        d.line
    );
    ethflow_tests::liveness::assert_detected(
        &format!("secure flow, {row}"),
        d,
        code,
        bounds.0,
        bounds.1,
    );
}

#[test]
fn secure_flow_all_frames_lost() {
    use ethflow_tests::liveness::*;
    let Some(rig) = Rig::builder("secure_flow_all_frames_lost")
        .bridge()
        .hosts(2)
        .build()
    else {
        return;
    };
    secure_oecho(&rig);
    let (d, _server) = timed_row(&rig, SHORT_TIMEOUT_MS, |rig, _| rig.block_host(1));
    assert_secure_detected(
        "all frames lost",
        &d,
        EFLOWPEER,
        (
            peer_earliest(SHORT_TIMEOUT_MS),
            peer_bound(SHORT_TIMEOUT_MS),
        ),
    );
}

#[test]
fn secure_flow_peer_ipcp_restarted() {
    use ethflow_tests::liveness::*;
    const TIMEOUT_MS: u64 = 3000;
    let Some(rig) = Rig::pair("secure_flow_peer_ipcp_restarted") else {
        return;
    };
    secure_oecho(&rig);
    let (d, _server) = restart_row(&rig, TIMEOUT_MS);
    assert_secure_detected(
        "peer ipcpd restarted",
        &d,
        EFLOWDOWN,
        (-5.0, restart_bound(TIMEOUT_MS)),
    );
}

/// One row of the liveness suite (tests/tests/liveness.rs) on a secure flow:
/// the same server, client, trigger and bounds, with `oecho` configured as a
/// secure name on both hosts; the client's line must say the flow was secure.
fn secure_liveness_row(
    test: &str,
    row: &str,
    timeout_ms: u64,
    act: impl FnOnce(&Rig, &ethflow_tests::Proc),
    code: i32,
    bounds: (f64, f64),
) {
    let Some(rig) = Rig::pair(test) else { return };
    secure_oecho(&rig);
    let (d, _server) = ethflow_tests::liveness::timed_row(&rig, timeout_ms, act);
    assert_secure_detected(row, &d, code, bounds);
}

#[test]
fn secure_flow_peer_application_killed() {
    use ethflow_tests::liveness::EFLOWDOWN;
    secure_liveness_row(
        "secure_flow_peer_application_killed",
        "peer app SIGKILL",
        0,
        |_, server| server.signal(Signal::SIGKILL),
        EFLOWDOWN,
        (0.0, 100.0),
    );
}

#[test]
fn secure_flow_peer_ipcp_killed() {
    use ethflow_tests::liveness::{peer_bound, peer_earliest, EFLOWPEER, SHORT_TIMEOUT_MS};
    secure_liveness_row(
        "secure_flow_peer_ipcp_killed",
        "peer ipcpd SIGKILL",
        SHORT_TIMEOUT_MS,
        |rig, _| {
            rig.b().signal_ipcp(Signal::SIGKILL);
        },
        EFLOWPEER,
        (
            peer_earliest(SHORT_TIMEOUT_MS),
            peer_bound(SHORT_TIMEOUT_MS),
        ),
    );
}

#[test]
fn secure_flow_local_interface_down() {
    use ethflow_tests::liveness::EFLOWDOWN;
    secure_liveness_row(
        "secure_flow_local_interface_down",
        "local interface down",
        0,
        |rig, _| rig.a().link_down(),
        EFLOWDOWN,
        (0.0, 100.0),
    );
}

#[test]
fn secure_flow_local_ipcp_dies() {
    use ethflow_tests::liveness::EFLOWDOWN;
    secure_liveness_row(
        "secure_flow_local_ipcp_dies",
        "local ipcpd SIGKILL",
        0,
        |rig, _| {
            rig.a().signal_ipcp(Signal::SIGKILL);
        },
        EFLOWDOWN,
        (0.0, 100.0),
    );
}

#[test]
fn secure_flow_peer_ipcp_frozen() {
    use ethflow_tests::liveness::{peer_bound, peer_earliest, EFLOWPEER, SHORT_TIMEOUT_MS};
    secure_liveness_row(
        "secure_flow_peer_ipcp_frozen",
        "peer ipcpd SIGSTOP",
        SHORT_TIMEOUT_MS,
        |rig, _| {
            rig.b().signal_ipcp(Signal::SIGSTOP);
        },
        EFLOWPEER,
        (
            peer_earliest(SHORT_TIMEOUT_MS),
            peer_bound(SHORT_TIMEOUT_MS),
        ),
    );
}
