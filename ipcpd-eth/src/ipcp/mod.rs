//! The IPCP's event loop: one thread, one epoll set over the packet socket,
//! the irmd control socket and every flow's wake-up pipe. The flow allocator
//! ([`crate::fa`]) decides; this module only moves bytes and time into it and
//! carries its actions out.
//!
//! The receive side never blocks on a flow: a full receive ring drops that
//! flow's SDU (counted in its shared memory) and the loop goes on, so
//! management frames are always read. A flow whose shared memory the
//! application corrupted is ended (DOWN here and at the peer, irmd told, one
//! log line), never served again.

use crate::backend::FrameIo;
use crate::fa::{Action, Config, FlowAllocator, OsEntropy, Policy};
use crate::layer_key::shell::{overhead, Keyed};
use crate::link::{CarrierProbe, LinkEvent, LinkMonitor};
use crate::raw::{link_info, LinkInfo, RawSocket, BATCH};
use crate::wire::{EthHeader, Frame, FrameType, HeaderView, Mac, ETH_HEADER_LEN, HEADER_LEN};
use irm::ctrl::{CtrlSocket, Received};
use irm::proto::{
    name_hash, DownCause, Envelope, FlowCounters, FlowState, IpcpHello, IpcpInfo, IpcpToIrmd,
    IrmdToIpcp, RingGeometry, PROTO_VERSION,
};
use irm::shm::{IpcpEnd, RxStager, ShmMap, TxWake};
use irm::Error;
use log::{debug, info, warn};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::timerfd::TimerFd;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use frames::{fill_from, handle_frame, send_built, Fill, RxDeliver, TxCtx};
use rx_wake::DeferredWakes;
use rx_watch::{linger_timer, start_linger, RxWatch};

const TOKEN_SOCK: u64 = 0;
const TOKEN_CTRL: u64 = 1;
const TOKEN_LINK: u64 = 2;
const TOKEN_SIGNAL: u64 = 3;
/// SIGTERM/SIGINT ([`shutdown::stop_signals`]).
const TOKEN_STOP: u64 = 4;
const TOKEN_WORKERS: u64 = 5;
/// The timer of a lingering loop ([`rx_watch::LINGER`]).
const TOKEN_LINGER: u64 = 6;
const TOKEN_FLOW: u64 = 1 << 32;
/// Receive batches per loop turn before the send side gets its turn.
const RX_ROUNDS: usize = 8;
/// How often the carrier is probed (netlink may announce a loss a second late).
const CARRIER_PROBE: Duration = Duration::from_millis(20);
/// Send batches per loop turn before the receive side gets its turn.
const TX_ROUNDS: usize = 8;

pub struct Options {
    pub name: String,
    pub layer: String,
    pub dev: String,
    pub ethertype: u16,
    pub backend: String,
    pub busy_poll: Duration,
    /// 802.1Q VLAN id of the layer (`None`: untagged frames only).
    pub vlan: Option<u16>,
    /// Longest liveness timeout a remote requester may ask for.
    pub max_remote_timeout: Duration,
    /// Layer key file (`--key`): every frame is sealed and verified.
    pub key: Option<std::path::PathBuf>,
    /// Encrypt payloads too (`--encrypt`, needs a key).
    pub encrypt: bool,
    /// Receive queues asked for (`--queues`); `None`: the interface's.
    pub queues: Option<u16>,
}

/// One flow as the IPCP holds it.
struct FlowIo {
    /// Shared with the flow's queue worker when `queues` > 1.
    end: std::sync::Arc<IpcpEnd>,
    /// Our endpoint id, once the flow allocator gave one.
    eid: Option<crate::wire::Eid>,
    /// Its send ring may hold SDUs: serve it without waiting for a wake-up.
    active: bool,
    /// SDUs went into its receive ring during this batch; wake the reader once.
    wake_pending: std::cell::Cell<bool>,
    /// Its reader's wake-up waits in [`Ipcp::rx_wakes`].
    wake_deferred: std::cell::Cell<bool>,
    /// SDUs dropped on the way out because they were larger than the link
    /// carries now (the MTU shrank after the flow's ring was sized).
    tx_oversize: std::cell::Cell<u64>,
    /// The max SDU the last such drop was announced (logged) for.
    oversize_told: std::cell::Cell<usize>,
    /// (tx SDUs, rx SDUs, dropped, last frame from the peer) last reported
    /// to irmd: a keep-alive moves the last, so an idle flow is reported
    /// once per keep-alive, a busy one at most once per report interval.
    reported: Option<(u64, u64, u64, u64)>,
}

impl FlowIo {
    fn new(end: IpcpEnd, active: bool) -> FlowIo {
        FlowIo {
            end: std::sync::Arc::new(end),
            eid: None,
            active,
            wake_pending: std::cell::Cell::new(false),
            wake_deferred: std::cell::Cell::new(false),
            tx_oversize: std::cell::Cell::new(0),
            oversize_told: std::cell::Cell::new(0),
            reported: None,
        }
    }

    /// An SDU of `len` bytes could not go: the link carries `max_sdu` now.
    /// Counted on the flow; announced once per max SDU.
    fn oversize(&self, flow_id: u32, len: usize, max_sdu: usize) {
        self.tx_oversize.set(self.tx_oversize.get() + 1);
        if self.oversize_told.replace(max_sdu) != max_sdu {
            warn!(
                "flow {flow_id}: max SDU is now {max_sdu} B (the MTU shrank); an SDU of {len} B was dropped, and larger SDUs on this flow are dropped and counted."
            );
        }
    }
}

/// Counters of frames the IPCP refused.
#[derive(Default, Debug)]
struct Counters {
    rx_frames: u64,
    tx_frames: u64,
    malformed: u64,
    unknown_eid: u64,
    rx_dropped_full: u64,
}

impl Counters {
    fn named(&self) -> Vec<(String, u64)> {
        vec![
            ("rx_frames".into(), self.rx_frames),
            ("tx_frames".into(), self.tx_frames),
            ("malformed".into(), self.malformed),
            ("unknown_eid".into(), self.unknown_eid),
            ("rx_ring_full".into(), self.rx_dropped_full),
        ]
    }
}

/// Room in each frame buffer beyond Ethernet header + MTU (a VLAN tag,
/// a layer key's trailer).
const FRAME_SLACK: usize = 64;

/// Least gap between two walks over a peer's flows to record a keep-alive.
const KEEPALIVE_TOUCH_GAP: Duration = Duration::from_millis(50);

/// How often changed counters are reported to irmd.
const COUNTER_REPORT: Duration = Duration::from_secs(1);

pub struct Ipcp {
    opts: Options,
    ctrl: CtrlSocket,
    sock: Box<dyn FrameIo>,
    /// Whether `sock` is in the epoll set (out while busy receiving).
    rx_watch: RxWatch,
    /// Ends a lingering loop's timed sleep (`None`: no timer, no lingering).
    linger_timer: Option<TimerFd>,
    /// The allocator's peer-table generation the backend last heard of.
    peers_told: u64,
    ethertype: u16,
    link: LinkInfo,
    link_monitor: LinkMonitor,
    carrier: CarrierProbe,
    next_probe: Instant,
    fa: FlowAllocator,
    epoll: Epoll,
    start: Instant,
    flows: HashMap<u32, FlowIo>,
    /// irmd's envelope id for each pending allocation.
    alloc_replies: HashMap<u32, u64>,
    active: Vec<u32>,
    rx_bufs: Vec<Vec<u8>>,
    rx_lens: Vec<usize>,
    tx_bufs: Vec<Vec<u8>>,
    /// Lengths of the frames built this round (in `tx_bufs` or the
    /// backend's transmit ring).
    tx_lens: [usize; BATCH],
    /// Flows whose SDUs are published at the end of the receive batch.
    to_wake: Vec<u32>,
    /// Flows whose sleeping readers are woken once the loop is done
    /// receiving for a while ([`rx_wake`]).
    rx_wakes: DeferredWakes,
    /// Flows found with a corrupt ring, ended at the end of the loop turn.
    corrupt: Vec<(u32, Error)>,
    counters: Counters,
    /// What irmd last heard, and when it may hear again.
    reported: Vec<(String, u64)>,
    next_report: Instant,
    /// The layer key, when the IPCP was bootstrapped with one.
    keyed: Option<Keyed>,
    /// The workers of queues 1.. (`queues` > 1, see `worker`).
    workers: Option<worker::Pool>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Ipcp {
    /// Greet irmd on the channel it gave us, open the interface, and report
    /// the outcome to irmd.
    pub fn start(opts: Options, ctrl: CtrlSocket) -> Result<Ipcp, String> {
        ctrl.send(
            &IpcpHello {
                version: PROTO_VERSION,
                name: opts.name.clone(),
            },
            &[],
        )
        .map_err(err)?;
        match ctrl.recv::<IrmdToIpcp>().map_err(err)? {
            Some(Received {
                env:
                    Envelope {
                        msg: IrmdToIpcp::Welcome(Ok(())),
                        ..
                    },
                ..
            }) => {}
            Some(Received {
                env:
                    Envelope {
                        msg: IrmdToIpcp::Welcome(Err(e)),
                        ..
                    },
                ..
            }) => return Err(format!("irmd refused us: {e}")),
            other => {
                return Err(format!(
                    "unexpected answer from irmd: {:?}",
                    other.map(|r| r.env.msg)
                ))
            }
        }
        match Self::open(opts, ctrl.try_clone().map_err(err)?) {
            Ok(ipcp) => {
                let info = IpcpInfo {
                    mac: ipcp.link.mac,
                    mtu: ipcp.link.mtu,
                    max_sdu: ipcp.max_sdu(),
                    backend: ipcp.sock.name(),
                };
                ctrl.send(
                    &Envelope {
                        id: 0,
                        msg: IpcpToIrmd::Bootstrapped(Ok(info)),
                    },
                    &[],
                )
                .map_err(err)?;
                Ok(ipcp)
            }
            Err(e) => {
                let _ = ctrl.send(
                    &Envelope {
                        id: 0,
                        msg: IpcpToIrmd::Bootstrapped(Err(e.clone())),
                    },
                    &[],
                );
                // Let irmd read why before it sees this process exit: close
                // our side and wait (bounded) until irmd closes its own, so
                // the operator gets the reason, not just an exit status.
                let _ = nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(&ctrl.as_fd()),
                    nix::sys::socket::Shutdown::Write,
                );
                let mut fds = [nix::poll::PollFd::new(
                    ctrl.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16));
                Err(e)
            }
        }
    }

    fn open(opts: Options, ctrl: CtrlSocket) -> Result<Ipcp, String> {
        let link =
            link_info(&opts.dev).map_err(|e| format!("cannot use interface {}: {e}", opts.dev))?;
        if (link.mtu as usize) <= HEADER_LEN {
            return Err(format!("MTU {} of {} is too small", link.mtu, opts.dev));
        }
        // The key first: a refused key file must not touch the interface.
        let keyed = match &opts.key {
            Some(path) => Some(Keyed::open(path, opts.encrypt, opts.vlan).map_err(err)?),
            None if opts.encrypt => return Err("encrypt needs a layer key (key <file>)".into()),
            None => None,
        };
        let filter = crate::segment::SegmentFilter {
            mac: link.mac,
            vlan: opts.vlan,
            keyed: keyed.is_some(),
        };
        let queues = worker::queues_wanted(&opts, keyed.is_some());
        let (mut queue_socks, mut group) = (Vec::new(), None);
        // Backend raw (chosen or fallen back to): one packet socket, or a
        // fanout group of one per queue.
        let open_raw = |socks: &mut Vec<Box<dyn FrameIo + Send>>,
                        group: &mut Option<_>|
         -> Result<Box<dyn FrameIo>, String> {
            if queues > 1 {
                return worker::open_fanout(
                    link.ifindex,
                    opts.ethertype,
                    filter,
                    queues,
                    socks,
                    group,
                );
            }
            let s = RawSocket::open(link.ifindex, opts.ethertype, filter).map_err(|e| {
                format!(
                    "cannot open a packet socket on {}: {e} (are you root?)",
                    opts.dev
                )
            })?;
            Ok(Box::new(s))
        };
        let sock: Box<dyn FrameIo> = match opts.backend.as_str() {
            "raw" => open_raw(&mut queue_socks, &mut group)?,
            // Beyond a chain of AF_XDP chunks an MTU goes to raw, and says so
            // (the IPCP's backend name tells irmd and `irm ipcp list`).
            "xdp" | "auto" if link.mtu > crate::xdp::MAX_SG_MTU => {
                warn!(
                    "backend {}: xdp carries MTUs up to {} and {} has MTU {}; falling back to backend raw.",
                    opts.backend,
                    crate::xdp::MAX_SG_MTU,
                    opts.dev,
                    link.mtu
                );
                open_raw(&mut queue_socks, &mut group)?
            }
            // Multi-buffer AF_XDP (frames of several chunks): when the kernel
            // or the driver refuses it, raw carries the MTU, announced.
            "xdp" | "auto" if link.mtu > crate::xdp::MAX_MTU => {
                let opened = if queues > 1 {
                    worker::open_xdp(
                        &opts.dev,
                        link.ifindex,
                        opts.ethertype,
                        link.mtu,
                        filter,
                        queues,
                        &mut queue_socks,
                    )
                } else {
                    crate::xdp::open(&opts.dev, link.ifindex, opts.ethertype, link.mtu, filter)
                };
                match opened {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(
                            "backend {}: multi-buffer xdp for MTU {} (above {}) unavailable ({e}); falling back to backend raw.",
                            opts.backend,
                            link.mtu,
                            crate::xdp::MAX_MTU
                        );
                        queue_socks.clear();
                        open_raw(&mut queue_socks, &mut group)?
                    }
                }
            }
            "xdp" | "auto" if queues > 1 => match worker::open_xdp(
                &opts.dev,
                link.ifindex,
                opts.ethertype,
                link.mtu,
                filter,
                queues,
                &mut queue_socks,
            ) {
                Ok(s) => s,
                Err(e) if opts.backend == "auto" => {
                    warn!("backend auto: xdp unavailable ({e}); falling back to raw.");
                    open_raw(&mut queue_socks, &mut group)?
                }
                Err(e) => return Err(e),
            },
            "xdp" => crate::xdp::open(&opts.dev, link.ifindex, opts.ethertype, link.mtu, filter)?,
            "auto" => {
                match crate::xdp::open(&opts.dev, link.ifindex, opts.ethertype, link.mtu, filter) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("backend auto: xdp unavailable ({e}); falling back to raw.");
                        open_raw(&mut queue_socks, &mut group)?
                    }
                }
            }
            other => return Err(format!("unknown backend {other} (raw, xdp, auto)")),
        };
        let ctrl = match queue_socks.is_empty() {
            true => ctrl,
            false => worker::ctrl_last(ctrl),
        };
        let link_monitor = LinkMonitor::open(link.ifindex as u32)
            .map_err(|e| format!("cannot watch the link: {e}"))?;
        // Re-read after subscribing, so no change slips between the two.
        let mut link =
            link_info(&opts.dev).map_err(|e| format!("cannot use interface {}: {e}", opts.dev))?;
        if !link.up {
            warn!(
                "interface {} is down or has no carrier; flows will fail until it is up.",
                opts.dev
            );
        }
        let carrier =
            CarrierProbe::new(&opts.dev).map_err(|e| format!("cannot probe {}: {e}", opts.dev))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(err)?;
        epoll
            .add(
                link_monitor.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LINK),
            )
            .map_err(err)?;
        epoll
            .add(
                sock.rx_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SOCK),
            )
            .map_err(err)?;
        epoll
            .add(
                ctrl.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CTRL),
            )
            .map_err(err)?;
        let linger_timer = linger_timer(&epoll, TOKEN_LINGER);
        if let Some(limit) = sock.max_mtu() {
            if limit < link.mtu {
                warn!(
                    "backend {} carries frames up to MTU {limit}, below the link's {}: max SDU follows {limit}.",
                    sock.name(),
                    link.mtu
                );
                link.mtu = limit;
            }
        }
        if let Some(k) = &keyed {
            epoll
                .add(
                    k.signal_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
                )
                .map_err(err)?;
            info!("Using the {}.", k.describe());
        }
        let overhead = overhead(keyed.is_some());
        if (link.mtu as usize) <= overhead {
            return Err(format!("MTU {} of {} is too small", link.mtu, opts.dev));
        }
        let max_sdu = link.mtu - overhead as u32;
        let policy = Policy {
            max_remote_timeout: opts.max_remote_timeout,
            ..Policy::default()
        };
        // Instance nonce 0 here: the allocator draws it from the OS source.
        let fa = FlowAllocator::with(
            Config {
                instance: 0,
                max_sdu,
            },
            policy,
            Box::new(OsEntropy),
        )
        .map_err(err)?;
        let frame_room = ETH_HEADER_LEN + link.mtu as usize + FRAME_SLACK;
        if queues > 1 && queue_socks.is_empty() {
            warn!("backend {}: one queue ({queues} asked).", sock.name());
        }
        let start = Instant::now();
        let shared = worker::Shared {
            group,
            start,
            mac: link.mac,
            ethertype: opts.ethertype,
            frame_room,
        };
        let workers = worker::Pool::start(queue_socks, &epoll, TOKEN_WORKERS, shared)?;
        info!(
            "IPCP {} bootstrapped on {} (ifindex {}, MTU {}, max SDU {max_sdu}, ethertype 0x{:04x}, backend {}).",
            opts.name,
            opts.dev,
            link.ifindex,
            link.mtu,
            opts.ethertype,
            sock.name()
        );
        Ok(Ipcp {
            fa,
            ethertype: opts.ethertype,
            opts,
            ctrl,
            rx_watch: RxWatch::new(sock.rx_is_ring()),
            linger_timer,
            sock,
            peers_told: 0,
            link,
            link_monitor,
            carrier,
            next_probe: Instant::now(),
            epoll,
            start,
            flows: HashMap::new(),
            alloc_replies: HashMap::new(),
            active: Vec::new(),
            rx_bufs: (0..BATCH).map(|_| vec![0u8; frame_room]).collect(),
            rx_lens: vec![0; BATCH],
            tx_bufs: (0..BATCH).map(|_| vec![0u8; frame_room]).collect(),
            tx_lens: [0; BATCH],
            to_wake: Vec::with_capacity(BATCH),
            rx_wakes: DeferredWakes::default(),
            corrupt: Vec::new(),
            counters: Counters::default(),
            reported: Vec::new(),
            next_report: Instant::now(),
            keyed,
            workers,
        })
    }

    /// Carrier or MTU changed, or the interface went away.
    fn link_changed(&mut self) {
        let now = self.now();
        for ev in self.link_monitor.poll_events() {
            match ev {
                LinkEvent::Down { mtu } => {
                    if self.link.up {
                        warn!(
                            "link {} is down: every flow over it is down.",
                            self.opts.dev
                        );
                        self.fa.link_down(now);
                    }
                    self.link.up = false;
                    if let Some(m) = mtu {
                        self.mtu_changed(m);
                    }
                }
                LinkEvent::Gone => {
                    warn!(
                        "interface {} is gone: every flow over it is down.",
                        self.opts.dev
                    );
                    if self.link.up {
                        self.fa.link_down(now);
                    }
                    self.link.up = false;
                }
                LinkEvent::Up { mtu } => {
                    if !self.link.up {
                        info!("link {} is up again.", self.opts.dev);
                    }
                    self.link.up = true;
                    if let Some(m) = mtu {
                        self.mtu_changed(m);
                    }
                }
            }
        }
        self.carry_out_actions();
    }

    /// Catch a carrier loss before linkwatch announces it.
    fn probe_carrier(&mut self) {
        self.next_probe = Instant::now() + CARRIER_PROBE;
        let up = self.carrier.carrier().unwrap_or(false);
        if up == self.link.up {
            return;
        }
        if up {
            info!("link {} has carrier again.", self.opts.dev);
        } else {
            warn!(
                "link {} lost its carrier: every flow over it is down.",
                self.opts.dev
            );
            self.fa.link_down(self.now());
        }
        self.link.up = up;
        self.carry_out_actions();
    }

    /// New flows get the new maximum SDU; irmd hears of it for their rings;
    /// running flows' applications see it in their flows' memory.
    fn mtu_changed(&mut self, mtu: u32) {
        self.sock.link_mtu(mtu);
        if let Some(fresh) = self.sock.reopen_for_mtu(mtu) {
            match fresh.and_then(|s| {
                self.epoll
                    .add(s.rx_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SOCK))
                    .map(|_| s)
                    .map_err(std::io::Error::from)
            }) {
                Ok(mut s) => {
                    let _ = self.epoll.delete(self.sock.rx_fd());
                    s.link_mtu(mtu);
                    self.rx_watch = RxWatch::new(s.rx_is_ring());
                    self.sock = s;
                    info!("backend {} reopened for MTU {mtu}.", self.sock.name());
                }
                Err(e) => {
                    warn!("cannot reopen the backend for MTU {mtu}: {e}; max SDU keeps its limit.")
                }
            }
        }
        let mtu = self.sock.max_mtu().map_or(mtu, |limit| mtu.min(limit));
        if mtu == self.link.mtu || (mtu as usize) <= overhead(self.keyed.is_some()) {
            return;
        }
        info!(
            "MTU of {} changed from {} to {mtu}.",
            self.opts.dev, self.link.mtu
        );
        self.link.mtu = mtu;
        self.fa.set_max_sdu(self.max_sdu());
        // Running flows' applications learn the new limit at their next
        // write (EMSGSIZE above it); what they wrote before is checked here
        // on the way out (`fill_from`), dropped and counted if too large.
        for f in self.flows.values() {
            f.end.set_link_max_sdu(self.max_sdu());
        }
        let room = ETH_HEADER_LEN + mtu as usize + FRAME_SLACK;
        for b in self.rx_bufs.iter_mut().chain(self.tx_bufs.iter_mut()) {
            b.resize(room, 0);
        }
        let info = IpcpInfo {
            mac: self.link.mac,
            mtu,
            max_sdu: self.max_sdu(),
            backend: self.sock.name(),
        };
        self.reply(0, IpcpToIrmd::Bootstrapped(Ok(info)));
    }

    fn max_sdu(&self) -> u32 {
        self.link.mtu - overhead(self.keyed.is_some()) as u32
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Run until irmd goes away.
    pub fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        let stop = shutdown::stop_signals();
        if let Some(fd) = &stop {
            if let Err(e) = self
                .epoll
                .add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_STOP))
            {
                warn!("cannot watch SIGTERM: {e}");
            }
        }
        let mut last_work = Instant::now();
        loop {
            let spinning =
                !self.opts.busy_poll.is_zero() && last_work.elapsed() < self.opts.busy_poll;
            let timeout = if !self.active.is_empty() || spinning || self.rx_watch.busy() {
                EpollTimeout::ZERO
            } else {
                match self.fa.poll_timeout() {
                    Some(t) => {
                        let now = self.now();
                        let ms = t
                            .saturating_sub(now)
                            .min(CARRIER_PROBE)
                            .as_micros()
                            .div_ceil(1000) as u16;
                        EpollTimeout::from(ms)
                    }
                    None => EpollTimeout::from(CARRIER_PROBE.as_millis() as u16),
                }
            };
            if timeout != EpollTimeout::ZERO {
                // No reader may sleep on an SDU while this loop sleeps.
                self.wake_readers();
                if !self.linger() {
                    // This wait may block: the packet socket must be watched.
                    let c = self.rx_watch.before_sleep();
                    self.rx_watch
                        .apply(c, &self.epoll, self.sock.rx_fd(), TOKEN_SOCK);
                }
                // Counted with the wake-up statistics.
                irm::shm::note_sleep();
            }
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    warn!("epoll failed: {e}");
                    return;
                }
            };
            if n > 0 || !self.active.is_empty() {
                last_work = Instant::now();
            } else if spinning {
                // Nothing yet: let an application sharing this core run (it
                // is usually the one about to answer), then look again.
                std::thread::yield_now();
            }
            // While spinning or unwatched, look at the socket even without an event.
            let mut sock_ready = spinning || self.rx_watch.look_anyway();
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_SOCK => sock_ready = true,
                    TOKEN_LINK => self.link_changed(),
                    TOKEN_WORKERS => self.pool_events(),
                    TOKEN_SIGNAL => {
                        if let Some(k) = &mut self.keyed {
                            k.reload();
                        }
                    }
                    TOKEN_CTRL if !self.control() => {
                        info!("irmd closed the connection; IPCP {} exits.", self.opts.name);
                        self.release_all(true);
                        return;
                    }
                    TOKEN_STOP => {
                        let sig = stop.as_ref().and_then(|fd| fd.read_signal().ok().flatten());
                        let signo = sig.map_or(0, |s| s.ssi_signo);
                        info!("IPCP {} exiting on signal {signo}.", self.opts.name);
                        self.release_all(false);
                        return;
                    }
                    t if t & TOKEN_FLOW != 0 => {
                        let id = (t & 0xffff_ffff) as u32;
                        if let Some(f) = self.flows.get_mut(&id) {
                            if f.end.clear_tx_wakeup() == TxWake::Closed {
                                // Nobody can wake this flow again; its fd
                                // would stay readable for ever. irmd
                                // deallocates it soon.
                                let _ = self.epoll.delete(f.end.ipcp_fd());
                            }
                            if !f.active {
                                f.active = true;
                                self.active.push(id);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if sock_ready {
                let got = self.receive();
                let c = self.rx_watch.received(got);
                self.rx_watch
                    .apply(c, &self.epoll, self.sock.rx_fd(), TOKEN_SOCK);
                if got > 0 {
                    last_work = Instant::now();
                }
            }
            if self.rx_wakes.due(self.rx_watch.busy(), last_work) {
                self.wake_readers();
            }
            self.transmit();
            if Instant::now() >= self.next_probe {
                self.probe_carrier();
            }
            if Instant::now() >= self.next_report {
                self.report_counters();
            }
            self.pool_sync();
            let now = self.now();
            if self.fa.poll_timeout().is_some_and(|t| t <= now) {
                self.fa.handle_timeout(now);
            }
            self.carry_out_actions();
        }
    }

    /// Arm the linger timer if the loop may linger: it then sleeps at most
    /// [`rx_watch::LINGER`] with its socket out of the set, and looks at the
    /// socket after the wait as it does every turn while out.
    fn linger(&mut self) -> bool {
        start_linger(self.linger_timer.as_ref(), &mut self.rx_watch)
    }

    /// Wake the readers of every flow that got SDUs since the last time, if
    /// they sleep ([`rx_wake`]).
    fn wake_readers(&mut self) {
        if self.rx_wakes.is_empty() {
            return;
        }
        for id in self.rx_wakes.take() {
            if let Some(f) = self.flows.get(&id) {
                f.wake_deferred.set(false);
                f.end.wake_rx_reader();
            }
        }
    }

    /// End every flow found with a corrupt ring, as if its application had
    /// deallocated it: DOWN in its state word, DEALLOC to the peer, irmd told
    /// (which logs the flow down); its memory is unmapped and its fds closed.
    /// One warning per flow: it is never looked at again.
    fn end_corrupt_flows(&mut self) {
        if self.corrupt.is_empty() {
            return;
        }
        let now = self.now();
        for (flow_id, e) in std::mem::take(&mut self.corrupt) {
            let Some(f) = self.flows.get(&flow_id) else {
                continue;
            };
            warn!("flow {flow_id}: the application corrupted its shared memory ({e}); flow ended.");
            f.end.set_state(FlowState::Down);
            self.fa.dealloc(now, flow_id);
            self.detach(flow_id);
            self.reply(
                0,
                IpcpToIrmd::FlowState {
                    flow_id,
                    cause: DownCause::RingCorrupt,
                },
            );
        }
        self.carry_out_actions();
    }

    fn carry_out_actions(&mut self) {
        let peers = self.fa.peers_generation();
        if peers != self.peers_told {
            self.peers_told = peers;
            self.sock.peers_changed(&self.fa.peer_macs());
        }
        while let Some(a) = self.fa.poll_action() {
            match a {
                Action::Transmit { dst, frame } => self.send_mgmt(dst, &frame),
                Action::AllocDone { flow_id, result } => {
                    let id = self.alloc_replies.remove(&flow_id).unwrap_or(0);
                    if result.is_err() {
                        self.detach(flow_id);
                    }
                    self.reply(id, IpcpToIrmd::FlowAllocResult { flow_id, result });
                }
                Action::FlowReqArrived {
                    token,
                    name_hash,
                    qos,
                    max_sdu,
                } => self.reply(
                    0,
                    IpcpToIrmd::FlowReqArrived {
                        token,
                        name_hash,
                        qos,
                        max_sdu,
                    },
                ),
                Action::FlowState { flow_id, cause } => self.flow_state(flow_id, cause),
                Action::NameConflict {
                    name_hash,
                    kept,
                    other,
                } => warn!(
                    "flow-allocator: name {:02x?}… answered by {:02x?} and by {:02x?}; using {:02x?}.",
                    &name_hash[..4],
                    kept,
                    other,
                    kept
                ),
            }
        }
    }

    fn send_mgmt(&mut self, dst: Mac, frame: &[u8]) {
        if self.pool_send_mgmt(dst, frame) {
            return;
        }
        let trailer = overhead(self.keyed.is_some()) - HEADER_LEN;
        let mut buf = vec![0u8; ETH_HEADER_LEN + frame.len() + trailer];
        EthHeader {
            dst,
            src: self.link.mac,
            ethertype: self.ethertype,
        }
        .emit(&mut buf);
        buf[ETH_HEADER_LEN..ETH_HEADER_LEN + frame.len()].copy_from_slice(frame);
        if let Some(k) = &mut self.keyed {
            if let Err(e) = k.seal(&mut buf, ETH_HEADER_LEN + frame.len()) {
                warn!("management frame not sent: {e}");
                return;
            }
        }
        let sent = self.sock.send_batch(&[&buf]);
        if let Ok(k) = sent {
            self.counters.tx_frames += k as u64;
        }
        if let Err(e) = sent {
            if self.link.up {
                warn!("cannot send a management frame: {e}");
            } else {
                debug!("link down, management frame not sent: {e}");
            }
        }
    }
}

mod control;
mod frames;
mod rx_wake;
mod rx_watch;
mod shutdown;
#[cfg(test)]
mod tests;
mod worker;
