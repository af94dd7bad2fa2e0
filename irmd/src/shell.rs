//! The thin shell around the registry: one thread, one epoll set over the
//! listening socket, every client connection and every IPCP channel. It reads
//! messages, decodes them with the type the connection's role allows, feeds
//! them to the [`Registry`] with the current time, and carries out what comes
//! back (send, spawn, kill, create and drop flow memory). The registry holds no
//! lock, so nothing is ever sent or signalled "under" it; a client that does not
//! read gets its replies queued (bounded), never a blocking send.

use crate::registry::{ConnId, Cred, FdsOf, Input, IpcpId, Output, Registry};
use crate::spawn::spawn_ipcp;

mod service;
use irm::ctrl::{CtrlListener, CtrlSocket, PeerCred, RawReceived};
use irm::proto::{
    decode, encode, peek_version, AppRequest, CliRequest, ClientHello, ClientRole, Envelope,
    IpcpHello, IpcpToIrmd, IrmdToIpcp, Reply, RingGeometry, PROTO_VERSION,
};
use irm::shm::{self, FlowFds, Monitor};
use irm::Error;
use log::{error, info, warn};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::Child;
use std::time::{Duration, Instant};

const TOKEN_LISTENER: u64 = 0;
/// The signalfd of SIGINT/SIGTERM (kind 0 like the listener).
const TOKEN_SIGNAL: u64 = 1;
const KIND_CONN: u64 = 1 << 62;
const KIND_IPCP: u64 = 2 << 62;
const KIND_METRICS: u64 = 3 << 62;
const KIND_MASK: u64 = 3 << 62;
/// Messages read from one connection per turn, so one chatty client cannot
/// starve the others.
const READS_PER_TURN: usize = 16;
/// Connections accepted per turn, so a connection flood cannot starve the
/// clients already connected.
const ACCEPTS_PER_TURN: usize = 64;
/// Replies queued for a client that does not read; past this it is cut off.
/// (irmd stops reading a client's requests while replies wait for it, so the
/// queue grows only by replies to requests already read, such as accepts.)
const MAX_QUEUED: usize = 1024;

/// A message waiting to be sent, with duplicates of its fds.
struct Queued {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

struct Client {
    sock: CtrlSocket,
    cred: PeerCred,
    role: Option<ClientRole>,
    queue: VecDeque<Queued>,
}

struct IpcpProc {
    chan: CtrlSocket,
    child: Child,
    /// Its hello came and was right.
    greeted: bool,
    name: String,
    queue: VecDeque<Queued>,
}

/// A flow's memory, kept by the shell (the registry only names it). The
/// fds for the two ends are let go once the application's are sent (the
/// IPCP's always go first), leaving irmd only the monitor's.
struct FlowMem {
    fds: Option<FlowFds>,
    monitor: Monitor,
}

pub struct Shell {
    reg: Registry,
    epoll: Epoll,
    listener: CtrlListener,
    clients: HashMap<ConnId, Client>,
    ipcps: HashMap<IpcpId, IpcpProc>,
    /// Children told to stop, not yet reaped.
    dying: Vec<Child>,
    /// Programs started on demand (auto-start), reaped when they exit.
    started: Vec<Child>,
    flows: HashMap<u32, FlowMem>,
    next_conn: ConnId,
    max_remote_timeout_ms: Option<u64>,
    /// Replies to the configuration's requests ([`service::config_conn`]).
    config_replies: Vec<(u64, Reply)>,
    /// systemd's watchdog: ping every half interval, and when last pinged.
    watchdog: Option<(Duration, Instant)>,
    /// `--metrics`: the Prometheus endpoint (token KIND_METRICS | 0 for the
    /// listener, | id for a connection).
    metrics: Option<crate::metrics_http::Server>,
    /// SIGINT/SIGTERM, read in the loop; `stop` once one came.
    signals: Option<nix::sys::signalfd::SignalFd>,
    stop: bool,
}

/// Root, or CAP_NET_ADMIN in the effective set of the process that
/// connected. The capability is read from /proc by pid, and believed only if
/// the pidfd the kernel gave for the connecting process (SO_PEERPIDFD) still
/// names a live process with that pid after the read: so a pid recycled by
/// another process cannot lend it its capabilities. Without SO_PEERPIDFD only
/// root is an admin.
fn is_admin(sock: &CtrlSocket, cred: &PeerCred) -> bool {
    if cred.uid == 0 {
        return true;
    }
    let Ok(pidfd) = sock.peer_pidfd() else {
        return false;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", cred.pid)) else {
        return false;
    };
    let cap = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u32 = 12;
    if cap & (1 << CAP_NET_ADMIN) == 0 {
        return false;
    }
    // The pidfd's process: its pid, or -1 once it exited.
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        == Some(i64::from(cred.pid))
}

impl Shell {
    pub fn new(
        reg: Registry,
        listener: CtrlListener,
        max_remote_timeout_ms: Option<u64>,
    ) -> irm::Result<Shell> {
        listener.set_nonblocking()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            listener.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
        )?;
        Ok(Shell {
            reg,
            epoll,
            listener,
            clients: HashMap::new(),
            ipcps: HashMap::new(),
            dying: Vec::new(),
            started: Vec::new(),
            flows: HashMap::new(),
            next_conn: 1,
            max_remote_timeout_ms,
            config_replies: Vec::new(),
            watchdog: sd_notify::watchdog_enabled().map(|d| (d / 2, Instant::now())),
            metrics: None,
            signals: None,
            stop: false,
        })
    }

    /// Serve until SIGINT/SIGTERM, then stop cleanly.
    pub fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        while !self.stop {
            self.turn(&mut events);
        }
        self.shutdown();
    }

    /// One round of the event loop: wait (at most until the registry's next
    /// deadline), handle what came, act on the outputs.
    fn turn(&mut self, events: &mut [EpollEvent]) {
        {
            let now = Instant::now();
            let wait = match self.reg.poll_timeout() {
                Some(t) => t.saturating_duration_since(now).min(Duration::from_secs(1)),
                None => Duration::from_secs(1),
            };
            // Round up so a deadline is never polled for early in a busy loop.
            let ms =
                wait.as_millis().min(1000) as u16 + u16::from(wait.subsec_micros() % 1000 != 0);
            let n = match self.epoll.wait(events, EpollTimeout::from(ms)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    error!("epoll: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    0
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                let flags = ev.events();
                match token & KIND_MASK {
                    0 if token == TOKEN_SIGNAL => self.signalled(),
                    0 => self.accept_all(),
                    KIND_CONN => self.client_ready(token & !KIND_MASK, flags),
                    KIND_IPCP => self.ipcp_ready(token & !KIND_MASK, flags),
                    KIND_METRICS => self.metrics_ready(token & !KIND_MASK),
                    _ => {}
                }
            }
            self.reg.handle_timeout(Instant::now());
            self.drain();
            self.reap();
        }
        if let Some(m) = self.metrics.as_mut() {
            m.expire();
        }
        // The loop turns at least once a second, so a half interval of a
        // second or more is kept; a stuck loop stops the pings.
        if let Some((every, last)) = &mut self.watchdog {
            if last.elapsed() >= *every {
                *last = Instant::now();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }

    fn feed(&mut self, input: Input) {
        self.reg.handle(Instant::now(), input);
    }

    // ---- clients ----

    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let sock = match self.listener.accept_nonblocking() {
                Ok(s) => s,
                Err(Error::Again) => return,
                Err(e) => {
                    // Out of fds, most likely: leave the rest in the backlog.
                    warn!("accept failed: {e}");
                    return;
                }
            };
            let cred = match sock.peer_cred() {
                Ok(c) => c,
                Err(e) => {
                    warn!("no credentials on a new connection: {e}");
                    continue;
                }
            };
            let conn = self.next_conn;
            self.next_conn += 1;
            if let Err(e) = self.epoll.add(
                sock.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, KIND_CONN | conn),
            ) {
                warn!("cannot watch a connection: {e}");
                continue;
            }
            self.clients.insert(
                conn,
                Client {
                    sock,
                    cred,
                    role: None,
                    queue: VecDeque::new(),
                },
            );
            self.feed(Input::Connected {
                conn,
                cred: Cred {
                    pid: cred.pid,
                    uid: cred.uid,
                    gid: cred.gid,
                    admin: cred.uid == 0,
                },
            });
            self.drain();
        }
    }

    fn client_ready(&mut self, conn: ConnId, flags: EpollFlags) {
        if flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.flush_client(conn);
        }
        if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            return;
        }
        for _ in 0..READS_PER_TURN {
            let Some(c) = self.clients.get(&conn) else {
                return;
            };
            // Back-pressure: while replies wait for this client, read nothing
            // more from it (so what irmd holds for one client stays small).
            if !c.queue.is_empty() {
                return;
            }
            match c.sock.recv_raw() {
                Ok(Some(r)) => self.client_msg(conn, r),
                Ok(None) => return self.close_client(conn),
                Err(Error::Again) => return,
                Err(Error::Io(e)) => {
                    warn!("connection of process {}: {e}", c.cred.pid);
                    return self.close_client(conn);
                }
                // Malformed (too long, too many fds): its fds are closed already.
                Err(e) => {
                    warn!("bad message from process {}: {e}", c.cred.pid);
                    self.send_reply(conn, 0, Reply::Err(e), None);
                }
            }
            self.drain();
        }
    }

    fn client_msg(&mut self, conn: ConnId, r: RawReceived) {
        // Clients never pass fds to irmd: whatever came is closed here.
        drop(r.fds);
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        match c.role.clone() {
            None => {
                if let Some(v) = peek_version(&r.bytes).filter(|v| *v != PROTO_VERSION) {
                    let e = Error::Version {
                        ours: PROTO_VERSION,
                        theirs: v,
                    };
                    warn!("process {}: {e}", c.cred.pid);
                    self.send_reply(conn, 0, Reply::Err(e), None);
                    return self.close_client(conn);
                }
                match decode::<ClientHello>(&r.bytes) {
                    Ok(h) => {
                        c.role = Some(h.role.clone());
                        // Only the irm tool can ask for admin actions: look at
                        // capabilities for it alone (a /proc read per connection
                        // would be a cost a connection flood could impose).
                        let admin = h.role == ClientRole::Cli && is_admin(&c.sock, &c.cred);
                        self.feed(Input::Hello {
                            conn,
                            id: 0,
                            role: h.role,
                            admin,
                        });
                    }
                    Err(e) => {
                        self.send_reply(
                            conn,
                            0,
                            Reply::Err(Error::Invalid(format!("expected a hello: {e}"))),
                            None,
                        );
                        self.close_client(conn);
                    }
                }
            }
            Some(ClientRole::App { .. }) => match decode::<Envelope<AppRequest>>(&r.bytes) {
                Ok(env) => self.feed(Input::App {
                    conn,
                    id: env.id,
                    req: env.msg,
                }),
                Err(e) => self.send_reply(conn, 0, Reply::Err(e), None),
            },
            Some(ClientRole::Cli) => match decode::<Envelope<CliRequest>>(&r.bytes) {
                Ok(env) => self.feed(Input::Cli {
                    conn,
                    id: env.id,
                    req: env.msg,
                }),
                Err(e) => self.send_reply(conn, 0, Reply::Err(e), None),
            },
        }
    }

    fn close_client(&mut self, conn: ConnId) {
        if let Some(c) = self.clients.remove(&conn) {
            let _ = self.epoll.delete(c.sock.as_fd());
            self.feed(Input::Closed { conn });
        }
    }

    /// Duplicates of a flow's fds for one message (closed once sent).
    /// `Err` when the flow has no memory (its creation failed).
    fn fds_of(&self, f: Option<FdsOf>) -> Result<Vec<OwnedFd>, ()> {
        let (id, app) = match f {
            None => return Ok(Vec::new()),
            Some(FdsOf::App(id)) => (id, true),
            Some(FdsOf::Ipcp(id)) => (id, false),
        };
        let m = self.flows.get(&id).and_then(|m| m.fds.as_ref()).ok_or(())?;
        let set = if app { m.for_app() } else { m.for_ipcp() };
        set.iter()
            .map(|f| f.try_clone())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| warn!("cannot duplicate the fds of flow {id}: {e}"))
    }

    fn send_reply(&mut self, conn: ConnId, id: u64, msg: Reply, which: Option<FdsOf>) {
        if service::is_config_conn(conn) {
            self.config_replies.push((id, msg));
            return;
        }
        let Ok(fds) = self.fds_of(which) else {
            // The flow's memory could not be made; the registry answered already.
            return;
        };
        if let Some(FdsOf::App(flow)) = which {
            if let Some(m) = self.flows.get_mut(&flow) {
                m.fds = None;
            }
        }
        let bytes = match encode(&Envelope { id, msg }) {
            Ok(b) => b,
            Err(e) => return warn!("cannot encode a reply: {e}"),
        };
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        match send_or_queue(&c.sock, &mut c.queue, bytes, fds) {
            Ok(false) => {}
            Ok(true) => {
                // Wait until it can take more; read from it again only then.
                let _ = self.epoll.modify(
                    c.sock.as_fd(),
                    &mut EpollEvent::new(EpollFlags::EPOLLOUT, KIND_CONN | conn),
                );
            }
            Err(e) => {
                warn!("cannot reply to process {}: {e}", c.cred.pid);
                self.close_client(conn);
            }
        }
    }

    fn flush_client(&mut self, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        match flush(&c.sock, &mut c.queue) {
            Ok(true) => {
                let _ = self.epoll.modify(
                    c.sock.as_fd(),
                    &mut EpollEvent::new(EpollFlags::EPOLLIN, KIND_CONN | conn),
                );
            }
            Ok(false) => {}
            Err(e) => {
                warn!("cannot reply to process {}: {e}", c.cred.pid);
                self.close_client(conn);
            }
        }
    }

    // ---- IPCPs ----

    fn spawn(&mut self, ipcp: IpcpId, spec: irm::proto::BootstrapSpec) {
        match spawn_ipcp(&spec, self.max_remote_timeout_ms) {
            Ok((child, chan)) => {
                let pid = child.id();
                if let Err(e) = chan.set_nonblocking() {
                    warn!("IPCP {}: {e}", spec.name);
                }
                if let Err(e) = self.epoll.add(
                    chan.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, KIND_IPCP | ipcp),
                ) {
                    warn!("cannot watch IPCP {}: {e}", spec.name);
                }
                self.ipcps.insert(
                    ipcp,
                    IpcpProc {
                        chan,
                        child,
                        greeted: false,
                        name: spec.name,
                        queue: VecDeque::new(),
                    },
                );
                self.feed(Input::Spawned { ipcp, pid });
            }
            Err(e) => {
                warn!("cannot start an IPCP: {e}");
                self.feed(Input::SpawnFailed {
                    ipcp,
                    error: e.to_string(),
                });
            }
        }
    }

    fn ipcp_ready(&mut self, ipcp: IpcpId, flags: EpollFlags) {
        if flags.contains(EpollFlags::EPOLLOUT) {
            if let Some(p) = self.ipcps.get_mut(&ipcp) {
                if let Ok(true) = flush(&p.chan, &mut p.queue) {
                    let _ = self.epoll.modify(
                        p.chan.as_fd(),
                        &mut EpollEvent::new(EpollFlags::EPOLLIN, KIND_IPCP | ipcp),
                    );
                }
            }
        }
        if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            return;
        }
        for _ in 0..READS_PER_TURN * 4 {
            let Some(p) = self.ipcps.get_mut(&ipcp) else {
                return;
            };
            let r = match p.chan.recv_raw() {
                Ok(Some(r)) => r,
                Ok(None) => return self.ipcp_down(ipcp, "its channel closed"),
                Err(Error::Again) => return,
                Err(Error::Io(e)) => return self.ipcp_down(ipcp, &e),
                Err(e) => {
                    warn!("bad message from IPCP {}: {e}", p.name);
                    continue;
                }
            };
            drop(r.fds);
            if !p.greeted {
                let ok = match decode::<IpcpHello>(&r.bytes) {
                    Ok(h) if h.version != PROTO_VERSION => Err(Error::Version {
                        ours: PROTO_VERSION,
                        theirs: h.version,
                    }),
                    Ok(h) if h.name != p.name => Err(Error::Ipcp(format!(
                        "IPCP says it is {}, not {}",
                        h.name, p.name
                    ))),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                };
                let failed = ok.as_ref().err().map(|e| e.to_string());
                self.send_ipcp(ipcp, 0, IrmdToIpcp::Welcome(ok), None);
                match failed {
                    None => {
                        if let Some(p) = self.ipcps.get_mut(&ipcp) {
                            p.greeted = true;
                        }
                    }
                    Some(e) => return self.ipcp_down(ipcp, &e),
                }
                continue;
            }
            match decode::<Envelope<IpcpToIrmd>>(&r.bytes) {
                Ok(env) => self.feed(Input::FromIpcp {
                    ipcp,
                    id: env.id,
                    msg: env.msg,
                }),
                Err(e) => warn!("bad message from IPCP {}: {e}", p.name),
            }
            self.drain();
        }
    }

    fn ipcp_down(&mut self, ipcp: IpcpId, why: &str) {
        self.kill(ipcp);
        self.feed(Input::IpcpGone {
            ipcp,
            why: why.to_string(),
        });
    }

    fn send_ipcp(&mut self, ipcp: IpcpId, id: u64, msg: IrmdToIpcp, fds: Option<FdsOf>) {
        let Ok(fds) = self.fds_of(fds) else { return };
        let bytes = match encode(&Envelope { id, msg }) {
            Ok(b) => b,
            Err(e) => return warn!("cannot encode a message for an IPCP: {e}"),
        };
        let Some(p) = self.ipcps.get_mut(&ipcp) else {
            return;
        };
        match send_or_queue(&p.chan, &mut p.queue, bytes, fds) {
            Ok(false) => {}
            Ok(true) => {
                let _ = self.epoll.modify(
                    p.chan.as_fd(),
                    &mut EpollEvent::new(
                        EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT,
                        KIND_IPCP | ipcp,
                    ),
                );
            }
            Err(e) => {
                let why = format!("cannot send to it: {e}");
                self.ipcp_down(ipcp, &why);
            }
        }
    }

    /// SIGTERM to a child we have not reaped (so its pid cannot have been
    /// reused), then reap it when it exits.
    fn kill(&mut self, ipcp: IpcpId) {
        if let Some(p) = self.ipcps.remove(&ipcp) {
            let _ = self.epoll.delete(p.chan.as_fd());
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            self.dying.push(p.child);
        }
    }

    fn reap(&mut self) {
        self.dying.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                info!("IPCP process {} exited ({st}).", c.id());
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        self.started.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                info!("Started process {} exited ({st}).", c.id());
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    }

    // ---- outputs ----

    fn drain(&mut self) {
        while let Some(o) = self.reg.poll_output() {
            match o {
                Output::Send { conn, id, msg, fds } => self.send_reply(conn, id, msg, fds),
                Output::ToIpcp { ipcp, id, msg, fds } => self.send_ipcp(ipcp, id, msg, fds),
                Output::Close { conn } => self.close_client(conn),
                Output::CreateFlow { flow_id, geometry } => match make_flow_memory(geometry) {
                    Ok(m) => {
                        self.flows.insert(flow_id, m);
                    }
                    Err(error) => self.feed(Input::FlowMemoryFailed { flow_id, error }),
                },
                Output::SetFlowState { flow_id, state } => {
                    if let Some(m) = self.flows.get(&flow_id) {
                        m.monitor.set_state(state);
                    }
                }
                Output::DropFlow { flow_id } => {
                    self.flows.remove(&flow_id);
                }
                Output::Spawn { ipcp, spec } => self.spawn(ipcp, spec),
                Output::Kill { ipcp } => self.kill(ipcp),
                Output::StartProgram { exec, args, uid } => self.start_program(&exec, &args, uid),
            }
        }
    }
}

/// Send at once if nothing waits and the socket takes it; else queue it.
/// Returns whether the queue is in use (watch EPOLLOUT).
fn send_or_queue(
    sock: &CtrlSocket,
    queue: &mut VecDeque<Queued>,
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> irm::Result<bool> {
    if queue.is_empty() {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        match sock.send_bytes(&bytes, &raw, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
            Ok(()) => return Ok(false),
            Err(Error::Again) => {}
            Err(e) => return Err(e),
        }
    }
    if queue.len() >= MAX_QUEUED {
        return Err(Error::NoMem("peer does not read its replies".into()));
    }
    queue.push_back(Queued { bytes, fds });
    Ok(true)
}

/// Send what is queued; true when the queue is empty.
fn flush(sock: &CtrlSocket, queue: &mut VecDeque<Queued>) -> irm::Result<bool> {
    while let Some(q) = queue.front() {
        let raw: Vec<RawFd> = q.fds.iter().map(|f| f.as_raw_fd()).collect();
        match sock.send_bytes(&q.bytes, &raw, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
            Ok(()) => {
                queue.pop_front();
            }
            Err(Error::Again) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Create a flow's shared memory and wake-up fds, and irmd's own view of its
/// header (only to set the state word; counters come from the IPCP).
fn make_flow_memory(geometry: RingGeometry) -> irm::Result<FlowMem> {
    let fds = shm::create(geometry)?;
    let monitor = fds.monitor()?;
    Ok(FlowMem {
        fds: Some(fds),
        monitor,
    })
}
