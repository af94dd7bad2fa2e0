//! The registry in virtual time: deadlines, allocation races, process death,
//! limits, and who may do what.

use super::*;
use irm::proto::{IpcpInfo, RefuseReason};
use std::time::Duration;

const ROOT_CLI: ConnId = 1;
const ROOT: Cred = Cred {
    pid: 100,
    uid: 0,
    gid: 0,
    admin: true,
};

fn user(uid: u32) -> Cred {
    Cred {
        pid: 10_000 + uid,
        uid,
        gid: 500,
        admin: false,
    }
}

struct T {
    reg: Registry,
    now: Instant,
    outs: Vec<Output>,
}

impl T {
    fn new(policy: Policy) -> T {
        let mut t = T {
            reg: Registry::new(policy),
            now: Instant::now(),
            outs: Vec::new(),
        };
        t.connect(ROOT_CLI, ROOT, ClientRole::Cli);
        t
    }

    fn input(&mut self, i: Input) {
        self.reg.handle(self.now, i);
        while let Some(o) = self.reg.poll_output() {
            self.outs.push(o);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.reg.handle_timeout(self.now);
        while let Some(o) = self.reg.poll_output() {
            self.outs.push(o);
        }
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outs)
    }

    fn connect(&mut self, conn: ConnId, cred: Cred, role: ClientRole) {
        self.input(Input::Connected { conn, cred });
        self.input(Input::Hello {
            conn,
            id: 0,
            role,
            admin: cred.admin,
        });
        let r = self.reply(conn, 0);
        assert_eq!(r, Some(Reply::Ok), "hello of {conn}");
    }

    /// The reply to (conn, id) among the outputs so far, taken out.
    fn reply(&mut self, conn: ConnId, id: u64) -> Option<Reply> {
        let pos = self.outs.iter().position(
            |o| matches!(o, Output::Send { conn: c, id: i, .. } if *c == conn && *i == id),
        )?;
        match self.outs.remove(pos) {
            Output::Send { msg, .. } => Some(msg),
            _ => unreachable!(),
        }
    }

    fn cli(&mut self, conn: ConnId, id: u64, req: CliRequest) -> Reply {
        self.input(Input::Cli { conn, id, req });
        self.reply(conn, id)
            .expect("a CLI request is answered at once")
    }

    /// `irm flow list` as `conn`: every IPCP asked for fresh counters
    /// answers at once with `fresh` (its flows' counters), then the reply.
    fn flow_list(&mut self, conn: ConnId, fresh: &[FlowCounters]) -> Reply {
        self.input(Input::Cli {
            conn,
            id: 77,
            req: CliRequest::FlowList { after: None },
        });
        let asks: Vec<(IpcpId, u64)> = self
            .take()
            .into_iter()
            .filter_map(|o| match o {
                Output::ToIpcp {
                    ipcp,
                    id,
                    msg: IrmdToIpcp::ReportFlowCounters,
                    ..
                } => Some((ipcp, id)),
                other => {
                    self.outs.push(other);
                    None
                }
            })
            .collect();
        for (ipcp, id) in asks {
            self.input(Input::FromIpcp {
                ipcp,
                id: 0,
                msg: IpcpToIrmd::FlowCounters(fresh.to_vec()),
            });
            self.input(Input::FromIpcp {
                ipcp,
                id,
                msg: IpcpToIrmd::Done(Ok(())),
            });
        }
        self.reply(conn, 77).expect("the list is answered")
    }

    /// Root asks (request `id`) for IPCP `name` on veth0: the IPCP irmd
    /// spawns for it (other outputs dropped).
    fn spawn_ipcp(&mut self, id: u64, name: &str) -> IpcpId {
        self.input(Input::Cli {
            conn: ROOT_CLI,
            id,
            req: CliRequest::IpcpBootstrap(spec(name)),
        });
        self.take()
            .into_iter()
            .find_map(|o| match o {
                Output::Spawn { ipcp, .. } => Some(ipcp),
                _ => None,
            })
            .expect("spawn")
    }

    /// A bootstrapped IPCP in layer `eth`.
    fn ipcp(&mut self) -> IpcpId {
        let ipcp = self.spawn_ipcp(900, "eth-a");
        self.input(Input::Spawned { ipcp, pid: 77 });
        self.input(Input::FromIpcp {
            ipcp,
            id: 0,
            msg: IpcpToIrmd::Bootstrapped(Ok(IpcpInfo {
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
                max_sdu: 1480,
                backend: "raw".into(),
            })),
        });
        assert_eq!(self.reply(ROOT_CLI, 900), Some(Reply::Ok));
        self.take();
        ipcp
    }

    /// `conn` asks for a flow to `svc`: the flow id and the request id irmd
    /// used for its FlowAlloc to the IPCP (other outputs dropped).
    fn ask_flow(&mut self, conn: ConnId, id: u64) -> (u32, u64) {
        self.request_flow(conn, id, None);
        let asked = self.alloc_req().expect("irmd asks the IPCP");
        self.take();
        asked
    }

    /// `conn` registers `name` in layer `eth` (request `id`).
    fn register(&mut self, conn: ConnId, id: u64, name: &str) -> Reply {
        self.cli(
            conn,
            id,
            CliRequest::NameRegister {
                name: name.into(),
                layer: "eth".into(),
            },
        )
    }

    /// `conn` asks (request `id`) for a raw flow to `svc`.
    fn request_flow(&mut self, conn: ConnId, id: u64, timeout_ms: Option<u64>) {
        self.input(Input::App {
            conn,
            id,
            req: AppRequest::FlowAlloc {
                name: "svc".into(),
                qos: Qos::raw(),
                timeout_ms,
            },
        });
    }

    /// A flow of `conn` that `ipcp` allocated.
    fn allocated_flow(&mut self, ipcp: IpcpId, conn: ConnId) -> u32 {
        let (flow_id, req) = self.ask_flow(conn, 1);
        self.input(alloc_ok(ipcp, req, flow_id));
        self.take();
        flow_id
    }

    /// The request id irmd used for its FlowAlloc of `flow` to the IPCP.
    fn alloc_req(&self) -> Option<(u32, u64)> {
        self.outs.iter().find_map(|o| match o {
            Output::ToIpcp {
                id,
                msg: IrmdToIpcp::FlowAlloc { flow_id, .. },
                ..
            } => Some((*flow_id, *id)),
            _ => None,
        })
    }
}

fn spec(name: &str) -> BootstrapSpec {
    BootstrapSpec {
        name: name.into(),
        layer: "eth".into(),
        dev: "veth0".into(),
        ethertype: 0x88b5,
        backend: "raw".into(),
        busy_poll_us: 0,
        vlan: None,
        key: None,
        encrypt: false,
        queues: None,
    }
}

/// `ipcp`'s answer to request `id`: flow `flow_id` is allocated (max SDU 1000).
fn alloc_ok(ipcp: IpcpId, id: u64, flow_id: u32) -> Input {
    Input::FromIpcp {
        ipcp,
        id,
        msg: IpcpToIrmd::FlowAllocResult {
            flow_id,
            result: Ok(1000),
        },
    }
}

fn is_err(r: &Reply, code: i32) -> bool {
    matches!(r, Reply::Err(e) if e.code() == code)
}

#[test]
fn bootstrap_gives_up_after_ten_seconds() {
    let mut t = T::new(Policy::default());
    let ipcp = t.spawn_ipcp(5, "eth-a");
    t.input(Input::Spawned { ipcp, pid: 77 });
    t.advance(Duration::from_millis(9_999));
    assert_eq!(t.reply(ROOT_CLI, 5), None, "still waiting");
    t.advance(Duration::from_millis(1));
    let r = t.reply(ROOT_CLI, 5).expect("answered at 10 s");
    assert!(
        matches!(&r, Reply::Err(Error::Ipcp(m)) if m.contains("did not report")),
        "{r:?}"
    );
    assert!(t.take().contains(&Output::Kill { ipcp }));
    // It is gone: a list shows nothing.
    assert_eq!(
        t.cli(ROOT_CLI, 6, CliRequest::IpcpList),
        Reply::IpcpRows(vec![])
    );
}

#[test]
fn accept_times_out_when_asked_to() {
    let mut t = T::new(Policy::default());
    t.connect(2, user(1000), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 2,
        id: 1,
        req: AppRequest::FlowAccept {
            timeout_ms: Some(500),
        },
    });
    t.advance(Duration::from_millis(499));
    assert_eq!(t.reply(2, 1), None);
    t.advance(Duration::from_millis(1));
    assert_eq!(t.reply(2, 1), Some(Reply::Err(Error::TimedOut)));
}

/// Register `name` and bind `prog` to it as `cred` over CLI connection `conn`.
fn serve(t: &mut T, conn: ConnId, cred: Cred, name: &str, prog: &str) {
    t.connect(conn, cred, ClientRole::Cli);
    let r = t.register(conn, 1, name);
    assert_eq!(r, Reply::Ok);
    let r = t.cli(
        conn,
        2,
        CliRequest::BindProgram {
            prog: prog.into(),
            name: name.into(),
        },
    );
    assert_eq!(r, Reply::Ok);
}

fn arrive(t: &mut T, ipcp: IpcpId, token: u64, name: &str) {
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::FlowReqArrived {
            token,
            name_hash: irm::proto::name_hash(name),
            qos: Qos::raw(),
            max_sdu: 1480,
        },
    });
}

fn refusal(t: &mut T, token: u64) -> Option<RefuseReason> {
    t.take().into_iter().find_map(|o| match o {
        Output::ToIpcp {
            msg:
                IrmdToIpcp::FlowAcceptResult {
                    token: tk,
                    result: Err(r),
                    ..
                },
            ..
        } if tk == token => Some(r),
        _ => None,
    })
}

#[test]
fn incoming_flow_waits_two_seconds_for_an_accept() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    serve(&mut t, 3, user(1000), "svc", "srv");
    // A live instance that has not called accept yet.
    t.connect(4, user(1000), ClientRole::App { prog: "srv".into() });
    arrive(&mut t, ipcp, 9, "svc");
    assert_eq!(refusal(&mut t, 9), None, "waits for the instance");
    t.advance(Duration::from_millis(1_999));
    assert_eq!(refusal(&mut t, 9), None);
    t.advance(Duration::from_millis(1));
    assert_eq!(refusal(&mut t, 9), Some(RefuseReason::NoAcceptingProcess));
}

#[test]
fn incoming_flow_goes_to_an_accept_of_the_binding_uid_only() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    serve(&mut t, 3, user(1000), "svc", "srv");
    // Another user runs a program of the same name and waits in accept.
    t.connect(5, user(1001), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 5,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    arrive(&mut t, ipcp, 9, "svc");
    assert_eq!(
        refusal(&mut t, 9),
        Some(RefuseReason::NoAcceptingProcess),
        "not another uid's instance"
    );
    assert_eq!(t.reply(5, 1), None);
    // The owner's instance gets it.
    t.connect(4, user(1000), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 4,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    arrive(&mut t, ipcp, 10, "svc");
    assert!(matches!(t.reply(4, 1), Some(Reply::FlowReady { .. })));
    assert_eq!(t.reply(5, 1), None);
}

#[test]
fn allocation_completes_only_for_the_right_ipcp_and_request() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    t.request_flow(2, 7, None);
    let (flow_id, req) = t.alloc_req().expect("asked the IPCP");
    assert!(t.outs.contains(&Output::CreateFlow {
        flow_id,
        geometry: RingGeometry {
            slots: 4096,
            slot_size: 1480
        }
    }));
    t.take();
    // A guessed request id, or another IPCP, does not complete it.
    for (who, id) in [(ipcp, req + 1), (ipcp + 1, req)] {
        t.input(alloc_ok(who, id, flow_id));
        assert_eq!(t.reply(2, 7), None);
    }
    t.input(alloc_ok(ipcp, req, flow_id));
    let out = t.take();
    assert!(out.contains(&Output::Send {
        conn: 2,
        id: 7,
        msg: Reply::FlowReady {
            flow_id,
            name: "svc".into(),
            qos: Qos::raw(),
            max_sdu: 1000,
            geometry: RingGeometry {
                slots: 4096,
                slot_size: 1480
            },
            security: None,
        },
        fds: Some(FdsOf::App(flow_id)),
    }));
}

#[test]
fn process_death_during_an_allocation_releases_the_flow() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    let (flow_id, req) = t.ask_flow(2, 7);
    t.input(Input::Closed { conn: 2 });
    let dealloc = t.take().into_iter().find_map(|o| match o {
        Output::ToIpcp {
            id,
            msg: IrmdToIpcp::FlowDealloc { flow_id: f },
            ..
        } if f == flow_id => Some(id),
        _ => None,
    });
    let dealloc = dealloc.expect("the IPCP is told at once");
    // The late answer to the allocation finds nobody to hand the flow to.
    t.input(alloc_ok(ipcp, req, flow_id));
    assert!(!t
        .outs
        .iter()
        .any(|o| matches!(o, Output::Send { conn: 2, .. })));
    t.input(Input::FromIpcp {
        ipcp,
        id: dealloc,
        msg: IpcpToIrmd::Done(Ok(())),
    });
    assert!(t.take().contains(&Output::DropFlow { flow_id }));
    match t.cli(ROOT_CLI, 3, CliRequest::FlowList { after: None }) {
        Reply::FlowRows(r) => assert!(r.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn allocation_deadline_and_ipcp_death() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    t.request_flow(2, 7, Some(300));
    t.advance(Duration::from_millis(300));
    assert_eq!(t.reply(2, 7), Some(Reply::Err(Error::TimedOut)));
    // Another allocation, then the IPCP dies: the waiter hears at once.
    t.request_flow(2, 8, None);
    t.input(Input::IpcpGone {
        ipcp,
        why: "test".into(),
    });
    assert!(matches!(t.reply(2, 8), Some(Reply::Err(Error::Ipcp(_)))));
}

/// The IPCP's answer and the allocation's deadline at the same instant, in
/// both orders: either the application gets the flow and irmd keeps it, or
/// it gets ETIMEDOUT and neither irmd nor the IPCP keeps anything (the IPCP
/// is told to deallocate, and the late answer changes nothing).
#[test]
fn an_answer_at_the_allocation_deadline_leaves_nothing_behind() {
    for answer_first in [true, false] {
        let mut t = T::new(Policy::default());
        let ipcp = t.ipcp();
        t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
        t.request_flow(2, 7, Some(300));
        let (flow_id, req) = t.alloc_req().expect("asked the IPCP");
        t.take();
        let answer = alloc_ok(ipcp, req, flow_id);
        t.now += Duration::from_millis(300);
        if answer_first {
            t.input(answer);
            t.advance(Duration::ZERO);
        } else {
            t.advance(Duration::ZERO);
            t.input(answer);
        }
        let out = t.take();
        let deallocs = out
            .iter()
            .filter(|o| {
                matches!(o, Output::ToIpcp { msg: IrmdToIpcp::FlowDealloc { flow_id: f }, .. }
                    if *f == flow_id)
            })
            .count();
        let to_app: Vec<&Reply> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    conn: 2,
                    id: 7,
                    msg,
                    ..
                } => Some(msg),
                _ => None,
            })
            .collect();
        let rows = match t.flow_list(ROOT_CLI, &[]) {
            Reply::FlowRows(r) => r,
            other => panic!("{other:?}"),
        };
        if answer_first {
            assert!(
                matches!(to_app[..], [Reply::FlowReady { .. }]),
                "{to_app:?}"
            );
            assert_eq!(deallocs, 0, "{out:?}");
            assert_eq!(rows.len(), 1);
        } else {
            assert_eq!(to_app, [&Reply::Err(Error::TimedOut)], "{out:?}");
            assert_eq!(deallocs, 1, "the IPCP is told once: {out:?}");
            assert!(out.contains(&Output::DropFlow { flow_id }), "{out:?}");
            assert!(rows.is_empty(), "{rows:?}");
        }
    }
}

/// An IPCP whose channel closes (it died): every flow over it is DOWN at
/// once (state word and wake-ups, through the shell), a pending allocation
/// fails with EIPCP, a pending deallocation completes, and the
/// application's later deallocation is answered at once.
#[test]
fn an_ipcp_that_dies_takes_every_flow_of_it_down_at_once() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    let up = t.allocated_flow(ipcp, 2);
    let leaving = t.allocated_flow(ipcp, 2);
    t.input(Input::App {
        conn: 2,
        id: 20,
        req: AppRequest::FlowDealloc { flow_id: leaving },
    });
    let (pending, _) = t.ask_flow(2, 30);
    t.input(Input::IpcpGone {
        ipcp,
        why: "its channel closed".into(),
    });
    let out = t.take();
    for flow_id in [up, leaving, pending] {
        assert!(
            out.contains(&Output::SetFlowState {
                flow_id,
                state: FlowState::Down
            }),
            "flow {flow_id}: {out:?}"
        );
    }
    assert!(out.contains(&Output::Kill { ipcp }), "{out:?}");
    let to_app = |id: u64| {
        out.iter().find_map(|o| match o {
            Output::Send {
                conn: 2,
                id: i,
                msg,
                ..
            } if *i == id => Some(msg.clone()),
            _ => None,
        })
    };
    assert_eq!(to_app(20), Some(Reply::Ok), "{out:?}");
    assert!(
        matches!(to_app(30), Some(Reply::Err(Error::Ipcp(_)))),
        "{out:?}"
    );
    assert!(out.contains(&Output::DropFlow { flow_id: leaving }));
    assert!(out.contains(&Output::DropFlow { flow_id: pending }));
    match t.cli(ROOT_CLI, 3, CliRequest::FlowList { after: None }) {
        Reply::FlowRows(r) => {
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!((r[0].flow_id, r[0].state), (up, FlowState::Down));
        }
        other => panic!("{other:?}"),
    }
    t.input(Input::App {
        conn: 2,
        id: 40,
        req: AppRequest::FlowDealloc { flow_id: up },
    });
    assert_eq!(t.reply(2, 40), Some(Reply::Ok));
    assert!(t.take().contains(&Output::DropFlow { flow_id: up }));
}

#[test]
fn per_uid_limits_are_enforced_with_a_clear_error() {
    let mut t = T::new(Policy {
        max_names_per_uid: 2,
        max_conns_per_uid: 3,
        max_accepts_per_uid: 1,
        max_flows_per_uid: 1,
        ..Policy::default()
    });
    t.ipcp();
    t.connect(2, user(1000), ClientRole::Cli);
    for (i, n) in ["a", "b"].iter().enumerate() {
        let r = t.register(2, i as u64 + 1, n);
        assert_eq!(r, Reply::Ok);
    }
    let r = t.register(2, 3, "c");
    assert!(
        matches!(&r, Reply::Err(Error::NoMem(m)) if m.contains("names")),
        "{r:?}"
    );
    // Root is not held to it.
    let r = t.register(ROOT_CLI, 4, "c");
    assert_eq!(r, Reply::Ok);
    // Names longer than 255 bytes are refused.
    let r = t.register(ROOT_CLI, 5, &"n".repeat(256));
    assert!(is_err(&r, irm::error::ENAME), "{r:?}");
    // Accepts.
    t.connect(3, user(1000), ClientRole::App { prog: "p".into() });
    t.input(Input::App {
        conn: 3,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    t.input(Input::App {
        conn: 3,
        id: 2,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    assert!(matches!(t.reply(3, 2), Some(Reply::Err(Error::NoMem(m))) if m.contains("accepts")));
    // Flows.
    for id in [3, 4] {
        t.input(Input::App {
            conn: 3,
            id,
            req: AppRequest::FlowAlloc {
                name: "x".into(),
                qos: Qos::raw(),
                timeout_ms: None,
            },
        });
    }
    assert!(matches!(t.reply(3, 4), Some(Reply::Err(Error::NoMem(m))) if m.contains("flows")));
    // Connections: this uid holds 2; the 4th is refused and closed.
    t.connect(4, user(1000), ClientRole::Cli);
    t.input(Input::Connected {
        conn: 5,
        cred: user(1000),
    });
    assert!(
        matches!(t.reply(5, 0), Some(Reply::Err(Error::NoMem(m))) if m.contains("connections"))
    );
    assert!(t.take().contains(&Output::Close { conn: 5 }));
}

#[test]
fn name_list_pages_stay_under_the_message_limit() {
    let mut t = T::new(Policy::default());
    t.ipcp();
    for i in 0..300 {
        let name = format!("{i:04}{}", "n".repeat(251));
        let r = t.register(ROOT_CLI, 10 + i, &name);
        assert_eq!(r, Reply::Ok);
    }
    let mut after = None;
    let mut seen = 0;
    loop {
        let r = t.cli(
            ROOT_CLI,
            1,
            CliRequest::NameList {
                after: after.clone(),
            },
        );
        let bytes = irm::proto::encode(&irm::proto::Envelope {
            id: 1,
            msg: r.clone(),
        })
        .unwrap();
        assert!(bytes.len() <= irm::proto::MAX_MSG);
        let Reply::NameRows(rows) = r else { panic!() };
        if rows.is_empty() {
            break;
        }
        seen += rows.len();
        after = rows.last().map(|r| r.name.clone());
    }
    assert_eq!(seen, 300);
}

/// Every CLI request by root, by the owner of the objects it touches (a
/// member), and by another member; and what each must get.
#[test]
fn authorization_table() {
    const OWNER: u32 = 1000;
    const OTHER: u32 = 1001;
    #[derive(Clone, Copy, Debug)]
    enum Who {
        Root,
        Owner,
        Other,
    }
    // (request, root allowed, owner allowed, other allowed)
    let table: Vec<(CliRequest, [bool; 3])> = vec![
        (
            CliRequest::IpcpBootstrap(BootstrapSpec {
                dev: "veth1".into(),
                ..spec("eth-b")
            }),
            [true, false, false],
        ),
        (
            CliRequest::IpcpDestroy {
                name: "eth-a".into(),
            },
            [true, false, false],
        ),
        (CliRequest::IpcpList, [true, true, true]),
        (
            CliRequest::NameRegister {
                name: "svc".into(),
                layer: "eth".into(),
            },
            [true, true, false],
        ),
        (
            CliRequest::BindProgram {
                prog: "srv2".into(),
                name: "svc".into(),
            },
            [true, true, false],
        ),
        (
            CliRequest::UnbindProgram {
                prog: "srv".into(),
                name: "svc".into(),
            },
            [true, true, false],
        ),
        (
            CliRequest::NameUnregister {
                name: "svc".into(),
                layer: "eth".into(),
            },
            [true, true, false],
        ),
        (CliRequest::NameList { after: None }, [true, true, true]),
        (CliRequest::FlowList { after: None }, [true, true, true]),
    ];
    for (req, allowed) in table {
        for (k, who) in [Who::Root, Who::Owner, Who::Other].into_iter().enumerate() {
            // A fresh world each time: an IPCP, and OWNER's name with a binding.
            let mut t = T::new(Policy::default());
            t.ipcp();
            serve(&mut t, 3, user(OWNER), "svc", "srv");
            let conn = 9;
            let cred = match who {
                Who::Root => ROOT,
                Who::Owner => user(OWNER),
                Who::Other => user(OTHER),
            };
            t.connect(conn, cred, ClientRole::Cli);
            t.input(Input::Cli {
                conn,
                id: 1,
                req: req.clone(),
            });
            let r = t.reply(conn, 1);
            let denied = matches!(&r, Some(Reply::Err(Error::Perm(_))));
            assert_eq!(!denied, allowed[k], "{req:?} by {who:?}: got {r:?}");
            if !denied {
                // Allowed requests did what they say (bootstrap answers later).
                assert!(
                    r.is_none() || !matches!(r, Some(Reply::Err(_))),
                    "{req:?} by {who:?}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn flows_are_private_to_their_process_and_uid() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    let flow_of = |t: &mut T, conn: ConnId, uid: u32| {
        t.connect(conn, user(uid), ClientRole::App { prog: "c".into() });
        t.allocated_flow(ipcp, conn)
    };
    let a = flow_of(&mut t, 2, 1000);
    let b = flow_of(&mut t, 3, 1001);
    // 1001 cannot deallocate 1000's flow.
    t.input(Input::App {
        conn: 3,
        id: 5,
        req: AppRequest::FlowDealloc { flow_id: a },
    });
    assert_eq!(t.reply(3, 5), Some(Reply::Err(Error::NotAlloc)));
    // Each member's list shows its own flow only; root sees both.
    let list = |t: &mut T, conn: ConnId, cred: Cred| -> Vec<u32> {
        t.connect(conn, cred, ClientRole::Cli);
        match t.flow_list(conn, &[]) {
            Reply::FlowRows(r) => r.into_iter().map(|r| r.flow_id).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(list(&mut t, 10, user(1000)), vec![a]);
    assert_eq!(list(&mut t, 11, user(1001)), vec![b]);
    assert_eq!(list(&mut t, 12, ROOT), vec![a, b]);
}

#[test]
fn a_destroyed_ipcp_is_gone_at_once_and_its_device_is_free_again() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    let r = t.cli(
        ROOT_CLI,
        7,
        CliRequest::IpcpDestroy {
            name: "eth-a".into(),
        },
    );
    assert_eq!(r, Reply::Ok);
    assert!(
        t.take()
            .iter()
            .any(|o| matches!(o, Output::Kill { ipcp: i } if *i == ipcp)),
        "the shell is told to stop the process"
    );
    match t.cli(ROOT_CLI, 8, CliRequest::IpcpList) {
        Reply::IpcpRows(rows) => assert!(rows.is_empty(), "still listed: {rows:?}"),
        other => panic!("unexpected {other:?}"),
    }
    // The same device and ethertype can be bootstrapped again at once.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 9,
        req: CliRequest::IpcpBootstrap(spec("eth-b")),
    });
    assert!(
        t.take().iter().any(|o| matches!(o, Output::Spawn { .. })),
        "a new IPCP on the freed device is spawned"
    );
}

#[test]
fn destroying_an_ipcp_takes_its_flows_down() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "c".into() });
    t.request_flow(2, 1, None);
    let (flow_id, req) = t.alloc_req().unwrap();
    t.input(alloc_ok(ipcp, req, flow_id));
    t.take();
    let r = t.cli(
        ROOT_CLI,
        2,
        CliRequest::IpcpDestroy {
            name: "eth-a".into(),
        },
    );
    assert_eq!(r, Reply::Ok);
    let out = t.take();
    assert!(out.contains(&Output::Kill { ipcp }), "{out:?}");
    assert!(out.contains(&Output::SetFlowState {
        flow_id,
        state: FlowState::Down
    }));
    match t.cli(ROOT_CLI, 4, CliRequest::FlowList { after: None }) {
        Reply::FlowRows(r) => assert_eq!(r[0].state, FlowState::Down),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_connection_without_hello_is_closed_after_five_seconds() {
    let mut t = T::new(Policy::default());
    t.input(Input::Connected {
        conn: 7,
        cred: user(1000),
    });
    t.connect(8, user(1000), ClientRole::Cli);
    t.advance(Duration::from_millis(4_999));
    assert!(!t.outs.contains(&Output::Close { conn: 7 }));
    t.advance(Duration::from_millis(1));
    assert!(matches!(t.reply(7, 0), Some(Reply::Err(Error::Invalid(m))) if m.contains("hello")));
    let out = t.take();
    assert!(out.contains(&Output::Close { conn: 7 }), "{out:?}");
    assert!(!out.contains(&Output::Close { conn: 8 }), "{out:?}");
}

#[test]
fn flow_list_shows_counters_the_ipcp_reports_when_asked() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "c".into() });
    let flow_id = t.allocated_flow(ipcp, 2);
    // A periodic report, then a second passes.
    let old = FlowCounters {
        flow_id,
        rx_sdus: 1,
        last_rx_ms_ago: Some(0),
        ..Default::default()
    };
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::FlowCounters(vec![old]),
    });
    t.take();
    t.advance(Duration::from_secs(1));
    let row = |r: Reply| match r {
        Reply::FlowRows(rows) => rows.into_iter().next().expect("one row"),
        other => panic!("{other:?}"),
    };
    // Asked now, the IPCP's fresh numbers are what the list shows.
    let fresh = FlowCounters {
        rx_sdus: 9,
        last_rx_ms_ago: Some(20),
        ..old
    };
    let r = row(t.flow_list(ROOT_CLI, &[fresh]));
    assert_eq!((r.rx_sdus, r.last_rx_ms_ago), (9, Some(20)));
    // An IPCP that does not answer holds the list up for flow_list_wait
    // only; then the last reported numbers are shown, aged.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 78,
        req: CliRequest::FlowList { after: None },
    });
    assert!(t.reply(ROOT_CLI, 78).is_none(), "waits for the IPCP");
    t.advance(Duration::from_millis(199));
    assert!(t.reply(ROOT_CLI, 78).is_none(), "still within the wait");
    t.advance(Duration::from_millis(1));
    let r = row(t.reply(ROOT_CLI, 78).expect("answered at the deadline"));
    assert_eq!((r.rx_sdus, r.last_rx_ms_ago), (9, Some(220)));
}

#[test]
fn a_bootstrap_on_another_protocols_ethertype_is_refused() {
    let mut t = T::new(Policy::default());
    for ethertype in [0x0800, 0x86dd, 0x8100, 0x05dc, 0xffff] {
        let r = t.cli(
            ROOT_CLI,
            3,
            CliRequest::IpcpBootstrap(BootstrapSpec {
                ethertype,
                ..spec("eth-x")
            }),
        );
        assert!(
            is_err(&r, Error::Invalid(String::new()).code()),
            "{ethertype:#06x}: {r:?}"
        );
        assert!(
            !t.take().iter().any(|o| matches!(o, Output::Spawn { .. })),
            "{ethertype:#06x} spawned an IPCP"
        );
    }
}

#[test]
fn auto_start_runs_the_bound_program_once_per_deadline_as_its_uid() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    serve(&mut t, 3, user(1000), "svc", "srv");
    // Without auto: no instance, refused at once, nothing started.
    arrive(&mut t, ipcp, 8, "svc");
    assert_eq!(refusal(&mut t, 8), Some(RefuseReason::NoAcceptingProcess));
    let r = t.cli(
        3,
        3,
        CliRequest::BindProgramAuto {
            prog: "srv".into(),
            name: "svc".into(),
            exec: "/usr/bin/srv".into(),
            args: vec!["--listen".into()],
        },
    );
    assert_eq!(r, Reply::Ok);
    arrive(&mut t, ipcp, 9, "svc");
    let outs = t.take();
    let started: Vec<_> = outs
        .iter()
        .filter(|o| matches!(o, Output::StartProgram { .. }))
        .collect();
    assert_eq!(
        started,
        vec![&Output::StartProgram {
            exec: "/usr/bin/srv".into(),
            args: vec!["--listen".into()],
            uid: 1000,
        }]
    );
    assert!(!outs.iter().any(|o| matches!(
        o,
        Output::ToIpcp {
            msg: IrmdToIpcp::FlowAcceptResult { .. },
            ..
        }
    )));
    // A second request within the deadline waits too, without a second start.
    arrive(&mut t, ipcp, 10, "svc");
    assert!(!t
        .take()
        .iter()
        .any(|o| matches!(o, Output::StartProgram { .. })));
    // The started program connects and accepts: it gets the first flow.
    t.connect(4, user(1000), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 4,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    assert!(matches!(t.reply(4, 1), Some(Reply::FlowReady { .. })));
    // Once the deadline passed and the program is gone, a request starts it again.
    t.input(Input::Closed { conn: 4 });
    t.advance(Duration::from_secs(3));
    t.take();
    arrive(&mut t, ipcp, 11, "svc");
    assert!(t
        .take()
        .iter()
        .any(|o| matches!(o, Output::StartProgram { uid: 1000, .. })));
    // After an unbind, nothing starts and the request is refused.
    let r = t.cli(
        3,
        4,
        CliRequest::UnbindProgram {
            prog: "srv".into(),
            name: "svc".into(),
        },
    );
    assert_eq!(r, Reply::Ok);
    t.advance(Duration::from_secs(3));
    t.take();
    arrive(&mut t, ipcp, 12, "svc");
    let outs = t.take();
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::StartProgram { .. })));
}

#[test]
fn name_security_is_owned_checked_and_travels_with_flows() {
    let mut t = T::new(Policy::default());
    let alice = Cred {
        uid: 1000,
        gid: 1000,
        pid: 50,
        admin: false,
    };
    let bob = Cred {
        uid: 1001,
        gid: 1001,
        pid: 51,
        admin: false,
    };
    t.connect(20, alice, ClientRole::Cli);
    t.connect(21, bob, ClientRole::Cli);
    let sec = irm::proto::NameSecurity {
        scrt: Some("/etc/ethflow/svc.crt".into()),
        skey: Some("/etc/ethflow/svc.key".into()),
        ..Default::default()
    };
    let create = |security| CliRequest::NameCreate {
        name: "svc".into(),
        security,
    };
    // Relative paths and a certificate without its key are refused.
    let bad = irm::proto::NameSecurity {
        scrt: Some("svc.crt".into()),
        ..sec.clone()
    };
    assert!(matches!(
        t.cli(20, 1, create(bad)),
        Reply::Err(Error::Invalid(_))
    ));
    let half = irm::proto::NameSecurity {
        skey: None,
        ..sec.clone()
    };
    assert!(matches!(
        t.cli(20, 2, create(half)),
        Reply::Err(Error::Invalid(_))
    ));
    assert_eq!(t.cli(20, 3, create(sec.clone())), Reply::Ok);
    // Another user can neither replace nor remove it.
    assert!(matches!(
        t.cli(21, 1, create(sec.clone())),
        Reply::Err(Error::Perm(_))
    ));
    assert!(matches!(
        t.cli(21, 2, CliRequest::NameDestroy { name: "svc".into() }),
        Reply::Err(Error::Perm(_))
    ));
    assert_eq!(t.reg.security_of("svc", 1000), Some(sec.clone()));
    // Alice's configuration is not handed to Bob's flows.
    assert_eq!(t.reg.security_of("svc", 1001), None);
    assert_eq!(
        t.cli(20, 4, CliRequest::NameDestroy { name: "svc".into() }),
        Reply::Ok
    );
    assert_eq!(t.reg.security_of("svc", 1000), None);
    assert!(matches!(
        t.cli(20, 5, CliRequest::NameDestroy { name: "svc".into() }),
        Reply::Err(Error::Name(_))
    ));
    // Root's applies to everyone.
    t.connect(
        22,
        Cred {
            uid: 0,
            gid: 0,
            pid: 52,
            admin: true,
        },
        ClientRole::Cli,
    );
    assert_eq!(t.cli(22, 1, create(sec.clone())), Reply::Ok);
    assert_eq!(t.reg.security_of("svc", 1001), Some(sec));
}

#[test]
fn ipcp_list_shows_counters_the_ipcp_reports_when_asked() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    let counters = |rx: u64, tx: u64| vec![("rx_frames".to_string(), rx), ("tx_frames".into(), tx)];
    // A periodic report, then a second passes without one.
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::Counters(counters(0, 1)),
    });
    t.advance(Duration::from_secs(1));
    t.take();
    let row = |r: Option<Reply>| match r {
        Some(Reply::IpcpRows(rows)) => rows.into_iter().next().expect("one row"),
        other => panic!("{other:?}"),
    };
    // The list waits for the IPCP's answer to ReportCounters.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 5,
        req: CliRequest::IpcpList,
    });
    assert!(t.reply(ROOT_CLI, 5).is_none(), "waits for the IPCP");
    let asked = t
        .take()
        .into_iter()
        .find_map(|o| match o {
            Output::ToIpcp {
                ipcp: i,
                id,
                msg: IrmdToIpcp::ReportCounters,
                ..
            } if i == ipcp => Some(id),
            _ => None,
        })
        .expect("irmd asks the IPCP for its counters");
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::Counters(counters(7, 7)),
    });
    t.input(Input::FromIpcp {
        ipcp,
        id: asked,
        msg: IpcpToIrmd::Done(Ok(())),
    });
    let r = row(t.reply(ROOT_CLI, 5));
    assert_eq!(r.counters, counters(7, 7));
    assert_eq!(r.counters_age_ms, Some(0));
    // An IPCP that does not answer holds the list up for flow_list_wait
    // only; then the last numbers are shown with their age.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 6,
        req: CliRequest::IpcpList,
    });
    t.advance(Duration::from_millis(199));
    assert!(t.reply(ROOT_CLI, 6).is_none(), "still within the wait");
    t.advance(Duration::from_millis(1));
    let r = row(t.reply(ROOT_CLI, 6));
    assert_eq!(r.counters, counters(7, 7));
    assert_eq!(r.counters_age_ms, Some(200));
}

#[test]
fn ipcp_list_without_an_operational_ipcp_answers_at_once() {
    let mut t = T::new(Policy::default());
    t.spawn_ipcp(1, "eth-a");
    // Booting: not asked, listed at once with no counters yet.
    match t.cli(ROOT_CLI, 2, CliRequest::IpcpList) {
        Reply::IpcpRows(rows) => {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].state, "booting");
            assert_eq!(rows[0].counters_age_ms, None);
        }
        other => panic!("{other:?}"),
    }
}
