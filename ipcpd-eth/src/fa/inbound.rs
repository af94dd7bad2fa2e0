//! The responder side: FLOW_REQs from peers, irmd's answer, and refusals.
//!
//! A FLOW_REQ costs state (a token irmd holds, then a flow), so each source
//! MAC may hold at most [`Policy::max_pending_per_mac`](super::Policy)
//! pending requests and [`Policy::max_inbound_flows_per_mac`](super::Policy)
//! flows, under global caps of which a share is kept for MACs that proved a
//! live flow with us (a host rotating forged MACs cannot lock those out).
//! The liveness timeout a remote asks for is capped. A request over a pending
//! cap gets no answer (the requester retransmits, so a legitimate burst only
//! waits); one over a flow cap is refused with RESOURCE_LIMIT.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use irm::proto::RefuseReason;

use super::endpoint::{Flow, InboundKey, Phase};
use super::{mgmt_frame, Action, FlowAllocator};
use crate::wire::{Eid, FlowReplyRepr, FlowReqRepr, Frame, Mac, Payload, ReplyCode, WireQos};

/// What we know about a FLOW_REQ that irmd has not answered yet, by token.
#[derive(Debug)]
pub(crate) struct PendingAccept {
    pub(crate) key: InboundKey,
    qos: WireQos,
    max_sdu: u32,
}

/// Whether a FLOW_REQ may take a pending place.
enum Admit {
    Yes,
    /// Over a pending cap (transient: irmd's answers free places).
    Busy,
    /// Over a cap of held flows: refused with RESOURCE_LIMIT.
    Full,
}

/// State of a FLOW_REQ seen from a peer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InboundState {
    /// irmd is deciding (token outstanding): ignore retransmissions.
    Pending,
    /// Accepted into this slot: retransmissions get the same reply.
    Accepted(u32),
}

#[derive(Debug, Default)]
pub(crate) struct Inbound {
    /// Name hashes registered here.
    pub(crate) names: HashSet<[u8; 32]>,
    pub(crate) inbound: HashMap<InboundKey, InboundState>,
    pub(crate) accepts: BTreeMap<u64, PendingAccept>,
    next_token: u64,
    /// Recent refusals, so a retransmitted FLOW_REQ gets the same answer.
    refusals: HashMap<InboundKey, ReplyCode>,
    refusal_order: VecDeque<(Duration, InboundKey)>,
}

impl FlowAllocator {
    pub fn register_name(&mut self, hash: [u8; 32]) {
        self.inb.names.insert(hash);
    }

    pub fn unregister_name(&mut self, hash: [u8; 32]) {
        self.inb.names.remove(&hash);
    }

    /// irmd's answer to `FlowReqArrived`. Ok(flow_id): the flow is Up, the
    /// reply is sent and (local eid, max SDU) returned. Err(reason): a refusal
    /// is sent and None returned (also when the token is unknown or the flow
    /// cannot be created here). `timeout_ms` (irmd's, 0 = the request's
    /// capped one) is trusted: it comes from this host.
    pub fn accept_result(
        &mut self,
        now: Duration,
        token: u64,
        result: Result<u32, RefuseReason>,
        timeout_ms: u64,
    ) -> Option<(Eid, u32)> {
        let pending = self.inb.accepts.remove(&token)?;
        self.inb.inbound.remove(&pending.key);
        let (mac, remote, instance) = pending.key;
        self.budgets.pending -= 1;
        if let Some(host) = self.budgets.get_mut(mac) {
            host.pending -= 1;
        }
        let known = self.peers.by_mac(mac);
        if known.is_some_and(|peer| peer.instance != 0 && peer.instance != instance) {
            // The requester restarted while irmd decided: nobody is left to
            // answer, and recording its old nonce would take the new run's
            // flows down.
            return None;
        }
        let flow_id = match result {
            Ok(flow_id) if !self.ep.by_flow_id.contains_key(&flow_id) => flow_id,
            Ok(_) => {
                self.refuse(now, pending.key, ReplyCode::ResourceLimit);
                return None;
            }
            Err(reason) => {
                self.refuse(now, pending.key, reply_code(reason));
                return None;
            }
        };
        let Some(index) = self.take_slot() else {
            self.refuse(now, pending.key, ReplyCode::ResourceLimit);
            return None;
        };
        let local = self.ep.eid_of(index);
        let p = self.peers.get_or_insert(now, mac);
        self.note_instance(p, instance);
        // The FLOW_REQ was just heard; irmd's turnaround must not count
        // against the new flow's timeout.
        let peer = self.peers.get_mut(p).expect("just inserted");
        peer.last_rx = peer.last_rx.max(now);
        let requested = if timeout_ms == 0 {
            pending.qos.timeout
        } else {
            timeout_ms
        };
        let max_sdu = pending.max_sdu;
        self.ep.slots[index as usize].flow = Some(Flow {
            flow_id,
            local,
            remote,
            peer: None,
            timeout: self.timeout_from_ms(requested),
            max_sdu,
            phase: Phase::Up,
            request: None,
            inbound: Some(pending.key),
            requested_by: Some(mac),
        });
        self.budgets.inbound_flows += 1;
        if let Some(host) = self.budgets.get_mut(mac) {
            host.inbound_flows += 1;
        }
        self.ep.by_flow_id.insert(flow_id, index);
        self.attach(index, p);
        self.inb
            .inbound
            .insert(pending.key, InboundState::Accepted(index));
        let timeout_ms =
            u64::try_from(self.timeout_from_ms(requested).as_millis()).unwrap_or(u64::MAX);
        self.send_flow_reply(now, mac, remote, local, ReplyCode::Ok, timeout_ms);
        Some((local, max_sdu))
    }

    /// Forget every request irmd is deciding on (its later answers find no token).
    pub(super) fn drop_pending_accepts(&mut self) {
        for (_, pending) in std::mem::take(&mut self.inb.accepts) {
            self.inb.inbound.remove(&pending.key);
            self.budgets.pending -= 1;
            if let Some(host) = self.budgets.get_mut(pending.key.0) {
                host.pending -= 1;
            }
        }
    }

    /// The FLOW_REPLY frame we would send `mac` (our instance nonce for it).
    fn flow_reply_frame(
        &mut self,
        mac: Mac,
        dst: Eid,
        src: Eid,
        code: ReplyCode,
        timeout: u64,
    ) -> Frame<'static> {
        let payload = Payload::FlowReply(FlowReplyRepr {
            instance: self.instance_for(mac),
            code,
            max_sdu: self.cfg.max_sdu,
            timeout,
        });
        mgmt_frame(dst, src, payload)
    }

    fn send_flow_reply(
        &mut self,
        now: Duration,
        mac: Mac,
        dst: Eid,
        src: Eid,
        code: ReplyCode,
        timeout: u64,
    ) {
        let frame = self.flow_reply_frame(mac, dst, src, code, timeout);
        self.transmit(now, mac, frame);
    }

    /// A FLOW_REPLY that repeats or refuses: within the reply budget.
    fn reply_flow(
        &mut self,
        now: Duration,
        mac: Mac,
        dst: Eid,
        src: Eid,
        code: ReplyCode,
        timeout: u64,
    ) {
        let frame = self.flow_reply_frame(mac, dst, src, code, timeout);
        self.reply(now, mac, frame);
    }

    pub(super) fn on_flow_req(
        &mut self,
        now: Duration,
        mac: Mac,
        requester: Eid,
        req: &FlowReqRepr,
    ) {
        if requester.is_none() || req.instance == 0 {
            return;
        }
        if let Some(p) = self.peers.index_of(mac) {
            let known = self.peers.get(p).map_or(0, |peer| peer.instance);
            if known != 0 && known != req.instance {
                // A new instance at a peer's MAC: believed only once the
                // peer's MAC answers a challenge; then this request is served.
                self.challenge_peer(now, p, Some((requester, *req)));
                return;
            }
        }
        self.serve_flow_req(now, mac, requester, req);
    }

    /// A FLOW_REQ whose instance is not in doubt.
    pub(super) fn serve_flow_req(
        &mut self,
        now: Duration,
        mac: Mac,
        requester: Eid,
        req: &FlowReqRepr,
    ) {
        let key = (mac, requester, req.instance);
        match self.inb.inbound.get(&key) {
            Some(InboundState::Pending) => return,
            Some(&InboundState::Accepted(index)) => {
                if let Some(f) = self.ep.flow(index) {
                    let (local, timeout) = (f.local, f.timeout.as_millis());
                    let timeout = u64::try_from(timeout).unwrap_or(u64::MAX);
                    self.reply_flow(now, mac, requester, local, ReplyCode::Ok, timeout);
                }
                return;
            }
            None => {}
        }
        if let Some(code) = self.remembered_refusal(now, &key) {
            self.reply_flow(now, mac, requester, Eid::NONE, code, 0);
            return;
        }
        if !self.inb.names.contains(&req.name_hash) {
            self.reply_flow(now, mac, requester, Eid::NONE, ReplyCode::NoSuchName, 0);
            return;
        }
        match self.admit_request(now, mac) {
            Admit::Yes => {}
            // Pending places free up as irmd answers: no reply, so the
            // requester's retransmission (every 100 ms) tries again and a
            // legitimate burst of requests gets through, only later.
            Admit::Busy => {
                self.stats.requests_capped += 1;
                return;
            }
            Admit::Full => {
                self.stats.requests_capped += 1;
                self.refuse(now, key, ReplyCode::ResourceLimit);
                return;
            }
        }
        let mut qos = req.qos;
        let cap = u64::try_from(self.policy.max_remote_timeout.as_millis()).unwrap_or(u64::MAX);
        if qos.timeout > cap {
            qos.timeout = cap;
            self.stats.timeouts_capped += 1;
        }
        let token = self.inb.next_token;
        self.inb.next_token += 1;
        let max_sdu = self.cfg.max_sdu.min(req.max_sdu);
        self.inb
            .accepts
            .insert(token, PendingAccept { key, qos, max_sdu });
        self.inb.inbound.insert(key, InboundState::Pending);
        self.actions.push_back(Action::FlowReqArrived {
            token,
            name_hash: req.name_hash,
            qos: irm::Qos::from(qos),
            max_sdu,
        });
    }

    /// Take one pending place for `mac`, within the per-MAC and global caps.
    fn admit_request(&mut self, now: Duration, mac: Mac) -> Admit {
        let p = &self.policy;
        let verified = self.peers.by_mac(mac).is_some_and(|peer| peer.verified);
        let share = |cap: usize| {
            if verified {
                cap
            } else {
                cap - cap / p.verified_reserve_fraction as usize
            }
        };
        let (max_pending, max_inbound) = (share(p.max_pending), share(p.max_inbound_flows));
        let b = &self.budgets;
        if b.inbound_flows >= max_inbound {
            return Admit::Full;
        }
        if b.pending >= max_pending || b.pending + b.inbound_flows >= max_inbound {
            return Admit::Busy;
        }
        let (per_pending, per_flows) = (p.max_pending_per_mac, p.max_inbound_flows_per_mac);
        let rng = &mut self.rng;
        let Some(host) = self
            .budgets
            .host(now, mac, &self.policy, &mut || rng.next_u64())
        else {
            return Admit::Busy;
        };
        if host.inbound_flows >= per_flows {
            return Admit::Full;
        }
        if host.pending >= per_pending || host.pending + host.inbound_flows >= per_flows {
            return Admit::Busy;
        }
        host.pending += 1;
        self.budgets.pending += 1;
        Admit::Yes
    }

    fn refuse(&mut self, now: Duration, key: InboundKey, code: ReplyCode) {
        let (mac, requester, _) = key;
        self.reply_flow(now, mac, requester, Eid::NONE, code, 0);
        self.prune_refusals(now);
        if self.inb.refusals.len() < self.policy.max_pending {
            self.inb.refusals.insert(key, code);
            self.inb.refusal_order.push_back((now, key));
        }
    }

    fn remembered_refusal(&mut self, now: Duration, key: &InboundKey) -> Option<ReplyCode> {
        self.prune_refusals(now);
        self.inb.refusals.get(key).copied()
    }

    fn prune_refusals(&mut self, now: Duration) {
        while let Some(&(at, key)) = self.inb.refusal_order.front() {
            if now.saturating_sub(at) < self.policy.refusal_memory {
                break;
            }
            self.inb.refusal_order.pop_front();
            self.inb.refusals.remove(&key);
        }
    }
}

fn reply_code(reason: RefuseReason) -> ReplyCode {
    match reason {
        RefuseReason::NoSuchName => ReplyCode::NoSuchName,
        RefuseReason::NoAcceptingProcess => ReplyCode::NoAcceptingProcess,
        RefuseReason::ResourceLimit => ReplyCode::ResourceLimit,
    }
}
