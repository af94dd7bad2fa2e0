//! The application's end of a flow, and the event-set watcher hooks.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::fork;
use super::map::ShmMap;
use super::ring::{Consumer, Producer};
use super::spin::{SpinPolicy, Spinner};
use super::statelog::StateLog;
use super::wake::{
    arm, arm_reader, disarm, disarm_reader, drain, is_hung_up, note_sleep, set_nonblocking,
    wait_readable, wake_if_armed, Drained, WATCHER_ARMED,
};
use super::{lock, state_error, word_to_state, Dir, STATE_ALLOCATED};
use crate::error::{Error, Result};
use crate::proto::{FlowState, RingGeometry};

/// What a flow tells the event set watching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchNotice {
    /// The flow's reader consumed an rx wake-up that may have announced
    /// something to the watcher: look at the flow again.
    Wakeup,
    /// This process is deallocating the flow.
    Closed,
}

/// An event set watching a flow's rx fd besides its reader
/// ([`AppEnd::set_watch`]). `notice` is called from the reader's thread,
/// with the reader's lock held: it must be quick and must not call back
/// into the flow.
pub trait RxWatch: Send + Sync + std::fmt::Debug {
    fn notice(&self, notice: WatchNotice);
}

/// What [`AppEnd::watch_check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxReadiness {
    /// SDUs are waiting in the rx ring (always false when not asked for).
    pub has_data: bool,
    pub state: FlowState,
    /// The state change log, loaded before `state`: the states entered
    /// since an earlier look are `changes.since(earlier)`.
    pub changes: StateLog,
}

/// The application's end of a flow: writes into tx, reads from rx.
/// Reads and writes may come from different threads; each direction is
/// serialised by its own mutex, so concurrent callers cannot corrupt the ring.
/// No thread holds a mutex while it spins or sleeps: a thread blocked in a
/// read (or write) never holds up another thread's non-blocking call. Of the
/// threads blocked in one direction, one sleeps on the wake pipe (only it
/// drains the pipe) and the others on a condition variable it signals when
/// it wakes, so no thread eats another's wake-up.
/// Only the process that made it may use it (see the fork notes in [`super`]).
#[derive(Debug)]
pub struct AppEnd {
    map: ShmMap,
    /// Read end of the rx wake pipe (the flow's pollable fd).
    rx_wake: OwnedFd,
    /// Read end of the tx wake pipe.
    tx_wake: OwnedFd,
    /// Write end of the IPCP wake pipe.
    ipcp_wake: OwnedFd,
    /// The process this end belongs to ([`fork::owner`]).
    owner: u32,
    rx: Mutex<Side<Consumer>>,
    tx: Mutex<Side<Producer>>,
    /// Threads blocked in a read (write) while another sleeps on the pipe.
    rx_cv: Condvar,
    tx_cv: Condvar,
    /// The event set watching this flow, if any.
    watch: Mutex<Option<Watch>>,
    /// The state change log the watcher last saw ([`NOT_SEEN`]: none yet).
    watch_seen: AtomicU64,
}

/// One direction's ring cursor and the state of the threads waiting on it.
#[derive(Debug)]
struct Side<R> {
    ring: R,
    spinner: Spinner,
    /// A thread of this process sleeps on the direction's wake pipe. Only
    /// it may drain the pipe, and the shared flag it armed stays armed.
    pipe_waiter: bool,
    /// Threads waiting on the condition variable for the pipe waiter.
    cv_waiters: u32,
}

impl<R> Side<R> {
    fn new(ring: R, spin: SpinPolicy) -> Side<R> {
        Side {
            ring,
            spinner: Spinner::new(spin),
            pipe_waiter: false,
            cv_waiters: 0,
        }
    }
}

#[derive(Debug)]
struct Watch {
    watcher: Arc<dyn RxWatch>,
    /// Tell it of every consumed wake-up, not only of state changes.
    wants_data: bool,
}

/// `watch_seen` when no log is known to be seen: readers always tell.
const NOT_SEEN: u64 = u64::MAX;

impl AppEnd {
    /// Takes the fds in the order [`super::FlowFds::for_app`] gives them: the
    /// rx and tx wake pipes' read ends and the IPCP wake pipe's write end.
    ///
    /// # Panics
    /// If `map` came from [`ShmMap::map_header`] (no rings mapped).
    pub fn new(map: ShmMap, rx_wake: OwnedFd, tx_wake: OwnedFd, ipcp_wake: OwnedFd) -> AppEnd {
        assert!(map.has_rings(), "AppEnd needs the whole flow memfd mapped");
        // irmd made them non-blocking; these descriptions are ours alone, so
        // only this process could have changed that. Best effort.
        for fd in [&rx_wake, &tx_wake, &ipcp_wake] {
            let _ = set_nonblocking(fd.as_fd());
        }
        let spin = SpinPolicy::default();
        let rx = Mutex::new(Side::new(Consumer::new(&map, Dir::Rx), spin));
        let tx = Mutex::new(Side::new(Producer::new(&map, Dir::Tx), spin));
        AppEnd {
            map,
            rx_wake,
            tx_wake,
            ipcp_wake,
            owner: fork::owner(),
            rx,
            tx,
            rx_cv: Condvar::new(),
            tx_cv: Condvar::new(),
            watch: Mutex::new(None),
            watch_seen: AtomicU64::new(NOT_SEEN),
        }
    }

    /// Whether this process made this end (false in a child that inherited
    /// it by fork).
    pub fn is_owner(&self) -> bool {
        fork::is_owner(self.owner)
    }

    /// `NotAlloc` in a process that inherited this end by fork: a second
    /// producer would corrupt the single-producer ring.
    fn check_owner(&self) -> Result<()> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(Error::NotAlloc)
        }
    }

    /// Copy one SDU into the tx ring. Longer than slot_size → `MsgSize`.
    /// Full ring: wait for space until `deadline` (→ `TimedOut`), or `Again`
    /// when `nonblocking`. Down → `FlowDown`, Peer → `FlowPeer`, checked before
    /// writing and while waiting; nobody left to wake a blocked writer (the
    /// IPCP and irmd gone) → `FlowDown`.
    ///
    /// Each write publishes its SDU and makes one fence to look whether the
    /// IPCP sleeps (a syscall only if it does); [`AppEnd::write_batch`]
    /// makes one of each per batch.
    pub fn write(&self, sdu: &[u8], deadline: Option<Instant>, nonblocking: bool) -> Result<usize> {
        self.write_batch(&[sdu], deadline, nonblocking)
            .map(|_| sdu.len())
    }

    /// Copy SDUs into the tx ring in order, publishing them (and looking
    /// whether the IPCP sleeps) once per run that fits. Returns how many
    /// were written: all of them, or fewer when the ring filled and the
    /// call is `nonblocking`, the `deadline` passed, or the flow's state
    /// changed after some were written (the next call reports the error).
    /// With none written, the errors are those of [`AppEnd::write`]. Any
    /// SDU longer than slot_size refuses the whole batch with `MsgSize`.
    pub fn write_batch<S: AsRef<[u8]>>(
        &self,
        sdus: &[S],
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<usize> {
        self.check_owner()?;
        let max = self.map.geom.slot_size as usize;
        if let Some(big) = sdus.iter().find(|s| s.as_ref().len() > max) {
            return Err(Error::MsgSize {
                len: big.as_ref().len(),
                max,
            });
        }
        let ctrl = self.map.ctrl(Dir::Tx);
        let mut side = lock(&self.tx);
        let mut armed = false;
        let mut spun = false;
        let mut done = 0;
        let partial = |done: usize, e: Error| if done > 0 { Ok(done) } else { Err(e) };
        let result = loop {
            if let Some(e) = state_error(self.map.state()) {
                break partial(done, e);
            }
            let before = done;
            let mut corrupt = None;
            while done < sdus.len() {
                match side.ring.has_space(&self.map) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        corrupt = Some(e);
                        break;
                    }
                }
                side.ring.stage(&self.map, sdus[done].as_ref());
                done += 1;
            }
            if done > before {
                side.ring.publish(&self.map);
                wake_if_armed(&ctrl.consumer_sleeping, self.ipcp_wake.as_fd());
                armed = false;
            }
            if let Some(e) = corrupt {
                break partial(done, e);
            }
            if done == sdus.len() {
                break Ok(done);
            }
            if nonblocking {
                break partial(done, Error::Again);
            }
            if !armed {
                if !spun && !side.spinner.policy().is_off() {
                    spun = true;
                    // Spin without the lock for the IPCP to make room.
                    let head = side.ring.head;
                    let slots = self.map.geom.slots;
                    let full = || head.wrapping_sub(ctrl.tail.load(Ordering::Acquire)) >= slots;
                    side = self.spin(&self.tx, side, || !full() || self.state_changed());
                    continue;
                }
                // Stale wake-ups from earlier waits must not end this one
                // early; a thread asleep on the pipe owns what is in it.
                if !side.pipe_waiter && drain(self.tx_wake.as_fd()) == Drained::Hangup {
                    break partial(done, Error::FlowDown);
                }
                arm(&ctrl.producer_waiting);
                armed = true;
                continue; // re-check space and state after the fence
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break partial(done, Error::TimedOut);
            }
            side = match self.sleep(&self.tx, &self.tx_cv, side, self.tx_wake.as_fd(), deadline) {
                Ok(g) => g,
                Err((g, e)) => {
                    side = g;
                    break partial(done, e);
                }
            };
            armed = false;
        };
        // Whether or not the IPCP already cleared it, no writer waits any
        // more, unless another thread sleeps on the pipe.
        if !side.pipe_waiter {
            disarm(&ctrl.producer_waiting);
        }
        result
    }

    /// Read one SDU into `buf` (truncated to `buf.len()` like a datagram;
    /// returns the bytes copied). Empty ring: wait on the rx wake pipe until
    /// `deadline` (→ `TimedOut`), or `Again` when `nonblocking`. Data already
    /// in the ring is delivered whatever the state; once empty, Down →
    /// `FlowDown`, Peer → `FlowPeer`, nobody left to wake us → `FlowDown`.
    ///
    /// An empty read leaves the sleeping flag set, so the rx fd becomes
    /// readable when the next SDU or state change arrives (epoll users: read
    /// until `Again`, then wait).
    ///
    /// Consecutive reads of a full ring make no fence and no store to a
    /// line the IPCP reads per SDU: consumed slots go back to the IPCP in
    /// groups, and always when the ring looks empty.
    pub fn read(
        &self,
        buf: &mut [u8],
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<usize> {
        let mut lens = [0usize];
        self.read_batch(&mut [buf], &mut lens, deadline, nonblocking)?;
        Ok(lens[0])
    }

    /// Read up to `min(bufs.len(), lens.len())` SDUs: SDU k is copied into
    /// `bufs[k]` (truncated like a datagram) and the bytes copied stored in
    /// `lens[k]`. Waits like [`AppEnd::read`] for the first; takes the rest
    /// only if already there. Returns how many were read (at least one).
    pub fn read_batch<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        lens: &mut [usize],
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<usize> {
        self.check_owner()?;
        let max = bufs.len().min(lens.len());
        if max == 0 {
            return Ok(0);
        }
        let ctrl = self.map.ctrl(Dir::Rx);
        let mut side = lock(&self.rx);
        let mut armed = false;
        let mut spun = false;
        loop {
            if side.ring.has_data(&self.map)? {
                let mut n = 0;
                loop {
                    lens[n] = self.copy_out(&mut side.ring, bufs[n].as_mut());
                    n += 1;
                    if n == max || !matches!(side.ring.has_data(&self.map), Ok(true)) {
                        break;
                    }
                }
                // Another thread asleep on the pipe needs the arm it set.
                if !side.pipe_waiter {
                    disarm_reader(&ctrl.consumer_sleeping);
                }
                return Ok(n);
            }
            if let Some(e) = state_error(self.map.state()) {
                // The state was stored after the last SDU was published; having
                // seen it (Acquire), one more look finds any SDU we raced with.
                if side.ring.has_data(&self.map)? {
                    continue;
                }
                return Err(e);
            }
            if !armed {
                if !nonblocking && !spun && !side.spinner.policy().is_off() {
                    spun = true;
                    // Spin without the lock for the next SDU or a state change.
                    let tail = side.ring.tail;
                    let ready = || ctrl.head.load(Ordering::Acquire) != tail;
                    side = self.spin(&self.rx, side, || ready() || self.state_changed());
                    continue;
                }
                // Drain before arming: a signal that arrives after this is
                // kept. A thread asleep on the pipe owns what is in it.
                if !side.pipe_waiter && self.drain_rx() == Drained::Hangup {
                    return Err(Error::FlowDown);
                }
                arm_reader(&ctrl.consumer_sleeping);
                armed = true;
                continue; // re-check ring and state after the fence
            }
            if nonblocking {
                return Err(Error::Again);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::TimedOut);
            }
            side = self
                .sleep(&self.rx, &self.rx_cv, side, self.rx_wake.as_fd(), deadline)
                .map_err(|(_, e)| e)?;
            armed = false;
        }
    }

    /// Whether the state word says anything but ALLOCATED (a reason to stop
    /// spinning).
    fn state_changed(&self) -> bool {
        self.map.header().state.load(Ordering::Relaxed) != STATE_ALLOCATED
    }

    /// Spin (see [`SpinPolicy`]) until `ready`, without holding the lock.
    fn spin<'a, R>(
        &self,
        m: &'a Mutex<Side<R>>,
        mut side: MutexGuard<'a, Side<R>>,
        ready: impl FnMut() -> bool,
    ) -> MutexGuard<'a, Side<R>> {
        let mut spinner = side.spinner.clone();
        drop(side);
        spinner.spin_until(ready);
        side = lock(m);
        side.spinner = spinner;
        side
    }

    /// Sleep until woken, without holding the lock: on the wake pipe `fd`
    /// if no other thread of this process does, else on `cv` until that
    /// thread wakes (it then wakes every thread waiting on `cv`, and one of
    /// them takes its place if it leaves). Returns the lock again; the
    /// caller re-checks everything (a wake-up may be for another thread).
    #[allow(clippy::type_complexity)]
    fn sleep<'a, R>(
        &self,
        m: &'a Mutex<Side<R>>,
        cv: &Condvar,
        mut side: MutexGuard<'a, Side<R>>,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> std::result::Result<MutexGuard<'a, Side<R>>, (MutexGuard<'a, Side<R>>, Error)> {
        if side.pipe_waiter {
            note_sleep();
            side.cv_waiters += 1;
            side = match deadline {
                None => cv.wait(side).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    cv.wait_timeout(side, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            side.cv_waiters -= 1;
            return Ok(side);
        }
        side.pipe_waiter = true;
        drop(side);
        let woken = wait_readable(fd, deadline);
        side = lock(m);
        side.pipe_waiter = false;
        if side.cv_waiters > 0 {
            cv.notify_all();
        }
        match woken {
            Ok(_) => Ok(side),
            Err(e) => Err((side, e)),
        }
    }

    fn copy_out(&self, rx: &mut Consumer, buf: &mut [u8]) -> usize {
        // The IPCP is trusted by the application, but a bad length must still
        // not make us read past the slot: slot_data clamps it to the slot.
        let slot_len = self.map.slot_len(rx.dir, rx.tail).load(Ordering::Relaxed);
        // The producer does not reuse the slot until we publish the new tail.
        let n = self
            .map
            .slot_data(rx.dir, rx.tail, slot_len as usize)
            .copy_to(buf);
        rx.advance_lazily(&self.map);
        n
    }

    /// For event loops: arm the rx wake-up as an empty non-blocking read does.
    /// Returns true if the caller may sleep on [`AppEnd::rx_fd`] (ring empty,
    /// flow allocated); false if an SDU or a state change is already there
    /// (or the next read has an error to report).
    pub fn arm_rx_wakeup(&self) -> bool {
        if self.check_owner().is_err() {
            return false;
        }
        let mut side = lock(&self.rx);
        if !side.pipe_waiter && self.drain_rx() == Drained::Hangup {
            return false;
        }
        arm_reader(&self.map.ctrl(Dir::Rx).consumer_sleeping);
        !matches!(side.ring.has_data(&self.map), Ok(true) | Err(_))
            && self.map.state() == FlowState::Allocated
    }

    /// The largest SDU the link carries now, as the IPCP last announced it
    /// ([`super::IpcpEnd::set_link_max_sdu`]); `None` if it never did. One
    /// atomic load of a word the IPCP writes: any value is safe to read, a
    /// wrong one only makes this flow refuse or lose its own SDUs.
    pub fn link_max_sdu(&self) -> Option<u32> {
        match self.map.header().link_max_sdu.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// The flow's state as last set by the IPCP or irmd.
    pub fn state(&self) -> FlowState {
        self.map.state()
    }

    /// The IPCP ended the flow because irmd is gone (the state reads DOWN).
    pub fn irmd_gone(&self) -> bool {
        self.map.state_word() == super::STATE_IRMD_GONE
    }

    /// Drain the rx wake pipe; a wake-up consumed here may have been meant
    /// for the watcher, so pass it on — unless the watcher wants state
    /// changes only and the state change log is the one it saw last (a
    /// flap that ended in the state it saw is still news). (The drained
    /// signals announced changes logged before the drain, so the load below
    /// sees them; the watcher's side of this is in [`AppEnd::watch_check`].)
    fn drain_rx(&self) -> Drained {
        let drained = drain(self.rx_wake.as_fd());
        if drained == Drained::Nothing {
            return drained;
        }
        let watcher = lock(&self.watch)
            .as_ref()
            .map(|w| (w.watcher.clone(), w.wants_data));
        if let Some((w, wants_data)) = watcher {
            let now = self.map.state_log().0;
            if wants_data || now != self.watch_seen.load(Ordering::SeqCst) {
                w.notice(WatchNotice::Wakeup);
            }
        }
        drained
    }

    /// Start being watched by `w` (an event set), which wants to hear of
    /// data too (`wants_data`) or only of state changes. One watcher at a
    /// time: a second is refused.
    pub fn set_watch(&self, w: Arc<dyn RxWatch>, wants_data: bool) -> Result<()> {
        let mut slot = lock(&self.watch);
        if slot.is_some() {
            return Err(Error::Invalid("the flow is already in an event set".into()));
        }
        self.watch_seen.store(NOT_SEEN, Ordering::SeqCst);
        *slot = Some(Watch {
            watcher: w,
            wants_data,
        });
        Ok(())
    }

    /// Stop being watched by `w` (no effect if another or no watcher is set).
    pub fn clear_watch(&self, w: &Arc<dyn RxWatch>) {
        let mut slot = lock(&self.watch);
        if slot
            .as_ref()
            .is_some_and(|cur| std::ptr::addr_eq(Arc::as_ptr(&cur.watcher), Arc::as_ptr(w)))
        {
            *slot = None;
        }
    }

    /// The flow is being deallocated by this process: tell the watcher
    /// ([`WatchNotice::Closed`]) and forget it.
    pub fn close_watch(&self) {
        let watch = lock(&self.watch).take();
        if let Some(w) = watch {
            w.watcher.notice(WatchNotice::Closed);
        }
    }

    /// For a watcher: what the flow holds now. With `arm_data`, first arm
    /// the rx wake-up for the watcher (fenced), so an SDU published after
    /// this look signals the rx pipe.
    ///
    /// A reader that sleeps on the pipe counts on the bytes in it: so a
    /// watcher that arms (`arm_data`: it is the flow's reading thread)
    /// drains the pipe only when it gets the rx lock at once and no reader
    /// sleeps on the pipe (no reader inside a read). Readers
    /// drain before they arm; with this, wake-ups for a watcher cannot pile
    /// up until the pipe is full (a full pipe takes no new byte, and
    /// edge-triggered epoll would then see no new edge). A state-only
    /// watcher arms nothing, so nothing piles up for it, and it never drains.
    ///
    /// A pipe at end of file (the IPCP and irmd both gone, so nobody will
    /// ever set the state word) reads as DOWN.
    pub fn watch_check(&self, arm_data: bool) -> RxReadiness {
        let ctrl = self.map.ctrl(Dir::Rx);
        let hung_up = if arm_data {
            match self.rx.try_lock() {
                Ok(side) if !side.pipe_waiter => drain(self.rx_wake.as_fd()) == Drained::Hangup,
                _ => false,
            }
        } else {
            // A state-only watcher shares the fd with readers that may poll
            // it themselves: look, never drain.
            is_hung_up(self.rx_wake.as_fd())
        };
        let has_data = arm_data && {
            ctrl.consumer_sleeping
                .store(WATCHER_ARMED, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // The reader publishes its tail whenever the ring looks empty,
            // so at rest the shared tail is its tail. A corrupt head also counts as data:
            // the reader's next read reports the corruption.
            ctrl.head.load(Ordering::Acquire) != ctrl.tail.load(Ordering::Relaxed)
        };
        // The log first: the state word was stored before the log entry,
        // so this state is the log's newest or later.
        let changes = self.note_seen_changes();
        let state = word_to_state(self.map.header().state.load(Ordering::SeqCst));
        RxReadiness {
            has_data,
            state: if hung_up { FlowState::Down } else { state },
            changes,
        }
    }

    /// Load the state change log and publish it as seen, until a load after
    /// the publication agrees. A reader that drains a signal and compares
    /// the log with `watch_seen` then either sees what this look reports,
    /// or a change this look has not loaded — and tells the watcher.
    fn note_seen_changes(&self) -> StateLog {
        let mut now = self.map.state_log();
        for _ in 0..4 {
            self.watch_seen.store(now.0, Ordering::SeqCst);
            let again = self.map.state_log();
            if again == now {
                return now;
            }
            now = again;
        }
        // Still changing: let every reader's drain tell the watcher.
        self.watch_seen.store(NOT_SEEN, Ordering::SeqCst);
        now
    }

    /// The flow's state change log now (see [`StateLog`]).
    pub fn state_log(&self) -> StateLog {
        self.map.state_log()
    }

    /// Spin before sleeping as `spin` says (from now on, both directions);
    /// [`SpinPolicy::default`] at first.
    pub fn set_spin(&self, spin: SpinPolicy) {
        lock(&self.rx).spinner = Spinner::new(spin);
        lock(&self.tx).spinner = Spinner::new(spin);
    }

    /// The pollable fd: readable on a new SDU or a state change.
    pub fn rx_fd(&self) -> BorrowedFd<'_> {
        self.rx_wake.as_fd()
    }

    pub fn geometry(&self) -> RingGeometry {
        self.map.geom
    }

    /// SDUs waiting in the (rx, tx) rings now: a snapshot, clamped to the
    /// ring size (a count read from shared memory is only a hint). While a
    /// reader is inside a burst, rx may count up to 32 SDUs it has read and
    /// not yet handed back.
    pub fn queue_lens(&self) -> (usize, usize) {
        let used = |dir: Dir| {
            let c = self.map.ctrl(dir);
            let head = c.head.load(Ordering::Acquire);
            let tail = c.tail.load(Ordering::Acquire);
            head.wrapping_sub(tail).min(self.map.geom.slots) as usize
        };
        (used(Dir::Rx), used(Dir::Tx))
    }

    #[cfg(test)]
    pub(super) fn map(&self) -> &ShmMap {
        &self.map
    }

    #[cfg(test)]
    pub(super) fn tx_fd(&self) -> BorrowedFd<'_> {
        self.tx_wake.as_fd()
    }
}
