//! One queue's worker thread: its socket, its flows' rings (see the module
//! docs of `worker`).

use super::*;

/// Where [`Worker::classify`] sends a received frame.
enum Rx {
    /// Into the flow's ring; the SDU's bytes in the frame.
    Flow(u32, std::ops::Range<usize>),
    /// To the allocator, for this worker's flow.
    Detour(u32),
    /// To the allocator.
    Allocator,
    /// Counted and dropped, as the allocator's loop does.
    Malformed,
    /// Not ours (our own frame, another ethertype): dropped.
    Ignored,
}

/// A flow as its worker holds it.
struct WFlow {
    end: Arc<IpcpEnd>,
    local: Eid,
    live: Arc<Live>,
    route: Option<Route>,
    active: bool,
    wake_pending: bool,
    /// Its reader's wake-up waits in [`Worker::rx_wakes`].
    wake_deferred: bool,
    /// Frames of this flow sent to the allocator and not yet back: while
    /// any are out, the flow's frames all take that way (order).
    detour: u32,
}

/// One queue's thread: its socket, its flows' rings.
pub(super) struct Worker {
    queue: usize,
    sock: Box<dyn FrameIo + Send>,
    /// Whether `sock` is in `epoll` (out while busy receiving).
    rx_watch: RxWatch,
    /// Ends a lingering turn's timed sleep (`None`: the worker never lingers).
    linger_timer: Option<TimerFd>,
    /// Flows whose sleeping readers wait for their wake-up (decision 0043).
    rx_wakes: DeferredWakes,
    epoll: Epoll,
    cmds: Receiver<Command>,
    wake: Arc<EventFd>,
    events: SyncSender<Event>,
    events_fd: Arc<EventFd>,
    stats: Arc<QueueStats>,
    start: Instant,
    mac: Mac,
    ethertype: u16,
    flows: HashMap<u32, WFlow>,
    /// Local eid → flow id, for received frames.
    by_eid: HashMap<Eid, u32>,
    active: Vec<u32>,
    to_wake: Vec<u32>,
    rx_bufs: Vec<Vec<u8>>,
    rx_lens: Vec<usize>,
    tx_bufs: Vec<Vec<u8>>,
    tx_lens: [usize; BATCH],
    counters: Counters,
    /// SDUs dropped as larger than the link carries (MTU shrank).
    tx_oversize: u64,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        queue: usize,
        sock: Box<dyn FrameIo + Send>,
        cmds: Receiver<Command>,
        wake: Arc<EventFd>,
        events: SyncSender<Event>,
        events_fd: Arc<EventFd>,
        stats: Arc<QueueStats>,
        s: &Shared,
    ) -> nix::Result<Worker> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sock.rx_fd(), EpollEvent::new(EpollFlags::EPOLLIN, W_SOCK))?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, W_CMD))?;
        let linger_timer = linger_timer(&epoll, W_LINGER);
        Ok(Worker {
            queue,
            rx_watch: RxWatch::new(sock.rx_is_ring()),
            linger_timer,
            rx_wakes: DeferredWakes::default(),
            sock,
            epoll,
            cmds,
            wake,
            events,
            events_fd,
            stats,
            start: s.start,
            mac: s.mac,
            ethertype: s.ethertype,
            flows: HashMap::new(),
            by_eid: HashMap::new(),
            active: Vec::new(),
            to_wake: Vec::new(),
            rx_bufs: (0..BATCH).map(|_| vec![0u8; s.frame_room]).collect(),
            rx_lens: vec![0; BATCH],
            tx_bufs: (0..BATCH).map(|_| vec![0u8; s.frame_room]).collect(),
            tx_lens: [0; BATCH],
            counters: Counters::default(),
            tx_oversize: 0,
        })
    }

    fn now_ns(&self) -> u64 {
        (self.start.elapsed().as_nanos() as u64).max(1)
    }

    /// Until the allocator goes away.
    pub(super) fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        let mut next_counters = Instant::now();
        loop {
            if Instant::now() >= next_counters {
                next_counters = Instant::now() + SOCK_COUNTERS_EVERY;
                let c = self.sock.counters();
                *self.stats.sock.lock().unwrap_or_else(|e| e.into_inner()) = c;
            }
            let timeout = if self.active.is_empty() && !self.rx_watch.busy() {
                // No reader may sleep on an SDU while this loop sleeps.
                self.wake_readers();
                if !start_linger(self.linger_timer.as_ref(), &mut self.rx_watch) {
                    // This wait may block: the socket must be watched.
                    let c = self.rx_watch.before_sleep();
                    self.rx_watch
                        .apply(c, &self.epoll, self.sock.rx_fd(), W_SOCK);
                }
                EpollTimeout::from(100u16)
            } else {
                EpollTimeout::ZERO
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    warn!("queue {}: epoll failed: {e}", self.queue);
                    return;
                }
            };
            let mut sock_ready = self.rx_watch.look_anyway();
            for ev in &events[..n] {
                match ev.data() {
                    W_SOCK => sock_ready = true,
                    W_CMD => {}
                    t if t & TOKEN_FLOW != 0 => self.tx_woken((t & 0xffff_ffff) as u32),
                    _ => {}
                }
            }
            if !self.commands() {
                return;
            }
            if sock_ready {
                let got = self.receive();
                let c = self.rx_watch.received(got);
                self.rx_watch
                    .apply(c, &self.epoll, self.sock.rx_fd(), W_SOCK);
                if self.rx_wakes.due(self.rx_watch.busy(), Instant::now()) {
                    self.wake_readers();
                }
            }
            self.transmit();
        }
    }

    /// Wake the readers of the flows that got SDUs since the last time, if
    /// they sleep (decision 0043).
    fn wake_readers(&mut self) {
        if self.rx_wakes.is_empty() {
            return;
        }
        for id in self.rx_wakes.take() {
            if let Some(f) = self.flows.get_mut(&id) {
                f.wake_deferred = false;
                f.end.wake_rx_reader();
            }
        }
    }

    /// Carry out the allocator's commands; false once it is gone.
    fn commands(&mut self) -> bool {
        let _ = self.wake.read();
        loop {
            match self.cmds.try_recv() {
                Ok(c) => self.command(c),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Adopt {
                flow_id,
                end,
                local,
                live,
            } => {
                let token = TOKEN_FLOW | u64::from(flow_id);
                if let Err(e) = self
                    .epoll
                    .add(end.ipcp_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    warn!("queue {}: flow {flow_id}: {e}", self.queue);
                }
                self.by_eid.insert(local, flow_id);
                self.flows.insert(
                    flow_id,
                    WFlow {
                        end,
                        local,
                        live,
                        route: None,
                        active: false,
                        wake_pending: false,
                        wake_deferred: false,
                        detour: 0,
                    },
                );
            }
            Command::Route { flow_id, route } => {
                if let Some(f) = self.flows.get_mut(&flow_id) {
                    f.route = route;
                    // SDUs written before the route came wait in the ring.
                    if route.is_some() && !f.active {
                        f.active = true;
                        self.active.push(flow_id);
                    }
                }
            }
            Command::Flush { flow_id, done } => {
                self.flush(flow_id);
                let _ = done.try_send(());
            }
            Command::Deliver {
                flow_id,
                frame,
                detoured,
            } => self.deliver_checked(flow_id, &frame, detoured),
            Command::State { flow_id, state } => {
                if let Some(f) = self.flows.get(&flow_id) {
                    f.end.set_state(state);
                }
            }
            Command::Transmit(frame) => match self.sock.send_batch(&[&frame]) {
                Ok(k) => {
                    self.counters.tx_frames += k as u64;
                    self.stats.tx_frames.fetch_add(k as u64, Ordering::Relaxed);
                }
                Err(e) => debug!("queue {}: management frame not sent: {e}", self.queue),
            },
            Command::Returned { flow_id } => {
                if let Some(f) = self.flows.get_mut(&flow_id) {
                    f.detour = f.detour.saturating_sub(1);
                }
            }
            Command::Socket {
                member,
                admission,
                room,
            } => {
                let _ = self.epoll.delete(self.sock.rx_fd());
                for b in self.rx_bufs.iter_mut().chain(self.tx_bufs.iter_mut()) {
                    b.resize(room, 0);
                }
                // The old socket closes here, before the new one admits.
                drop(std::mem::replace(&mut self.sock, member));
                self.rx_watch = RxWatch::new(self.sock.rx_is_ring());
                if let Err(e) = admission.admit() {
                    warn!("queue {}: new socket refuses frames: {e}", self.queue);
                }
                if let Err(e) = self.epoll.add(
                    self.sock.rx_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, W_SOCK),
                ) {
                    warn!("queue {}: cannot poll the new socket: {e}", self.queue);
                }
            }
            Command::Forget { flow_id } => {
                if let Some(f) = self.flows.remove(&flow_id) {
                    if f.wake_deferred {
                        f.end.wake_rx_reader();
                    }
                    let _ = self.epoll.delete(f.end.ipcp_fd());
                    self.by_eid.remove(&f.local);
                }
                self.active.retain(|&x| x != flow_id);
            }
        }
    }

    fn tx_woken(&mut self, id: u32) {
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if f.end.clear_tx_wakeup() == TxWake::Closed {
            let _ = self.epoll.delete(f.end.ipcp_fd());
        }
        if !f.active && f.route.is_some() {
            f.active = true;
            self.active.push(id);
        }
    }

    /// Hand a frame to the allocator (`detour`: for this worker's flow).
    fn forward(&mut self, frame: Vec<u8>, detour: Option<u32>) {
        let ev = Event::Frame { frame, detour };
        match self.events.try_send(ev) {
            Ok(()) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let _ = self.events_fd.write(1);
                if let Some(f) = detour.and_then(|id| self.flows.get_mut(&id)) {
                    f.detour += 1;
                }
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A frame the allocator checked and sent back: into the flow's ring.
    fn deliver_checked(&mut self, id: u32, frame: &[u8], detoured: bool) {
        let now = self.now_ns();
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if detoured {
            f.detour = f.detour.saturating_sub(1);
        }
        let at = ETH_HEADER_LEN + HEADER_LEN;
        let Some(sdu) = HeaderView::new_checked(&frame[ETH_HEADER_LEN.min(frame.len())..])
            .ok()
            .map(|v| at..at + v.payload().len())
        else {
            return;
        };
        match f.end.push_rx(&frame[sdu]) {
            Ok(true) => f.live.rx_ns.store(now, Ordering::Relaxed),
            Ok(false) => self.counters.rx_dropped_full += 1,
            Err(e @ Error::Invalid(_)) => self.corrupt(id, e),
            Err(e) => debug!("flow {id}: {e}"),
        }
    }

    fn corrupt(&mut self, id: u32, e: Error) {
        if let Some(f) = self.flows.get_mut(&id) {
            f.route = None;
            f.active = false;
        }
        self.active.retain(|&x| x != id);
        if self.events.try_send(Event::Corrupt(id, e)).is_ok() {
            let _ = self.events_fd.write(1);
        }
    }

    /// Where a received frame goes: straight into a flow of this worker
    /// (the proof [`FlowAllocator::data_rx`] asks for: peer MAC and both
    /// eids), to the allocator for one of this worker's flows, or to the
    /// allocator.
    fn classify(&self, frame: &[u8]) -> Rx {
        let Ok((eth, rest)) = EthHeader::parse(frame) else {
            return Rx::Malformed;
        };
        if eth.src == self.mac || eth.ethertype != self.ethertype {
            return Rx::Ignored;
        }
        let Ok(view) = HeaderView::new_checked(rest) else {
            return Rx::Malformed;
        };
        if view.frame_type() != FrameType::Data {
            return Rx::Allocator;
        }
        let Some((id, f)) = self
            .by_eid
            .get(&view.dst())
            .and_then(|id| Some((*id, self.flows.get(id)?)))
        else {
            return Rx::Allocator;
        };
        match f.route {
            Some((mac, remote, _)) if f.detour == 0 && mac == eth.src && remote == view.src() => {
                let at = ETH_HEADER_LEN + HEADER_LEN;
                Rx::Flow(id, at..at + view.payload().len())
            }
            _ => Rx::Detour(id),
        }
    }

    /// Read frames until none wait (bounded per turn); returns how many.
    fn receive(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..RX_ROUNDS {
            let n = match self.sock.recv_batch(&mut self.rx_bufs, &mut self.rx_lens) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => 0,
                Err(e) => {
                    warn!("queue {}: receive failed: {e}", self.queue);
                    0
                }
            };
            if n == 0 {
                break;
            }
            total += n;
            self.stats.rx_frames.fetch_add(n as u64, Ordering::Relaxed);
            // First where each frame goes (the allocator's go at once), then
            // the flows' SDUs, each run of one flow's SDUs under one hold of
            // its ring. A flow's frames detoured here are all after those it
            // keeps (a detour detours the rest), and come back later.
            let mut deliver = [(0u32, 0usize, 0usize, 0usize); BATCH];
            let mut count = 0;
            for i in 0..n {
                let frame = &self.rx_bufs[i][..self.rx_lens[i]];
                let (id, sdu) = match self.classify(frame) {
                    Rx::Flow(id, sdu) => (id, sdu),
                    Rx::Detour(id) => {
                        self.forward(frame.to_vec(), Some(id));
                        continue;
                    }
                    Rx::Allocator => {
                        self.forward(frame.to_vec(), None);
                        continue;
                    }
                    Rx::Malformed => {
                        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Rx::Ignored => continue,
                };
                if let Some(slot) = deliver.get_mut(count) {
                    *slot = (id, i, sdu.start, sdu.end);
                    count += 1;
                }
            }
            let mut broken = Vec::new();
            let mut k = 0;
            while k < count {
                let id = deliver[k].0;
                let run = deliver[k..count].iter().take_while(|d| d.0 == id).count();
                let Some(f) = self.flows.get_mut(&id) else {
                    k += run;
                    continue;
                };
                let flow_end = Arc::clone(&f.end);
                let mut ring = flow_end.rx_stager();
                for &(_, i, start, end) in &deliver[k..k + run] {
                    let frame = &self.rx_bufs[i][..self.rx_lens[i]];
                    match ring.stage(&frame[start..end]) {
                        Ok(true) => {
                            if !f.wake_pending {
                                f.wake_pending = true;
                                self.to_wake.push(id);
                            }
                        }
                        Ok(false) => self.counters.rx_dropped_full += 1,
                        Err(e @ Error::Invalid(_)) => {
                            broken.push((id, e));
                            break;
                        }
                        Err(e) => debug!("flow {id}: {e}"),
                    }
                }
                k += run;
            }
            for (id, e) in broken {
                self.corrupt(id, e);
            }
            let now = self.now_ns();
            let at = Instant::now();
            for id in std::mem::take(&mut self.to_wake) {
                if let Some(f) = self.flows.get_mut(&id) {
                    f.wake_pending = false;
                    f.live.rx_ns.store(now, Ordering::Relaxed);
                    let n = f.end.publish_rx();
                    let first = n > 0 && !std::mem::replace(&mut f.wake_deferred, true);
                    self.rx_wakes.published(id, n, first, at);
                }
            }
            if n < BATCH {
                break;
            }
        }
        total
    }

    /// Send a batch from each active flow, as the allocator's loop does.
    fn transmit(&mut self) {
        let cx = self.tx_ctx(true);
        for _ in 0..TX_ROUNDS {
            if self.active.is_empty() {
                return;
            }
            let mut count = 0;
            let mut i = 0;
            let mut oversize = 0u64;
            let mut broken = Vec::new();
            while i < self.active.len() && count < BATCH {
                let id = self.active[i];
                let Some(f) = self.flows.get_mut(&id) else {
                    self.active.swap_remove(i);
                    continue;
                };
                let Some(route) = f.route else {
                    f.active = false;
                    self.active.swap_remove(i);
                    continue;
                };
                let before = count;
                let fill = fill_from(
                    &f.end,
                    &mut |_| oversize += 1,
                    Some(route),
                    &mut self.tx_bufs,
                    &mut self.tx_lens,
                    &mut count,
                    cx,
                );
                if count > before {
                    f.live.tx_ns.store(
                        (self.start.elapsed().as_nanos() as u64).max(1),
                        Ordering::Relaxed,
                    );
                }
                match fill {
                    Fill::Emptied if f.end.arm_tx_wakeup() => {
                        f.active = false;
                        self.active.swap_remove(i);
                    }
                    Fill::Broken(e) => {
                        self.active.swap_remove(i);
                        broken.push((id, e));
                    }
                    Fill::Emptied | Fill::BatchFull => i += 1,
                }
            }
            // Round robin, as the allocator loop's `fill_round`.
            if i > 0 && i < self.active.len() {
                self.active.rotate_left(i);
            }
            self.note_oversize(oversize);
            self.send(count);
            for (id, e) in broken {
                self.corrupt(id, e);
            }
        }
    }

    fn send(&mut self, count: usize) {
        let before = self.counters.tx_frames;
        send_built(
            &mut *self.sock,
            &self.tx_bufs,
            &self.tx_lens[..count],
            &mut self.counters,
        );
        self.stats
            .tx_frames
            .fetch_add(self.counters.tx_frames - before, Ordering::Relaxed);
    }

    /// What this worker's frames are built for. The largest SDU follows the
    /// frame buffers, which are sized for the link's MTU (see `Shared`);
    /// a layer key never runs with queue workers.
    fn tx_ctx(&self, arm: bool) -> TxCtx {
        let room = self.tx_bufs.first().map_or(0, Vec::len);
        TxCtx {
            my_mac: self.mac,
            ethertype: self.ethertype,
            max_sdu: room.saturating_sub(ETH_HEADER_LEN + FRAME_SLACK + overhead(false)),
            now: self.start.elapsed(),
            arm,
        }
    }

    /// SDUs dropped because the MTU shrank under their flow: counted and
    /// said once per worker (the allocator's loop counts them per flow).
    fn note_oversize(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.tx_oversize == 0 {
            warn!(
                "queue {}: SDUs larger than the link now carries are dropped.",
                self.queue
            );
        }
        self.tx_oversize += n;
    }

    /// Send all that waits in one flow's send ring (before its DEALLOC).
    fn flush(&mut self, id: u32) {
        let Some(f) = self.flows.get(&id) else {
            return;
        };
        let Some(route) = f.route else {
            return;
        };
        let end = f.end.clone();
        for _ in 0..end.geometry().slots as usize / BATCH + 2 {
            let mut count = 0;
            let mut oversize = 0u64;
            let cx = self.tx_ctx(false);
            let fill = fill_from(
                &end,
                &mut |_| oversize += 1,
                Some(route),
                &mut self.tx_bufs,
                &mut self.tx_lens,
                &mut count,
                cx,
            );
            self.note_oversize(oversize);
            self.send(count);
            if !matches!(fill, Fill::BatchFull) {
                break;
            }
        }
    }
}
