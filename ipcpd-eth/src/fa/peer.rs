//! Peers: other IPCPs we have flows with, keyed by MAC. Liveness is kept per
//! peer, not per flow: a peer records when it last proved itself alive, and
//! its flows consult that one timestamp, so a keep-alive costs O(1) however
//! many flows share the peer.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::endpoint::Phase;
use crate::wire::{Eid, FlowReqRepr, Mac};

/// A multiset of durations; the smallest is found in O(log n).
#[derive(Debug, Default)]
pub(crate) struct Multiset(BTreeMap<Duration, usize>);

impl Multiset {
    pub(crate) fn insert(&mut self, d: Duration) {
        *self.0.entry(d).or_default() += 1;
    }
    pub(crate) fn remove(&mut self, d: Duration) {
        if let Entry::Occupied(mut e) = self.0.entry(d) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
    pub(crate) fn min(&self) -> Option<Duration> {
        self.0.keys().next().copied()
    }
}

/// A CHALLENGE we sent because a frame claimed the peer restarted.
#[derive(Debug)]
pub(crate) struct Challenge {
    pub(crate) value: u64,
    pub(crate) sent_at: Duration,
    /// The FLOW_REQ (requester eid, request) that claimed a new instance: it
    /// is served at once if the peer confirms the restart.
    pub(crate) held: Option<(Eid, FlowReqRepr)>,
}

/// Another IPCP we have flows with.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) mac: Mac,
    /// Its instance nonce; 0 until a FLOW_REQ / FLOW_REPLY says.
    pub(crate) instance: u64,
    /// Last time the peer proved itself alive (a frame naming a live flow by
    /// both eids, a keep-alive with our nonce, a correct challenge echo).
    pub(crate) last_rx: Duration,
    /// Last time we sent this MAC anything.
    pub(crate) last_tx: Duration,
    /// The challenges of our last two keep-alives (0 = none).
    pub(crate) ka_challenges: [u64; 2],
    /// When the caller last reported this peer's liveness to its flows
    /// ([`FlowAllocator::liveness_report_due`](super::FlowAllocator)).
    pub(crate) reported_at: Option<Duration>,
    /// An outstanding CHALLENGE, if any.
    pub(crate) challenge: Option<Challenge>,
    /// The peer answered something only a host that sees our unicast frames
    /// could: it may use the share of the caps kept for verified hosts.
    pub(crate) verified: bool,
    /// Slots of every flow using this peer (requesting, live or down);
    /// ordered, so walks give the same order every run.
    pub(crate) flows: BTreeSet<u32>,
    /// Timeouts of Up and Unresponsive flows: the keep-alive cadence.
    pub(crate) live_timeouts: Multiset,
    /// Timeouts of Up flows: the next expiry.
    pub(crate) up_timeouts: Multiset,
    /// Unresponsive flows; recovery walks the flows only when this is > 0.
    pub(crate) unresponsive: usize,
}

impl Peer {
    pub(crate) fn new(mac: Mac, now: Duration) -> Peer {
        Peer {
            mac,
            instance: 0,
            last_rx: now,
            last_tx: now,
            ka_challenges: [0; 2],
            reported_at: None,
            challenge: None,
            verified: false,
            flows: BTreeSet::new(),
            live_timeouts: Multiset::default(),
            up_timeouts: Multiset::default(),
            unresponsive: 0,
        }
    }

    /// Add (or remove) a flow in `phase` to the liveness bookkeeping.
    pub(crate) fn account(&mut self, phase: Phase, timeout: Duration, add: bool) {
        if phase.is_live() {
            if add {
                self.live_timeouts.insert(timeout);
            } else {
                self.live_timeouts.remove(timeout);
            }
        }
        match (phase, add) {
            (Phase::Up, true) => self.up_timeouts.insert(timeout),
            (Phase::Up, false) => self.up_timeouts.remove(timeout),
            (Phase::Unresponsive, true) => self.unresponsive += 1,
            (Phase::Unresponsive, false) => self.unresponsive -= 1,
            _ => {}
        }
    }

    pub(crate) fn expiry_at(&self) -> Option<Duration> {
        self.up_timeouts
            .min()
            .map(|t| self.last_rx.saturating_add(t))
    }

    pub(crate) fn keepalive_at(&self, fraction: u32) -> Option<Duration> {
        self.live_timeouts
            .min()
            .map(|t| self.last_tx.saturating_add(t / fraction))
    }

    /// Is `echo` the answer to a challenge we sent (keep-alive or CHALLENGE)?
    pub(crate) fn expects(&self, echo: u64) -> bool {
        echo != 0
            && (self.ka_challenges.contains(&echo)
                || self.challenge.as_ref().is_some_and(|c| c.value == echo))
    }

    /// Forget every outstanding challenge (one answer per challenge).
    pub(crate) fn clear_challenges(&mut self) {
        self.ka_challenges = [0; 2];
        self.challenge = None;
    }
}

/// The peer table: a slab indexed from flows, plus an index by MAC.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    pub(crate) list: Vec<Option<Peer>>,
    free: Vec<usize>,
    pub(crate) by_mac: HashMap<Mac, usize>,
    /// Bumped when a MAC joins or leaves the table.
    pub(crate) generation: u64,
}

impl Peers {
    pub(crate) fn get(&self, p: usize) -> Option<&Peer> {
        self.list.get(p)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, p: usize) -> Option<&mut Peer> {
        self.list.get_mut(p)?.as_mut()
    }

    pub(crate) fn index_of(&self, mac: Mac) -> Option<usize> {
        self.by_mac.get(&mac).copied()
    }

    pub(crate) fn by_mac(&self, mac: Mac) -> Option<&Peer> {
        self.get(self.index_of(mac)?)
    }

    /// The peer record for `mac`, created if needed.
    pub(crate) fn get_or_insert(&mut self, now: Duration, mac: Mac) -> usize {
        if let Some(p) = self.index_of(mac) {
            return p;
        }
        let peer = Peer::new(mac, now);
        let p = match self.free.pop() {
            Some(p) => {
                self.list[p] = Some(peer);
                p
            }
            None => {
                self.list.push(Some(peer));
                self.list.len() - 1
            }
        };
        self.by_mac.insert(mac, p);
        self.generation += 1;
        p
    }

    pub(crate) fn remove(&mut self, p: usize) {
        if let Some(peer) = self.list.get_mut(p).and_then(Option::take) {
            self.by_mac.remove(&peer.mac);
            self.free.push(p);
            self.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn multiset_tracks_the_smallest_with_duplicates() {
        let mut m = Multiset::default();
        for d in [5, 3, 3, 9] {
            m.insert(ms(d));
        }
        m.remove(ms(3));
        assert_eq!(m.min(), Some(ms(3)));
        m.remove(ms(3));
        assert_eq!(m.min(), Some(ms(5)));
        m.remove(ms(42));
        m.remove(ms(5));
        m.remove(ms(9));
        assert_eq!(m.min(), None);
    }

    #[test]
    fn only_outstanding_nonzero_challenges_are_expected() {
        let mut p = Peer::new([2; 6], ms(0));
        assert!(!p.expects(0));
        p.ka_challenges = [7, 8];
        p.challenge = Some(Challenge {
            value: 9,
            sent_at: ms(0),
            held: None,
        });
        assert!(p.expects(7) && p.expects(8) && p.expects(9));
        assert!(!p.expects(10));
        p.clear_challenges();
        assert!(!p.expects(7) && !p.expects(9));
    }
}
