//! Frames in and out of the event loop: filling send batches from the flows'
//! rings and handing each received frame to its flow or the allocator.

use super::*;

impl Ipcp {
    /// Read frames until none wait (bounded per turn). With a receive ring
    /// each frame is handled where the kernel put it: the only copy of an
    /// SDU is the one into its flow's ring. Returns how many frames were read.
    pub(super) fn receive(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..RX_ROUNDS {
            let now = self.now();
            let (my_mac, ethertype) = (self.link.mac, self.ethertype);
            let (fa, keyed, counters) = (&mut self.fa, &mut self.keyed, &mut self.counters);
            let mut deliver = RxDeliver::new(&self.flows, &mut self.to_wake, &mut self.corrupt);
            let mut each = |frame: &mut [u8]| {
                counters.rx_frames += 1;
                let len = match keyed.as_mut() {
                    // Verified before anything parses it: a frame that fails
                    // is counted and changes nothing.
                    Some(k) => match k.open_frame(frame, my_mac, ethertype) {
                        Some(len) => len,
                        None => return,
                    },
                    None => frame.len(),
                };
                handle_frame(
                    fa,
                    &mut deliver,
                    counters,
                    my_mac,
                    ethertype,
                    now,
                    &frame[..len],
                );
            };
            let got = match self.sock.recv_in_place(BATCH, &mut each) {
                Some(r) => r,
                None => self
                    .sock
                    .recv_batch(&mut self.rx_bufs, &mut self.rx_lens)
                    .inspect(|&n| {
                        for (b, &len) in self.rx_bufs[..n].iter_mut().zip(&self.rx_lens) {
                            each(&mut b[..len]);
                        }
                    }),
            };
            let n = match got {
                Ok(n) => n,
                // The link went down: the link monitor reports it.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => 0,
                Err(e) => {
                    warn!("receive failed: {e}");
                    0
                }
            };
            // One publication per flow per batch, not one per SDU; the
            // wake-ups of sleeping readers wait while the flood lasts.
            deliver.finish(&mut self.rx_wakes, Instant::now());
            if n == 0 {
                break;
            }
            total += n;
            self.end_corrupt_flows();
            self.carry_out_actions();
            if n < BATCH {
                break;
            }
        }
        total
    }

    /// Move SDUs from the flows' send rings to the wire, in batches.
    pub(super) fn transmit(&mut self) {
        for _ in 0..TX_ROUNDS {
            if self.active.is_empty() {
                break;
            }
            let mut ids = std::mem::take(&mut self.active);
            let built = self.tx_batch(&mut ids, true);
            self.active = ids;
            if built == 0 {
                break;
            }
        }
        self.end_corrupt_flows();
    }

    /// One send batch from the flows in `ids`: frames built in the
    /// backend's transmit ring when it has one (the only copy of an SDU is
    /// the one out of the flow's memory), else in `tx_bufs`; sealed with the
    /// layer key; sent with one call. Returns how many frames were built.
    fn tx_batch(&mut self, ids: &mut Vec<u32>, arm: bool) -> usize {
        let cx = TxCtx {
            my_mac: self.link.mac,
            ethertype: self.ethertype,
            max_sdu: self.max_sdu() as usize,
            now: self.now(),
            arm,
        };
        let lens = &mut self.tx_lens;
        if let Some(slots) = self.sock.tx_slots(BATCH) {
            let (fa, now) = (&mut self.fa, cx.now);
            let mut count = fill_round(
                &mut |id| fa.data_tx(now, id),
                &mut self.flows,
                ids,
                &mut self.corrupt,
                slots,
                lens,
                cx,
            );
            if let Some(k) = &mut self.keyed {
                count = k.seal_batch(&mut slots[..count], &mut lens[..count]);
            }
            match self.sock.tx_commit(&lens[..count]) {
                Ok(k) => self.counters.tx_frames += k as u64,
                Err(e) if self.link.up => warn!("send failed: {e}"),
                Err(e) => debug!("link down, frames not sent: {e}"),
            }
            return count;
        }
        let (fa, now) = (&mut self.fa, cx.now);
        let mut count = fill_round(
            &mut |id| fa.data_tx(now, id),
            &mut self.flows,
            ids,
            &mut self.corrupt,
            &mut self.tx_bufs,
            lens,
            cx,
        );
        if let Some(k) = &mut self.keyed {
            count = k.seal_batch(&mut self.tx_bufs[..count], &mut lens[..count]);
        }
        send_built(
            &mut *self.sock,
            &self.tx_bufs,
            &self.tx_lens[..count],
            &mut self.counters,
        );
        count
    }

    /// Send what is still in a flow's send ring (before it is deallocated:
    /// an application's last SDUs must reach the peer before the DEALLOC).
    pub(super) fn flush_flow(&mut self, id: u32) {
        // A flow pinned to a queue worker is flushed by its worker.
        if self.pool_flush(id) {
            return;
        }
        let Some(f) = self.flows.get(&id) else { return };
        let max_rounds = f.end.geometry().slots as usize / BATCH + 2;
        for _ in 0..max_rounds {
            let mut ids = vec![id];
            let built = self.tx_batch(&mut ids, false);
            // Emptied (or corrupt, or no room to send): nothing more to do.
            if ids.is_empty() || built == 0 {
                break;
            }
        }
    }
}

/// Send the frames built in `tx_bufs` (one per entry of `lens`).
pub(super) fn send_built(
    sock: &mut dyn FrameIo,
    tx_bufs: &[Vec<u8>],
    lens: &[usize],
    counters: &mut Counters,
) {
    if lens.is_empty() {
        return;
    }
    let mut frames: [&[u8]; BATCH] = [&[]; BATCH];
    let n = lens.len().min(BATCH);
    for (f, (&len, b)) in frames.iter_mut().zip(lens.iter().zip(tx_bufs)) {
        *f = &b[..len];
    }
    match sock.send_batch(&frames[..n]) {
        Ok(k) => counters.tx_frames += k as u64,
        Err(e) => warn!("send failed: {e}"),
    }
}

/// How [`fill_batch`] stopped.
pub(super) enum Fill {
    /// The flow's send ring is empty.
    Emptied,
    /// The batch is full; the ring may hold more.
    BatchFull,
    /// The ring is corrupt: end the flow.
    Broken(Error),
}

/// What the frames of one send batch are built for.
#[derive(Debug, Clone, Copy)]
pub(super) struct TxCtx {
    pub my_mac: Mac,
    pub ethertype: u16,
    /// The largest SDU the link carries now: longer ones are dropped and
    /// counted on their flow (its ring was sized for an older, larger MTU).
    pub max_sdu: usize,
    pub now: Duration,
    /// Flows found empty sleep (wake-up armed) and leave the list; without
    /// it (a flush) they just leave it.
    pub arm: bool,
}

/// Move SDUs from one flow's send ring into frames `bufs[*count..]`, until
/// the batch is full or the ring is empty. SDUs are copied out of the shared
/// memory straight into place after the headers, which are written around
/// them; an SDU that cannot go (flow not established, larger than the link
/// now carries) is dropped: the application sees the flow's state, and an
/// SDU too large is counted on the flow. The frames stay in order with no
/// gaps (a dropped SDU's successors are copied up: `bufs` may be the slots
/// of a transmit ring).
pub(super) fn fill_batch<B: AsMut<[u8]>>(
    flow_id: u32,
    f: &FlowIo,
    route: Option<(Mac, crate::wire::Eid, crate::wire::Eid)>,
    bufs: &mut [B],
    lens: &mut [usize],
    count: &mut usize,
    cx: TxCtx,
) -> Fill {
    let mut oversize = |len| f.oversize(flow_id, len, cx.max_sdu);
    fill_from(&f.end, &mut oversize, route, bufs, lens, count, cx)
}

/// [`fill_batch`] for any holder of a flow's end (a queue worker's flows
/// too): `oversize` is told the length of each SDU dropped as too large.
pub(super) fn fill_from<B: AsMut<[u8]>>(
    end: &IpcpEnd,
    oversize: &mut dyn FnMut(usize),
    route: Option<(Mac, crate::wire::Eid, crate::wire::Eid)>,
    bufs: &mut [B],
    lens: &mut [usize],
    count: &mut usize,
    cx: TxCtx,
) -> Fill {
    const AT: usize = ETH_HEADER_LEN + HEADER_LEN;
    let cap = bufs.len().min(lens.len()).min(BATCH);
    let mut sdu_lens = [0usize; BATCH];
    while *count < cap {
        let want = cap - *count;
        let got = match end.pop_tx_batch_into(&mut bufs[*count..cap], AT, &mut sdu_lens[..want]) {
            Ok(0) => return Fill::Emptied,
            Ok(n) => n,
            Err(e) => return Fill::Broken(e),
        };
        let mut kept = *count;
        let mut sent_bytes = 0u64;
        for (k, &len) in sdu_lens[..got].iter().enumerate() {
            let i = *count + k;
            let Some((mac, dst, src)) = route else {
                continue;
            };
            if len > cx.max_sdu || AT + len > bufs[i].as_mut().len() {
                oversize(len);
                continue;
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                front[kept].as_mut()[AT..AT + len].copy_from_slice(&back[0].as_mut()[AT..AT + len]);
            }
            let buf = bufs[kept].as_mut();
            EthHeader {
                dst: mac,
                src: cx.my_mac,
                ethertype: cx.ethertype,
            }
            .emit(buf);
            crate::wire::emit_data_header(&mut buf[ETH_HEADER_LEN..], dst, src, len as u16);
            lens[kept] = AT + len;
            sent_bytes += len as u64;
            kept += 1;
        }
        end.note_tx_batch((kept - *count) as u64, sent_bytes);
        *count = kept;
        if got < want {
            return Fill::Emptied;
        }
    }
    Fill::BatchFull
}

/// Where a flow's frames go (the allocator's `data_tx`): peer MAC, remote
/// and local eid; `None` while the flow is not established.
pub(super) type Route = Option<(Mac, crate::wire::Eid, crate::wire::Eid)>;

/// Fill one send batch from the flows in `ids`, each in turn, until the
/// batch is full or every flow is empty, and leave `ids` rotated so the next
/// batch starts behind the last flow served. Returns how many frames were
/// built.
pub(super) fn fill_round<B: AsMut<[u8]>>(
    route_of: &mut dyn FnMut(u32) -> Route,
    flows: &mut HashMap<u32, FlowIo>,
    ids: &mut Vec<u32>,
    corrupt: &mut Vec<(u32, Error)>,
    bufs: &mut [B],
    lens: &mut [usize],
    cx: TxCtx,
) -> usize {
    let cap = bufs.len().min(lens.len()).min(BATCH);
    let mut count = 0;
    let mut i = 0;
    while i < ids.len() && count < cap {
        let id = ids[i];
        let Some(f) = flows.get_mut(&id) else {
            ids.swap_remove(i);
            continue;
        };
        let route = route_of(id);
        match fill_batch(id, f, route, bufs, lens, &mut count, cx) {
            Fill::Emptied if !cx.arm => {
                ids.swap_remove(i);
            }
            Fill::Emptied if f.end.arm_tx_wakeup() => {
                f.active = false;
                ids.swap_remove(i);
            }
            Fill::Broken(e) => {
                f.active = false;
                ids.swap_remove(i);
                // A flush ends the flow anyway.
                if cx.arm {
                    corrupt.push((id, e));
                }
            }
            Fill::Emptied | Fill::BatchFull => i += 1,
        }
    }
    // The next batch starts behind the last flow served: a writer that keeps
    // its ring full gets one batch in turn, not every batch before the flows
    // behind it.
    if i > 0 && i < ids.len() {
        ids.rotate_left(i);
    }
    count
}

/// Where the DATA frames of a received batch go: their flows' receive
/// rings. The ring of the flow that got the last SDU stays held
/// ([`RxStager`]) while the next frames are for the same flow, so a run of
/// SDUs costs one lookup and one lock, not one per SDU (a lock and its
/// unlock are locked instructions, each waiting for the slot stores before
/// it). Flows that got SDUs are woken once, after the batch
/// ([`RxDeliver::finish`]).
pub(super) struct RxDeliver<'f, 'b> {
    flows: &'f HashMap<u32, FlowIo>,
    held: Option<(u32, &'f FlowIo, RxStager<'f>)>,
    to_wake: &'b mut Vec<u32>,
    corrupt: &'b mut Vec<(u32, Error)>,
}

impl<'f, 'b> RxDeliver<'f, 'b> {
    pub(super) fn new(
        flows: &'f HashMap<u32, FlowIo>,
        to_wake: &'b mut Vec<u32>,
        corrupt: &'b mut Vec<(u32, Error)>,
    ) -> Self {
        RxDeliver {
            flows,
            held: None,
            to_wake,
            corrupt,
        }
    }

    /// Stage one SDU in flow `flow_id`'s receive ring (unpublished until
    /// [`RxDeliver::finish`] or the caller's own wake-up of `to_wake`).
    fn deliver(&mut self, flow_id: u32, sdu: &[u8], counters: &mut Counters) {
        if self.held.as_ref().map(|h| h.0) != Some(flow_id) {
            // Release the previous flow's ring before taking another's.
            self.held = None;
            let Some(f) = self.flows.get(&flow_id) else {
                return;
            };
            self.held = Some((flow_id, f, f.end.rx_stager()));
        }
        let Some((_, f, ring)) = self.held.as_mut() else {
            return;
        };
        match ring.stage(sdu) {
            Ok(true) => {
                if !f.wake_pending.replace(true) {
                    self.to_wake.push(flow_id);
                }
            }
            Ok(false) => counters.rx_dropped_full += 1,
            // Found corrupt now: end the flow after this batch (a flow
            // already ended is not in `flows`).
            Err(e @ Error::Invalid(_)) => {
                if !self.corrupt.iter().any(|(id, _)| *id == flow_id) {
                    self.corrupt.push((flow_id, e));
                }
            }
            Err(e) => debug!("flow {flow_id}: {e}"),
        }
    }

    /// Let go of the held ring (before anything else may lock it).
    fn release(&mut self) {
        self.held = None;
    }

    /// Release the held ring, then publish every flow that got SDUs (one
    /// publication per flow per batch) and list it in `wakes`, whose
    /// owner wakes its reader if it sleeps.
    pub(super) fn finish(mut self, wakes: &mut DeferredWakes, now: Instant) {
        self.release();
        for id in self.to_wake.drain(..) {
            if let Some(f) = self.flows.get(&id) {
                f.wake_pending.set(false);
                let n = f.end.publish_rx();
                let first = n > 0 && !f.wake_deferred.replace(true);
                wakes.published(id, n, first, now);
            }
        }
    }
}

/// Parse one received frame and hand it to the flow or the flow allocator.
pub(super) fn handle_frame(
    fa: &mut FlowAllocator,
    rx: &mut RxDeliver<'_, '_>,
    counters: &mut Counters,
    my_mac: Mac,
    ethertype: u16,
    now: Duration,
    frame: &[u8],
) {
    let Ok((eth, rest)) = EthHeader::parse(frame) else {
        counters.malformed += 1;
        return;
    };
    if eth.src == my_mac || eth.ethertype != ethertype {
        return;
    }
    let view = match HeaderView::new_checked(rest) {
        Ok(v) => v,
        Err(e) => {
            counters.malformed += 1;
            debug!("malformed frame from {:02x?}: {e}", eth.src);
            return;
        }
    };
    if view.frame_type() == FrameType::Data {
        match fa.data_rx(now, eth.src, view.dst(), view.src()) {
            Some(flow_id) => rx.deliver(flow_id, view.payload(), counters),
            None => counters.unknown_eid += 1,
        }
        return;
    }
    rx.release();
    let flows = rx.flows;
    match Frame::parse(rest) {
        Ok(f) => {
            fa.handle_frame(now, eth.src, &f);
            // A keep-alive that proved the peer alive is news for every flow
            // with it (`irm flow list` shows the time since the last frame).
            // Walking the flows is O(flows), so it happens at most once per
            // KEEPALIVE_TOUCH_GAP per peer, and never for a frame that proved
            // nothing (forged keep-alives cost O(1)).
            if f.frame_type() == FrameType::KeepAlive
                && fa.liveness_report_due(eth.src, now, KEEPALIVE_TOUCH_GAP)
            {
                for id in fa.flows_of_peer(eth.src) {
                    if let Some(flow) = flows.get(&id) {
                        flow.end.touch_last_rx();
                    }
                }
            }
        }
        Err(e) => {
            counters.malformed += 1;
            debug!("malformed management frame from {:02x?}: {e}", eth.src);
        }
    }
}
