//! Handshake messages split into SDUs and put back together, sans IO.
//!
//! A handshake message may be larger than the flow's max SDU: a hybrid key
//! share (ML-KEM-768: 1184-byte encapsulation key, 1088-byte ciphertext)
//! with a certificate chain does not fit one SDU at MTU 1500, and nothing
//! fits at small MTUs. Every handshake SDU therefore carries a fragment
//! header, even when the message fits one:
//!
//! ```text
//! 0      2      4              8
//! | index | count | total length | payload (≥ 1 byte) …
//! ```
//!
//! (big-endian). The flow may lose and reorder SDUs: fragments are placed
//! by index; a lost one makes the handshake time out. The receiving side
//! is bounded: the total length, the fragment count and the time from the
//! first fragment have limits ([`Policy`]), every fragment must agree on
//! count and total, a repeated index or more bytes than announced is an
//! error, never a silent overwrite.

use std::ops::Range;
use std::time::{Duration, Instant};

mod field {
    use super::Range;
    pub const INDEX: Range<usize> = 0..2;
    pub const COUNT: Range<usize> = 2..4;
    pub const TOTAL: Range<usize> = 4..8;
}

/// Bytes of the fragment header.
pub const HEADER_LEN: usize = field::TOTAL.end;

/// Limits of a reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Largest message, in bytes.
    pub max_message: usize,
    /// Most fragments of one message.
    pub max_fragments: u16,
    /// Longest time from a message's first fragment to its last.
    pub timeout: Duration,
}

impl Default for Policy {
    /// 64 KiB, 1024 fragments, 5 s: a hybrid hello with a chain of eight
    /// certificates is well under 16 KiB, and 1024 fragments carry 64 KiB
    /// at SDUs of 72 bytes.
    fn default() -> Policy {
        Policy {
            max_message: 64 * 1024,
            max_fragments: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why fragmenting or reassembling failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    #[error("fragment shorter than its header plus one byte")]
    Short,
    #[error("fragment count 0 or above the limit")]
    BadCount,
    #[error("fragment index not below the count")]
    BadIndex,
    #[error("message larger than the limit")]
    TooLarge,
    #[error("fragments disagree on count or total length")]
    Inconsistent,
    #[error("fragment index repeated")]
    Duplicate,
    #[error("fragments carry more or fewer bytes than announced")]
    LengthMismatch,
    #[error("message not complete in time")]
    TimedOut,
    #[error("the flow's max SDU cannot carry a fragment")]
    SduTooSmall,
}

/// A checked view of one fragment.
#[derive(Debug, Clone, Copy)]
pub struct FragmentView<'a> {
    buf: &'a [u8],
}

impl<'a> FragmentView<'a> {
    /// At least a header and one payload byte; fields are read as they are.
    pub fn new_checked(buf: &'a [u8]) -> Result<FragmentView<'a>, FragError> {
        if buf.len() <= HEADER_LEN {
            return Err(FragError::Short);
        }
        Ok(FragmentView { buf })
    }
    pub fn index(&self) -> u16 {
        u16::from_be_bytes([self.buf[field::INDEX][0], self.buf[field::INDEX][1]])
    }
    pub fn count(&self) -> u16 {
        u16::from_be_bytes([self.buf[field::COUNT][0], self.buf[field::COUNT][1]])
    }
    pub fn total(&self) -> u32 {
        let t = &self.buf[field::TOTAL];
        u32::from_be_bytes([t[0], t[1], t[2], t[3]])
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

/// The plain fields of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRepr {
    pub index: u16,
    pub count: u16,
    pub total: u32,
}

impl FragmentRepr {
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN + payload.len()];
        out[field::INDEX].copy_from_slice(&self.index.to_be_bytes());
        out[field::COUNT].copy_from_slice(&self.count.to_be_bytes());
        out[field::TOTAL].copy_from_slice(&self.total.to_be_bytes());
        out[HEADER_LEN..].copy_from_slice(payload);
        out
    }
}

/// Split `msg` into SDUs of at most `max_sdu` bytes each.
pub fn fragment(msg: &[u8], max_sdu: usize, policy: &Policy) -> Result<Vec<Vec<u8>>, FragError> {
    if max_sdu <= HEADER_LEN {
        return Err(FragError::SduTooSmall);
    }
    if msg.is_empty() || msg.len() > policy.max_message {
        return Err(FragError::TooLarge);
    }
    let total = u32::try_from(msg.len()).map_err(|_| FragError::TooLarge)?;
    let chunks: Vec<&[u8]> = msg.chunks(max_sdu - HEADER_LEN).collect();
    let count = u16::try_from(chunks.len())
        .ok()
        .filter(|c| *c <= policy.max_fragments)
        .ok_or(FragError::SduTooSmall)?;
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FragmentRepr {
                index: i as u16,
                count,
                total,
            }
            .emit(c)
        })
        .collect())
}

/// One message being put back together.
#[derive(Debug)]
pub struct Reassembly {
    policy: Policy,
    started: Option<Instant>,
    count: u16,
    total: u32,
    parts: Vec<Option<Vec<u8>>>,
    received: usize,
    have: usize,
}

impl Reassembly {
    pub fn new(policy: Policy) -> Reassembly {
        Reassembly {
            policy,
            started: None,
            count: 0,
            total: 0,
            parts: Vec::new(),
            received: 0,
            have: 0,
        }
    }

    /// When the message must be complete (after the first fragment).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.started.map(|t| t + self.policy.timeout)
    }

    /// Take one SDU at `now`: the whole message once its last fragment is
    /// in. Any error ends the reassembly (the handshake fails).
    pub fn push(&mut self, now: Instant, sdu: &[u8]) -> Result<Option<Vec<u8>>, FragError> {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            return Err(FragError::TimedOut);
        }
        let f = FragmentView::new_checked(sdu)?;
        if f.count() == 0 || f.count() > self.policy.max_fragments {
            return Err(FragError::BadCount);
        }
        if f.index() >= f.count() {
            return Err(FragError::BadIndex);
        }
        if f.total() as usize > self.policy.max_message || (f.total() as usize) < f.count() as usize
        {
            return Err(FragError::TooLarge);
        }
        match self.started {
            None => {
                self.started = Some(now);
                self.count = f.count();
                self.total = f.total();
                self.parts = vec![None; f.count() as usize];
            }
            Some(_) if (f.count(), f.total()) != (self.count, self.total) => {
                return Err(FragError::Inconsistent);
            }
            Some(_) => {}
        }
        let slot = &mut self.parts[f.index() as usize];
        if slot.is_some() {
            return Err(FragError::Duplicate);
        }
        self.have += f.payload().len();
        if self.have > self.total as usize {
            return Err(FragError::LengthMismatch);
        }
        *slot = Some(f.payload().to_vec());
        self.received += 1;
        if self.received < self.count as usize {
            return Ok(None);
        }
        if self.have != self.total as usize {
            return Err(FragError::LengthMismatch);
        }
        let mut msg = Vec::with_capacity(self.total as usize);
        for p in self.parts.drain(..) {
            msg.extend_from_slice(&p.unwrap_or_default());
        }
        *self = Reassembly::new(self.policy);
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reassemble(frags: &[Vec<u8>]) -> Result<Option<Vec<u8>>, FragError> {
        let now = Instant::now();
        let mut r = Reassembly::new(Policy::default());
        let mut out = None;
        for f in frags {
            if let Some(m) = r.push(now, f)? {
                out = Some(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn small_sdus_split_and_join_in_any_order() {
        let msg: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        for max_sdu in [HEADER_LEN + 3, 20, 64, 1000, 2999 + HEADER_LEN, 5000] {
            let mut frags = fragment(&msg, max_sdu, &Policy::default()).unwrap();
            assert!(frags.iter().all(|f| f.len() <= max_sdu));
            assert_eq!(frags.len(), msg.len().div_ceil(max_sdu - HEADER_LEN));
            assert_eq!(reassemble(&frags).unwrap().as_deref(), Some(&msg[..]));
            frags.reverse();
            assert_eq!(reassemble(&frags).unwrap().as_deref(), Some(&msg[..]));
        }
    }

    #[test]
    fn limits_are_enforced_on_both_sides() {
        let p = Policy::default();
        assert_eq!(fragment(b"x", HEADER_LEN, &p), Err(FragError::SduTooSmall));
        assert_eq!(fragment(b"", 100, &p), Err(FragError::TooLarge));
        let big = vec![0u8; p.max_message + 1];
        assert_eq!(fragment(&big, 1500, &p), Err(FragError::TooLarge));
        // 64 KiB at 9-byte SDUs would take 65536 fragments.
        let max = vec![0u8; p.max_message];
        assert_eq!(
            fragment(&max, HEADER_LEN + 1, &p),
            Err(FragError::SduTooSmall)
        );
        let f = |index, count, total, payload: &[u8]| {
            FragmentRepr {
                index,
                count,
                total,
            }
            .emit(payload)
        };
        let now = Instant::now();
        let mut r = Reassembly::new(p);
        assert_eq!(r.push(now, &[0; HEADER_LEN]), Err(FragError::Short));
        assert_eq!(r.push(now, &f(0, 0, 1, b"a")), Err(FragError::BadCount));
        assert_eq!(
            r.push(now, &f(0, 1025, 2000, b"a")),
            Err(FragError::BadCount)
        );
        assert_eq!(r.push(now, &f(2, 2, 2, b"a")), Err(FragError::BadIndex));
        assert_eq!(
            r.push(now, &f(0, 2, 1 << 20, b"a")),
            Err(FragError::TooLarge)
        );
        assert_eq!(r.push(now, &f(0, 3, 2, b"a")), Err(FragError::TooLarge));
        // A total is announced and kept: other counts/totals are refused,
        // as are repeats and more bytes than announced.
        let mut r = Reassembly::new(p);
        assert_eq!(r.push(now, &f(0, 3, 5, b"ab")), Ok(None));
        assert_eq!(r.push(now, &f(1, 3, 6, b"c")), Err(FragError::Inconsistent));
        let mut r = Reassembly::new(p);
        assert_eq!(r.push(now, &f(0, 3, 5, b"ab")), Ok(None));
        assert_eq!(r.push(now, &f(0, 3, 5, b"ab")), Err(FragError::Duplicate));
        let mut r = Reassembly::new(p);
        assert_eq!(r.push(now, &f(0, 2, 5, b"abcd")), Ok(None));
        assert_eq!(
            r.push(now, &f(1, 2, 5, b"ef")),
            Err(FragError::LengthMismatch)
        );
        let mut r = Reassembly::new(p);
        assert_eq!(r.push(now, &f(0, 2, 5, b"ab")), Ok(None));
        assert_eq!(
            r.push(now, &f(1, 2, 5, b"c")),
            Err(FragError::LengthMismatch)
        );
    }

    #[test]
    fn a_message_not_complete_in_time_fails() {
        let p = Policy::default();
        let frags = fragment(&[7u8; 100], 40, &p).unwrap();
        let t0 = Instant::now();
        let mut r = Reassembly::new(p);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.push(t0, &frags[0]), Ok(None));
        assert_eq!(r.poll_timeout(), Some(t0 + p.timeout));
        assert_eq!(r.push(t0 + p.timeout, &frags[1]), Err(FragError::TimedOut));
        // Just in time is in time; the next message starts afresh.
        let mut r = Reassembly::new(p);
        for (i, f) in frags.iter().enumerate() {
            let at = if i == 0 {
                t0
            } else {
                t0 + p.timeout - Duration::from_millis(1)
            };
            let done = r.push(at, f).unwrap();
            assert_eq!(done.is_some(), i == frags.len() - 1);
        }
        assert_eq!(r.poll_timeout(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Hostile SDUs are an error or a partial message, never a panic,
        /// and what comes out never exceeds the limit.
        #[test]
        fn arbitrary_fragments_never_panic(sdus in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 0..20)) {
            let mut r = Reassembly::new(Policy::default());
            for s in &sdus {
                match r.push(Instant::now(), s) {
                    Ok(Some(m)) => prop_assert!(!m.is_empty() && m.len() <= Policy::default().max_message),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn any_message_round_trips_at_any_sdu(msg in proptest::collection::vec(any::<u8>(), 1..2000),
                                              sdu in (HEADER_LEN + 2)..300usize) {
            let frags = fragment(&msg, sdu, &Policy::default()).unwrap();
            prop_assert_eq!(reassemble(&frags).unwrap(), Some(msg));
        }
    }
}
