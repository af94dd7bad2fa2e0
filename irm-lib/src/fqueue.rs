//! Event sets: one thread watches many flows (the model's `fqueue`).
//!
//! A [`FlowSet`] holds flows and [`FlowSet::wait`] returns what happened to
//! them as [`FlowEvent`]s:
//!
//! * [`EventKind::Pkt`] — SDUs wait in the flow's receive ring. **Level-
//!   triggered**: every `wait` reports it again while any SDU is left, so an
//!   application may read one SDU per event (as with the model's fqueue,
//!   which queues one PKT per arrival) or read until `Error::Again`.
//! * [`EventKind::Down`], [`EventKind::Peer`], [`EventKind::Up`] — the flow's
//!   state word changed, compared with the state this set last reported for
//!   the flow (ALLOCATED when it was added, so a flow added while already
//!   down reports DOWN at once). New state DOWN → `Down`, PEER → `Peer`,
//!   ALLOCATED → `Up`. Each change is reported once, in order, also a flap
//!   that returned to the reported state before the set looked (PEER → UP →
//!   PEER reports `Up`, then `Peer`): the flow keeps a log of its last 24
//!   state changes ([`crate::shm::StateLog`]) beside its state word.
//! * [`EventKind::Dealloc`] — this process deallocated the flow
//!   ([`Flow::dealloc`] or dropping it); the set has let go of it. Taking a
//!   flow out with [`FlowSet::remove`] reports nothing.
//!
//! For one flow in one `wait`, a state event comes before `Pkt`: SDUs that
//! arrived before a DOWN are still readable, and reads return them before
//! they fail with `FlowDown`.
//!
//! **Interest.** [`Interest::All`] (what [`FlowSet::add`] uses) is for the
//! thread that reads the flows. [`Interest::Liveness`] leaves out `Pkt`: for a
//! thread that only watches liveness while other threads read the flows,
//! blocking reads included.
//!
//! **How it never loses a wake-up.** Each flow's rx wake pipe is in the
//! set's epoll instance, edge-triggered. Before the set sleeps it has looked
//! at every flow that could have news: it arms the flow's rx wake-up *for the
//! set* (the IPCP then signals on the next SDU), fences, and reads the ring
//! and the state word. The set drains a flow's pipe only when no reader is
//! inside a read of it, so it never eats the wake-up of a reader blocked on
//! the flow; a reader that drains one passes it on to the set (see `shm`'s
//! watcher notes), and that wakes the set through its own eventfd. A flow is
//! in at most one set at a time.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::proto::FlowState;
use crate::shm::{AppEnd, RxWatch, WatchNotice};

/// What happened to a flow (the model's FLOW_PKT, FLOW_DOWN, FLOW_UP,
/// FLOW_PEER, FLOW_DEALLOC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// SDUs wait to be read (reported while any is left).
    Pkt,
    /// The flow is down: reads and writes fail with `FlowDown` (EFLOWDOWN).
    Down,
    /// The flow is allocated again after PEER (or DOWN).
    Up,
    /// The peer stopped answering: reads and writes fail with `FlowPeer`
    /// (EFLOWPEER) until it comes back (`Up`).
    Peer,
    /// This process deallocated the flow; it is no longer in the set.
    Dealloc,
}

/// One event of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowEvent {
    pub flow_id: u32,
    pub kind: EventKind,
}

/// Which events a flow in a set reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interest {
    /// Everything: `Pkt`, `Down`, `Peer`, `Up`, `Dealloc`.
    #[default]
    All,
    /// `Down`, `Peer`, `Up` and `Dealloc` only.
    Liveness,
}

/// Epoll token of the set's own eventfd; flows get tokens from 1 up.
const WAKER: u64 = 0;
/// Epoll events fetched per system call.
const EPOLL_BATCH: usize = 256;

/// What flows told the set while it was not looking (written by their
/// readers' threads, taken by `wait`).
#[derive(Debug, Default)]
struct Notices {
    woken: Vec<u64>,
    closed: Vec<u64>,
    /// The set sleeps in epoll_wait: a notice must signal the waker.
    sleeping: bool,
}

#[derive(Debug)]
struct Shared {
    notices: Mutex<Notices>,
    waker: OwnedFd,
}

/// The watcher registered with one flow's [`AppEnd`].
#[derive(Debug)]
struct Watcher {
    token: u64,
    shared: Arc<Shared>,
}

impl RxWatch for Watcher {
    fn notice(&self, notice: WatchNotice) {
        let mut n = lock(&self.shared.notices);
        match notice {
            WatchNotice::Wakeup => n.woken.push(self.token),
            WatchNotice::Closed => n.closed.push(self.token),
        }
        // One signal per sleep is enough; the set takes every notice when it wakes.
        if std::mem::take(&mut n.sleeping) {
            signal(self.shared.waker.as_fd());
        }
    }
}

#[derive(Debug)]
struct Member {
    flow_id: u32,
    /// Keeps the rx fd open until it is out of the epoll set: epoll keys on
    /// the open file, which a dup of our fd (or a forked child) may keep
    /// open, so closing our fd first could leave a registration we could no
    /// longer remove.
    end: Arc<AppEnd>,
    watch: Arc<dyn RxWatch>,
    interest: Interest,
    /// The state this set last reported (ALLOCATED at first).
    reported: FlowState,
    /// The flow's state change log as this set last saw it.
    seen: crate::shm::StateLog,
    /// In `FlowSet::queue` already.
    queued: bool,
}

/// A set of flows watched by one thread. See the [module docs](self) for
/// what each event means and when it is reported.
#[derive(Debug)]
pub struct FlowSet {
    epoll: Epoll,
    shared: Arc<Shared>,
    members: HashMap<u64, Member>,
    by_id: HashMap<u32, u64>,
    next_token: u64,
    /// Flows to look at before sleeping.
    queue: Vec<u64>,
    /// Flows that reported PKT: the next wait looks at them again (level).
    again: Vec<u64>,
    epoll_events: Vec<EpollEvent>,
    /// Scratch for notices taken from `shared`, kept for its capacity.
    taken: Notices,
}

impl FlowSet {
    pub fn new() -> Result<FlowSet> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let waker: OwnedFd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?
                .into();
        epoll.add(&waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))?;
        Ok(FlowSet {
            epoll,
            shared: Arc::new(Shared {
                notices: Mutex::new(Notices::default()),
                waker,
            }),
            members: HashMap::new(),
            by_id: HashMap::new(),
            next_token: WAKER + 1,
            queue: Vec::new(),
            again: Vec::new(),
            epoll_events: vec![EpollEvent::empty(); EPOLL_BATCH],
            taken: Notices::default(),
        })
    }

    /// Watch `flow` for every event ([`Interest::All`]).
    pub fn add(&mut self, flow: &Flow) -> Result<()> {
        self.add_with(flow, Interest::All)
    }

    /// Watch `flow` for the events `interest` names. Refused if the flow is
    /// in this or another set already. The first `wait` afterwards reports
    /// what the flow holds now (SDUs waiting, a state other than ALLOCATED).
    pub fn add_with(&mut self, flow: &Flow, interest: Interest) -> Result<()> {
        self.insert(flow.flow_id(), flow.app_end().clone(), interest)
    }

    fn insert(&mut self, flow_id: u32, end: Arc<AppEnd>, interest: Interest) -> Result<()> {
        if self.by_id.contains_key(&flow_id) {
            return Err(Error::Invalid(format!(
                "flow {flow_id} is already in this set"
            )));
        }
        let token = self.next_token;
        self.next_token += 1;
        let watch: Arc<dyn RxWatch> = Arc::new(Watcher {
            token,
            shared: self.shared.clone(),
        });
        end.set_watch(watch.clone(), interest == Interest::All)?;
        // Changes from now on are news; the state now is compared with
        // ALLOCATED at the first look.
        let end_log = end.state_log();
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, token);
        if let Err(e) = self.epoll.add(end.rx_fd(), ev) {
            end.clear_watch(&watch);
            return Err(e.into());
        }
        self.members.insert(
            token,
            Member {
                flow_id,
                end,
                watch,
                interest,
                reported: FlowState::Allocated,
                seen: end_log,
                queued: false,
            },
        );
        self.by_id.insert(flow_id, token);
        self.enqueue(token);
        Ok(())
    }

    /// Stop watching a flow; reports nothing. False if it was not in the set
    /// (never added, removed, or already reported as DEALLOC).
    pub fn remove(&mut self, flow_id: u32) -> bool {
        let Some(token) = self.by_id.get(&flow_id).copied() else {
            return false;
        };
        if let Some(m) = self.members.remove(&token) {
            self.forget(&m, token);
        }
        true
    }

    pub fn contains(&self, flow_id: u32) -> bool {
        self.by_id.contains_key(&flow_id)
    }

    /// Number of flows in the set.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Wait until at least one event, or `timeout` (None: for ever; zero:
    /// just look). Returns the events, empty on timeout.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<FlowEvent>> {
        let mut events = Vec::new();
        self.wait_into(&mut events, timeout)?;
        Ok(events)
    }

    /// Like [`FlowSet::wait`], appending to `events` (whose allocation a
    /// loop can reuse); returns how many were appended.
    pub fn wait_into(
        &mut self,
        events: &mut Vec<FlowEvent>,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        let before = events.len();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        for token in std::mem::take(&mut self.again) {
            self.enqueue(token);
        }
        let mut polled = false;
        loop {
            self.take_notices(events);
            self.look(events);
            if events.len() > before {
                return Ok(events.len() - before);
            }
            let epoll_timeout = match deadline {
                None => EpollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() && polled {
                        return Ok(0);
                    }
                    epoll_timeout(left)
                }
            };
            polled = true;
            self.sleep(epoll_timeout)?;
        }
    }

    /// Queue a flow to be looked at (once, however many times it is named).
    fn enqueue(&mut self, token: u64) {
        if let Some(m) = self.members.get_mut(&token) {
            if !m.queued {
                m.queued = true;
                self.queue.push(token);
            }
        }
    }

    /// Take the flows' notices: DEALLOC for closed flows, a look for woken ones.
    fn take_notices(&mut self, events: &mut Vec<FlowEvent>) {
        {
            let mut n = lock(&self.shared.notices);
            std::mem::swap(&mut n.woken, &mut self.taken.woken);
            std::mem::swap(&mut n.closed, &mut self.taken.closed);
        }
        let mut closed = std::mem::take(&mut self.taken.closed);
        for &token in &closed {
            if let Some(m) = self.members.remove(&token) {
                self.forget(&m, token);
                events.push(FlowEvent {
                    flow_id: m.flow_id,
                    kind: EventKind::Dealloc,
                });
            }
        }
        closed.clear();
        self.taken.closed = closed;
        let mut woken = std::mem::take(&mut self.taken.woken);
        for &token in &woken {
            self.enqueue(token);
        }
        woken.clear();
        self.taken.woken = woken;
    }

    /// Look at every queued flow: arm it for the set, then report what changed.
    fn look(&mut self, events: &mut Vec<FlowEvent>) {
        let mut queue = std::mem::take(&mut self.queue);
        for &token in &queue {
            let Some(m) = self.members.get_mut(&token) else {
                continue;
            };
            m.queued = false;
            let now = m.end.watch_check(m.interest == Interest::All);
            // Every state entered since the last look (a flap included),
            // then the state word (newer than the log, or DOWN at hang-up).
            let entered = now.changes.since(m.seen).chain([now.state]);
            m.seen = now.changes;
            for state in entered {
                if state != m.reported {
                    m.reported = state;
                    events.push(FlowEvent {
                        flow_id: m.flow_id,
                        kind: state_event(state),
                    });
                }
            }
            if now.has_data {
                events.push(FlowEvent {
                    flow_id: m.flow_id,
                    kind: EventKind::Pkt,
                });
                self.again.push(token);
            }
        }
        queue.clear();
        self.queue = queue;
    }

    /// Sleep in epoll_wait (unless a notice is already there); queue the
    /// flows it names.
    fn sleep(&mut self, timeout: EpollTimeout) -> Result<()> {
        {
            let mut n = lock(&self.shared.notices);
            if !n.woken.is_empty() || !n.closed.is_empty() {
                return Ok(());
            }
            n.sleeping = true;
        }
        crate::shm::note_sleep();
        let got = self.epoll.wait(&mut self.epoll_events, timeout);
        lock(&self.shared.notices).sleeping = false;
        let ready = match got {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for i in 0..ready {
            match self.epoll_events[i].data() {
                // Notices are taken before the next look; only clear the signal.
                WAKER => drain(self.shared.waker.as_fd()),
                token => self.enqueue(token),
            }
        }
        Ok(())
    }

    /// Take a member out of epoll and out of its flow (its fd is still open).
    fn forget(&mut self, m: &Member, token: u64) {
        if let Err(e) = self.epoll.delete(m.end.rx_fd()) {
            log::warn!("FlowSet: removing flow {} from epoll: {e}", m.flow_id);
        }
        if self.by_id.get(&m.flow_id) == Some(&token) {
            self.by_id.remove(&m.flow_id);
        }
        m.end.clear_watch(&m.watch);
    }
}

impl Drop for FlowSet {
    fn drop(&mut self) {
        for m in self.members.values() {
            m.end.clear_watch(&m.watch);
        }
    }
}

fn state_event(s: FlowState) -> EventKind {
    match s {
        FlowState::Allocated => EventKind::Up,
        FlowState::Down => EventKind::Down,
        FlowState::Peer => EventKind::Peer,
    }
}

/// Milliseconds, rounded up so a short timeout never becomes a busy poll.
fn epoll_timeout(left: Duration) -> EpollTimeout {
    let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
}

fn signal(efd: std::os::fd::BorrowedFd<'_>) {
    crate::shm::note_signal();
    // EAGAIN means the counter is near overflow, i.e. already readable.
    let _ = nix::unistd::write(efd, &1u64.to_ne_bytes());
}

fn drain(efd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 8];
    // EAGAIN: already drained, which is fine.
    let _ = nix::unistd::read(efd.as_raw_fd(), &mut b);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RingGeometry;
    use crate::shm::{create, IpcpEnd, ShmMap};

    const GEOM: RingGeometry = RingGeometry {
        slots: 8,
        slot_size: 32,
    };

    /// An application end and an IPCP end of one fresh flow.
    fn pair() -> (Arc<AppEnd>, IpcpEnd) {
        let fds = create(GEOM).unwrap();
        let dup = |f: &OwnedFd| f.try_clone().unwrap();
        let [_, rx, tx, ipcp_w] = fds.for_app().map(dup);
        let app = AppEnd::new(
            ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(),
            rx,
            tx,
            ipcp_w,
        );
        let [_, ipcp_r, rx_w, tx_w] = fds.for_ipcp().map(dup);
        let ipcp = IpcpEnd::new(
            ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(),
            ipcp_r,
            rx_w,
            tx_w,
        );
        (Arc::new(app), ipcp)
    }

    fn ev(flow_id: u32, kind: EventKind) -> FlowEvent {
        FlowEvent { flow_id, kind }
    }

    #[test]
    fn a_flow_the_set_has_forgotten_leaves_no_epoll_registration() {
        let mut set = FlowSet::new().unwrap();
        let (app, ipcp) = pair();
        set.insert(7, app.clone(), Interest::All).unwrap();
        assert!(set.remove(7));
        // Out of epoll: a signal on its fd no longer wakes the set ...
        ipcp.push_rx(b"x").unwrap();
        ipcp.set_state(FlowState::Down);
        assert_eq!(set.wait(Some(Duration::from_millis(20))).unwrap(), []);
        // ... and its watcher is gone, so it can join again.
        set.insert(7, app, Interest::All).unwrap();
        assert_eq!(
            set.wait(Some(Duration::ZERO)).unwrap(),
            [ev(7, EventKind::Down), ev(7, EventKind::Pkt)]
        );
    }

    #[test]
    fn each_new_sdu_after_a_drained_ring_wakes_the_set() {
        let (app, ipcp) = pair();
        let mut set = FlowSet::new().unwrap();
        set.insert(1, app.clone(), Interest::All).unwrap();
        assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []); // armed for the set
                                                                 // The reader's own arm (empty read) and reads do not take the set's
                                                                 // wake-up away: each SDU after a drained ring wakes the set.
        let mut buf = [0u8; 32];
        assert_eq!(app.read(&mut buf, None, true), Err(Error::Again));
        ipcp.push_rx(b"a").unwrap();
        assert_eq!(
            set.wait(Some(Duration::from_secs(1))).unwrap(),
            [ev(1, EventKind::Pkt)]
        );
        assert_eq!(app.read(&mut buf, None, true), Ok(1));
        assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
        ipcp.push_rx(b"b").unwrap();
        assert_eq!(
            set.wait(Some(Duration::from_secs(1))).unwrap(),
            [ev(1, EventKind::Pkt)]
        );
    }

    #[test]
    fn a_flap_between_two_waits_is_reported() {
        let (app, ipcp) = pair();
        let mut set = FlowSet::new().unwrap();
        set.insert(1, app.clone(), Interest::All).unwrap();
        assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
        let wait = |set: &mut FlowSet| set.wait(Some(Duration::from_secs(5))).unwrap();
        ipcp.set_state(FlowState::Peer);
        assert_eq!(wait(&mut set), [ev(1, EventKind::Peer)]);
        // PEER → UP → PEER while the set is not looking.
        ipcp.set_state(FlowState::Allocated);
        ipcp.set_state(FlowState::Peer);
        assert_eq!(
            wait(&mut set),
            [ev(1, EventKind::Up), ev(1, EventKind::Peer)]
        );
        // UP → PEER → UP, and a state set again without a change (nothing).
        ipcp.set_state(FlowState::Allocated);
        assert_eq!(wait(&mut set), [ev(1, EventKind::Up)]);
        ipcp.set_state(FlowState::Peer);
        ipcp.set_state(FlowState::Allocated);
        ipcp.set_state(FlowState::Allocated);
        assert_eq!(
            wait(&mut set),
            [ev(1, EventKind::Peer), ev(1, EventKind::Up)]
        );
        assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
    }

    #[test]
    fn a_flap_whose_wakeup_a_reader_ate_still_reaches_a_liveness_set() {
        let (app, ipcp) = pair();
        let mut set = FlowSet::new().unwrap();
        set.insert(1, app.clone(), Interest::Liveness).unwrap();
        ipcp.set_state(FlowState::Peer);
        assert_eq!(
            set.wait(Some(Duration::from_secs(5))).unwrap(),
            [ev(1, EventKind::Peer)]
        );
        // The flap's signals are drained by the flow's reader (another
        // thread's event loop arming its wake-up) before the set looks.
        ipcp.set_state(FlowState::Allocated);
        ipcp.set_state(FlowState::Peer);
        assert!(!app.arm_rx_wakeup());
        assert_eq!(
            set.wait(Some(Duration::from_secs(5))).unwrap(),
            [ev(1, EventKind::Up), ev(1, EventKind::Peer)]
        );
    }

    #[test]
    fn epoll_timeout_rounds_up() {
        assert_eq!(i32::from(epoll_timeout(Duration::from_micros(1))), 1);
        assert_eq!(i32::from(epoll_timeout(Duration::from_millis(5))), 5);
        assert_eq!(i32::from(epoll_timeout(Duration::ZERO)), 0);
        assert_eq!(
            i32::from(epoll_timeout(Duration::from_secs(u64::MAX))),
            i32::MAX
        );
    }
}
