//! The hybrid key exchange (X25519 + ML-KEM-768), negotiation of the key
//! exchange, and whole handshakes carried in small fragments.

use super::super::frag::{self, Reassembly};
use super::super::handshake::{test_hello_without_hybrid, MLKEM768_CT_LEN, MLKEM768_EK_LEN};
use super::*;
use std::time::Instant;

fn server_kex(ca: &Ca, client_ca: Option<&Ca>, kex: &[Kex]) -> Arc<ServerConfig> {
    let mut s = Arc::into_inner(server(
        leaf(ca, "oecho", -1, 30, false),
        client_ca,
        &DEFAULT_CIPHERS,
    ))
    .unwrap();
    s.kex = kex.to_vec();
    Arc::new(s)
}

fn client_kex(ca: &Ca, identity: Option<Identity>, kex: &[Kex]) -> Arc<ClientConfig> {
    let mut c = Arc::into_inner(client(ca, identity, &DEFAULT_CIPHERS)).unwrap();
    c.kex = kex.to_vec();
    Arc::new(c)
}

const HYBRID: [Kex; 1] = [Kex::X25519MlKem768];
const BOTH: [Kex; 2] = [Kex::X25519MlKem768, Kex::X25519];

#[test]
fn hybrid_gives_matching_keys_and_says_so() {
    let ca = ca("test CA");
    let (c, s) = run(
        server_kex(&ca, None, &HYBRID),
        client_kex(&ca, None, &HYBRID),
        "oecho",
    );
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!((c.kex, s.kex), (Kex::X25519MlKem768, Kex::X25519MlKem768));
    roundtrip(&c, &s);
    // With client certificates too.
    let (c, s) = run(
        server_kex(&ca, Some(&ca), &HYBRID),
        client_kex(&ca, Some(leaf(&ca, "client", -1, 30, true)), &HYBRID),
        "oecho",
    );
    roundtrip(&c.unwrap(), &s.unwrap());
}

#[test]
fn hybrid_hello_carries_the_mlkem_shares_and_x25519_does_not() {
    let ca = ca("test CA");
    let (_, plain) = ClientHandshake::start(client_kex(&ca, None, &DEFAULT_KEX), "oecho").unwrap();
    let (_, hybrid) = ClientHandshake::start(client_kex(&ca, None, &HYBRID), "oecho").unwrap();
    assert!(plain.len() < 200, "{}", plain.len());
    assert!(
        hybrid.len() > plain.len() + MLKEM768_EK_LEN,
        "{}",
        hybrid.len()
    );
    let s = server_kex(&ca, None, &HYBRID);
    let reply = server_respond(s, "oecho", &hybrid).send;
    assert!(reply.len() > MLKEM768_CT_LEN + 300, "{}", reply.len());
}

#[test]
fn the_server_picks_its_preferred_kex_among_offered() {
    let ca = ca("test CA");
    for (srv, cli, want) in [
        (&BOTH[..], &BOTH[..], Kex::X25519MlKem768),
        (&BOTH[..], &DEFAULT_KEX[..], Kex::X25519),
        (&DEFAULT_KEX[..], &BOTH[..], Kex::X25519),
        (
            &[Kex::X25519, Kex::X25519MlKem768][..],
            &BOTH[..],
            Kex::X25519,
        ),
    ] {
        let (c, s) = run(
            server_kex(&ca, None, srv),
            client_kex(&ca, None, cli),
            "oecho",
        );
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(
            (c.kex, s.kex),
            (want, want),
            "server {srv:?} client {cli:?}"
        );
        roundtrip(&c, &s);
    }
}

#[test]
fn mismatched_kex_is_ecrypt_on_both_sides() {
    let ca = ca("test CA");
    for (srv, cli) in [
        (&HYBRID[..], &DEFAULT_KEX[..]),
        (&DEFAULT_KEX[..], &HYBRID[..]),
    ] {
        let (c, s) = run(
            server_kex(&ca, None, srv),
            client_kex(&ca, None, cli),
            "oecho",
        );
        let (c, s) = (c.err().unwrap(), s.err().unwrap());
        assert_eq!(s, HandshakeError::NoCommonKex);
        assert_eq!(s.to_error(), crate::Error::Crypt);
        assert_eq!(c.to_error(), crate::Error::Crypt, "{c}");
    }
}

/// A man in the middle that strips the hybrid from the client's offer gets
/// a server that agrees to X25519 alone — and a client that refuses the
/// server's hello, because the server signed the transcript it saw.
#[test]
fn stripping_the_hybrid_offer_fails_the_signature() {
    let ca = ca("test CA");
    let (hs, hello) = ClientHandshake::start(client_kex(&ca, None, &BOTH), "oecho").unwrap();
    let stripped = test_hello_without_hybrid(&hello);
    let reply = server_respond(server_kex(&ca, None, &BOTH), "oecho", &stripped);
    match &reply.next {
        Ok(ServerNext::Done(k)) => assert_eq!(k.kex, Kex::X25519),
        _ => panic!("the server should accept the stripped hello"),
    }
    assert_eq!(
        hs.on_server(&reply.send, SystemTime::now()).err(),
        Some(HandshakeError::BadSignature)
    );
}

#[test]
fn a_bad_mlkem_key_or_a_missing_one_is_garbage() {
    let ca = ca("test CA");
    // A hello from a client offering only X25519, but the server demands
    // the hybrid: no common kex. A hello that offers the hybrid with no key
    // (the stripped hello with the offer put back is not constructible from
    // outside, so the other way round): an offer without the key.
    let (_, hello) = ClientHandshake::start(client_kex(&ca, None, &BOTH), "oecho").unwrap();
    let stripped = test_hello_without_hybrid(&hello);
    let reply = server_respond(server_kex(&ca, None, &HYBRID), "oecho", &stripped);
    assert_eq!(reply.next.err(), Some(HandshakeError::NoCommonKex));
    // Flip each of a sample of bytes of a hybrid hello: never a panic, and
    // either refused or keys the client (who holds the real key) cannot match.
    let (_, hello) = ClientHandshake::start(client_kex(&ca, None, &HYBRID), "oecho").unwrap();
    let s = server_kex(&ca, None, &HYBRID);
    for i in (0..hello.len()).step_by(7) {
        let mut bad = hello.clone();
        bad[i] ^= 0x80;
        let _ = server_respond(s.clone(), "oecho", &bad);
    }
    // Truncated: the key's length is part of the encoding, so it no longer parses.
    let reply = server_respond(s, "oecho", &hello[..hello.len() - 1]);
    assert!(matches!(reply.next, Err(HandshakeError::Garbage(_))));
}

/// Every message of a handshake crosses in fragments of at most `max_sdu`
/// bytes, delivered in reverse order.
fn via(msg: &[u8], max_sdu: usize) -> Vec<u8> {
    let mut frags = frag::fragment(msg, max_sdu, &frag::Policy::default()).unwrap();
    assert!(frags.iter().all(|f| f.len() <= max_sdu));
    frags.reverse();
    let mut r = Reassembly::new(frag::Policy::default());
    let now = Instant::now();
    let mut out = None;
    for f in &frags {
        if let Some(m) = r.push(now, f).unwrap() {
            out = Some(m);
        }
    }
    out.expect("reassembled")
}

#[test]
fn whole_hybrid_handshakes_cross_small_sdus() {
    let ca = ca("test CA");
    for max_sdu in [frag::HEADER_LEN + 8, 64, 200, 576, 1216] {
        let now = SystemTime::now();
        let (hs, hello) = ClientHandshake::start(
            client_kex(&ca, Some(leaf(&ca, "client", -1, 30, false)), &HYBRID),
            "oecho",
        )
        .unwrap();
        let reply = server_respond(
            server_kex(&ca, Some(&ca), &HYBRID),
            "oecho",
            &via(&hello, max_sdu),
        );
        let Ok(ClientNext::Authenticate { send, keys }) =
            hs.on_server(&via(&reply.send, max_sdu), now)
        else {
            panic!("client at max SDU {max_sdu}");
        };
        let Ok(ServerNext::AwaitClient(p)) = reply.next else {
            panic!("server at max SDU {max_sdu}");
        };
        let verdict = p.on_client(&via(&send, max_sdu), now);
        client_finish(&via(&verdict.send, max_sdu)).unwrap();
        let Ok(ServerNext::Done(sk)) = verdict.next else {
            panic!("verdict at max SDU {max_sdu}");
        };
        assert_eq!(keys.kex, Kex::X25519MlKem768);
        roundtrip(&keys, &sk);
    }
}

#[test]
fn fragment_errors_are_ecrypt_and_a_slow_message_a_timeout() {
    for e in [
        frag::FragError::Short,
        frag::FragError::BadCount,
        frag::FragError::BadIndex,
        frag::FragError::TooLarge,
        frag::FragError::Inconsistent,
        frag::FragError::Duplicate,
        frag::FragError::LengthMismatch,
        frag::FragError::SduTooSmall,
    ] {
        assert_eq!(
            HandshakeError::from(e).to_error(),
            crate::Error::Crypt,
            "{e}"
        );
    }
    assert_eq!(
        HandshakeError::from(frag::FragError::TimedOut).to_error(),
        crate::Error::TimedOut
    );
}
