//! The requester side: name queries, the directory of answers, FLOW_REQ and
//! its retransmission, and the FLOW_REPLY.
//!
//! Without a key, any host can answer a broadcast NAME_QUERY, so the
//! directory defends what it can: only answers to our own queries are used;
//! an answer from a second MAC is reported ([`Action::NameConflict`]); cached
//! answers expire after [`Policy::name_cache_ttl`](super::Policy) and are
//! asked again, and on that re-query the MAC that answered before is
//! preferred if it still answers within the query's window (a newcomer who
//! answers first does not take over a name in use). A forged NO_SUCH_NAME
//! must name our requesting eid (random generation, sent only to the MAC we
//! asked), so it cannot re-open the race from off-path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use irm::proto::RefuseReason;

use super::endpoint::{Flow, Phase, Request};
use super::{mgmt_frame, Action, FlowAllocator};
use crate::wire::{
    Eid, FlowReplyRepr, FlowReqRepr, Frame, Mac, Payload, ReplyCode, WireQos, BROADCAST,
};

/// A name's answer, as remembered.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) mac: Mac,
    pub(crate) learned_at: Duration,
    pub(crate) reported_at: Option<Duration>,
}

/// A broadcast NAME_QUERY shared by every allocation waiting on the name.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) sends: usize,
    pub(crate) next_at: Duration,
    pub(crate) waiting: Vec<u32>,
    /// The MAC that answered last time (a re-verification): preferred.
    pub(crate) incumbent: Option<Mac>,
    /// The first other MAC that answered while we waited for the incumbent,
    /// and how many queries had gone out then.
    pub(crate) candidate: Option<(Mac, usize)>,
}

/// Requester-side state. Ordered maps: timers fire in the same order every run.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) directory: BTreeMap<[u8; 32], Known>,
    pub(crate) queries: BTreeMap<[u8; 32], Query>,
    /// Slots in the Requesting phase.
    pub(crate) requesting: BTreeSet<u32>,
}

impl FlowAllocator {
    /// irmd asks for a flow to `name_hash`. Returns the local eid at once (the
    /// flow is pending: data from the responder may beat its reply). On a
    /// local failure (no free endpoint, flow id in use) returns `Eid::NONE`
    /// and queues the failed `AllocDone`.
    pub fn alloc(
        &mut self,
        now: Duration,
        flow_id: u32,
        name_hash: [u8; 32],
        qos: irm::Qos,
        timeout_ms: u64,
    ) -> Eid {
        if self.ep.by_flow_id.contains_key(&flow_id) {
            self.alloc_done(
                flow_id,
                Err(irm::Error::Invalid(format!("flow id {flow_id} in use"))),
            );
            return Eid::NONE;
        }
        let Some(index) = self.take_slot() else {
            self.alloc_done(flow_id, Err(irm::Error::NoMem("no free endpoint".into())));
            return Eid::NONE;
        };
        let local = self.ep.eid_of(index);
        let request = Request {
            name_hash,
            qos: WireQos {
                timeout: timeout_ms,
                ..WireQos::from(qos)
            },
            sends: 0,
            next_at: now,
            from_cache: false,
            requeried: false,
        };
        self.ep.slots[index as usize].flow = Some(Flow {
            flow_id,
            local,
            remote: Eid::NONE,
            peer: None,
            timeout: self.timeout_from_ms(timeout_ms),
            max_sdu: self.cfg.max_sdu,
            phase: Phase::Resolving,
            request: Some(Box::new(request)),
            inbound: None,
            requested_by: None,
        });
        self.ep.by_flow_id.insert(flow_id, index);
        let ttl = self.policy.name_cache_ttl;
        match self.req.directory.get(&name_hash) {
            Some(k) if now.saturating_sub(k.learned_at) < ttl => {
                let mac = k.mac;
                self.start_request(now, index, mac, true)
            }
            Some(k) => {
                let incumbent = k.mac;
                self.join_query(now, index, name_hash, Some(incumbent))
            }
            None => self.join_query(now, index, name_hash, None),
        }
        local
    }

    pub(super) fn timeout_from_ms(&self, timeout_ms: u64) -> Duration {
        Duration::from_millis(timeout_ms).max(self.policy.min_timeout)
    }

    fn send_flow_req(&mut self, now: Duration, index: u32) {
        let Some(flow) = self.ep.flow(index) else {
            return;
        };
        let (Some(req), Some(mac)) = (flow.request.as_ref(), self.peer_mac(flow)) else {
            return;
        };
        let payload = Payload::FlowReq(FlowReqRepr {
            instance: self.instance_for(mac),
            name_hash: req.name_hash,
            qos: req.qos,
            max_sdu: self.cfg.max_sdu,
        });
        let local = flow.local;
        self.transmit(now, mac, mgmt_frame(Eid::NONE, local, payload));
    }

    fn send_name_query(&mut self, now: Duration, name_hash: [u8; 32]) {
        self.transmit(
            now,
            BROADCAST,
            mgmt_frame(Eid::NONE, Eid::NONE, Payload::NameQuery { name_hash }),
        );
    }

    fn join_query(
        &mut self,
        now: Duration,
        index: u32,
        name_hash: [u8; 32],
        incumbent: Option<Mac>,
    ) {
        if !self.req.queries.contains_key(&name_hash) {
            self.send_name_query(now, name_hash);
            let query = Query {
                sends: 1,
                next_at: now.saturating_add(self.policy.name_query_waits[0]),
                waiting: Vec::new(),
                incumbent,
                candidate: None,
            };
            self.req.queries.insert(name_hash, query);
        }
        self.req
            .queries
            .get_mut(&name_hash)
            .expect("inserted above")
            .waiting
            .push(index);
    }

    pub(super) fn leave_query(&mut self, index: u32, name_hash: [u8; 32]) {
        if let Some(query) = self.req.queries.get_mut(&name_hash) {
            query.waiting.retain(|&i| i != index);
            if query.waiting.is_empty() {
                self.req.queries.remove(&name_hash);
            }
        }
    }

    /// The name resolved to `mac`: send the FLOW_REQ.
    fn start_request(&mut self, now: Duration, index: u32, mac: Mac, from_cache: bool) {
        let p = self.peers.get_or_insert(now, mac);
        let interval = self.policy.flow_req_interval;
        let flow = self.ep.flow_mut(index).expect("request for a present flow");
        flow.phase = Phase::Requesting;
        if let Some(req) = flow.request.as_mut() {
            req.sends = 1;
            req.next_at = now.saturating_add(interval);
            req.from_cache = from_cache;
        }
        self.attach(index, p);
        self.req.requesting.insert(index);
        self.send_flow_req(now, index);
    }

    pub(super) fn on_name_reply(&mut self, now: Duration, mac: Mac, name_hash: [u8; 32]) {
        let Some(query) = self.req.queries.get_mut(&name_hash) else {
            // Only answers to our own queries are used; a late or unsolicited
            // answer from a MAC other than the known one is reported.
            if let Some(kept) = self.req.directory.get(&name_hash).map(|k| k.mac) {
                if kept != mac {
                    self.name_conflict(now, name_hash, kept, mac);
                }
            }
            return;
        };
        if let Some(incumbent) = query.incumbent.filter(|&i| i != mac) {
            // Re-verifying: the MAC that served the name so far gets one
            // more query, and its wait, before a newcomer is used.
            let sends = query.sends;
            query.candidate.get_or_insert((mac, sends));
            self.name_conflict(now, name_hash, incumbent, mac);
            return;
        }
        self.resolve(now, name_hash, mac);
    }

    fn resolve(&mut self, now: Duration, name_hash: [u8; 32], mac: Mac) {
        let Some(query) = self.req.queries.remove(&name_hash) else {
            return;
        };
        self.learn_name(now, name_hash, mac);
        for index in query.waiting {
            self.start_request(now, index, mac, false);
        }
    }

    fn name_conflict(&mut self, now: Duration, name_hash: [u8; 32], kept: Mac, other: Mac) {
        self.stats.name_conflicts += 1;
        let gap = self.policy.conflict_report_gap;
        let report = match self.req.directory.get_mut(&name_hash) {
            Some(k) => {
                let due = k.reported_at.is_none_or(|t| now >= t.saturating_add(gap));
                if due {
                    k.reported_at = Some(now);
                }
                due
            }
            // Not learned yet: the query itself bounds how often this happens.
            None => true,
        };
        if report {
            self.actions.push_back(Action::NameConflict {
                name_hash,
                kept,
                other,
            });
        }
    }

    pub(super) fn on_flow_reply(
        &mut self,
        now: Duration,
        mac: Mac,
        frame: &Frame<'_>,
        rep: &FlowReplyRepr,
    ) {
        let requesting = self
            .ep
            .flow_at(frame.dst)
            .filter(|f| f.phase == Phase::Requesting && self.peer_mac(f) == Some(mac))
            .map(|f| (f.peer, f.flow_id, f.remote));
        let Some((Some(p), flow_id, pinned)) = requesting else {
            self.stray_flow_reply(now, mac, frame, rep);
            return;
        };
        if rep.code == ReplyCode::Ok && frame.src.is_none() {
            return; // An OK without an endpoint is malformed: keep retrying.
        }
        if rep.code == ReplyCode::Ok && !pinned.is_none() && pinned != frame.src {
            return; // Data already pinned another source eid.
        }
        // The reply names our requesting eid, whose random generation only
        // the MAC we asked has seen: proof enough for its instance, too.
        self.note_instance(p, rep.instance);
        let index = frame.dst.index();
        self.req.requesting.remove(&index);
        let Some(reason) = refuse_reason(rep.code) else {
            let min_timeout = self.policy.min_timeout;
            let flow = self.ep.flow_mut(index).expect("matched above");
            flow.remote = frame.src;
            flow.max_sdu = flow.max_sdu.min(rep.max_sdu);
            if rep.timeout != 0 {
                // The responder capped our timeout: run the flow with its
                // value, or it would expire there while we stay silent.
                let theirs = Duration::from_millis(rep.timeout).max(min_timeout);
                flow.timeout = flow.timeout.min(theirs);
            }
            flow.request = None;
            let max_sdu = flow.max_sdu;
            self.set_phase(index, Phase::Up, None);
            self.heard_proof(now, p);
            self.alloc_done(flow_id, Ok(max_sdu));
            return;
        };
        let req = self
            .ep
            .request(index)
            .expect("a requesting flow has its request");
        let (name_hash, retry) = (req.name_hash, req.from_cache && !req.requeried);
        if reason == RefuseReason::NoSuchName {
            self.forget_name(name_hash, mac);
            if retry {
                // The cached MAC is stale: ask the segment again, once.
                self.detach(index);
                let flow = self.ep.flow_mut(index).expect("matched above");
                flow.phase = Phase::Resolving;
                if let Some(req) = flow.request.as_mut() {
                    req.requeried = true;
                }
                self.join_query(now, index, name_hash, None);
                return;
            }
            self.fail_alloc(index, irm::Error::Name("no such name".into()));
        } else {
            self.fail_alloc(index, irm::Error::Refused(reason.describe().into()));
        }
    }

    /// A FLOW_REPLY that matches no request of ours.
    fn stray_flow_reply(
        &mut self,
        now: Duration,
        mac: Mac,
        frame: &Frame<'_>,
        rep: &FlowReplyRepr,
    ) {
        if rep.code != ReplyCode::Ok || frame.src.is_none() {
            return;
        }
        if self.match_live(mac, frame.dst, frame.src).is_some() {
            return; // A duplicate reply for an established flow.
        }
        // The responder created a flow we no longer want: tell it.
        self.reply(
            now,
            mac,
            mgmt_frame(frame.src, frame.dst, Payload::UnknownEid),
        );
    }

    fn learn_name(&mut self, now: Duration, name_hash: [u8; 32], mac: Mac) {
        let dir = &mut self.req.directory;
        if dir.len() >= self.policy.directory_cap && !dir.contains_key(&name_hash) {
            // Evict the entry learned longest ago (a scan, but only when a new
            // name arrives at a full directory, which our own queries bound).
            if let Some(victim) = dir
                .iter()
                .min_by_key(|(_, k)| k.learned_at)
                .map(|(h, _)| *h)
            {
                dir.remove(&victim);
            }
        }
        let reported_at = dir.get(&name_hash).and_then(|k| k.reported_at);
        dir.insert(
            name_hash,
            Known {
                mac,
                learned_at: now,
                reported_at,
            },
        );
    }

    fn forget_name(&mut self, name_hash: [u8; 32], mac: Mac) {
        if self.req.directory.get(&name_hash).map(|k| k.mac) == Some(mac) {
            self.req.directory.remove(&name_hash);
        }
    }

    pub(super) fn name_query_timers(&mut self, now: Duration) {
        let due: Vec<[u8; 32]> = self
            .req
            .queries
            .iter()
            .filter(|(_, q)| q.next_at <= now)
            .map(|(h, _)| *h)
            .collect();
        for name_hash in due {
            let query = self
                .req
                .queries
                .get_mut(&name_hash)
                .expect("collected above");
            let waits = &self.policy.name_query_waits;
            match query.candidate {
                // The incumbent stayed silent through a whole further query:
                // use the newcomer.
                Some((candidate, at)) if query.sends > at || query.sends >= waits.len() => {
                    self.resolve(now, name_hash, candidate);
                    continue;
                }
                _ => {}
            }
            if query.sends < waits.len() {
                query.next_at = query.next_at.saturating_add(waits[query.sends]);
                query.sends += 1;
                self.send_name_query(now, name_hash);
            } else {
                let query = self
                    .req
                    .queries
                    .remove(&name_hash)
                    .expect("collected above");
                for index in query.waiting {
                    self.fail_alloc(
                        index,
                        irm::Error::Name("no IPCP answered for this name".into()),
                    );
                }
            }
        }
    }

    pub(super) fn flow_req_timers(&mut self, now: Duration) {
        let due: Vec<u32> = self
            .req
            .requesting
            .iter()
            .copied()
            .filter(|&i| self.ep.request(i).is_some_and(|r| r.next_at <= now))
            .collect();
        let (interval, retransmits) = (
            self.policy.flow_req_interval,
            self.policy.flow_req_retransmits,
        );
        for index in due {
            let req = self.ep.request_mut(index).expect("collected above");
            if req.sends <= retransmits {
                req.sends += 1;
                req.next_at = req.next_at.saturating_add(interval);
                self.send_flow_req(now, index);
            } else {
                // The name stopped answering at that MAC: do not trust the cache.
                let name_hash = req.name_hash;
                let flow = self.ep.flow(index).expect("collected above");
                if let Some(mac) = self.peer_mac(flow) {
                    self.forget_name(name_hash, mac);
                }
                self.fail_alloc(index, irm::Error::Ipcp("no flow reply".into()));
            }
        }
    }
}

fn refuse_reason(code: ReplyCode) -> Option<RefuseReason> {
    match code {
        ReplyCode::Ok => None,
        ReplyCode::NoSuchName => Some(RefuseReason::NoSuchName),
        ReplyCode::NoAcceptingProcess => Some(RefuseReason::NoAcceptingProcess),
        ReplyCode::ResourceLimit => Some(RefuseReason::ResourceLimit),
    }
}
