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

mod admin;
mod flows;
