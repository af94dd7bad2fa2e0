//! The handshake of a secure flow, sans IO: bytes and `now` in, bytes and
//! keys out. It runs over the new flow's first SDUs, before the flow is
//! handed to the application.
//!
//! ```text
//! client → server  ClientHello  name, X25519 share, nonce, ciphers offered,
//!                               key exchanges offered, ML-KEM-768
//!                               encapsulation key (if the hybrid is offered)
//! server → client  ServerMsg::Hello { body, sig }
//!                    body = X25519 share, nonce, cipher chosen, signature
//!                           algorithm, certificate chain, client cert wanted,
//!                           key exchange chosen, ML-KEM-768 ciphertext
//!                    sig  = server key over "…server" ‖ H(transcript)
//!                  or ServerMsg::Refuse(reason)
//! (only if the server wants a client certificate)
//! client → server  ClientAuth   chain, sig over "…client" ‖ H(transcript)
//! server → client  ServerMsg::Done or ServerMsg::Refuse(Auth)
//! ```
//!
//! The transcript hash H covers the ClientHello and the server body bytes
//! as sent; the record secrets are HKDF-SHA256 with H as salt over the
//! ephemeral X25519 secret — or, with the hybrid, over the ML-KEM-768
//! shared secret followed by the X25519 one (the order of TLS's
//! X25519MLKEM768) — so they are forward secret and bound to the name, both
//! shares, both nonces, the key exchange offered and chosen, and the
//! certificate chain. A stripped offer changes the transcript the server
//! signs, so a downgrade fails the signature check.
//!
//! Messages larger than the flow's max SDU travel in fragments
//! ([`super::frag`]); this module sees whole messages.

use super::{Cipher, ClientConfig, HandshakeError, Kex, Keys, ServerConfig, SigningKey};
use hkdf::Hkdf;
use ml_kem::array::Array;
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport};
use ml_kem::{DecapsulationKey, EncapsulationKey, MlKem768, Seed};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::SystemTime;
use webpki::{EndEntityCert, KeyUsage};
use zeroize::Zeroizing;

/// A shared secret, wiped when dropped.
type Secret = Zeroizing<[u8; 32]>;

const MAGIC: [u8; 4] = *b"EFS2";
const SERVER_LABEL: &[u8] = b"ethflow secure flow v1 server\0";
const CLIENT_LABEL: &[u8] = b"ethflow secure flow v1 client\0";
/// Most certificates a peer may send.
const MAX_CHAIN: usize = 8;
/// ML-KEM-768 sizes (FIPS 203): encapsulation key and ciphertext.
pub const MLKEM768_EK_LEN: usize = 1184;
pub const MLKEM768_CT_LEN: usize = 1088;

/// Signature algorithms, as they travel.
pub(crate) const SIG_ECDSA_P256_SHA256: u8 = 1;
pub(crate) const SIG_ED25519: u8 = 2;

#[derive(Serialize, Deserialize)]
struct ClientHello {
    magic: [u8; 4],
    name: String,
    share: [u8; 32],
    nonce: [u8; 32],
    ciphers: Vec<u8>,
    kex: Vec<u8>,
    /// The ML-KEM-768 encapsulation key when the hybrid is offered, else empty.
    mlkem_ek: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ServerBody {
    share: [u8; 32],
    nonce: [u8; 32],
    cipher: u8,
    sig_alg: u8,
    chain: Vec<Vec<u8>>,
    want_client_auth: bool,
    kex: u8,
    /// The ML-KEM-768 ciphertext when the hybrid was chosen, else empty.
    mlkem_ct: Vec<u8>,
}

/// Why a server refuses, as it travels.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoCommonCipher,
    Garbage,
    Auth,
    WrongName,
    NoCommonKex,
}

#[derive(Serialize, Deserialize)]
enum ServerMsg {
    Hello { body: Vec<u8>, sig: Vec<u8> },
    Refuse(Refusal),
    Done,
}

#[derive(Serialize, Deserialize)]
struct ClientAuth {
    chain: Vec<Vec<u8>>,
    sig_alg: u8,
    sig: Vec<u8>,
}

fn transcript(hello: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((hello.len() as u64).to_be_bytes());
    h.update(hello);
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

fn signed_message(label: &[u8], th: &[u8; 32]) -> Vec<u8> {
    [label, &th[..]].concat()
}

fn derive(cipher: Cipher, th: &[u8; 32], shared: &[u8]) -> ([u8; 32], [u8; 32]) {
    let hk = Hkdf::<Sha256>::new(Some(th), shared);
    let mut c2s = [0u8; 32];
    let mut s2c = [0u8; 32];
    let info = [b"ethflow c2s ".as_slice(), &[cipher as u8]].concat();
    hk.expand(&info, &mut c2s).expect("32 bytes fit HKDF");
    let info = [b"ethflow s2c ".as_slice(), &[cipher as u8]].concat();
    hk.expand(&info, &mut s2c).expect("32 bytes fit HKDF");
    (c2s, s2c)
}

/// An ML-KEM-768 key pair from 64 bytes of the system's randomness.
fn mlkem_keypair(
    rng: &SystemRandom,
) -> Result<(DecapsulationKey<MlKem768>, Vec<u8>), HandshakeError> {
    let mut seed = [0u8; 64];
    rng.fill(&mut seed).map_err(|_| HandshakeError::Rng)?;
    let dk = DecapsulationKey::<MlKem768>::from_seed(Seed::from(seed));
    zeroize::Zeroize::zeroize(&mut seed);
    let ek = dk.encapsulation_key().to_bytes().to_vec();
    Ok((dk, ek))
}

/// Encapsulate to the client's key (checked as FIPS 203 asks): the
/// ciphertext and the shared secret.
fn mlkem_encapsulate(ek: &[u8]) -> Result<(Vec<u8>, Secret), HandshakeError> {
    let bad = HandshakeError::Garbage("peer's ML-KEM-768 key is invalid");
    let bytes = Array::try_from(ek).map_err(|_| bad.clone())?;
    let ek = EncapsulationKey::<MlKem768>::new(&bytes).map_err(|_| bad)?;
    let (ct, ss) = ek.encapsulate();
    Ok((ct.to_vec(), Zeroizing::new(ss.into())))
}

fn mlkem_decapsulate(dk: &DecapsulationKey<MlKem768>, ct: &[u8]) -> Result<Secret, HandshakeError> {
    let ct = Array::try_from(ct)
        .map_err(|_| HandshakeError::Garbage("peer's ML-KEM-768 ciphertext has a wrong size"))?;
    Ok(Zeroizing::new(dk.decapsulate(&ct).into()))
}

/// The key derivation's input: the ML-KEM secret (hybrid only), then X25519's.
fn hybrid_ikm(mlkem: Option<Secret>, x25519: Secret) -> Zeroizing<Vec<u8>> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(64));
    if let Some(m) = mlkem {
        ikm.extend_from_slice(&m[..]);
    }
    ikm.extend_from_slice(&x25519[..]);
    ikm
}

fn random32(rng: &SystemRandom) -> Result<[u8; 32], HandshakeError> {
    let mut n = [0u8; 32];
    rng.fill(&mut n).map_err(|_| HandshakeError::Rng)?;
    Ok(n)
}

fn ephemeral(rng: &SystemRandom) -> Result<(EphemeralPrivateKey, [u8; 32]), HandshakeError> {
    let k = EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| HandshakeError::Rng)?;
    let p = k.compute_public_key().map_err(|_| HandshakeError::Rng)?;
    let share = p.as_ref().try_into().map_err(|_| HandshakeError::Rng)?;
    Ok((k, share))
}

fn agree(k: EphemeralPrivateKey, peer: &[u8; 32]) -> Result<Secret, HandshakeError> {
    agreement::agree_ephemeral(k, &UnparsedPublicKey::new(&X25519, peer), |s| {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(s);
        out
    })
    .map_err(|_| HandshakeError::Garbage("peer's X25519 share is invalid"))
}

fn decode<'a, T: Deserialize<'a>>(b: &'a [u8], what: &'static str) -> Result<T, HandshakeError> {
    // Trailing bytes are garbage too: a message means one thing only.
    match postcard::take_from_bytes(b) {
        Ok((v, [])) => Ok(v),
        _ => Err(HandshakeError::Garbage(what)),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("handshake messages serialize")
}

/// Check `chain` (end entity first) against `roots` at `now`, for `name`
/// when given, with the given extended key usage; then the signature
/// `sig` over `msg` with the end entity's key.
#[allow(clippy::too_many_arguments)]
fn verify_peer(
    roots: &[CertificateDer<'static>],
    chain: &[Vec<u8>],
    name: Option<&str>,
    usage: KeyUsage,
    now: SystemTime,
    sig_alg: u8,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), HandshakeError> {
    let Some((ee, rest)) = chain.split_first() else {
        return Err(HandshakeError::CertMissing);
    };
    if chain.len() > MAX_CHAIN {
        return Err(HandshakeError::Garbage("certificate chain too long"));
    }
    let anchors = roots
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect::<Vec<_>>();
    let ee_der = CertificateDer::from(ee.as_slice());
    let ee =
        EndEntityCert::try_from(&ee_der).map_err(|e| HandshakeError::BadCert(e.to_string()))?;
    let inter: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let t = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        t,
        usage,
        None,
        None,
    )
    .map_err(HandshakeError::from_webpki)?;
    if let Some(name) = name {
        let sn = ServerName::try_from(name.to_string())
            .map_err(|_| HandshakeError::NameNotDns(name.to_string()))?;
        ee.verify_is_valid_for_subject_name(&sn)
            .map_err(|_| HandshakeError::WrongName(name.to_string()))?;
    }
    let alg = match sig_alg {
        SIG_ECDSA_P256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
        SIG_ED25519 => webpki::ring::ED25519,
        _ => return Err(HandshakeError::Garbage("unknown signature algorithm")),
    };
    ee.verify_signature(alg, msg, sig)
        .map_err(|_| HandshakeError::BadSignature)
}

fn sign(key: &SigningKey, rng: &SystemRandom, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    match key {
        SigningKey::EcdsaP256(k) => k
            .sign(rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| HandshakeError::Rng),
        SigningKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
    }
}

/// The client's side, between its hello and the server's answer.
pub struct ClientHandshake {
    cfg: Arc<ClientConfig>,
    name: String,
    secret: EphemeralPrivateKey,
    /// The ML-KEM-768 private key, when the hybrid is offered.
    mlkem: Option<DecapsulationKey<MlKem768>>,
    hello: Vec<u8>,
}

/// What the client does after the server's hello.
pub enum ClientNext {
    /// Done: the flow is secure with these keys.
    Done(Keys),
    /// Send these bytes (the client's certificate), then wait for the
    /// server's verdict ([`client_finish`]) before using the keys.
    Authenticate { send: Vec<u8>, keys: Keys },
}

impl ClientHandshake {
    /// Start a handshake for `name`: the bytes to send first.
    pub fn start(
        cfg: Arc<ClientConfig>,
        name: &str,
    ) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        let rng = SystemRandom::new();
        let (secret, share) = ephemeral(&rng)?;
        let (mlkem, mlkem_ek) = if cfg.kex.contains(&Kex::X25519MlKem768) {
            let (dk, ek) = mlkem_keypair(&rng)?;
            (Some(dk), ek)
        } else {
            (None, Vec::new())
        };
        let hello = encode(&ClientHello {
            magic: MAGIC,
            name: name.to_string(),
            share,
            nonce: random32(&rng)?,
            ciphers: cfg.ciphers.iter().map(|c| *c as u8).collect(),
            kex: cfg.kex.iter().map(|k| *k as u8).collect(),
            mlkem_ek,
        });
        let hs = ClientHandshake {
            cfg,
            name: name.to_string(),
            secret,
            mlkem,
            hello: hello.clone(),
        };
        Ok((hs, hello))
    }

    /// The server's answer, checked at `now`.
    pub fn on_server(self, msg: &[u8], now: SystemTime) -> Result<ClientNext, HandshakeError> {
        let (body_bytes, sig) = match decode::<ServerMsg>(msg, "server hello does not parse")? {
            ServerMsg::Hello { body, sig } => (body, sig),
            ServerMsg::Refuse(r) => {
                return Err(HandshakeError::Refused(refusal_text(r), refusal_is_auth(r)))
            }
            ServerMsg::Done => return Err(HandshakeError::Garbage("server skipped its hello")),
        };
        let body: ServerBody = decode(&body_bytes, "server hello body does not parse")?;
        let cipher = Cipher::from_u8(body.cipher)
            .filter(|c| self.cfg.ciphers.contains(c))
            .ok_or(HandshakeError::Garbage(
                "server chose a cipher we did not offer",
            ))?;
        let kex = Kex::from_u8(body.kex)
            .filter(|k| self.cfg.kex.contains(k))
            .ok_or(HandshakeError::Garbage(
                "server chose a key exchange we did not offer",
            ))?;
        let th = transcript(&self.hello, &body_bytes);
        verify_peer(
            &self.cfg.ca,
            &body.chain,
            Some(&self.name),
            KeyUsage::server_auth(),
            now,
            body.sig_alg,
            &signed_message(SERVER_LABEL, &th),
            &sig,
        )?;
        let mlkem = match (kex, &self.mlkem) {
            (Kex::X25519MlKem768, Some(dk)) => Some(mlkem_decapsulate(dk, &body.mlkem_ct)?),
            (Kex::X25519, _) if body.mlkem_ct.is_empty() => None,
            _ => {
                return Err(HandshakeError::Garbage(
                    "ML-KEM ciphertext does not match the key exchange",
                ))
            }
        };
        let shared = agree(self.secret, &body.share)?;
        let (c2s, s2c) = derive(cipher, &th, &hybrid_ikm(mlkem, shared));
        let keys = Keys {
            cipher,
            kex,
            tx: c2s,
            rx: s2c,
        };
        if !body.want_client_auth {
            return Ok(ClientNext::Done(keys));
        }
        let rng = SystemRandom::new();
        let auth = match &self.cfg.identity {
            Some(id) => ClientAuth {
                chain: id.chain.iter().map(|c| c.to_vec()).collect(),
                sig_alg: id.key.alg(),
                sig: sign(&id.key, &rng, &signed_message(CLIENT_LABEL, &th))?,
            },
            // The server decides; an empty chain lets it say EAUTH.
            None => ClientAuth {
                chain: vec![],
                sig_alg: 0,
                sig: vec![],
            },
        };
        Ok(ClientNext::Authenticate {
            send: encode(&auth),
            keys,
        })
    }
}

/// The server's verdict on the client's certificate.
pub fn client_finish(msg: &[u8]) -> Result<(), HandshakeError> {
    match decode::<ServerMsg>(msg, "server verdict does not parse")? {
        ServerMsg::Done => Ok(()),
        ServerMsg::Refuse(r) => Err(HandshakeError::Refused(refusal_text(r), refusal_is_auth(r))),
        ServerMsg::Hello { .. } => Err(HandshakeError::Garbage("second server hello")),
    }
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::NoCommonCipher => "no common cipher",
        Refusal::Garbage => "our hello did not parse",
        Refusal::Auth => "our certificate was not accepted",
        Refusal::WrongName => "it does not serve that name",
        Refusal::NoCommonKex => "no key exchange in common",
    }
}

fn refusal_is_auth(r: Refusal) -> bool {
    matches!(r, Refusal::Auth | Refusal::WrongName)
}

/// The server's side after its hello, when it wants a client certificate.
pub struct ServerPending {
    cfg: Arc<ServerConfig>,
    th: [u8; 32],
    keys: Keys,
}

/// What the server does with a client hello.
pub enum ServerNext {
    Done(Keys),
    AwaitClient(ServerPending),
}

/// A server's answer to a client hello: always bytes to send (a hello or a
/// refusal), and the outcome.
pub struct ServerReply {
    pub send: Vec<u8>,
    pub next: Result<ServerNext, HandshakeError>,
}

fn refuse(r: Refusal, e: HandshakeError) -> ServerReply {
    ServerReply {
        send: encode(&ServerMsg::Refuse(r)),
        next: Err(e),
    }
}

/// Answer a client hello on a flow for `name`.
pub fn server_respond(cfg: Arc<ServerConfig>, name: &str, msg: &[u8]) -> ServerReply {
    let hello: ClientHello = match decode(msg, "client hello does not parse") {
        Ok(h) => h,
        Err(e) => return refuse(Refusal::Garbage, e),
    };
    if hello.magic != MAGIC {
        return refuse(
            Refusal::Garbage,
            HandshakeError::Garbage("client hello has a wrong magic"),
        );
    }
    if hello.name != name {
        return refuse(Refusal::WrongName, HandshakeError::WrongName(hello.name));
    }
    let offered: Vec<Cipher> = hello
        .ciphers
        .iter()
        .filter_map(|c| Cipher::from_u8(*c))
        .collect();
    let Some(cipher) = cfg.ciphers.iter().copied().find(|c| offered.contains(c)) else {
        return refuse(Refusal::NoCommonCipher, HandshakeError::NoCommonCipher);
    };
    let offered: Vec<Kex> = hello.kex.iter().filter_map(|k| Kex::from_u8(*k)).collect();
    let Some(kex) = cfg.kex.iter().copied().find(|k| offered.contains(k)) else {
        return refuse(Refusal::NoCommonKex, HandshakeError::NoCommonKex);
    };
    let hybrid_offered = offered.contains(&Kex::X25519MlKem768);
    if hybrid_offered == hello.mlkem_ek.is_empty() {
        return refuse(
            Refusal::Garbage,
            HandshakeError::Garbage("ML-KEM key does not match the key exchanges offered"),
        );
    }
    let rng = SystemRandom::new();
    let step = || -> Result<(Vec<u8>, ServerNext), HandshakeError> {
        let (secret, share) = ephemeral(&rng)?;
        let (mlkem_ct, mlkem) = match kex {
            Kex::X25519MlKem768 => {
                let (ct, ss) = mlkem_encapsulate(&hello.mlkem_ek)?;
                (ct, Some(ss))
            }
            Kex::X25519 => (Vec::new(), None),
        };
        let body = encode(&ServerBody {
            share,
            nonce: random32(&rng)?,
            cipher: cipher as u8,
            sig_alg: cfg.key.alg(),
            chain: cfg.chain.iter().map(|c| c.to_vec()).collect(),
            want_client_auth: cfg.client_ca.is_some(),
            kex: kex as u8,
            mlkem_ct,
        });
        let th = transcript(msg, &body);
        let sig = sign(&cfg.key, &rng, &signed_message(SERVER_LABEL, &th))?;
        let shared = agree(secret, &hello.share)?;
        let (c2s, s2c) = derive(cipher, &th, &hybrid_ikm(mlkem, shared));
        let keys = Keys {
            cipher,
            kex,
            tx: s2c,
            rx: c2s,
        };
        let send = encode(&ServerMsg::Hello { body, sig });
        let next = if cfg.client_ca.is_some() {
            ServerNext::AwaitClient(ServerPending {
                cfg: cfg.clone(),
                th,
                keys,
            })
        } else {
            ServerNext::Done(keys)
        };
        Ok((send, next))
    };
    match step() {
        Ok((send, next)) => ServerReply {
            send,
            next: Ok(next),
        },
        Err(e) => refuse(Refusal::Garbage, e),
    }
}

impl ServerPending {
    /// The client's certificate message, checked at `now`: bytes to send
    /// (the verdict) and the outcome.
    pub fn on_client(self, msg: &[u8], now: SystemTime) -> ServerReply {
        let auth: ClientAuth = match decode(msg, "client certificate message does not parse") {
            Ok(a) => a,
            Err(e) => return refuse(Refusal::Garbage, e),
        };
        let roots = self.cfg.client_ca.as_deref().unwrap_or(&[]);
        match verify_peer(
            roots,
            &auth.chain,
            None,
            KeyUsage::client_auth(),
            now,
            auth.sig_alg,
            &signed_message(CLIENT_LABEL, &self.th),
            &auth.sig,
        ) {
            Ok(()) => ServerReply {
                send: encode(&ServerMsg::Done),
                next: Ok(ServerNext::Done(self.keys)),
            },
            Err(e) => refuse(Refusal::Auth, e),
        }
    }
}

/// A client hello with the hybrid taken out of the offer (and its key),
/// as a man in the middle would send it: for the downgrade test.
#[cfg(test)]
pub(crate) fn test_hello_without_hybrid(hello: &[u8]) -> Vec<u8> {
    let mut h: ClientHello = decode(hello, "test").expect("a client hello");
    h.kex.retain(|k| *k != Kex::X25519MlKem768 as u8);
    h.mlkem_ek.clear();
    encode(&h)
}
