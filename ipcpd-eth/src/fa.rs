//! The flow allocator: name resolution, flow set-up and tear-down, and flow
//! liveness, as a sans-IO state machine (quinn-proto is the model).
//!
//! It reads no clock and does no IO. Every method takes `now`, the time since
//! an epoch the caller chose; effects are queued as [`Action`]s the caller
//! drains with [`FlowAllocator::poll_action`]. The caller arms one timer at
//! [`FlowAllocator::poll_timeout`] and calls [`FlowAllocator::handle_timeout`]
//! when it fires. Tests drive it in virtual time, so a ten-year timeout is
//! checked in microseconds.
//!
//! Liveness is kept per peer MAC, not per flow: a peer records when we last
//! heard anything from it and last sent anything to it, plus a multiset of
//! its flows' timeouts. One keep-alive per peer per quarter of the shortest
//! timeout keeps any number of idle flows alive, and the next deadline of a
//! peer is O(log n) to find.
//!
//! Retransmission schedules (all in virtual time):
//! * NAME_QUERY: sent at 0, 50, 150, 350 ms (waits of 50, 100, 200, 400 ms);
//!   the allocation fails at 750 ms.
//! * FLOW_REQ: every 100 ms, 5 retransmissions; the allocation fails at 600 ms.
//! * DEALLOC: waits of 20, 40, 80, 160, 320 ms (sent at 0, 20, 60, 140, 300,
//!   620 ms) until a DEALLOC_ACK or UNKNOWN_EID answers it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use irm::proto::{DownCause, RefuseReason};

use crate::wire::{
    Eid, FlowReplyRepr, FlowReqRepr, Frame, KeepAliveRepr, Mac, Payload, ReplyCode, WireQos,
    BROADCAST,
};

/// Waits after each NAME_QUERY; when the last one ends the allocation fails.
const NAME_QUERY_WAITS_MS: [u64; 4] = [50, 100, 200, 400];
const FLOW_REQ_INTERVAL: Duration = Duration::from_millis(100);
/// Retransmissions of a FLOW_REQ (every FLOW_REQ_INTERVAL): 2.6 s in all, longer than
/// irmd waits for a bound program to call accept (2 s), so a busy server is not
/// mistaken for a dead one.
const FLOW_REQ_RETRANSMITS: u32 = 25;
/// Waits after each DEALLOC; after the last one the sender gives up.
const DEALLOC_WAITS_MS: [u64; 5] = [20, 40, 80, 160, 320];
/// At most one answer to a stale-instance keep-alive per MAC per this gap.
const KEEPALIVE_REPLY_GAP: Duration = Duration::from_millis(10);
/// UNKNOWN_EID token bucket per MAC: burst 10, one token per 10 ms (100/s).
const UNKNOWN_EID_BURST: u32 = 10;
const UNKNOWN_EID_REFILL: Duration = Duration::from_millis(10);
const MAX_SLOTS: usize = 1 << Eid::INDEX_BITS;
/// Bounds on state that remote frames can make us create.
const DIRECTORY_CAP: usize = 4096;
const STRANGERS_CAP: usize = 1024;
const MAX_PENDING_ACCEPTS: usize = 4096;
const REFUSALS_CAP: usize = 4096;
/// How long a refusal is remembered, to answer retransmitted FLOW_REQs the
/// same way (longer than the requester's 600 ms retransmission window).
const REFUSAL_MEMORY: Duration = Duration::from_secs(2);
/// A flow timeout of 0 ms would expire before any frame could arrive.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Static settings of one IPCP run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Random nonce drawn at each IPCP start; 0 is reserved for "unknown".
    pub instance: u64,
    /// Largest SDU this IPCP can carry (MTU minus the ethflow header).
    pub max_sdu: u32,
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
    /// (the smaller of the requester's and ours).
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
}

/// Where a flow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a NAME_REPLY (the flow is in a [`Query`]'s waiting list).
    Resolving,
    /// FLOW_REQ sent, waiting for the FLOW_REPLY.
    Requesting,
    Up,
    /// Nothing heard from the peer for the flow's timeout (PEER).
    Unresponsive,
    /// Gone for good; the slot is kept until the local side deallocates.
    Down,
}

/// An allocation this IPCP started and that is not answered yet.
#[derive(Debug)]
struct Request {
    name_hash: [u8; 32],
    qos: WireQos,
    /// FLOW_REQs sent so far.
    sends: u32,
    next_at: Duration,
    /// The peer MAC came from the directory cache, not a fresh NAME_REPLY.
    from_cache: bool,
    /// Already re-queried once after a cached MAC said NO_SUCH_NAME.
    requeried: bool,
}

/// Requester MAC, requester eid, requester instance: identifies a FLOW_REQ
/// and its retransmissions.
type InboundKey = (Mac, Eid, u64);

#[derive(Debug)]
struct Flow {
    flow_id: u32,
    local: Eid,
    /// The peer's eid; NONE until the FLOW_REPLY.
    remote: Eid,
    /// Index into `peers`; None while the name is being resolved.
    peer: Option<usize>,
    timeout: Duration,
    max_sdu: u32,
    phase: Phase,
    /// Some while Resolving or Requesting.
    request: Option<Box<Request>>,
    /// For a flow accepted here: the FLOW_REQ it answers (for duplicates).
    inbound: Option<InboundKey>,
}

#[derive(Debug)]
struct Slot {
    generation: u64,
    flow: Option<Flow>,
}

/// A broadcast NAME_QUERY shared by every allocation waiting on the name.
#[derive(Debug)]
struct Query {
    sends: usize,
    next_at: Duration,
    waiting: Vec<u32>,
}

/// A DEALLOC waiting for its acknowledgement.
#[derive(Debug)]
struct DeallocRetx {
    remote: Eid,
    sends: usize,
    next_at: Duration,
}

/// What we know about a FLOW_REQ that irmd has not answered yet, by token.
#[derive(Debug)]
struct PendingAccept {
    key: InboundKey,
    qos: WireQos,
    max_sdu: u32,
}

/// State of a FLOW_REQ seen from a peer.
#[derive(Debug, Clone, Copy)]
enum Inbound {
    /// irmd is deciding (token outstanding): ignore retransmissions.
    Pending,
    /// Accepted into this slot: retransmissions get the same reply.
    Accepted(u32),
}

/// A multiset of durations; the smallest is found in O(log n).
#[derive(Debug, Default)]
struct Multiset(BTreeMap<Duration, usize>);

impl Multiset {
    fn insert(&mut self, d: Duration) {
        *self.0.entry(d).or_default() += 1;
    }
    fn remove(&mut self, d: Duration) {
        if let Entry::Occupied(mut e) = self.0.entry(d) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
    fn min(&self) -> Option<Duration> {
        self.0.keys().next().copied()
    }
}

/// Rate limits for the replies a MAC can provoke.
#[derive(Debug, Clone)]
struct Limiter {
    unknown_eid_tokens: u32,
    refilled_at: Duration,
    keepalive_reply_at: Option<Duration>,
}

impl Limiter {
    fn new(now: Duration) -> Limiter {
        Limiter {
            unknown_eid_tokens: UNKNOWN_EID_BURST,
            refilled_at: now,
            keepalive_reply_at: None,
        }
    }

    fn take_unknown_eid(&mut self, now: Duration) -> bool {
        let earned =
            now.saturating_sub(self.refilled_at).as_nanos() / UNKNOWN_EID_REFILL.as_nanos();
        let room = UNKNOWN_EID_BURST - self.unknown_eid_tokens;
        if earned >= u128::from(room) {
            self.unknown_eid_tokens = UNKNOWN_EID_BURST;
            self.refilled_at = now;
        } else if earned > 0 {
            // earned < room <= UNKNOWN_EID_BURST, so it fits in u32.
            self.unknown_eid_tokens += earned as u32;
            self.refilled_at += UNKNOWN_EID_REFILL * earned as u32;
        }
        if self.unknown_eid_tokens == 0 {
            return false;
        }
        self.unknown_eid_tokens -= 1;
        true
    }

    fn take_keepalive_reply(&mut self, now: Duration) -> bool {
        if let Some(at) = self.keepalive_reply_at {
            if now < at.saturating_add(KEEPALIVE_REPLY_GAP) {
                return false;
            }
        }
        self.keepalive_reply_at = Some(now);
        true
    }

    /// True when forgetting this limiter would not let the MAC send more.
    fn is_idle(&self, now: Duration) -> bool {
        let missing = UNKNOWN_EID_BURST - self.unknown_eid_tokens;
        let refilled = now.saturating_sub(self.refilled_at) >= UNKNOWN_EID_REFILL * missing;
        let replied = self
            .keepalive_reply_at
            .is_none_or(|at| now >= at.saturating_add(KEEPALIVE_REPLY_GAP));
        refilled && replied
    }
}

/// Another IPCP we have flows with, keyed by its MAC.
#[derive(Debug)]
struct Peer {
    mac: Mac,
    /// Its instance nonce; 0 until a FLOW_REQ / FLOW_REPLY / KEEP_ALIVE says.
    instance: u64,
    /// Last time any valid frame came from this MAC.
    last_rx: Duration,
    /// Last time we sent this MAC anything.
    last_tx: Duration,
    /// Slots of every flow using this peer (requesting, live or down).
    flows: HashSet<u32>,
    /// Timeouts of Up and Unresponsive flows: the keep-alive cadence.
    live_timeouts: Multiset,
    /// Timeouts of Up flows: the next expiry.
    up_timeouts: Multiset,
    /// Unresponsive flows; recovery scans the flows only when this is > 0.
    unresponsive: usize,
    limiter: Limiter,
}

impl Peer {
    /// Add (or remove) a flow in `phase` to the liveness bookkeeping.
    fn account(&mut self, phase: Phase, timeout: Duration, add: bool) {
        let live = matches!(phase, Phase::Up | Phase::Unresponsive);
        if live {
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

    fn expiry_at(&self) -> Option<Duration> {
        self.up_timeouts
            .min()
            .map(|t| self.last_rx.saturating_add(t))
    }

    fn keepalive_at(&self) -> Option<Duration> {
        self.live_timeouts
            .min()
            .map(|t| self.last_tx.saturating_add(t / 4))
    }
}

/// The flow allocator of one IPCP. See the module documentation.
#[derive(Debug)]
pub struct FlowAllocator {
    cfg: Config,
    slots: Vec<Slot>,
    /// MAX_SLOTS; smaller in tests.
    slot_limit: usize,
    /// FIFO, so reuse cycles through the slots.
    free_slots: VecDeque<u32>,
    next_generation: u64,
    by_flow_id: HashMap<u32, u32>,
    /// Name hashes registered here.
    names: HashSet<[u8; 32]>,
    /// Name hash → MAC of the IPCP that answered for it.
    directory: HashMap<[u8; 32], Mac>,
    queries: HashMap<[u8; 32], Query>,
    /// Slots in the Requesting phase.
    requesting: HashSet<u32>,
    peers: Vec<Option<Peer>>,
    free_peers: Vec<usize>,
    peer_by_mac: HashMap<Mac, usize>,
    /// Rate limiters of MACs that are not peers.
    strangers: HashMap<Mac, Limiter>,
    /// Unacknowledged DEALLOCs by (peer MAC, our freed eid).
    deallocs: HashMap<(Mac, Eid), DeallocRetx>,
    inbound: HashMap<InboundKey, Inbound>,
    accepts: HashMap<u64, PendingAccept>,
    next_token: u64,
    /// Recent refusals, so a retransmitted FLOW_REQ gets the same answer.
    refusals: HashMap<InboundKey, ReplyCode>,
    refusal_order: VecDeque<(Duration, InboundKey)>,
    actions: VecDeque<Action>,
}

impl FlowAllocator {
    pub fn new(cfg: Config) -> Self {
        // 0 means "unknown instance" on the wire; never claim it.
        let instance = if cfg.instance == 0 { 1 } else { cfg.instance };
        FlowAllocator {
            cfg: Config { instance, ..cfg },
            slots: Vec::new(),
            slot_limit: MAX_SLOTS,
            free_slots: VecDeque::new(),
            next_generation: 1,
            by_flow_id: HashMap::new(),
            names: HashSet::new(),
            directory: HashMap::new(),
            queries: HashMap::new(),
            requesting: HashSet::new(),
            peers: Vec::new(),
            free_peers: Vec::new(),
            peer_by_mac: HashMap::new(),
            strangers: HashMap::new(),
            deallocs: HashMap::new(),
            inbound: HashMap::new(),
            accepts: HashMap::new(),
            next_token: 1,
            refusals: HashMap::new(),
            refusal_order: VecDeque::new(),
            actions: VecDeque::new(),
        }
    }

    /// The MTU changed: new flows use this maximum SDU.
    pub fn set_max_sdu(&mut self, max_sdu: u32) {
        self.cfg.max_sdu = max_sdu;
    }

    pub fn register_name(&mut self, hash: [u8; 32]) {
        self.names.insert(hash);
    }

    pub fn unregister_name(&mut self, hash: [u8; 32]) {
        self.names.remove(&hash);
    }

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
        if self.by_flow_id.contains_key(&flow_id) {
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
        let local = self.eid_of(index);
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
        self.slots[index as usize].flow = Some(Flow {
            flow_id,
            local,
            remote: Eid::NONE,
            peer: None,
            timeout: timeout_from_ms(timeout_ms),
            max_sdu: self.cfg.max_sdu,
            phase: Phase::Resolving,
            request: Some(Box::new(request)),
            inbound: None,
        });
        self.by_flow_id.insert(flow_id, index);
        match self.directory.get(&name_hash) {
            Some(&mac) => self.start_request(now, index, mac, true),
            None => self.join_query(now, index, name_hash),
        }
        local
    }

    /// irmd's answer to `FlowReqArrived`. Ok(flow_id): the flow is Up, the
    /// reply is sent and (local eid, max SDU) returned. Err(reason): a refusal
    /// is sent and None returned (also when the token is unknown or the flow
    /// cannot be created here).
    pub fn accept_result(
        &mut self,
        now: Duration,
        token: u64,
        result: Result<u32, RefuseReason>,
        timeout_ms: u64,
    ) -> Option<(Eid, u32)> {
        let pending = self.accepts.remove(&token)?;
        self.inbound.remove(&pending.key);
        let (mac, remote, instance) = pending.key;
        let known = self
            .peer_by_mac
            .get(&mac)
            .and_then(|&p| self.peers[p].as_ref());
        if known.is_some_and(|peer| peer.instance != 0 && peer.instance != instance) {
            // The requester restarted while irmd decided: nobody is left to
            // answer, and recording its old nonce would take the new run's
            // flows down.
            return None;
        }
        let flow_id = match result {
            Ok(flow_id) if !self.by_flow_id.contains_key(&flow_id) => flow_id,
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
        let local = self.eid_of(index);
        let p = self.peer_for(now, mac);
        self.note_instance(p, instance);
        // The FLOW_REQ was just heard; irmd's turnaround must not count
        // against the new flow's timeout.
        let peer = self.peers[p]
            .as_mut()
            .expect("peer_for returns a live peer");
        peer.last_rx = peer.last_rx.max(now);
        let requested = if timeout_ms == 0 {
            pending.qos.timeout
        } else {
            timeout_ms
        };
        let max_sdu = pending.max_sdu;
        self.slots[index as usize].flow = Some(Flow {
            flow_id,
            local,
            remote,
            peer: None,
            timeout: timeout_from_ms(requested),
            max_sdu,
            phase: Phase::Up,
            request: None,
            inbound: Some(pending.key),
        });
        self.by_flow_id.insert(flow_id, index);
        self.attach(index, p);
        self.inbound.insert(pending.key, Inbound::Accepted(index));
        self.send_flow_reply(now, mac, remote, local, ReplyCode::Ok);
        Some((local, max_sdu))
    }

    /// The local side deallocates (the application dropped the flow or died).
    pub fn dealloc(&mut self, now: Duration, flow_id: u32) {
        let Some(&index) = self.by_flow_id.get(&flow_id) else {
            return;
        };
        let flow = self.slots[index as usize]
            .flow
            .as_ref()
            .expect("by_flow_id points at a flow");
        match flow.phase {
            Phase::Up | Phase::Unresponsive => {
                let (local, remote) = (flow.local, flow.remote);
                let mac = self.peer_mac(flow).expect("a live flow has a peer");
                self.deallocs.insert(
                    (mac, local),
                    DeallocRetx {
                        remote,
                        sends: 1,
                        next_at: now.saturating_add(ms(DEALLOC_WAITS_MS[0])),
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

    /// A management frame (any type but Data) arrived from `src_mac`. A Data
    /// frame passed here only counts for liveness; use [`Self::data_rx`].
    pub fn handle_frame(&mut self, now: Duration, src_mac: Mac, frame: &Frame<'_>) {
        match frame.payload {
            Payload::Data(_) => {
                self.data_rx(now, src_mac, frame.dst, frame.src);
                return;
            }
            Payload::NameQuery { name_hash } => {
                if self.names.contains(&name_hash) {
                    let reply = Frame {
                        dst: Eid::NONE,
                        src: Eid::NONE,
                        payload: Payload::NameReply { name_hash },
                    };
                    self.transmit(now, src_mac, reply);
                }
            }
            Payload::NameReply { name_hash } => self.on_name_reply(now, src_mac, name_hash),
            Payload::FlowReq(req) => self.on_flow_req(now, src_mac, frame.src, &req),
            Payload::FlowReply(rep) => self.on_flow_reply(now, src_mac, frame, &rep),
            Payload::Dealloc => {
                if let Some(index) = self.match_live(src_mac, frame.dst, frame.src) {
                    self.set_phase(index, Phase::Down, Some(DownCause::PeerDeallocated));
                }
                // Idempotent: a retransmitted DEALLOC gets its ACK too.
                self.transmit(
                    now,
                    src_mac,
                    mgmt_frame(frame.src, frame.dst, Payload::DeallocAck),
                );
            }
            Payload::DeallocAck => self.dealloc_answered(src_mac, frame.dst, frame.src),
            Payload::KeepAlive(ka) => self.on_keepalive(now, src_mac, &ka),
            Payload::UnknownEid => {
                if let Some(index) = self.match_live(src_mac, frame.dst, frame.src) {
                    self.set_phase(index, Phase::Down, Some(DownCause::UnknownEndpoint));
                }
                self.dealloc_answered(src_mac, frame.dst, frame.src);
            }
        }
        self.heard_from(now, src_mac);
    }

    /// Data fast path: the flow id if (dst index, generation, peer MAC, remote
    /// eid) match a live or pending flow; refreshes the peer's liveness.
    /// Otherwise queues a rate-limited UNKNOWN_EID and returns None.
    pub fn data_rx(&mut self, now: Duration, src_mac: Mac, dst: Eid, src: Eid) -> Option<u32> {
        if let Some((flow_id, p)) = self.match_data(src_mac, dst, src) {
            self.heard_from_peer(now, p);
            return Some(flow_id);
        }
        // The frame proves its sender alive even though we drop it.
        self.heard_from(now, src_mac);
        if !src.is_none()
            && self
                .limiter(now, src_mac)
                .is_some_and(|l| l.take_unknown_eid(now))
        {
            self.transmit(now, src_mac, mgmt_frame(src, dst, Payload::UnknownEid));
        }
        None
    }

    /// Data fast path for sending: (peer MAC, remote eid, local eid) of an
    /// established Up-or-Peer flow. Counts as traffic to that peer, so no
    /// keep-alive is needed while data flows.
    pub fn data_tx(&mut self, now: Duration, flow_id: u32) -> Option<(Mac, Eid, Eid)> {
        let index = *self.by_flow_id.get(&flow_id)?;
        let flow = self.slots[index as usize].flow.as_ref()?;
        if !matches!(flow.phase, Phase::Up | Phase::Unresponsive) {
            return None;
        }
        let peer = self.peers[flow.peer?].as_mut()?;
        peer.last_tx = peer.last_tx.max(now);
        Some((peer.mac, flow.remote, flow.local))
    }

    /// Carrier lost: every established flow goes DOWN (LinkDown), pending
    /// allocations fail, and nothing more is retransmitted.
    pub fn link_down(&mut self, _now: Duration) {
        for index in 0..self.slots.len() as u32 {
            let Some(flow) = self.slots[index as usize].flow.as_ref() else {
                continue;
            };
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
        self.queries.clear();
        self.deallocs.clear();
        // Answers irmd gives later for these requests find no token.
        for (_, pending) in self.accepts.drain() {
            self.inbound.remove(&pending.key);
        }
    }

    /// The earliest deadline (absolute), if any. O(peers + pending).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut earliest: Option<Duration> = None;
        let mut consider = |t: Duration| earliest = Some(earliest.map_or(t, |e| e.min(t)));
        self.queries.values().for_each(|q| consider(q.next_at));
        for &index in &self.requesting {
            if let Some(req) = self.request(index) {
                consider(req.next_at);
            }
        }
        self.deallocs.values().for_each(|d| consider(d.next_at));
        for peer in self.peers.iter().flatten() {
            peer.expiry_at().into_iter().for_each(&mut consider);
            peer.keepalive_at().into_iter().for_each(&mut consider);
        }
        earliest
    }

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.name_query_timers(now);
        self.flow_req_timers(now);
        self.dealloc_timers(now);
        for p in 0..self.peers.len() {
            self.peer_timers(now, p);
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Flows held, in any phase (pending, live, or DOWN and not yet freed).
    pub fn flow_count(&self) -> usize {
        self.by_flow_id.len()
    }

    /// Flow ids of every flow with the peer at `mac`, in any phase.
    pub fn flows_of_peer(&self, mac: Mac) -> Vec<u32> {
        let Some(peer) = self
            .peer_by_mac
            .get(&mac)
            .and_then(|&p| self.peers[p].as_ref())
        else {
            return Vec::new();
        };
        peer.flows
            .iter()
            .filter_map(|&i| self.slots[i as usize].flow.as_ref().map(|f| f.flow_id))
            .collect()
    }

    /// When a frame last came from the flow's peer (None if it has none yet).
    pub fn last_heard(&self, flow_id: u32) -> Option<Duration> {
        let index = *self.by_flow_id.get(&flow_id)?;
        let flow = self.slots[index as usize].flow.as_ref()?;
        Some(self.peers[flow.peer?].as_ref()?.last_rx)
    }

    // ---- endpoints ----

    fn take_slot(&mut self) -> Option<u32> {
        let index = match self.free_slots.pop_front() {
            Some(index) => index,
            None if self.slots.len() < self.slot_limit => {
                self.slots.push(Slot {
                    generation: 0,
                    flow: None,
                });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        self.slots[index as usize].generation = self.next_generation;
        // 40 bits, skipping 0 so that no eid is ever 0.
        self.next_generation = if self.next_generation >= Eid::MAX_GENERATION {
            1
        } else {
            self.next_generation + 1
        };
        Some(index)
    }

    fn eid_of(&self, index: u32) -> Eid {
        Eid::new(index, self.slots[index as usize].generation)
    }

    fn free_flow(&mut self, index: u32) {
        self.detach(index);
        let Some(flow) = self.slots[index as usize].flow.take() else {
            return;
        };
        if self.by_flow_id.get(&flow.flow_id) == Some(&index) {
            self.by_flow_id.remove(&flow.flow_id);
        }
        if let Some(key) = flow.inbound {
            self.inbound.remove(&key);
        }
        self.requesting.remove(&index);
        self.free_slots.push_back(index);
    }

    fn request(&self, index: u32) -> Option<&Request> {
        self.slots
            .get(index as usize)?
            .flow
            .as_ref()?
            .request
            .as_deref()
    }

    fn request_mut(&mut self, index: u32) -> Option<&mut Request> {
        self.slots
            .get_mut(index as usize)?
            .flow
            .as_mut()?
            .request
            .as_deref_mut()
    }

    /// The live (Up or Unresponsive) flow named by a frame's (dst, src) from `mac`.
    fn match_live(&self, mac: Mac, local: Eid, remote: Eid) -> Option<u32> {
        let flow = self.flow_at(local)?;
        let live = matches!(flow.phase, Phase::Up | Phase::Unresponsive);
        (live && flow.remote == remote && self.peer_mac(flow) == Some(mac)).then_some(local.index())
    }

    /// The data-accepting flow for (dst, src) from `mac`: (flow id, peer).
    fn match_data(&self, mac: Mac, dst: Eid, src: Eid) -> Option<(u32, usize)> {
        let flow = self.flow_at(dst)?;
        let p = flow.peer?;
        if self.peers[p].as_ref()?.mac != mac {
            return None;
        }
        let remote_ok = match flow.phase {
            // The responder may send data before its FLOW_REPLY arrives.
            Phase::Requesting => true,
            Phase::Up | Phase::Unresponsive => flow.remote == src,
            Phase::Resolving | Phase::Down => false,
        };
        remote_ok.then_some((flow.flow_id, p))
    }

    /// The flow an eid names, if index and generation both match.
    fn flow_at(&self, eid: Eid) -> Option<&Flow> {
        if eid.is_none() {
            return None;
        }
        let slot = self.slots.get(eid.index() as usize)?;
        if slot.generation != eid.generation() {
            return None;
        }
        slot.flow.as_ref()
    }

    /// Move a flow to `to`, keep its peer's bookkeeping right, and tell the
    /// caller with `cause` if given.
    fn set_phase(&mut self, index: u32, to: Phase, cause: Option<DownCause>) {
        let Some(flow) = self.slots[index as usize].flow.as_mut() else {
            return;
        };
        let from = flow.phase;
        if from == to {
            return;
        }
        if let Some(peer) = flow.peer.and_then(|p| self.peers[p].as_mut()) {
            peer.account(from, flow.timeout, false);
            peer.account(to, flow.timeout, true);
        }
        flow.phase = to;
        let flow_id = flow.flow_id;
        if to == Phase::Down {
            // A retransmitted FLOW_REQ must not get the reply of a dead flow.
            if let Some(key) = flow.inbound.take() {
                self.inbound.remove(&key);
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
        let Some(flow_id) = self.slots[index as usize].flow.as_ref().map(|f| f.flow_id) else {
            return;
        };
        self.free_flow(index);
        self.alloc_done(flow_id, Err(error));
    }

    // ---- peers ----

    fn peer_mac(&self, flow: &Flow) -> Option<Mac> {
        Some(self.peers[flow.peer?].as_ref()?.mac)
    }

    /// The peer record for `mac`, created if needed.
    fn peer_for(&mut self, now: Duration, mac: Mac) -> usize {
        if let Some(&p) = self.peer_by_mac.get(&mac) {
            return p;
        }
        let peer = Peer {
            mac,
            instance: 0,
            last_rx: now,
            last_tx: now,
            flows: HashSet::new(),
            live_timeouts: Multiset::default(),
            up_timeouts: Multiset::default(),
            unresponsive: 0,
            limiter: self
                .strangers
                .remove(&mac)
                .unwrap_or_else(|| Limiter::new(now)),
        };
        let p = match self.free_peers.pop() {
            Some(p) => {
                self.peers[p] = Some(peer);
                p
            }
            None => {
                self.peers.push(Some(peer));
                self.peers.len() - 1
            }
        };
        self.peer_by_mac.insert(mac, p);
        p
    }

    fn attach(&mut self, index: u32, p: usize) {
        let flow = self.slots[index as usize]
            .flow
            .as_mut()
            .expect("attach a present flow");
        let peer = self.peers[p].as_mut().expect("attach to a live peer");
        flow.peer = Some(p);
        peer.flows.insert(index);
        peer.account(flow.phase, flow.timeout, true);
    }

    /// Take a flow off its peer; a peer without flows is forgotten.
    fn detach(&mut self, index: u32) {
        let Some(flow) = self.slots[index as usize].flow.as_mut() else {
            return;
        };
        let Some(p) = flow.peer.take() else {
            return;
        };
        let Some(peer) = self.peers[p].as_mut() else {
            return;
        };
        peer.account(flow.phase, flow.timeout, false);
        peer.flows.remove(&index);
        if peer.flows.is_empty() {
            self.peer_by_mac.remove(&peer.mac);
            self.peers[p] = None;
            self.free_peers.push(p);
        }
    }

    /// A frame carried the peer's instance nonce: a new one means it restarted
    /// and every live flow with the old one is gone.
    fn note_instance(&mut self, p: usize, instance: u64) {
        let Some(peer) = self.peers[p].as_mut() else {
            return;
        };
        if instance == 0 || peer.instance == instance {
            return;
        }
        let restarted = peer.instance != 0;
        peer.instance = instance;
        if restarted {
            let dead = self.flows_of(p, |f| matches!(f.phase, Phase::Up | Phase::Unresponsive));
            for index in dead {
                self.set_phase(index, Phase::Down, Some(DownCause::PeerRestarted));
            }
        }
    }

    fn flows_of(&self, p: usize, pred: impl Fn(&Flow) -> bool) -> Vec<u32> {
        let Some(peer) = self.peers[p].as_ref() else {
            return Vec::new();
        };
        peer.flows
            .iter()
            .copied()
            .filter(|&i| self.slots[i as usize].flow.as_ref().is_some_and(&pred))
            .collect()
    }

    fn heard_from(&mut self, now: Duration, mac: Mac) {
        if let Some(&p) = self.peer_by_mac.get(&mac) {
            self.heard_from_peer(now, p);
        }
    }

    fn heard_from_peer(&mut self, now: Duration, p: usize) {
        let Some(peer) = self.peers[p].as_mut() else {
            return;
        };
        peer.last_rx = peer.last_rx.max(now);
        if peer.unresponsive > 0 {
            for index in self.flows_of(p, |f| f.phase == Phase::Unresponsive) {
                self.set_phase(index, Phase::Up, Some(DownCause::Up));
            }
        }
    }

    /// The rate limiter of `mac` (None when too many strangers are active).
    fn limiter(&mut self, now: Duration, mac: Mac) -> Option<&mut Limiter> {
        if let Some(&p) = self.peer_by_mac.get(&mac) {
            return self.peers[p].as_mut().map(|peer| &mut peer.limiter);
        }
        if !self.strangers.contains_key(&mac) && self.strangers.len() >= STRANGERS_CAP {
            self.strangers.retain(|_, l| !l.is_idle(now));
            if self.strangers.len() >= STRANGERS_CAP {
                return None;
            }
        }
        Some(
            self.strangers
                .entry(mac)
                .or_insert_with(|| Limiter::new(now)),
        )
    }

    // ---- sending ----

    fn transmit(&mut self, now: Duration, dst: Mac, frame: Frame<'_>) {
        if let Some(&p) = self.peer_by_mac.get(&dst) {
            if let Some(peer) = self.peers[p].as_mut() {
                peer.last_tx = peer.last_tx.max(now);
            }
        }
        self.actions.push_back(Action::Transmit {
            dst,
            frame: frame.to_vec(),
        });
    }

    fn send_flow_req(&mut self, now: Duration, index: u32) {
        let Some(flow) = self.slots[index as usize].flow.as_ref() else {
            return;
        };
        let (Some(req), Some(mac)) = (flow.request.as_ref(), self.peer_mac(flow)) else {
            return;
        };
        let payload = Payload::FlowReq(FlowReqRepr {
            instance: self.cfg.instance,
            name_hash: req.name_hash,
            qos: req.qos,
            max_sdu: self.cfg.max_sdu,
        });
        self.transmit(now, mac, mgmt_frame(Eid::NONE, flow.local, payload));
    }

    fn send_flow_reply(&mut self, now: Duration, mac: Mac, dst: Eid, src: Eid, code: ReplyCode) {
        let payload = Payload::FlowReply(FlowReplyRepr {
            instance: self.cfg.instance,
            code,
            max_sdu: self.cfg.max_sdu,
        });
        self.transmit(now, mac, mgmt_frame(dst, src, payload));
    }

    fn send_name_query(&mut self, now: Duration, name_hash: [u8; 32]) {
        self.transmit(
            now,
            BROADCAST,
            mgmt_frame(Eid::NONE, Eid::NONE, Payload::NameQuery { name_hash }),
        );
    }

    // ---- requester side ----

    fn join_query(&mut self, now: Duration, index: u32, name_hash: [u8; 32]) {
        if !self.queries.contains_key(&name_hash) {
            self.send_name_query(now, name_hash);
            let query = Query {
                sends: 1,
                next_at: now.saturating_add(ms(NAME_QUERY_WAITS_MS[0])),
                waiting: Vec::new(),
            };
            self.queries.insert(name_hash, query);
        }
        self.queries
            .get_mut(&name_hash)
            .expect("inserted above")
            .waiting
            .push(index);
    }

    fn leave_query(&mut self, index: u32, name_hash: [u8; 32]) {
        if let Some(query) = self.queries.get_mut(&name_hash) {
            query.waiting.retain(|&i| i != index);
            if query.waiting.is_empty() {
                self.queries.remove(&name_hash);
            }
        }
    }

    /// The name resolved to `mac`: send the FLOW_REQ.
    fn start_request(&mut self, now: Duration, index: u32, mac: Mac, from_cache: bool) {
        let p = self.peer_for(now, mac);
        let flow = self.slots[index as usize]
            .flow
            .as_mut()
            .expect("request for a present flow");
        flow.phase = Phase::Requesting;
        if let Some(req) = flow.request.as_mut() {
            req.sends = 1;
            req.next_at = now.saturating_add(FLOW_REQ_INTERVAL);
            req.from_cache = from_cache;
        }
        self.attach(index, p);
        self.requesting.insert(index);
        self.send_flow_req(now, index);
    }

    fn on_name_reply(&mut self, now: Duration, mac: Mac, name_hash: [u8; 32]) {
        // Only answers to our own queries are believed.
        let Some(query) = self.queries.remove(&name_hash) else {
            return;
        };
        self.learn_name(name_hash, mac);
        for index in query.waiting {
            self.start_request(now, index, mac, false);
        }
    }

    fn on_flow_reply(&mut self, now: Duration, mac: Mac, frame: &Frame<'_>, rep: &FlowReplyRepr) {
        let requesting = self
            .flow_at(frame.dst)
            .filter(|f| f.phase == Phase::Requesting && self.peer_mac(f) == Some(mac))
            .map(|f| (f.peer, f.flow_id));
        let Some((Some(p), flow_id)) = requesting else {
            self.stray_flow_reply(now, mac, frame, rep);
            return;
        };
        if rep.code == ReplyCode::Ok && frame.src.is_none() {
            return; // An OK without an endpoint is malformed: keep retrying.
        }
        self.note_instance(p, rep.instance);
        let index = frame.dst.index();
        self.requesting.remove(&index);
        let Some(reason) = refuse_reason(rep.code) else {
            let flow = self.slots[index as usize]
                .flow
                .as_mut()
                .expect("matched above");
            flow.remote = frame.src;
            flow.max_sdu = flow.max_sdu.min(rep.max_sdu);
            flow.request = None;
            let max_sdu = flow.max_sdu;
            self.set_phase(index, Phase::Up, None);
            self.alloc_done(flow_id, Ok(max_sdu));
            return;
        };
        let req = self
            .request(index)
            .expect("a requesting flow has its request");
        let (name_hash, retry) = (req.name_hash, req.from_cache && !req.requeried);
        if reason == RefuseReason::NoSuchName {
            self.forget_name(name_hash, mac);
            if retry {
                // The cached MAC is stale: ask the segment again, once.
                self.detach(index);
                let flow = self.slots[index as usize]
                    .flow
                    .as_mut()
                    .expect("matched above");
                flow.phase = Phase::Resolving;
                if let Some(req) = flow.request.as_mut() {
                    req.requeried = true;
                }
                self.join_query(now, index, name_hash);
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
        if self
            .limiter(now, mac)
            .is_some_and(|l| l.take_unknown_eid(now))
        {
            self.transmit(
                now,
                mac,
                mgmt_frame(frame.src, frame.dst, Payload::UnknownEid),
            );
        }
    }

    fn learn_name(&mut self, name_hash: [u8; 32], mac: Mac) {
        if self.directory.len() >= DIRECTORY_CAP && !self.directory.contains_key(&name_hash) {
            if let Some(victim) = self.directory.keys().next().copied() {
                self.directory.remove(&victim);
            }
        }
        self.directory.insert(name_hash, mac);
    }

    fn forget_name(&mut self, name_hash: [u8; 32], mac: Mac) {
        if self.directory.get(&name_hash) == Some(&mac) {
            self.directory.remove(&name_hash);
        }
    }

    // ---- responder side ----

    fn on_flow_req(&mut self, now: Duration, mac: Mac, requester: Eid, req: &FlowReqRepr) {
        if requester.is_none() || req.instance == 0 {
            return;
        }
        if let Some(&p) = self.peer_by_mac.get(&mac) {
            self.note_instance(p, req.instance);
        }
        let key = (mac, requester, req.instance);
        match self.inbound.get(&key) {
            Some(Inbound::Pending) => return,
            Some(&Inbound::Accepted(index)) => {
                if let Some(local) = self.slots[index as usize].flow.as_ref().map(|f| f.local) {
                    self.send_flow_reply(now, mac, requester, local, ReplyCode::Ok);
                }
                return;
            }
            None => {}
        }
        if let Some(code) = self.remembered_refusal(now, &key) {
            self.send_flow_reply(now, mac, requester, Eid::NONE, code);
            return;
        }
        if !self.names.contains(&req.name_hash) {
            self.send_flow_reply(now, mac, requester, Eid::NONE, ReplyCode::NoSuchName);
            return;
        }
        if self.accepts.len() >= MAX_PENDING_ACCEPTS {
            self.send_flow_reply(now, mac, requester, Eid::NONE, ReplyCode::ResourceLimit);
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let max_sdu = self.cfg.max_sdu.min(req.max_sdu);
        self.accepts.insert(
            token,
            PendingAccept {
                key,
                qos: req.qos,
                max_sdu,
            },
        );
        self.inbound.insert(key, Inbound::Pending);
        self.actions.push_back(Action::FlowReqArrived {
            token,
            name_hash: req.name_hash,
            qos: irm::Qos::from(req.qos),
            max_sdu,
        });
    }

    fn refuse(&mut self, now: Duration, key: InboundKey, code: ReplyCode) {
        let (mac, requester, _) = key;
        self.send_flow_reply(now, mac, requester, Eid::NONE, code);
        self.prune_refusals(now);
        if self.refusals.len() < REFUSALS_CAP {
            self.refusals.insert(key, code);
            self.refusal_order.push_back((now, key));
        }
    }

    fn remembered_refusal(&mut self, now: Duration, key: &InboundKey) -> Option<ReplyCode> {
        self.prune_refusals(now);
        self.refusals.get(key).copied()
    }

    fn prune_refusals(&mut self, now: Duration) {
        while let Some(&(at, key)) = self.refusal_order.front() {
            if now.saturating_sub(at) < REFUSAL_MEMORY {
                break;
            }
            self.refusal_order.pop_front();
            self.refusals.remove(&key);
        }
    }

    // ---- deallocation and liveness ----

    /// A DEALLOC_ACK or UNKNOWN_EID for (our freed eid, their eid) from `mac`.
    fn dealloc_answered(&mut self, mac: Mac, local: Eid, remote: Eid) {
        if self
            .deallocs
            .get(&(mac, local))
            .is_some_and(|d| d.remote == remote)
        {
            self.deallocs.remove(&(mac, local));
        }
    }

    fn on_keepalive(&mut self, now: Duration, mac: Mac, ka: &KeepAliveRepr) {
        let mine = self.cfg.instance;
        if ka.receiver_instance != 0
            && ka.receiver_instance != mine
            && self
                .limiter(now, mac)
                .is_some_and(|l| l.take_keepalive_reply(now))
        {
            // The sender talks to an earlier run of this IPCP: say who we are.
            let reply = KeepAliveRepr {
                sender_instance: mine,
                receiver_instance: ka.sender_instance,
            };
            self.transmit(
                now,
                mac,
                mgmt_frame(Eid::NONE, Eid::NONE, Payload::KeepAlive(reply)),
            );
        }
        if let Some(&p) = self.peer_by_mac.get(&mac) {
            self.note_instance(p, ka.sender_instance);
        }
    }

    fn name_query_timers(&mut self, now: Duration) {
        let due: Vec<[u8; 32]> = self
            .queries
            .iter()
            .filter(|(_, q)| q.next_at <= now)
            .map(|(h, _)| *h)
            .collect();
        for name_hash in due {
            let query = self.queries.get_mut(&name_hash).expect("collected above");
            if query.sends < NAME_QUERY_WAITS_MS.len() {
                query.next_at = query
                    .next_at
                    .saturating_add(ms(NAME_QUERY_WAITS_MS[query.sends]));
                query.sends += 1;
                self.send_name_query(now, name_hash);
            } else {
                let query = self.queries.remove(&name_hash).expect("collected above");
                for index in query.waiting {
                    self.fail_alloc(
                        index,
                        irm::Error::Name("no IPCP answered for this name".into()),
                    );
                }
            }
        }
    }

    fn flow_req_timers(&mut self, now: Duration) {
        let due: Vec<u32> = self
            .requesting
            .iter()
            .copied()
            .filter(|&i| self.request(i).is_some_and(|r| r.next_at <= now))
            .collect();
        for index in due {
            let req = self.request_mut(index).expect("collected above");
            if req.sends <= FLOW_REQ_RETRANSMITS {
                req.sends += 1;
                req.next_at = req.next_at.saturating_add(FLOW_REQ_INTERVAL);
                self.send_flow_req(now, index);
            } else {
                // The name stopped answering at that MAC: do not trust the cache.
                let name_hash = req.name_hash;
                let flow = self.slots[index as usize]
                    .flow
                    .as_ref()
                    .expect("collected above");
                if let Some(mac) = self.peer_mac(flow) {
                    self.forget_name(name_hash, mac);
                }
                self.fail_alloc(index, irm::Error::Ipcp("no flow reply".into()));
            }
        }
    }

    fn dealloc_timers(&mut self, now: Duration) {
        let due: Vec<(Mac, Eid)> = self
            .deallocs
            .iter()
            .filter(|(_, d)| d.next_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for (mac, local) in due {
            let retx = self
                .deallocs
                .get_mut(&(mac, local))
                .expect("collected above");
            let remote = retx.remote;
            retx.sends += 1;
            if retx.sends > DEALLOC_WAITS_MS.len() {
                self.deallocs.remove(&(mac, local));
            } else {
                retx.next_at = retx
                    .next_at
                    .saturating_add(ms(DEALLOC_WAITS_MS[retx.sends - 1]));
            }
            self.transmit(now, mac, mgmt_frame(remote, local, Payload::Dealloc));
        }
    }

    /// Expiry and keep-alive of one peer: O(1) unless flows change state.
    fn peer_timers(&mut self, now: Duration, p: usize) {
        let Some(peer) = self.peers[p].as_ref() else {
            return;
        };
        if peer.expiry_at().is_some_and(|t| t <= now) {
            let silent = now.saturating_sub(peer.last_rx);
            let expired = self.flows_of(p, |f| f.phase == Phase::Up && f.timeout <= silent);
            for index in expired {
                self.set_phase(index, Phase::Unresponsive, Some(DownCause::Unresponsive));
            }
        }
        let Some(peer) = self.peers[p].as_ref() else {
            return;
        };
        if peer.keepalive_at().is_some_and(|t| t <= now) {
            let ka = KeepAliveRepr {
                sender_instance: self.cfg.instance,
                receiver_instance: peer.instance,
            };
            let mac = peer.mac;
            self.transmit(
                now,
                mac,
                mgmt_frame(Eid::NONE, Eid::NONE, Payload::KeepAlive(ka)),
            );
        }
    }
}

fn mgmt_frame(dst: Eid, src: Eid, payload: Payload<'static>) -> Frame<'static> {
    Frame { dst, src, payload }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timeout_from_ms(timeout_ms: u64) -> Duration {
    ms(timeout_ms).max(MIN_TIMEOUT)
}

fn reply_code(reason: RefuseReason) -> ReplyCode {
    match reason {
        RefuseReason::NoSuchName => ReplyCode::NoSuchName,
        RefuseReason::NoAcceptingProcess => ReplyCode::NoAcceptingProcess,
        RefuseReason::ResourceLimit => ReplyCode::ResourceLimit,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fa() -> FlowAllocator {
        FlowAllocator::new(Config {
            instance: 7,
            max_sdu: 1480,
        })
    }

    #[test]
    fn generations_wrap_past_zero_and_slots_are_reused_fifo() {
        let mut fa = fa();
        fa.next_generation = Eid::MAX_GENERATION;
        let first: Vec<u32> = (0..3).map(|_| fa.take_slot().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        assert_eq!(fa.eid_of(0).generation(), Eid::MAX_GENERATION);
        assert_eq!(fa.eid_of(1).generation(), 1, "0 is skipped");
        fa.free_slots.extend([1, 0]);
        assert_eq!(fa.take_slot(), Some(1), "oldest freed slot first");
        assert_eq!(fa.eid_of(1).generation(), 3);
        assert!((0..3).all(|i| !fa.eid_of(i).is_none()));
    }

    #[test]
    fn zero_instance_is_never_claimed() {
        let fa = FlowAllocator::new(Config {
            instance: 0,
            max_sdu: 1,
        });
        assert_ne!(fa.cfg.instance, 0);
    }

    #[test]
    fn unknown_eid_bucket_bursts_then_refills_at_100_per_second() {
        let t0 = Duration::from_secs(5);
        let mut l = Limiter::new(t0);
        assert_eq!((0..20).filter(|_| l.take_unknown_eid(t0)).count(), 10);
        assert!(!l.is_idle(t0));
        assert!(!l.take_unknown_eid(t0 + ms(9)));
        assert!(l.take_unknown_eid(t0 + ms(10)));
        assert!(!l.take_unknown_eid(t0 + ms(19)));
        let later = t0 + ms(10_000);
        assert_eq!((0..20).filter(|_| l.take_unknown_eid(later)).count(), 10);
    }

    #[test]
    fn keepalive_replies_are_spaced_by_10_ms() {
        let mut l = Limiter::new(Duration::ZERO);
        assert!(l.take_keepalive_reply(ms(1)));
        assert!(!l.take_keepalive_reply(ms(10)));
        assert!(l.take_keepalive_reply(ms(11)));
        assert!(!l.is_idle(ms(20)));
        assert!(l.is_idle(ms(21)));
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
    fn out_of_endpoints_fails_the_allocation_at_once() {
        let mut fa = fa();
        fa.slot_limit = 1;
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
