//! The record layer of a secure flow: one AEAD record per SDU (ring).
//!
//! ```text
//! record = seq (8 B, big endian) | ciphertext | tag (16 B)
//! ```
//!
//! The sequence number travels in clear and is the additional authenticated
//! data; the nonce is the direction's IV XOR the sequence number (TLS 1.3's
//! construction), so no nonce repeats under one key. Every
//! [`Policy::epoch_records`] records the key moves one step along a one-way
//! chain (HKDF-Expand of the previous secret), well before AES-GCM's usage
//! limit; a sender refuses to send past the last sequence number instead of
//! reusing a nonce. Records may be lost or reordered: the receiver keeps a
//! sliding replay window (a bitmap, as IPsec and WireGuard do) and marks a
//! sequence number seen only after its tag verifies.

use super::Cipher;
use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Sequence number bytes in front of every record.
pub const SEQ_LEN: usize = 8;
/// AEAD tag bytes at the end of every record.
pub const TAG_LEN: usize = 16;
/// What a record adds to an SDU.
pub const OVERHEAD: usize = SEQ_LEN + TAG_LEN;

/// Tunables of the record layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Records sealed under one key before the chain steps (a power of two).
    /// 2^24 stays under TLS 1.3's AES-GCM limit of 2^24.5 full-size records.
    pub epoch_records: u64,
    /// Sequence numbers behind the highest one seen that may still arrive
    /// (reordering tolerance); a multiple of 64.
    pub replay_window: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            epoch_records: 1 << 24,
            replay_window: 4096,
        }
    }
}

impl Policy {
    /// Whether the rules between the fields hold.
    pub fn validate(&self) -> bool {
        self.epoch_records.is_power_of_two()
            && self.replay_window >= 64
            && self.replay_window.is_multiple_of(64)
            // The window never spans more than two epochs, so a receiver
            // needs the current and previous keys only.
            && self.replay_window <= self.epoch_records
    }
}

/// Why a record was dropped (counted by the flow, never delivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than a sequence number and a tag.
    Short,
    /// Already received, or older than the window.
    Replay,
    /// The tag does not verify (forged, tampered, or another key).
    Tag,
}

/// A direction's secret at one epoch, with the AEAD it keys.
struct EpochKey {
    epoch: u64,
    secret: Zeroizing<[u8; 32]>,
    iv: [u8; 12],
    aead: LessSafeKey,
}

impl EpochKey {
    fn new(cipher: Cipher, epoch: u64, secret: [u8; 32]) -> EpochKey {
        let secret = Zeroizing::new(secret);
        let hk = Hkdf::<Sha256>::from_prk(&secret[..]).expect("32-byte PRK");
        let mut key = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; 12];
        hk.expand(b"ethflow record key", &mut key[..])
            .expect("32 bytes fit HKDF");
        hk.expand(b"ethflow record iv", &mut iv)
            .expect("12 bytes fit HKDF");
        let alg = match cipher {
            Cipher::Aes256Gcm => &AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        let aead = LessSafeKey::new(UnboundKey::new(alg, &key[..]).expect("32-byte key"));
        EpochKey {
            epoch,
            secret,
            iv,
            aead,
        }
    }

    /// The next key on the one-way chain.
    fn next(&self, cipher: Cipher) -> EpochKey {
        let hk = Hkdf::<Sha256>::from_prk(&self.secret[..]).expect("32-byte PRK");
        let mut s = [0u8; 32];
        hk.expand(b"ethflow record rekey", &mut s)
            .expect("32 bytes fit HKDF");
        EpochKey::new(cipher, self.epoch + 1, s)
    }

    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

/// The sending half of a secure flow.
pub struct Sealer {
    cipher: Cipher,
    policy: Policy,
    key: EpochKey,
    next_seq: u64,
}

impl Sealer {
    pub fn new(cipher: Cipher, secret: [u8; 32], policy: Policy) -> Sealer {
        debug_assert!(policy.validate());
        Sealer {
            cipher,
            policy,
            key: EpochKey::new(cipher, 0, secret),
            next_seq: 0,
        }
    }

    /// Seal `sdu` into `out` (cleared first); `None` once the sequence space
    /// is used up (the flow must end rather than reuse a nonce).
    pub fn seal(&mut self, sdu: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let seq = self.next_seq;
        if seq == u64::MAX {
            return None;
        }
        let epoch = seq / self.policy.epoch_records;
        while self.key.epoch < epoch {
            self.key = self.key.next(self.cipher);
        }
        self.next_seq += 1;
        out.clear();
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(sdu);
        // The nonce is unique: the sequence number never repeats under a key.
        let nonce = Nonce::assume_unique_for_key(self.key.nonce(seq));
        let tag = self
            .key
            .aead
            .seal_in_place_separate_tag(nonce, Aad::from(seq.to_be_bytes()), &mut out[SEQ_LEN..])
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(())
    }

    #[cfg(test)]
    pub(crate) fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// A sliding window over sequence numbers: which of the last `bits` numbers
/// below and including `top` have been received.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted, plus one (0 = none yet).
    top: u64,
    bits: Vec<u64>,
}

impl ReplayWindow {
    pub fn new(size: u64) -> ReplayWindow {
        ReplayWindow {
            top: 0,
            bits: vec![0; (size / 64).max(1) as usize],
        }
    }

    fn size(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let i = seq % self.size();
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether `seq` may still be accepted (not seen, not too old).
    pub fn check(&self, seq: u64) -> bool {
        if seq >= self.top {
            return true;
        }
        if self.top - seq > self.size() {
            return false;
        }
        let (w, b) = self.slot(seq);
        self.bits[w] & b == 0
    }

    /// Mark `seq` received (call only after `check` and authentication).
    pub fn mark(&mut self, seq: u64) {
        if seq >= self.top {
            // Clear the slots the window slides over.
            let advance = seq + 1 - self.top;
            if advance >= self.size() {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.top..=seq {
                    let (w, b) = self.slot(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq + 1;
        }
        let (w, b) = self.slot(seq);
        self.bits[w] |= b;
    }
}

/// The receiving half of a secure flow.
pub struct Opener {
    cipher: Cipher,
    policy: Policy,
    /// The key of the highest epoch accepted so far, and the one before it.
    cur: EpochKey,
    prev: Option<EpochKey>,
    window: ReplayWindow,
}

impl Opener {
    pub fn new(cipher: Cipher, secret: [u8; 32], policy: Policy) -> Opener {
        debug_assert!(policy.validate());
        Opener {
            cipher,
            policy,
            cur: EpochKey::new(cipher, 0, secret),
            prev: None,
            window: ReplayWindow::new(policy.replay_window),
        }
    }

    /// Open `record` in place; on success the plaintext is
    /// `record[SEQ_LEN..SEQ_LEN + n]` and `n` is returned.
    pub fn open(&mut self, record: &mut [u8]) -> Result<usize, Rejected> {
        if record.len() < OVERHEAD {
            return Err(Rejected::Short);
        }
        let seq = u64::from_be_bytes(record[..SEQ_LEN].try_into().expect("8 bytes"));
        if !self.window.check(seq) {
            return Err(Rejected::Replay);
        }
        let epoch = seq / self.policy.epoch_records;
        // A key ahead of ours is derived on the side and kept only if the
        // record verifies, so a forged sequence number cannot move the chain.
        let ahead;
        let key = if epoch == self.cur.epoch {
            &self.cur
        } else if epoch + 1 == self.cur.epoch {
            self.prev.as_ref().ok_or(Rejected::Replay)?
        } else if epoch == self.cur.epoch + 1 {
            ahead = self.cur.next(self.cipher);
            &ahead
        } else {
            // Older than the window or more than a whole epoch lost.
            return Err(Rejected::Replay);
        };
        let n = record.len() - OVERHEAD;
        let nonce = Nonce::assume_unique_for_key(key.nonce(seq));
        let ok = key
            .aead
            .open_in_place(nonce, Aad::from(seq.to_be_bytes()), &mut record[SEQ_LEN..])
            .is_ok();
        if !ok {
            return Err(Rejected::Tag);
        }
        if epoch == self.cur.epoch + 1 {
            let next = self.cur.next(self.cipher);
            self.prev = Some(std::mem::replace(&mut self.cur, next));
        }
        self.window.mark(seq);
        Ok(n)
    }
}
