//! The allocator's side of the queues: the hooks its loop calls to hand
//! flows to workers, take their frames and news, and keep their routes and
//! liveness in step (see the module docs of `worker`).

use super::*;

/// The allocator's side: hooks its loop calls.
impl Ipcp {
    /// A flow got its endpoint id: hand it to its queue's worker (queue 0
    /// keeps it in this loop).
    pub(in crate::ipcp) fn pool_adopt(&mut self, flow_id: u32, local: Eid) {
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
    pub(in crate::ipcp) fn pool_flush(&mut self, flow_id: u32) -> bool {
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
    pub(in crate::ipcp) fn pool_forget(&mut self, flow_id: u32) {
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
    pub(in crate::ipcp) fn pool_events_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.workers.as_ref().map(|p| p.events_fd.as_fd())
    }

    /// Frames and news from the workers.
    pub(in crate::ipcp) fn pool_events(&mut self) {
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
                        &mut RxDeliver::new(&self.flows, &mut self.to_wake, &mut self.corrupt),
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
    pub(in crate::ipcp) fn pool_state(&mut self, flow_id: u32, state: FlowState) -> bool {
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
    pub(in crate::ipcp) fn pool_send_mgmt(&mut self, dst: Mac, frame: &[u8]) -> bool {
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
    pub(in crate::ipcp) fn pool_sync(&mut self) {
        let Some(pool) = &mut self.workers else {
            return;
        };
        if let Some(g) = &pool.group {
            for (queue, member) in g.take_handoff() {
                let room = ETH_HEADER_LEN + self.link.mtu as usize + FRAME_SLACK;
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
    pub(in crate::ipcp) fn pool_counters(&self, all: &mut Vec<(String, u64)>) {
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
