//! Keys derived from a layer key with HKDF-SHA256, one per purpose and
//! sender, and the AEAD (AES-256-GCM) that seals frames with them.
//!
//! * key id: `HKDF-Expand(PRK, "ethflow v2 key id")`, one byte;
//! * frame key of a sender: `HKDF-Expand(PRK, label(mode) || VLAN id ||
//!   sender MAC)`, 32 bytes, where the label differs between
//!   authenticate-only and encrypt, the VLAN id is two bytes (0: untagged),
//!   and `PRK = HKDF-Extract("ethflow layer key", layer key)`.
//!
//! The backends take a frame's VLAN tag out before the IPCP sees it and
//! admit only the IPCP's own VLAN, so binding the VLAN id into the key
//! authenticates the tag: a frame re-tagged onto another VLAN that uses the
//! same layer key fails there.
//!
//! Every sender has its own AES key, so the 96-bit GCM nonce only has to be
//! unique per sender: it is the sender's 64-bit frame counter. Two senders
//! never share a (key, nonce) pair even when their counters meet.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use irm::keyfile::LayerKey;
use sha2::Sha256;

use super::trailer::TAG_LEN;
use crate::wire::Mac;

/// Whether payloads are encrypted or only authenticated. The two modes use
/// different keys, so IPCPs of one layer that disagree about `encrypt` see
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
const LABEL_AUTH: &[u8] = b"ethflow v2 frame authenticate ";
const LABEL_ENCRYPT: &[u8] = b"ethflow v2 frame encrypt ";
const LABEL_KEY_ID: &[u8] = b"ethflow v2 key id";
const MAX_LABEL: usize = 32;

/// One configured layer key in one mode: what frame keys are derived from.
pub struct LayerSecret {
    id: u8,
    mode: Mode,
    vlan: u16,
    prk: Hkdf<Sha256>,
}

impl LayerSecret {
    /// `vlan`: the layer's VLAN id, 0 when untagged.
    pub fn new(key: &LayerKey, mode: Mode, vlan: u16) -> LayerSecret {
        let prk = Hkdf::<Sha256>::new(Some(SALT), key.as_bytes());
        let mut id = [0u8; 1];
        prk.expand(LABEL_KEY_ID, &mut id)
            .expect("1 byte is a valid HKDF-SHA256 output length");
        LayerSecret {
            id: id[0],
            mode,
            vlan,
            prk,
        }
    }

    /// The key id frames sealed with this key carry (one byte derived from
    /// the key: two keys may share it, and the receiver then tries both).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The frame key of the sender with MAC `src`.
    pub fn sender_key(&self, src: &Mac) -> SenderKey {
        let label = match self.mode {
            Mode::Authenticate => LABEL_AUTH,
            Mode::Encrypt => LABEL_ENCRYPT,
        };
        let mut info = [0u8; MAX_LABEL + 2 + 6];
        let n = label.len();
        info[..n].copy_from_slice(label);
        info[n..n + 2].copy_from_slice(&self.vlan.to_be_bytes());
        info[n + 2..n + 8].copy_from_slice(src);
        let mut k = Key::<Aes256Gcm>::default();
        self.prk
            .expand(&info[..n + 8], &mut k)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let aead = Aes256Gcm::new(&k);
        zeroize::Zeroize::zeroize(k.as_mut_slice());
        SenderKey(aead)
    }
}

/// The AEAD of one sender under one layer key.
pub struct SenderKey(Aes256Gcm);

/// The GCM nonce of a frame: its sender's counter (the key is per sender).
fn nonce(counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

impl SenderKey {
    pub fn seal(&self, counter: u64, aad: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        self.0
            .encrypt_in_place_detached(&nonce(counter), aad, payload)
            .expect("payloads are far below the AEAD's length limit")
            .into()
    }

    /// Open in place; on failure `payload` is left as it was.
    pub fn open(&self, counter: u64, aad: &[u8], payload: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        self.0
            .decrypt_in_place_detached(&nonce(counter), aad, payload, tag.into())
            .is_ok()
    }
}
