//! The IPCP's end of a flow, and irmd's [`Monitor`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

use super::map::{ShmMap, Stats};
use super::ring::{Consumer, Producer};
use super::wake::{arm, disarm, drain, set_nonblocking, wake_if_armed, wake_if_armed_and, Drained};
use super::{lock, now_unix_ms, Dir};
use crate::error::{Error, Result};
use crate::proto::{FlowState, RingGeometry};

/// A flow's counters as the IPCP keeps them, in its own memory: what irmd
/// shows for the flow. (The copy in the mapping is for the application,
/// which can overwrite it.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCounters {
    /// SDUs (and their bytes) sent to the peer.
    pub tx_sdus: u64,
    pub tx_bytes: u64,
    /// SDUs (and their bytes) put into the application's rx ring.
    pub rx_sdus: u64,
    pub rx_bytes: u64,
    /// SDUs dropped because the application's rx ring was full.
    pub rx_dropped: u64,
    /// Unix time in ms of the last frame from the peer; 0 = never.
    pub last_rx_unix_ms: u64,
}

#[derive(Debug, Default)]
struct OwnCounters {
    tx_sdus: AtomicU64,
    tx_bytes: AtomicU64,
    rx_sdus: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    last_rx_unix_ms: AtomicU64,
}

/// The IPCP's end of a flow: pops from tx, pushes into rx. Never trusts the
/// mapping: indices it owns are private, everything read is bounds-checked,
/// SDUs are copied out, never referenced. A corrupt ring is an
/// `Error::Invalid`, and stays one: every later pop or push fails at once
/// with the same error (the caller ends the flow).
#[derive(Debug)]
pub struct IpcpEnd {
    map: ShmMap,
    /// Read end of the IPCP wake pipe (this process's own description).
    ipcp_wake: OwnedFd,
    /// Write ends of the rx and tx wake pipes (never held by the application).
    rx_wake: OwnedFd,
    tx_wake: OwnedFd,
    tx: Mutex<Consumer>,
    rx: Mutex<RxProducer>,
    counters: OwnCounters,
    /// The first corruption found, if any.
    broken: OnceLock<Error>,
}

/// Free slots in the tx ring at which a writer asleep on a full ring is
/// woken: a quarter of the ring (at least one slot).
fn wake_writer_mark(slots: u32) -> u32 {
    (slots / 4).max(1)
}

/// The rx producer with what it staged and has not published yet.
#[derive(Debug)]
struct RxProducer {
    ring: Producer,
    /// Bytes of the staged SDUs (their count is the ring's).
    bytes: u64,
}

/// The rx ring of one flow, held for a run of SDUs
/// ([`IpcpEnd::rx_stager`]). Dropping it releases the ring; what it staged
/// stays unpublished until [`IpcpEnd::wake_rx`].
#[derive(Debug)]
pub struct RxStager<'e> {
    end: &'e IpcpEnd,
    rx: MutexGuard<'e, RxProducer>,
}

impl RxStager<'_> {
    /// [`IpcpEnd::push_rx_quiet`] without taking the lock: write one SDU
    /// into the rx ring, unpublished. Full ring → `Ok(false)`, counted as
    /// dropped; longer than slot_size → `MsgSize`; corrupt → `Invalid`.
    pub fn stage(&mut self, sdu: &[u8]) -> Result<bool> {
        self.end.stage_locked(&mut self.rx, sdu)
    }
}

/// What [`IpcpEnd::push_rx_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxPushed {
    /// SDUs now in the application's rx ring.
    pub pushed: usize,
    /// SDUs dropped (and counted) because the ring was full.
    pub dropped: usize,
}

/// What [`IpcpEnd::clear_tx_wakeup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxWake {
    /// Wake-ups were consumed (or none was pending).
    Cleared,
    /// Every write end is closed: the application can never wake this flow
    /// again. Stop polling its fd (it would stay readable for ever).
    Closed,
}

impl IpcpEnd {
    /// Takes the fds in the order [`super::FlowFds::for_ipcp`] gives them: the
    /// IPCP wake pipe's read end and the rx and tx wake pipes' write ends.
    ///
    /// The IPCP's indices start from the mapping's current values (0 for a
    /// fresh flow) and are private from then on; a start an application faked
    /// is still bounds-checked on every use, so it can only break its own flow.
    ///
    /// # Panics
    /// If `map` came from [`ShmMap::map_header`] (no rings mapped).
    pub fn new(map: ShmMap, ipcp_wake: OwnedFd, rx_wake: OwnedFd, tx_wake: OwnedFd) -> IpcpEnd {
        assert!(map.has_rings(), "IpcpEnd needs the whole flow memfd mapped");
        // irmd made them non-blocking, and only trusted processes share these
        // descriptions. Best effort.
        for fd in [&ipcp_wake, &rx_wake, &tx_wake] {
            let _ = set_nonblocking(fd.as_fd());
        }
        let tx = Mutex::new(Consumer::new(&map, Dir::Tx));
        let rx = Mutex::new(RxProducer {
            ring: Producer::new(&map, Dir::Rx),
            bytes: 0,
        });
        IpcpEnd {
            map,
            ipcp_wake,
            rx_wake,
            tx_wake,
            tx,
            rx,
            counters: OwnCounters::default(),
            broken: OnceLock::new(),
        }
    }

    /// The fd to put in the IPCP's epoll set ("the tx ring got data").
    pub fn ipcp_fd(&self) -> BorrowedFd<'_> {
        self.ipcp_wake.as_fd()
    }

    /// The corruption found earlier, if any.
    fn check_broken(&self) -> Result<()> {
        match self.broken.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Remember `e` as the flow's corruption (the first one wins) and return it.
    fn mark_broken(&self, e: Error) -> Error {
        self.broken.get_or_init(|| e).clone()
    }

    /// Whether a corrupt ring was found (the flow is unusable for the IPCP).
    pub fn is_broken(&self) -> bool {
        self.broken.get().is_some()
    }

    /// Pop one SDU from the tx ring into `dst`. `Ok(None)`: the ring is
    /// empty. `Ok(Some(len))`: the SDU's length; if it is longer than `dst`,
    /// only `dst.len()` bytes were copied (the caller drops it).
    pub fn pop_tx_into(&self, dst: &mut [u8]) -> Result<Option<usize>> {
        let mut lens = [0usize];
        let n = self.pop_tx_batch_into(&mut [dst], 0, &mut lens)?;
        Ok((n == 1).then_some(lens[0]))
    }

    /// Pop up to `min(bufs.len(), lens.len())` SDUs: SDU k is copied into
    /// `bufs[k][offset..]` and its length stored in `lens[k]` (a length larger
    /// than the room after `offset` means only the room was copied: drop it).
    /// Returns how many were popped. The tail is published (and a blocked
    /// writer woken) once, at the end.
    ///
    /// A corrupt ring found after some good SDUs returns those; the next call
    /// (and every one after) returns the error.
    pub fn pop_tx_batch_into<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        offset: usize,
        lens: &mut [usize],
    ) -> Result<usize> {
        self.check_broken()?;
        let max = bufs.len().min(lens.len());
        let mut tx = lock(&self.tx);
        let mut n = 0;
        let mut failed = None;
        while n < max {
            let sdu = match tx.has_data(&self.map) {
                Ok(true) => tx.peek(&self.map),
                Ok(false) => break,
                Err(e) => Err(e),
            };
            match sdu {
                Ok(sdu) => {
                    let buf = bufs[n].as_mut();
                    let room = buf.get_mut(offset..).unwrap_or_default();
                    sdu.copy_to(room);
                    lens[n] = sdu.len();
                    tx.advance(&self.map);
                    n += 1;
                }
                Err(e) => {
                    failed = Some(self.mark_broken(e));
                    break;
                }
            }
        }
        if n > 0 {
            tx.publish(&self.map);
            // A writer sleeps only on a full ring. Wake it once a quarter of
            // the ring is free, not after every batch: woken at the first
            // batch, it fills the few free slots and sleeps again (one sleep
            // per ~80 SDUs in a 64-byte flood). Until then the ring still
            // holds SDUs, so this flow stays in the send loop and a later
            // pop crosses the mark (an empty ring always has).
            // The head is loaded only when a writer sleeps.
            let mark = wake_writer_mark(self.map.geom.slots);
            wake_if_armed_and(
                &self.map.ctrl(Dir::Tx).producer_waiting,
                self.tx_wake.as_fd(),
                || tx.free_at_least(&self.map, mark),
            );
            return Ok(n);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }

    /// Before sleeping on [`IpcpEnd::ipcp_fd`]: announce it, fence, re-check.
    /// True: the ring is empty, sleep. False: data (or corruption, which the
    /// next pop reports) arrived meanwhile; the flag is cleared again.
    pub fn arm_tx_wakeup(&self) -> bool {
        if self.is_broken() {
            return false;
        }
        let mut tx = lock(&self.tx);
        let flag = &self.map.ctrl(Dir::Tx).consumer_sleeping;
        arm(flag);
        if matches!(tx.has_data(&self.map), Ok(false)) {
            return true;
        }
        disarm(flag);
        false
    }

    /// Consume the IPCP wake pipe's pending bytes (after epoll said it is
    /// readable). Bounded: an application that writes without end costs one
    /// bounded read per loop turn, like any busy flow.
    pub fn clear_tx_wakeup(&self) -> TxWake {
        match drain(self.ipcp_wake.as_fd()) {
            Drained::Hangup => TxWake::Closed,
            Drained::Nothing | Drained::Woken => TxWake::Cleared,
        }
    }

    /// Push one SDU into the rx ring and publish it at once. Full ring →
    /// `Ok(false)`, counted as dropped; never blocks. Longer than slot_size →
    /// `MsgSize`. Wakes the application if it sleeps; updates rx counters and
    /// the last-rx time. A receive path with a batch of frames uses
    /// [`IpcpEnd::push_rx_batch`] or [`IpcpEnd::push_rx_quiet`] +
    /// [`IpcpEnd::wake_rx`] instead: one publication and one wake-up check
    /// per batch.
    pub fn push_rx(&self, sdu: &[u8]) -> Result<bool> {
        let pushed = self.push_rx_quiet(sdu)?;
        self.wake_rx();
        Ok(pushed)
    }

    /// Push many SDUs: one lock, one publication of the head, one update of
    /// the counters and the last-rx time, and at most one wake-up (one
    /// fence). SDUs that find the ring full are dropped and counted, as with
    /// [`IpcpEnd::push_rx`]. An SDU longer than slot_size stops the batch
    /// with `MsgSize` after publishing those before it; a corrupt ring stops
    /// it with the error (and the flow stays broken).
    pub fn push_rx_batch<'s, I>(&self, sdus: I) -> Result<RxPushed>
    where
        I: IntoIterator<Item = &'s [u8]>,
    {
        let mut done = RxPushed::default();
        let mut rx = lock(&self.rx);
        let mut result = Ok(());
        for sdu in sdus {
            match self.stage_locked(&mut rx, sdu) {
                Ok(true) => done.pushed += 1,
                Ok(false) => done.dropped += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if self.publish_locked(&mut rx) > 0 {
            self.wake_rx_reader();
        }
        result.map(|()| done)
    }

    /// Write one SDU into the rx ring **without publishing it**: the
    /// application sees it, and is woken, at the next [`IpcpEnd::wake_rx`]
    /// (or [`IpcpEnd::set_state`], which publishes first). A receiver that
    /// hands a batch of frames to their flows calls this per frame and
    /// `wake_rx` once per flow at the end of the batch: one publication and
    /// at most one wake-up per flow per batch. Full ring → `Ok(false)`,
    /// counted as dropped; longer than slot_size → `MsgSize`.
    pub fn push_rx_quiet(&self, sdu: &[u8]) -> Result<bool> {
        self.rx_stager().stage(sdu)
    }

    /// Hold the rx ring for a run of [`RxStager::stage`] calls: one lock
    /// for the run instead of one per SDU (each lock and unlock is a locked
    /// instruction, which waits for the slot stores before it). Staged SDUs
    /// are published by [`IpcpEnd::wake_rx`], which takes the lock again:
    /// drop the stager first.
    pub fn rx_stager(&self) -> RxStager<'_> {
        RxStager {
            end: self,
            rx: lock(&self.rx),
        }
    }

    fn stage_locked(&self, rx: &mut RxProducer, sdu: &[u8]) -> Result<bool> {
        let max = self.map.geom.slot_size as usize;
        if sdu.len() > max {
            return Err(Error::MsgSize {
                len: sdu.len(),
                max,
            });
        }
        self.check_broken()?;
        match rx.ring.has_space(&self.map) {
            Ok(true) => {}
            Ok(false) => {
                let d = self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let h = self.map.header();
                h.rx_counters.dropped.store(d, Ordering::Relaxed);
                return Ok(false);
            }
            Err(e) => return Err(self.mark_broken(e)),
        }
        rx.ring.stage(&self.map, sdu);
        rx.bytes += sdu.len() as u64;
        Ok(true)
    }

    /// Publish what [`IpcpEnd::push_rx_quiet`] staged (one store), update
    /// the counters and the last-rx time once, and wake the application if
    /// it sleeps (one fence). Returns how many SDUs became visible.
    pub fn wake_rx(&self) -> u32 {
        let mut rx = lock(&self.rx);
        let n = self.publish_locked(&mut rx);
        if n > 0 {
            self.wake_rx_reader();
        }
        n
    }

    /// [`IpcpEnd::wake_rx`] without the wake-up: publish what was staged
    /// (and count it), so a reader that is awake or spinning sees it at
    /// once. The caller owes a sleeping reader [`IpcpEnd::wake_rx_reader`],
    /// at the latest before it may sleep itself. Returns how many SDUs it
    /// published.
    pub fn publish_rx(&self) -> u32 {
        let mut rx = lock(&self.rx);
        self.publish_locked(&mut rx)
    }

    /// Wake the application if it declared itself asleep on its rx ring:
    /// one fence and one load, a write to its pipe only if it sleeps.
    pub fn wake_rx_reader(&self) {
        wake_if_armed(
            &self.map.header().rx.consumer_sleeping,
            self.rx_wake.as_fd(),
        );
    }

    fn publish_locked(&self, rx: &mut RxProducer) -> u32 {
        let n = rx.ring.staged();
        if n == 0 {
            return 0;
        }
        rx.ring.publish(&self.map);
        let bytes = std::mem::take(&mut rx.bytes);
        let c = &self.counters;
        let sdus = c.rx_sdus.fetch_add(u64::from(n), Ordering::Relaxed) + u64::from(n);
        let bytes = c.rx_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let now = now_unix_ms();
        c.last_rx_unix_ms.store(now, Ordering::Relaxed);
        // The application's copy: stores of our totals, never read back.
        let h = self.map.header();
        h.rx_counters.sdus.store(sdus, Ordering::Relaxed);
        h.rx_counters.bytes.store(bytes, Ordering::Relaxed);
        h.rx_counters.last_unix_ms.store(now, Ordering::Relaxed);
        n
    }

    /// Whether SDUs wait in the tx ring (one load, no lock taken by the
    /// application). For an IPCP that spins a little before it sleeps
    /// ([`super::SpinPolicy`]); a corrupt ring counts as "yes" (the next pop
    /// reports it).
    pub fn tx_ready(&self) -> bool {
        let tail = lock(&self.tx).tail;
        self.map.ctrl(Dir::Tx).head.load(Ordering::Acquire) != tail
    }

    /// Record that a frame came from the peer without data for the
    /// application (a keep-alive), for `irm flow list`'s last-rx column.
    pub fn touch_last_rx(&self) {
        let now = now_unix_ms();
        self.counters.last_rx_unix_ms.store(now, Ordering::Relaxed);
        self.map
            .header()
            .rx_counters
            .last_unix_ms
            .store(now, Ordering::Relaxed);
    }

    /// Set the state word and signal the rx and tx wake pipes. SDUs staged
    /// by [`IpcpEnd::push_rx_quiet`] are published first: data that came
    /// before a state change is read before it.
    pub fn set_state(&self, s: FlowState) {
        self.wake_rx();
        self.map
            .set_state(s, self.rx_wake.as_fd(), self.tx_wake.as_fd());
    }

    /// DOWN because irmd is gone (the application reports EIRMD). Staged
    /// SDUs are published first, as with [`IpcpEnd::set_state`].
    pub fn set_irmd_gone(&self) {
        self.wake_rx();
        self.map.set_state_word(
            super::STATE_IRMD_GONE,
            self.rx_wake.as_fd(),
            self.tx_wake.as_fd(),
        );
    }

    /// Tell the application the largest SDU the link carries now (after an
    /// MTU change, and when the flow is attached). Its library refuses
    /// larger SDUs with EMSGSIZE from then on; the IPCP still checks every
    /// SDU itself (the application can overwrite this word).
    pub fn set_link_max_sdu(&self, max_sdu: u32) {
        self.map
            .header()
            .link_max_sdu
            .store(max_sdu, Ordering::Release);
    }

    /// The state word as it is in the mapping (the application can write it:
    /// the IPCP's own record of the state is authoritative).
    pub fn state(&self) -> FlowState {
        self.map.state()
    }

    /// Count one SDU of `bytes` sent to the peer.
    pub fn note_tx(&self, bytes: usize) {
        self.note_tx_batch(1, bytes as u64);
    }

    /// Count `sdus` SDUs of `bytes` bytes in all sent to the peer: one
    /// update of the counters per send batch, not one per SDU (each
    /// `fetch_add` is a locked instruction).
    pub fn note_tx_batch(&self, sdus: u64, bytes: u64) {
        if sdus == 0 {
            return;
        }
        let c = &self.counters;
        let sdus = c.tx_sdus.fetch_add(sdus, Ordering::Relaxed) + sdus;
        let bytes = c.tx_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let h = &self.map.header().tx_counters;
        h.sdus.store(sdus, Ordering::Relaxed);
        h.bytes.store(bytes, Ordering::Relaxed);
    }

    /// The flow's counters from the IPCP's own memory (what irmd should show).
    pub fn counters(&self) -> FlowCounters {
        let c = &self.counters;
        FlowCounters {
            tx_sdus: c.tx_sdus.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            rx_sdus: c.rx_sdus.load(Ordering::Relaxed),
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            rx_dropped: c.rx_dropped.load(Ordering::Relaxed),
            last_rx_unix_ms: c.last_rx_unix_ms.load(Ordering::Relaxed),
        }
    }

    /// The IPCP's own counters ([`IpcpEnd::counters`], never read from the
    /// mapping) with the state word as the mapping holds it.
    pub fn stats(&self) -> Stats {
        let c = self.counters();
        Stats {
            rx_sdus: c.rx_sdus,
            rx_bytes: c.rx_bytes,
            tx_sdus: c.tx_sdus,
            tx_bytes: c.tx_bytes,
            dropped: c.rx_dropped,
            last_rx_unix_ms: c.last_rx_unix_ms,
            state: self.map.state(),
        }
    }

    pub fn geometry(&self) -> RingGeometry {
        self.map.geom
    }

    #[cfg(test)]
    pub(super) fn map(&self) -> &ShmMap {
        &self.map
    }

    #[cfg(test)]
    pub(super) fn tx_tail(&self) -> u32 {
        lock(&self.tx).tail
    }
}

// ---------------------------------------------------------------------------
// irmd side
// ---------------------------------------------------------------------------

/// irmd's view of a flow ([`super::FlowFds::monitor`]): the header only. It
/// sets the state (e.g. when the IPCP dies). It writes only to wake pipe ends
/// the application never holds, so no call here can block.
#[derive(Debug)]
pub struct Monitor {
    map: ShmMap,
    rx_wake: OwnedFd,
    tx_wake: OwnedFd,
    /// Both ends of the IPCP wake pipe, held so neither side sees EOF/EPIPE.
    _ipcp_wake: [OwnedFd; 2],
}

impl Monitor {
    /// `map` may be a header-only mapping ([`ShmMap::map_header`]);
    /// `rx_wake`/`tx_wake` are the write ends of the rx and tx wake pipes.
    pub fn new(
        map: ShmMap,
        rx_wake: OwnedFd,
        tx_wake: OwnedFd,
        ipcp_wake: [OwnedFd; 2],
    ) -> Monitor {
        Monitor {
            map,
            rx_wake,
            tx_wake,
            _ipcp_wake: ipcp_wake,
        }
    }

    /// Set the state word and signal the application's wake pipes.
    pub fn set_state(&self, s: FlowState) {
        self.map
            .set_state(s, self.rx_wake.as_fd(), self.tx_wake.as_fd());
    }

    pub fn state(&self) -> FlowState {
        self.map.state()
    }

    /// Counters as the mapping holds them. The application can falsify
    /// these: show the IPCP's [`FlowCounters`] instead where it reports them.
    pub fn stats(&self) -> Stats {
        self.map.stats()
    }
}
