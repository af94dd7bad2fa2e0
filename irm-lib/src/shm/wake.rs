//! Wake-up pipes and the sleeper/waker handshake on the shared flags.
//!
//! A wake-up is one byte written to a pipe whose write end only the waker's
//! side holds. Every end is non-blocking and each side owns its own open
//! file description (see the module docs of [`super`]), so no call here can
//! block on something the other side controls.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;

use crate::error::Result;

/// Pipe capacity asked for: one page (the kernel's minimum). A wake-up is
/// one byte, and a smaller pipe costs the kernel less per flow.
const PIPE_SIZE: i32 = 4096;

/// Bytes a drain reads per call; at most [`DRAIN_READS`] calls per drain, so
/// a writer that never stops cannot hold the reader in a drain loop.
const DRAIN_CHUNK: usize = 256;
const DRAIN_READS: usize = 16;

/// A new wake-up pipe: (read end, write end), both O_CLOEXEC|O_NONBLOCK,
/// shrunk to one page.
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // Best effort: a pipe that keeps its default size works the same.
    let _ = fcntl(r.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

/// Make sure this process's description of `fd` is non-blocking (a pipe end
/// received from irmd already is; a caller could have changed its own).
pub(super) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Wake-up work this process did, for benchmarks: see [`wake_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WakeStats {
    /// Wake-up system calls made: bytes written to a flow's wake pipe (by
    /// an IPCP, irmd or an application) and signals of an event set's own
    /// eventfd (a reader passing a wake-up on to a `FlowSet`).
    pub signals_sent: u64,
    /// Times this process went to sleep waiting for a wake-up: a blocked
    /// read or write waiting on its pipe, a `FlowSet` in `epoll_wait`, and
    /// what an event loop outside this library reports with [`note_sleep`]
    /// (the IPCP's loop).
    pub sleeps: u64,
    /// Bounded spins ([`super::SpinPolicy`]) that found work before their
    /// time was up: each is a sleep (and the other side's wake-up) saved.
    pub spin_hits: u64,
    /// Spins that found nothing and went to sleep after all.
    pub spin_misses: u64,
}

impl WakeStats {
    /// What happened between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &WakeStats) -> WakeStats {
        WakeStats {
            signals_sent: self.signals_sent.wrapping_sub(earlier.signals_sent),
            sleeps: self.sleeps.wrapping_sub(earlier.sleeps),
            spin_hits: self.spin_hits.wrapping_sub(earlier.spin_hits),
            spin_misses: self.spin_misses.wrapping_sub(earlier.spin_misses),
        }
    }
}

/// Process-wide counters behind [`wake_stats`] (relaxed: each is touched
/// only next to a system call or a spin, never per SDU).
pub(super) static SIGNALS_SENT: AtomicU64 = AtomicU64::new(0);
static SLEEPS: AtomicU64 = AtomicU64::new(0);
pub(super) static SPIN_HITS: AtomicU64 = AtomicU64::new(0);
pub(super) static SPIN_MISSES: AtomicU64 = AtomicU64::new(0);

/// This process's wake-up work since it started: every flow, every thread.
/// A benchmark reads it before and after a run ([`WakeStats::since`]) and
/// divides by the SDUs moved.
pub fn wake_stats() -> WakeStats {
    WakeStats {
        signals_sent: SIGNALS_SENT.load(Ordering::Relaxed),
        sleeps: SLEEPS.load(Ordering::Relaxed),
        spin_hits: SPIN_HITS.load(Ordering::Relaxed),
        spin_misses: SPIN_MISSES.load(Ordering::Relaxed),
    }
}

/// Count one sleep made outside this library (an event loop's
/// `epoll_wait` that may block), so [`wake_stats`] covers it.
pub fn note_sleep() {
    SLEEPS.fetch_add(1, Ordering::Relaxed);
}

/// Count one wake-up system call made outside this module (an event set
/// signalling its eventfd).
pub fn note_signal() {
    SIGNALS_SENT.fetch_add(1, Ordering::Relaxed);
}

/// Write one wake-up byte. A full pipe (EAGAIN) means one is already
/// pending; a pipe without reader (EPIPE) has nobody to wake.
pub(super) fn signal(w: BorrowedFd<'_>) {
    SIGNALS_SENT.fetch_add(1, Ordering::Relaxed);
    loop {
        match nix::unistd::write(w, &[1u8]) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// What a drain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// Nothing was pending.
    Nothing,
    /// At least one wake-up was consumed.
    Woken,
    /// End of file: every write end is closed, nobody can wake us again.
    Hangup,
}

/// Consume pending wake-ups (bounded; see [`DRAIN_READS`]).
pub(super) fn drain(r: BorrowedFd<'_>) -> Drained {
    let mut buf = [0u8; DRAIN_CHUNK];
    let mut got = Drained::Nothing;
    for _ in 0..DRAIN_READS {
        match nix::unistd::read(r.as_raw_fd(), &mut buf) {
            Ok(0) => return Drained::Hangup,
            Ok(n) => {
                got = Drained::Woken;
                if n < buf.len() {
                    break;
                }
            }
            Err(Errno::EINTR) => {}
            // EAGAIN: empty. Anything else: nothing we could consume.
            Err(_) => break,
        }
    }
    got
}

/// Is every write end of the pipe `r` reads closed? (A look, not a read.)
pub(super) fn is_hung_up(r: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(r, PollFlags::POLLIN)];
    matches!(
        ppoll(
            &mut fds,
            Some(TimeSpec::from(std::time::Duration::ZERO)),
            None
        ),
        Ok(1)
    ) && fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// Wait until `r` is readable (true) or `deadline` passes (false). End of
/// file also counts as readable: the caller's drain reports it.
pub(super) fn wait_readable(r: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool> {
    note_sleep();
    loop {
        let timeout = deadline.map(|d| TimeSpec::from(d.saturating_duration_since(Instant::now())));
        let mut fds = [PollFd::new(r, PollFlags::POLLIN)];
        match ppoll(&mut fds, timeout, None) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The application's reader armed the rx sleeping flag.
pub(super) const READER_ARMED: u32 = 1;
/// A watcher (event set) armed the rx sleeping flag.
pub(super) const WATCHER_ARMED: u32 = 2;

/// The rx reader's arm: never overwrites a watcher's arm, which stays until
/// the producer clears it with a signal (that wakes the reader just as well).
pub(super) fn arm_reader(flag: &AtomicU32) {
    let _ = flag.compare_exchange(0, READER_ARMED, Ordering::Relaxed, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

/// Clear the reader's own arm only; a watcher's arm must survive reads.
pub(super) fn disarm_reader(flag: &AtomicU32) {
    if flag.load(Ordering::Relaxed) == READER_ARMED {
        let _ = flag.compare_exchange(READER_ARMED, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Sleeper's half of the handshake: announce, then fence before re-checking.
pub(super) fn arm(flag: &AtomicU32) {
    flag.store(1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

pub(super) fn disarm(flag: &AtomicU32) {
    // Load first: a plain store would pull the line away from the other side.
    if flag.load(Ordering::Relaxed) != 0 {
        flag.store(0, Ordering::Relaxed);
    }
}

/// Waker's half: after publishing, fence, and signal only a declared sleeper.
pub(super) fn wake_if_armed(flag: &AtomicU32, w: BorrowedFd<'_>) {
    wake_if_armed_and(flag, w, || true);
}

/// [`wake_if_armed`] that leaves a declared sleeper asleep (and its flag
/// set) unless `now` says it is time: the waker must then look again
/// later, after its next publication.
pub(super) fn wake_if_armed_and(flag: &AtomicU32, w: BorrowedFd<'_>, now: impl FnOnce() -> bool) {
    fence(Ordering::SeqCst);
    if flag.load(Ordering::Relaxed) != 0 && now() && flag.swap(0, Ordering::Relaxed) != 0 {
        signal(w);
    }
}
