//! `queues` > 1: one worker thread per extra receive queue
//! (docs/decisions/0031-receive-queues.md).
//!
//! Queue 0 is the IPCP's own event loop: it keeps the flow allocator (the one
//! owner of [`crate::fa`]), irmd's channel, the link, every management frame,
//! and the data of the flows pinned to queue 0, exactly as with one queue.
//! Each other queue is a [`Worker`] thread with its own socket of the
//! backend's fanout group; a flow is pinned to the queue of its local
//! endpoint id ([`queue_of`]), which is also where the kernel steers its
//! received DATA frames, so one thread carries all of a flow's SDUs, both
//! ways, in order.
//!
//! What crosses threads, and how:
//!
//! * allocator → worker ([`Command`], channel + eventfd): adopt a flow (its
//!   shared memory), its route (peer MAC and both eids, from
//!   [`FlowAllocator::data_route`]) or no route, flush its send ring before
//!   a deallocation (synchronously: the DEALLOC must follow the last SDU),
//!   forget it.
//! * worker → allocator ([`Event`], bounded channel + eventfd): frames the
//!   worker cannot place (a management frame that reached it, a DATA frame
//!   for an eid it has no route for or another queue's) and a flow found
//!   with corrupt memory. The allocator checks such a DATA frame with
//!   [`FlowAllocator::data_rx`] and, when it belongs to a worker's flow,
//!   sends it back to that worker ([`Command::Deliver`]): only a flow's own
//!   worker ever writes into its receive ring. A worker that detoured frames
//!   of its own flow this way takes that flow's next frames the same way
//!   until the detoured ones came back, so the flow's SDUs keep their order
//!   while its route is being learnt.
//! * liveness: per flow, the time of the last received and last sent frame
//!   ([`Live`], atomics the worker stores once per batch). The allocator
//!   reads them every [`SYNC_GAP`] and before every timer it handles, and
//!   tells the flow allocator ([`FlowAllocator::data_heard`]/`data_sent`).
//!
//! The worker proves what [`FlowAllocator::data_rx`] proves before it
//! delivers: the frame's source MAC is the flow's peer and both eids match.

use super::*;
use crate::raw::fanout::{self, Member};
use crate::segment::SegmentFilter;
use crate::wire::Eid;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::Arc;

pub(super) use crate::raw::fanout::queue_of;

/// Largest default queue count (more queues than this rarely pay).
pub const DEFAULT_MAX_QUEUES: usize = 16;
/// How often every worker flow's route and liveness are synchronised.
const SYNC_GAP: Duration = Duration::from_millis(5);
/// Frames a worker may have waiting for the allocator; beyond, it drops
/// (and counts) them: a flood of unknown eids must not grow memory.
const FORWARD_ROOM: usize = 4096;
/// How long a gone flow's management frames (DEALLOC and its
/// retransmissions) still leave through its worker.
const RETIRED_FOR: Duration = Duration::from_secs(30);
/// How long the allocator waits for a worker to flush a flow.
const FLUSH_WAIT: Duration = Duration::from_millis(500);

const W_SOCK: u64 = 0;
const W_CMD: u64 = 1;

/// (peer MAC, remote eid, local eid).
pub(super) type Route = (Mac, Eid, Eid);

/// Times (ns since the IPCP's start, 0 = never) of a flow's last received
/// and sent DATA frame, written by its worker, read by the allocator.
#[derive(Default)]
pub(super) struct Live {
    rx_ns: AtomicU64,
    tx_ns: AtomicU64,
}

/// Per-queue frame counters, shown by `irm ipcp list`.
#[derive(Default)]
pub(super) struct QueueStats {
    rx_frames: AtomicU64,
    tx_frames: AtomicU64,
    /// Frames handed to the allocator.
    forwarded: AtomicU64,
    /// Frames dropped because the allocator's queue was full.
    forward_drops: AtomicU64,
    /// Frames of our ethertype that do not parse (counted here, as the
    /// allocator's loop counts its own).
    malformed: AtomicU64,
    /// The counters of the worker's socket(s), as of its last look.
    sock: std::sync::Mutex<Vec<(&'static str, u64)>>,
}

/// How often a worker copies its socket's counters for the allocator.
const SOCK_COUNTERS_EVERY: Duration = Duration::from_millis(250);

pub(super) enum Command {
    Adopt {
        flow_id: u32,
        end: Arc<IpcpEnd>,
        local: Eid,
        live: Arc<Live>,
    },
    Route {
        flow_id: u32,
        route: Option<Route>,
    },
    Flush {
        flow_id: u32,
        done: SyncSender<()>,
    },
    Forget {
        flow_id: u32,
    },
    /// A DATA frame of the flow, checked by the flow allocator; `detoured`:
    /// this worker forwarded it.
    Deliver {
        flow_id: u32,
        frame: Vec<u8>,
        detoured: bool,
    },
    /// A frame this worker detoured for the flow was refused.
    Returned {
        flow_id: u32,
    },
    /// Set the flow's state word, after the frames handed to the worker
    /// before it (data that came before a DEALLOC is read before it).
    State {
        flow_id: u32,
        state: FlowState,
    },
    /// Send this whole frame (a management frame of one of the worker's
    /// flows: it must follow the flow's data on the same queue).
    Transmit(Vec<u8>),
    /// The group was reopened for a larger MTU: this queue's new socket
    /// (admitting frames once the old one is closed), frames up to `room`.
    Socket {
        member: Box<Member>,
        admission: fanout::Admission,
        room: usize,
    },
}

pub(super) enum Event {
    /// A frame for the allocator; `detour`: the worker's own flow it is for.
    Frame {
        frame: Vec<u8>,
        detour: Option<u32>,
    },
    Corrupt(u32, Error),
}

/// The allocator's handle on one worker.
struct Handle {
    cmds: Sender<Command>,
    wake: Arc<EventFd>,
    stats: Arc<QueueStats>,
}

impl Handle {
    fn send(&self, c: Command) {
        if self.cmds.send(c).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

/// A flow a worker carries, as the allocator tracks it.
struct Owned {
    queue: usize,
    local: Eid,
    live: Arc<Live>,
    route: Option<Route>,
    seen_rx: u64,
    seen_tx: u64,
}

/// The workers of queues 1..n, as the allocator's loop holds them.
pub(super) struct Pool {
    queues: usize,
    workers: Vec<Handle>,
    owned: HashMap<u32, Owned>,
    /// Local eid → (flow id, queue) of every worker flow.
    by_eid: HashMap<Eid, (u32, usize)>,
    /// Local eid → (queue, when) of worker flows gone lately.
    retired: BTreeMap<Eid, (usize, Instant)>,
    /// Worker flows without a route yet: looked at every loop turn.
    unrouted: BTreeSet<u32>,
    events: Receiver<Event>,
    events_fd: Arc<EventFd>,
    next_sync: Instant,
    group: Option<Arc<fanout::Group>>,
}

/// How many queues to run: `--queues`, else the interface's receive queue
/// count capped at the CPUs and [`DEFAULT_MAX_QUEUES`]. A layer key needs one
/// queue (its replay windows and send counters are one thread's state).
pub(super) fn queues_wanted(opts: &Options, keyed: bool) -> usize {
    let asked = opts.queues.map(usize::from);
    let want = asked.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        rx_queue_count(&opts.dev).min(cpus).min(DEFAULT_MAX_QUEUES)
    });
    if want > 1 && keyed {
        if asked.is_some() {
            warn!("queues {want}: a layer key runs on one queue.");
        }
        return 1;
    }
    want.max(1)
}

/// Receive queues the interface has (from sysfs; 1 when unknown).
pub fn rx_queue_count(dev: &str) -> usize {
    if dev.contains('/') || dev.starts_with('.') {
        return 1;
    }
    std::fs::read_dir(format!("/sys/class/net/{dev}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// Open the raw backend's fanout group: member 0 is the allocator's socket,
/// the others go to `rest` for the workers.
pub(super) fn open_fanout(
    ifindex: i32,
    ethertype: u16,
    filter: SegmentFilter,
    queues: usize,
    rest: &mut Vec<Box<dyn FrameIo + Send>>,
    group: &mut Option<Arc<fanout::Group>>,
) -> Result<Box<dyn FrameIo>, String> {
    let mut members = fanout::open_group(ifindex, ethertype, filter, queues)
        .map_err(|e| format!("cannot open {queues} packet sockets in a fanout group: {e}"))?;
    let rest_members: Vec<Member> = members.split_off(1);
    rest.extend(
        rest_members
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn FrameIo + Send>),
    );
    let first = members.pop().expect("one member at least");
    *group = first.group();
    info!("raw: {queues} queues (PACKET_FANOUT by destination endpoint).");
    Ok(Box::new(first))
}

/// Open the xdp backend and split its AF_XDP sockets (one per receive
/// queue of the interface) into `queues` sets, at most one per socket: set 0
/// stays with the allocator's loop, the others go to `rest`.
pub(super) fn open_xdp(
    dev: &str,
    ifindex: i32,
    ethertype: u16,
    mtu: u32,
    filter: SegmentFilter,
    queues: usize,
    rest: &mut Vec<Box<dyn FrameIo + Send>>,
) -> Result<Box<dyn FrameIo>, String> {
    let ifindex = u32::try_from(ifindex).map_err(|_| format!("bad interface index {ifindex}"))?;
    let mut b = crate::xdp::XdpBackend::open(dev, ifindex, ethertype, mtu, filter)?;
    if b.socket_count() < queues {
        warn!(
            "queues {queues}: {dev} has {} receive queue(s); backend xdp runs {}.",
            b.socket_count(),
            b.socket_count()
        );
    }
    let sets = b
        .split(queues)
        .map_err(|e| format!("cannot split the AF_XDP sockets into queues: {e}"))?;
    info!(
        "xdp: {} queues (one AF_XDP socket set each).",
        sets.len() + 1
    );
    rest.extend(
        sets.into_iter()
            .map(|s| Box::new(s) as Box<dyn FrameIo + Send>),
    );
    Ok(Box::new(b))
}

/// Give the control channel an fd above every other: when the process is
/// killed, the kernel releases its files highest fd first, and each packet
/// socket's release waits for an RCU grace period. With several sockets
/// irmd would hear of the death (the channel's close) only after all of
/// them — measured: 120-135 ms for four, where one socket stays under the
/// 100 ms the liveness suite allows. Keeps the old fd when no high fd is free.
pub(super) fn ctrl_last(ctrl: CtrlSocket) -> CtrlSocket {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::os::fd::AsRawFd;
    for floor in [65_000, 4_000, 1_000] {
        if let Ok(fd) = fcntl(ctrl.as_fd().as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(floor)) {
            if let Ok(high) = CtrlSocket::inherited(fd) {
                return high;
            }
        }
    }
    ctrl
}

/// What every worker shares with the allocator.
pub(super) struct Shared {
    /// The raw backend's fanout group (reopened when the MTU grows).
    pub group: Option<Arc<fanout::Group>>,
    pub start: Instant,
    pub mac: Mac,
    pub ethertype: u16,
    pub frame_room: usize,
}

impl Pool {
    /// Start a worker per socket of `rest` (queues 1..); `None` with none.
    pub(super) fn start(
        rest: Vec<Box<dyn FrameIo + Send>>,
        epoll: &Epoll,
        token: u64,
        shared: Shared,
    ) -> Result<Option<Pool>, String> {
        if rest.is_empty() {
            return Ok(None);
        }
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        let events_fd = Arc::new(EventFd::from_flags(flags).map_err(err)?);
        epoll
            .add(
                events_fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, token),
            )
            .map_err(err)?;
        let (ev_tx, ev_rx) = mpsc::sync_channel(FORWARD_ROOM);
        let queues = rest.len() + 1;
        let mut workers = Vec::new();
        for (i, sock) in rest.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let wake = Arc::new(EventFd::from_flags(flags).map_err(err)?);
            let stats = Arc::new(QueueStats::default());
            let w = Worker::new(
                i + 1,
                sock,
                rx,
                wake.clone(),
                ev_tx.clone(),
                events_fd.clone(),
                stats.clone(),
                &shared,
            )
            .map_err(err)?;
            std::thread::Builder::new()
                .name(format!("queue-{}", i + 1))
                .spawn(move || w.run())
                .map_err(err)?;
            workers.push(Handle {
                cmds: tx,
                wake,
                stats,
            });
        }
        Ok(Some(Pool {
            queues,
            workers,
            owned: HashMap::new(),
            by_eid: HashMap::new(),
            retired: BTreeMap::new(),
            unrouted: BTreeSet::new(),
            events: ev_rx,
            events_fd,
            next_sync: Instant::now(),
            group: shared.group.clone(),
        }))
    }

    fn handle(&self, queue: usize) -> Option<&Handle> {
        queue.checked_sub(1).and_then(|i| self.workers.get(i))
    }
}

/// The allocator's side: hooks its loop calls.
impl Ipcp {
    /// A flow got its endpoint id: hand it to its queue's worker (queue 0
    /// keeps it in this loop).
    pub(super) fn pool_adopt(&mut self, flow_id: u32, local: Eid) {
        let Some(pool) = &mut self.workers else {
            return;
        };
        let queue = queue_of(local, pool.queues);
        let (Some(h), Some(f)) = (pool.handle(queue), self.flows.get_mut(&flow_id)) else {
            return;
        };
        // From now on only the worker reads the flow's send ring: this loop
        // stops polling its fd, and the flow counts as active here while it
        // is not in `active`, so a wake-up already fetched in this loop turn
        // never lists it again.
        let _ = self.epoll.delete(f.end.ipcp_fd());
        f.active = true;
        self.active.retain(|&x| x != flow_id);
        let live = Arc::new(Live::default());
        h.send(Command::Adopt {
            flow_id,
            end: f.end.clone(),
            local,
            live: live.clone(),
        });
        pool.owned.insert(
            flow_id,
            Owned {
                queue,
                local,
                live,
                route: None,
                seen_rx: 0,
                seen_tx: 0,
            },
        );
        pool.unrouted.insert(flow_id);
        pool.by_eid.insert(local, (flow_id, queue));
    }

    /// Flush a worker's flow (its last SDUs go before the DEALLOC). False
    /// when this loop carries the flow itself.
    pub(super) fn pool_flush(&mut self, flow_id: u32) -> bool {
        let Some(pool) = &self.workers else {
            return false;
        };
        let Some(h) = pool.owned.get(&flow_id).and_then(|o| pool.handle(o.queue)) else {
            return false;
        };
        let (done, wait) = mpsc::sync_channel(1);
        h.send(Command::Flush { flow_id, done });
        if wait.recv_timeout(FLUSH_WAIT).is_err() {
            warn!("flow {flow_id}: its queue did not flush in time.");
        }
        true
    }

    /// The flow is gone: its worker lets go of it.
    pub(super) fn pool_forget(&mut self, flow_id: u32) {
        let Some(pool) = &mut self.workers else {
            return;
        };
        pool.unrouted.remove(&flow_id);
        if let Some(o) = pool.owned.remove(&flow_id) {
            pool.by_eid.remove(&o.local);
            pool.retired.insert(o.local, (o.queue, Instant::now()));
            if let Some(h) = pool.handle(o.queue) {
                h.send(Command::Forget { flow_id });
            }
        }
    }

    /// The fd that is readable when the workers have frames or news.
    pub(super) fn pool_events_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.workers.as_ref().map(|p| p.events_fd.as_fd())
    }

    /// Frames and news from the workers.
    pub(super) fn pool_events(&mut self) {
        let Some(pool) = &self.workers else {
            return;
        };
        let _ = pool.events_fd.read();
        let mut batch = Vec::new();
        while let Ok(ev) = pool.events.try_recv() {
            batch.push(ev);
            if batch.len() >= BATCH * RX_ROUNDS {
                // Let the loop breathe; the eventfd keeps the rest pending.
                let _ = pool.events_fd.write(1);
                break;
            }
        }
        let now = self.now();
        for ev in batch {
            match ev {
                Event::Frame { frame, detour } => {
                    if self.worker_data(now, &frame, detour) {
                        continue;
                    }
                    handle_frame(
                        &mut self.fa,
                        &self.flows,
                        &mut self.to_wake,
                        &mut self.corrupt,
                        &mut self.counters,
                        self.link.mac,
                        self.ethertype,
                        now,
                        &frame,
                    );
                }
                Event::Corrupt(id, e) => {
                    if !self.corrupt.iter().any(|(c, _)| *c == id) {
                        self.corrupt.push((id, e));
                    }
                }
            }
        }
        for id in self.to_wake.drain(..) {
            if let Some(f) = self.flows.get(&id) {
                f.wake_pending.set(false);
                f.end.wake_rx();
            }
        }
        self.end_corrupt_flows();
        self.carry_out_actions();
    }

    /// A DATA frame for a worker's flow, forwarded by a worker: checked by
    /// the flow allocator and sent to the flow's worker, or refused. False
    /// when the frame is not for a worker's flow (the caller handles it).
    fn worker_data(&mut self, now: Duration, frame: &[u8], detour: Option<u32>) -> bool {
        let Some(pool) = &self.workers else {
            return false;
        };
        let Some((eth, view)) = EthHeader::parse(frame)
            .ok()
            .and_then(|(eth, rest)| Some((eth, HeaderView::new_checked(rest).ok()?)))
        else {
            return false;
        };
        if view.frame_type() != FrameType::Data
            || eth.ethertype != self.ethertype
            || eth.src == self.link.mac
        {
            return false;
        }
        let Some(&(flow_id, queue)) = pool.by_eid.get(&view.dst()) else {
            return false;
        };
        let Some(h) = pool.handle(queue) else {
            return false;
        };
        let detoured = detour == Some(flow_id);
        match self.fa.data_rx(now, eth.src, view.dst(), view.src()) {
            Some(id) if id == flow_id => h.send(Command::Deliver {
                flow_id,
                frame: frame.to_vec(),
                detoured,
            }),
            other => {
                if other.is_none() {
                    self.counters.unknown_eid += 1;
                }
                if detoured {
                    h.send(Command::Returned { flow_id });
                }
            }
        }
        true
    }

    /// A worker's flow changes state: its worker sets it, after the frames
    /// it was handed before. False when this loop carries the flow.
    pub(super) fn pool_state(&mut self, flow_id: u32, state: FlowState) -> bool {
        let Some(pool) = &self.workers else {
            return false;
        };
        let Some(h) = pool.owned.get(&flow_id).and_then(|o| pool.handle(o.queue)) else {
            return false;
        };
        h.send(Command::State { flow_id, state });
        true
    }

    /// A management frame (ethflow header on) of a worker's flow — its
    /// source eid is the flow's — goes out through that worker, after the
    /// flow's data: a DEALLOC sent by another thread could overtake the last
    /// SDUs on the way (other queue, other CPU) and end the flow at the peer
    /// before they are read. False when this loop sends it itself.
    pub(super) fn pool_send_mgmt(&mut self, dst: Mac, frame: &[u8]) -> bool {
        let Some(pool) = &self.workers else {
            return false;
        };
        let Some(queue) = HeaderView::new_checked(frame).ok().and_then(|v| {
            let src = v.src();
            (pool.by_eid.get(&src).map(|&(_, q)| q)).or(pool.retired.get(&src).map(|&(q, _)| q))
        }) else {
            return false;
        };
        let Some(h) = pool.handle(queue) else {
            return false;
        };
        let mut buf = vec![0u8; ETH_HEADER_LEN + frame.len()];
        EthHeader {
            dst,
            src: self.link.mac,
            ethertype: self.ethertype,
        }
        .emit(&mut buf);
        buf[ETH_HEADER_LEN..].copy_from_slice(frame);
        h.send(Command::Transmit(buf));
        true
    }

    /// Routes to the workers, liveness from them: the flows still waiting
    /// for a route every turn, every flow each [`SYNC_GAP`] and before the
    /// flow allocator handles a timer.
    pub(super) fn pool_sync(&mut self) {
        let Some(pool) = &mut self.workers else {
            return;
        };
        if let Some(g) = &pool.group {
            for (queue, member) in g.take_handoff() {
                let room = ETH_HEADER_LEN + self.link.mtu as usize + 64;
                match member.admission() {
                    Ok(admission) => {
                        if let Some(h) = pool.handle(queue) {
                            h.send(Command::Socket {
                                member: Box::new(member),
                                admission,
                                room,
                            });
                        }
                    }
                    Err(e) => warn!("queue {queue}: cannot take the reopened socket: {e}"),
                }
            }
        }
        let now = self.start.elapsed();
        let timer_due = self.fa.poll_timeout().is_some_and(|t| t <= now);
        let all = timer_due || Instant::now() >= pool.next_sync;
        let ids: Vec<u32> = if all {
            pool.next_sync = Instant::now() + SYNC_GAP;
            pool.retired.retain(|_, (_, at)| at.elapsed() < RETIRED_FOR);
            let mut v: Vec<u32> = pool.owned.keys().copied().collect();
            v.sort_unstable();
            v
        } else {
            pool.unrouted.iter().copied().collect()
        };
        for id in ids {
            let Some(o) = pool.owned.get_mut(&id) else {
                continue;
            };
            let rx = o.live.rx_ns.load(Ordering::Relaxed);
            if rx > o.seen_rx {
                o.seen_rx = rx;
                self.fa.data_heard(Duration::from_nanos(rx), id);
            }
            let tx = o.live.tx_ns.load(Ordering::Relaxed);
            if tx > o.seen_tx {
                o.seen_tx = tx;
                self.fa.data_sent(Duration::from_nanos(tx), id);
            }
            let route = self.fa.data_route(id);
            if route != o.route {
                o.route = route;
                if let Some(h) = o.queue.checked_sub(1).and_then(|i| pool.workers.get(i)) {
                    h.send(Command::Route { flow_id: id, route });
                }
            }
            if route.is_some() {
                pool.unrouted.remove(&id);
            } else {
                pool.unrouted.insert(id);
            }
        }
    }

    /// Per-queue counters for `irm ipcp list` (none with one queue), added
    /// to `c`; the workers' malformed frames count in `malformed` too.
    pub(super) fn pool_counters(&self, all: &mut Vec<(String, u64)>) {
        let Some(pool) = &self.workers else {
            return;
        };
        let malformed: u64 = pool
            .workers
            .iter()
            .map(|h| h.stats.malformed.load(Ordering::Relaxed))
            .sum();
        if let Some((_, v)) = all.iter_mut().find(|(k, _)| k == "malformed") {
            *v += malformed;
        }
        // The workers' sockets count what the backend refused (segment
        // filter, kernel drops) under the same names as queue 0's.
        for h in &pool.workers {
            let sock = h.stats.sock.lock().unwrap_or_else(|e| e.into_inner());
            for &(name, n) in sock.iter() {
                match all.iter_mut().find(|(k, _)| k == name) {
                    Some((_, v)) => *v += n,
                    None => all.push((name.to_string(), n)),
                }
            }
        }
        let mut c = vec![
            ("queues".to_string(), pool.queues as u64),
            ("q0_rx_frames".to_string(), self.counters.rx_frames),
            ("q0_tx_frames".to_string(), self.counters.tx_frames),
        ];
        for (i, h) in pool.workers.iter().enumerate() {
            let q = i + 1;
            let s = &h.stats;
            for (name, v) in [
                ("rx_frames", &s.rx_frames),
                ("tx_frames", &s.tx_frames),
                ("forwarded", &s.forwarded),
                ("forward_drops", &s.forward_drops),
                ("malformed", &s.malformed),
            ] {
                c.push((format!("q{q}_{name}"), v.load(Ordering::Relaxed)));
            }
        }
        all.extend(c);
    }
}

/// Where [`Worker::classify`] sends a received frame.
enum Rx {
    /// Into the flow's ring; the SDU's bytes in the frame.
    Flow(u32, std::ops::Range<usize>),
    /// To the allocator, for this worker's flow.
    Detour(u32),
    /// To the allocator.
    Allocator,
    /// Counted and dropped, as the allocator's loop does.
    Malformed,
    /// Not ours (our own frame, another ethertype): dropped.
    Ignored,
}

/// A flow as its worker holds it.
struct WFlow {
    end: Arc<IpcpEnd>,
    local: Eid,
    live: Arc<Live>,
    route: Option<Route>,
    active: bool,
    wake_pending: bool,
    /// Frames of this flow sent to the allocator and not yet back: while
    /// any are out, the flow's frames all take that way (order).
    detour: u32,
}

/// One queue's thread: its socket, its flows' rings.
struct Worker {
    queue: usize,
    sock: Box<dyn FrameIo + Send>,
    epoll: Epoll,
    cmds: Receiver<Command>,
    wake: Arc<EventFd>,
    events: SyncSender<Event>,
    events_fd: Arc<EventFd>,
    stats: Arc<QueueStats>,
    start: Instant,
    mac: Mac,
    ethertype: u16,
    flows: HashMap<u32, WFlow>,
    /// Local eid → flow id, for received frames.
    by_eid: HashMap<Eid, u32>,
    active: Vec<u32>,
    to_wake: Vec<u32>,
    rx_bufs: Vec<Vec<u8>>,
    rx_lens: Vec<usize>,
    tx_bufs: Vec<Vec<u8>>,
    tx_lens: [usize; BATCH],
    counters: Counters,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    fn new(
        queue: usize,
        sock: Box<dyn FrameIo + Send>,
        cmds: Receiver<Command>,
        wake: Arc<EventFd>,
        events: SyncSender<Event>,
        events_fd: Arc<EventFd>,
        stats: Arc<QueueStats>,
        s: &Shared,
    ) -> nix::Result<Worker> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sock.rx_fd(), EpollEvent::new(EpollFlags::EPOLLIN, W_SOCK))?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, W_CMD))?;
        Ok(Worker {
            queue,
            sock,
            epoll,
            cmds,
            wake,
            events,
            events_fd,
            stats,
            start: s.start,
            mac: s.mac,
            ethertype: s.ethertype,
            flows: HashMap::new(),
            by_eid: HashMap::new(),
            active: Vec::new(),
            to_wake: Vec::new(),
            rx_bufs: (0..BATCH).map(|_| vec![0u8; s.frame_room]).collect(),
            rx_lens: vec![0; BATCH],
            tx_bufs: (0..BATCH).map(|_| vec![0u8; s.frame_room]).collect(),
            tx_lens: [0; BATCH],
            counters: Counters::default(),
        })
    }

    fn now_ns(&self) -> u64 {
        (self.start.elapsed().as_nanos() as u64).max(1)
    }

    /// Until the allocator goes away.
    fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        let mut next_counters = Instant::now();
        loop {
            if Instant::now() >= next_counters {
                next_counters = Instant::now() + SOCK_COUNTERS_EVERY;
                let c = self.sock.counters();
                *self.stats.sock.lock().unwrap_or_else(|e| e.into_inner()) = c;
            }
            let timeout = if self.active.is_empty() {
                EpollTimeout::from(100u16)
            } else {
                EpollTimeout::ZERO
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    warn!("queue {}: epoll failed: {e}", self.queue);
                    return;
                }
            };
            let mut sock_ready = false;
            for ev in &events[..n] {
                match ev.data() {
                    W_SOCK => sock_ready = true,
                    W_CMD => {}
                    t if t & TOKEN_FLOW != 0 => self.tx_woken((t & 0xffff_ffff) as u32),
                    _ => {}
                }
            }
            if !self.commands() {
                return;
            }
            if sock_ready {
                self.receive();
            }
            self.transmit();
        }
    }

    /// Carry out the allocator's commands; false once it is gone.
    fn commands(&mut self) -> bool {
        let _ = self.wake.read();
        loop {
            match self.cmds.try_recv() {
                Ok(c) => self.command(c),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Adopt {
                flow_id,
                end,
                local,
                live,
            } => {
                let token = TOKEN_FLOW | u64::from(flow_id);
                if let Err(e) = self
                    .epoll
                    .add(end.ipcp_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    warn!("queue {}: flow {flow_id}: {e}", self.queue);
                }
                self.by_eid.insert(local, flow_id);
                self.flows.insert(
                    flow_id,
                    WFlow {
                        end,
                        local,
                        live,
                        route: None,
                        active: false,
                        wake_pending: false,
                        detour: 0,
                    },
                );
            }
            Command::Route { flow_id, route } => {
                if let Some(f) = self.flows.get_mut(&flow_id) {
                    f.route = route;
                    // SDUs written before the route came wait in the ring.
                    if route.is_some() && !f.active {
                        f.active = true;
                        self.active.push(flow_id);
                    }
                }
            }
            Command::Flush { flow_id, done } => {
                self.flush(flow_id);
                let _ = done.try_send(());
            }
            Command::Deliver {
                flow_id,
                frame,
                detoured,
            } => self.deliver_checked(flow_id, &frame, detoured),
            Command::State { flow_id, state } => {
                if let Some(f) = self.flows.get(&flow_id) {
                    f.end.set_state(state);
                }
            }
            Command::Transmit(frame) => match self.sock.send_batch(&[&frame]) {
                Ok(k) => {
                    self.counters.tx_frames += k as u64;
                    self.stats.tx_frames.fetch_add(k as u64, Ordering::Relaxed);
                }
                Err(e) => debug!("queue {}: management frame not sent: {e}", self.queue),
            },
            Command::Returned { flow_id } => {
                if let Some(f) = self.flows.get_mut(&flow_id) {
                    f.detour = f.detour.saturating_sub(1);
                }
            }
            Command::Socket {
                member,
                admission,
                room,
            } => {
                let _ = self.epoll.delete(self.sock.rx_fd());
                for b in self.rx_bufs.iter_mut().chain(self.tx_bufs.iter_mut()) {
                    b.resize(room, 0);
                }
                // The old socket closes here, before the new one admits.
                drop(std::mem::replace(&mut self.sock, member));
                if let Err(e) = admission.admit() {
                    warn!("queue {}: new socket refuses frames: {e}", self.queue);
                }
                if let Err(e) = self.epoll.add(
                    self.sock.rx_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, W_SOCK),
                ) {
                    warn!("queue {}: cannot poll the new socket: {e}", self.queue);
                }
            }
            Command::Forget { flow_id } => {
                if let Some(f) = self.flows.remove(&flow_id) {
                    let _ = self.epoll.delete(f.end.ipcp_fd());
                    self.by_eid.remove(&f.local);
                }
                self.active.retain(|&x| x != flow_id);
            }
        }
    }

    fn tx_woken(&mut self, id: u32) {
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if f.end.clear_tx_wakeup() == TxWake::Closed {
            let _ = self.epoll.delete(f.end.ipcp_fd());
        }
        if !f.active && f.route.is_some() {
            f.active = true;
            self.active.push(id);
        }
    }

    /// Hand a frame to the allocator (`detour`: for this worker's flow).
    fn forward(&mut self, frame: Vec<u8>, detour: Option<u32>) {
        let ev = Event::Frame { frame, detour };
        match self.events.try_send(ev) {
            Ok(()) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let _ = self.events_fd.write(1);
                if let Some(f) = detour.and_then(|id| self.flows.get_mut(&id)) {
                    f.detour += 1;
                }
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A frame the allocator checked and sent back: into the flow's ring.
    fn deliver_checked(&mut self, id: u32, frame: &[u8], detoured: bool) {
        let now = self.now_ns();
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if detoured {
            f.detour = f.detour.saturating_sub(1);
        }
        let at = ETH_HEADER_LEN + HEADER_LEN;
        let Some(sdu) = HeaderView::new_checked(&frame[ETH_HEADER_LEN.min(frame.len())..])
            .ok()
            .map(|v| at..at + v.payload().len())
        else {
            return;
        };
        match f.end.push_rx(&frame[sdu]) {
            Ok(true) => f.live.rx_ns.store(now, Ordering::Relaxed),
            Ok(false) => self.counters.rx_dropped_full += 1,
            Err(e @ Error::Invalid(_)) => self.corrupt(id, e),
            Err(e) => debug!("flow {id}: {e}"),
        }
    }

    fn corrupt(&mut self, id: u32, e: Error) {
        if let Some(f) = self.flows.get_mut(&id) {
            f.route = None;
            f.active = false;
        }
        self.active.retain(|&x| x != id);
        if self.events.try_send(Event::Corrupt(id, e)).is_ok() {
            let _ = self.events_fd.write(1);
        }
    }

    /// Where a received frame goes: straight into a flow of this worker
    /// (the proof [`FlowAllocator::data_rx`] asks for: peer MAC and both
    /// eids), to the allocator for one of this worker's flows, or to the
    /// allocator.
    fn classify(&self, frame: &[u8]) -> Rx {
        let Ok((eth, rest)) = EthHeader::parse(frame) else {
            return Rx::Malformed;
        };
        if eth.src == self.mac || eth.ethertype != self.ethertype {
            return Rx::Ignored;
        }
        let Ok(view) = HeaderView::new_checked(rest) else {
            return Rx::Malformed;
        };
        if view.frame_type() != FrameType::Data {
            return Rx::Allocator;
        }
        let Some((id, f)) = self
            .by_eid
            .get(&view.dst())
            .and_then(|id| Some((*id, self.flows.get(id)?)))
        else {
            return Rx::Allocator;
        };
        match f.route {
            Some((mac, remote, _)) if f.detour == 0 && mac == eth.src && remote == view.src() => {
                let at = ETH_HEADER_LEN + HEADER_LEN;
                Rx::Flow(id, at..at + view.payload().len())
            }
            _ => Rx::Detour(id),
        }
    }

    fn receive(&mut self) {
        for _ in 0..RX_ROUNDS {
            let n = match self.sock.recv_batch(&mut self.rx_bufs, &mut self.rx_lens) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => 0,
                Err(e) => {
                    warn!("queue {}: receive failed: {e}", self.queue);
                    0
                }
            };
            if n == 0 {
                break;
            }
            self.stats.rx_frames.fetch_add(n as u64, Ordering::Relaxed);
            for i in 0..n {
                let frame = &self.rx_bufs[i][..self.rx_lens[i]];
                let (id, sdu) = match self.classify(frame) {
                    Rx::Flow(id, sdu) => (id, sdu),
                    Rx::Detour(id) => {
                        self.forward(frame.to_vec(), Some(id));
                        continue;
                    }
                    Rx::Allocator => {
                        self.forward(frame.to_vec(), None);
                        continue;
                    }
                    Rx::Malformed => {
                        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Rx::Ignored => continue,
                };
                let frame = &self.rx_bufs[i][..self.rx_lens[i]];
                let Some(f) = self.flows.get_mut(&id) else {
                    continue;
                };
                match f.end.push_rx_quiet(&frame[sdu]) {
                    Ok(true) => {
                        if !f.wake_pending {
                            f.wake_pending = true;
                            self.to_wake.push(id);
                        }
                    }
                    Ok(false) => self.counters.rx_dropped_full += 1,
                    Err(e @ Error::Invalid(_)) => self.corrupt(id, e),
                    Err(e) => debug!("flow {id}: {e}"),
                }
            }
            let now = self.now_ns();
            for id in std::mem::take(&mut self.to_wake) {
                if let Some(f) = self.flows.get_mut(&id) {
                    f.wake_pending = false;
                    f.live.rx_ns.store(now, Ordering::Relaxed);
                    f.end.wake_rx();
                }
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Send a batch from each active flow, as the allocator's loop does.
    fn transmit(&mut self) {
        let (mac, ethertype) = (self.mac, self.ethertype);
        for _ in 0..TX_ROUNDS {
            if self.active.is_empty() {
                return;
            }
            let mut count = 0;
            let mut i = 0;
            let mut broken = Vec::new();
            while i < self.active.len() && count < BATCH {
                let id = self.active[i];
                let Some(f) = self.flows.get_mut(&id) else {
                    self.active.swap_remove(i);
                    continue;
                };
                let Some(route) = f.route else {
                    f.active = false;
                    self.active.swap_remove(i);
                    continue;
                };
                let before = count;
                let fill = fill_batch(
                    &f.end,
                    Some(route),
                    &mut self.tx_bufs,
                    &mut self.tx_lens,
                    &mut count,
                    mac,
                    ethertype,
                );
                if count > before {
                    f.live.tx_ns.store(
                        (self.start.elapsed().as_nanos() as u64).max(1),
                        Ordering::Relaxed,
                    );
                }
                match fill {
                    Fill::Emptied if f.end.arm_tx_wakeup() => {
                        f.active = false;
                        self.active.swap_remove(i);
                    }
                    Fill::Broken(e) => {
                        self.active.swap_remove(i);
                        broken.push((id, e));
                    }
                    Fill::Emptied | Fill::BatchFull => i += 1,
                }
            }
            self.send(count);
            for (id, e) in broken {
                self.corrupt(id, e);
            }
        }
    }

    fn send(&mut self, count: usize) {
        let before = self.counters.tx_frames;
        send_built(
            &mut *self.sock,
            &self.tx_bufs,
            &self.tx_lens[..count],
            &mut self.counters,
        );
        self.stats
            .tx_frames
            .fetch_add(self.counters.tx_frames - before, Ordering::Relaxed);
    }

    /// Send all that waits in one flow's send ring (before its DEALLOC).
    fn flush(&mut self, id: u32) {
        let (mac, ethertype) = (self.mac, self.ethertype);
        let Some(f) = self.flows.get(&id) else {
            return;
        };
        let Some(route) = f.route else {
            return;
        };
        let end = f.end.clone();
        for _ in 0..end.geometry().slots as usize / BATCH + 2 {
            let mut count = 0;
            let fill = fill_batch(
                &end,
                Some(route),
                &mut self.tx_bufs,
                &mut self.tx_lens,
                &mut count,
                mac,
                ethertype,
            );
            self.send(count);
            if !matches!(fill, Fill::BatchFull) {
                break;
            }
        }
    }
}
