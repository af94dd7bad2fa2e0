//! Replay protection: one sliding window per sender MAC, as WireGuard and
//! IPsec keep per peer, in a table of bounded size.
//!
//! [`ReplayTable::check`] only looks; [`ReplayTable::accept`] records, and the
//! caller calls it only after the frame's tag verified. So no frame that fails
//! authentication changes the table: a stranger rotating source MACs cannot
//! fill it, evict a real sender, or move anyone's window.
//!
//! Counters are per sender and start from the sender's wall clock in
//! nanoseconds (see `docs/decisions/0017-layer-key-aead.md`), so a sender the
//! table has not seen yet must show a counter no older than the table's
//! `floor`: the receiver's own start time less the allowed clock skew. That
//! keeps frames captured before a receiver restarted from being accepted
//! after it.

use crate::wire::Mac;
use std::collections::HashMap;

/// Bits of one window (as WireGuard's 2048-bit variant: 32 words of 64).
pub const WINDOW_BITS: u64 = 2048;
const WORDS: usize = (WINDOW_BITS / 64) as usize;
/// How far behind the highest counter seen a frame may still arrive: one word
/// of the ring is the one being reused.
pub const WINDOW: u64 = WINDOW_BITS - 64;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Seen before, inside the window.
    Duplicate,
    /// Older than the window (or, for a new sender, than the table's floor).
    TooOld,
}

/// The counters seen from one sender: the highest, and a ring bitmap of the
/// [`WINDOW`] below it.
#[derive(Clone)]
pub struct Window {
    top: u64,
    bits: [u64; WORDS],
}

impl Window {
    /// A window whose first accepted counter is `first`.
    pub fn new(first: u64) -> Window {
        let mut w = Window {
            top: first,
            bits: [0; WORDS],
        };
        w.set(first);
        w
    }

    fn slot(counter: u64) -> (usize, u64) {
        (((counter / 64) as usize) % WORDS, 1u64 << (counter % 64))
    }

    fn set(&mut self, counter: u64) {
        let (w, b) = Self::slot(counter);
        self.bits[w] |= b;
    }

    /// May `counter` be accepted? Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), Replay> {
        if counter > self.top {
            return Ok(());
        }
        if self.top - counter >= WINDOW {
            return Err(Replay::TooOld);
        }
        let (w, b) = Self::slot(counter);
        if self.bits[w] & b != 0 {
            return Err(Replay::Duplicate);
        }
        Ok(())
    }

    /// Record `counter` (which [`Window::check`] accepted).
    pub fn accept(&mut self, counter: u64) {
        if counter > self.top {
            // Clear the words the window slides past (all of them at most).
            let (from, to) = (self.top / 64, counter / 64);
            let n = (to - from).min(WORDS as u64);
            for i in 1..=n {
                self.bits[((from + i) as usize) % WORDS] = 0;
            }
            self.top = counter;
        }
        self.set(counter);
    }

    pub fn top(&self) -> u64 {
        self.top
    }
}

struct Slot<T> {
    mac: Mac,
    window: Window,
    /// Seen since the clock hand last passed (second chance).
    referenced: bool,
    /// What the caller keeps per sender (its derived keys).
    extra: T,
}

/// Windows of at most `capacity` senders. Lookups are O(1) (hash of the MAC);
/// when a new sender arrives at a full table the least recently seen one is
/// evicted by the CLOCK (second-chance) rule, O(1) amortized. Only senders
/// that authenticated are ever inserted. `T` is kept beside each window.
pub struct ReplayTable<T> {
    index: HashMap<Mac, usize>,
    slots: Vec<Slot<T>>,
    hand: usize,
    capacity: usize,
    floor: u64,
    max_skew_ns: u64,
}

impl<T: Default> ReplayTable<T> {
    /// `floor`: the oldest counter a sender not yet in the table may show.
    /// `max_skew_ns`: how far an evicted sender's floor lies below its top.
    pub fn new(capacity: usize, floor: u64, max_skew_ns: u64) -> ReplayTable<T> {
        let capacity = capacity.max(1);
        ReplayTable {
            index: HashMap::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            hand: 0,
            capacity,
            floor,
            max_skew_ns,
        }
    }

    /// May a frame from `mac` with `counter` be accepted? Changes nothing.
    pub fn check(&self, mac: &Mac, counter: u64) -> Result<(), Replay> {
        match self.index.get(mac) {
            Some(&i) => self.slots[i].window.check(counter),
            None if counter < self.floor => Err(Replay::TooOld),
            None => Ok(()),
        }
    }

    /// What is kept beside the window of `mac`, if it has one.
    pub fn extra(&self, mac: &Mac) -> Option<&T> {
        self.index.get(mac).map(|&i| &self.slots[i].extra)
    }

    /// Every sender's extra (e.g. to forget derived keys after a key change).
    pub fn extras_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().map(|s| &mut s.extra)
    }

    /// Record an authenticated frame (after [`ReplayTable::check`] passed);
    /// returns what is kept beside the sender's window.
    pub fn accept(&mut self, mac: &Mac, counter: u64) -> &mut T {
        if let Some(&i) = self.index.get(mac) {
            let s = &mut self.slots[i];
            s.window.accept(counter);
            s.referenced = true;
            return &mut self.slots[i].extra;
        }
        let slot = Slot {
            mac: *mac,
            window: Window::new(counter),
            referenced: true,
            extra: T::default(),
        };
        if self.slots.len() < self.capacity {
            self.index.insert(*mac, self.slots.len());
            self.slots.push(slot);
            return &mut self.slots.last_mut().expect("just pushed").extra;
        }
        let i = self.victim();
        let old = std::mem::replace(&mut self.slots[i], slot);
        self.index.remove(&old.mac);
        self.index.insert(*mac, i);
        // A sender forgotten here must not be able to replay its old frames
        // once it is re-learnt: new senders must come near its counters.
        self.floor = self
            .floor
            .max(old.window.top().saturating_sub(self.max_skew_ns));
        &mut self.slots[i].extra
    }

    fn victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if !std::mem::replace(&mut self.slots[i].referenced, false) {
                return i;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut Window, c: u64) -> Result<(), Replay> {
        w.check(c)?;
        w.accept(c);
        Ok(())
    }

    #[test]
    fn window_accepts_each_counter_once_and_reorders_within_the_window() {
        let mut w = Window::new(1000);
        assert_eq!(take(&mut w, 1000), Err(Replay::Duplicate));
        assert_eq!(take(&mut w, 1005), Ok(()));
        assert_eq!(take(&mut w, 1001), Ok(()));
        assert_eq!(take(&mut w, 1001), Err(Replay::Duplicate));
        assert_eq!(take(&mut w, 1005), Err(Replay::Duplicate));
        // Far jump: everything more than WINDOW behind is too old.
        assert_eq!(take(&mut w, 1005 + 10_000), Ok(()));
        assert_eq!(take(&mut w, 1003), Err(Replay::TooOld));
        let top = w.top();
        assert_eq!(take(&mut w, top - WINDOW), Err(Replay::TooOld));
        assert_eq!(take(&mut w, top - WINDOW + 1), Ok(()));
        assert_eq!(take(&mut w, top - 1), Ok(()));
        assert_eq!(take(&mut w, top - 1), Err(Replay::Duplicate));
    }

    #[test]
    fn sliding_clears_stale_bits() {
        let mut w = Window::new(0);
        for c in 1..WINDOW_BITS * 3 {
            assert_eq!(take(&mut w, c), Ok(()), "{c}");
        }
        // After sliding by whole words, counters new to the window are fresh.
        let top = w.top();
        assert_eq!(take(&mut w, top + 64), Ok(()));
        assert_eq!(take(&mut w, top + 1), Ok(()));
        assert_eq!(take(&mut w, top + 63), Ok(()));
        assert_eq!(take(&mut w, top + 2), Ok(()));
    }

    #[test]
    fn table_refuses_new_senders_below_the_floor_and_changes_only_on_accept() {
        let mut t = ReplayTable::<()>::new(2, 100, 10);
        let (a, b, c) = ([1; 6], [2; 6], [3; 6]);
        assert_eq!(t.check(&a, 99), Err(Replay::TooOld));
        assert_eq!(t.check(&a, 100), Ok(()));
        assert!(t.is_empty(), "check changes nothing");
        t.accept(&a, 500);
        t.accept(&b, 100);
        assert_eq!(t.check(&a, 500), Err(Replay::Duplicate));
        assert_eq!(t.check(&a, 400), Ok(()));
        // A third sender evicts one (CLOCK: both referenced, so the hand
        // clears both and takes the first).
        t.accept(&c, 1000);
        assert_eq!(t.len(), 2);
        assert_eq!(t.floor(), 490);
        // a was forgotten: its old frames are now below the floor.
        assert_eq!(t.check(&a, 400), Err(Replay::TooOld));
        assert_eq!(t.check(&c, 1000), Err(Replay::Duplicate));
    }

    #[test]
    fn eviction_prefers_senders_not_seen_since_the_last_sweep() {
        let mut t = ReplayTable::<()>::new(3, 0, 0);
        let macs: Vec<Mac> = (0..4u8).map(|i| [i; 6]).collect();
        for m in &macs[..3] {
            t.accept(m, 10);
        }
        t.accept(&macs[3], 10); // sweeps, evicts macs[0]
        t.accept(&macs[1], 11); // macs[1] seen again
        t.accept(&[9; 6], 10); // hand at 1: macs[1] referenced, macs[2] not
        assert_eq!(t.check(&macs[1], 11), Err(Replay::Duplicate));
        assert_eq!(t.check(&macs[2], 10), Ok(()), "macs[2] evicted");
        assert_eq!(t.check(&macs[3], 10), Err(Replay::Duplicate));
    }
}
