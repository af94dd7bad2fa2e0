//! In-memory tests of the record layer and the handshake, with a test CA
//! made by rcgen.

use super::handshake::{client_finish, server_respond, ClientHandshake, ClientNext, ServerNext};
use super::record::{Opener, Policy, Rejected, ReplayWindow, Sealer, OVERHEAD};
use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ED25519};
use std::sync::Arc;
use std::time::SystemTime;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        issuer: Issuer::new(p, key),
        der: cert.der().clone(),
    }
}

/// A leaf for `name` from `ca`, valid from `nb` to `na` days from now.
fn leaf(ca: &Ca, name: &str, nb: i64, na: i64, ed25519: bool) -> Identity {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(nb);
    p.not_after = now + time::Duration::days(na);
    let key = if ed25519 {
        KeyPair::generate_for(&PKCS_ED25519).unwrap()
    } else {
        KeyPair::generate().unwrap()
    };
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    Identity {
        chain: vec![cert.der().clone()],
        key: SigningKey::from_pem(key.serialize_pem().as_bytes()).unwrap(),
    }
}

fn server(id: Identity, client_ca: Option<&Ca>, ciphers: &[Cipher]) -> Arc<ServerConfig> {
    Arc::new(ServerConfig {
        chain: id.chain,
        key: id.key,
        client_ca: client_ca.map(|c| vec![c.der.clone()]),
        ciphers: ciphers.to_vec(),
        kex: DEFAULT_KEX.to_vec(),
    })
}

fn client(ca: &Ca, identity: Option<Identity>, ciphers: &[Cipher]) -> Arc<ClientConfig> {
    Arc::new(ClientConfig {
        ca: vec![ca.der.clone()],
        identity,
        ciphers: ciphers.to_vec(),
        kex: DEFAULT_KEX.to_vec(),
    })
}

/// Run a handshake in memory: (client's result, server's result).
fn run(
    s: Arc<ServerConfig>,
    c: Arc<ClientConfig>,
    name: &str,
) -> (Result<Keys, HandshakeError>, Result<Keys, HandshakeError>) {
    let now = SystemTime::now();
    let (hs, hello) = ClientHandshake::start(c, name).unwrap();
    let reply = server_respond(s, name, &hello);
    let client = hs.on_server(&reply.send, now);
    match (client, reply.next) {
        (Ok(ClientNext::Done(k)), Ok(ServerNext::Done(sk))) => (Ok(k), Ok(sk)),
        (Ok(ClientNext::Authenticate { send, keys }), Ok(ServerNext::AwaitClient(p))) => {
            let verdict = p.on_client(&send, now);
            let c = client_finish(&verdict.send).map(|()| keys);
            let s = verdict.next.map(|n| match n {
                ServerNext::Done(k) => k,
                ServerNext::AwaitClient(_) => panic!("server waits twice"),
            });
            (c, s)
        }
        // One side failed: the other's state is what it is.
        (c, s) => (
            c.map(|n| match n {
                ClientNext::Done(k) | ClientNext::Authenticate { keys: k, .. } => k,
            }),
            s.map(|n| match n {
                ServerNext::Done(k) => k,
                ServerNext::AwaitClient(_) => panic!("server waits for a failed client"),
            }),
        ),
    }
}

fn pair(k: &Keys, peer: &Keys) -> (Sealer, Opener) {
    assert_eq!(k.cipher, peer.cipher);
    (
        Sealer::new(k.cipher, k.tx, Policy::default()),
        Opener::new(peer.cipher, peer.rx, Policy::default()),
    )
}

fn roundtrip(c: &Keys, s: &Keys) {
    let (mut tx, mut rx) = pair(c, s);
    let mut rec = Vec::new();
    tx.seal(b"hello secure flow", &mut rec).unwrap();
    assert_eq!(rec.len(), 17 + OVERHEAD);
    assert!(!rec.windows(6).any(|w| w == b"secure"));
    let n = rx.open(&mut rec).unwrap();
    assert_eq!(&rec[8..8 + n], b"hello secure flow");
    // And the other direction.
    let (mut tx, mut rx) = pair(s, c);
    tx.seal(b"back", &mut rec).unwrap();
    let n = rx.open(&mut rec).unwrap();
    assert_eq!(&rec[8..8 + n], b"back");
}

#[test]
fn good_chain_gives_matching_keys_for_both_ciphers_and_key_types() {
    let ca = ca("test CA");
    for ed in [false, true] {
        for cipher in DEFAULT_CIPHERS {
            let s = server(leaf(&ca, "oecho", -1, 30, ed), None, &[cipher]);
            let c = client(&ca, None, &DEFAULT_CIPHERS);
            let (ck, sk) = run(s, c, "oecho");
            let (ck, sk) = (ck.unwrap(), sk.unwrap());
            assert_eq!(ck.cipher, cipher);
            roundtrip(&ck, &sk);
        }
    }
}

#[test]
fn server_picks_its_preferred_cipher_among_offered() {
    let ca = ca("test CA");
    let s = server(
        leaf(&ca, "oecho", -1, 30, false),
        None,
        &[Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm],
    );
    let (ck, _) = run(s, client(&ca, None, &DEFAULT_CIPHERS), "oecho");
    assert_eq!(ck.unwrap().cipher, Cipher::ChaCha20Poly1305);
}

#[test]
fn expired_wrong_name_unknown_ca_are_eauth() {
    let ca1 = ca("test CA");
    let other = ca("other CA");
    let cases = [
        (
            leaf(&ca1, "oecho", -30, -1, false),
            HandshakeError::CertExpired,
        ),
        (
            leaf(&ca1, "oecho", 2, 30, false),
            HandshakeError::CertNotYetValid,
        ),
        (
            leaf(&ca1, "other", -1, 30, false),
            HandshakeError::WrongName("oecho".into()),
        ),
        (
            leaf(&other, "oecho", -1, 30, false),
            HandshakeError::UnknownCa,
        ),
    ];
    for (id, want) in cases {
        let (c, _) = run(
            server(id, None, &DEFAULT_CIPHERS),
            client(&ca1, None, &DEFAULT_CIPHERS),
            "oecho",
        );
        let e = c.err().expect("client must refuse");
        assert_eq!(e, want);
        assert_eq!(e.to_error(), crate::Error::Auth);
    }
}

#[test]
fn no_common_cipher_is_ecrypt_on_both_sides() {
    let ca = ca("test CA");
    let s = server(
        leaf(&ca, "oecho", -1, 30, false),
        None,
        &[Cipher::Aes256Gcm],
    );
    let c = client(&ca, None, &[Cipher::ChaCha20Poly1305]);
    let (c, s) = run(s, c, "oecho");
    assert_eq!(c.err().unwrap().to_error(), crate::Error::Crypt);
    assert_eq!(s.err().unwrap(), HandshakeError::NoCommonCipher);
}

#[test]
fn garbage_and_tampered_hellos_are_refused() {
    let ca = ca("test CA");
    let s = server(leaf(&ca, "oecho", -1, 30, false), None, &DEFAULT_CIPHERS);
    let reply = server_respond(s.clone(), "oecho", b"\xff\x00garbage");
    assert!(matches!(reply.next, Err(HandshakeError::Garbage(_))));
    // The client sees a refusal as ECRYPT.
    let (hs, _) = ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "oecho").unwrap();
    assert_eq!(
        hs.on_server(&reply.send, SystemTime::now())
            .err()
            .unwrap()
            .to_error(),
        crate::Error::Crypt
    );
    // Flip each byte of a real server hello: never accepted.
    let (hs0, hello) =
        ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "oecho").unwrap();
    drop(hs0);
    let good = server_respond(s, "oecho", &hello).send;
    for i in 0..good.len() {
        let (hs, _) = ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "oecho").unwrap();
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        // A fresh client hello: the transcript differs anyway, so even an
        // unmodified hello fails; a modified one must fail too.
        assert!(hs.on_server(&bad, SystemTime::now()).is_err(), "byte {i}");
    }
}

#[test]
fn server_hello_replayed_to_another_client_fails() {
    let ca = ca("test CA");
    let s = server(leaf(&ca, "oecho", -1, 30, false), None, &DEFAULT_CIPHERS);
    let (_, hello) = ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "oecho").unwrap();
    let recorded = server_respond(s, "oecho", &hello).send;
    let (victim, _) = ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "oecho").unwrap();
    assert_eq!(
        victim.on_server(&recorded, SystemTime::now()).err(),
        Some(HandshakeError::BadSignature)
    );
}

#[test]
fn mutual_auth_ok_and_missing_or_foreign_client_cert_is_eauth() {
    let ca = ca("test CA");
    let other = ca_other();
    let sid = || leaf(&ca, "oecho", -1, 30, false);
    // Good client certificate.
    let (c, s) = run(
        server(sid(), Some(&ca), &DEFAULT_CIPHERS),
        client(
            &ca,
            Some(leaf(&ca, "client", -1, 30, false)),
            &DEFAULT_CIPHERS,
        ),
        "oecho",
    );
    roundtrip(&c.unwrap(), &s.unwrap());
    // None.
    let (c, s) = run(
        server(sid(), Some(&ca), &DEFAULT_CIPHERS),
        client(&ca, None, &DEFAULT_CIPHERS),
        "oecho",
    );
    assert_eq!(c.err().unwrap().to_error(), crate::Error::Auth);
    assert_eq!(s.err().unwrap(), HandshakeError::CertMissing);
    // From a CA the server does not trust.
    let (c, s) = run(
        server(sid(), Some(&ca), &DEFAULT_CIPHERS),
        client(
            &ca,
            Some(leaf(&other, "client", -1, 30, false)),
            &DEFAULT_CIPHERS,
        ),
        "oecho",
    );
    assert_eq!(c.err().unwrap().to_error(), crate::Error::Auth);
    assert_eq!(s.err().unwrap(), HandshakeError::UnknownCa);
}

fn ca_other() -> Ca {
    ca("other CA")
}

#[test]
fn wrong_name_asked_of_server_is_refused() {
    let ca = ca("test CA");
    let s = server(leaf(&ca, "oecho", -1, 30, false), None, &DEFAULT_CIPHERS);
    let (_, hello) = ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "other").unwrap();
    assert!(matches!(
        server_respond(s, "oecho", &hello).next,
        Err(HandshakeError::WrongName(_))
    ));
}

fn keys(cipher: Cipher) -> (Sealer, Opener) {
    let secret = [7u8; 32];
    (
        Sealer::new(cipher, secret, Policy::default()),
        Opener::new(cipher, secret, Policy::default()),
    )
}

#[test]
fn every_bit_flip_is_rejected_and_not_counted_as_seen() {
    for cipher in DEFAULT_CIPHERS {
        let (mut tx, mut rx) = keys(cipher);
        let mut rec = Vec::new();
        tx.seal(b"0123456789", &mut rec).unwrap();
        for bit in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(rx.open(&mut bad).is_err(), "bit {bit}");
        }
        // The genuine record still opens after the forgeries.
        let mut good = rec.clone();
        assert_eq!(rx.open(&mut good), Ok(10));
        assert_eq!(rx.open(&mut rec.clone()), Err(Rejected::Replay));
        assert_eq!(rx.open(&mut [0u8; 10]), Err(Rejected::Short));
    }
}

#[test]
fn reordered_records_accepted_once_replays_dropped() {
    let (mut tx, mut rx) = keys(Cipher::Aes256Gcm);
    let recs: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let mut r = Vec::new();
            tx.seal(&i.to_be_bytes(), &mut r).unwrap();
            r
        })
        .collect();
    // Deliver in a scrambled order, skipping every 7th (loss).
    let mut order: Vec<usize> = (0..200).filter(|i| i % 7 != 3).collect();
    order.reverse();
    order.swap(3, 150);
    for &i in &order {
        let mut r = recs[i].clone();
        let n = rx.open(&mut r).unwrap();
        assert_eq!(&r[8..8 + n], &(i as u32).to_be_bytes());
    }
    for &i in &order {
        assert_eq!(rx.open(&mut recs[i].clone()), Err(Rejected::Replay));
    }
    // A lost one arriving late is still fine.
    assert!(rx.open(&mut recs[3].clone()).is_ok());
}

#[test]
fn replay_window_drops_records_older_than_the_window() {
    let mut w = ReplayWindow::new(128);
    for s in [0, 5, 127] {
        assert!(w.check(s));
        w.mark(s);
    }
    assert!(!w.check(5));
    assert!(w.check(6));
    w.mark(300);
    assert!(!w.check(172), "300 - 172 = 128 ≥ window");
    assert!(w.check(173));
    assert!(!w.check(127));
    w.mark(173);
    assert!(!w.check(173));
}

#[test]
fn key_chain_steps_across_epochs_with_reordering() {
    let policy = Policy {
        epoch_records: 64,
        replay_window: 64,
    };
    assert!(policy.validate());
    let mut tx = Sealer::new(Cipher::ChaCha20Poly1305, [1; 32], policy);
    let mut rx = Opener::new(Cipher::ChaCha20Poly1305, [1; 32], policy);
    let mut recs = Vec::new();
    for i in 0..300u32 {
        let mut r = Vec::new();
        tx.seal(&i.to_be_bytes(), &mut r).unwrap();
        recs.push(r);
    }
    // Records of consecutive epochs sealed under different keys.
    assert_ne!(recs[0][8..], recs[64][8..]);
    for pair in recs.chunks(2) {
        // Swap each pair across the stream, epoch boundaries included.
        assert!(rx.open(&mut pair[pair.len() - 1].clone()).is_ok());
        if pair.len() == 2 {
            assert!(rx.open(&mut pair[0].clone()).is_ok());
        }
    }
    // A forged far-future sequence number does not move the chain.
    let mut forged = recs[299].clone();
    forged[..8].copy_from_slice(&10_000u64.to_be_bytes());
    assert!(rx.open(&mut forged).is_err());
}

#[test]
fn sealer_refuses_rather_than_reuse_a_nonce() {
    // Epochs as long as possible, so reaching the end takes one chain step.
    let policy = Policy {
        epoch_records: 1 << 63,
        replay_window: 64,
    };
    let mut tx = Sealer::new(Cipher::Aes256Gcm, [3; 32], policy);
    tx.set_next_seq(u64::MAX - 1);
    let mut out = Vec::new();
    assert!(tx.seal(b"last", &mut out).is_some());
    assert_eq!(tx.seal(b"one too many", &mut out), None);
    assert_eq!(tx.seal(b"still not", &mut out), None);
}

#[test]
fn enc_config_parses_and_rejects() {
    assert_eq!(parse_enc("").unwrap(), EncConfig::default());
    assert_eq!(EncConfig::default().kex, vec![Kex::X25519]);
    let c = parse_enc("# x\ncipher = chacha20-poly1305\nkex = x25519\nkdf = sha256\n").unwrap();
    assert_eq!(c.ciphers, vec![Cipher::ChaCha20Poly1305]);
    assert_eq!(c.kex, vec![Kex::X25519]);
    let c = parse_enc("kex = x25519-mlkem768").unwrap();
    assert_eq!(c.kex, vec![Kex::X25519MlKem768]);
    assert_eq!(c.ciphers, DEFAULT_CIPHERS.to_vec());
    let c = parse_enc("kex = X25519MLKEM768, x25519").unwrap();
    assert_eq!(c.kex, vec![Kex::X25519MlKem768, Kex::X25519]);
    for bad in [
        "cipher = des",
        "cipher =",
        "kex = p256",
        "kex = x25519, x25519",
        "kex =",
        "kdf = md5",
        "garbage",
    ] {
        assert!(parse_enc(bad).is_err(), "{bad}");
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Hostile bytes at every step are an error, never a panic or a
        /// success.
        #[test]
        fn arbitrary_handshake_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let ca = ca("test CA");
            let s = server(leaf(&ca, "oecho", -1, 30, false), Some(&ca), &DEFAULT_CIPHERS);
            prop_assert!(server_respond(s.clone(), "oecho", &bytes).next.is_err());
            let (hs, hello) = ClientHandshake::start(client(&ca, None, &DEFAULT_CIPHERS), "oecho").unwrap();
            prop_assert!(hs.on_server(&bytes, SystemTime::now()).is_err());
            prop_assert!(client_finish(&bytes).is_err() || bytes == postcard::to_allocvec(&2u8).unwrap());
            if let Ok(ServerNext::AwaitClient(p)) = server_respond(s, "oecho", &hello).next {
                prop_assert!(p.on_client(&bytes, SystemTime::now()).next.is_err());
            } else {
                prop_assert!(false, "server should wait for a client certificate");
            }
        }

        #[test]
        fn arbitrary_records_never_open(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, mut rx) = keys(Cipher::Aes256Gcm);
            prop_assert!(rx.open(&mut bytes).is_err());
        }
    }
}

mod kex;
