//! The virtual-time rig shared by the allocator tests: two allocators wired
//! back to back (each one's Transmit actions parsed and delivered to the
//! other, with optional loss), a clock that jumps from deadline to deadline,
//! and helpers to read what happened.
#![allow(dead_code)]

pub use std::time::Duration;

pub use ipcpd_eth::fa::{Action, Config, FlowAllocator, Policy, Rate};
pub use ipcpd_eth::wire::{
    Eid, FlowReplyRepr, Frame, FrameType, Mac, Payload, ReplyCode, BROADCAST,
};
pub use irm::proto::{name_hash, DownCause, RefuseReason};

pub const MAC_A: Mac = [2, 0, 0, 0, 0, 0xa];
pub const MAC_B: Mac = [2, 0, 0, 0, 0, 0xb];
pub const A: usize = 0;
pub const B: usize = 1;
pub const INSTANCE_A: u64 = 0xaaaa;
pub const INSTANCE_B: u64 = 0xbbbb;
/// First flow id the accepting side's "irmd" hands out.
pub const B_FIRST_FLOW: u32 = 100;
pub const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deterministic random source (splitmix64), one stream per seed.
pub fn seeded(seed: u64) -> Box<dyn ipcpd_eth::fa::Entropy> {
    let mut state = seed;
    Box::new(move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// B accepts any timeout a remote asks for (no cap).
pub fn uncapped() -> Policy {
    Policy {
        max_remote_timeout: Duration::MAX,
        ..Policy::default()
    }
}

/// No budget gets in the way: for tests of scale, not of defence.
pub fn unlimited() -> Policy {
    Policy {
        rx_per_mac: Rate::UNLIMITED,
        rx_total: Rate::UNLIMITED,
        reply_per_mac: Rate::UNLIMITED,
        reply_total: Rate::UNLIMITED,
        max_pending: 1 << 24,
        max_pending_per_mac: 1 << 24,
        max_inbound_flows: 1 << 24,
        max_inbound_flows_per_mac: 1 << 24,
        ..Policy::default()
    }
}

/// How the simulated irmd answers FlowReqArrived.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Accept,
    Refuse(RefuseReason),
    Hold,
}

pub struct Sent {
    pub at: Duration,
    pub kind: FrameType,
    pub dst: Mac,
    pub bytes: Vec<u8>,
}

pub struct Node {
    pub mac: Mac,
    pub fa: FlowAllocator,
    pub answer: Answer,
    pub next_flow_id: u32,
    pub held: Vec<u64>,
    /// Every action except Transmit, with its time.
    pub events: Vec<(Duration, Action)>,
    pub sent: Vec<Sent>,
    /// Data frames received: (time, what data_rx returned).
    pub data: Vec<(Duration, Option<u32>)>,
}

impl Node {
    pub fn new(mac: Mac, instance: u64, max_sdu: u32) -> Node {
        Node::with_policy(mac, instance, max_sdu, Policy::default())
    }

    pub fn with_policy(mac: Mac, instance: u64, max_sdu: u32, policy: Policy) -> Node {
        Node {
            mac,
            fa: FlowAllocator::with(Config { instance, max_sdu }, policy, seeded(instance))
                .expect("valid policy"),
            answer: Answer::Accept,
            next_flow_id: B_FIRST_FLOW,
            held: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            data: Vec::new(),
        }
    }
}

pub type DropRule = Box<dyn FnMut(usize, &Frame<'_>) -> bool>;

pub struct Net {
    pub now: Duration,
    pub nodes: [Node; 2],
    /// (sender, frame) → true to lose the frame.
    pub drop: DropRule,
}

impl Net {
    pub fn new() -> Net {
        Net {
            now: ms(1000),
            nodes: [
                Node::new(MAC_A, INSTANCE_A, 1480),
                Node::new(MAC_B, INSTANCE_B, 1480),
            ],
            drop: Box::new(|_, _| false),
        }
    }

    /// Drain both allocators until nothing is left to do at this instant.
    pub fn pump(&mut self) {
        for _round in 0..1_000_000 {
            let mut wire: Vec<(usize, Mac, Vec<u8>)> = Vec::new();
            for i in 0..2 {
                let now = self.now;
                let node = &mut self.nodes[i];
                while let Some(action) = node.fa.poll_action() {
                    match action {
                        Action::Transmit { dst, frame } => {
                            let kind = Frame::parse(&frame)
                                .expect("allocator emits valid frames")
                                .frame_type();
                            node.sent.push(Sent {
                                at: now,
                                kind,
                                dst,
                                bytes: frame.clone(),
                            });
                            wire.push((i, dst, frame));
                        }
                        Action::FlowReqArrived { token, .. } => {
                            node.events.push((now, action));
                            match node.answer {
                                Answer::Accept => {
                                    let id = node.next_flow_id;
                                    node.next_flow_id += 1;
                                    assert!(node.fa.accept_result(now, token, Ok(id), 0).is_some());
                                }
                                Answer::Refuse(reason) => {
                                    assert!(node
                                        .fa
                                        .accept_result(now, token, Err(reason), 0)
                                        .is_none());
                                }
                                Answer::Hold => node.held.push(token),
                            }
                        }
                        other => node.events.push((now, other)),
                    }
                }
            }
            if wire.is_empty() {
                return;
            }
            for (from, dst, bytes) in wire {
                self.deliver(from, dst, &bytes);
            }
        }
        panic!("the allocators never went quiet");
    }

    pub fn deliver(&mut self, from: usize, dst: Mac, bytes: &[u8]) {
        let to = 1 - from;
        if dst != self.nodes[to].mac && dst != BROADCAST {
            return;
        }
        let frame = Frame::parse(bytes).expect("valid frame");
        if (self.drop)(from, &frame) {
            return;
        }
        let (now, src_mac) = (self.now, self.nodes[from].mac);
        let node = &mut self.nodes[to];
        if let Payload::Data(_) = frame.payload {
            let got = node.fa.data_rx(now, src_mac, frame.dst, frame.src);
            node.data.push((now, got));
        } else {
            node.fa.handle_frame(now, src_mac, &frame);
        }
    }

    /// A frame from `src_mac` (a forger, or a third host) arrives at node
    /// `to` now; whatever it provokes is delivered (to the other node only:
    /// frames to any other MAC are lost, as for an off-path attacker).
    pub fn forge(&mut self, to: usize, src_mac: Mac, frame: &Frame<'_>) -> Option<u32> {
        let now = self.now;
        let node = &mut self.nodes[to];
        let got = if let Payload::Data(_) = frame.payload {
            let got = node.fa.data_rx(now, src_mac, frame.dst, frame.src);
            node.data.push((now, got));
            got
        } else {
            node.fa.handle_frame(now, src_mac, frame);
            None
        };
        self.pump();
        got
    }

    /// Run every deadline up to and including `t`, then stop the clock at `t`.
    pub fn advance_to(&mut self, t: Duration) {
        for step in 0..1_000_000 {
            let next = [A, B]
                .iter()
                .filter_map(|&i| self.nodes[i].fa.poll_timeout())
                .min();
            match next {
                Some(deadline) if deadline <= t => {
                    // handle_timeout runs everything due: a deadline that
                    // does not move past it would spin forever.
                    assert!(
                        step == 0 || deadline > self.now,
                        "deadline {deadline:?} stuck at {:?}",
                        self.now
                    );
                    self.now = self.now.max(deadline);
                    for i in [A, B] {
                        self.nodes[i].fa.handle_timeout(self.now);
                    }
                    self.pump();
                }
                _ => {
                    self.now = self.now.max(t);
                    return;
                }
            }
        }
        panic!("a deadline never went away");
    }

    pub fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.advance_to(t);
    }

    pub fn alloc(&mut self, from: usize, flow_id: u32, name: &str, timeout_ms: u64) -> Eid {
        let now = self.now;
        let qos = irm::Qos::raw().with_timeout(timeout_ms);
        let eid = self.nodes[from]
            .fa
            .alloc(now, flow_id, name_hash(name), qos, timeout_ms);
        self.pump();
        eid
    }

    pub fn dealloc(&mut self, at: usize, flow_id: u32) {
        let now = self.now;
        self.nodes[at].fa.dealloc(now, flow_id);
        self.pump();
    }

    /// Send one SDU on `flow_id` from node `from`; false if the flow cannot send.
    pub fn send_data(&mut self, from: usize, flow_id: u32) -> bool {
        let now = self.now;
        let Some((mac, remote, local)) = self.nodes[from].fa.data_tx(now, flow_id) else {
            return false;
        };
        let bytes = Frame {
            dst: remote,
            src: local,
            payload: Payload::Data(b"sdu"),
        }
        .to_vec();
        self.deliver(from, mac, &bytes);
        self.pump();
        true
    }

    pub fn alloc_result(
        &self,
        at: usize,
        flow_id: u32,
    ) -> Option<(Duration, Result<u32, irm::Error>)> {
        self.nodes[at].events.iter().find_map(|(t, a)| match a {
            Action::AllocDone {
                flow_id: id,
                result,
            } if *id == flow_id => Some((*t, result.clone())),
            _ => None,
        })
    }

    pub fn states(&self, at: usize, flow_id: u32) -> Vec<(Duration, DownCause)> {
        self.nodes[at]
            .events
            .iter()
            .filter_map(|(t, a)| match a {
                Action::FlowState { flow_id: id, cause } if *id == flow_id => Some((*t, *cause)),
                _ => None,
            })
            .collect()
    }

    pub fn all_states(&self, at: usize) -> usize {
        self.nodes[at]
            .events
            .iter()
            .filter(|(_, a)| matches!(a, Action::FlowState { .. }))
            .count()
    }

    pub fn flow_reqs_arrived(&self, at: usize) -> usize {
        self.nodes[at]
            .events
            .iter()
            .filter(|(_, a)| matches!(a, Action::FlowReqArrived { .. }))
            .count()
    }

    pub fn sent(&self, at: usize, kind: FrameType, from: Duration, to: Duration) -> Vec<Duration> {
        self.nodes[at]
            .sent
            .iter()
            .filter(|s| s.kind == kind && s.at >= from && s.at <= to)
            .map(|s| s.at)
            .collect()
    }

    pub fn count_sent(&self, at: usize, kind: FrameType) -> usize {
        self.nodes[at]
            .sent
            .iter()
            .filter(|s| s.kind == kind)
            .count()
    }
}

/// A (flow 1) allocates a flow to "srv" on B (which accepts it as flow 100).
pub fn connected(timeout_ms: u64) -> Net {
    connected_with(timeout_ms, Policy::default())
}

/// As [`connected`], with B running `policy_b`.
pub fn connected_with(timeout_ms: u64, policy_b: Policy) -> Net {
    let mut net = Net::new();
    net.nodes[B] = Node::with_policy(MAC_B, INSTANCE_B, 1480, policy_b);
    net.nodes[B].fa.register_name(name_hash("srv"));
    let eid = net.alloc(A, 1, "srv", timeout_ms);
    assert!(!eid.is_none());
    let (_, result) = net.alloc_result(A, 1).expect("allocation answered at once");
    assert_eq!(result, Ok(1480));
    net
}

pub fn is_type(frame: &Frame<'_>, kind: FrameType) -> bool {
    frame.frame_type() == kind
}
