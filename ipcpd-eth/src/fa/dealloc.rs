//! Deallocation: DEALLOC to the peer, retransmitted until a DEALLOC_ACK or
//! UNKNOWN_EID that names both eids answers it.

use std::collections::BTreeMap;
use std::time::Duration;

use irm::proto::DownCause;

use super::endpoint::Phase;
use super::{mgmt_frame, FlowAllocator};
use crate::wire::{Eid, Mac, Payload};

/// A DEALLOC waiting for its acknowledgement.
#[derive(Debug)]
struct DeallocRetx {
    remote: Eid,
    sends: usize,
    next_at: Duration,
}

/// Unacknowledged DEALLOCs by (peer MAC, our freed eid); ordered, so
/// retransmissions due at one instant go out in the same order every run.
#[derive(Debug, Default)]
pub(crate) struct Deallocs(BTreeMap<(Mac, Eid), DeallocRetx>);

impl Deallocs {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    pub(crate) fn deadlines(&self) -> impl Iterator<Item = Duration> + '_ {
        self.0.values().map(|d| d.next_at)
    }
}

impl FlowAllocator {
    /// The local side deallocates (the application dropped the flow or died).
    pub fn dealloc(&mut self, now: Duration, flow_id: u32) {
        let Some(&index) = self.ep.by_flow_id.get(&flow_id) else {
            return;
        };
        let flow = self.ep.flow(index).expect("by_flow_id points at a flow");
        match flow.phase {
            Phase::Up | Phase::Unresponsive => {
                let (local, remote) = (flow.local, flow.remote);
                let mac = self.peer_mac(flow).expect("a live flow has a peer");
                let first_wait = self.policy.dealloc_waits[0];
                self.deallocs.0.insert(
                    (mac, local),
                    DeallocRetx {
                        remote,
                        sends: 1,
                        next_at: now.saturating_add(first_wait),
                    },
                );
                self.transmit(now, mac, mgmt_frame(remote, local, Payload::Dealloc));
            }
            Phase::Resolving => {
                let hash = flow.request.as_ref().map(|r| r.name_hash);
                if let Some(hash) = hash {
                    self.leave_query(index, hash);
                }
            }
            // A late FLOW_REPLY for the freed slot is answered with
            // UNKNOWN_EID, which takes the responder's flow down.
            Phase::Requesting | Phase::Down => {}
        }
        // The generation guards the slot's reuse: freeing it now is safe.
        self.free_flow(index);
    }

    /// Whether a DEALLOC still waits for its acknowledgement.
    pub fn deallocs_pending(&self) -> bool {
        !self.deallocs.0.is_empty()
    }

    /// A DEALLOC from `mac` for (our eid, its eid).
    pub(super) fn on_dealloc(&mut self, now: Duration, mac: Mac, local: Eid, remote: Eid) {
        let ack = mgmt_frame(remote, local, Payload::DeallocAck);
        if let Some(index) = self.match_live(mac, local, remote) {
            self.set_phase(index, Phase::Down, Some(DownCause::PeerDeallocated));
            self.transmit(now, mac, ack);
        } else {
            // Idempotent: a retransmitted DEALLOC gets its ACK too, within
            // the reply budget (it echoes only the eids it carried).
            self.reply(now, mac, ack);
        }
    }

    /// A DEALLOC_ACK or UNKNOWN_EID for (our freed eid, their eid) from `mac`.
    /// Changes nothing else: it proves no live flow.
    pub(super) fn dealloc_answered(&mut self, mac: Mac, local: Eid, remote: Eid) {
        if self
            .deallocs
            .0
            .get(&(mac, local))
            .is_some_and(|d| d.remote == remote)
        {
            self.deallocs.0.remove(&(mac, local));
        }
    }

    pub(super) fn dealloc_timers(&mut self, now: Duration) {
        let due: Vec<(Mac, Eid)> = self
            .deallocs
            .0
            .iter()
            .filter(|(_, d)| d.next_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for (mac, local) in due {
            let waits = &self.policy.dealloc_waits;
            let retx = self
                .deallocs
                .0
                .get_mut(&(mac, local))
                .expect("collected above");
            let remote = retx.remote;
            retx.sends += 1;
            if retx.sends > waits.len() {
                self.deallocs.0.remove(&(mac, local));
            } else {
                retx.next_at = retx.next_at.saturating_add(waits[retx.sends - 1]);
            }
            self.transmit(now, mac, mgmt_frame(remote, local, Payload::Dealloc));
        }
    }
}
