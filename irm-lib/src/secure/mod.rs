//! Secure flows: an authenticated key exchange over the flow's first SDUs
//! and an AEAD record per SDU, end to end between the two applications'
//! libraries (the IPCP and the wire see only ciphertext).
//!
//! * [`handshake`] — X25519 ephemeral exchange (or the hybrid X25519 +
//!   ML-KEM-768), the server proves the name with an X.509 chain (ECDSA P-256
//!   or Ed25519), optional client certificate; keys by HKDF-SHA256 over the
//!   transcript.
//! * [`frag`] — handshake messages split into SDUs and put back together
//!   (ML-KEM key shares do not fit one SDU at small MTUs), bounded.
//! * [`record`] — AES-256-GCM or ChaCha20-Poly1305 per SDU, explicit
//!   sequence number, replay window, key chain steps before any limit.
//!
//! Design and choices: docs/decisions/0021-secure-flows.md.

pub mod frag;
pub mod handshake;
pub mod record;
pub mod session;
#[cfg(test)]
mod tests;

use crate::error::Error;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// AEAD ciphers for SDUs, in the numbering that travels in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Cipher {
    Aes256Gcm = 1,
    ChaCha20Poly1305 = 2,
}

impl Cipher {
    pub fn from_u8(v: u8) -> Option<Cipher> {
        match v {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }
    /// The name used in configuration files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }
    pub fn from_name(s: &str) -> Option<Cipher> {
        match s.to_ascii_lowercase().as_str() {
            "aes-256-gcm" | "aes256gcm" => Some(Cipher::Aes256Gcm),
            "chacha20-poly1305" | "chacha20poly1305" => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// The default preference: AES-256-GCM, then ChaCha20-Poly1305.
pub const DEFAULT_CIPHERS: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305];

/// Key exchanges, in the numbering that travels in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kex {
    /// Ephemeral X25519 (RFC 7748).
    X25519 = 1,
    /// The hybrid of ephemeral X25519 and ML-KEM-768 (FIPS 203): both
    /// shared secrets, concatenated (ML-KEM's first, as TLS's
    /// X25519MLKEM768 does), are the key derivation's input, so the keys
    /// hold while either of the two holds.
    X25519MlKem768 = 2,
}

impl Kex {
    pub fn from_u8(v: u8) -> Option<Kex> {
        match v {
            1 => Some(Kex::X25519),
            2 => Some(Kex::X25519MlKem768),
            _ => None,
        }
    }
    /// The name used in configuration files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kex::X25519 => "x25519",
            Kex::X25519MlKem768 => "x25519-mlkem768",
        }
    }
    pub fn from_name(s: &str) -> Option<Kex> {
        match s.to_ascii_lowercase().as_str() {
            "x25519" => Some(Kex::X25519),
            "x25519-mlkem768" | "x25519mlkem768" | "x25519-ml-kem-768" => Some(Kex::X25519MlKem768),
            _ => None,
        }
    }
}

/// The default key exchange: X25519 only.
pub const DEFAULT_KEX: [Kex; 1] = [Kex::X25519];

/// The algorithms one side of a secure flow accepts, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncConfig {
    pub ciphers: Vec<Cipher>,
    pub kex: Vec<Kex>,
}

impl Default for EncConfig {
    fn default() -> EncConfig {
        EncConfig {
            ciphers: DEFAULT_CIPHERS.to_vec(),
            kex: DEFAULT_KEX.to_vec(),
        }
    }
}

/// Why a handshake failed; each says which check. [`HandshakeError::to_error`]
/// maps it to ECRYPT or EAUTH.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("no cipher in common")]
    NoCommonCipher,
    #[error("no key exchange in common")]
    NoCommonKex,
    #[error("malformed handshake: {0}")]
    Garbage(&'static str),
    #[error("the peer refused: {0}")]
    Refused(&'static str, bool),
    #[error("no certificate presented")]
    CertMissing,
    #[error("certificate expired")]
    CertExpired,
    #[error("certificate not yet valid")]
    CertNotYetValid,
    #[error("certificate is not for name {0}")]
    WrongName(String),
    #[error("name {0} cannot be checked against a certificate (not a DNS name)")]
    NameNotDns(String),
    #[error("certificate not issued by a trusted CA")]
    UnknownCa,
    #[error("certificate rejected: {0}")]
    BadCert(String),
    #[error("handshake signature does not verify")]
    BadSignature,
    #[error("no randomness")]
    Rng,
    #[error("flow ended during the handshake: {0}")]
    Flow(Error),
    #[error("handshake fragments: {0}")]
    Fragment(frag::FragError),
}

impl From<frag::FragError> for HandshakeError {
    /// A message not complete in time is a timeout like any other read's;
    /// the rest is garbage (ECRYPT).
    fn from(e: frag::FragError) -> HandshakeError {
        match e {
            frag::FragError::TimedOut => HandshakeError::Flow(Error::TimedOut),
            other => HandshakeError::Fragment(other),
        }
    }
}

impl HandshakeError {
    fn from_webpki(e: webpki::Error) -> HandshakeError {
        match e {
            webpki::Error::CertExpired { .. } => HandshakeError::CertExpired,
            webpki::Error::CertNotValidYet { .. } => HandshakeError::CertNotYetValid,
            webpki::Error::UnknownIssuer => HandshakeError::UnknownCa,
            other => HandshakeError::BadCert(other.to_string()),
        }
    }

    /// ECRYPT for disagreement and garbage, EAUTH for certificate checks.
    pub fn to_error(&self) -> Error {
        match self {
            HandshakeError::NoCommonCipher
            | HandshakeError::NoCommonKex
            | HandshakeError::Fragment(_)
            | HandshakeError::Garbage(_)
            | HandshakeError::Rng => Error::Crypt,
            HandshakeError::Refused(_, auth) => {
                if *auth {
                    Error::Auth
                } else {
                    Error::Crypt
                }
            }
            HandshakeError::Flow(e) => e.clone(),
            _ => Error::Auth,
        }
    }
}

/// The secrets a finished handshake yields, from this side's point of view.
pub struct Keys {
    pub cipher: Cipher,
    pub kex: Kex,
    pub tx: [u8; 32],
    pub rx: [u8; 32],
}

impl Drop for Keys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.tx.zeroize();
        self.rx.zeroize();
    }
}

/// A private key that signs handshakes.
pub enum SigningKey {
    EcdsaP256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// From a PKCS#8 DER key (ECDSA P-256 or Ed25519).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, ConfigError> {
        let rng = SystemRandom::new();
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng) {
            return Ok(SigningKey::EcdsaP256(k));
        }
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(SigningKey::Ed25519)
            .map_err(|_| ConfigError::Key("not a PKCS#8 ECDSA P-256 or Ed25519 key".into()))
    }

    /// From a PEM file holding a PKCS#8 key (`openssl genpkey` writes one).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, ConfigError> {
        match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => SigningKey::from_pkcs8(k.secret_pkcs8_der()),
            Ok(_) => Err(ConfigError::Key(
                "key is not PKCS#8 (convert with openssl pkcs8 -topk8 -nocrypt)".into(),
            )),
            Err(e) => Err(ConfigError::Key(format!("no private key in PEM: {e}"))),
        }
    }

    fn alg(&self) -> u8 {
        match self {
            SigningKey::EcdsaP256(_) => handshake::SIG_ECDSA_P256_SHA256,
            SigningKey::Ed25519(_) => handshake::SIG_ED25519,
        }
    }
}

/// A certificate chain (end entity first) and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: SigningKey,
}

/// What a server needs to accept secure flows for a name.
pub struct ServerConfig {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: SigningKey,
    /// CA certificates for client certificates; `Some` requires one.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
    /// Ciphers accepted, in order of preference.
    pub ciphers: Vec<Cipher>,
    /// Key exchanges accepted, in order of preference.
    pub kex: Vec<Kex>,
}

/// What a client needs to allocate secure flows to a name.
pub struct ClientConfig {
    /// CA certificates that may vouch for the server.
    pub ca: Vec<CertificateDer<'static>>,
    /// The client's own certificate, for servers that ask.
    pub identity: Option<Identity>,
    /// Ciphers offered, in order of preference.
    pub ciphers: Vec<Cipher>,
    /// Key exchanges offered, in order of preference.
    pub kex: Vec<Kex>,
}

/// A bad security configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: String },
    #[error("no certificate in {0}")]
    NoCert(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("encryption configuration: {0}")]
    Enc(String),
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        log::error!("secure flow configuration: {e}");
        Error::Crypt
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        err: e.to_string(),
    })
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(|c| c.ok())
        .collect();
    if certs.is_empty() {
        return Err(ConfigError::NoCert(path.display().to_string()));
    }
    Ok(certs)
}

/// A PKCS#8 private key in a PEM file.
pub fn load_key(path: &Path) -> Result<SigningKey, ConfigError> {
    SigningKey::from_pem(&read(path)?)
}

/// An encryption configuration file: lines `key = value`, `#` comments.
/// Keys: `cipher` (a comma-separated list of `aes-256-gcm`,
/// `chacha20-poly1305`, in order of preference), `kex` (a list of `x25519`,
/// `x25519-mlkem768`, in order of preference; `x25519` when absent), `kdf`
/// (`sha256`, the only one). The two sides must share at least one of each,
/// or the allocation fails with ECRYPT on both: a side that lists only the
/// hybrid never falls back to X25519 alone.
pub fn parse_enc(text: &str) -> Result<EncConfig, ConfigError> {
    let mut cfg = EncConfig::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| ConfigError::Enc(format!("not `key = value`: {line}")))?;
        match k.trim() {
            "cipher" => cfg.ciphers = list(v, "cipher", Cipher::from_name)?,
            "kex" => cfg.kex = list(v, "key exchange", Kex::from_name)?,
            "kdf" if v.trim().eq_ignore_ascii_case("sha256") => {}
            "kdf" => return Err(ConfigError::Enc(format!("unsupported kdf {}", v.trim()))),
            other => return Err(ConfigError::Enc(format!("unknown key {other}"))),
        }
    }
    Ok(cfg)
}

/// A comma-separated list without repeats; empty is an error.
fn list<T: PartialEq>(
    v: &str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim) {
        let x = parse(item).ok_or_else(|| ConfigError::Enc(format!("unknown {what} {item}")))?;
        if out.contains(&x) {
            return Err(ConfigError::Enc(format!("{what} {item} listed twice")));
        }
        out.push(x);
    }
    if out.is_empty() {
        return Err(ConfigError::Enc(format!("empty {what} list")));
    }
    Ok(out)
}

/// Load an encryption configuration file.
pub fn load_enc(path: &Path) -> Result<EncConfig, ConfigError> {
    let text = read(path)?;
    parse_enc(&String::from_utf8_lossy(&text))
}
