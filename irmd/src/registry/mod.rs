//! irmd's state — connections, IPCPs, names, flows — as a sans-IO core:
//! events and `now` go in through [`Registry::handle`] and
//! [`Registry::handle_timeout`], messages, spawn and kill requests come out of
//! [`Registry::poll_output`], and [`Registry::poll_timeout`] says when the next
//! deadline is due. It holds no lock, thread, clock, socket or global; the shell
//! (`crate::shell`) owns sockets, each flow's memory and the IPCP children, and
//! acts on the outputs.

mod admin;
pub mod auth;
mod autostart;
mod flows;
mod metrics;
pub mod policy;
mod security;
#[cfg(test)]
mod tests;

pub use auth::Cred;
pub use metrics::Metrics;
pub use policy::Policy;

use irm::proto::{
    AppRequest, BootstrapSpec, CliRequest, ClientRole, DownCause, FlowCounters, FlowState,
    IpcpInfo, IpcpToIrmd, IrmdToIpcp, NameSecurity, Reply, RingGeometry,
};
use irm::{Error, Qos};
use log::{info, warn};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

/// A client connection on the public socket (assigned by the shell).
pub type ConnId = u64;
/// One spawned IPCP process (assigned by the registry; never reused).
pub type IpcpId = u64;

/// What happened, as the shell saw it.
#[derive(Debug)]
pub enum Input {
    /// A client connected (before its hello): counted against its uid's limits.
    Connected { conn: ConnId, cred: Cred },
    /// The client's hello, with the version already checked by the shell.
    /// `admin`: root or CAP_NET_ADMIN (the shell checks it for the CLI only).
    Hello {
        conn: ConnId,
        id: u64,
        role: ClientRole,
        admin: bool,
    },
    App {
        conn: ConnId,
        id: u64,
        req: AppRequest,
    },
    Cli {
        conn: ConnId,
        id: u64,
        req: CliRequest,
    },
    /// The client's connection closed: the process is gone.
    Closed { conn: ConnId },
    /// A message on an IPCP's private channel.
    FromIpcp {
        ipcp: IpcpId,
        id: u64,
        msg: IpcpToIrmd,
    },
    /// The IPCP process was started (`Output::Spawn`).
    Spawned { ipcp: IpcpId, pid: u32 },
    /// It could not be started.
    SpawnFailed { ipcp: IpcpId, error: String },
    /// Its channel closed or the process exited.
    IpcpGone { ipcp: IpcpId, why: String },
    /// The shell could not create a flow's memory (`Output::CreateFlow`).
    FlowMemoryFailed { flow_id: u32, error: Error },
}

/// Which end's fds of a flow go with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdsOf {
    App(u32),
    Ipcp(u32),
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send a reply to a client (with a flow's application fds).
    Send {
        conn: ConnId,
        id: u64,
        msg: Reply,
        fds: Option<FdsOf>,
    },
    /// Send to an IPCP on its channel (with a flow's IPCP fds).
    ToIpcp {
        ipcp: IpcpId,
        id: u64,
        msg: IrmdToIpcp,
        fds: Option<FdsOf>,
    },
    /// Drop a client's connection (after any `Send` queued before).
    Close { conn: ConnId },
    /// Create a flow's shared memory and wake-up fds.
    CreateFlow {
        flow_id: u32,
        geometry: RingGeometry,
    },
    /// Set the state word of a flow's memory (what the application reads).
    SetFlowState { flow_id: u32, state: FlowState },
    /// Release the flow's memory and fds.
    DropFlow { flow_id: u32 },
    /// Start an IPCP process with a private channel.
    Spawn { ipcp: IpcpId, spec: BootstrapSpec },
    /// Stop an IPCP process (SIGTERM through its pidfd).
    Kill { ipcp: IpcpId },
    /// Start `exec args…` as `uid` (auto-start of a bound program).
    StartProgram {
        exec: String,
        args: Vec<String>,
        uid: u32,
    },
}

/// A deadline; stale ones (their subject gone) are skipped when due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Hello { conn: ConnId },
    Accept { conn: ConnId, req: u64 },
    Incoming { ipcp: IpcpId, token: u64 },
    Alloc { flow_id: u32, req: u64 },
    Bootstrap { ipcp: IpcpId },
    FlowList { list: u64 },
}

struct Conn {
    cred: Cred,
    role: Option<ClientRole>,
}

enum IpcpState {
    /// Spawn requested; waiting for the IPCP's report. `reply` is the CLI
    /// request waiting for the outcome.
    Booting {
        reply: Option<(ConnId, u64)>,
    },
    Operational,
}

struct Ipcp {
    id: IpcpId,
    spec: BootstrapSpec,
    pid: Option<u32>,
    state: IpcpState,
    info: Option<IpcpInfo>,
    counters: Vec<(String, u64)>,
    /// When irmd received `counters`.
    counters_at: Option<Instant>,
}

struct NameEntry {
    /// The uid that made the name: only it (or root) may change it.
    owner: u32,
    layers: BTreeSet<String>,
    /// (program, uid that bound it): a process of that program *and uid*
    /// accepts the name's flows.
    bindings: BTreeSet<(String, u32)>,
}

enum Phase {
    /// Waiting for the IPCP's answer to our request `req`.
    Allocating {
        reply: (ConnId, u64),
        req: u64,
    },
    Allocated,
    /// The app let go; waiting for the IPCP's acknowledgement of `req`.
    Deallocating {
        reply: Option<(ConnId, u64)>,
        req: u64,
    },
}

struct FlowRec {
    name: String,
    conn: ConnId,
    uid: u32,
    pid: u32,
    ipcp: IpcpId,
    qos: Qos,
    timeout_ms: u64,
    max_sdu: u32,
    geometry: RingGeometry,
    phase: Phase,
    state: FlowState,
    /// Last report of the IPCP, and when it came.
    counters: Option<(FlowCounters, Instant)>,
}

/// An `irm flow list` page waiting for the IPCPs' fresh counters.
struct PendingList {
    conn: ConnId,
    id: u64,
    cred: Cred,
    what: ListOf,
    /// (IPCP, request id) of every report not yet complete.
    waiting: BTreeSet<(IpcpId, u64)>,
}

/// What a pending list answers with once its counter reports are in.
enum ListOf {
    /// `irm flow list`, the page after this flow id.
    Flows { after: Option<u32> },
    /// `irm ipcp list`.
    Ipcps,
}

struct PendingAccept {
    conn: ConnId,
    req: u64,
    prog: String,
    uid: u32,
}

struct Incoming {
    ipcp: IpcpId,
    token: u64,
    name: String,
    qos: Qos,
    max_sdu: u32,
}

/// The registry core.
pub struct Registry {
    policy: Policy,
    conns: HashMap<ConnId, Conn>,
    ipcps: BTreeMap<IpcpId, Ipcp>,
    names: BTreeMap<String, NameEntry>,
    /// Secure-flow configuration per name: (owner uid, settings).
    security: BTreeMap<String, (u32, NameSecurity)>,
    flows: BTreeMap<u32, FlowRec>,
    accepts: Vec<PendingAccept>,
    incoming: Vec<Incoming>,
    timers: BTreeSet<(Instant, u64, Timer)>,
    lists: BTreeMap<u64, PendingList>,
    out: VecDeque<Output>,
    auto: autostart::AutoStart,
    stats: metrics::Stats,
    next_ipcp: IpcpId,
    next_req: u64,
    next_flow: u32,
    next_timer: u64,
}

impl Registry {
    pub fn new(policy: Policy) -> Registry {
        Registry {
            policy,
            conns: HashMap::new(),
            ipcps: BTreeMap::new(),
            names: BTreeMap::new(),
            security: BTreeMap::new(),
            flows: BTreeMap::new(),
            accepts: Vec::new(),
            incoming: Vec::new(),
            timers: BTreeSet::new(),
            lists: BTreeMap::new(),
            out: VecDeque::new(),
            auto: autostart::AutoStart::default(),
            stats: metrics::Stats::default(),
            next_ipcp: 1,
            next_req: 1,
            next_flow: 1,
            next_timer: 0,
        }
    }

    /// The next output for the shell, in the order the registry decided them.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Registry::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _, _)| *t)
    }

    /// Fire every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((t, _, _)) = self.timers.first() {
            if *t > now {
                break;
            }
            let (_, _, timer) = self.timers.pop_first().expect("non-empty");
            self.fire(now, timer);
        }
    }

    /// Handle one event.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connected { conn, cred } => self.connected(now, conn, cred),
            Input::Hello {
                conn,
                id,
                role,
                admin,
            } => self.hello(conn, id, role, admin),
            Input::App { conn, id, req } => self.app(now, conn, id, req),
            Input::Cli { conn, id, req } => self.cli(now, conn, id, req),
            Input::Closed { conn } => self.closed(conn),
            Input::FromIpcp { ipcp, id, msg } => self.ipcp_msg(now, ipcp, id, msg),
            Input::Spawned { ipcp, pid } => {
                if let Some(i) = self.ipcps.get_mut(&ipcp) {
                    i.pid = Some(pid);
                    info!(
                        "Created IPCP {} (process {pid}) for layer {} on {}.",
                        i.spec.name, i.spec.layer, i.spec.dev
                    );
                }
            }
            Input::SpawnFailed { ipcp, error } => {
                if let Some(i) = self.ipcps.remove(&ipcp) {
                    if let IpcpState::Booting {
                        reply: Some((c, r)),
                    } = i.state
                    {
                        self.send(c, r, Reply::Err(Error::Ipcp(error)));
                    }
                }
            }
            Input::IpcpGone { ipcp, why } => self.ipcp_gone(ipcp, &why),
            Input::FlowMemoryFailed { flow_id, error } => {
                warn!("cannot create memory for flow {flow_id}: {error}");
                if let Some(f) = self.flows.remove(&flow_id) {
                    if let Phase::Allocating { reply, .. } = f.phase {
                        self.send(reply.0, reply.1, Reply::Err(error));
                    }
                    self.out.push_back(Output::DropFlow { flow_id });
                }
            }
        }
    }

    // ---- helpers shared by the submodules ----

    fn send(&mut self, conn: ConnId, id: u64, msg: Reply) {
        if self.conns.contains_key(&conn) {
            self.out.push_back(Output::Send {
                conn,
                id,
                msg,
                fds: None,
            });
        }
    }

    fn send_ipcp(&mut self, ipcp: IpcpId, id: u64, msg: IrmdToIpcp, fds: Option<FdsOf>) {
        self.out.push_back(Output::ToIpcp { ipcp, id, msg, fds });
    }

    fn arm(&mut self, at: Instant, t: Timer) {
        self.next_timer += 1;
        self.timers.insert((at, self.next_timer, t));
    }

    fn new_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn cred(&self, conn: ConnId) -> Option<Cred> {
        self.conns.get(&conn).map(|c| c.cred)
    }

    fn count_conns(&self, uid: u32) -> usize {
        self.conns.values().filter(|c| c.cred.uid == uid).count()
    }

    // ---- connections ----

    fn connected(&mut self, now: Instant, conn: ConnId, cred: Cred) {
        let refuse = if self.conns.len() >= self.policy.max_conns {
            Some(format!(
                "irmd holds {} connections, its limit",
                self.policy.max_conns
            ))
        } else if cred.limited() && self.count_conns(cred.uid) >= self.policy.max_conns_per_uid {
            Some(format!(
                "uid {} already holds {} connections, the limit per user",
                cred.uid, self.policy.max_conns_per_uid
            ))
        } else {
            None
        };
        if let Some(why) = refuse {
            self.out.push_back(Output::Send {
                conn,
                id: 0,
                msg: Reply::Err(Error::NoMem(why)),
                fds: None,
            });
            self.out.push_back(Output::Close { conn });
            return;
        }
        self.conns.insert(conn, Conn { cred, role: None });
        self.arm(now + self.policy.hello_wait, Timer::Hello { conn });
    }

    fn hello(&mut self, conn: ConnId, id: u64, role: ClientRole, admin: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.role.is_some() {
            return self.send(conn, id, Reply::Err(Error::Invalid("hello twice".into())));
        }
        if let ClientRole::App { prog } = &role {
            if let Err(e) = irm::proto::check_name("program name", prog) {
                return self.send(conn, id, Reply::Err(e));
            }
            info!("New instance ({}) of {prog} added.", c.cred.pid);
        }
        c.cred.admin = c.cred.is_root() || admin;
        c.role = Some(role);
        self.send(conn, id, Reply::Ok);
    }

    fn closed(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.accepts.retain(|a| a.conn != conn);
        if let Some(ClientRole::App { .. }) = c.role {
            let owned: Vec<u32> = self
                .flows
                .iter()
                .filter(|(_, f)| f.conn == conn)
                .map(|(id, _)| *id)
                .collect();
            for id in owned {
                self.release_flow(id, None, c.cred.pid);
            }
            info!("Dead process removed: {}.", c.cred.pid);
        }
    }

    fn app(&mut self, now: Instant, conn: ConnId, id: u64, req: AppRequest) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(ClientRole::App { prog }) = c.role.clone() else {
            return self.send(
                conn,
                id,
                Reply::Err(Error::Invalid("not an application connection".into())),
            );
        };
        match req {
            AppRequest::FlowAlloc {
                name,
                qos,
                timeout_ms,
            } => self.flow_alloc(now, conn, id, name, qos, timeout_ms),
            AppRequest::FlowAccept { timeout_ms } => {
                self.flow_accept(now, conn, id, prog, timeout_ms)
            }
            AppRequest::FlowDealloc { flow_id } => self.flow_dealloc(conn, id, flow_id),
        }
    }

    fn cli(&mut self, now: Instant, conn: ConnId, id: u64, req: CliRequest) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.role != Some(ClientRole::Cli) {
            return self.send(
                conn,
                id,
                Reply::Err(Error::Invalid("not a CLI connection".into())),
            );
        }
        let cred = c.cred;
        let r = match req {
            CliRequest::IpcpBootstrap(spec) => self.bootstrap(now, cred, conn, id, spec),
            CliRequest::IpcpList => Ok(self.ipcp_list(now, conn, id)),
            CliRequest::IpcpDestroy { name } => self.ipcp_destroy(cred, &name),
            CliRequest::NameRegister { name, layer } => self.name_register(cred, name, layer),
            CliRequest::NameUnregister { name, layer } => self.name_unregister(cred, name, layer),
            CliRequest::NameCreate { name, security } => self.name_create(cred, name, security),
            CliRequest::NameDestroy { name } => self.name_destroy(cred, name),
            CliRequest::NameList { after } => Ok(Some(self.name_rows(after))),
            CliRequest::BindProgram { prog, name } => self.bind(now, cred, prog, name),
            CliRequest::UnbindProgram { prog, name } => self.unbind(cred, prog, name),
            CliRequest::FlowList { after } => Ok(self.flow_list(now, cred, conn, id, after)),
            CliRequest::BindProgramAuto {
                prog,
                name,
                exec,
                args,
            } => self.bind_auto(now, cred, prog, name, exec, args),
        };
        match r {
            Ok(Some(reply)) => self.send(conn, id, reply),
            Ok(None) => {}
            Err(e) => self.send(conn, id, Reply::Err(e)),
        }
    }

    // ---- IPCPs ----

    fn ipcp_msg(&mut self, now: Instant, ipcp: IpcpId, id: u64, msg: IpcpToIrmd) {
        if !self.ipcps.contains_key(&ipcp) {
            return;
        }
        match msg {
            IpcpToIrmd::Bootstrapped(result) => self.bootstrapped(ipcp, result),
            IpcpToIrmd::FlowAllocResult { flow_id, result } => {
                self.alloc_result(ipcp, id, flow_id, result)
            }
            IpcpToIrmd::FlowReqArrived {
                token,
                name_hash,
                qos,
                max_sdu,
            } => self.flow_req_arrived(now, ipcp, token, name_hash, qos, max_sdu),
            IpcpToIrmd::FlowState { flow_id, cause } => self.flow_state(ipcp, flow_id, cause),
            IpcpToIrmd::Counters(c) => {
                if let Some(i) = self.ipcps.get_mut(&ipcp) {
                    i.counters = c;
                    i.counters_at = Some(now);
                }
            }
            IpcpToIrmd::FlowCounters(list) => {
                for c in list {
                    if let Some(f) = self.flows.get_mut(&c.flow_id) {
                        if f.ipcp == ipcp {
                            f.counters = Some((c, now));
                        }
                    }
                }
            }
            IpcpToIrmd::Done(_) => {
                if !self.list_report_done(now, ipcp, id) {
                    self.dealloc_done(ipcp, id)
                }
            }
        }
    }

    fn flow_state(&mut self, ipcp: IpcpId, flow_id: u32, cause: DownCause) {
        let Some(f) = self.flows.get_mut(&flow_id) else {
            return;
        };
        if f.ipcp != ipcp {
            return;
        }
        f.state = match cause {
            DownCause::Up => FlowState::Allocated,
            DownCause::Unresponsive => FlowState::Peer,
            _ => FlowState::Down,
        };
        self.stats.state_change(&cause);
        match cause {
            DownCause::Up => info!("flow-allocator: Flow {flow_id} up."),
            other => info!("flow-allocator: Flow {flow_id} down: {}.", other.describe()),
        }
    }

    fn ipcp_gone(&mut self, ipcp: IpcpId, why: &str) {
        let Some(i) = self.ipcps.remove(&ipcp) else {
            return;
        };
        let name = i.spec.name.clone();
        let ipcp_pid = i.pid.unwrap_or_default();
        warn!("IPCP {name} is gone ({why}); its flows are down.");
        self.lists_forget_ipcp(ipcp);
        if let IpcpState::Booting {
            reply: Some((c, r)),
        } = i.state
        {
            self.send(
                c,
                r,
                Reply::Err(Error::Ipcp(format!(
                    "IPCP {name} ended before it bootstrapped: {why}"
                ))),
            );
        }
        self.out.push_back(Output::Kill { ipcp });
        self.incoming.retain(|x| x.ipcp != ipcp);
        let ids: Vec<u32> = self
            .flows
            .iter()
            .filter(|(_, f)| f.ipcp == ipcp)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.stats.ipcp_gone += 1;
            let f = self.flows.get_mut(&id).expect("listed");
            f.state = FlowState::Down;
            self.out.push_back(Output::SetFlowState {
                flow_id: id,
                state: FlowState::Down,
            });
            match std::mem::replace(&mut f.phase, Phase::Allocated) {
                Phase::Allocating { reply, .. } => {
                    self.flows.remove(&id);
                    self.out.push_back(Output::DropFlow { flow_id: id });
                    self.send(
                        reply.0,
                        reply.1,
                        Reply::Err(Error::Ipcp(format!("IPCP {name} died"))),
                    );
                }
                Phase::Deallocating { reply, .. } => {
                    self.flows.remove(&id);
                    self.out.push_back(Output::DropFlow { flow_id: id });
                    info!("Completed deallocation of flow_id {id} by process {ipcp_pid}.");
                    if let Some((c, r)) = reply {
                        self.send(c, r, Reply::Ok);
                    }
                }
                Phase::Allocated => info!("flow-allocator: Flow {id} down: IPCP {name} died."),
            }
        }
    }

    fn fire(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::Hello { conn } => {
                if self.conns.get(&conn).is_some_and(|c| c.role.is_none()) {
                    let wait = self.policy.hello_wait;
                    self.send(
                        conn,
                        0,
                        Reply::Err(Error::Invalid(format!("no hello within {wait:?}"))),
                    );
                    self.out.push_back(Output::Close { conn });
                    self.conns.remove(&conn);
                }
            }
            Timer::Accept { conn, req } => {
                if let Some(p) = self
                    .accepts
                    .iter()
                    .position(|a| a.conn == conn && a.req == req)
                {
                    self.accepts.remove(p);
                    self.send(conn, req, Reply::Err(Error::TimedOut));
                }
            }
            Timer::Incoming { ipcp, token } => {
                if let Some(p) = self
                    .incoming
                    .iter()
                    .position(|i| i.ipcp == ipcp && i.token == token)
                {
                    self.incoming.remove(p);
                    self.refuse(ipcp, token, irm::proto::RefuseReason::NoAcceptingProcess);
                }
            }
            Timer::Alloc { flow_id, req } => {
                let due = matches!(
                    self.flows.get(&flow_id).map(|f| &f.phase),
                    Some(Phase::Allocating { req: r, .. }) if *r == req
                );
                if due {
                    let f = self.flows.remove(&flow_id).expect("checked");
                    if let Phase::Allocating { reply, .. } = f.phase {
                        self.send(reply.0, reply.1, Reply::Err(Error::TimedOut));
                    }
                    self.send_ipcp(f.ipcp, 0, IrmdToIpcp::FlowDealloc { flow_id }, None);
                    self.out.push_back(Output::DropFlow { flow_id });
                }
            }
            Timer::FlowList { list } => self.answer_list(now, list),
            Timer::Bootstrap { ipcp } => {
                let late = matches!(
                    self.ipcps.get(&ipcp).map(|i| &i.state),
                    Some(IpcpState::Booting { .. })
                );
                if late {
                    let wait = self.policy.bootstrap_wait;
                    let name = self.ipcps[&ipcp].spec.name.clone();
                    if let Some(i) = self.ipcps.get_mut(&ipcp) {
                        if let IpcpState::Booting { reply } = &mut i.state {
                            if let Some((c, r)) = reply.take() {
                                self.out.push_back(Output::Send {
                                    conn: c,
                                    id: r,
                                    msg: Reply::Err(Error::Ipcp(format!(
                                        "IPCP {name} did not report within {wait:?}"
                                    ))),
                                    fds: None,
                                });
                            }
                        }
                    }
                    self.ipcp_gone(ipcp, "no report in time");
                }
            }
        }
        let _ = now;
    }
}

impl Registry {
    /// `irm flow list`: ask every IPCP carrying a flow the caller may see for
    /// its counters now, and answer once all have (or after
    /// `flow_list_wait`, with the last reported ones). No such flow: at once.
    fn flow_list(
        &mut self,
        now: Instant,
        cred: Cred,
        conn: ConnId,
        id: u64,
        after: Option<u32>,
    ) -> Option<Reply> {
        let ipcps: BTreeSet<IpcpId> = self
            .flows
            .values()
            .filter(|f| cred.sees_flows_of(f.uid))
            .map(|f| f.ipcp)
            .filter(|i| {
                self.ipcps
                    .get(i)
                    .is_some_and(|p| matches!(p.state, IpcpState::Operational))
            })
            .collect();
        if ipcps.is_empty() {
            return Some(self.flow_rows(now, cred, after));
        }
        self.hold_list(
            now,
            ipcps,
            IrmdToIpcp::ReportFlowCounters,
            PendingList {
                conn,
                id,
                cred,
                what: ListOf::Flows { after },
                waiting: BTreeSet::new(),
            },
        );
        None
    }

    /// Ask each of `ipcps` for its counters with `ask`, and hold `list`
    /// until every report is complete or `flow_list_wait` has passed.
    fn hold_list(
        &mut self,
        now: Instant,
        ipcps: impl IntoIterator<Item = IpcpId>,
        ask: IrmdToIpcp,
        mut list: PendingList,
    ) {
        let key = self.new_req();
        for ipcp in ipcps {
            let req = self.new_req();
            self.send_ipcp(ipcp, req, ask.clone(), None);
            list.waiting.insert((ipcp, req));
        }
        self.lists.insert(key, list);
        self.arm(
            now + self.policy.flow_list_wait,
            Timer::FlowList { list: key },
        );
    }

    /// An IPCP finished a counter report: answer the lists it completes.
    /// False when `req` was not a counter report.
    fn list_report_done(&mut self, now: Instant, ipcp: IpcpId, req: u64) -> bool {
        let mut found = false;
        let mut complete = Vec::new();
        for (&list, p) in self.lists.iter_mut() {
            if p.waiting.remove(&(ipcp, req)) {
                found = true;
                if p.waiting.is_empty() {
                    complete.push(list);
                }
            }
        }
        for list in complete {
            self.answer_list(now, list);
        }
        found
    }

    /// An IPCP is gone: no list waits for it any more (a list it held up
    /// is answered when its deadline fires).
    fn lists_forget_ipcp(&mut self, ipcp: IpcpId) {
        for p in self.lists.values_mut() {
            p.waiting.retain(|(i, _)| *i != ipcp);
        }
    }

    fn answer_list(&mut self, now: Instant, list: u64) {
        if let Some(p) = self.lists.remove(&list) {
            let rows = match p.what {
                ListOf::Flows { after } => self.flow_rows(now, p.cred, after),
                ListOf::Ipcps => self.ipcp_rows(now),
            };
            self.send(p.conn, p.id, rows);
        }
    }
}
