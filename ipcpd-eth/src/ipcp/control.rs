//! The IPCP's side of its private channel to irmd: control messages in,
//! replies, flow state changes and counter reports out.

use super::*;

/// This process's wake-up system calls, sleeps and spins so far.
fn wake_counters() -> [(String, u64); 4] {
    let w = irm::shm::wake_stats();
    [
        ("wake_signals".into(), w.signals_sent),
        ("sleeps".into(), w.sleeps),
        ("spin_hits".into(), w.spin_hits),
        ("spin_misses".into(), w.spin_misses),
    ]
}

impl Ipcp {
    /// Tell irmd the frame counters (for `irm ipcp list`) when they changed.
    pub(super) fn report_counters(&mut self) {
        self.next_report = Instant::now() + COUNTER_REPORT;
        let mut now = self.counter_snapshot();
        // This process's wake-ups and sleeps go along, but do not by
        // themselves make a report (an idle loop sleeps 50 times a second).
        if now != self.reported {
            self.reported = now.clone();
            now.extend(wake_counters());
            self.reply(0, IpcpToIrmd::Counters(now));
        }
        self.report_flow_counters(false);
    }

    /// Every IPCP-level counter as it stands now, by name.
    fn counter_snapshot(&self) -> Vec<(String, u64)> {
        let mut now = self.counters.named();
        for (k, v) in self.sock.counters() {
            now.push((k.to_string(), v));
        }
        now.extend(self.fa.stats().named());
        self.pool_counters(&mut now);
        if let Some(k) = &self.keyed {
            let c = k.counters();
            now.push(("auth_fail".into(), c.auth_fail));
            now.push(("replay".into(), c.replay));
        }
        now
    }

    /// Per-flow counters for `irm flow list`, as this IPCP reads them (irmd
    /// never reads them from memory the application can write). Only flows
    /// whose numbers changed (every flow when `all`), in pages well under the
    /// message limit.
    pub(super) fn report_flow_counters(&mut self, all: bool) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut ids: Vec<u32> = self.flows.keys().copied().collect();
        ids.sort_unstable();
        let mut page = Vec::new();
        for id in ids {
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            let st = f.end.stats();
            let c = FlowCounters {
                flow_id: id,
                tx_sdus: st.tx_sdus,
                tx_bytes: st.tx_bytes,
                rx_sdus: st.rx_sdus,
                rx_bytes: st.rx_bytes,
                // Both directions: rx ring full, and (rare) SDUs above the
                // max SDU after the MTU shrank.
                dropped: st.dropped + f.tx_oversize.get(),
                last_rx_ms_ago: (st.last_rx_unix_ms != 0)
                    .then(|| now_ms.saturating_sub(st.last_rx_unix_ms)),
            };
            let key = (c.tx_sdus, c.rx_sdus, c.dropped, st.last_rx_unix_ms);
            if !all && f.reported == Some(key) {
                continue;
            }
            f.reported = Some(key);
            page.push(c);
            if page.len() == 256 {
                self.reply(0, IpcpToIrmd::FlowCounters(std::mem::take(&mut page)));
            }
        }
        if !page.is_empty() {
            self.reply(0, IpcpToIrmd::FlowCounters(page));
        }
    }

    /// Every flow's counters from the IPCP's own memory (never the
    /// application-writable mapping), by flow id: what irmd should show.
    pub fn flow_counters(&self) -> Vec<(u32, irm::shm::FlowCounters)> {
        let mut all: Vec<_> = self
            .flows
            .iter()
            .map(|(&id, f)| (id, f.end.counters()))
            .collect();
        all.sort_unstable_by_key(|&(id, _)| id);
        all
    }

    /// Handle one control message from irmd. Returns false when irmd is gone.
    pub(super) fn control(&mut self) -> bool {
        let rcv = match self.ctrl.recv::<IrmdToIpcp>() {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                warn!("bad control message: {e}");
                return true;
            }
        };
        let now = self.now();
        let Received { env, fds } = rcv;
        match env.msg {
            IrmdToIpcp::RegName { name } => {
                self.fa.register_name(name_hash(&name));
                info!("Registered name {name}.");
            }
            IrmdToIpcp::UnregName { name } => self.fa.unregister_name(name_hash(&name)),
            IrmdToIpcp::FlowAlloc {
                flow_id,
                name,
                qos,
                geometry,
                timeout_ms,
            } => match self.attach(flow_id, geometry, fds) {
                Ok(()) => {
                    self.alloc_replies.insert(flow_id, env.id);
                    let eid = self
                        .fa
                        .alloc(now, flow_id, name_hash(&name), qos, timeout_ms);
                    self.set_eid(flow_id, eid);
                }
                Err(e) => self.reply(
                    env.id,
                    IpcpToIrmd::FlowAllocResult {
                        flow_id,
                        result: Err(e),
                    },
                ),
            },
            IrmdToIpcp::FlowAcceptResult {
                token,
                result,
                timeout_ms,
            } => match result {
                Ok((flow_id, geometry)) => {
                    if let Err(e) = self.attach(flow_id, geometry, fds) {
                        warn!("flow {flow_id}: {e}");
                        let _ = self.fa.accept_result(
                            now,
                            token,
                            Err(irm::proto::RefuseReason::ResourceLimit),
                            0,
                        );
                    } else {
                        match self.fa.accept_result(now, token, Ok(flow_id), timeout_ms) {
                            Some((eid, _)) => self.set_eid(flow_id, eid),
                            // The request went stale meanwhile: the flow never came up.
                            None => self.flow_state(flow_id, DownCause::PeerDeallocated),
                        }
                    }
                }
                Err(reason) => {
                    let _ = self.fa.accept_result(now, token, Err(reason), 0);
                }
            },
            IrmdToIpcp::FlowDealloc { flow_id } => {
                self.flush_flow(flow_id);
                self.fa.dealloc(now, flow_id);
                self.detach(flow_id);
                if env.id != 0 {
                    self.reply(env.id, IpcpToIrmd::Done(Ok(())));
                }
            }
            IrmdToIpcp::ReportFlowCounters => {
                self.report_flow_counters(true);
                self.reply(env.id, IpcpToIrmd::Done(Ok(())));
            }
            IrmdToIpcp::ReportCounters => {
                // Asked: the numbers now, changed or not, then Done (irmd
                // gets them in this order on the one channel).
                let mut now = self.counter_snapshot();
                self.reported = now.clone();
                now.extend(wake_counters());
                self.reply(0, IpcpToIrmd::Counters(now));
                self.reply(env.id, IpcpToIrmd::Done(Ok(())));
            }
            other => debug!("ignoring control message {other:?}"),
        }
        self.carry_out_actions();
        true
    }

    pub(super) fn attach(
        &mut self,
        flow_id: u32,
        geometry: RingGeometry,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        let [memfd, ipcp_wake, rx_wake, tx_wake]: [OwnedFd; 4] =
            fds.try_into().map_err(|v: Vec<OwnedFd>| {
                Error::Ipcp(format!("flow came with {} fds, expected 4", v.len()))
            })?;
        let map = ShmMap::map(memfd.as_fd(), geometry)?;
        drop(memfd);
        let end = IpcpEnd::new(map, ipcp_wake, rx_wake, tx_wake);
        end.set_link_max_sdu(self.max_sdu());
        self.epoll
            .add(
                end.ipcp_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_FLOW | flow_id as u64),
            )
            .map_err(|e| Error::Io(e.to_string()))?;
        let active = !end.arm_tx_wakeup();
        if active {
            self.active.push(flow_id);
        }
        if let Some(old) = self.flows.insert(flow_id, FlowIo::new(end, active)) {
            let _ = self.epoll.delete(old.end.ipcp_fd());
            if let Some(e) = old.eid {
                self.sock.endpoint_removed(e);
            }
        }
        Ok(())
    }

    /// Record the flow's endpoint id and tell the backend it is live.
    pub(super) fn set_eid(&mut self, flow_id: u32, eid: crate::wire::Eid) {
        if let Some(f) = self.flows.get_mut(&flow_id) {
            f.eid = Some(eid);
            self.sock.endpoint_added(eid);
        }
        self.pool_adopt(flow_id, eid);
    }

    pub(super) fn detach(&mut self, flow_id: u32) {
        self.pool_forget(flow_id);
        if let Some(f) = self.flows.remove(&flow_id) {
            if f.wake_deferred.get() {
                // Its reader may sleep on SDUs already published.
                f.end.wake_rx_reader();
            }
            let _ = self.epoll.delete(f.end.ipcp_fd());
            if let Some(e) = f.eid {
                self.sock.endpoint_removed(e);
            }
        }
        self.active.retain(|&x| x != flow_id);
        self.alloc_replies.remove(&flow_id);
    }

    pub(super) fn reply(&self, id: u64, msg: IpcpToIrmd) {
        if let Err(e) = self.ctrl.send(&Envelope { id, msg }, &[]) {
            warn!("cannot talk to irmd: {e}");
        }
    }

    pub(super) fn flow_state(&mut self, flow_id: u32, cause: DownCause) {
        let state = match cause {
            DownCause::Unresponsive => FlowState::Peer,
            DownCause::Up => FlowState::Allocated,
            _ => FlowState::Down,
        };
        if !self.pool_state(flow_id, state) {
            if let Some(f) = self.flows.get(&flow_id) {
                f.end.set_state(state);
            }
        }
        self.reply(0, IpcpToIrmd::FlowState { flow_id, cause });
    }
}
