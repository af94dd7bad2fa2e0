//! The per-flow shared-memory data path.
//!
//! Each flow has one sealed memfd holding two single-producer/single-consumer
//! rings — **tx** (application → IPCP) and **rx** (IPCP → application) — a
//! state word and counters, plus three eventfds:
//!
//! * `ipcp_efd`: the IPCP sleeps on it; "the tx ring got data".
//! * `rx_efd`: the application's reader sleeps on it (it is the flow's
//!   pollable fd); "the rx ring got data" or "the state changed".
//! * `tx_efd`: the application's blocked writer sleeps on it; "the tx ring has
//!   space again" or "the state changed". Separate from `rx_efd` so a reader
//!   thread and a writer thread never eat each other's wake-ups.
//!
//! **Wake-ups.** Busy sides make no syscall. A consumer that finds its ring
//! empty sets its `sleeping` flag, issues a SeqCst fence, re-checks the ring and
//! only then waits; a producer publishes, fences, and writes the eventfd only if
//! it finds the flag set (clearing it, so a burst costs one syscall). Either the
//! consumer's re-check sees the data or the producer sees the flag: no lost
//! wake-up. A writer blocked on a full tx ring uses `producer_waiting` the same
//! way. State changes always signal both application eventfds.
//!
//! **Watchers.** An event set (`irm::FlowSet`) may watch a flow's rx fd
//! besides its reader. The rx sleeping flag then has two owners: the reader
//! arms it with `READER_ARMED` only if it is clear and clears only its own
//! value, the watcher arms it with `WATCHER_ARMED`, and only the producer
//! clears a watcher's arm (by signalling). The watcher never drains the rx
//! eventfd (it uses edge-triggered epoll), so it never eats a blocked reader's
//! wake-up; a reader that drains a non-zero count passes it on to the watcher
//! ([`RxWatch::notice`]), so the watcher never loses one either. A watcher
//! that wants only state changes is told only when the state differs from
//! the one it last saw, so busy blocking readers do not keep waking it.
//!
//! **Trust.** Nobody trusts the application. The IPCP keeps its own copies of
//! the indices it owns (tx tail, rx head), takes the geometry from irmd's
//! message, bounds-checks every index and length it reads from the mapping,
//! and reads each length once, so any content an application writes can only
//! break its own flow. The memfd is sealed against shrinking and growing
//! before it is handed out, so nobody can turn an access into SIGBUS; mapping
//! refuses an unsealed or too-small memfd.
//!
//! **Layout** (identical in every process; all numbers little-endian native):
//! page 0 is the `Header` (identity, state word, counters, one control block
//! per ring, every hot word on its own 128-byte line); then the tx slots, then
//! the rx slots, each ring starting on a page boundary. A slot is a `u32`
//! length, 4 bytes of padding (so data is 8-aligned) and `slot_size` data
//! bytes, rounded up to 64 bytes. The memfd is sparse: an idle flow has only
//! the header page resident, and a ring's pages appear as slots are used.

use std::num::NonZeroUsize;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;
use nix::sys::time::TimeSpec;
use nix::unistd::ftruncate;

use crate::error::{Error, Result};
use crate::proto::{FlowState, RingGeometry};

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

/// The fds of one flow, as irmd creates them.
#[derive(Debug)]
pub struct FlowFds {
    pub memfd: OwnedFd,
    pub ipcp_efd: OwnedFd,
    pub rx_efd: OwnedFd,
    pub tx_efd: OwnedFd,
}

impl FlowFds {
    /// The fds an application receives, in the order `AppEnd` takes them.
    pub fn for_app(&self) -> [&OwnedFd; 4] {
        [&self.memfd, &self.rx_efd, &self.tx_efd, &self.ipcp_efd]
    }

    /// The fds the IPCP receives, in the order `IpcpEnd` takes them.
    pub fn for_ipcp(&self) -> [&OwnedFd; 4] {
        [&self.memfd, &self.ipcp_efd, &self.rx_efd, &self.tx_efd]
    }
}

/// irmd: create the flow's memfd (MFD_CLOEXEC|MFD_ALLOW_SEALING) of
/// [`required_len`] bytes, initialise its header, seal it (SHRINK, GROW, SEAL)
/// and create the three eventfds (EFD_CLOEXEC|EFD_NONBLOCK).
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
    let efd = || -> Result<OwnedFd> {
        Ok(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?
                .into(),
        )
    };
    Ok(FlowFds {
        memfd,
        ipcp_efd: efd()?,
        rx_efd: efd()?,
        tx_efd: efd()?,
    })
}

// ---------------------------------------------------------------------------
// Mapping
// ---------------------------------------------------------------------------

/// A mapping of a flow's memfd (munmap on Drop). Either the whole file
/// ([`ShmMap::map`]) or only its header page ([`ShmMap::map_header`], enough for
/// irmd's [`Monitor`]).
#[derive(Debug)]
pub struct ShmMap {
    base: NonNull<u8>,
    len: usize,
    geom: RingGeometry,
    has_rings: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access
// goes through atomics or raw-pointer copies guarded by the ends' mutexes.
unsafe impl Send for ShmMap {}
// SAFETY: as above; `&ShmMap` only hands out `&Header` (all atomics) and raw pointers.
unsafe impl Sync for ShmMap {}

impl ShmMap {
    /// Map the whole memfd for `geom` (which comes from irmd, not from the file).
    /// Refuses an invalid geometry, an unsealed memfd, one smaller than
    /// [`required_len`], and one not made by [`create`] of this layout version.
    pub fn map(memfd: BorrowedFd<'_>, geom: RingGeometry) -> Result<ShmMap> {
        Self::map_prefix(memfd, geom, true)?.check_identity()
    }

    /// Map only the header page (state word, counters): what irmd needs.
    /// The same checks as [`ShmMap::map`] apply.
    pub fn map_header(memfd: BorrowedFd<'_>, geom: RingGeometry) -> Result<ShmMap> {
        Self::map_prefix(memfd, geom, false)?.check_identity()
    }

    /// Catches a wrong fd or a library of another layout version. (An
    /// application can forge these words; it then only fails its own flow.)
    fn check_identity(self) -> Result<ShmMap> {
        let id = &self.header().identity;
        let (magic, version) = (
            id.magic.load(Ordering::Acquire),
            id.version.load(Ordering::Relaxed),
        );
        if magic != MAGIC || version != VERSION {
            return Err(Error::Invalid(format!(
                "not an ethflow flow memfd of layout version {VERSION} \
                 (magic {magic:#x}, version {version})"
            )));
        }
        Ok(self)
    }

    fn map_prefix(memfd: BorrowedFd<'_>, geom: RingGeometry, has_rings: bool) -> Result<ShmMap> {
        validate_geometry(geom)?;
        let seals = SealFlag::from_bits_truncate(fcntl(memfd.as_raw_fd(), FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW) {
            return Err(Error::Invalid(
                "flow memfd is not sealed against resizing".into(),
            ));
        }
        let need = required_len_u64(geom);
        let size = u64::try_from(fstat(memfd.as_raw_fd())?.st_size).unwrap_or(0);
        if size < need {
            return Err(Error::Invalid(format!(
                "flow memfd has {size} bytes, geometry {geom:?} needs {need}"
            )));
        }
        let len = if has_rings {
            required_len(geom)
        } else {
            PAGE as usize
        };
        let nz = NonZeroUsize::new(len).ok_or_else(|| Error::Invalid("empty mapping".into()))?;
        // SAFETY: a fresh shared mapping of a file at least `len` bytes long whose
        // size is sealed; nothing else in this process refers to the new range.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                memfd,
                0,
            )?
        };
        Ok(ShmMap {
            base: ptr.cast(),
            len,
            geom,
            has_rings,
        })
    }

    pub fn geometry(&self) -> RingGeometry {
        self.geom
    }

    /// Whether the rings are mapped (false for [`ShmMap::map_header`]).
    pub fn has_rings(&self) -> bool {
        self.has_rings
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least one page long
        // (size_of::<Header>() <= PAGE, asserted at compile time); every field is
        // an atomic, so concurrent writers in other processes are allowed.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    fn ctrl(&self, dir: Dir) -> &RingCtrl {
        match dir {
            Dir::Tx => &self.header().tx,
            Dir::Rx => &self.header().rx,
        }
    }

    /// Start of the slot for free-running `index`; always inside the mapping.
    fn slot(&self, dir: Dir, index: u32) -> *mut u8 {
        debug_assert!(self.has_rings);
        let i = u64::from(index & (self.geom.slots - 1));
        let off = ring_offset(self.geom, dir) + i * slot_stride(self.geom);
        // SAFETY: i < slots, so off + stride <= ring_offset + ring_bytes <= len.
        unsafe { self.base.as_ptr().add(off as usize) }
    }

    fn slot_len(&self, dir: Dir, index: u32) -> &AtomicU32 {
        // SAFETY: a slot starts 64-aligned inside the mapping and begins with a u32.
        unsafe { &*(self.slot(dir, index) as *const AtomicU32) }
    }

    fn slot_data(&self, dir: Dir, index: u32) -> *mut u8 {
        // SAFETY: the data follows the 8-byte slot header, still inside the slot.
        unsafe { self.slot(dir, index).add(SLOT_HDR as usize) }
    }

    fn state(&self) -> FlowState {
        word_to_state(self.header().state.load(Ordering::Acquire))
    }

    fn stats(&self) -> Stats {
        let h = self.header();
        Stats {
            rx_sdus: h.rx_counters.sdus.load(Ordering::Relaxed),
            rx_bytes: h.rx_counters.bytes.load(Ordering::Relaxed),
            tx_sdus: h.tx_counters.sdus.load(Ordering::Relaxed),
            tx_bytes: h.tx_counters.bytes.load(Ordering::Relaxed),
            dropped: h.rx_counters.dropped.load(Ordering::Relaxed),
            last_rx_unix_ms: h.rx_counters.last_unix_ms.load(Ordering::Relaxed),
            state: self.state(),
        }
    }

    /// Set the state word, then signal both application eventfds so a blocked
    /// reader and a blocked writer both see it.
    fn set_state(&self, s: FlowState, rx_efd: BorrowedFd<'_>, tx_efd: BorrowedFd<'_>) {
        self.header()
            .state
            .store(state_to_word(s), Ordering::SeqCst);
        signal(rx_efd);
        signal(tx_efd);
    }
}

impl Drop for ShmMap {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; the borrow checker
        // guarantees no reference into the mapping outlives `self`.
        unsafe {
            let _ = munmap(self.base.cast(), self.len);
        }
    }
}

/// Counters and state of one flow, for `irm flow list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub rx_sdus: u64,
    pub rx_bytes: u64,
    pub tx_sdus: u64,
    pub tx_bytes: u64,
    /// SDUs dropped because the application's rx ring was full.
    pub dropped: u64,
    /// Unix time in ms of the last frame from the peer; 0 = never.
    pub last_rx_unix_ms: u64,
    pub state: FlowState,
}

// ---------------------------------------------------------------------------
// Watchers
// ---------------------------------------------------------------------------

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
}

// ---------------------------------------------------------------------------
// Eventfds
// ---------------------------------------------------------------------------

fn signal(efd: BorrowedFd<'_>) {
    // EAGAIN means the counter is near overflow, i.e. already readable.
    let _ = nix::unistd::write(efd, &1u64.to_ne_bytes());
}

/// Clear the counter; true if it was non-zero (a wake-up was consumed).
fn drain(efd: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 8];
    // EAGAIN: nothing pending, which is fine.
    matches!(nix::unistd::read(efd.as_raw_fd(), &mut b), Ok(8))
}

/// Wait until `efd` is readable (true) or `deadline` passes (false).
fn wait_readable(efd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool> {
    loop {
        let timeout = deadline.map(|d| TimeSpec::from(d.saturating_duration_since(Instant::now())));
        let mut fds = [PollFd::new(efd, PollFlags::POLLIN)];
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
const READER_ARMED: u32 = 1;
/// A watcher (event set) armed the rx sleeping flag.
const WATCHER_ARMED: u32 = 2;

/// The rx reader's arm: never overwrites a watcher's arm, which stays until
/// the producer clears it with a signal (that wakes the reader just as well).
fn arm_reader(flag: &AtomicU32) {
    let _ = flag.compare_exchange(0, READER_ARMED, Ordering::Relaxed, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

/// Clear the reader's own arm only; a watcher's arm must survive reads.
fn disarm_reader(flag: &AtomicU32) {
    if flag.load(Ordering::Relaxed) == READER_ARMED {
        let _ = flag.compare_exchange(READER_ARMED, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Sleeper's half of the handshake: announce, then fence before re-checking.
fn arm(flag: &AtomicU32) {
    flag.store(1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

fn disarm(flag: &AtomicU32) {
    // Load first: a plain store would pull the line away from the other side.
    if flag.load(Ordering::Relaxed) != 0 {
        flag.store(0, Ordering::Relaxed);
    }
}

/// Waker's half: after publishing, fence, and signal only a declared sleeper.
fn wake_if_armed(flag: &AtomicU32, efd: BorrowedFd<'_>) {
    fence(Ordering::SeqCst);
    if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::Relaxed) != 0 {
        signal(efd);
    }
}

// ---------------------------------------------------------------------------
// Ring cursors (one side's private view of one ring)
// ---------------------------------------------------------------------------

fn corrupt(dir: Dir, head: u32, tail: u32, slots: u32) -> Error {
    Error::Invalid(format!(
        "{} ring corrupt: head {head}, tail {tail} for {slots} slots",
        dir.name()
    ))
}

/// The producer's private head and its last validated view of the tail.
#[derive(Debug)]
struct Producer {
    dir: Dir,
    head: u32,
    cached_tail: u32,
}

impl Producer {
    /// Start where the ring's head is now; the cached tail says "full" so the
    /// first write reads (and validates) the real tail.
    fn new(map: &ShmMap, dir: Dir) -> Producer {
        let head = map.ctrl(dir).head.load(Ordering::Relaxed);
        Producer {
            dir,
            head,
            cached_tail: head.wrapping_sub(map.geom.slots),
        }
    }

    /// Is there a free slot? Reads the consumer's tail only when the cached
    /// view says full. A tail ahead of head or more than `slots` behind is corrupt.
    fn has_space(&mut self, map: &ShmMap) -> Result<bool> {
        let slots = map.geom.slots;
        if self.head.wrapping_sub(self.cached_tail) < slots {
            return Ok(true);
        }
        let tail = map.ctrl(self.dir).tail.load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used > slots {
            return Err(corrupt(self.dir, self.head, tail, slots));
        }
        self.cached_tail = tail;
        Ok(used < slots)
    }

    /// Copy `sdu` into the slot at head and publish it. Caller checked space and length.
    fn push(&mut self, map: &ShmMap, sdu: &[u8]) {
        debug_assert!(sdu.len() <= map.geom.slot_size as usize);
        map.slot_len(self.dir, self.head)
            .store(sdu.len() as u32, Ordering::Relaxed);
        // SAFETY: the slot's data area holds slot_size >= sdu.len() bytes inside
        // the mapping; the consumer does not touch this slot until head moves.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sdu.as_ptr(),
                map.slot_data(self.dir, self.head),
                sdu.len(),
            )
        };
        self.head = self.head.wrapping_add(1);
        map.ctrl(self.dir).head.store(self.head, Ordering::Release);
    }
}

/// The consumer's private tail and its last validated view of the head.
#[derive(Debug)]
struct Consumer {
    dir: Dir,
    tail: u32,
    cached_head: u32,
}

impl Consumer {
    /// Start where the ring's tail is now; the cached head says "empty" so the
    /// first read loads (and validates) the real head.
    fn new(map: &ShmMap, dir: Dir) -> Consumer {
        let tail = map.ctrl(dir).tail.load(Ordering::Relaxed);
        Consumer {
            dir,
            tail,
            cached_head: tail,
        }
    }

    /// Is there an SDU? Reads the producer's head only when the cached view
    /// says empty. A head behind tail or more than `slots` ahead is corrupt.
    fn has_data(&mut self, map: &ShmMap) -> Result<bool> {
        if self.cached_head != self.tail {
            return Ok(true);
        }
        let head = map.ctrl(self.dir).head.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        if avail > map.geom.slots {
            return Err(corrupt(self.dir, head, self.tail, map.geom.slots));
        }
        self.cached_head = head;
        Ok(avail != 0)
    }

    /// The SDU at tail, as (pointer, length) inside the mapping. The length is
    /// read once; one larger than the slot is corrupt.
    fn peek(&self, map: &ShmMap) -> Result<(*const u8, usize)> {
        let len = map.slot_len(self.dir, self.tail).load(Ordering::Relaxed);
        if len > map.geom.slot_size {
            return Err(Error::Invalid(format!(
                "{} ring corrupt: SDU length {len} in slot {} exceeds slot size {}",
                self.dir.name(),
                self.tail & (map.geom.slots - 1),
                map.geom.slot_size
            )));
        }
        Ok((map.slot_data(self.dir, self.tail), len as usize))
    }

    /// Consume one slot locally (not yet visible to the producer).
    fn advance(&mut self) {
        self.tail = self.tail.wrapping_add(1);
    }

    /// Hand consumed slots back to the producer.
    fn publish(&self, map: &ShmMap) {
        map.ctrl(self.dir).tail.store(self.tail, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------
// Application side
// ---------------------------------------------------------------------------

/// The application's end of a flow: writes into tx, reads from rx.
/// Reads and writes may come from different threads; each direction is
/// serialised by its own mutex, so concurrent callers cannot corrupt the ring.
#[derive(Debug)]
pub struct AppEnd {
    map: ShmMap,
    rx_efd: OwnedFd,
    tx_efd: OwnedFd,
    ipcp_efd: OwnedFd,
    rx: Mutex<Consumer>,
    tx: Mutex<Producer>,
    /// The event set watching this flow, if any.
    watch: Mutex<Option<Watch>>,
    /// The state word the watcher last saw ([`NOT_SEEN`]: none yet).
    watch_seen: AtomicU32,
}

#[derive(Debug)]
struct Watch {
    watcher: Arc<dyn RxWatch>,
    /// Tell it of every consumed wake-up, not only of state changes.
    wants_data: bool,
}

/// `watch_seen` when no state is known to be seen: readers always tell.
const NOT_SEEN: u32 = u32::MAX;

impl AppEnd {
    /// # Panics
    /// If `map` came from [`ShmMap::map_header`] (no rings mapped).
    pub fn new(map: ShmMap, rx_efd: OwnedFd, tx_efd: OwnedFd, ipcp_efd: OwnedFd) -> AppEnd {
        assert!(map.has_rings(), "AppEnd needs the whole flow memfd mapped");
        let rx = Mutex::new(Consumer::new(&map, Dir::Rx));
        let tx = Mutex::new(Producer::new(&map, Dir::Tx));
        AppEnd {
            map,
            rx_efd,
            tx_efd,
            ipcp_efd,
            rx,
            tx,
            watch: Mutex::new(None),
            watch_seen: AtomicU32::new(NOT_SEEN),
        }
    }

    /// Copy one SDU into the tx ring. Longer than slot_size → `MsgSize`.
    /// Full ring: wait for space until `deadline` (→ `TimedOut`), or `Again`
    /// when `nonblocking`. Down → `FlowDown`, Peer → `FlowPeer`, checked before
    /// writing and while waiting.
    pub fn write(&self, sdu: &[u8], deadline: Option<Instant>, nonblocking: bool) -> Result<usize> {
        let max = self.map.geom.slot_size as usize;
        if sdu.len() > max {
            return Err(Error::MsgSize {
                len: sdu.len(),
                max,
            });
        }
        let mut tx = lock(&self.tx);
        let ctrl = self.map.ctrl(Dir::Tx);
        let mut armed = false;
        let result = (|| loop {
            if let Some(e) = state_error(self.map.state()) {
                return Err(e);
            }
            if tx.has_space(&self.map)? {
                tx.push(&self.map, sdu);
                wake_if_armed(&ctrl.consumer_sleeping, self.ipcp_efd.as_fd());
                return Ok(sdu.len());
            }
            if nonblocking {
                return Err(Error::Again);
            }
            if !armed {
                // Stale wake-ups from earlier waits must not end this one early.
                drain(self.tx_efd.as_fd());
                arm(&ctrl.producer_waiting);
                armed = true;
                continue; // re-check space and state after the fence
            }
            if !wait_readable(self.tx_efd.as_fd(), deadline)? {
                return Err(Error::TimedOut);
            }
            armed = false;
        })();
        // Whether or not the IPCP already cleared it, no writer waits any more.
        disarm(&ctrl.producer_waiting);
        result
    }

    /// Read one SDU into `buf` (truncated to `buf.len()` like a datagram;
    /// returns the bytes copied). Empty ring: wait on rx_efd until `deadline`
    /// (→ `TimedOut`), or `Again` when `nonblocking`. Data already in the ring
    /// is delivered whatever the state; once empty, Down → `FlowDown`,
    /// Peer → `FlowPeer`.
    ///
    /// An empty read leaves the sleeping flag set, so the rx fd becomes
    /// readable when the next SDU or state change arrives (epoll users: read
    /// until `Again`, then wait).
    pub fn read(
        &self,
        buf: &mut [u8],
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<usize> {
        let mut rx = lock(&self.rx);
        let ctrl = self.map.ctrl(Dir::Rx);
        let mut armed = false;
        loop {
            if rx.has_data(&self.map)? {
                let n = self.copy_out(&mut rx, buf);
                disarm_reader(&ctrl.consumer_sleeping);
                return Ok(n);
            }
            if let Some(e) = state_error(self.map.state()) {
                // The state was stored after the last SDU was published; having
                // seen it (Acquire), one more look finds any SDU we raced with.
                if rx.has_data(&self.map)? {
                    continue;
                }
                return Err(e);
            }
            if !armed {
                // Drain before arming: a signal that arrives after this is kept.
                self.drain_rx();
                arm_reader(&ctrl.consumer_sleeping);
                armed = true;
                continue; // re-check ring and state after the fence
            }
            if nonblocking {
                return Err(Error::Again);
            }
            if !wait_readable(self.rx_efd.as_fd(), deadline)? {
                return Err(Error::TimedOut);
            }
            armed = false;
        }
    }

    fn copy_out(&self, rx: &mut Consumer, buf: &mut [u8]) -> usize {
        // The IPCP is trusted by the application, but a bad length must still
        // not make us read past the slot: clamp instead of failing.
        let slot_len = self.map.slot_len(rx.dir, rx.tail).load(Ordering::Relaxed);
        let n = (slot_len.min(self.map.geom.slot_size) as usize).min(buf.len());
        // SAFETY: n <= slot_size bytes of this slot's data area, inside the mapping;
        // the producer does not reuse the slot until we publish the new tail.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.slot_data(rx.dir, rx.tail), buf.as_mut_ptr(), n)
        };
        rx.advance();
        rx.publish(&self.map);
        n
    }

    /// For event loops: arm the rx wake-up as an empty non-blocking read does.
    /// Returns true if the caller may sleep on [`AppEnd::rx_fd`] (ring empty,
    /// flow allocated); false if an SDU or a state change is already there.
    pub fn arm_rx_wakeup(&self) -> bool {
        let mut rx = lock(&self.rx);
        self.drain_rx();
        arm_reader(&self.map.ctrl(Dir::Rx).consumer_sleeping);
        !matches!(rx.has_data(&self.map), Ok(true) | Err(_))
            && self.map.state() == FlowState::Allocated
    }

    /// The flow's state as last set by the IPCP or irmd.
    pub fn state(&self) -> FlowState {
        self.map.state()
    }

    /// Drain rx_efd; a wake-up consumed here may have been meant for the
    /// watcher, so pass it on — unless the watcher wants state changes only
    /// and the state is the one it saw last. (The drained signals announced
    /// states stored before the drain, so the load below sees them; the
    /// watcher's side of this is in [`AppEnd::watch_check`].)
    fn drain_rx(&self) {
        if !drain(self.rx_efd.as_fd()) {
            return;
        }
        let watcher = lock(&self.watch)
            .as_ref()
            .map(|w| (w.watcher.clone(), w.wants_data));
        if let Some((w, wants_data)) = watcher {
            let now = self.map.header().state.load(Ordering::SeqCst);
            if wants_data || now != self.watch_seen.load(Ordering::SeqCst) {
                w.notice(WatchNotice::Wakeup);
            }
        }
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
    /// this look signals rx_efd. Takes no lock (a reader blocked in
    /// [`AppEnd::read`] holds the rx one) and never drains rx_efd.
    pub fn watch_check(&self, arm_data: bool) -> RxReadiness {
        let ctrl = self.map.ctrl(Dir::Rx);
        let has_data = arm_data && {
            ctrl.consumer_sleeping
                .store(WATCHER_ARMED, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // The reader publishes its tail after every SDU, so at rest the
            // shared tail is its tail. A corrupt head also counts as data:
            // the reader's next read reports the corruption.
            ctrl.head.load(Ordering::Acquire) != ctrl.tail.load(Ordering::Relaxed)
        };
        RxReadiness {
            has_data,
            state: word_to_state(self.note_seen_state()),
        }
    }

    /// Load the state word and publish it as seen, until a load after the
    /// publication agrees. A reader that drains a signal and compares its
    /// state with `watch_seen` then either sees what this look reports, or
    /// a state this look has not loaded — and tells the watcher.
    fn note_seen_state(&self) -> u32 {
        let word = &self.map.header().state;
        let mut now = word.load(Ordering::SeqCst);
        for _ in 0..4 {
            self.watch_seen.store(now, Ordering::SeqCst);
            let again = word.load(Ordering::SeqCst);
            if again == now {
                return now;
            }
            now = again;
        }
        // Still changing: let every reader's drain tell the watcher.
        self.watch_seen.store(NOT_SEEN, Ordering::SeqCst);
        now
    }

    /// The pollable fd: readable on a new SDU or a state change.
    pub fn rx_fd(&self) -> BorrowedFd<'_> {
        self.rx_efd.as_fd()
    }

    pub fn geometry(&self) -> RingGeometry {
        self.map.geom
    }
}

// ---------------------------------------------------------------------------
// IPCP side
// ---------------------------------------------------------------------------

/// The IPCP's end of a flow: pops from tx, pushes into rx. Never trusts the
/// mapping: indices it owns are private, everything read is bounds-checked,
/// and a corrupt ring is an `Error::Invalid` (the caller marks the flow down).
#[derive(Debug)]
pub struct IpcpEnd {
    map: ShmMap,
    ipcp_efd: OwnedFd,
    rx_efd: OwnedFd,
    tx_efd: OwnedFd,
    tx: Mutex<Consumer>,
    rx: Mutex<Producer>,
}

impl IpcpEnd {
    /// The IPCP's indices start from the mapping's current values (0 for a
    /// fresh flow) and are private from then on; a start an application faked
    /// is still bounds-checked on every use, so it can only break its own flow.
    ///
    /// # Panics
    /// If `map` came from [`ShmMap::map_header`] (no rings mapped).
    pub fn new(map: ShmMap, ipcp_efd: OwnedFd, rx_efd: OwnedFd, tx_efd: OwnedFd) -> IpcpEnd {
        assert!(map.has_rings(), "IpcpEnd needs the whole flow memfd mapped");
        let tx = Mutex::new(Consumer::new(&map, Dir::Tx));
        let rx = Mutex::new(Producer::new(&map, Dir::Rx));
        IpcpEnd {
            map,
            ipcp_efd,
            rx_efd,
            tx_efd,
            tx,
            rx,
        }
    }

    /// The fd to put in the IPCP's epoll set ("the tx ring got data").
    pub fn ipcp_fd(&self) -> BorrowedFd<'_> {
        self.ipcp_efd.as_fd()
    }

    /// Pop one SDU from the tx ring, calling `f` with its bytes. `Ok(None)` if
    /// the ring is empty. The bytes live in memory the application can write
    /// concurrently: copy them out inside `f`, and do not parse them twice.
    /// Do not call back into this end from `f`.
    pub fn pop_tx<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        let mut out = None;
        self.pop_tx_batch(1, |sdu| out = f.take().map(|f| f(sdu)))?;
        Ok(out)
    }

    /// Pop up to `max` SDUs, calling `f` for each; returns how many. The tail
    /// is published (and a blocked writer woken) once, at the end. On a corrupt
    /// ring the SDUs already handed to `f` are consumed and the error returned.
    pub fn pop_tx_batch(&self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        let mut tx = lock(&self.tx);
        let mut n = 0;
        let mut result = Ok(());
        while n < max {
            match tx.has_data(&self.map).and_then(|more| {
                if more {
                    tx.peek(&self.map).map(Some)
                } else {
                    Ok(None)
                }
            }) {
                Ok(Some((ptr, len))) => {
                    // SAFETY: peek returned a pointer to `len <= slot_size` bytes
                    // of one slot's data area, inside our mapping, which lives as
                    // long as `self`. The application may still write them (see doc).
                    f(unsafe { std::slice::from_raw_parts(ptr, len) });
                    tx.advance();
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if n > 0 {
            tx.publish(&self.map);
            wake_if_armed(
                &self.map.ctrl(Dir::Tx).producer_waiting,
                self.tx_efd.as_fd(),
            );
        }
        result.map(|()| n)
    }

    /// Before sleeping on [`IpcpEnd::ipcp_fd`]: announce it, fence, re-check.
    /// True: the ring is empty, sleep. False: data (or corruption, which the
    /// next pop reports) arrived meanwhile; the flag is cleared again.
    pub fn arm_tx_wakeup(&self) -> bool {
        let mut tx = lock(&self.tx);
        let flag = &self.map.ctrl(Dir::Tx).consumer_sleeping;
        arm(flag);
        if matches!(tx.has_data(&self.map), Ok(false)) {
            return true;
        }
        disarm(flag);
        false
    }

    /// Drain ipcp_efd's counter (after epoll said it is readable).
    pub fn clear_tx_wakeup(&self) {
        drain(self.ipcp_efd.as_fd());
    }

    /// Push one SDU into the rx ring. Full ring → `Ok(false)`, counted as
    /// dropped; never blocks. Longer than slot_size → `MsgSize`. Wakes the
    /// application if it sleeps; updates rx counters and the last-rx time.
    pub fn push_rx(&self, sdu: &[u8]) -> Result<bool> {
        let pushed = self.push_rx_quiet(sdu)?;
        if pushed {
            self.wake_rx();
        }
        Ok(pushed)
    }

    /// [`IpcpEnd::push_rx`] without the wake-up: a receiver that pushes a
    /// batch of frames calls [`IpcpEnd::wake_rx`] once at the end, so a
    /// sleeping application is woken once per batch, not once per SDU.
    pub fn push_rx_quiet(&self, sdu: &[u8]) -> Result<bool> {
        let max = self.map.geom.slot_size as usize;
        if sdu.len() > max {
            return Err(Error::MsgSize {
                len: sdu.len(),
                max,
            });
        }
        let h = self.map.header();
        let mut rx = lock(&self.rx);
        if !rx.has_space(&self.map)? {
            h.rx_counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        rx.push(&self.map, sdu);
        drop(rx);
        h.rx_counters.sdus.fetch_add(1, Ordering::Relaxed);
        h.rx_counters
            .bytes
            .fetch_add(sdu.len() as u64, Ordering::Relaxed);
        h.rx_counters
            .last_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
        Ok(true)
    }

    /// Wake the application if it sleeps on the rx ring (after
    /// [`IpcpEnd::push_rx_quiet`]).
    pub fn wake_rx(&self) {
        wake_if_armed(&self.map.header().rx.consumer_sleeping, self.rx_efd.as_fd());
    }

    /// Record that a frame came from the peer without data for the
    /// application (a keep-alive), for `irm flow list`'s last-rx column.
    pub fn touch_last_rx(&self) {
        self.map
            .header()
            .rx_counters
            .last_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
    }

    /// Set the state word and signal rx_efd and tx_efd.
    pub fn set_state(&self, s: FlowState) {
        self.map
            .set_state(s, self.rx_efd.as_fd(), self.tx_efd.as_fd());
    }

    /// The state word as it is in the mapping (the application can write it:
    /// the IPCP's own record of the state is authoritative).
    pub fn state(&self) -> FlowState {
        self.map.state()
    }

    /// Count one SDU of `bytes` sent to the peer.
    pub fn note_tx(&self, bytes: usize) {
        let c = &self.map.header().tx_counters;
        c.sdus.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        self.map.stats()
    }

    pub fn geometry(&self) -> RingGeometry {
        self.map.geom
    }
}

// ---------------------------------------------------------------------------
// irmd side
// ---------------------------------------------------------------------------

/// irmd's view of a flow: the header only. It sets the state (e.g. when the
/// IPCP dies) and reads the counters for `irm flow list`.
#[derive(Debug)]
pub struct Monitor {
    map: ShmMap,
    rx_efd: OwnedFd,
    tx_efd: OwnedFd,
}

impl Monitor {
    /// `map` may be a header-only mapping ([`ShmMap::map_header`]).
    pub fn new(map: ShmMap, rx_efd: OwnedFd, tx_efd: OwnedFd) -> Monitor {
        Monitor {
            map,
            rx_efd,
            tx_efd,
        }
    }

    /// Set the state word and signal the application's eventfds.
    pub fn set_state(&self, s: FlowState) {
        self.map
            .set_state(s, self.rx_efd.as_fd(), self.tx_efd.as_fd());
    }

    pub fn state(&self) -> FlowState {
        self.map.state()
    }

    /// Counters as the IPCP wrote them (an application can falsify its own).
    pub fn stats(&self) -> Stats {
        self.map.stats()
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    fn geom(slots: u32, slot_size: u32) -> RingGeometry {
        RingGeometry { slots, slot_size }
    }

    fn dup(fd: &OwnedFd) -> OwnedFd {
        fd.try_clone().unwrap()
    }

    /// One flow as three processes would see it: separate mappings per side.
    struct Flow {
        app: Arc<AppEnd>,
        ipcp: Arc<IpcpEnd>,
        monitor: Monitor,
    }

    fn flow(g: RingGeometry) -> Flow {
        let fds = create(g).unwrap();
        flow_from(fds, g)
    }

    fn flow_from(fds: FlowFds, g: RingGeometry) -> Flow {
        let app_map = ShmMap::map(fds.memfd.as_fd(), g).unwrap();
        let ipcp_map = ShmMap::map(fds.memfd.as_fd(), g).unwrap();
        let mon_map = ShmMap::map_header(fds.memfd.as_fd(), g).unwrap();
        let app = AppEnd::new(
            app_map,
            dup(&fds.rx_efd),
            dup(&fds.tx_efd),
            dup(&fds.ipcp_efd),
        );
        let ipcp = IpcpEnd::new(
            ipcp_map,
            dup(&fds.ipcp_efd),
            dup(&fds.rx_efd),
            dup(&fds.tx_efd),
        );
        let monitor = Monitor::new(mon_map, dup(&fds.rx_efd), dup(&fds.tx_efd));
        Flow {
            app: Arc::new(app),
            ipcp: Arc::new(ipcp),
            monitor,
        }
    }

    fn pop(ipcp: &IpcpEnd) -> Option<Vec<u8>> {
        ipcp.pop_tx(|b| b.to_vec()).unwrap()
    }

    fn read_nb(app: &AppEnd) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; app.geometry().slot_size as usize];
        let n = app.read(&mut buf, None, true)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        ppoll(&mut fds, Some(TimeSpec::from(Duration::ZERO)), None).unwrap() == 1
    }

    /// Records the notices a flow gives its watcher.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<WatchNotice>>);

    impl RxWatch for Recorder {
        fn notice(&self, n: WatchNotice) {
            self.0.lock().unwrap().push(n);
        }
    }

    fn rx_flag(app: &AppEnd) -> u32 {
        app.map
            .ctrl(Dir::Rx)
            .consumer_sleeping
            .load(Ordering::Relaxed)
    }

    #[test]
    fn reader_arm_and_disarm_leave_a_watcher_arm_alone() {
        let f = flow(geom(4, 16));
        // Reader alone: an empty read arms, a successful read disarms.
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert_eq!(rx_flag(&f.app), READER_ARMED);
        f.ipcp.push_rx(b"a").unwrap();
        assert_eq!(rx_flag(&f.app), 0, "the producer clears the arm it signals");
        assert!(readable(f.app.rx_fd()));
        assert_eq!(read_nb(&f.app).unwrap(), b"a");
        // A watcher's arm: reads neither replace nor clear it.
        let seen = f.app.watch_check(true);
        assert_eq!((seen.has_data, seen.state), (false, FlowState::Allocated));
        assert_eq!(rx_flag(&f.app), WATCHER_ARMED);
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert_eq!(rx_flag(&f.app), WATCHER_ARMED);
        f.ipcp.push_rx(b"b").unwrap();
        f.ipcp.push_rx(b"c").unwrap();
        assert_eq!(rx_flag(&f.app), 0);
        assert!(f.app.watch_check(true).has_data);
        assert_eq!(read_nb(&f.app).unwrap(), b"b");
        assert_eq!(
            rx_flag(&f.app),
            WATCHER_ARMED,
            "a read cleared the watcher's arm"
        );
        // Without arm_data the watcher only reads the state word.
        f.ipcp.set_state(FlowState::Peer);
        let seen = f.app.watch_check(false);
        assert_eq!((seen.has_data, seen.state), (false, FlowState::Peer));
    }

    #[test]
    fn a_state_only_watcher_hears_only_of_states_it_has_not_seen() {
        let f = flow(geom(4, 16));
        let rec = Arc::new(Recorder::default());
        f.app.set_watch(rec.clone(), false).unwrap();
        let cycle = || {
            // A reader's sleep/wake cycle: arm, SDU signals, read, drain.
            assert_eq!(read_nb(&f.app), Err(Error::Again));
            f.ipcp.push_rx(b"a").unwrap();
            assert_eq!(read_nb(&f.app).unwrap(), b"a");
            assert_eq!(read_nb(&f.app), Err(Error::Again));
        };
        // Before the watcher's first look every consumed wake-up is passed on.
        cycle();
        assert_eq!(rec.0.lock().unwrap().len(), 1);
        // Once it has seen ALLOCATED, data wake-ups are not its business.
        assert_eq!(f.app.watch_check(false).state, FlowState::Allocated);
        for _ in 0..3 {
            cycle();
        }
        assert_eq!(rec.0.lock().unwrap().len(), 1);
        // A state it has not seen is passed on.
        f.ipcp.set_state(FlowState::Down);
        assert!(!f.app.arm_rx_wakeup());
        assert_eq!(*rec.0.lock().unwrap(), [WatchNotice::Wakeup; 2]);
        // Seen now: the next drained signal of the same state is not.
        assert_eq!(f.app.watch_check(false).state, FlowState::Down);
        f.ipcp.set_state(FlowState::Down);
        assert!(!f.app.arm_rx_wakeup());
        assert_eq!(rec.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_reader_passes_consumed_wakeups_to_its_watcher() {
        let f = flow(geom(4, 16));
        let rec = Arc::new(Recorder::default());
        let w: Arc<dyn RxWatch> = rec.clone();
        f.app.set_watch(w.clone(), true).unwrap();
        assert!(f
            .app
            .set_watch(Arc::new(Recorder::default()), true)
            .is_err());
        // Nothing pending: an empty read drains nothing and tells nobody.
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert!(rec.0.lock().unwrap().is_empty());
        // A state change the reader's drain eats (PEER and back) is passed on.
        f.ipcp.set_state(FlowState::Peer);
        f.ipcp.set_state(FlowState::Allocated);
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert!(!readable(f.app.rx_fd()));
        assert_eq!(*rec.0.lock().unwrap(), [WatchNotice::Wakeup]);
        // So is one eaten by arm_rx_wakeup.
        f.ipcp.set_state(FlowState::Allocated);
        assert!(f.app.arm_rx_wakeup());
        assert_eq!(rec.0.lock().unwrap().len(), 2);
        // Clearing someone else's watcher does nothing; closing tells ours.
        f.app
            .clear_watch(&(Arc::new(Recorder::default()) as Arc<dyn RxWatch>));
        f.app.close_watch();
        assert_eq!(rec.0.lock().unwrap().last(), Some(&WatchNotice::Closed));
        // Gone: no more notices, and a new watcher may come.
        f.ipcp.set_state(FlowState::Allocated);
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert_eq!(rec.0.lock().unwrap().len(), 3);
        f.app.set_watch(w.clone(), true).unwrap();
        f.app.clear_watch(&w);
        f.app.close_watch();
        assert_eq!(rec.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn round_trip_both_directions() {
        let f = flow(geom(8, 64));
        assert_eq!(f.app.write(b"hello", None, false).unwrap(), 5);
        assert_eq!(f.app.write(b"", None, false).unwrap(), 0);
        assert_eq!(pop(&f.ipcp).as_deref(), Some(&b"hello"[..]));
        assert_eq!(pop(&f.ipcp).as_deref(), Some(&b""[..]));
        assert_eq!(pop(&f.ipcp), None);

        assert!(f.ipcp.push_rx(b"world").unwrap());
        assert_eq!(read_nb(&f.app).unwrap(), b"world");
        assert_eq!(read_nb(&f.app), Err(Error::Again));
    }

    #[test]
    fn read_truncates_like_a_datagram() {
        let f = flow(geom(4, 64));
        f.ipcp.push_rx(b"0123456789").unwrap();
        f.ipcp.push_rx(b"next").unwrap();
        let mut small = [0u8; 4];
        assert_eq!(f.app.read(&mut small, None, true).unwrap(), 4);
        assert_eq!(&small, b"0123");
        assert_eq!(read_nb(&f.app).unwrap(), b"next");
    }

    #[test]
    fn wraps_around_many_times() {
        let f = flow(geom(4, 32));
        let mut seq = 0u32;
        for round in 0..5000u32 {
            let burst = round % 4 + 1;
            for i in 0..burst {
                let sdu = (seq + i).to_le_bytes();
                f.app.write(&sdu, None, true).unwrap();
                assert!(f.ipcp.push_rx(&sdu).unwrap());
            }
            for _ in 0..burst {
                assert_eq!(pop(&f.ipcp).unwrap(), seq.to_le_bytes());
                assert_eq!(read_nb(&f.app).unwrap(), seq.to_le_bytes());
                seq += 1;
            }
        }
        assert_eq!(pop(&f.ipcp), None);
        assert_eq!(f.monitor.stats().rx_sdus, u64::from(seq));
    }

    #[test]
    fn free_running_indices_wrap_past_u32_max() {
        let g = geom(4, 16);
        let fds = create(g).unwrap();
        {
            let m = ShmMap::map_header(fds.memfd.as_fd(), g).unwrap();
            for c in [&m.header().tx, &m.header().rx] {
                c.head.store(u32::MAX - 6, Ordering::Relaxed);
                c.tail.store(u32::MAX - 6, Ordering::Relaxed);
            }
        }
        let f = flow_from(fds, g);
        for i in 0..40u32 {
            f.app.write(&i.to_le_bytes(), None, true).unwrap();
            f.app.write(&(i + 1000).to_le_bytes(), None, true).unwrap();
            f.ipcp.push_rx(&i.to_le_bytes()).unwrap();
            assert_eq!(pop(&f.ipcp).unwrap(), i.to_le_bytes());
            assert_eq!(pop(&f.ipcp).unwrap(), (i + 1000).to_le_bytes());
            assert_eq!(read_nb(&f.app).unwrap(), i.to_le_bytes());
        }
        let head = f.ipcp.map.header().tx.head.load(Ordering::Relaxed);
        assert!(head < 100, "head should have wrapped, is {head}");
    }

    #[test]
    fn full_tx_ring_gives_again_timeout_then_blocked_writer_is_woken() {
        let f = flow(geom(2, 16));
        f.app.write(b"a", None, true).unwrap();
        f.app.write(b"b", None, true).unwrap();
        assert_eq!(f.app.write(b"c", None, true), Err(Error::Again));

        let t0 = Instant::now();
        let r = f
            .app
            .write(b"c", Some(t0 + Duration::from_millis(50)), false);
        assert_eq!(r, Err(Error::TimedOut));
        assert!(t0.elapsed() >= Duration::from_millis(50));

        let app = f.app.clone();
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let writer = thread::spawn(move || {
            let r = app.write(b"c", None, false);
            done2.store(true, Ordering::SeqCst);
            r
        });
        thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "writer must block on a full ring"
        );
        let t1 = Instant::now();
        assert_eq!(pop(&f.ipcp).unwrap(), b"a");
        assert_eq!(writer.join().unwrap(), Ok(1));
        assert!(
            t1.elapsed() < Duration::from_millis(100),
            "writer woken late: {:?}",
            t1.elapsed()
        );
        assert_eq!(pop(&f.ipcp).unwrap(), b"b");
        assert_eq!(pop(&f.ipcp).unwrap(), b"c");
    }

    #[test]
    fn empty_rx_ring_gives_again_timeout_then_blocked_reader_is_woken() {
        let f = flow(geom(4, 16));
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        let t0 = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(
            f.app
                .read(&mut buf, Some(t0 + Duration::from_millis(30)), false),
            Err(Error::TimedOut)
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));

        let app = f.app.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 16];
            app.read(&mut buf, None, false).map(|n| buf[..n].to_vec())
        });
        thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "reader must block on an empty ring");
        let t1 = Instant::now();
        f.ipcp.push_rx(b"wake").unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"wake");
        assert!(t1.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn oversized_sdus_are_refused_with_msgsize() {
        let f = flow(geom(4, 100));
        assert_eq!(
            f.app.write(&[0; 101], None, false),
            Err(Error::MsgSize { len: 101, max: 100 })
        );
        assert_eq!(
            f.ipcp.push_rx(&[0; 101]),
            Err(Error::MsgSize { len: 101, max: 100 })
        );
        assert_eq!(f.app.write(&[7; 100], None, false), Ok(100));
        assert_eq!(pop(&f.ipcp).unwrap(), vec![7; 100]);
    }

    #[test]
    fn full_rx_ring_drops_and_counts() {
        let f = flow(geom(2, 16));
        assert!(f.ipcp.push_rx(b"one").unwrap());
        assert!(f.ipcp.push_rx(b"two").unwrap());
        assert!(!f.ipcp.push_rx(b"three").unwrap());
        f.ipcp.note_tx(40);
        let s = f.monitor.stats();
        assert_eq!(
            (s.rx_sdus, s.rx_bytes, s.dropped, s.tx_sdus, s.tx_bytes),
            (2, 6, 1, 1, 40)
        );
        assert!(s.last_rx_unix_ms > 1_600_000_000_000);
        assert_eq!(s.state, FlowState::Allocated);
        assert_eq!(read_nb(&f.app).unwrap(), b"one");
        assert!(f.ipcp.push_rx(b"four").unwrap());
    }

    fn blocked_reader_and_writer_see_state(set: impl FnOnce(&Flow), want: Error) {
        let f = flow(geom(2, 16));
        f.app.write(b"x", None, false).unwrap();
        f.app.write(b"y", None, false).unwrap();
        let (a1, a2) = (f.app.clone(), f.app.clone());
        let writer = thread::spawn(move || {
            let r = a1.write(b"z", None, false);
            (r, Instant::now())
        });
        let reader = thread::spawn(move || {
            let mut b = [0u8; 16];
            let r = a2.read(&mut b, None, false);
            (r, Instant::now())
        });
        thread::sleep(Duration::from_millis(50));
        assert!(!writer.is_finished() && !reader.is_finished());
        let t0 = Instant::now();
        set(&f);
        for (r, at) in [writer.join().unwrap(), reader.join().unwrap()] {
            assert_eq!(r, Err(want.clone()));
            assert!(
                at.duration_since(t0) < Duration::from_millis(100),
                "woken after {:?}",
                at - t0
            );
        }
    }

    #[test]
    fn ipcp_state_change_wakes_blocked_reader_and_writer() {
        blocked_reader_and_writer_see_state(|f| f.ipcp.set_state(FlowState::Down), Error::FlowDown);
    }

    #[test]
    fn irmd_state_change_wakes_blocked_reader_and_writer() {
        blocked_reader_and_writer_see_state(
            |f| f.monitor.set_state(FlowState::Peer),
            Error::FlowPeer,
        );
    }

    #[test]
    fn data_before_down_is_still_delivered() {
        for (state, err) in [
            (FlowState::Down, Error::FlowDown),
            (FlowState::Peer, Error::FlowPeer),
        ] {
            let f = flow(geom(4, 16));
            f.ipcp.push_rx(b"last").unwrap();
            f.ipcp.push_rx(b"words").unwrap();
            f.ipcp.set_state(state);
            assert_eq!(f.app.state(), state);
            assert_eq!(f.monitor.state(), state);
            assert!(
                readable(f.app.rx_fd()),
                "state change must make the rx fd readable"
            );
            assert_eq!(read_nb(&f.app).unwrap(), b"last");
            assert_eq!(read_nb(&f.app).unwrap(), b"words");
            assert_eq!(read_nb(&f.app), Err(err.clone()));
            // Blocking read without deadline must not hang either.
            assert_eq!(f.app.read(&mut [0; 4], None, false), Err(err.clone()));
            assert_eq!(f.app.write(b"no", None, false), Err(err));
            // A flow that recovers works again.
            f.ipcp.set_state(FlowState::Allocated);
            f.app.write(b"up", None, false).unwrap();
            assert_eq!(pop(&f.ipcp).unwrap(), b"up");
        }
    }

    #[test]
    fn empty_nonblocking_read_arms_the_rx_fd_and_busy_reads_do_not() {
        let f = flow(geom(8, 16));
        // Never armed: a push makes no wake-up syscall.
        f.ipcp.push_rx(b"1").unwrap();
        assert!(!readable(f.app.rx_fd()));
        assert_eq!(read_nb(&f.app).unwrap(), b"1");
        // An empty read arms; the next push signals exactly once.
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert!(!readable(f.app.rx_fd()));
        f.ipcp.push_rx(b"2").unwrap();
        assert!(readable(f.app.rx_fd()));
        assert_eq!(read_nb(&f.app).unwrap(), b"2");
        // Data read: the flag is clear, so further pushes make no syscall.
        assert_eq!(
            f.ipcp
                .map
                .header()
                .rx
                .consumer_sleeping
                .load(Ordering::Relaxed),
            0
        );
        // The empty read drains the stale count and re-arms.
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        assert!(!readable(f.app.rx_fd()));
        assert_eq!(
            f.ipcp
                .map
                .header()
                .rx
                .consumer_sleeping
                .load(Ordering::Relaxed),
            1
        );
        // arm_rx_wakeup for event loops.
        assert!(f.app.arm_rx_wakeup());
        f.ipcp.push_rx(b"3").unwrap();
        assert!(!f.app.arm_rx_wakeup());
    }

    #[test]
    fn ipcp_wakeup_is_armed_only_when_asked() {
        let f = flow(geom(8, 16));
        f.app.write(b"busy", None, false).unwrap();
        assert!(
            !readable(f.ipcp.ipcp_fd()),
            "no syscall while the IPCP is busy"
        );
        assert!(!f.ipcp.arm_tx_wakeup(), "data present: do not sleep");
        assert_eq!(
            f.app
                .map
                .header()
                .tx
                .consumer_sleeping
                .load(Ordering::Relaxed),
            0
        );
        assert_eq!(pop(&f.ipcp).unwrap(), b"busy");
        assert!(f.ipcp.arm_tx_wakeup());
        f.app.write(b"wake", None, false).unwrap();
        assert!(readable(f.ipcp.ipcp_fd()));
        f.ipcp.clear_tx_wakeup();
        assert!(!readable(f.ipcp.ipcp_fd()));
        // The flag was consumed by that wake-up: the next write stays silent.
        f.app.write(b"quiet", None, false).unwrap();
        assert!(!readable(f.ipcp.ipcp_fd()));
        let mut got = Vec::new();
        assert_eq!(
            f.ipcp.pop_tx_batch(10, |b| got.push(b.to_vec())).unwrap(),
            2
        );
        assert_eq!(got, vec![b"wake".to_vec(), b"quiet".to_vec()]);
    }

    #[test]
    fn memfd_is_sealed() {
        let g = geom(4, 64);
        let fds = create(g).unwrap();
        let len = required_len(g) as i64;
        assert_eq!(ftruncate(&fds.memfd, len / 2), Err(Errno::EPERM));
        assert_eq!(ftruncate(&fds.memfd, len * 2), Err(Errno::EPERM));
        let seals = SealFlag::from_bits_truncate(
            fcntl(fds.memfd.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap(),
        );
        assert!(
            seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL)
        );
        assert!(fcntl(
            fds.memfd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)
        )
        .is_err());
        assert_eq!(fstat(fds.memfd.as_raw_fd()).unwrap().st_size, len);
        let m = ShmMap::map_header(fds.memfd.as_fd(), g).unwrap();
        let id = &m.header().identity;
        assert_eq!(id.magic.load(Ordering::Relaxed), MAGIC);
        assert_eq!(
            (
                id.slots.load(Ordering::Relaxed),
                id.slot_size.load(Ordering::Relaxed)
            ),
            (4, 64)
        );
    }

    fn sealed_memfd(len: i64, seal: bool) -> OwnedFd {
        let fd = memfd_create(
            c"test",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .unwrap();
        ftruncate(&fd, len).unwrap();
        if seal {
            fcntl(
                fd.as_raw_fd(),
                FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
            )
            .unwrap();
        }
        fd
    }

    #[test]
    fn map_refuses_small_unsealed_or_mismatched_memfds() {
        let g = geom(8, 256);
        let need = required_len(g) as i64;
        let small = sealed_memfd(need - 1, true);
        assert!(
            matches!(ShmMap::map(small.as_fd(), g), Err(Error::Invalid(m)) if m.contains("needs"))
        );
        assert!(ShmMap::map_header(small.as_fd(), g).is_err());
        let unsealed = sealed_memfd(need, false);
        assert!(
            matches!(ShmMap::map(unsealed.as_fd(), g), Err(Error::Invalid(m)) if m.contains("sealed"))
        );
        // irmd said a bigger geometry than the memfd was made for.
        let fds = create(g).unwrap();
        assert!(ShmMap::map(fds.memfd.as_fd(), geom(16, 256)).is_err());
        assert!(ShmMap::map(fds.memfd.as_fd(), geom(3, 256)).is_err());
        assert!(ShmMap::map(fds.memfd.as_fd(), g).is_ok());
        // Right size and seals, but never initialised by `create`.
        let blank = sealed_memfd(need, true);
        assert!(
            matches!(ShmMap::map(blank.as_fd(), g), Err(Error::Invalid(m)) if m.contains("layout version"))
        );
    }

    #[test]
    fn geometry_is_validated() {
        for ok in [geom(2, 1), geom(65536, 65536), geom(64, 1500)] {
            validate_geometry(ok).unwrap();
        }
        for (bad, word) in [
            (geom(0, 10), "power of two"),
            (geom(1, 10), "power of two"),
            (geom(6, 10), "power of two"),
            (geom(131072, 10), "power of two"),
            (geom(4, 0), "slot_size"),
            (geom(4, 65537), "slot_size"),
        ] {
            match validate_geometry(bad) {
                Err(Error::Invalid(m)) => assert!(m.contains(word), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(create(bad).is_err());
        }
        // Header page + two page-rounded rings of 64-byte-rounded slots.
        assert_eq!(
            required_len(geom(64, 1500)),
            4096 + 2 * round_up(64 * 1536, 4096) as usize
        );
        assert_eq!(required_len(geom(2, 1)), 4096 * 3);
    }

    fn resident_bytes(map: &ShmMap) -> usize {
        let page = 4096;
        let mut vec = vec![0u8; map.len.div_ceil(page)];
        // SAFETY: base/len describe a live mapping; vec has one byte per page.
        let rc = unsafe { libc::mincore(map.base.as_ptr().cast(), map.len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&b| b & 1 != 0).count() * page
    }

    #[test]
    fn idle_flow_stays_small_in_memory() {
        // 1024 slots of 9000 bytes: an 18 MB memfd, of which almost nothing is resident.
        let f = flow(geom(1024, 9000));
        assert!(f.ipcp.map.len > 18_000_000);
        f.app.write(&[1; 100], None, false).unwrap();
        pop(&f.ipcp).unwrap();
        f.ipcp.push_rx(&[2; 100]).unwrap();
        read_nb(&f.app).unwrap();
        let r = resident_bytes(&f.ipcp.map);
        assert!(r > 0 && r < 64 << 10, "resident {r} bytes");
    }

    #[test]
    fn concurrent_writers_on_one_app_end_do_not_corrupt_the_ring() {
        let f = flow(geom(8, 64));
        let per_writer = 5000u32;
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                let app = f.app.clone();
                thread::spawn(move || {
                    for i in 0..per_writer {
                        // [seq (4 bytes)] [filler] [writer id]
                        let mut sdu = i.to_le_bytes().to_vec();
                        sdu.resize(4 + (i % 56) as usize, w);
                        sdu.push(w);
                        app.write(&sdu, None, false).unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0u32; 2];
        let deadline = Instant::now() + Duration::from_secs(30);
        while next.iter().sum::<u32>() < 2 * per_writer {
            assert!(Instant::now() < deadline, "stuck at {next:?}");
            match pop(&f.ipcp) {
                Some(sdu) => {
                    let w = *sdu.last().unwrap();
                    let i = u32::from_le_bytes(sdu[0..4].try_into().unwrap());
                    assert_eq!(i, next[w as usize], "writer {w} out of order");
                    assert_eq!(sdu.len(), 5 + (i % 56) as usize);
                    next[w as usize] += 1;
                }
                None => thread::yield_now(),
            }
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
    }

    #[test]
    fn sdus_pushed_before_a_concurrent_down_all_arrive_first() {
        for round in 0..200u32 {
            let f = flow(geom(8, 16));
            let ipcp = f.ipcp.clone();
            let k = round % 8;
            let producer = thread::spawn(move || {
                for i in 0..k {
                    assert!(ipcp.push_rx(&i.to_le_bytes()).unwrap());
                }
                ipcp.set_state(FlowState::Down);
            });
            let mut got = 0u32;
            let mut buf = [0u8; 16];
            let deadline = Instant::now() + Duration::from_secs(5);
            let end = loop {
                match f.app.read(&mut buf, Some(deadline), round % 2 == 0) {
                    Ok(4) => {
                        assert_eq!(buf[..4], got.to_le_bytes());
                        got += 1;
                    }
                    Err(Error::Again) => thread::yield_now(),
                    other => break other,
                }
            };
            producer.join().unwrap();
            assert_eq!((end, got), (Err(Error::FlowDown), k), "round {round}");
        }
    }

    // ---- hostile application ----

    #[test]
    fn bogus_tx_head_is_an_error_not_a_crash() {
        let f = flow(geom(8, 32));
        let tx = &f.app.map.header().tx;
        for bogus in [9u32, 100, u32::MAX, u32::MAX - 7] {
            tx.head.store(bogus, Ordering::Relaxed);
            assert!(
                matches!(f.ipcp.pop_tx(|b| b.len()), Err(Error::Invalid(m)) if m.contains("tx ring corrupt"))
            );
            assert!(f.ipcp.pop_tx_batch(4, |_| {}).is_err());
            assert!(
                !f.ipcp.arm_tx_wakeup(),
                "corruption must be seen by the next pop, not slept on"
            );
        }
        // Exactly `slots` ahead is a full ring, not corruption.
        tx.head.store(8, Ordering::Relaxed);
        assert_eq!(f.ipcp.pop_tx(|b| b.len()).unwrap(), Some(0));
    }

    #[test]
    fn bogus_tx_lengths_are_errors() {
        let f = flow(geom(4, 32));
        for bad in [33u32, 64, u32::MAX] {
            f.app.write(b"ok", None, false).unwrap();
            let tail = f.ipcp.tx.lock().unwrap().tail;
            f.app
                .map
                .slot_len(Dir::Tx, tail)
                .store(bad, Ordering::Relaxed);
            assert!(
                matches!(f.ipcp.pop_tx(|b| b.len()), Err(Error::Invalid(m)) if m.contains("length"))
            );
            f.app
                .map
                .slot_len(Dir::Tx, tail)
                .store(32, Ordering::Relaxed);
            assert_eq!(f.ipcp.pop_tx(|b| b.len()).unwrap(), Some(32));
        }
    }

    #[test]
    fn bogus_rx_tail_and_geometry_fields() {
        let f = flow(geom(4, 32));
        let h = f.app.map.header();
        // Geometry in shared memory is informational: the IPCP does not read it.
        h.identity.slots.store(u32::MAX, Ordering::Relaxed);
        h.identity.slot_size.store(u32::MAX, Ordering::Relaxed);
        assert_eq!(
            f.ipcp.push_rx(&[0; 33]),
            Err(Error::MsgSize { len: 33, max: 32 })
        );
        assert!(f.ipcp.push_rx(b"fine").unwrap());
        // Tail ahead of the IPCP's head: the IPCP reads the tail only when its
        // cached view says full, so it finds out within `slots` pushes.
        h.rx.tail.store(7, Ordering::Relaxed);
        let results: Vec<_> = (0..4).map(|_| f.ipcp.push_rx(b"x")).collect();
        assert_eq!(results[..3], [Ok(true), Ok(true), Ok(true)]);
        assert!(
            matches!(&results[3], Err(Error::Invalid(m)) if m.contains("rx ring corrupt")),
            "{results:?}"
        );
        // Faking the head the IPCP owns changes nothing for the IPCP.
        h.rx.tail.store(4, Ordering::Relaxed);
        h.rx.head.store(12345, Ordering::Relaxed);
        assert!(f.ipcp.push_rx(b"y").unwrap());
        assert_eq!(h.rx.head.load(Ordering::Relaxed), 5);
        // An unknown state word reads as Down, and never panics.
        h.state.store(77, Ordering::Relaxed);
        assert_eq!(f.monitor.stats().state, FlowState::Down);
    }

    /// Where a hostile write lands.
    #[derive(Debug, Clone)]
    enum Scribble {
        /// A 32-bit word at a 4-aligned offset anywhere in the file.
        Word { offset: usize, value: u32 },
        /// Raw bytes at any offset.
        Bytes { offset: usize, bytes: Vec<u8> },
        /// One of the control words, with an interesting value.
        Ctrl { which: usize, value: u32 },
    }

    fn scribble_strategy(len: usize) -> impl Strategy<Value = Scribble> {
        let value = prop_oneof![any::<u32>(), 0u32..40, (u32::MAX - 40)..=u32::MAX];
        prop_oneof![
            (0..len / 4, value.clone()).prop_map(|(w, value)| Scribble::Word {
                offset: w * 4,
                value
            }),
            (0..len, proptest::collection::vec(any::<u8>(), 1..24))
                .prop_map(|(offset, bytes)| Scribble::Bytes { offset, bytes }),
            (0usize..16, value).prop_map(|(which, value)| Scribble::Ctrl { which, value }),
        ]
    }

    fn apply(map: &ShmMap, s: &Scribble) {
        let h = map.header();
        match s {
            Scribble::Word { offset, value } => {
                // SAFETY: 4-aligned offset inside the mapping.
                unsafe { &*(map.base.as_ptr().add(*offset) as *const AtomicU32) }
                    .store(*value, Ordering::Relaxed)
            }
            Scribble::Bytes { offset, bytes } => {
                let n = bytes.len().min(map.len - offset);
                // SAFETY: offset + n <= len; only this thread touches the mapping now.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.base.as_ptr().add(*offset), n)
                }
            }
            Scribble::Ctrl { which, value } => {
                let words = [
                    &*h.tx.head,
                    &*h.tx.tail,
                    &*h.rx.head,
                    &*h.rx.tail,
                    &*h.tx.consumer_sleeping,
                    &*h.tx.producer_waiting,
                    &*h.rx.consumer_sleeping,
                    &*h.state,
                    &h.identity.slots,
                    &h.identity.slot_size,
                ];
                if let Some(w) = words.get(*which) {
                    w.store(*value, Ordering::Relaxed);
                } else {
                    // A slot length word.
                    map.slot_len(Dir::Tx, *which as u32)
                        .store(*value, Ordering::Relaxed);
                }
            }
        }
    }

    /// Drive every IPCP and irmd entry point; check each SDU slice the IPCP
    /// hands out lies inside one slot of its own mapping.
    fn exercise_ipcp(f: &Flow) {
        let m = &f.ipcp.map;
        let (lo, hi) = (m.base.as_ptr() as usize, m.base.as_ptr() as usize + m.len);
        let slot_size = m.geom.slot_size as usize;
        let check = |b: &[u8]| {
            let p = b.as_ptr() as usize;
            assert!(b.len() <= slot_size, "slice of {} bytes", b.len());
            assert!(
                p >= lo + PAGE as usize && p + b.len() <= hi,
                "slice outside the rings"
            );
        };
        for _ in 0..20 {
            let _ = f.ipcp.pop_tx(|b| check(b));
            let _ = f.ipcp.pop_tx_batch(5, |b| check(b));
            let _ = f.ipcp.push_rx(&[9; 40]);
            let _ = f.ipcp.arm_tx_wakeup();
            f.ipcp.clear_tx_wakeup();
        }
        let _ = f.ipcp.stats();
        let _ = f.monitor.stats();
        f.ipcp.note_tx(1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn ipcp_survives_any_shared_memory_content(
            sdus in proptest::collection::vec(0usize..=48, 0..8),
            scribbles in proptest::collection::vec(scribble_strategy(required_len(geom(8, 48))), 1..24),
        ) {
            let f = flow(geom(8, 48));
            for (i, n) in sdus.iter().enumerate() {
                f.app.write(&vec![i as u8; *n], None, true).unwrap();
                f.ipcp.push_rx(&[i as u8; 7]).unwrap();
            }
            for s in &scribbles {
                apply(&f.app.map, s);
                exercise_ipcp(&f);
            }
        }
    }

    #[test]
    fn ipcp_survives_a_concurrent_scribbler() {
        let f = flow(geom(8, 48));
        let stop = Arc::new(AtomicBool::new(false));
        let scribbler = {
            let app = f.app.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut x = 0x9E37_79B9u32;
                let words = app.map.len / 4;
                while !stop.load(Ordering::Relaxed) {
                    // xorshift: cheap, deterministic garbage.
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let s = match x % 3 {
                        0 => Scribble::Ctrl {
                            which: (x >> 8) as usize % 16,
                            value: x.rotate_left(7) % 24,
                        },
                        1 => Scribble::Ctrl {
                            which: (x >> 8) as usize % 16,
                            value: x,
                        },
                        _ => Scribble::Word {
                            offset: (x as usize % words) * 4,
                            value: x >> 3,
                        },
                    };
                    apply(&app.map, &s);
                }
            })
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            exercise_ipcp(&f);
        }
        stop.store(true, Ordering::Relaxed);
        scribbler.join().unwrap();
    }
}
