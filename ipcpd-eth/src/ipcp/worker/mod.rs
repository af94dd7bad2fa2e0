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
/// The worker's linger timer ([`super::rx_watch::LINGER`]).
const W_LINGER: u64 = 2;

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

mod hooks;
mod thread;
use thread::Worker;
