//! Liveness: keep-alives, restart challenges and expiry, per peer.
//!
//! * A peer proves itself alive only with frames an off-path host cannot
//!   make: DATA or DEALLOC/UNKNOWN_EID naming a live flow by both eids, a
//!   FLOW_REPLY naming our requesting eid, a KEEP_ALIVE carrying our current
//!   nonce and the peer's known one, or the echo of a challenge we sent.
//! * A frame claiming the peer has a new instance is not believed by itself:
//!   we send a CHALLENGE (fresh random value) to the peer's MAC, and only an
//!   echo with verdict Different takes the old flows down. Every keep-alive
//!   carries a fresh challenge too, so a restarted peer (which does not know
//!   our flows) answers the first keep-alive it gets with an echo, and the
//!   restart is found one round trip after that keep-alive.
//! * Nothing we send reveals our nonce to a MAC: a keep-alive or challenge
//!   for another instance is answered with the echo and a verdict only.

use std::time::Duration;

use irm::proto::DownCause;

use super::endpoint::Phase;
use super::peer::Challenge;
use super::{mgmt_frame, FlowAllocator};
use crate::wire::{
    ChallengeReplyRepr, ChallengeRepr, Eid, FlowReqRepr, KeepAliveRepr, Mac, Payload, Verdict,
};

impl FlowAllocator {
    /// A frame that proves its sender saw our unicast frames (see
    /// [`Self::heard_proof`]) carried the peer's instance nonce: a new one
    /// means it restarted and every live flow with the old one is gone.
    pub(super) fn note_instance(&mut self, p: usize, instance: u64) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        if instance == 0 || peer.instance == instance {
            return;
        }
        let restarted = peer.instance != 0;
        peer.instance = instance;
        if restarted {
            self.restart_peer(p);
        }
    }

    /// The peer restarted: its live flows are DOWN.
    fn restart_peer(&mut self, p: usize) {
        self.stats.restarts_confirmed += 1;
        if let Some(peer) = self.peers.get_mut(p) {
            peer.clear_challenges();
        }
        for index in self.flows_of(p, |f| f.phase.is_live()) {
            self.set_phase(index, Phase::Down, Some(DownCause::PeerRestarted));
        }
    }

    /// The peer proved itself alive: one timestamp for all its flows (O(1)),
    /// plus recovery of its PEER flows if it has any.
    pub(super) fn heard_proof(&mut self, now: Duration, p: usize) {
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        peer.last_rx = peer.last_rx.max(now);
        peer.verified = true;
        if peer.unresponsive > 0 {
            for index in self.flows_of(p, |f| f.phase == Phase::Unresponsive) {
                self.set_phase(index, Phase::Up, Some(DownCause::Up));
            }
        }
    }

    pub(super) fn on_keepalive(&mut self, now: Duration, mac: Mac, ka: &KeepAliveRepr) {
        if ka.receiver_instance == 0 {
            return; // The sender does not know us: nothing to say.
        }
        if ka.receiver_instance != self.instance_for(mac) {
            // The sender talks to another run of this IPCP (or guesses):
            // prove we saw its frame and say we are someone else, without
            // giving our nonce away.
            let reply = Payload::ChallengeReply(ChallengeReplyRepr {
                echo: ka.challenge,
                verdict: Verdict::Different,
            });
            self.reply(now, mac, mgmt_frame(Eid::NONE, Eid::NONE, reply));
            return;
        }
        let Some(p) = self.peers.index_of(mac) else {
            return;
        };
        let known = self.peers.get(p).map_or(0, |peer| peer.instance);
        if known != 0 && ka.sender_instance != known {
            self.challenge_peer(now, p, None);
            return;
        }
        self.heard_proof(now, p);
    }

    /// Ask the peer's MAC whether it is still the instance we know. At most
    /// one CHALLENGE per [`Policy::challenge_gap`](super::Policy); `held` is
    /// served if the peer confirms a restart.
    pub(super) fn challenge_peer(
        &mut self,
        now: Duration,
        p: usize,
        held: Option<(Eid, FlowReqRepr)>,
    ) {
        let gap = self.policy.challenge_gap;
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        if let Some(c) = peer.challenge.as_mut() {
            if c.held.is_none() {
                c.held = held;
            }
            if now < c.sent_at.saturating_add(gap) {
                return;
            }
        }
        let held = peer.challenge.take().and_then(|c| c.held).or(held);
        let value = self.random_nonzero();
        let peer = self.peers.get_mut(p).expect("checked above");
        peer.challenge = Some(Challenge {
            value,
            sent_at: now,
            held,
        });
        let (mac, believed) = (peer.mac, peer.instance);
        self.stats.challenges_sent += 1;
        let c = Payload::Challenge(ChallengeRepr {
            challenge: value,
            believed_instance: believed,
        });
        self.transmit(now, mac, mgmt_frame(Eid::NONE, Eid::NONE, c));
    }

    pub(super) fn on_challenge(&mut self, now: Duration, mac: Mac, c: &ChallengeRepr) {
        let verdict = if c.believed_instance == self.instance_for(mac) {
            Verdict::Same
        } else {
            Verdict::Different
        };
        let reply = Payload::ChallengeReply(ChallengeReplyRepr {
            echo: c.challenge,
            verdict,
        });
        self.reply(now, mac, mgmt_frame(Eid::NONE, Eid::NONE, reply));
    }

    pub(super) fn on_challenge_reply(&mut self, now: Duration, mac: Mac, r: &ChallengeReplyRepr) {
        let Some(p) = self.peers.index_of(mac) else {
            return;
        };
        let peer = self.peers.get_mut(p).expect("indexed peer");
        if !peer.expects(r.echo) {
            return;
        }
        let held = peer.challenge.take().and_then(|c| c.held);
        peer.clear_challenges();
        match r.verdict {
            // The claim of a new instance was false: drop what it brought.
            Verdict::Same => self.heard_proof(now, p),
            Verdict::Different => {
                if let Some(peer) = self.peers.get_mut(p) {
                    peer.instance = 0;
                }
                self.restart_peer(p);
                if let Some((requester, req)) = held {
                    self.serve_flow_req(now, mac, requester, &req);
                }
            }
        }
    }

    /// Expiry and keep-alive of one peer: O(1) unless flows change state.
    pub(super) fn peer_timers(&mut self, now: Duration, p: usize) {
        let Some(peer) = self.peers.get(p) else {
            return;
        };
        if peer.expiry_at().is_some_and(|t| t <= now) {
            let silent = now.saturating_sub(peer.last_rx);
            let expired = self.flows_of(p, |f| f.phase == Phase::Up && f.timeout <= silent);
            for index in expired {
                self.set_phase(index, Phase::Unresponsive, Some(DownCause::Unresponsive));
            }
        }
        let fraction = self.policy.keepalive_fraction;
        let due = self
            .peers
            .get(p)
            .is_some_and(|peer| peer.keepalive_at(fraction).is_some_and(|t| t <= now));
        if !due {
            return;
        }
        let challenge = self.random_nonzero();
        let mine = self.peers.get(p).map(|peer| self.instance_for(peer.mac));
        let peer = self.peers.get_mut(p).expect("checked above");
        peer.ka_challenges = [challenge, peer.ka_challenges[0]];
        let ka = KeepAliveRepr {
            sender_instance: mine.expect("checked above"),
            receiver_instance: peer.instance,
            challenge,
        };
        let mac = peer.mac;
        self.transmit(
            now,
            mac,
            mgmt_frame(Eid::NONE, Eid::NONE, Payload::KeepAlive(ka)),
        );
    }
}
