//! The flow allocator: name resolution, flow set-up and tear-down, and flow
//! liveness, as a sans-IO state machine (quinn-proto is the model).
//!
//! It reads no clock, draws no randomness of its own and does no IO. Every
//! method takes `now`, the time since an epoch the caller chose; randomness
//! comes from the [`Entropy`] given at construction (the OS source in the
//! daemon, a seeded one in tests); effects are queued as [`Action`]s the
//! caller drains with [`FlowAllocator::poll_action`]. The caller arms one
//! timer at [`FlowAllocator::poll_timeout`] and calls
//! [`FlowAllocator::handle_timeout`] when it fires. Tests drive it in virtual
//! time, so a ten-year timeout is checked in microseconds.
//!
//! The parts, one sub-struct each:
//! * [`endpoint`]: slots with random generations, taken in random order;
//! * [`peer`]: per-peer liveness (one timestamp for all of a peer's flows);
//! * [`budget`]: per-MAC and global budgets for every management frame type,
//!   for replies, pending requests and inbound flows;
//! * [`request`]: the requester side (name queries, the directory, FLOW_REQ);
//! * [`inbound`]: the responder side (FLOW_REQ, irmd's answer, refusals);
//! * [`dealloc`]: DEALLOC and its retransmission;
//! * [`liveness`]: keep-alives, restart challenges, expiry;
//! * [`policy`]: every tunable, with the rules between them.
//!
//! Without a layer key, a host on the segment can forge any frame. What keeps
//! it out: identifiers it cannot see are random (eid generations, instance
//! nonces, challenges) and never sent to a MAC that did not already know
//! them; a claimed restart is believed only after the peer's MAC echoes a
//! fresh challenge; only frames naming a live flow by both eids, keep-alives
//! carrying our nonce and correct echoes refresh liveness; every kind of
//! frame and every reply is budgeted per MAC and in total (`docs/security.md`).

mod budget;
mod dealloc;
mod endpoint;
mod inbound;
mod liveness;
mod peer;
pub mod policy;
mod request;

use std::collections::VecDeque;
use std::time::Duration;

use irm::proto::DownCause;

use self::budget::Budgets;
use self::dealloc::Deallocs;
use self::endpoint::{Endpoints, Flow, Phase};
use self::inbound::Inbound;
use self::peer::Peers;
pub use self::policy::{Policy, PolicyError, Rate};
use self::request::Requests;
use crate::wire::{Eid, Frame, Mac, Payload};

/// Static settings of one IPCP run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Random nonce drawn at each IPCP start; 0 is reserved for "unknown"
    /// (0 here draws one from the entropy source).
    pub instance: u64,
    /// Largest SDU this IPCP can carry (MTU minus the ethflow header).
    pub max_sdu: u32,
}

/// Where the allocator's randomness comes from.
pub trait Entropy: Send {
    fn next_u64(&mut self) -> u64;
}

/// The operating system's random source (getrandom).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&mut self) -> u64 {
        use rand::RngCore;
        rand::rngs::OsRng.next_u64()
    }
}

impl<F: FnMut() -> u64 + Send> Entropy for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// What the caller must do; drained with [`FlowAllocator::poll_action`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this ethflow frame (bytes after the Ethernet header) to dst.
    Transmit { dst: Mac, frame: Vec<u8> },
    /// Outcome of alloc(): Ok(max_sdu) or the error.
    AllocDone {
        flow_id: u32,
        result: Result<u32, irm::Error>,
    },
    /// A peer asks for a flow to a name registered here: the caller asks irmd,
    /// then calls [`FlowAllocator::accept_result`]. `max_sdu` is the flow's
    /// (the smaller of the requester's and ours); `qos.timeout` is already
    /// capped by [`Policy::max_remote_timeout`].
    FlowReqArrived {
        token: u64,
        name_hash: [u8; 32],
        qos: irm::Qos,
        max_sdu: u32,
    },
    /// Liveness change of an established flow: Unresponsive (→ PEER),
    /// PeerDeallocated / UnknownEndpoint / PeerRestarted / LinkDown (→ DOWN),
    /// Up (PEER → back up).
    FlowState { flow_id: u32, cause: DownCause },
    /// Two MACs answered for one name (reported at most once per name per
    /// [`Policy::conflict_report_gap`]). `kept` is the MAC in use.
    NameConflict {
        name_hash: [u8; 32],
        kept: Mac,
        other: Mac,
    },
}

/// Counters of the allocator's defensive work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Flow records visited (the cost of walks; a keep-alive adds none).
    pub flow_visits: u64,
    /// Management frames dropped for want of budget.
    pub budget_drops: u64,
    /// Replies not sent for want of budget.
    pub replies_suppressed: u64,
    /// CHALLENGEs sent.
    pub challenges_sent: u64,
    /// Peer restarts believed (after a correct echo).
    pub restarts_confirmed: u64,
    /// FLOW_REQs refused for a per-MAC or global cap.
    pub requests_capped: u64,
    /// Remote timeouts lowered to the cap.
    pub timeouts_capped: u64,
    /// NAME_REPLYs from a second MAC for one name.
    pub name_conflicts: u64,
}

impl Stats {
    /// The counters by name, in a fixed order (for `irm ipcp list`).
    pub fn named(&self) -> Vec<(String, u64)> {
        [
            ("fa_budget_drops", self.budget_drops),
            ("fa_replies_suppressed", self.replies_suppressed),
            ("fa_challenges_sent", self.challenges_sent),
            ("fa_restarts_confirmed", self.restarts_confirmed),
            ("fa_requests_capped", self.requests_capped),
            ("fa_timeouts_capped", self.timeouts_capped),
            ("fa_name_conflicts", self.name_conflicts),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The flow allocator of one IPCP. See the module documentation.
pub struct FlowAllocator {
    cfg: Config,
    /// This run's secret: the instance nonce shown to a MAC is derived from
    /// it and the MAC ([`FlowAllocator::instance_for`]).
    secret: [u8; 32],
    policy: Policy,
    rng: Box<dyn Entropy>,
    ep: Endpoints,
    peers: Peers,
    budgets: Budgets,
    req: Requests,
    inb: Inbound,
    deallocs: Deallocs,
    stats: Stats,
    actions: VecDeque<Action>,
}

impl std::fmt::Debug for FlowAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowAllocator")
            .field("cfg", &self.cfg)
            .field("flows", &self.ep.by_flow_id.len())
            .field("peers", &self.peers.by_mac.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FlowAllocator {
    /// An allocator with the default policy and the OS random source.
    pub fn new(cfg: Config) -> Self {
        Self::with(cfg, Policy::default(), Box::new(OsEntropy))
            .expect("the default policy is valid")
    }

    /// An allocator with `policy` (checked) and randomness from `rng`.
    pub fn with(
        cfg: Config,
        policy: Policy,
        mut rng: Box<dyn Entropy>,
    ) -> Result<Self, PolicyError> {
        policy.validate()?;
        let mut instance = cfg.instance;
        // 0 means "unknown instance" on the wire; never claim it.
        while instance == 0 {
            instance = rng.next_u64();
        }
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&instance.to_be_bytes());
        for chunk in secret[8..].chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
        Ok(FlowAllocator {
            cfg: Config { instance, ..cfg },
            secret,
            ep: Endpoints::new(policy.max_slots),
            budgets: Budgets::new(&policy),
            policy,
            rng,
            peers: Peers::default(),
            req: Requests::default(),
            inb: Inbound::default(),
            deallocs: Deallocs::default(),
            stats: Stats::default(),
            actions: VecDeque::new(),
        })
    }

    /// This run's instance nonce as shown to `mac`: a keyed hash of the
    /// run's secret and the MAC, never 0. Each peer learns only its own, so
    /// a host that got a flow accepted (and so our nonce for its MAC) learns
    /// nothing it could use towards another peer; a restart changes them all.
    pub fn instance_for(&self, mac: Mac) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"ethflow instance v2");
        h.update(self.secret);
        h.update(mac);
        let d = h.finalize();
        let v = u64::from_be_bytes(d[..8].try_into().expect("32-byte digest"));
        v.max(1)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn stats(&self) -> Stats {
        Stats {
            budget_drops: self.budgets.dropped,
            replies_suppressed: self.budgets.replies_suppressed,
            ..self.stats
        }
    }

    /// The MTU changed: new flows use this maximum SDU.
    pub fn set_max_sdu(&mut self, max_sdu: u32) {
        self.cfg.max_sdu = max_sdu;
    }

    /// A management frame (any type but Data) arrived from `src_mac`. A Data
    /// frame passed here goes to [`Self::data_rx`].
    pub fn handle_frame(&mut self, now: Duration, src_mac: Mac, frame: &Frame<'_>) {
        if let Payload::Data(_) = frame.payload {
            self.data_rx(now, src_mac, frame.dst, frame.src);
            return;
        }
        // A peer's keep-alives skip the budget: a flood of keep-alives from
        // other MACs (random or spoofed ones) must not starve its liveness.
        let peer_keepalive = matches!(frame.payload, Payload::KeepAlive(_))
            && self.peers.index_of(src_mac).is_some();
        let rng = &mut self.rng;
        if !peer_keepalive
            && !self
                .budgets
                .admit_rx(now, src_mac, frame.frame_type(), &self.policy, &mut || {
                    rng.next_u64()
                })
        {
            return;
        }
        match frame.payload {
            Payload::Data(_) => {}
            Payload::NameQuery { name_hash } => {
                if self.inb.names.contains(&name_hash) {
                    let reply = mgmt_frame(Eid::NONE, Eid::NONE, Payload::NameReply { name_hash });
                    self.reply(now, src_mac, reply);
                }
            }
            Payload::NameReply { name_hash } => self.on_name_reply(now, src_mac, name_hash),
            Payload::FlowReq(req) => self.on_flow_req(now, src_mac, frame.src, &req),
            Payload::FlowReply(rep) => self.on_flow_reply(now, src_mac, frame, &rep),
            Payload::Dealloc => self.on_dealloc(now, src_mac, frame.dst, frame.src),
            Payload::DeallocAck => self.dealloc_answered(src_mac, frame.dst, frame.src),
            Payload::KeepAlive(ka) => self.on_keepalive(now, src_mac, &ka),
            Payload::UnknownEid => {
                if let Some(index) = self.match_live(src_mac, frame.dst, frame.src) {
                    self.set_phase(index, Phase::Down, Some(DownCause::UnknownEndpoint));
                }
                self.dealloc_answered(src_mac, frame.dst, frame.src);
            }
            Payload::Challenge(c) => self.on_challenge(now, src_mac, &c),
            Payload::ChallengeReply(r) => self.on_challenge_reply(now, src_mac, &r),
        }
    }

    /// Data fast path: the flow id if (dst index, generation, peer MAC, remote
    /// eid) match a live or pending flow; that proves the peer alive.
    /// Otherwise queues a rate-limited UNKNOWN_EID (echoing only the eids the
    /// frame carried) and returns None.
    pub fn data_rx(&mut self, now: Duration, src_mac: Mac, dst: Eid, src: Eid) -> Option<u32> {
        if let Some((flow_id, p)) = self.match_data(src_mac, dst, src) {
            self.heard_proof(now, p);
            return Some(flow_id);
        }
        if !src.is_none() {
            self.reply(now, src_mac, mgmt_frame(src, dst, Payload::UnknownEid));
        }
        None
    }

    /// Data fast path for sending: (peer MAC, remote eid, local eid) of an
    /// established Up-or-Peer flow. Counts as traffic to that peer, so no
    /// keep-alive is needed while data flows.
    pub fn data_tx(&mut self, now: Duration, flow_id: u32) -> Option<(Mac, Eid, Eid)> {
        let index = *self.ep.by_flow_id.get(&flow_id)?;
        let flow = self.ep.flow(index)?;
        if !flow.phase.is_live() {
            return None;
        }
        let (remote, local) = (flow.remote, flow.local);
        let peer = self.peers.get_mut(flow.peer?)?;
        peer.last_tx = peer.last_tx.max(now);
        Some((peer.mac, remote, local))
    }

    /// The route of an established Up-or-Peer flow, as [`Self::data_tx`]
    /// gives it, without counting it as traffic: what a worker thread that
    /// carries the flow's data needs to match received frames and build
    /// frames to send.
    pub fn data_route(&self, flow_id: u32) -> Option<(Mac, Eid, Eid)> {
        let flow = self.ep.flow(*self.ep.by_flow_id.get(&flow_id)?)?;
        if !flow.phase.is_live() || flow.remote.is_none() {
            return None;
        }
        Some((self.peers.get(flow.peer?)?.mac, flow.remote, flow.local))
    }

    /// A worker thread matched data of this flow against its route (peer
    /// MAC, both eids: the proof [`Self::data_rx`] asks for) at `at`: the
    /// same liveness news as `data_rx`.
    pub fn data_heard(&mut self, at: Duration, flow_id: u32) {
        let Some(p) = self
            .ep
            .by_flow_id
            .get(&flow_id)
            .and_then(|&i| self.ep.flow(i))
            .filter(|f| f.phase.is_live())
            .and_then(|f| f.peer)
        else {
            return;
        };
        self.heard_proof(at, p);
    }

    /// A worker thread sent data of this flow at `at` (as [`Self::data_tx`]
    /// counts it: no keep-alive is needed meanwhile).
    pub fn data_sent(&mut self, at: Duration, flow_id: u32) {
        let _ = self.data_tx(at, flow_id);
    }

    /// Carrier lost: every established flow goes DOWN (LinkDown), pending
    /// allocations fail, and nothing more is retransmitted.
    pub fn link_down(&mut self, _now: Duration) {
        for index in 0..self.ep.slots.len() as u32 {
            let Some(flow) = self.ep.flow(index) else {
                continue;
            };
            self.stats.flow_visits += 1;
            match flow.phase {
                Phase::Up | Phase::Unresponsive => {
                    self.set_phase(index, Phase::Down, Some(DownCause::LinkDown))
                }
                Phase::Resolving | Phase::Requesting => {
                    self.fail_alloc(index, irm::Error::Ipcp("link down".into()))
                }
                Phase::Down => {}
            }
        }
        self.req.queries.clear();
        self.deallocs.clear();
        self.drop_pending_accepts();
    }

    /// The earliest deadline (absolute), if any. O(peers + pending).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let fraction = self.policy.keepalive_fraction;
        self.req
            .queries
            .values()
            .map(|q| q.next_at)
            .chain(
                self.req
                    .requesting
                    .iter()
                    .filter_map(|&i| self.ep.request(i).map(|r| r.next_at)),
            )
            .chain(self.deallocs.deadlines())
            .chain(self.peers.list.iter().flatten().flat_map(|peer| {
                peer.expiry_at()
                    .into_iter()
                    .chain(peer.keepalive_at(fraction))
            }))
            .min()
    }

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.name_query_timers(now);
        self.flow_req_timers(now);
        self.dealloc_timers(now);
        for p in 0..self.peers.list.len() {
            self.peer_timers(now, p);
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Flows held, in any phase (pending, live, or DOWN and not yet freed).
    pub fn flow_count(&self) -> usize {
        self.ep.by_flow_id.len()
    }

    /// FLOW_REQs waiting for irmd's answer.
    pub fn pending_count(&self) -> usize {
        self.inb.accepts.len()
    }

    /// Flows a remote host asked for, held here (from `mac`, or in all).
    pub fn inbound_count(&self, mac: Option<Mac>) -> usize {
        match mac {
            Some(mac) => self
                .budgets
                .get(mac)
                .map_or(0, |h| h.inbound_flows as usize),
            None => self.budgets.inbound_flows,
        }
    }

    /// Flow ids of every flow with the peer at `mac`, in any phase, in slot order.
    pub fn flows_of_peer(&self, mac: Mac) -> Vec<u32> {
        let Some(peer) = self.peers.by_mac(mac) else {
            return Vec::new();
        };
        peer.flows
            .iter()
            .filter_map(|&i| self.ep.flow(i).map(|f| f.flow_id))
            .collect()
    }

    /// When the flow's peer last proved itself alive (None if it has no peer yet).
    pub fn last_heard(&self, flow_id: u32) -> Option<Duration> {
        let index = *self.ep.by_flow_id.get(&flow_id)?;
        let flow = self.ep.flow(index)?;
        Some(self.peers.get(flow.peer?)?.last_rx)
    }

    /// Should the caller tell the flows of the peer at `mac` that it was
    /// heard from (a walk over them)? True if the peer proved itself alive at
    /// `now` and the last such report is at least `gap` old; then it counts
    /// as reported. Frames that prove nothing never make it true, so the walk
    /// happens at most once per `gap` per peer, whatever arrives.
    pub fn liveness_report_due(&mut self, mac: Mac, now: Duration, gap: Duration) -> bool {
        let Some(p) = self.peers.index_of(mac) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(p) else {
            return false;
        };
        let due = peer.last_rx == now
            && peer
                .reported_at
                .is_none_or(|at| now >= at.saturating_add(gap));
        if due {
            peer.reported_at = Some(now);
        }
        due
    }

    /// Source MACs holding budgets (bounded by [`Policy::mac_table_cap`]).
    pub fn mac_table_len(&self) -> usize {
        self.budgets.len()
    }

    /// Bumped whenever a peer (a MAC this IPCP has flows with) comes or goes:
    /// the caller compares it to decide when to refresh [`Self::peer_macs`].
    pub fn peers_generation(&self) -> u64 {
        self.peers.generation
    }

    /// The MACs this IPCP has flows (or requests) with.
    pub fn peer_macs(&self) -> Vec<Mac> {
        self.peers.by_mac.keys().copied().collect()
    }

    /// When the peer at `mac` last proved itself alive (None if not a peer). O(1).
    pub fn peer_last_heard(&self, mac: Mac) -> Option<Duration> {
        Some(self.peers.by_mac(mac)?.last_rx)
    }

    // ---- shared helpers ----

    /// A random value that is never 0 (0 means "none" on the wire).
    fn random_nonzero(&mut self) -> u64 {
        loop {
            let v = self.rng.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    fn take_slot(&mut self) -> Option<u32> {
        let rng = &mut self.rng;
        self.ep.take(&mut || rng.next_u64())
    }

    fn free_flow(&mut self, index: u32) {
        self.detach(index);
        let Some(flow) = self.ep.slots[index as usize].flow.take() else {
            return;
        };
        if self.ep.by_flow_id.get(&flow.flow_id) == Some(&index) {
            self.ep.by_flow_id.remove(&flow.flow_id);
        }
        if let Some(key) = flow.inbound {
            self.inb.inbound.remove(&key);
        }
        if let Some(mac) = flow.requested_by {
            self.budgets.inbound_flows -= 1;
            if let Some(host) = self.budgets.get_mut(mac) {
                host.inbound_flows -= 1;
            }
        }
        self.req.requesting.remove(&index);
        self.ep.release(index);
    }

    /// The live (Up or Unresponsive) flow named by a frame's (dst, src) from `mac`.
    fn match_live(&self, mac: Mac, local: Eid, remote: Eid) -> Option<u32> {
        let flow = self.ep.flow_at(local)?;
        (flow.phase.is_live() && flow.remote == remote && self.peer_mac(flow) == Some(mac))
            .then_some(local.index())
    }

    /// The data-accepting flow for (dst, src) from `mac`: (flow id, peer).
    /// During set-up (Requesting) the first DATA pins the source eid; later
    /// frames and the FLOW_REPLY must name the same one.
    fn match_data(&mut self, mac: Mac, dst: Eid, src: Eid) -> Option<(u32, usize)> {
        let flow = self.ep.flow_at(dst)?;
        let p = flow.peer?;
        if self.peers.get(p)?.mac != mac || src.is_none() {
            return None;
        }
        let ok = match flow.phase {
            // The responder may send data before its FLOW_REPLY arrives; the
            // destination eid (random generation, sent only to the peer)
            // proves the sender saw our FLOW_REQ.
            Phase::Requesting => flow.remote.is_none() || flow.remote == src,
            Phase::Up | Phase::Unresponsive => flow.remote == src,
            Phase::Resolving | Phase::Down => false,
        };
        if !ok {
            return None;
        }
        let flow_id = flow.flow_id;
        let flow = self.ep.flow_mut(dst.index())?;
        if flow.remote.is_none() {
            flow.remote = src;
        }
        Some((flow_id, p))
    }

    /// Move a flow to `to`, keep its peer's bookkeeping right, and tell the
    /// caller with `cause` if given.
    fn set_phase(&mut self, index: u32, to: Phase, cause: Option<DownCause>) {
        let Some(flow) = self.ep.flow_mut(index) else {
            return;
        };
        let from = flow.phase;
        if from == to {
            return;
        }
        if let Some(peer) = flow.peer.and_then(|p| self.peers.get_mut(p)) {
            peer.account(from, flow.timeout, false);
            peer.account(to, flow.timeout, true);
        }
        flow.phase = to;
        let flow_id = flow.flow_id;
        if to == Phase::Down {
            // A retransmitted FLOW_REQ must not get the reply of a dead flow.
            if let Some(key) = flow.inbound.take() {
                self.inb.inbound.remove(&key);
            }
        }
        if let Some(cause) = cause {
            self.actions.push_back(Action::FlowState { flow_id, cause });
        }
    }

    fn alloc_done(&mut self, flow_id: u32, result: Result<u32, irm::Error>) {
        self.actions
            .push_back(Action::AllocDone { flow_id, result });
    }

    fn fail_alloc(&mut self, index: u32, error: irm::Error) {
        let Some(flow_id) = self.ep.flow(index).map(|f| f.flow_id) else {
            return;
        };
        self.free_flow(index);
        self.alloc_done(flow_id, Err(error));
    }

    fn peer_mac(&self, flow: &Flow) -> Option<Mac> {
        Some(self.peers.get(flow.peer?)?.mac)
    }

    fn attach(&mut self, index: u32, p: usize) {
        let flow = self.ep.flow_mut(index).expect("attach a present flow");
        let peer = self.peers.get_mut(p).expect("attach to a live peer");
        flow.peer = Some(p);
        peer.flows.insert(index);
        peer.account(flow.phase, flow.timeout, true);
    }

    /// Take a flow off its peer; a peer without flows is forgotten.
    fn detach(&mut self, index: u32) {
        let Some(flow) = self.ep.flow_mut(index) else {
            return;
        };
        let Some(p) = flow.peer.take() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        peer.account(flow.phase, flow.timeout, false);
        peer.flows.remove(&index);
        if peer.flows.is_empty() {
            self.peers.remove(p);
        }
    }

    /// Flows of peer `p` that satisfy `pred`, in slot order.
    fn flows_of(&mut self, p: usize, pred: impl Fn(&Flow) -> bool) -> Vec<u32> {
        let Some(peer) = self.peers.get(p) else {
            return Vec::new();
        };
        self.stats.flow_visits += peer.flows.len() as u64;
        peer.flows
            .iter()
            .copied()
            .filter(|&i| self.ep.flow(i).is_some_and(&pred))
            .collect()
    }

    // ---- sending ----

    fn transmit(&mut self, now: Duration, dst: Mac, frame: Frame<'_>) {
        if let Some(p) = self.peers.index_of(dst) {
            if let Some(peer) = self.peers.get_mut(p) {
                peer.last_tx = peer.last_tx.max(now);
            }
        }
        self.actions.push_back(Action::Transmit {
            dst,
            frame: frame.to_vec(),
        });
    }

    /// Send an answer a remote frame provoked, within the reply budgets.
    fn reply(&mut self, now: Duration, dst: Mac, frame: Frame<'_>) {
        let rng = &mut self.rng;
        if self
            .budgets
            .admit_reply(now, dst, &self.policy, &mut || rng.next_u64())
        {
            self.transmit(now, dst, frame);
        }
    }
}

fn mgmt_frame(dst: Eid, src: Eid, payload: Payload<'static>) -> Frame<'static> {
    Frame { dst, src, payload }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> Box<dyn Entropy> {
        let mut n = 0u64;
        Box::new(move || {
            n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
            n
        })
    }

    fn fa() -> FlowAllocator {
        FlowAllocator::with(
            Config {
                instance: 7,
                max_sdu: 1480,
            },
            Policy::default(),
            counter(),
        )
        .unwrap()
    }

    #[test]
    fn zero_instance_is_never_claimed() {
        let fa = FlowAllocator::with(
            Config {
                instance: 0,
                max_sdu: 1,
            },
            Policy::default(),
            Box::new({
                let mut v = [0u64, 0, 42].into_iter();
                move || v.next().unwrap_or(1)
            }),
        )
        .unwrap();
        assert_eq!(fa.cfg.instance, 42);
        assert_ne!(fa.instance_for([2; 6]), fa.instance_for([3; 6]));
        assert_ne!(fa.instance_for([2; 6]), 0);
    }

    #[test]
    fn an_invalid_policy_is_refused() {
        let bad = Policy {
            refusal_memory: Duration::from_secs(2),
            ..Policy::default()
        };
        assert!(FlowAllocator::with(
            Config {
                instance: 1,
                max_sdu: 1
            },
            bad,
            counter()
        )
        .is_err());
    }

    #[test]
    fn out_of_endpoints_fails_the_allocation_at_once() {
        let mut fa = fa();
        fa.ep.limit = 1;
        assert!(!fa
            .alloc(Duration::ZERO, 8, [1; 32], irm::Qos::raw(), 1000)
            .is_none());
        while fa.poll_action().is_some() {}
        let eid = fa.alloc(Duration::ZERO, 9, [1; 32], irm::Qos::raw(), 1000);
        assert!(eid.is_none());
        assert_eq!(
            fa.poll_action(),
            Some(Action::AllocDone {
                flow_id: 9,
                result: Err(irm::Error::NoMem("no free endpoint".into()))
            })
        );
    }

    #[test]
    fn flow_id_in_use_is_refused() {
        let mut fa = fa();
        assert!(!fa
            .alloc(Duration::ZERO, 9, [1; 32], irm::Qos::raw(), 1000)
            .is_none());
        assert!(fa
            .alloc(Duration::ZERO, 9, [2; 32], irm::Qos::raw(), 1000)
            .is_none());
        let done = std::iter::from_fn(|| fa.poll_action())
            .filter(|a| {
                matches!(
                    a,
                    Action::AllocDone {
                        result: Err(irm::Error::Invalid(_)),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(done, 1);
        assert_eq!(fa.flow_count(), 1);
    }
}
