//! Whether an event loop's packet socket is in its epoll set.
//!
//! A TPACKET_V2 receive ring signals its socket for every frame: with the
//! socket in an epoll set, each frame takes the socket's wait-queue lock and
//! runs epoll's callback, in the context of whoever delivered the frame (on
//! veth, the *sending* process), even while this loop is awake and reading.
//! So while the loop is busy receiving, the socket leaves the set and the
//! loop looks at the ring every turn without an event (an empty ring costs a
//! memory read); it goes back right before the loop would block.
//!
//! No wake-up is lost: `EPOLL_CTL_ADD` polls the socket, so a frame that
//! landed while it was out (also one between the last look and the add) is
//! reported by the very next wait; one that lands after the add runs the
//! callback as usual. Only backends whose receive is a ring in memory take
//! part ([`FrameIo::rx_is_ring`](crate::backend::FrameIo::rx_is_ring)): raw
//! with its TPACKET ring, and a lone AF_XDP socket (signalled at every
//! flush of the driver's poll, which on veth is about every frame); a
//! recvmmsg fallback, or AF_XDP sockets behind an epoll fd of their own,
//! stay in the set for good.
//!
//! When a busy loop finds the ring empty it does not go back into the set
//! at once: it first *lingers*, up to [`LINGER_ROUNDS`] short timed sleeps
//! of [`LINGER`] with the socket still out, and reads the ring after each.
//! A flood that goes on finds frames there and never costs its sender a
//! wake-up of this loop (on veth, the socket's wake-up runs in the sender's
//! context, frame by frame, while this loop sleeps with the socket in the
//! set); only a flood that stopped brings the socket back (decision 0043).
//! A lone frame never starts a linger: it does not take the socket out.

use log::debug;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::os::fd::{AsFd, BorrowedFd};

/// Frames one receive pass must read before the socket leaves the epoll
/// set. Leaving and coming back cost two `epoll_ctl` calls per sleep, which
/// pay off only over a run of frames; a lone frame (a ping, a keep-alive)
/// stays below this and costs no more syscalls than before. 4 rather than
/// more: a receiver that keeps up reads a flood a few frames per pass, and
/// with 16 it stayed watched through most of it (decision 0040).
pub(super) const UNWATCH_AFTER: usize = 4;

/// One timed sleep of a lingering loop: what a frame of an ongoing flood
/// may wait beyond its turn. The receive ring holds far more than a flood
/// brings in this time (4 096 frames; some 300 at 1.5 M frames/s).
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_micros(200);
/// Empty timed sleeps before the socket goes back into the set.
pub(super) const LINGER_ROUNDS: u8 = 3;

/// What the loop does to its epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Keep,
    /// `EPOLL_CTL_DEL` the socket.
    Unwatch,
    /// `EPOLL_CTL_ADD` the socket.
    Watch,
}

/// The watched state of one packet socket (a fresh socket starts watched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RxWatch {
    /// The backend receives through a ring: looking is free.
    ring: bool,
    watched: bool,
    /// The last receive pass read nothing.
    empty: bool,
    /// Timed sleeps since the ring was last found with frames.
    lingered: u8,
}

impl RxWatch {
    /// A socket just added to the epoll set.
    pub(super) fn new(ring: bool) -> RxWatch {
        RxWatch {
            ring,
            watched: true,
            empty: true,
            lingered: 0,
        }
    }

    /// Read the socket this turn even without an event: it is out of the set.
    pub(super) fn look_anyway(&self) -> bool {
        !self.watched
    }

    /// The loop must not block: the socket is out of the set and the last
    /// pass found frames (more are likely waiting; a pass finding none
    /// lets the loop sleep).
    pub(super) fn busy(&self) -> bool {
        !self.watched && !self.empty
    }

    /// The loop, about to sleep, may take a timed sleep of [`LINGER`] with
    /// the socket out of the set instead ([`RxWatch::lingers`]), rather
    /// than [`RxWatch::before_sleep`].
    pub(super) fn may_linger(&self) -> bool {
        !self.watched && self.lingered < LINGER_ROUNDS
    }

    /// The loop takes a timed sleep with the socket out of the set.
    pub(super) fn lingers(&mut self) {
        self.lingered += 1;
    }

    /// A receive pass read `n` frames.
    pub(super) fn received(&mut self, n: usize) -> Change {
        self.empty = n == 0;
        if n > 0 {
            self.lingered = 0;
        }
        if self.watched && self.ring && n >= UNWATCH_AFTER {
            self.watched = false;
            return Change::Unwatch;
        }
        Change::Keep
    }

    /// The loop is about to wait for events, and that wait may sleep.
    pub(super) fn before_sleep(&mut self) -> Change {
        if !self.watched {
            self.watched = true;
            self.lingered = 0;
            return Change::Watch;
        }
        Change::Keep
    }

    /// Carry out `change` on `epoll` for `fd` (events under `token`). A
    /// failed call leaves the state as it was before it: a socket that could
    /// not go back stays out, is looked at every turn and added again before
    /// the next wait.
    pub(super) fn apply(&mut self, change: Change, epoll: &Epoll, fd: BorrowedFd<'_>, token: u64) {
        let r = match change {
            Change::Keep => return,
            Change::Unwatch => epoll.delete(fd),
            Change::Watch => epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token)),
        };
        if let Err(e) = r {
            debug!("packet socket: epoll {change:?} failed: {e}");
            self.watched = change == Change::Unwatch;
        }
    }
}

/// A one-shot timer in `epoll` under `token`, edge-triggered: arming it
/// again resets its expiry count, so it is never read. `None` (and a debug
/// line) if the kernel refuses one: the loop then never lingers.
pub(super) fn linger_timer(epoll: &Epoll, token: u64) -> Option<TimerFd> {
    let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
    let t = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)
        .inspect_err(|e| debug!("no linger timer: {e}"))
        .ok()?;
    let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, token);
    epoll
        .add(t.as_fd(), ev)
        .inspect_err(|e| debug!("no linger timer: {e}"))
        .ok()?;
    Some(t)
}

/// Arm `timer` for one linger if `watch` may linger (see
/// `Ipcp::linger`); false if the loop must watch its socket instead.
pub(super) fn start_linger(timer: Option<&TimerFd>, watch: &mut RxWatch) -> bool {
    let Some(t) = timer else {
        return false;
    };
    if !watch.may_linger() {
        return false;
    }
    let at = Expiration::OneShot(TimeSpec::from_duration(LINGER));
    if let Err(e) = t.set(at, TimerSetTimeFlags::empty()) {
        debug!("linger timer: {e}");
        return false;
    }
    watch.lingers();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::epoll::{EpollCreateFlags, EpollTimeout};
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::os::fd::AsFd;

    #[test]
    fn a_lone_frame_keeps_the_socket_watched() {
        let mut w = RxWatch::new(true);
        for n in [1, 0, UNWATCH_AFTER - 1, 0] {
            assert_eq!(w.received(n), Change::Keep);
            assert!(!w.look_anyway() && !w.busy());
            assert_eq!(w.before_sleep(), Change::Keep);
        }
    }

    #[test]
    fn a_full_pass_unwatches_until_the_ring_is_found_empty_before_a_sleep() {
        let mut w = RxWatch::new(true);
        assert_eq!(w.received(UNWATCH_AFTER), Change::Unwatch);
        assert!(w.look_anyway() && w.busy());
        // Busy: the loop does not sleep (no before_sleep) and reads again.
        assert_eq!(w.received(3), Change::Keep);
        assert!(w.busy());
        // The ring is empty, but the loop has other work (no sleep): stay out.
        assert_eq!(w.received(0), Change::Keep);
        assert!(w.look_anyway() && !w.busy());
        // About to sleep: back in the set, and events decide again.
        assert_eq!(w.before_sleep(), Change::Watch);
        assert!(!w.look_anyway() && !w.busy());
        assert_eq!(w.before_sleep(), Change::Keep);
    }

    #[test]
    fn an_empty_ring_is_lingered_on_before_the_socket_goes_back() {
        let mut w = RxWatch::new(true);
        assert!(!w.may_linger(), "a watched socket never lingers");
        assert_eq!(w.received(UNWATCH_AFTER), Change::Unwatch);
        // Found empty: timed sleeps with the socket out, read after each.
        for _ in 0..LINGER_ROUNDS - 1 {
            assert_eq!(w.received(0), Change::Keep);
            assert!(w.may_linger() && w.look_anyway());
            w.lingers();
        }
        // Frames again: the count starts over.
        assert_eq!(w.received(2), Change::Keep);
        for _ in 0..LINGER_ROUNDS {
            assert_eq!(w.received(0), Change::Keep);
            assert!(w.may_linger());
            w.lingers();
        }
        // The flood stopped: back in the set before an untimed sleep.
        assert_eq!(w.received(0), Change::Keep);
        assert!(!w.may_linger());
        assert_eq!(w.before_sleep(), Change::Watch);
        assert!(!w.may_linger() && !w.look_anyway());
        // The next flood lingers its full count again.
        assert_eq!(w.received(UNWATCH_AFTER), Change::Unwatch);
        assert_eq!(w.received(0), Change::Keep);
        assert!(w.may_linger());
    }

    #[test]
    fn a_socket_without_a_ring_is_always_watched() {
        let mut w = RxWatch::new(false);
        assert_eq!(w.received(10 * UNWATCH_AFTER), Change::Keep);
        assert!(!w.look_anyway() && !w.busy());
        assert_eq!(w.before_sleep(), Change::Keep);
    }

    #[test]
    fn a_failed_call_leaves_the_state_as_it_was() {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        let mut w = RxWatch::new(true);
        // Not in the set: the delete fails, the socket counts as watched.
        let c = w.received(UNWATCH_AFTER);
        w.apply(c, &epoll, fd.as_fd(), 7);
        assert!(!w.look_anyway());
    }

    /// What the linger timer rests on: an edge-triggered timerfd reports each
    /// expiry once, and arming it again (never read) makes it fire again.
    #[test]
    fn the_linger_timer_fires_once_per_arming_without_being_read() {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let timer = linger_timer(&epoll, 9).expect("timerfd");
        let mut w = RxWatch::new(true);
        let mut events = [EpollEvent::empty(); 4];
        // A watched socket never lingers: the timer stays unarmed.
        assert!(!start_linger(Some(&timer), &mut w));
        assert_eq!(
            epoll.wait(&mut events, EpollTimeout::from(20u16)).unwrap(),
            0
        );
        assert_eq!(w.received(UNWATCH_AFTER), Change::Unwatch);
        assert_eq!(w.received(0), Change::Keep);
        for _ in 0..LINGER_ROUNDS {
            assert!(start_linger(Some(&timer), &mut w));
            assert_eq!(
                epoll
                    .wait(&mut events, EpollTimeout::from(1000u16))
                    .unwrap(),
                1
            );
            assert_eq!(events[0].data(), 9);
            // Reported once, though its count was never read.
            assert_eq!(epoll.wait(&mut events, EpollTimeout::ZERO).unwrap(), 0);
        }
        // The rounds are used up: no more timed sleeps, the socket goes back.
        assert!(!start_linger(Some(&timer), &mut w));
        assert!(!start_linger(None, &mut w));
        assert_eq!(w.before_sleep(), Change::Watch);
    }

    /// What the lost-wake-up argument rests on: a file that became readable
    /// while out of the set is reported by the first wait after the add.
    #[test]
    fn readiness_while_out_of_the_set_is_reported_after_the_add() {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        epoll
            .add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 7))
            .unwrap();
        let mut w = RxWatch::new(true);
        let c = w.received(UNWATCH_AFTER);
        w.apply(c, &epoll, fd.as_fd(), 7);
        fd.write(1).unwrap();
        let mut events = [EpollEvent::empty(); 4];
        assert_eq!(epoll.wait(&mut events, EpollTimeout::ZERO).unwrap(), 0);
        assert_eq!(w.received(0), Change::Keep);
        let c = w.before_sleep();
        assert_eq!(c, Change::Watch);
        w.apply(c, &epoll, fd.as_fd(), 7);
        assert_eq!(epoll.wait(&mut events, EpollTimeout::ZERO).unwrap(), 1);
        assert_eq!(events[0].data(), 7);
    }
}
