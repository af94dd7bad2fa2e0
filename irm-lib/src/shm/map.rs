//! Mapping a flow's memfd, and [`SharedBytes`]: the only way to touch the
//! bytes of a slot.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::stat::fstat;

use super::statelog::{self, StateLog};
use super::wake::{signal, wake_if_armed};
use super::{
    required_len, required_len_u64, ring_offset, slot_stride, state_to_word, validate_geometry,
    word_to_state, Dir, Header, RingCtrl, MAGIC, PAGE, SLOT_HDR, VERSION,
};
use crate::error::{Error, Result};
use crate::proto::{FlowState, RingGeometry};
use crate::sys::Mmap;

/// A mapping of a flow's memfd (munmap on Drop). Either the whole file
/// ([`ShmMap::map`]) or only its header page ([`ShmMap::map_header`], enough for
/// irmd's [`Monitor`]).
#[derive(Debug)]
pub struct ShmMap {
    /// The mapping (its start: [`ShmMap::base`]).
    pub(super) mmap: Mmap,
    pub(super) geom: RingGeometry,
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
    pub(super) fn check_identity(self) -> Result<ShmMap> {
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

    pub(super) fn map_prefix(
        memfd: BorrowedFd<'_>,
        geom: RingGeometry,
        has_rings: bool,
    ) -> Result<ShmMap> {
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
        let mmap = Mmap::shared(memfd, len, 0, false)?;
        Ok(ShmMap {
            mmap,
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

    /// Start of the mapping.
    pub(super) fn base(&self) -> NonNull<u8> {
        self.mmap.as_non_null()
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least one page long
        // (size_of::<Header>() <= PAGE, asserted at compile time); every field is
        // an atomic, so concurrent writers in other processes are allowed.
        unsafe { self.base().cast::<Header>().as_ref() }
    }

    pub(super) fn ctrl(&self, dir: Dir) -> &RingCtrl {
        match dir {
            Dir::Tx => &self.header().tx,
            Dir::Rx => &self.header().rx,
        }
    }

    /// Start of the slot for free-running `index`; always inside the mapping.
    fn slot(&self, dir: Dir, index: u32) -> NonNull<u8> {
        debug_assert!(self.has_rings);
        let i = u64::from(index & (self.geom.slots - 1));
        let off = ring_offset(self.geom, dir) + i * slot_stride(self.geom);
        // SAFETY: i < slots, so off + stride <= ring_offset + ring_bytes <= len:
        // the result stays inside the mapping (and is therefore non-null).
        unsafe { self.base().add(off as usize) }
    }

    /// Ask the CPU to start fetching the first two cache lines of the slot
    /// at `index` (its length word and the first 120 data bytes) ahead of
    /// use; `write`: in the exclusive state, for a producer about to store
    /// into it. A hint only: it never faults and changes nothing a program
    /// can observe, so any index is fine. The slots of a ring are visited
    /// in order but far apart (one slot per maximum SDU), which the
    /// hardware prefetchers do not follow: without the hint every SDU
    /// waits for its slot's lines to come from the other side's core.
    #[inline]
    pub(super) fn prefetch_slot(&self, dir: Dir, index: u32, write: bool) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.slot(dir, index).as_ptr().cast::<i8>().cast_const();
            // Two lines: a slot is 64-aligned and at least 64 bytes of data long.
            let q = p.wrapping_add(64);
            if write {
                // SAFETY: PREFETCHW reads and writes no memory and never
                // faults, whatever the address (both lie inside the mapping
                // anyway); CPUs before it execute it as a NOP.
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{p}]",
                        "prefetchw [{q}]",
                        p = in(reg) p,
                        q = in(reg) q,
                        options(nostack, preserves_flags, readonly)
                    );
                }
            } else {
                // SAFETY: SSE is part of the x86-64 baseline; a prefetch
                // reads and writes no memory and never faults.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(p);
                    _mm_prefetch::<_MM_HINT_T0>(q);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (dir, index, write);
    }

    /// The length word at the start of a slot (atomic: either side may write it).
    pub(super) fn slot_len(&self, dir: Dir, index: u32) -> &AtomicU32 {
        // SAFETY: a slot starts 64-aligned inside the mapping and begins with a
        // u32, accessed only atomically; the reference lives no longer than `self`.
        unsafe { self.slot(dir, index).cast::<AtomicU32>().as_ref() }
    }

    /// The first `len` data bytes of a slot (`len` is clamped to slot_size).
    pub(super) fn slot_data(&self, dir: Dir, index: u32, len: usize) -> SharedBytes<'_> {
        let len = len.min(self.geom.slot_size as usize);
        // SAFETY: the data follows the 8-byte slot header; slot_size bytes of
        // it lie inside the slot, inside the mapping.
        let ptr = unsafe { self.slot(dir, index).add(SLOT_HDR as usize) };
        SharedBytes {
            ptr,
            len,
            _map: PhantomData,
        }
    }

    pub(super) fn state(&self) -> FlowState {
        word_to_state(self.header().state.load(Ordering::Acquire))
    }

    pub(super) fn state_log(&self) -> StateLog {
        StateLog(self.header().state_log.load(Ordering::SeqCst))
    }

    pub(super) fn stats(&self) -> Stats {
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

    /// Set the state word, then wake the application: the rx pipe always (a
    /// reader or a state-only watcher may wait on it without arming), the tx
    /// pipe only for a writer that declared it waits (it re-checks the state
    /// after arming: the fences make one of the two see the other), so a
    /// flow whose writer never blocked never gets a page in its tx pipe.
    /// A real change is appended to the change log after the state word
    /// (so an event set sees a flap that ended where it began).
    pub(super) fn set_state(&self, s: FlowState, rx_wake: BorrowedFd<'_>, tx_wake: BorrowedFd<'_>) {
        self.set_state_word(state_to_word(s), rx_wake, tx_wake);
    }

    pub(super) fn set_state_word(&self, w: u32, rx_wake: BorrowedFd<'_>, tx_wake: BorrowedFd<'_>) {
        let h = self.header();
        if h.state.swap(w, Ordering::SeqCst) != w {
            statelog::append(&h.state_log, word_to_state(w));
        }
        signal(rx_wake);
        wake_if_armed(&self.ctrl(Dir::Tx).producer_waiting, tx_wake);
    }

    /// The state word as stored (see [`super::layout::STATE`]).
    pub(super) fn state_word(&self) -> u32 {
        self.header().state.load(Ordering::Acquire)
    }
}

/// Counters and state of one flow as the mapping holds them. The
/// application can write the mapping: trust these only for its own flow;
/// the IPCP's own copy is [`super::FlowCounters`].
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
// Shared bytes
// ---------------------------------------------------------------------------

/// Bytes of a mapping another process may rewrite at any time. No `Deref` to
/// `[u8]` (a reference would assert nobody writes them): data moves in and out
/// only by copies made of volatile accesses, and a racing writer can only
/// change what the copy contains.
#[derive(Debug, Clone, Copy)]
pub struct SharedBytes<'m> {
    ptr: NonNull<u8>,
    len: usize,
    _map: PhantomData<&'m ShmMap>,
}

/// Word size of the volatile copies.
const WORD: usize = std::mem::size_of::<u64>();

impl SharedBytes<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy the first `min(len, dst.len())` bytes into `dst`; returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        let src = self.ptr.as_ptr();
        let mut i = 0;
        if src.align_offset(WORD) == 0 {
            while i + WORD <= n {
                // SAFETY: src + i is 8-aligned (slot data is) and i + 8 <= len,
                // inside the mapping that outlives 'm; volatile, because
                // another process may write these bytes meanwhile.
                let w = unsafe { src.add(i).cast::<u64>().read_volatile() };
                dst[i..i + WORD].copy_from_slice(&w.to_ne_bytes());
                i += WORD;
            }
        }
        while i < n {
            // SAFETY: i < len, inside the mapping; volatile as above.
            dst[i] = unsafe { src.add(i).read_volatile() };
            i += 1;
        }
        n
    }

    /// Copy `src` into the first `min(len, src.len())` bytes; returns how many.
    pub(super) fn copy_from(&self, src: &[u8]) -> usize {
        let n = self.len.min(src.len());
        let dst = self.ptr.as_ptr();
        let mut i = 0;
        if dst.align_offset(WORD) == 0 {
            while i + WORD <= n {
                let mut w = [0u8; WORD];
                w.copy_from_slice(&src[i..i + WORD]);
                // SAFETY: dst + i is 8-aligned and i + 8 <= len, inside the
                // mapping; volatile, because another process may read or
                // write these bytes meanwhile.
                unsafe {
                    dst.add(i)
                        .cast::<u64>()
                        .write_volatile(u64::from_ne_bytes(w))
                };
                i += WORD;
            }
        }
        while i < n {
            // SAFETY: i < len, inside the mapping; volatile as above.
            unsafe { dst.add(i).write_volatile(src[i]) };
            i += 1;
        }
        n
    }
}
