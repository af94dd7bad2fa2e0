//! The log of a flow's state changes, one word in the header beside the
//! state word, so an event set that looks now and then still sees a flap
//! (PEER → ALLOCATED → PEER) that ended in the state it saw last.
//!
//! Bits 0..16 count the changes (wrapping); bits 16..64 hold the last 24
//! states entered, two bits each, newest lowest. Whoever sets the state
//! (the IPCP, irmd) appends to it after storing the state word, and only
//! when the state really changed. An application can scribble over its own
//! copy; that can only confuse its own event set.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{state_to_word, word_to_state};
use crate::proto::FlowState;

const COUNT_BITS: u32 = 16;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// States the log keeps.
pub const KEPT: u16 = 24;
/// Tries to append with compare-and-swap before a plain store: two trusted
/// writers race at most briefly, and a scribbling application must not hold
/// the IPCP in a loop.
const APPEND_TRIES: usize = 8;

/// A snapshot of a flow's change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateLog(pub u64);

impl StateLog {
    /// Changes so far (wrapping at 2^16).
    pub fn count(self) -> u16 {
        (self.0 & COUNT_MASK) as u16
    }

    /// The log after entering `s`.
    fn push(self, s: FlowState) -> StateLog {
        let history = (self.0 >> COUNT_BITS) << 2 | u64::from(state_to_word(s) & 3);
        let count = (self.0 + 1) & COUNT_MASK;
        StateLog(history << COUNT_BITS | count)
    }

    /// The states entered after `earlier` was taken, oldest first (only the
    /// last [`KEPT`] if there were more).
    pub fn since(self, earlier: StateLog) -> impl Iterator<Item = FlowState> {
        let n = self.count().wrapping_sub(earlier.count()).min(KEPT);
        let history = self.0 >> COUNT_BITS;
        (0..n)
            .rev()
            .map(move |i| word_to_state(((history >> (2 * i)) & 3) as u32))
    }
}

/// Append `s` to the log word (after the state word was set to it).
pub(super) fn append(log: &AtomicU64, s: FlowState) {
    let mut cur = log.load(Ordering::Relaxed);
    for _ in 0..APPEND_TRIES {
        let next = StateLog(cur).push(s).0;
        match log.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
    log.store(StateLog(cur).push(s).0, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use FlowState::{Allocated, Down, Peer};

    #[test]
    fn since_lists_the_states_entered_oldest_first() {
        let log = AtomicU64::new(0);
        let start = StateLog(log.load(Ordering::Relaxed));
        for s in [Peer, Allocated, Peer] {
            append(&log, s);
        }
        let now = StateLog(log.load(Ordering::Relaxed));
        assert_eq!(now.count(), 3);
        assert_eq!(
            now.since(start).collect::<Vec<_>>(),
            [Peer, Allocated, Peer]
        );
        assert_eq!(now.since(now).count(), 0);
        // More than the log keeps: the last KEPT, still in order.
        for i in 0..100 {
            append(&log, if i % 2 == 0 { Allocated } else { Down });
        }
        let later = StateLog(log.load(Ordering::Relaxed));
        let seen: Vec<_> = later.since(now).collect();
        assert_eq!(seen.len(), usize::from(KEPT));
        assert_eq!(seen.last(), Some(&Down));
        assert_eq!(seen[0], Allocated);
        // The count wraps; the distance is still right.
        let old = StateLog(u64::from(u16::MAX));
        assert_eq!(old.push(Peer).count(), 0);
        assert_eq!(old.push(Peer).since(old).collect::<Vec<_>>(), [Peer]);
    }
}
