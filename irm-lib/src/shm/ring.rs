//! Ring cursors: one side's private view of one ring. Indices a side owns
//! live here, not in the mapping; what it reads from the mapping (the other
//! side's index, slot lengths) is checked before use.

use std::sync::atomic::Ordering;

use super::map::{SharedBytes, ShmMap};
use super::Dir;
use crate::error::{Error, Result};

fn corrupt(dir: Dir, head: u32, tail: u32, slots: u32) -> Error {
    Error::Invalid(format!(
        "{} ring corrupt: head {head}, tail {tail} for {slots} slots",
        dir.name()
    ))
}

/// How many slots ahead of the one in use a side starts fetching
/// ([`ShmMap::prefetch_slot`]).
const PREFETCH_AHEAD: u32 = 4;

/// The producer's private head and its last validated view of the tail.
/// Slots written but not yet published (head ahead of `published`) are the
/// producer's alone: a batch writes several and publishes once.
#[derive(Debug)]
pub(super) struct Producer {
    pub(super) dir: Dir,
    pub(super) head: u32,
    /// The head as the consumer may see it (last stored to the mapping).
    published: u32,
    cached_tail: u32,
}

impl Producer {
    /// Start where the ring's head is now; the cached tail says "full" so the
    /// first write reads (and validates) the real tail.
    pub(super) fn new(map: &ShmMap, dir: Dir) -> Producer {
        let head = map.ctrl(dir).head.load(Ordering::Relaxed);
        Producer {
            dir,
            head,
            published: head,
            cached_tail: head.wrapping_sub(map.geom.slots),
        }
    }

    /// Is there a free slot? Reads the consumer's tail only when the cached
    /// view says full. A tail ahead of head or more than `slots` behind is corrupt.
    pub(super) fn has_space(&mut self, map: &ShmMap) -> Result<bool> {
        let slots = map.geom.slots;
        if self.head.wrapping_sub(self.cached_tail) < slots {
            return Ok(true);
        }
        let tail = map.ctrl(self.dir).tail.load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used > slots {
            return Err(corrupt(self.dir, self.head, tail, slots));
        }
        self.cached_tail = tail;
        Ok(used < slots)
    }

    /// Copy `sdu` into the slot at head without publishing it (the consumer
    /// does not see it until [`Producer::publish`]). Caller checked space
    /// and length.
    pub(super) fn stage(&mut self, map: &ShmMap, sdu: &[u8]) {
        debug_assert!(sdu.len() <= map.geom.slot_size as usize);
        map.slot_len(self.dir, self.head)
            .store(sdu.len() as u32, Ordering::Relaxed);
        // The consumer does not look at this slot until head moves past it.
        map.slot_data(self.dir, self.head, sdu.len()).copy_from(sdu);
        self.head = self.head.wrapping_add(1);
        map.prefetch_slot(self.dir, self.head.wrapping_add(PREFETCH_AHEAD), true);
    }

    /// Slots staged and not yet published.
    pub(super) fn staged(&self) -> u32 {
        self.head.wrapping_sub(self.published)
    }

    /// Make every staged slot visible to the consumer (one Release store).
    pub(super) fn publish(&mut self, map: &ShmMap) {
        if self.published != self.head {
            map.ctrl(self.dir).head.store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }
}

/// The consumer's private tail and its last validated view of the head.
/// Consumed slots go back to the producer lazily ([`Consumer::advance`]).
#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) dir: Dir,
    pub(super) tail: u32,
    /// The tail as the producer may see it (last stored to the mapping).
    published: u32,
    cached_head: u32,
    /// Publish at least every this many consumed slots.
    publish_every: u32,
}

/// At most this many consumed slots wait to be handed back (and at most an
/// eighth of the ring), so a producer rarely finds the ring full because of
/// them.
const PUBLISH_EVERY_MAX: u32 = 32;

impl Consumer {
    /// Start where the ring's tail is now; the cached head says "empty" so the
    /// first read loads (and validates) the real head.
    pub(super) fn new(map: &ShmMap, dir: Dir) -> Consumer {
        let tail = map.ctrl(dir).tail.load(Ordering::Relaxed);
        Consumer {
            dir,
            tail,
            published: tail,
            cached_head: tail,
            publish_every: (map.geom.slots / 8).clamp(1, PUBLISH_EVERY_MAX),
        }
    }

    /// Is there an SDU? Reads the producer's head only when the cached view
    /// says empty. A head behind tail or more than `slots` ahead is corrupt.
    pub(super) fn has_data(&mut self, map: &ShmMap) -> Result<bool> {
        if self.cached_head != self.tail {
            return Ok(true);
        }
        let head = map.ctrl(self.dir).head.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        if avail > map.geom.slots {
            return Err(corrupt(self.dir, head, self.tail, map.geom.slots));
        }
        self.cached_head = head;
        Ok(avail != 0)
    }

    /// The SDU at tail, as bytes of the mapping. The length is read once;
    /// one larger than the slot is corrupt.
    pub(super) fn peek<'m>(&self, map: &'m ShmMap) -> Result<SharedBytes<'m>> {
        let len = map.slot_len(self.dir, self.tail).load(Ordering::Relaxed);
        if len > map.geom.slot_size {
            return Err(Error::Invalid(format!(
                "{} ring corrupt: SDU length {len} in slot {} exceeds slot size {}",
                self.dir.name(),
                self.tail & (map.geom.slots - 1),
                map.geom.slot_size
            )));
        }
        Ok(map.slot_data(self.dir, self.tail, len as usize))
    }

    /// Whether at least `free` slots are free, by the producer's head as
    /// it is now (one load). A head out of range counts as a full ring:
    /// the next read reports the corruption.
    pub(super) fn free_at_least(&self, map: &ShmMap, free: u32) -> bool {
        let head = map.ctrl(self.dir).head.load(Ordering::Acquire);
        let used = head.wrapping_sub(self.tail);
        map.geom.slots.saturating_sub(used) >= free
    }

    /// Consume one slot locally (not yet visible to the producer). Starts
    /// fetching a slot further on if it is known to be published (a slot
    /// the producer may still write is left alone: fetching it would only
    /// take its lines away from the producer).
    pub(super) fn advance(&mut self, map: &ShmMap) {
        self.tail = self.tail.wrapping_add(1);
        if self.cached_head.wrapping_sub(self.tail) > PREFETCH_AHEAD {
            map.prefetch_slot(self.dir, self.tail.wrapping_add(PREFETCH_AHEAD), false);
        }
    }

    /// Consume one slot and hand consumed slots back lazily: when the last
    /// SDU known to be there was taken (the ring looks empty: at rest the
    /// shared tail is this tail, which the watchers rely on) or every
    /// `publish_every` slots in a burst. A burst of reads thus makes no
    /// store to the shared line per SDU.
    pub(super) fn advance_lazily(&mut self, map: &ShmMap) {
        self.advance(map);
        if self.tail == self.cached_head
            || self.tail.wrapping_sub(self.published) >= self.publish_every
        {
            self.publish(map);
        }
    }

    /// Hand consumed slots back to the producer (one Release store).
    pub(super) fn publish(&mut self, map: &ShmMap) {
        if self.published != self.tail {
            map.ctrl(self.dir).tail.store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
    }
}
