//! irmd's state — processes, IPCPs, names, flows — and the handling of every
//! control message. All mutation happens under one mutex; replies are sent on
//! the clients' sockets (bounded by a send timeout, so a frozen client cannot
//! stall the daemon for long).

use crate::spawn::{spawn_ipcp, IpcpArgs};
use irm::ctrl::{CtrlSocket, Received};
use irm::proto::{
    name_hash, DownCause, Envelope, FlowRow, FlowState, IpcpInfo, IpcpRow, Msg, NameRow,
    RefuseReason, RingGeometry, Role,
};
use irm::shm::{self, FlowFds, Monitor};
use irm::{Error, Qos};
use log::{info, warn};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an incoming flow waits for a bound program to call accept.
const INCOMING_WAIT: Duration = Duration::from_secs(2);
/// How long a bootstrap waits for the IPCP to report.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(10);
/// Bound on a blocking send to one client.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

type ConnId = u64;

/// A connected client.
struct Conn {
    id: ConnId,
    pid: u32,
    role: Option<Role>,
    out: Arc<SendPath>,
}

/// How messages reach one client. The common case sends at once without
/// blocking; when the socket is full (or messages already wait) they queue for
/// the client's writer thread, so nobody blocks on a client's socket while
/// holding the registry lock (an IPCP busy answering irmd would otherwise
/// deadlock against it).
struct SendPath {
    direct: CtrlSocket,
    /// Messages waiting for the writer thread; sent in order after them.
    queued: std::sync::atomic::AtomicUsize,
    queue: Mutex<std::sync::mpsc::Sender<Outgoing>>,
}

/// A message and its fds (duplicates, closed once sent).
struct Outgoing {
    env: Envelope,
    fds: Vec<OwnedFd>,
}

impl Conn {
    fn send(&self, id: u64, msg: Msg) {
        self.send_fds(id, msg, &[]);
    }
    fn send_fds(&self, id: u64, msg: Msg, fds: &[&OwnedFd]) {
        use std::sync::atomic::Ordering;
        let env = Envelope { id, msg };
        // The lock keeps one client's messages in order between the two paths.
        let queue = self.out.queue.lock().unwrap_or_else(|p| p.into_inner());
        if self.out.queued.load(Ordering::Acquire) == 0 {
            let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
            match self.out.direct.try_send(&env, &raw) {
                Ok(()) => return,
                Err(Error::Again) => {}
                Err(e) => {
                    warn!("cannot reply to process {}: {e}", self.pid);
                    return;
                }
            }
        }
        let mut dup = Vec::with_capacity(fds.len());
        for f in fds {
            match f.try_clone() {
                Ok(d) => dup.push(d),
                Err(e) => {
                    warn!("cannot duplicate an fd for process {}: {e}", self.pid);
                    return;
                }
            }
        }
        self.out.queued.fetch_add(1, Ordering::AcqRel);
        // A closed channel means the client is gone; its cleanup runs elsewhere.
        let _ = queue.send(Outgoing { env, fds: dup });
    }
}

/// Send queued messages to one client until every sender is dropped.
fn writer(
    sock: CtrlSocket,
    pid: u32,
    path: std::sync::Weak<SendPath>,
    queue: std::sync::mpsc::Receiver<Outgoing>,
) {
    let mut broken = false;
    for o in queue {
        if !broken {
            let raw: Vec<_> = o.fds.iter().map(|f| f.as_raw_fd()).collect();
            if let Err(e) = sock.send(&o.env, &raw) {
                warn!("cannot reply to process {pid}: {e}");
                // A client that stopped reading: cut it off, so its reader sees
                // EOF and its resources are released.
                sock.shutdown();
                broken = true;
            }
        }
        // Drained even when broken, so the fds close.
        if let Some(p) = path.upgrade() {
            p.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

struct Ipcp {
    name: String,
    layer: String,
    dev: String,
    ethertype: u16,
    pid: u32,
    conn: Option<Arc<Conn>>,
    info: Option<IpcpInfo>,
    counters: Vec<(String, u64)>,
    /// The CLI request waiting for the bootstrap outcome.
    boot_reply: Option<(Arc<Conn>, u64, Instant)>,
}

#[derive(Default)]
struct NameEntry {
    layers: BTreeSet<String>,
    programs: BTreeSet<String>,
}

enum Phase {
    /// Waiting for the IPCP's answer; the app gets the fds then.
    Allocating {
        reply_to: (Arc<Conn>, u64),
        fds: FlowFds,
    },
    Allocated,
    /// The app deallocated; waiting for the IPCP's acknowledgement.
    Deallocating {
        reply_to: Option<(Arc<Conn>, u64)>,
        by_pid: u32,
    },
}

struct FlowRec {
    id: u32,
    name: String,
    owner: ConnId,
    pid: u32,
    ipcp: String,
    qos: Qos,
    timeout_ms: u64,
    max_sdu: u32,
    geometry: RingGeometry,
    monitor: Monitor,
    phase: Phase,
}

struct PendingAccept {
    conn: Arc<Conn>,
    req: u64,
    prog: String,
    deadline: Option<Instant>,
}

struct Incoming {
    ipcp: String,
    token: u64,
    name: String,
    qos: Qos,
    max_sdu: u32,
    deadline: Instant,
}

/// What an envelope id sent by irmd to an IPCP was about.
enum IpcpWait {
    Alloc,
    Dealloc(u32),
}

#[derive(Default)]
struct Registry {
    next_conn: ConnId,
    next_req: u64,
    next_flow: u32,
    conns: HashMap<ConnId, Arc<Conn>>,
    ipcps: BTreeMap<String, Ipcp>,
    names: BTreeMap<String, NameEntry>,
    flows: BTreeMap<u32, FlowRec>,
    accepts: Vec<PendingAccept>,
    incoming: Vec<Incoming>,
    waits: HashMap<u64, IpcpWait>,
    /// Allocations that carry a deadline, so housekeeping never scans every flow.
    alloc_deadlines: Vec<(Instant, u32)>,
}

pub struct Shared {
    reg: Mutex<Registry>,
    default_timeout_ms: u64,
    ring_slots: u32,
}

impl Shared {
    pub fn new(default_timeout_ms: u64, ring_slots: u32) -> Shared {
        Shared {
            reg: Mutex::new(Registry {
                next_req: 1,
                ..Default::default()
            }),
            default_timeout_ms,
            ring_slots,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve one connection until it closes.
    pub fn serve(&self, sock: CtrlSocket) {
        let pid = sock.peer_pid().unwrap_or(0);
        let _ = sock.set_send_timeout(SEND_TIMEOUT);
        let send = match sock.try_clone() {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot clone a client socket: {e}");
                return;
            }
        };
        let (tx, queue) = std::sync::mpsc::channel();
        let direct = match send.try_clone() {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot clone a client socket: {e}");
                return;
            }
        };
        let out = Arc::new(SendPath {
            direct,
            queued: std::sync::atomic::AtomicUsize::new(0),
            queue: Mutex::new(tx),
        });
        let weak = Arc::downgrade(&out);
        if let Err(e) = std::thread::Builder::new()
            .name("conn-writer".into())
            .spawn(move || writer(send, pid, weak, queue))
        {
            warn!("cannot start a writer thread: {e}");
            return;
        }
        let mut conn = {
            let mut r = self.lock();
            r.next_conn += 1;
            Arc::new(Conn {
                id: r.next_conn,
                pid,
                role: None,
                out,
            })
        };
        loop {
            match sock.recv() {
                Ok(Some(rcv)) => {
                    if let Msg::Hello { role, .. } = &rcv.env.msg {
                        if conn.role.is_none() {
                            conn = Arc::new(Conn {
                                id: conn.id,
                                pid,
                                role: Some(role.clone()),
                                out: conn.out.clone(),
                            });
                        }
                    }
                    self.handle(&conn, rcv);
                }
                Ok(None) => break,
                Err(e) => {
                    // A malformed message from one client: tell it, keep serving.
                    warn!("bad message from process {pid}: {e}");
                    conn.send(0, Msg::Err(e));
                }
            }
        }
        self.closed(&conn);
    }

    fn handle(&self, conn: &Arc<Conn>, rcv: Received) {
        let Received { env, fds } = rcv;
        let id = env.id;
        let mut r = self.lock();
        match env.msg {
            Msg::Hello { role, .. } => r.hello(conn, id, role),
            _ if conn.role.is_none() => {
                conn.send(id, Msg::Err(Error::Invalid("say hello first".into())))
            }

            // ---- applications ----
            Msg::FlowAlloc {
                name,
                qos,
                timeout_ms,
            } => self.flow_alloc(&mut r, conn, id, name, qos, timeout_ms),
            Msg::FlowAccept { timeout_ms } => {
                let Some(Role::App { prog }) = conn.role.clone() else {
                    return conn.send(
                        id,
                        Msg::Err(Error::Invalid("only applications accept flows".into())),
                    );
                };
                let deadline = timeout_ms.map(|t| Instant::now() + Duration::from_millis(t));
                r.accepts.push(PendingAccept {
                    conn: conn.clone(),
                    req: id,
                    prog,
                    deadline,
                });
                self.match_incoming(&mut r);
            }
            Msg::FlowDealloc { flow_id } => r.flow_dealloc(conn, id, flow_id),

            // ---- the CLI ----
            Msg::IpcpBootstrap {
                name,
                layer,
                dev,
                ethertype,
                backend,
                busy_poll_us,
            } => r.bootstrap(
                conn,
                id,
                IpcpArgs {
                    name: &name,
                    layer: &layer,
                    dev: &dev,
                    ethertype,
                    backend: &backend,
                    busy_poll_us,
                },
            ),
            Msg::IpcpList => {
                let rows = r.ipcps.values().map(ipcp_row).collect();
                conn.send(id, Msg::IpcpRows(rows));
            }
            Msg::IpcpDestroy { name } => r.ipcp_destroy(conn, id, &name),
            Msg::NameRegister { name, layer } => r.name_register(conn, id, name, layer),
            Msg::NameUnregister { name, layer } => r.name_unregister(conn, id, name, layer),
            Msg::NameList => {
                let rows = r
                    .names
                    .iter()
                    .map(|(n, e)| NameRow {
                        name: n.clone(),
                        layers: e.layers.iter().cloned().collect(),
                        programs: e.programs.iter().cloned().collect(),
                    })
                    .collect();
                conn.send(id, Msg::NameRows(rows));
            }
            Msg::BindProgram { prog, name } => {
                if prog.is_empty() || name.is_empty() {
                    return conn.send(id, Msg::Err(Error::Invalid("empty program or name".into())));
                }
                r.names
                    .entry(name.clone())
                    .or_default()
                    .programs
                    .insert(prog.clone());
                info!("Bound program {prog} to name {name}.");
                conn.send(id, Msg::Ok);
                self.match_incoming(&mut r);
            }
            Msg::UnbindProgram { prog, name } => {
                if let Some(e) = r.names.get_mut(&name) {
                    e.programs.remove(&prog);
                }
                conn.send(id, Msg::Ok);
            }
            Msg::FlowList { after } => {
                let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                let rows = r
                    .flows
                    .range((from, std::ops::Bound::Unbounded))
                    .take(irm::proto::FLOW_ROWS_PER_MSG)
                    .map(|(_, f)| flow_row(f))
                    .collect();
                conn.send(id, Msg::FlowRows(rows));
            }

            // ---- IPCPs ----
            Msg::IpcpBootstrapped(result) => r.bootstrapped(conn, result),
            Msg::IpcpFlowAllocResult { flow_id, result } => r.alloc_result(id, flow_id, result),
            Msg::IpcpFlowReqArrived {
                token,
                name_hash,
                qos,
                max_sdu,
            } => self.flow_req_arrived(&mut r, conn, token, name_hash, qos, max_sdu),
            Msg::IpcpFlowState { flow_id, cause } => r.flow_state(flow_id, cause),
            Msg::IpcpCounters(counters) => {
                if let Some(Role::Ipcp { name }) = &conn.role {
                    if let Some(i) = r.ipcps.get_mut(name) {
                        i.counters = counters;
                    }
                }
            }
            Msg::Ok => r.ipcp_ack(id),
            Msg::Err(e) => {
                if r.waits.contains_key(&id) {
                    r.ipcp_ack(id)
                } else {
                    warn!("process {} reported: {e}", conn.pid)
                }
            }
            other => conn.send(
                id,
                Msg::Err(Error::Invalid(format!(
                    "unexpected message {}",
                    msg_name(&other)
                ))),
            ),
        }
        drop(fds);
    }

    fn flow_alloc(
        &self,
        r: &mut Registry,
        conn: &Arc<Conn>,
        id: u64,
        name: String,
        qos: Qos,
        timeout_ms: Option<u64>,
    ) {
        if name.is_empty() {
            return conn.send(id, Msg::Err(Error::Name("empty name".into())));
        }
        // Any operational IPCP can reach the name: Ethernet layers resolve by broadcast.
        let Some(ipcp) = r
            .ipcps
            .values()
            .find(|i| i.info.is_some() && i.conn.is_some())
        else {
            return conn.send(
                id,
                Msg::Err(Error::Ipcp(
                    "no IPCP is bootstrapped; run `irm ipcp bootstrap ...`".into(),
                )),
            );
        };
        let (ipcp_name, ipcp_conn, max_sdu) = (
            ipcp.name.clone(),
            ipcp.conn.clone().expect("checked"),
            ipcp.info.as_ref().expect("checked").max_sdu,
        );
        let timeout = if qos.timeout == 0 {
            self.default_timeout_ms
        } else {
            qos.timeout
        };
        let geometry = RingGeometry {
            slots: self.ring_slots,
            slot_size: max_sdu.max(1),
        };
        let (fds, monitor) = match make_flow_memory(geometry) {
            Ok(x) => x,
            Err(e) => return conn.send(id, Msg::Err(e)),
        };
        let flow_id = r.new_flow_id();
        let req = r.new_req();
        ipcp_conn.send_fds(
            req,
            Msg::IpcpFlowAlloc {
                flow_id,
                name: name.clone(),
                qos,
                geometry,
                timeout_ms: timeout,
            },
            &fds.for_ipcp(),
        );
        r.waits.insert(req, IpcpWait::Alloc);
        let deadline = timeout_ms.map(|t| Instant::now() + Duration::from_millis(t));
        if let Some(d) = deadline {
            r.alloc_deadlines.push((d, flow_id));
        }
        r.flows.insert(
            flow_id,
            FlowRec {
                id: flow_id,
                name,
                owner: conn.id,
                pid: conn.pid,
                ipcp: ipcp_name,
                qos,
                timeout_ms: timeout,
                max_sdu,
                geometry,
                monitor,
                phase: Phase::Allocating {
                    reply_to: (conn.clone(), id),
                    fds,
                },
            },
        );
    }

    fn flow_req_arrived(
        &self,
        r: &mut Registry,
        conn: &Arc<Conn>,
        token: u64,
        hash: [u8; 32],
        qos: Qos,
        max_sdu: u32,
    ) {
        let Some(ipcp) = r
            .ipcps
            .values()
            .find(|i| i.conn.as_ref().map(|c| c.id) == Some(conn.id))
        else {
            return;
        };
        let ipcp_name = ipcp.name.clone();
        let layer = ipcp.layer.clone();
        let name = r
            .names
            .iter()
            .find(|(n, e)| e.layers.contains(&layer) && name_hash(n) == hash)
            .map(|(n, _)| n.clone());
        let Some(name) = name else {
            return refuse(conn, token, RefuseReason::NoSuchName);
        };
        r.incoming.push(Incoming {
            ipcp: ipcp_name.clone(),
            token,
            name: name.clone(),
            qos,
            max_sdu,
            deadline: Instant::now() + INCOMING_WAIT,
        });
        self.match_incoming(r);
        // Nobody accepting now and no instance that could: refuse at once rather than wait.
        if let Some(pos) = r
            .incoming
            .iter()
            .position(|i| i.token == token && i.ipcp == ipcp_name)
        {
            let progs = r
                .names
                .get(&name)
                .map(|e| e.programs.clone())
                .unwrap_or_default();
            let live = r
                .conns
                .values()
                .any(|c| matches!(&c.role, Some(Role::App { prog }) if progs.contains(prog)));
            if !live {
                r.incoming.remove(pos);
                refuse(conn, token, RefuseReason::NoAcceptingProcess);
            }
        }
    }

    /// Pair incoming flow requests with processes waiting in accept.
    fn match_incoming(&self, r: &mut Registry) {
        let mut i = 0;
        while i < r.incoming.len() {
            let progs = r
                .names
                .get(&r.incoming[i].name)
                .map(|e| e.programs.clone())
                .unwrap_or_default();
            let Some(apos) = r.accepts.iter().position(|a| progs.contains(&a.prog)) else {
                i += 1;
                continue;
            };
            let inc = r.incoming.remove(i);
            let acc = r.accepts.remove(apos);
            self.complete_accept(r, inc, acc);
        }
    }

    fn complete_accept(&self, r: &mut Registry, inc: Incoming, acc: PendingAccept) {
        let Some(ipcp_conn) = r.ipcps.get(&inc.ipcp).and_then(|i| i.conn.clone()) else {
            // The IPCP died meanwhile; the accepter keeps waiting.
            r.accepts.push(acc);
            return;
        };
        let ipcp_max = r
            .ipcps
            .get(&inc.ipcp)
            .and_then(|i| i.info.as_ref())
            .map(|i| i.max_sdu)
            .unwrap_or(inc.max_sdu);
        let max_sdu = ipcp_max.min(inc.max_sdu).max(1);
        let timeout = if inc.qos.timeout == 0 {
            self.default_timeout_ms
        } else {
            inc.qos.timeout
        };
        let geometry = RingGeometry {
            slots: self.ring_slots,
            slot_size: ipcp_max.max(1),
        };
        let (fds, monitor) = match make_flow_memory(geometry) {
            Ok(x) => x,
            Err(e) => {
                warn!("cannot create flow memory: {e}");
                refuse(&ipcp_conn, inc.token, RefuseReason::ResourceLimit);
                acc.conn.send(acc.req, Msg::Err(e));
                return;
            }
        };
        let flow_id = r.new_flow_id();
        ipcp_conn.send_fds(
            0,
            Msg::IpcpFlowAcceptResult {
                token: inc.token,
                result: Ok((flow_id, geometry)),
                timeout_ms: timeout,
            },
            &fds.for_ipcp(),
        );
        acc.conn.send_fds(
            acc.req,
            Msg::FlowReady {
                flow_id,
                name: inc.name.clone(),
                qos: inc.qos,
                max_sdu,
                geometry,
            },
            &fds.for_app(),
        );
        info!("Flow on flow_id {flow_id} allocated.");
        r.flows.insert(
            flow_id,
            FlowRec {
                id: flow_id,
                name: inc.name,
                owner: acc.conn.id,
                pid: acc.conn.pid,
                ipcp: inc.ipcp,
                qos: inc.qos,
                timeout_ms: timeout,
                max_sdu,
                geometry,
                monitor,
                phase: Phase::Allocated,
            },
        );
    }

    /// A client's connection closed: the process is gone.
    fn closed(&self, conn: &Arc<Conn>) {
        let mut r = self.lock();
        r.conns.remove(&conn.id);
        r.accepts.retain(|a| a.conn.id != conn.id);
        match &conn.role {
            Some(Role::Ipcp { name }) => r.ipcp_gone(name, conn.id),
            Some(Role::App { .. }) => {
                let owned: Vec<u32> = r
                    .flows
                    .values()
                    .filter(|f| f.owner == conn.id)
                    .map(|f| f.id)
                    .collect();
                for id in owned {
                    r.release_flow(id, None, conn.pid);
                }
                info!("Dead process removed: {}.", conn.pid);
            }
            _ => {}
        }
    }

    /// Deadlines: accepts, incoming requests, allocations, bootstraps.
    pub fn housekeeping(&self) {
        let now = Instant::now();
        let mut r = self.lock();
        let mut i = 0;
        while i < r.accepts.len() {
            if r.accepts[i].deadline.is_some_and(|d| d <= now) {
                let a = r.accepts.remove(i);
                a.conn.send(a.req, Msg::Err(Error::TimedOut));
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < r.incoming.len() {
            if r.incoming[i].deadline <= now {
                let inc = r.incoming.remove(i);
                if let Some(c) = r.ipcps.get(&inc.ipcp).and_then(|p| p.conn.clone()) {
                    refuse(&c, inc.token, RefuseReason::NoAcceptingProcess);
                }
            } else {
                i += 1;
            }
        }
        // Entries whose allocation finished go; due ones that are still
        // allocating time out. (Flow ids are reused only after wrapping u32.)
        let mut expired = Vec::new();
        let reg = &mut *r;
        let flows = &reg.flows;
        reg.alloc_deadlines.retain(|&(d, id)| {
            let allocating = flows
                .get(&id)
                .is_some_and(|f| matches!(f.phase, Phase::Allocating { .. }));
            if allocating && d <= now {
                expired.push(id);
            }
            allocating && d > now
        });
        for id in expired {
            if let Some(f) = r.flows.remove(&id) {
                if let Phase::Allocating { reply_to, .. } = f.phase {
                    reply_to.0.send(reply_to.1, Msg::Err(Error::TimedOut));
                }
                if let Some(c) = r.ipcps.get(&f.ipcp).and_then(|p| p.conn.clone()) {
                    c.send(0, Msg::IpcpFlowDealloc { flow_id: id });
                }
            }
        }
        let late: Vec<String> = r
            .ipcps
            .values()
            .filter(|i| i.boot_reply.as_ref().is_some_and(|(_, _, d)| *d <= now))
            .map(|i| i.name.clone())
            .collect();
        for name in late {
            if let Some(mut i) = r.ipcps.remove(&name) {
                if let Some((c, req, _)) = i.boot_reply.take() {
                    c.send(
                        req,
                        Msg::Err(Error::Ipcp(format!(
                            "IPCP {name} did not report within {BOOTSTRAP_WAIT:?}"
                        ))),
                    );
                }
                kill_pid(i.pid);
            }
        }
    }

    /// The spawned IPCP process exited (reaped by its waiter thread).
    pub fn ipcp_exited(&self, name: &str, pid: u32, status: std::process::ExitStatus) {
        let mut r = self.lock();
        let Some(i) = r.ipcps.get_mut(name) else {
            return;
        };
        if i.pid != pid {
            return;
        }
        if let Some((c, req, _)) = i.boot_reply.take() {
            c.send(
                req,
                Msg::Err(Error::Ipcp(format!(
                    "ipcpd-eth for {name} exited ({status}) before it bootstrapped"
                ))),
            );
        }
        if i.conn.is_none() {
            r.ipcps.remove(name);
        }
    }
}

fn refuse(ipcp: &Conn, token: u64, reason: RefuseReason) {
    ipcp.send(
        0,
        Msg::IpcpFlowAcceptResult {
            token,
            result: Err(reason),
            timeout_ms: 0,
        },
    );
}

fn kill_pid(pid: u32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Create a flow's shared memory and wake-up pipes, and irmd's own view of it.
fn make_flow_memory(geometry: RingGeometry) -> irm::Result<(FlowFds, Monitor)> {
    let fds = shm::create(geometry)?;
    let monitor = fds.monitor()?;
    Ok((fds, monitor))
}

fn ipcp_row(i: &Ipcp) -> IpcpRow {
    IpcpRow {
        name: i.name.clone(),
        pid: i.pid,
        layer: i.layer.clone(),
        dev: i.dev.clone(),
        ethertype: i.ethertype,
        state: if i.info.is_some() {
            "operational".into()
        } else {
            "booting".into()
        },
        info: i.info.clone(),
        counters: i.counters.clone(),
    }
}

fn flow_row(f: &FlowRec) -> FlowRow {
    let st = f.monitor.stats();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    FlowRow {
        flow_id: f.id,
        name: f.name.clone(),
        pid: f.pid,
        ipcp: f.ipcp.clone(),
        state: st.state,
        timeout_ms: f.timeout_ms,
        last_rx_ms_ago: (st.last_rx_unix_ms != 0)
            .then(|| now_ms.saturating_sub(st.last_rx_unix_ms)),
        tx_sdus: st.tx_sdus,
        tx_bytes: st.tx_bytes,
        rx_sdus: st.rx_sdus,
        rx_bytes: st.rx_bytes,
        dropped: st.dropped,
    }
}

fn msg_name(m: &Msg) -> String {
    let s = format!("{m:?}");
    s.split([' ', '(', '{']).next().unwrap_or("?").to_string()
}

impl Registry {
    fn new_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn new_flow_id(&mut self) -> u32 {
        loop {
            let id = self.next_flow;
            self.next_flow = self.next_flow.wrapping_add(1);
            if !self.flows.contains_key(&id) {
                return id;
            }
        }
    }

    fn hello(&mut self, conn: &Arc<Conn>, id: u64, role: Role) {
        match &role {
            Role::App { prog } => {
                self.conns.insert(conn.id, conn.clone());
                info!("New instance ({}) of {prog} added.", conn.pid);
                conn.send(id, Msg::Ok);
            }
            Role::Cli => {
                self.conns.insert(conn.id, conn.clone());
                conn.send(id, Msg::Ok);
            }
            Role::Ipcp { name } => {
                let Some(i) = self.ipcps.get_mut(name) else {
                    return conn.send(
                        id,
                        Msg::Err(Error::Ipcp(format!(
                            "no IPCP {name} was started by this irmd"
                        ))),
                    );
                };
                if i.pid != conn.pid || i.conn.is_some() {
                    return conn.send(
                        id,
                        Msg::Err(Error::Ipcp(format!(
                            "IPCP {name} is process {}, not {}",
                            i.pid, conn.pid
                        ))),
                    );
                }
                i.conn = Some(conn.clone());
                self.conns.insert(conn.id, conn.clone());
                conn.send(id, Msg::Ok);
            }
        }
    }

    fn bootstrap(&mut self, conn: &Arc<Conn>, id: u64, a: IpcpArgs) {
        let IpcpArgs {
            name,
            layer,
            dev,
            ethertype,
            backend,
            ..
        } = a;
        if name.is_empty() || layer.is_empty() || dev.is_empty() {
            return conn.send(
                id,
                Msg::Err(Error::Invalid(
                    "name, layer and dev must not be empty".into(),
                )),
            );
        }
        if self.ipcps.contains_key(name) {
            return conn.send(
                id,
                Msg::Err(Error::Ipcp(format!("an IPCP named {name} already exists"))),
            );
        }
        if let Some(other) = self
            .ipcps
            .values()
            .find(|i| i.dev == dev && i.ethertype == ethertype)
        {
            return conn.send(
                id,
                Msg::Err(Error::Ipcp(format!(
                    "IPCP {} already runs on {dev} with ethertype 0x{ethertype:04x}",
                    other.name
                ))),
            );
        }
        if !matches!(backend, "raw" | "xdp" | "auto") {
            return conn.send(
                id,
                Msg::Err(Error::Invalid(format!(
                    "unknown backend {backend} (raw, xdp, auto)"
                ))),
            );
        }
        let child = match spawn_ipcp(&a) {
            Ok(c) => c,
            Err(e) => {
                return conn.send(
                    id,
                    Msg::Err(Error::Ipcp(format!("cannot start ipcpd-eth: {e}"))),
                )
            }
        };
        let (name, layer, dev) = (name.to_string(), layer.to_string(), dev.to_string());
        let pid = child.id();
        info!("Created IPCP {name} (process {pid}) for layer {layer} on {dev}.");
        self.ipcps.insert(
            name.clone(),
            Ipcp {
                name: name.clone(),
                layer,
                dev,
                ethertype,
                pid,
                conn: None,
                info: None,
                counters: Vec::new(),
                boot_reply: Some((conn.clone(), id, Instant::now() + BOOTSTRAP_WAIT)),
            },
        );
        let shared = SHARED.get().cloned();
        std::thread::spawn(move || {
            let mut child = child;
            if let Ok(status) = child.wait() {
                if let Some(s) = shared {
                    s.ipcp_exited(&name, pid, status);
                }
            }
        });
    }

    fn bootstrapped(&mut self, conn: &Arc<Conn>, result: Result<IpcpInfo, String>) {
        let Some(Role::Ipcp { name }) = &conn.role else {
            return;
        };
        let Some(i) = self.ipcps.get_mut(name) else {
            return;
        };
        let reply = i.boot_reply.take();
        match result {
            Ok(info) if i.info.is_some() => {
                info!(
                    "IPCP {name}: MTU now {}, max SDU {}.",
                    info.mtu, info.max_sdu
                );
                i.info = Some(info);
            }
            Ok(info) => {
                let mac = info
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                info!(
                    "Bootstrapped IPCP {name} in layer {} on {} ({mac}, MTU {}, max SDU {}, backend {}).",
                    i.layer, i.dev, info.mtu, info.max_sdu, info.backend
                );
                i.info = Some(info);
                let layer = i.layer.clone();
                let names: Vec<String> = self
                    .names
                    .iter()
                    .filter(|(_, e)| e.layers.contains(&layer))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in names {
                    conn.send(0, Msg::IpcpRegName { name: n });
                }
                if let Some((c, req, _)) = reply {
                    c.send(req, Msg::Ok);
                }
            }
            Err(e) => {
                warn!("IPCP {name} failed to bootstrap: {e}");
                if let Some((c, req, _)) = reply {
                    c.send(req, Msg::Err(Error::Ipcp(e)));
                }
            }
        }
    }

    fn ipcp_destroy(&mut self, conn: &Arc<Conn>, id: u64, name: &str) {
        match self.ipcps.get(name) {
            Some(i) => {
                kill_pid(i.pid);
                conn.send(id, Msg::Ok);
            }
            None => conn.send(id, Msg::Err(Error::Ipcp(format!("no IPCP named {name}")))),
        }
    }

    fn ipcp_gone(&mut self, name: &str, conn_id: ConnId) {
        let Some(i) = self.ipcps.get(name) else {
            return;
        };
        if i.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return;
        }
        let i = self.ipcps.remove(name).expect("present");
        warn!(
            "IPCP {name} (process {}) is gone; its flows are down.",
            i.pid
        );
        if let Some((c, req, _)) = i.boot_reply {
            c.send(
                req,
                Msg::Err(Error::Ipcp(format!("IPCP {name} died while bootstrapping"))),
            );
        }
        self.incoming.retain(|x| x.ipcp != name);
        let ids: Vec<u32> = self
            .flows
            .values()
            .filter(|f| f.ipcp == name)
            .map(|f| f.id)
            .collect();
        for id in ids {
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            f.monitor.set_state(FlowState::Down);
            match std::mem::replace(&mut f.phase, Phase::Allocated) {
                Phase::Allocating { reply_to, .. } => {
                    reply_to.0.send(
                        reply_to.1,
                        Msg::Err(Error::Ipcp(format!("IPCP {name} died"))),
                    );
                    self.flows.remove(&id);
                }
                Phase::Deallocating { reply_to, by_pid } => {
                    info!("Completed deallocation of flow_id {id} by process {by_pid}.");
                    if let Some((c, req)) = reply_to {
                        c.send(req, Msg::Ok);
                    }
                    self.flows.remove(&id);
                }
                Phase::Allocated => info!("flow-allocator: Flow {id} down: IPCP {name} died."),
            }
        }
    }

    fn name_register(&mut self, conn: &Arc<Conn>, id: u64, name: String, layer: String) {
        if name.is_empty() {
            return conn.send(id, Msg::Err(Error::Name("empty name".into())));
        }
        let targets: Vec<Arc<Conn>> = self
            .ipcps
            .values()
            .filter(|i| i.layer == layer)
            .filter_map(|i| i.conn.clone())
            .collect();
        if !self.ipcps.values().any(|i| i.layer == layer) {
            return conn.send(
                id,
                Msg::Err(Error::Ipcp(format!(
                    "layer {layer} is unknown: no IPCP is bootstrapped in it"
                ))),
            );
        }
        self.names
            .entry(name.clone())
            .or_default()
            .layers
            .insert(layer.clone());
        for t in targets {
            t.send(0, Msg::IpcpRegName { name: name.clone() });
        }
        info!("Registered {name} in layer {layer}.");
        conn.send(id, Msg::Ok);
    }

    fn name_unregister(&mut self, conn: &Arc<Conn>, id: u64, name: String, layer: String) {
        let Some(e) = self.names.get_mut(&name) else {
            return conn.send(
                id,
                Msg::Err(Error::Name(format!("{name} is not registered"))),
            );
        };
        e.layers.remove(&layer);
        for i in self.ipcps.values().filter(|i| i.layer == layer) {
            if let Some(c) = &i.conn {
                c.send(0, Msg::IpcpUnregName { name: name.clone() });
            }
        }
        conn.send(id, Msg::Ok);
    }

    fn alloc_result(&mut self, req: u64, flow_id: u32, result: Result<u32, Error>) {
        self.waits.remove(&req);
        let Some(f) = self.flows.get_mut(&flow_id) else {
            return;
        };
        let Phase::Allocating { .. } = f.phase else {
            return;
        };
        let Phase::Allocating { reply_to, fds, .. } =
            std::mem::replace(&mut f.phase, Phase::Allocated)
        else {
            unreachable!()
        };
        match result {
            Ok(max_sdu) => {
                f.max_sdu = max_sdu.min(f.geometry.slot_size);
                let alive = self.conns.contains_key(&reply_to.0.id);
                if !alive {
                    self.release_flow(flow_id, None, reply_to.0.pid);
                    return;
                }
                reply_to.0.send_fds(
                    reply_to.1,
                    Msg::FlowReady {
                        flow_id,
                        name: f.name.clone(),
                        qos: f.qos,
                        max_sdu: f.max_sdu,
                        geometry: f.geometry,
                    },
                    &fds.for_app(),
                );
                info!("Flow on flow_id {flow_id} allocated.");
            }
            Err(e) => {
                reply_to.0.send(reply_to.1, Msg::Err(e));
                self.flows.remove(&flow_id);
            }
        }
    }

    fn flow_dealloc(&mut self, conn: &Arc<Conn>, id: u64, flow_id: u32) {
        match self.flows.get(&flow_id) {
            Some(f) if f.owner == conn.id => {}
            Some(_) => return conn.send(id, Msg::Err(Error::NotAlloc)),
            None => return conn.send(id, Msg::Err(Error::NotAlloc)),
        }
        let reply = (id != 0).then(|| (conn.clone(), id));
        self.release_flow(flow_id, reply, conn.pid);
    }

    /// The application side let go of a flow: tell the IPCP, and answer
    /// `reply_to` once it confirms.
    fn release_flow(&mut self, flow_id: u32, reply_to: Option<(Arc<Conn>, u64)>, by_pid: u32) {
        let Some(f) = self.flows.get_mut(&flow_id) else {
            return;
        };
        if let Phase::Deallocating { .. } = f.phase {
            if let Some((c, req)) = reply_to {
                c.send(req, Msg::Ok);
            }
            return;
        }
        info!("Partial deallocation of flow_id {flow_id} by process {by_pid}.");
        let ipcp = self
            .ipcps
            .get(&f.ipcp)
            .and_then(|i| i.conn.clone().map(|c| (c, i.pid)));
        match ipcp {
            Some((c, ipcp_pid)) => {
                self.next_req += 1;
                let req = self.next_req;
                f.phase = Phase::Deallocating {
                    reply_to,
                    by_pid: ipcp_pid,
                };
                c.send(req, Msg::IpcpFlowDealloc { flow_id });
                self.waits.insert(req, IpcpWait::Dealloc(flow_id));
            }
            None => {
                self.flows.remove(&flow_id);
                info!(
                    "Completed deallocation of flow_id {flow_id} by process {}.",
                    std::process::id()
                );
                if let Some((c, req)) = reply_to {
                    c.send(req, Msg::Ok);
                }
            }
        }
    }

    /// An IPCP acknowledged a request of ours.
    fn ipcp_ack(&mut self, req: u64) {
        match self.waits.remove(&req) {
            Some(IpcpWait::Dealloc(flow_id)) => {
                if let Some(f) = self.flows.remove(&flow_id) {
                    if let Phase::Deallocating { reply_to, by_pid } = f.phase {
                        info!("Completed deallocation of flow_id {flow_id} by process {by_pid}.");
                        if let Some((c, id)) = reply_to {
                            c.send(id, Msg::Ok);
                        }
                    }
                }
            }
            Some(IpcpWait::Alloc) | None => {}
        }
    }

    fn flow_state(&mut self, flow_id: u32, cause: DownCause) {
        if !self.flows.contains_key(&flow_id) {
            return;
        }
        match cause {
            DownCause::Up => info!("flow-allocator: Flow {flow_id} up."),
            other => info!("flow-allocator: Flow {flow_id} down: {}.", other.describe()),
        }
    }
}

/// The daemon's shared state, reachable from the child-reaper threads.
pub static SHARED: std::sync::OnceLock<Arc<Shared>> = std::sync::OnceLock::new();
