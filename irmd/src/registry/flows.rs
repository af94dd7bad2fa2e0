//! Flows: allocation, accept, incoming requests, deallocation, listing.

use super::{
    Cred, FdsOf, FlowRec, Incoming, IpcpId, IpcpState, Output, PendingAccept, Phase, Registry,
    Timer,
};
use irm::proto::{
    check_name, name_hash, FlowRow, FlowState, IrmdToIpcp, RefuseReason, Reply, RingGeometry,
    FLOW_ROWS_PER_MSG,
};
use irm::{Error, Qos};
use log::info;
use std::time::{Duration, Instant};

impl Registry {
    fn new_flow_id(&mut self) -> u32 {
        loop {
            let id = self.next_flow;
            self.next_flow = self.next_flow.wrapping_add(1).max(1);
            if !self.flows.contains_key(&id) {
                return id;
            }
        }
    }

    fn timeout_for(&self, qos: &Qos) -> u64 {
        if qos.timeout == 0 {
            self.policy.default_timeout_ms
        } else {
            qos.timeout
        }
    }

    /// Room for one more flow of `cred`'s uid?
    fn flow_room(&self, cred: &Cred) -> Result<(), Error> {
        if self.flows.len() >= self.policy.max_flows {
            return Err(Error::NoMem(format!(
                "irmd holds {} flows, its limit",
                self.policy.max_flows
            )));
        }
        if cred.limited()
            && self.flows.values().filter(|f| f.uid == cred.uid).count()
                >= self.policy.max_flows_per_uid
        {
            return Err(Error::NoMem(format!(
                "uid {} already holds {} flows, the limit per user",
                cred.uid, self.policy.max_flows_per_uid
            )));
        }
        Ok(())
    }

    pub(super) fn flow_alloc(
        &mut self,
        now: Instant,
        conn: u64,
        id: u64,
        name: String,
        qos: Qos,
        timeout_ms: Option<u64>,
    ) {
        let Some(cred) = self.cred(conn) else { return };
        if let Err(e) = check_name("name", &name).and_then(|()| self.flow_room(&cred)) {
            return self.send(conn, id, Reply::Err(e));
        }
        // Any operational IPCP can reach the name: Ethernet layers resolve by broadcast.
        let Some((ipcp, max_sdu)) = self.ipcps.values().find_map(|i| match (&i.state, &i.info) {
            (IpcpState::Operational, Some(info)) => Some((i.id, info.max_sdu)),
            _ => None,
        }) else {
            return self.send(
                conn,
                id,
                Reply::Err(Error::Ipcp(
                    "no IPCP is bootstrapped; run `irm ipcp bootstrap ...`".into(),
                )),
            );
        };
        let timeout = self.timeout_for(&qos);
        let geometry = RingGeometry {
            slots: self.policy.ring_slots,
            slot_size: max_sdu.max(1),
        };
        let flow_id = self.new_flow_id();
        let req = self.new_req();
        self.out.push_back(Output::CreateFlow { flow_id, geometry });
        self.send_ipcp(
            ipcp,
            req,
            IrmdToIpcp::FlowAlloc {
                flow_id,
                name: name.clone(),
                qos,
                geometry,
                timeout_ms: timeout,
            },
            Some(FdsOf::Ipcp(flow_id)),
        );
        if let Some(t) = timeout_ms {
            self.arm(
                now + Duration::from_millis(t),
                Timer::Alloc { flow_id, req },
            );
        }
        self.flows.insert(
            flow_id,
            FlowRec {
                name,
                conn,
                uid: cred.uid,
                pid: cred.pid,
                ipcp,
                qos,
                timeout_ms: timeout,
                max_sdu,
                geometry,
                phase: Phase::Allocating {
                    reply: (conn, id),
                    req,
                },
                state: FlowState::Allocated,
                counters: None,
            },
        );
    }

    pub(super) fn flow_accept(
        &mut self,
        now: Instant,
        conn: u64,
        id: u64,
        prog: String,
        timeout_ms: Option<u64>,
    ) {
        let Some(cred) = self.cred(conn) else { return };
        if cred.limited()
            && self.accepts.iter().filter(|a| a.uid == cred.uid).count()
                >= self.policy.max_accepts_per_uid
        {
            return self.send(
                conn,
                id,
                Reply::Err(Error::NoMem(format!(
                    "uid {} already has {} accepts waiting, the limit per user",
                    cred.uid, self.policy.max_accepts_per_uid
                ))),
            );
        }
        self.accepts.push(PendingAccept {
            conn,
            req: id,
            prog,
            uid: cred.uid,
        });
        if let Some(t) = timeout_ms {
            self.arm(
                now + Duration::from_millis(t),
                Timer::Accept { conn, req: id },
            );
        }
        self.match_incoming();
    }

    pub(super) fn flow_dealloc(&mut self, conn: u64, id: u64, flow_id: u32) {
        // A process touches only its own flows: another's id is "not allocated".
        match self.flows.get(&flow_id) {
            Some(f) if f.conn == conn => {}
            _ => return self.send(conn, id, Reply::Err(Error::NotAlloc)),
        }
        let pid = self.cred(conn).map(|c| c.pid).unwrap_or(0);
        let reply = (id != 0).then_some((conn, id));
        self.release_flow(flow_id, reply, pid);
    }

    /// The application side let go of a flow: tell the IPCP, and answer
    /// `reply` once it confirms.
    pub(super) fn release_flow(&mut self, flow_id: u32, reply: Option<(u64, u64)>, by_pid: u32) {
        let Some(f) = self.flows.get(&flow_id) else {
            return;
        };
        if let Phase::Deallocating { .. } = f.phase {
            if let Some((c, r)) = reply {
                self.send(c, r, Reply::Ok);
            }
            return;
        }
        info!("Partial deallocation of flow_id {flow_id} by process {by_pid}.");
        let ipcp = f.ipcp;
        if self.ipcps.contains_key(&ipcp) {
            let req = self.new_req();
            if let Some(f) = self.flows.get_mut(&flow_id) {
                f.phase = Phase::Deallocating { reply, req };
            }
            self.send_ipcp(ipcp, req, IrmdToIpcp::FlowDealloc { flow_id }, None);
        } else {
            self.flows.remove(&flow_id);
            self.out.push_back(Output::DropFlow { flow_id });
            info!("Completed deallocation of flow_id {flow_id} by process {by_pid}.");
            if let Some((c, r)) = reply {
                self.send(c, r, Reply::Ok);
            }
        }
    }

    /// The IPCP acknowledged a deallocation (`req`).
    pub(super) fn dealloc_done(&mut self, ipcp: IpcpId, req: u64) {
        let Some((&flow_id, _)) = self.flows.iter().find(|(_, f)| {
            f.ipcp == ipcp && matches!(f.phase, Phase::Deallocating { req: r, .. } if r == req)
        }) else {
            return;
        };
        let f = self.flows.remove(&flow_id).expect("found");
        self.out.push_back(Output::DropFlow { flow_id });
        info!(
            "Completed deallocation of flow_id {flow_id} by process {}.",
            self.ipcps
                .get(&ipcp)
                .and_then(|i| i.pid)
                .unwrap_or_default()
        );
        if let Phase::Deallocating {
            reply: Some((c, r)),
            ..
        } = f.phase
        {
            self.send(c, r, Reply::Ok);
        }
    }

    /// The IPCP answered our allocation request `req`.
    pub(super) fn alloc_result(
        &mut self,
        ipcp: IpcpId,
        req: u64,
        flow_id: u32,
        result: Result<u32, Error>,
    ) {
        let Some(f) = self.flows.get_mut(&flow_id) else {
            return;
        };
        // Only the IPCP we asked, answering the request we sent, counts.
        let reply = match f.phase {
            Phase::Allocating { reply, req: r } if r == req && f.ipcp == ipcp => reply,
            _ => return,
        };
        match result {
            Ok(max_sdu) => {
                f.max_sdu = max_sdu.min(f.geometry.slot_size);
                f.phase = Phase::Allocated;
                let msg = Reply::FlowReady {
                    flow_id,
                    name: f.name.clone(),
                    qos: f.qos,
                    max_sdu: f.max_sdu,
                    geometry: f.geometry,
                    security: self
                        .security
                        .get(&f.name)
                        .filter(|(owner, _)| *owner == 0 || *owner == f.uid)
                        .map(|(_, s)| s.clone()),
                };
                if !self.conns.contains_key(&reply.0) {
                    let pid = f.pid;
                    return self.release_flow(flow_id, None, pid);
                }
                self.out.push_back(Output::Send {
                    conn: reply.0,
                    id: reply.1,
                    msg,
                    fds: Some(FdsOf::App(flow_id)),
                });
                info!("Flow on flow_id {flow_id} allocated.");
                self.stats.allocations += 1;
            }
            Err(e) => {
                self.flows.remove(&flow_id);
                self.out.push_back(Output::DropFlow { flow_id });
                self.send(reply.0, reply.1, Reply::Err(e));
            }
        }
    }

    pub(super) fn refuse(&mut self, ipcp: IpcpId, token: u64, reason: RefuseReason) {
        self.send_ipcp(
            ipcp,
            0,
            IrmdToIpcp::FlowAcceptResult {
                token,
                result: Err(reason),
                timeout_ms: 0,
            },
            None,
        );
    }

    pub(super) fn flow_req_arrived(
        &mut self,
        now: Instant,
        ipcp: IpcpId,
        token: u64,
        hash: [u8; 32],
        qos: Qos,
        max_sdu: u32,
    ) {
        let Some(layer) = self.ipcps.get(&ipcp).map(|i| i.spec.layer.clone()) else {
            return;
        };
        let name = self
            .names
            .iter()
            .find(|(n, e)| e.layers.contains(&layer) && name_hash(n) == hash)
            .map(|(n, _)| n.clone());
        let Some(name) = name else {
            return self.refuse(ipcp, token, RefuseReason::NoSuchName);
        };
        if self
            .incoming
            .iter()
            .any(|i| i.ipcp == ipcp && i.token == token)
        {
            return;
        }
        self.incoming.push(Incoming {
            ipcp,
            token,
            name: name.clone(),
            qos,
            max_sdu,
        });
        self.arm(
            now + self.policy.incoming_wait,
            Timer::Incoming { ipcp, token },
        );
        self.match_incoming();
        // Nobody accepting now and no instance that could: refuse at once rather than wait.
        if let Some(pos) = self
            .incoming
            .iter()
            .position(|i| i.token == token && i.ipcp == ipcp)
        {
            let live = self.names.get(&name).is_some_and(|e| {
                self.conns.values().any(|c| {
                    matches!(&c.role, Some(irm::proto::ClientRole::App { prog })
                        if e.bindings.contains(&(prog.clone(), c.cred.uid)))
                })
            });
            if !live && self.auto_start(now, &name) {
                info!("Flow for {name} waits for its program to start.");
            } else if !live {
                self.incoming.remove(pos);
                self.refuse(ipcp, token, RefuseReason::NoAcceptingProcess);
            }
        }
    }

    /// Pair incoming flow requests with processes waiting in accept: a
    /// process accepts a name's flows if its program was bound to the name by
    /// its own uid.
    pub(super) fn match_incoming(&mut self) {
        let mut i = 0;
        while i < self.incoming.len() {
            let Some(entry) = self.names.get(&self.incoming[i].name) else {
                i += 1;
                continue;
            };
            let Some(apos) = self
                .accepts
                .iter()
                .position(|a| entry.bindings.contains(&(a.prog.clone(), a.uid)))
            else {
                i += 1;
                continue;
            };
            let inc = self.incoming.remove(i);
            let acc = self.accepts.remove(apos);
            self.complete_accept(inc, acc);
        }
    }

    fn complete_accept(&mut self, inc: Incoming, acc: PendingAccept) {
        let Some(cred) = self.cred(acc.conn) else {
            return self.refuse(inc.ipcp, inc.token, RefuseReason::NoAcceptingProcess);
        };
        if let Err(e) = self.flow_room(&cred) {
            self.refuse(inc.ipcp, inc.token, RefuseReason::ResourceLimit);
            return self.send(acc.conn, acc.req, Reply::Err(e));
        }
        let Some(ipcp_max) = self
            .ipcps
            .get(&inc.ipcp)
            .and_then(|i| i.info.as_ref())
            .map(|i| i.max_sdu)
        else {
            // The IPCP died meanwhile; the accepter keeps waiting.
            self.accepts.push(acc);
            return;
        };
        let max_sdu = ipcp_max.min(inc.max_sdu).max(1);
        let timeout = self.timeout_for(&inc.qos);
        let geometry = RingGeometry {
            slots: self.policy.ring_slots,
            slot_size: ipcp_max.max(1),
        };
        let flow_id = self.new_flow_id();
        self.out.push_back(Output::CreateFlow { flow_id, geometry });
        self.send_ipcp(
            inc.ipcp,
            0,
            IrmdToIpcp::FlowAcceptResult {
                token: inc.token,
                result: Ok((flow_id, geometry)),
                timeout_ms: timeout,
            },
            Some(FdsOf::Ipcp(flow_id)),
        );
        self.out.push_back(Output::Send {
            conn: acc.conn,
            id: acc.req,
            msg: Reply::FlowReady {
                flow_id,
                name: inc.name.clone(),
                qos: inc.qos,
                max_sdu,
                geometry,
                security: self.security_of(&inc.name, acc.uid),
            },
            fds: Some(FdsOf::App(flow_id)),
        });
        info!("Flow on flow_id {flow_id} allocated.");
        self.stats.allocations += 1;
        self.flows.insert(
            flow_id,
            FlowRec {
                name: inc.name,
                conn: acc.conn,
                uid: cred.uid,
                pid: cred.pid,
                ipcp: inc.ipcp,
                qos: inc.qos,
                timeout_ms: timeout,
                max_sdu,
                geometry,
                phase: Phase::Allocated,
                state: FlowState::Allocated,
                counters: None,
            },
        );
    }

    /// One page of `irm flow list`: a non-admin sees only its uid's flows.
    pub(super) fn flow_rows(&self, now: Instant, cred: Cred, after: Option<u32>) -> Reply {
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let rows = self
            .flows
            .range((from, std::ops::Bound::Unbounded))
            .filter(|(_, f)| cred.sees_flows_of(f.uid))
            .take(FLOW_ROWS_PER_MSG)
            .map(|(&id, f)| {
                let (c, at) = f.counters.unwrap_or((Default::default(), now));
                let since = now.saturating_duration_since(at).as_millis() as u64;
                FlowRow {
                    flow_id: id,
                    name: f.name.clone(),
                    pid: f.pid,
                    ipcp: self
                        .ipcps
                        .get(&f.ipcp)
                        .map(|i| i.spec.name.clone())
                        .unwrap_or_else(|| "-".into()),
                    state: f.state,
                    timeout_ms: f.timeout_ms,
                    last_rx_ms_ago: c.last_rx_ms_ago.map(|ms| ms.saturating_add(since)),
                    tx_sdus: c.tx_sdus,
                    tx_bytes: c.tx_bytes,
                    rx_sdus: c.rx_sdus,
                    rx_bytes: c.rx_bytes,
                    dropped: c.dropped,
                }
            })
            .collect();
        Reply::FlowRows(rows)
    }
}
