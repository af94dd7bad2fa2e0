//! The endpoint table: slots, their random generations, and the flows in them.

use std::collections::HashMap;
use std::time::Duration;

use crate::wire::{Eid, Mac, WireQos};

/// Where a flow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a NAME_REPLY (the flow is in a query's waiting list).
    Resolving,
    /// FLOW_REQ sent, waiting for the FLOW_REPLY.
    Requesting,
    Up,
    /// Nothing heard from the peer for the flow's timeout (PEER).
    Unresponsive,
    /// Gone for good; the slot is kept until the local side deallocates.
    Down,
}

impl Phase {
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Phase::Up | Phase::Unresponsive)
    }
}

/// An allocation this IPCP started and that is not answered yet.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) name_hash: [u8; 32],
    pub(crate) qos: WireQos,
    /// FLOW_REQs sent so far.
    pub(crate) sends: u32,
    pub(crate) next_at: Duration,
    /// The peer MAC came from the directory cache, not a fresh NAME_REPLY.
    pub(crate) from_cache: bool,
    /// Already re-queried once after a cached MAC said NO_SUCH_NAME.
    pub(crate) requeried: bool,
}

/// Requester MAC, requester eid, requester instance: identifies a FLOW_REQ
/// and its retransmissions.
pub(crate) type InboundKey = (Mac, Eid, u64);

#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) flow_id: u32,
    pub(crate) local: Eid,
    /// The peer's eid; NONE until the FLOW_REPLY (or the first DATA, which
    /// then pins it).
    pub(crate) remote: Eid,
    /// Index into the peer table; None while the name is being resolved.
    pub(crate) peer: Option<usize>,
    pub(crate) timeout: Duration,
    pub(crate) max_sdu: u32,
    pub(crate) phase: Phase,
    /// Some while Resolving or Requesting.
    pub(crate) request: Option<Box<Request>>,
    /// For a flow accepted here: the FLOW_REQ it answers (for duplicates).
    pub(crate) inbound: Option<InboundKey>,
    /// For a flow accepted here: the requester's MAC (its budget counts it).
    pub(crate) requested_by: Option<Mac>,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) generation: u64,
    pub(crate) flow: Option<Flow>,
}

/// Slots, the free list, and the flow-id index.
///
/// A slot's generation is drawn at random (40 bits, never 0, never the slot's
/// previous one) each time it is taken, and a free slot is taken at random
/// from the free list: an eid tells nothing about the next one.
#[derive(Debug)]
pub(crate) struct Endpoints {
    pub(crate) slots: Vec<Slot>,
    pub(crate) limit: usize,
    free: Vec<u32>,
    pub(crate) by_flow_id: HashMap<u32, u32>,
}

impl Endpoints {
    pub(crate) fn new(limit: usize) -> Endpoints {
        Endpoints {
            slots: Vec::new(),
            limit,
            free: Vec::new(),
            by_flow_id: HashMap::new(),
        }
    }

    /// Take a free slot and give it a fresh random generation.
    pub(crate) fn take(&mut self, rng: &mut dyn FnMut() -> u64) -> Option<u32> {
        let index = if !self.free.is_empty() {
            let at = (rng() % self.free.len() as u64) as usize;
            self.free.swap_remove(at)
        } else if self.slots.len() < self.limit {
            self.slots.push(Slot {
                generation: 0,
                flow: None,
            });
            (self.slots.len() - 1) as u32
        } else {
            return None;
        };
        let slot = &mut self.slots[index as usize];
        let old = slot.generation;
        slot.generation = loop {
            let g = rng() & Eid::MAX_GENERATION;
            if g != 0 && g != old {
                break g;
            }
        };
        Some(index)
    }

    pub(crate) fn release(&mut self, index: u32) {
        self.free.push(index);
    }

    pub(crate) fn eid_of(&self, index: u32) -> Eid {
        Eid::new(index, self.slots[index as usize].generation)
    }

    /// The flow an eid names, if index and generation both match.
    pub(crate) fn flow_at(&self, eid: Eid) -> Option<&Flow> {
        if eid.is_none() {
            return None;
        }
        let slot = self.slots.get(eid.index() as usize)?;
        if slot.generation != eid.generation() {
            return None;
        }
        slot.flow.as_ref()
    }

    pub(crate) fn flow(&self, index: u32) -> Option<&Flow> {
        self.slots.get(index as usize)?.flow.as_ref()
    }

    pub(crate) fn flow_mut(&mut self, index: u32) -> Option<&mut Flow> {
        self.slots.get_mut(index as usize)?.flow.as_mut()
    }

    pub(crate) fn request(&self, index: u32) -> Option<&Request> {
        self.flow(index)?.request.as_deref()
    }

    pub(crate) fn request_mut(&mut self, index: u32) -> Option<&mut Request> {
        self.flow_mut(index)?.request.as_deref_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_random_nonzero_and_change_on_reuse() {
        let mut e = Endpoints::new(4);
        // A source that first offers 0 and the old generation: both skipped.
        let mut seq = vec![5u64, 0, 5, 9, 3, 0].into_iter();
        let mut rng = move || seq.next().unwrap_or(1);
        let a = e.take(&mut rng).unwrap();
        assert_eq!(e.eid_of(a).generation(), 5);
        e.release(a);
        let again = e.take(&mut rng).unwrap();
        assert_eq!(again, a);
        assert_eq!(e.eid_of(a).generation(), 9, "0 and the old 5 are skipped");
    }

    #[test]
    fn free_slots_are_taken_at_random_not_in_order() {
        let mut e = Endpoints::new(8);
        let mut n = 0u64;
        let mut counter = move || {
            n += 1;
            n
        };
        let taken: Vec<u32> = (0..8).map(|_| e.take(&mut counter).unwrap()).collect();
        assert!(e.take(&mut counter).is_none(), "table full");
        for &i in &taken {
            e.release(i);
        }
        let mut pick = {
            let mut v = [6u64, 1, 1, 1].into_iter();
            move || v.next().unwrap_or(7)
        };
        assert_eq!(e.take(&mut pick), Some(6));
    }
}
