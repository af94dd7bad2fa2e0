//! The per-flow shared-memory data path.
//!
//! Each flow has one sealed memfd holding two single-producer/single-consumer
//! rings — **tx** (application → IPCP) and **rx** (IPCP → application) — a
//! state word and counters, plus three one-way **wake-up pipes**:
//!
//! * *IPCP wake* (`ipcp`): the IPCP sleeps on the read end; the application
//!   writes "the tx ring got data".
//! * *rx wake* (`rx`): the application's reader sleeps on the read end (it is
//!   the flow's pollable fd); the IPCP and irmd write "the rx ring got data"
//!   or "the state changed".
//! * *tx wake* (`tx`): the application's blocked writer sleeps on the read
//!   end; the IPCP and irmd write "the tx ring has space again" or "the state
//!   changed". Separate from rx so a reader thread and a writer thread never
//!   eat each other's wake-ups.
//!
//! **Nobody blocks on what an application shares** (decision 0011). O_NONBLOCK
//! is a flag of the open file *description*, and an fd passed with SCM_RIGHTS
//! is the same description in both processes: with a shared eventfd an
//! application could clear O_NONBLOCK, saturate the counter and make the
//! IPCP's (or irmd's) next write block for ever. Each end of a pipe is its own
//! description. irmd creates every pipe with O_NONBLOCK on both ends and hands
//! each end to one side only: the IPCP and irmd hold the write ends of rx and
//! tx and the read end of ipcp; the application holds the other ends. Whatever
//! the application does to its descriptions changes only its own calls. A
//! full pipe on a non-blocking write just means "a wake-up is already
//! pending", a closed reader gives EPIPE (the daemons ignore SIGPIPE), and a
//! reader that sees end-of-file knows nobody can wake it any more. Pipes are
//! shrunk to one page (F_SETPIPE_SZ): a wake-up is one byte.
//!
//! **Wake-ups.** Busy sides make no syscall. A consumer that finds its ring
//! empty sets its `sleeping` flag, issues a SeqCst fence, re-checks the ring and
//! only then waits; a producer publishes, fences, and writes a wake-up byte
//! only if it finds the flag set (clearing it, so a burst costs one syscall).
//! Either the consumer's re-check sees the data or the producer sees the
//! flag: no lost wake-up. A writer blocked on a full tx ring uses
//! `producer_waiting` the same way. State changes always signal both
//! application pipes.
//!
//! **Batches.** Every side publishes per batch, not per SDU. The IPCP's
//! receive path stages SDUs ([`IpcpEnd::push_rx_quiet`]) and publishes each
//! flow's head once per batch of frames ([`IpcpEnd::wake_rx`], or
//! [`IpcpEnd::push_rx_batch`] in one call): one Release store, one update of
//! the counters and one fence per flow per batch. Its send path pops a batch
//! ([`IpcpEnd::pop_tx_batch_into`]): one tail store and at most one wake-up
//! of a blocked writer. The application's reader hands consumed slots back
//! lazily: every eighth of the ring (at most 32 slots) in a burst, and
//! always when the ring looks empty, so at rest the shared tail is the
//! reader's. A write publishes its SDU and fences once to look at the
//! IPCP's flag; [`AppEnd::write_batch`] and [`AppEnd::read_batch`] do each
//! once per batch.
//!
//! **Threads.** An [`AppEnd`] may be read and written from many threads.
//! No thread holds a lock while it spins or sleeps, so one thread's
//! blocking read never holds up another's non-blocking one. Of the threads
//! blocked in one direction, one sleeps on the wake pipe — only it drains
//! the pipe, and nobody clears the flag it armed — and the others wait on a
//! condition variable it signals when it wakes.
//!
//! **Spinning.** Before a blocking read or write sleeps it may spin for a
//! bounded, adaptive time ([`SpinPolicy`], [`Spinner`]): on by itself only
//! with more than two cores, `ETHFLOW_SPIN_US=<n>` sets it (0 = off),
//! [`AppEnd::set_spin`] per flow. An IPCP loop uses a [`Spinner`] of its own
//! with [`IpcpEnd::tx_ready`].
//!
//! **Counting.** [`wake_stats`] returns what this process did to wake and
//! be woken, over all its flows: pipe writes (`signals_sent`), waits
//! (`sleeps`), and how often a bounded spin saved a sleep. An event loop
//! that sleeps outside this library (the IPCP's `epoll_wait`) adds its
//! sleeps with [`note_sleep`].
//!
//! **Watchers.** An event set (`irm::FlowSet`) may watch a flow's rx fd
//! besides its reader. The rx sleeping flag then has two owners: the reader
//! arms it with `READER_ARMED` only if it is clear and clears only its own
//! value, the watcher arms it with `WATCHER_ARMED`, and only the producer
//! clears a watcher's arm (by signalling). A watcher that arms drains the rx
//! pipe only while no reader is inside a read (it holds the reader's lock for
//! that), so it never eats a blocked reader's wake-up and the pipe never
//! fills; a state-only watcher never drains. Watchers use edge-triggered
//! epoll. A reader that drains a wake-up passes it on to the
//! watcher ([`RxWatch::notice`]), so the watcher never loses one either. A
//! watcher that wants only state changes is told only when the state differs
//! from the one it last saw, so busy blocking readers do not keep waking it.
//!
//! **Trust.** Nobody trusts the application. The IPCP keeps its own copies of
//! the indices it owns (tx tail, rx head) and of its counters, takes the
//! geometry from irmd's message, bounds-checks every index and length it
//! reads from the mapping, reads each length once, and copies SDUs out with
//! volatile accesses ([`SharedBytes`]) — never a reference into memory the
//! application writes. A ring found corrupt stays broken for the IPCP (every
//! later call fails at once), so the IPCP ends that flow instead of spinning
//! on it. The memfd is sealed against shrinking and growing before it is
//! handed out, so nobody can turn an access into SIGBUS; mapping refuses an
//! unsealed or too-small memfd.
//!
//! **Max SDU.** The header holds the largest SDU the link carries now, as
//! the IPCP last wrote it ([`IpcpEnd::set_link_max_sdu`], at attach and on
//! every MTU change; 0 = never written). The library reads it once per write
//! ([`AppEnd::link_max_sdu`]) and refuses larger SDUs with EMSGSIZE, never
//! above the allocation's limit. It is advice to the application only: the
//! IPCP checks each SDU against its own limit and drops (and counts) what
//! the application wrote before it could know.
//!
//! **Fork.** A child that inherits an application's flow would be a second
//! producer on a single-producer ring. Each [`AppEnd`] remembers the process
//! that made it, through a wipe-on-fork page (no syscall per call): in a
//! child, reads and writes fail with `NotAlloc`. A child that writes into the
//! mapping by hand only breaks that flow (see Trust).
//!
//! **Layout** (identical in every process; all numbers little-endian native):
//! page 0 is the `Header` (identity, state word, counters, one control block
//! per ring, every hot word on its own 128-byte line); then the tx slots, then
//! the rx slots, each ring starting on a page boundary. A slot is a `u32`
//! length, 4 bytes of padding (so data is 8-aligned) and `slot_size` data
//! bytes, rounded up to 64 bytes. The memfd is sparse: an idle flow has only
//! the header page resident, and a ring's pages appear as slots are used.

mod app;
mod fork;
mod ipcp;
mod map;
mod ring;
mod spin;
mod statelog;
#[cfg(test)]
mod tests;
mod wake;

use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::unistd::ftruncate;

use crate::error::{Error, Result};
use crate::proto::{FlowState, RingGeometry};

pub use app::{AppEnd, RxReadiness, RxWatch, WatchNotice};
pub use ipcp::{FlowCounters, IpcpEnd, Monitor, RxPushed, RxStager, TxWake};
pub use map::{SharedBytes, ShmMap, Stats};
pub use spin::{SpinPolicy, Spinner, SPIN_ENV};
pub use statelog::StateLog;
pub use wake::{note_signal, note_sleep, wake_stats, WakeStats};

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

/// "ETHFLOW\0" — marks an initialised flow memfd.
const MAGIC: u64 = u64::from_le_bytes(*b"ETHFLOW\0");
const VERSION: u32 = 1;
/// Layout unit for ring starts; fixed (not the host page size) so every
/// process computes the same offsets.
const PAGE: u64 = 4096;
/// Bytes before a slot's data: u32 length + padding.
const SLOT_HDR: u64 = 8;
/// Slots start on this boundary so neighbouring slots rarely share a line.
const SLOT_ALIGN: u64 = 64;

pub const MIN_SLOTS: u32 = 2;
pub const MAX_SLOTS: u32 = 65536;
pub const MAX_SLOT_SIZE: u32 = 65536;

const STATE_ALLOCATED: u32 = 0;
const STATE_DOWN: u32 = 1;
const STATE_PEER: u32 = 2;
/// DOWN because irmd is gone: set by an IPCP that saw its irmd channel
/// close, so the application reports EIRMD even if the IPCP acts before
/// this process has seen its own irmd connection close. Reads as DOWN.
const STATE_IRMD_GONE: u32 = 3;

/// One value alone on a 128-byte line (two 64-byte lines: adjacent-line
/// prefetchers pair them), so the producer's and consumer's words never share.
#[repr(C, align(128))]
struct Line<T>(T);

impl<T> Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Informational only: the IPCP takes the geometry from irmd's message.
#[repr(C)]
struct Identity {
    magic: AtomicU64,
    version: AtomicU32,
    slots: AtomicU32,
    slot_size: AtomicU32,
}

/// Written by the IPCP's receive path.
#[repr(C)]
struct RxCounters {
    sdus: AtomicU64,
    bytes: AtomicU64,
    /// SDUs dropped because the rx ring was full.
    dropped: AtomicU64,
    /// Unix time (ms) of the last frame from the peer; 0 = never.
    last_unix_ms: AtomicU64,
}

/// Written by the IPCP's send path.
#[repr(C)]
struct TxCounters {
    sdus: AtomicU64,
    bytes: AtomicU64,
}

/// Control block of one ring. `head` and `tail` are free-running counters;
/// the slot is `index & (slots - 1)`.
#[repr(C)]
struct RingCtrl {
    head: Line<AtomicU32>,
    tail: Line<AtomicU32>,
    /// Set by the consumer before it sleeps; cleared by the producer that wakes it.
    consumer_sleeping: Line<AtomicU32>,
    /// Set by a producer blocked on a full ring; cleared by the consumer that wakes it.
    producer_waiting: Line<AtomicU32>,
}

/// Page 0 of the memfd. Every field is atomic: the other side may write any
/// of them at any time, and atomics make that a defined (if useless) act.
#[repr(C)]
struct Header {
    identity: Line<Identity>,
    state: Line<AtomicU32>,
    rx_counters: Line<RxCounters>,
    tx_counters: Line<TxCounters>,
    tx: RingCtrl,
    rx: RingCtrl,
    /// Log of state changes ([`StateLog`]), appended after `state` changes.
    state_log: Line<AtomicU64>,
    /// The largest SDU the link carries now, as the IPCP last wrote it
    /// (0: never written). The IPCP updates it when the MTU changes; the
    /// application's library refuses larger SDUs with EMSGSIZE
    /// ([`AppEnd::link_max_sdu`]). Advisory for the IPCP, which checks every
    /// SDU against its own limit anyway.
    link_max_sdu: Line<AtomicU32>,
}

const _: () = assert!(std::mem::size_of::<Header>() as u64 <= PAGE);

/// Which ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Application → IPCP.
    Tx,
    /// IPCP → application.
    Rx,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Tx => "tx",
            Dir::Rx => "rx",
        }
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Distance between slot starts.
fn slot_stride(geom: RingGeometry) -> u64 {
    round_up(SLOT_HDR + u64::from(geom.slot_size), SLOT_ALIGN)
}

/// Bytes one ring occupies (page-rounded).
fn ring_bytes(geom: RingGeometry) -> u64 {
    round_up(u64::from(geom.slots) * slot_stride(geom), PAGE)
}

fn ring_offset(geom: RingGeometry, dir: Dir) -> u64 {
    match dir {
        Dir::Tx => PAGE,
        Dir::Rx => PAGE + ring_bytes(geom),
    }
}

fn required_len_u64(geom: RingGeometry) -> u64 {
    PAGE + 2 * ring_bytes(geom)
}

/// Size of the memfd for `geom` (header page + two rings). Meaningful only for
/// a geometry that passes [`validate_geometry`].
pub fn required_len(geom: RingGeometry) -> usize {
    usize::try_from(required_len_u64(geom)).unwrap_or(usize::MAX)
}

/// Slots: a power of two in 2..=65536; slot_size (data bytes per slot): 1..=65536.
pub fn validate_geometry(geom: RingGeometry) -> Result<()> {
    if !(MIN_SLOTS..=MAX_SLOTS).contains(&geom.slots) || !geom.slots.is_power_of_two() {
        return Err(Error::Invalid(format!(
            "ring geometry: slots must be a power of two in {MIN_SLOTS}..={MAX_SLOTS}, got {}",
            geom.slots
        )));
    }
    if !(1..=MAX_SLOT_SIZE).contains(&geom.slot_size) {
        return Err(Error::Invalid(format!(
            "ring geometry: slot_size must be in 1..={MAX_SLOT_SIZE}, got {}",
            geom.slot_size
        )));
    }
    if usize::try_from(required_len_u64(geom)).is_err() {
        return Err(Error::Invalid(format!(
            "ring geometry {geom:?} does not fit this address space"
        )));
    }
    Ok(())
}

fn state_to_word(s: FlowState) -> u32 {
    match s {
        FlowState::Allocated => STATE_ALLOCATED,
        FlowState::Down => STATE_DOWN,
        FlowState::Peer => STATE_PEER,
    }
}

/// An unknown value (only a scribbling application writes one) reads as Down.
fn word_to_state(w: u32) -> FlowState {
    match w {
        STATE_ALLOCATED => FlowState::Allocated,
        STATE_PEER => FlowState::Peer,
        _ => FlowState::Down,
    }
}

fn state_error(s: FlowState) -> Option<Error> {
    match s {
        FlowState::Allocated => None,
        FlowState::Down => Some(Error::FlowDown),
        FlowState::Peer => Some(Error::FlowPeer),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a caller's closure must not make the flow unusable for good.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// Creation (irmd)
// ---------------------------------------------------------------------------

/// The fds of one flow, as irmd creates them: the memfd and both ends of
/// the three wake-up pipes. Each pipe end goes to one side only (see the
/// module docs); irmd keeps what [`FlowFds::monitor`] takes.
#[derive(Debug)]
pub struct FlowFds {
    pub memfd: OwnedFd,
    /// IPCP wake: the IPCP reads, the application writes.
    pub ipcp_read: OwnedFd,
    pub ipcp_write: OwnedFd,
    /// rx wake: the application reads, the IPCP and irmd write.
    pub rx_read: OwnedFd,
    pub rx_write: OwnedFd,
    /// tx wake: the application reads, the IPCP and irmd write.
    pub tx_read: OwnedFd,
    pub tx_write: OwnedFd,
    geom: RingGeometry,
}

impl FlowFds {
    /// The fds an application receives, in the order `AppEnd::new` takes
    /// them: memfd, rx read end, tx read end, IPCP-wake write end.
    pub fn for_app(&self) -> [&OwnedFd; 4] {
        [&self.memfd, &self.rx_read, &self.tx_read, &self.ipcp_write]
    }

    /// The fds the IPCP receives, in the order `IpcpEnd::new` takes them:
    /// memfd, IPCP-wake read end, rx write end, tx write end.
    pub fn for_ipcp(&self) -> [&OwnedFd; 4] {
        [&self.memfd, &self.ipcp_read, &self.rx_write, &self.tx_write]
    }

    /// Duplicates of every fd (for tests that play several processes).
    #[cfg(test)]
    pub(crate) fn try_clone_all(&self) -> FlowFds {
        let d = |f: &OwnedFd| f.try_clone().unwrap();
        FlowFds {
            memfd: d(&self.memfd),
            ipcp_read: d(&self.ipcp_read),
            ipcp_write: d(&self.ipcp_write),
            rx_read: d(&self.rx_read),
            rx_write: d(&self.rx_write),
            tx_read: d(&self.tx_read),
            tx_write: d(&self.tx_write),
            geom: self.geom,
        }
    }

    /// irmd's own view of the flow: the header page and duplicates of the
    /// ends only the trusted side holds (the rx and tx write ends, to signal
    /// state changes), plus both ends of the IPCP wake pipe, held and never
    /// used, so neither side sees end-of-file or EPIPE while irmd knows the
    /// flow (an application's library must not die of SIGPIPE because the
    /// IPCP went away).
    pub fn monitor(&self) -> Result<Monitor> {
        let map = ShmMap::map_header(self.memfd.as_fd(), self.geom)?;
        Ok(Monitor::new(
            map,
            self.rx_write.try_clone()?,
            self.tx_write.try_clone()?,
            [self.ipcp_read.try_clone()?, self.ipcp_write.try_clone()?],
        ))
    }
}

/// irmd: create the flow's memfd (MFD_CLOEXEC|MFD_ALLOW_SEALING) of
/// [`required_len`] bytes, initialise its header, seal it (SHRINK, GROW, SEAL)
/// and create the three wake-up pipes (O_CLOEXEC|O_NONBLOCK, one page each).
pub fn create(geom: RingGeometry) -> Result<FlowFds> {
    validate_geometry(geom)?;
    let memfd = memfd_create(
        c"ethflow-flow",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let len = i64::try_from(required_len_u64(geom))
        .map_err(|_| Error::Invalid(format!("ring geometry {geom:?} too large")))?;
    ftruncate(&memfd, len)?;
    fcntl(
        memfd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    {
        let map = ShmMap::map_prefix(memfd.as_fd(), geom, false)?;
        let id = &map.header().identity;
        id.version.store(VERSION, Ordering::Relaxed);
        id.slots.store(geom.slots, Ordering::Relaxed);
        id.slot_size.store(geom.slot_size, Ordering::Relaxed);
        // A fresh memfd is zeroed: indices, flags, counters 0, state Allocated.
        id.magic.store(MAGIC, Ordering::Release);
    }
    let (ipcp_read, ipcp_write) = wake::pipe()?;
    let (rx_read, rx_write) = wake::pipe()?;
    let (tx_read, tx_write) = wake::pipe()?;
    Ok(FlowFds {
        memfd,
        ipcp_read,
        ipcp_write,
        rx_read,
        rx_write,
        tx_read,
        tx_write,
        geom,
    })
}

/// Byte offsets of a flow memfd's words, for programs that must touch the
/// mapping without this library (a C implementation of the layout, the
/// tests' hostile application). Every word is a native-endian `u32` unless
/// said otherwise.
pub mod layout {
    use std::mem::offset_of;

    use super::{Header, Identity, RingCtrl};
    use crate::proto::RingGeometry;

    /// Slots per ring, as irmd wrote it (informational).
    pub const SLOTS: usize = offset_of!(Header, identity) + offset_of!(Identity, slots);
    /// Data bytes per slot, as irmd wrote it (informational).
    pub const SLOT_SIZE: usize = offset_of!(Header, identity) + offset_of!(Identity, slot_size);
    /// The state word: 0 allocated, 1 down, 2 peer, 3 down because irmd is gone.
    pub const STATE: usize = offset_of!(Header, state);
    /// A `u64`: the count of state changes (bits 0..16) and the last 24
    /// states entered, two bits each, newest in bits 16..18.
    pub const STATE_LOG: usize = offset_of!(Header, state_log);
    /// The largest SDU the link carries now, as the IPCP last wrote it (0: never).
    pub const LINK_MAX_SDU: usize = offset_of!(Header, link_max_sdu);
    /// The tx ring's control block (application → IPCP).
    pub const TX: usize = offset_of!(Header, tx);
    /// The rx ring's control block (IPCP → application).
    pub const RX: usize = offset_of!(Header, rx);
    /// Within a control block: free-running producer and consumer indices,
    /// the consumer's sleeping flag, the blocked producer's flag.
    pub const HEAD: usize = offset_of!(RingCtrl, head);
    pub const TAIL: usize = offset_of!(RingCtrl, tail);
    pub const CONSUMER_SLEEPING: usize = offset_of!(RingCtrl, consumer_sleeping);
    pub const PRODUCER_WAITING: usize = offset_of!(RingCtrl, producer_waiting);
    /// Within a slot: the SDU's length word, then (after padding) its data.
    pub const SLOT_LEN: usize = 0;
    pub const SLOT_DATA: usize = super::SLOT_HDR as usize;

    /// Start of the tx (`tx`) or rx ring's slots.
    pub fn ring(geom: RingGeometry, tx: bool) -> usize {
        let dir = if tx { super::Dir::Tx } else { super::Dir::Rx };
        super::ring_offset(geom, dir) as usize
    }

    /// Distance between two slots of a ring.
    pub fn slot_stride(geom: RingGeometry) -> usize {
        super::slot_stride(geom) as usize
    }
}
