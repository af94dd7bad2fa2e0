//! Per-purpose subkeys of a layer key (HKDF-SHA256 with a label each), and
//! the AEAD that seals frames with them.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use irm::keyfile::LayerKey;
use sha2::Sha256;

/// Whether payloads are encrypted or only authenticated. The two modes use
/// different subkeys, so IPCPs of one layer that disagree about `encrypt` see
/// every frame of the other fail authentication (and count it) rather than
/// take ciphertext for plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Authenticate,
    Encrypt,
}

/// HKDF salt: names the protocol, so the same 32 bytes used elsewhere give
/// unrelated keys here.
const SALT: &[u8] = b"ethflow layer key";
const LABEL_AUTH: &[u8] = b"ethflow v2 frame authenticate";
const LABEL_ENCRYPT: &[u8] = b"ethflow v2 frame encrypt";
const LABEL_KEY_ID: &[u8] = b"ethflow v2 key id";

/// Bytes of the AEAD nonce (XChaCha20-Poly1305).
pub const NONCE_LEN: usize = 24;

/// One layer key, ready to seal and open frames.
pub struct FrameKey {
    id: u8,
    aead: XChaCha20Poly1305,
}

impl FrameKey {
    pub fn derive(key: &LayerKey, mode: Mode) -> FrameKey {
        let hk = Hkdf::<Sha256>::new(Some(SALT), key.as_bytes());
        let mut sub = Key::default();
        let label = match mode {
            Mode::Authenticate => LABEL_AUTH,
            Mode::Encrypt => LABEL_ENCRYPT,
        };
        hk.expand(label, &mut sub)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut id = [0u8; 1];
        hk.expand(LABEL_KEY_ID, &mut id)
            .expect("1 byte is a valid HKDF-SHA256 output length");
        let aead = XChaCha20Poly1305::new(&sub);
        zeroize::Zeroize::zeroize(sub.as_mut_slice());
        FrameKey { id: id[0], aead }
    }

    /// The key id frames sealed with this key carry (one byte derived from
    /// the key: two keys may share it, and the receiver then tries both).
    pub fn id(&self) -> u8 {
        self.id
    }

    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        payload: &mut [u8],
    ) -> [u8; super::trailer::TAG_LEN] {
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, payload)
            .expect("payloads are far below the AEAD's length limit");
        tag.into()
    }

    /// Open in place; on failure `payload` is left as it was.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8; super::trailer::TAG_LEN],
    ) -> bool {
        self.aead
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, payload, tag.into())
            .is_ok()
    }
}

/// The nonce of a frame: sender MAC and counter, so no two senders and no two
/// frames of one sender under one key share a nonce.
pub fn nonce(src: &[u8; 6], counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..6].copy_from_slice(src);
    n[6..14].copy_from_slice(&counter.to_be_bytes());
    n
}
