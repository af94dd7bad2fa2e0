//! One AF_XDP ring, mapped from the kernel: a power-of-two array of entries
//! with a producer and a consumer index. Each ring has exactly one producer
//! and one consumer, one of them the kernel; the indices run freely and are
//! masked on access. The side that writes entries publishes its index with
//! release ordering; the other side reads it with acquire ordering.
//!
//! [`ProdRing`] is a ring we fill (fill ring, tx ring), [`ConsRing`] one we
//! drain (rx ring, completion ring).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};

use irm::sys::Mmap;

/// The mapping and the pointers into it.
struct Ring<T> {
    /// Owns the mapping the pointers below point into.
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
}

/// Where the ring's parts lie in a mapping of `map_len` bytes, checked:
/// the three index words are 4-aligned and inside the mapping, the entries
/// are aligned for `T` and end exactly at `map_len`. Returns `map_len`.
fn checked_layout<T>(off: &libc::xdp_ring_offset, size: u32) -> io::Result<usize> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("AF_XDP ring layout: {why} (offsets {off:?}, {size} entries)"),
        )
    };
    if !size.is_power_of_two() {
        return Err(bad("size is not a power of two"));
    }
    let entries = (size as usize)
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| bad("too many entries"))?;
    let desc = usize::try_from(off.desc).map_err(|_| bad("entries out of range"))?;
    let map_len = desc
        .checked_add(entries)
        .ok_or_else(|| bad("entries out of range"))?;
    if desc % std::mem::align_of::<T>() != 0 {
        return Err(bad("entries misaligned"));
    }
    for (name, o) in [
        ("producer", off.producer),
        ("consumer", off.consumer),
        ("flags", off.flags),
    ] {
        let fits = usize::try_from(o)
            .ok()
            .and_then(|o| o.checked_add(4))
            .is_some_and(|end| end <= map_len);
        if !fits || o % 4 != 0 {
            return Err(bad(&format!(
                "{name} index misaligned or outside the mapping"
            )));
        }
    }
    Ok(map_len)
}

impl<T: Copy> Ring<T> {
    /// Map the ring at page offset `pgoff` of `fd`, laid out as `off` says.
    /// The layout is checked first ([`checked_layout`]), so no offset can put
    /// a pointer outside the mapping; a regular file (the tests' stand-in for
    /// the kernel) must also be long enough, so no access can fault. An
    /// AF_XDP socket refuses a mapping larger than its ring.
    fn map(
        fd: BorrowedFd<'_>,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<Ring<T>> {
        let map_len = checked_layout::<T>(off, size)?;
        let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
        if st.st_mode & libc::S_IFMT == libc::S_IFREG
            && (st.st_size as u64) < pgoff.saturating_add(map_len as u64)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring file of {} bytes is shorter than the ring", st.st_size),
            ));
        }
        // The kernel checks offset and length against the socket's ring.
        let map = Mmap::shared(fd, map_len, pgoff, true)?;
        // Every offset was checked to lie inside the `map_len` bytes mapped.
        let base = map.as_ptr();
        let at = |o: u64| base.wrapping_add(o as usize);
        Ok(Ring {
            _map: map,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            mask: size - 1,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: the kernel placed an aligned u32 at this offset of the live
        // mapping, which lasts as long as `self`; it is only accessed atomically.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // The flag is read after our index store: keep the two in that order.
        fence(Ordering::SeqCst);
        // SAFETY: as for `producer`.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // `mask` keeps the index inside the `size` entries the mapping holds.
        self.entries.wrapping_add((idx & self.mask) as usize)
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }
}

/// A ring we produce into: write entries, then [`ProdRing::submit`] them.
pub struct ProdRing<T> {
    ring: Ring<T>,
    /// Next index to write (ahead of the published producer until submit).
    next: u32,
}

impl<T: Copy> ProdRing<T> {
    pub fn map(
        fd: BorrowedFd<'_>,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<Self> {
        let ring = Ring::map(fd, pgoff, off, size)?;
        let next = ring.producer().load(Ordering::Relaxed);
        Ok(ProdRing { ring, next })
    }

    /// Entries that can still be written.
    pub fn free(&self) -> u32 {
        let consumed = self.ring.consumer().load(Ordering::Acquire);
        self.ring.size() - self.next.wrapping_sub(consumed)
    }

    /// Write one entry (not yet visible to the kernel). False when full.
    pub fn push(&mut self, entry: T) -> bool {
        if self.free() == 0 {
            return false;
        }
        // SAFETY: the slot is inside the mapping and the kernel does not read it
        // until the producer index passes it, which only `submit` does.
        unsafe { self.ring.slot(self.next).write(entry) };
        self.next = self.next.wrapping_add(1);
        true
    }

    /// Publish every entry written so far.
    pub fn submit(&mut self) {
        self.ring.producer().store(self.next, Ordering::Release);
    }

    /// Entries published that the kernel has not consumed yet.
    pub fn pending(&self) -> u32 {
        self.next
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// The kernel asks for a syscall before it looks at this ring again.
    pub fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }
}

/// A ring we consume from: [`ConsRing::peek`] entries, then release them.
pub struct ConsRing<T> {
    ring: Ring<T>,
    /// Next index to read (the published consumer index, until release).
    next: u32,
}

impl<T: Copy> ConsRing<T> {
    pub fn map(
        fd: BorrowedFd<'_>,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<Self> {
        let ring = Ring::map(fd, pgoff, off, size)?;
        let next = ring.consumer().load(Ordering::Relaxed);
        Ok(ConsRing { ring, next })
    }

    /// Entries the kernel has published that we have not released.
    pub fn available(&self) -> u32 {
        // At most `size`: the kernel never produces past our consumer index.
        let produced = self.ring.producer().load(Ordering::Acquire);
        produced.wrapping_sub(self.next).min(self.ring.size())
    }

    /// The `i`-th available entry (`i < available()`).
    pub fn peek(&self, i: u32) -> T {
        // SAFETY: the slot is inside the mapping, and the kernel published it
        // (acquire in `available`) and will not rewrite it until we release it.
        unsafe { self.ring.slot(self.next.wrapping_add(i)).read() }
    }

    /// Hand `n` entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.next = self.next.wrapping_add(n);
        self.ring.consumer().store(self.next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    //! A memfd stands in for the kernel's side: the same pages mapped twice,
    //! once as the ring we produce into and once as the ring that consumes.

    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    const OFF: libc::xdp_ring_offset = libc::xdp_ring_offset {
        producer: 0,
        consumer: 64,
        desc: 256,
        flags: 128,
    };

    fn shared_ring(size: u32, start: u32) -> OwnedFd {
        // SAFETY: memfd_create with a valid name; the fd is owned at once.
        let fd = unsafe { libc::memfd_create(c"ring".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = OFF.desc as usize + size as usize * 8;
        let mut bytes = vec![0u8; len];
        bytes[..4].copy_from_slice(&start.to_ne_bytes());
        bytes[64..68].copy_from_slice(&start.to_ne_bytes());
        // SAFETY: writes `len` bytes from a live buffer into our memfd.
        let written = unsafe { libc::pwrite(fd.as_raw_fd(), bytes.as_ptr().cast(), len, 0) };
        assert_eq!(written, len as isize);
        fd
    }

    #[test]
    fn entries_pass_in_order_and_the_ring_never_overfills() {
        let fd = shared_ring(8, 0);
        let mut prod = ProdRing::<u64>::map(fd.as_fd(), 0, &OFF, 8).unwrap();
        let mut cons = ConsRing::<u64>::map(fd.as_fd(), 0, &OFF, 8).unwrap();
        assert_eq!(prod.free(), 8);
        for i in 0..8 {
            assert!(prod.push(100 + i));
        }
        assert!(!prod.push(999), "a full ring takes no more");
        assert_eq!(cons.available(), 0, "nothing is visible before submit");
        prod.submit();
        assert_eq!((cons.available(), prod.pending()), (8, 8));
        assert_eq!(
            (0..8).map(|i| cons.peek(i)).collect::<Vec<_>>(),
            (100..108).collect::<Vec<_>>()
        );
        cons.release(3);
        assert_eq!((prod.free(), prod.pending(), cons.available()), (3, 5, 5));
    }

    #[test]
    fn indices_wrap_around_u32() {
        let start = u32::MAX - 2;
        let fd = shared_ring(4, start);
        let mut prod = ProdRing::<u64>::map(fd.as_fd(), 0, &OFF, 4).unwrap();
        let mut cons = ConsRing::<u64>::map(fd.as_fd(), 0, &OFF, 4).unwrap();
        for round in 0..5u64 {
            for i in 0..3 {
                assert!(prod.push(round * 10 + i));
            }
            prod.submit();
            assert_eq!(cons.available(), 3);
            for i in 0..3 {
                assert_eq!(cons.peek(i as u32), round * 10 + i);
            }
            cons.release(3);
            assert_eq!((prod.free(), cons.available()), (4, 0));
        }
    }

    #[test]
    fn a_producer_index_out_of_range_is_capped_at_the_ring_size() {
        let fd = shared_ring(4, 0);
        let cons = ConsRing::<u64>::map(fd.as_fd(), 0, &OFF, 4).unwrap();
        let bad = 1000u32.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live buffer into our memfd.
        unsafe { libc::pwrite(fd.as_raw_fd(), bad.as_ptr().cast(), 4, 0) };
        assert_eq!(cons.available(), 4);
    }

    #[test]
    fn bad_layouts_are_refused_not_mapped() {
        let fd = shared_ring(8, 0);
        let with = |f: fn(&mut libc::xdp_ring_offset)| {
            let mut off = OFF;
            f(&mut off);
            off
        };
        for off in [
            with(|o| o.producer = 1 << 40),
            with(|o| o.consumer = 66),
            with(|o| o.flags = OFF.desc + 8 * 8),
            with(|o| o.desc = 260),
            with(|o| o.desc = u64::MAX - 8),
        ] {
            let r = ConsRing::<u64>::map(fd.as_fd(), 0, &off, 8);
            assert_eq!(
                r.err().map(|e| e.kind()),
                Some(io::ErrorKind::InvalidInput),
                "{off:?}"
            );
        }
        // Not a power of two; more entries than the file holds.
        assert!(ProdRing::<u64>::map(fd.as_fd(), 0, &OFF, 6).is_err());
        assert!(ProdRing::<u64>::map(fd.as_fd(), 0, &OFF, 16).is_err());
        assert!(ProdRing::<u64>::map(fd.as_fd(), 4096, &OFF, 8).is_err());
        assert!(ProdRing::<u64>::map(fd.as_fd(), 0, &OFF, 8).is_ok());
    }

    #[test]
    fn the_wakeup_flag_is_read() {
        let fd = shared_ring(4, 0);
        let prod = ProdRing::<u64>::map(fd.as_fd(), 0, &OFF, 4).unwrap();
        assert!(!prod.needs_wakeup());
        let flag = libc::XDP_RING_NEED_WAKEUP.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live buffer into our memfd.
        unsafe { libc::pwrite(fd.as_raw_fd(), flag.as_ptr().cast(), 4, 128) };
        assert!(prod.needs_wakeup());
    }
}
