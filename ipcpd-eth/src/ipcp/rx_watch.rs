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

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use std::os::fd::BorrowedFd;

/// Frames one receive pass must read before the socket leaves the epoll
/// set. Leaving and coming back cost two `epoll_ctl` calls per sleep, which
/// pay off only over a run of frames; a lone frame (a ping, a keep-alive)
/// stays below this and costs no more syscalls than before. 4 rather than
/// more: a receiver that keeps up reads a flood a few frames per pass, and
/// with 16 it stayed watched through most of it (decision 0040).
pub(super) const UNWATCH_AFTER: usize = 4;

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
}

impl RxWatch {
    /// A socket just added to the epoll set.
    pub(super) fn new(ring: bool) -> RxWatch {
        RxWatch {
            ring,
            watched: true,
            empty: true,
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

    /// A receive pass read `n` frames.
    pub(super) fn received(&mut self, n: usize) -> Change {
        self.empty = n == 0;
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
            log::debug!("packet socket: epoll {change:?} failed: {e}");
            self.watched = change == Change::Unwatch;
        }
    }
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
