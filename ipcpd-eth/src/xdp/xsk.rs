//! One AF_XDP socket bound to one receive queue, with its own UMEM.
//!
//! The UMEM is one anonymous mapping cut into [`FRAME_SIZE`] chunks: the
//! first [`RX_FRAMES`] chunks receive (they live in the fill ring, the kernel
//! or the rx ring), the next [`TX_FRAMES`] send (they live in `tx_free`, the
//! tx ring, the kernel or the completion ring). Each ring is as large as the
//! set of chunks that can be in it, so a push never finds a ring full.
//!
//! Frames are copied between the UMEM and the IPCP's buffers; the kernel's
//! own copy mode (veth, SKB mode) copies once more on its side.
//!
//! Multi-buffer (`XDP_USE_SG`, for MTUs above [`MAX_FRAME`] less the
//! Ethernet header): a frame arrives as a chain of up to [`MAX_SEGS`]
//! descriptors and goes out as one; [`super::chain`] finds the chains and
//! cuts the frames, this module copies them.
#![allow(unsafe_code)]

use super::chain::{self, Chain};
use super::ring::{ConsRing, ProdRing};
use crate::raw::TxSlot;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// Bytes per UMEM chunk: one page, the largest chunk copy mode takes.
pub const FRAME_SIZE: u32 = 4096;
/// Receive chunks. A fill ring of 4096 lost nothing on veth where 2048 lost frames.
pub const RX_FRAMES: u32 = 4096;
/// Transmit chunks.
pub const TX_FRAMES: u32 = 2048;
/// What the kernel keeps free in front of a received frame (XDP_PACKET_HEADROOM).
const KERNEL_HEADROOM: u32 = 256;
/// The largest Ethernet frame (without FCS) one chunk receives.
pub const MAX_FRAME: usize = (FRAME_SIZE - KERNEL_HEADROOM) as usize;
/// Descriptors per frame in multi-buffer mode, at most: the kernel's copy
/// mode takes a frame of up to MAX_SKB_FRAGS (17 by default) buffers plus
/// the first; one fewer keeps a margin. 17 receive chunks hold 65 280 bytes.
pub const MAX_SEGS: u32 = 17;
/// The largest Ethernet frame a chain receives (before the IPCP's own limit).
pub const MAX_SG_FRAME: usize = MAX_SEGS as usize * MAX_FRAME;
/// How long `send` waits for a transmit chunk when all are in flight.
const TX_WAIT: Duration = Duration::from_millis(200);
/// sendto calls per `send`, at most: copy mode sends 32 frames per call.
const KICK_ROUNDS: usize = 2 * (TX_FRAMES as usize / 32);

/// The anonymous memory the socket's frames live in.
struct Umem {
    base: *mut u8,
    len: usize,
}

impl Umem {
    fn new(len: usize) -> io::Result<Umem> {
        // SAFETY: a fresh private anonymous mapping; checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Umem {
            base: base.cast(),
            len,
        })
    }

    /// The bytes at `addr..addr+len`, if that lies inside one chunk.
    fn chunk_bytes(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let start = usize::try_from(addr).ok().filter(|&s| s < self.len)?;
        let chunk_end = (start / FRAME_SIZE as usize + 1) * FRAME_SIZE as usize;
        (start + len <= chunk_end.min(self.len)).then(|| self.base.wrapping_add(start))
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// Counters the kernel keeps for the socket (XDP_STATISTICS).
#[derive(Debug, Default, Clone, Copy)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_invalid: u64,
}

pub struct Xsk {
    // Rings first: they are unmapped before the socket closes.
    rx: ConsRing<libc::xdp_desc>,
    tx: ProdRing<libc::xdp_desc>,
    fill: ProdRing<u64>,
    comp: ConsRing<u64>,
    fd: OwnedFd,
    umem: Umem,
    tx_free: Vec<u64>,
    /// Chunks handed out by [`Xsk::reserve`] (taken from `tx_free`), and
    /// their rooms, in the same order.
    tx_reserved: Vec<u64>,
    tx_slots: Vec<TxSlot>,
    zero_copy: bool,
    /// Frames refused by `send` because they exceed a chunk (a chain of
    /// [`MAX_SEGS`] in multi-buffer mode).
    pub tx_too_big: u64,
    /// Bound with `XDP_USE_SG`: frames may take several descriptors.
    sg: bool,
    /// Multi-buffer receive: the rest of a chain dropped as too long is
    /// skipped up to its end.
    rx_skipping: bool,
    /// Received chains dropped, by [`chain::DropWhy`] (see [`Xsk::rx_chain_drops`]).
    rx_drops: [u64; 4],
    /// A frame with an 802.1Q tag put in, to be cut into chunks.
    tx_scratch: Vec<u8>,
}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live value whose exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Read an XDP socket option into `val` (a libc struct of plain integers).
fn getsockopt<T>(fd: BorrowedFd<'_>, name: i32, val: &mut T) -> io::Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `val`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (val as *mut T).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else if len as usize != std::mem::size_of::<T>() {
        Err(io::Error::other(format!(
            "kernel answered XDP option {name} with {len} bytes (too old a kernel?)"
        )))
    } else {
        Ok(())
    }
}

// SAFETY: every pointer an Xsk holds (its rings', its UMEM's) points into
// mappings this Xsk alone owns and hands out no reference to; moving it to
// another thread (a queue's worker) moves that sole ownership.
unsafe impl Send for Xsk {}

impl Xsk {
    /// Create the socket and its UMEM and bind it to `queue` of `ifindex`:
    /// zero-copy when asked (the driver must offer it), else copy mode;
    /// multi-buffer (`XDP_USE_SG`) when `sg`.
    pub fn open(ifindex: u32, queue: u32, zero_copy: bool, sg: bool) -> io::Result<Xsk> {
        // SAFETY: plain socket() call; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Copy mode makes an skb per sent frame, charged to the socket's send
        // buffer until the peer consumes it: room for every transmit chunk.
        // Multi-buffer frames fill all 8 MiB of transmit chunks, plus a page
        // and skb overhead per chunk: at 8 MiB, 32 000-byte frames on veth
        // went out in stalls (0.2-2.9 Gbit/s; 11-12 with 64 MiB).
        let sndbuf: libc::c_int = if sg { 64 << 20 } else { 8 << 20 };
        // SAFETY: sndbuf lives across the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&sndbuf as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let umem = Umem::new(((RX_FRAMES + TX_FRAMES) * FRAME_SIZE) as usize)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.base as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &reg)?;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_FILL_RING, &RX_FRAMES)?;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_COMPLETION_RING, &TX_FRAMES)?;
        setsockopt(fd.as_fd(), libc::XDP_RX_RING, &RX_FRAMES)?;
        setsockopt(fd.as_fd(), libc::XDP_TX_RING, &TX_FRAMES)?;
        // SAFETY: xdp_mmap_offsets is plain integers; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS, &mut off)?;
        let b = fd.as_fd();
        let rx = ConsRing::map(b, libc::XDP_PGOFF_RX_RING as u64, &off.rx, RX_FRAMES)?;
        let tx = ProdRing::map(b, libc::XDP_PGOFF_TX_RING as u64, &off.tx, TX_FRAMES)?;
        let mut fill = ProdRing::map(b, libc::XDP_UMEM_PGOFF_FILL_RING, &off.fr, RX_FRAMES)?;
        let comp = ConsRing::map(b, libc::XDP_UMEM_PGOFF_COMPLETION_RING, &off.cr, TX_FRAMES)?;
        // The kernel receives into whatever the fill ring offers once bound.
        for i in 0..RX_FRAMES {
            fill.push(u64::from(i * FRAME_SIZE));
        }
        fill.submit();
        let mode = if zero_copy {
            libc::XDP_ZEROCOPY
        } else {
            libc::XDP_COPY
        };
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: mode | libc::XDP_USE_NEED_WAKEUP | if sg { libc::XDP_USE_SG } else { 0 },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: sxdp is a valid sockaddr_xdp and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sxdp as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let tx_free = (RX_FRAMES..RX_FRAMES + TX_FRAMES)
            .rev()
            .map(|i| u64::from(i * FRAME_SIZE))
            .collect();
        Ok(Xsk {
            rx,
            tx,
            fill,
            comp,
            fd,
            umem,
            tx_free,
            tx_reserved: Vec::with_capacity(crate::raw::BATCH),
            tx_slots: Vec::with_capacity(crate::raw::BATCH),
            zero_copy,
            tx_too_big: 0,
            sg,
            rx_skipping: false,
            rx_drops: [0; 4],
            tx_scratch: Vec::new(),
        })
    }

    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Bound with `XDP_USE_SG` (multi-buffer frames).
    pub fn multi_buffer(&self) -> bool {
        self.sg
    }

    /// Received chains dropped: (bad descriptor, too many descriptors,
    /// larger than the buffer, tail of a too-long chain).
    pub fn rx_chain_drops(&self) -> [u64; 4] {
        self.rx_drops
    }

    /// Copy up to `bufs.len()` received frames out and give their chunks back
    /// to the kernel. A frame larger than its buffer is cut to the buffer
    /// (the parser then refuses it by its length field).
    pub fn recv(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> usize {
        if self.sg {
            return self.recv_chains(bufs, lens);
        }
        let n = self.rx.available().min(bufs.len().min(lens.len()) as u32);
        for i in 0..n {
            let desc = self.rx.peek(i);
            let (buf, len) = (&mut bufs[i as usize], &mut lens[i as usize]);
            *len = 0;
            let take = (desc.len as usize).min(buf.len());
            if let Some(src) = self.umem.chunk_bytes(desc.addr, desc.len as usize) {
                // SAFETY: `src..src+take` lies inside one UMEM chunk that the
                // kernel handed us in the rx ring and does not touch until it is
                // back in the fill ring; `buf` is a distinct Vec of at least `take`.
                unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), take) };
                *len = take;
                self.fill
                    .push(desc.addr - desc.addr % u64::from(FRAME_SIZE));
            }
        }
        if n > 0 {
            self.rx.release(n);
            self.fill.submit();
            if self.fill.needs_wakeup() {
                self.kick_rx();
            }
        }
        self.reap_completions();
        n as usize
    }

    /// [`Xsk::recv`] in multi-buffer mode: each frame is a chain of
    /// descriptors ([`chain::next_chain`]), copied into one buffer end to
    /// end; a chain that is malformed or larger than its buffer is dropped
    /// whole and counted. Every chunk read goes back to the fill ring.
    fn recv_chains(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> usize {
        let avail = self.rx.available();
        let want = bufs.len().min(lens.len());
        let rx_end = u64::from(RX_FRAMES * FRAME_SIZE);
        let (mut i, mut got) = (0u32, 0usize);
        while i < avail && got < want {
            let umem = &self.umem;
            let rx = &self.rx;
            let valid = |d: &libc::xdp_desc| {
                d.addr < rx_end && umem.chunk_bytes(d.addr, d.len as usize).is_some()
            };
            let step = chain::next_chain(
                avail - i,
                |k| rx.peek(i + k),
                self.rx_skipping,
                MAX_SEGS,
                bufs[got].len(),
                valid,
            );
            let segs = match step {
                Chain::Partial => break,
                Chain::Frame { segs, len } => {
                    let buf = &mut bufs[got];
                    let mut at = 0usize;
                    for k in 0..segs {
                        let d = rx.peek(i + k);
                        let n = d.len as usize;
                        // next_chain checked every descriptor (valid) and
                        // the sum against the buffer.
                        if let Some(src) = umem.chunk_bytes(d.addr, n) {
                            // SAFETY: `src..src+n` lies inside one UMEM
                            // chunk the kernel handed us in the rx ring,
                            // untouched until it is back in the fill ring;
                            // `at + n <= len <= buf.len()` (next_chain).
                            unsafe {
                                std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr().add(at), n)
                            };
                            at += n;
                        }
                    }
                    lens[got] = at.min(len);
                    got += 1;
                    segs
                }
                Chain::Drop { segs, why, more } => {
                    self.rx_drops[why as usize] += 1;
                    self.rx_skipping = more;
                    segs
                }
            };
            for k in 0..segs {
                let d = self.rx.peek(i + k);
                if d.addr < rx_end {
                    self.fill.push(d.addr - d.addr % u64::from(FRAME_SIZE));
                }
            }
            i += segs;
        }
        if i > 0 {
            self.rx.release(i);
            self.fill.submit();
            if self.fill.needs_wakeup() {
                self.kick_rx();
            }
        }
        self.reap_completions();
        got
    }

    /// Queue whole Ethernet frames on the tx ring and make the kernel send
    /// them, each with `tag` (an 802.1Q tag) put in after the MACs if given.
    /// Waits (bounded) when every transmit chunk is in flight.
    pub fn send(&mut self, frames: &[&[u8]], tag: Option<[u8; 4]>) -> io::Result<usize> {
        self.reap_completions();
        let extra = if tag.is_some() { 4 } else { 0 };
        let mut sent = 0;
        for frame in frames {
            let len = frame.len() + extra;
            if self.sg && len > FRAME_SIZE as usize && !(tag.is_some() && frame.len() < 12) {
                match self.send_chain(frame, tag)? {
                    Some(true) => sent += 1,
                    Some(false) => self.tx_too_big += 1,
                    None => break,
                }
                continue;
            }
            if len > FRAME_SIZE as usize || (tag.is_some() && frame.len() < 12) {
                self.tx_too_big += 1;
                continue;
            }
            let addr = match self.tx_free.pop() {
                Some(a) => a,
                None => {
                    self.tx.submit();
                    match self.wait_for_tx_chunk()? {
                        Some(a) => a,
                        None => break,
                    }
                }
            };
            let dst = self
                .umem
                .chunk_bytes(addr, len)
                .expect("tx chunks lie inside the UMEM");
            match tag {
                // SAFETY: the chunk is ours (taken from tx_free, not in any
                // ring) and holds `len` bytes (checked above against
                // FRAME_SIZE); the three copies fill it end to end.
                Some(t) => unsafe {
                    std::ptr::copy_nonoverlapping(frame.as_ptr(), dst, 12);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), dst.add(12), 4);
                    std::ptr::copy_nonoverlapping(
                        frame.as_ptr().add(12),
                        dst.add(16),
                        frame.len() - 12,
                    );
                },
                // SAFETY: as above, one copy of `len` bytes.
                None => unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), dst, len) },
            }
            let desc = libc::xdp_desc {
                addr,
                len: len as u32,
                options: 0,
            };
            // Never full: the ring has a slot for every transmit chunk.
            let pushed = self.tx.push(desc);
            debug_assert!(pushed, "tx ring smaller than the transmit chunks");
            sent += 1;
        }
        self.tx.submit();
        self.kick_tx()?;
        Ok(sent)
    }

    /// One frame larger than a chunk as a chain of descriptors, all but the
    /// last with `XDP_PKT_CONTD` (not yet submitted). `Some(false)`: more
    /// than [`MAX_SEGS`] chunks; `None`: the chunks did not come free in time.
    fn send_chain(&mut self, frame: &[u8], tag: Option<[u8; 4]>) -> io::Result<Option<bool>> {
        let bytes: &[u8] = match tag {
            Some(t) => {
                self.tx_scratch.clear();
                self.tx_scratch.extend_from_slice(&frame[..12]);
                self.tx_scratch.extend_from_slice(&t);
                self.tx_scratch.extend_from_slice(&frame[12..]);
                &self.tx_scratch
            }
            None => frame,
        };
        let Some(cuts) = chain::segments(bytes.len(), FRAME_SIZE as usize, MAX_SEGS as usize)
        else {
            return Ok(Some(false));
        };
        let cuts: Vec<(usize, usize)> = cuts.collect();
        let mut chunks = Vec::with_capacity(cuts.len());
        while chunks.len() < cuts.len() {
            match self.tx_free.pop() {
                Some(a) => chunks.push(a),
                None => {
                    self.tx.submit();
                    match self.wait_for_tx_chunk()? {
                        Some(a) => chunks.push(a),
                        None => {
                            self.tx_free.extend(chunks);
                            return Ok(None);
                        }
                    }
                }
            }
        }
        let bytes: &[u8] = match tag {
            Some(_) => &self.tx_scratch,
            None => frame,
        };
        for (k, (&addr, &(off, n))) in chunks.iter().zip(&cuts).enumerate() {
            let dst = self
                .umem
                .chunk_bytes(addr, n)
                .expect("tx chunks lie inside the UMEM");
            // SAFETY: the chunk is ours (taken from tx_free: in no ring) and
            // holds `n` ≤ FRAME_SIZE bytes from `dst` (chunk_bytes checked);
            // `off + n <= bytes.len()` (segments).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().add(off), dst, n) };
            let last = k + 1 == cuts.len();
            // Never full: the ring has a slot for every transmit chunk.
            let pushed = self.tx.push(libc::xdp_desc {
                addr,
                len: n as u32,
                options: if last { 0 } else { libc::XDP_PKT_CONTD },
            });
            debug_assert!(pushed, "tx ring smaller than the transmit chunks");
        }
        Ok(Some(true))
    }

    /// Up to `want` transmit chunks to build untagged frames in, in place
    /// (each room starts `VLAN_TAG_LEN` into its chunk when `tagged`, so
    /// [`Xsk::commit`] can put the tag in behind the MACs). Chunks of an
    /// earlier reserve that were not committed go back first. Waits
    /// (bounded) when every chunk is in flight; empty: none came back.
    pub fn reserve(&mut self, want: usize, tagged: bool) -> &mut [TxSlot] {
        self.reap_completions();
        self.tx_free.append(&mut self.tx_reserved);
        self.tx_slots.clear();
        let headroom = if tagged { 4 } else { 0 };
        let room = FRAME_SIZE as usize - headroom;
        while self.tx_reserved.len() < want {
            let addr = match self.tx_free.pop() {
                Some(a) => a,
                None if self.tx_reserved.is_empty() => {
                    self.tx.submit();
                    match self.wait_for_tx_chunk() {
                        Ok(Some(a)) => a,
                        _ => break,
                    }
                }
                None => break,
            };
            let Some(ptr) = self
                .umem
                .chunk_bytes(addr + headroom as u64, room)
                .and_then(NonNull::new)
            else {
                continue;
            };
            self.tx_reserved.push(addr);
            // SAFETY: the chunk is ours (taken from tx_free: in no ring,
            // not the kernel's) until commit pushes it to the tx ring or
            // gives it back to tx_free; `room` bytes from `ptr` lie inside
            // it (chunk_bytes checked); the slot is only lent out borrowed
            // from self, so it cannot outlive the reserve-commit pair.
            self.tx_slots.push(unsafe { TxSlot::from_raw(ptr, room) });
        }
        &mut self.tx_slots
    }

    /// Send the first `lens.len()` reserved chunks, chunk k holding an
    /// untagged frame of `lens[k]` bytes (`tag` goes in behind its MACs);
    /// the others go back. One producer update and (when the kernel asks)
    /// the wake-up for the batch. Returns how many frames were queued.
    pub fn commit(&mut self, lens: &[usize], tag: Option<[u8; 4]>) -> io::Result<usize> {
        self.tx_slots.clear();
        let headroom = if tag.is_some() { 4 } else { 0 };
        let n = lens.len().min(self.tx_reserved.len());
        let mut sent = 0;
        for (k, &len) in lens[..n].iter().enumerate() {
            let addr = self.tx_reserved[k];
            let total = len + headroom;
            let Some(dst) = self.umem.chunk_bytes(addr, total).filter(|_| len >= 14) else {
                self.tx_too_big += 1;
                self.tx_free.push(addr);
                continue;
            };
            if let Some(t) = tag {
                // SAFETY: the chunk is ours (reserved) and holds `total`
                // bytes from `dst` (checked); the frame starts 4 bytes in,
                // so 0..16 is inside it; ptr::copy allows the overlap.
                unsafe {
                    std::ptr::copy(dst.add(4), dst, 12);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), dst.add(12), 4);
                }
            }
            // Never full: the ring has a slot for every transmit chunk.
            let pushed = self.tx.push(libc::xdp_desc {
                addr,
                len: total as u32,
                options: 0,
            });
            debug_assert!(pushed, "tx ring smaller than the transmit chunks");
            sent += 1;
        }
        let rest = self.tx_reserved.split_off(n);
        self.tx_free.extend(rest);
        self.tx_reserved.clear();
        self.tx.submit();
        self.kick_tx()?;
        Ok(sent)
    }

    /// Move completed transmit chunks back to `tx_free`.
    fn reap_completions(&mut self) {
        let n = self.comp.available();
        for i in 0..n {
            let addr = self.comp.peek(i);
            // Only chunks from the transmit part go back (the kernel returns
            // what we gave it, but a bad address must not become a buffer).
            let first_tx = u64::from(RX_FRAMES * FRAME_SIZE);
            if addr >= first_tx && addr < self.umem.len as u64 {
                self.tx_free.push(addr - addr % u64::from(FRAME_SIZE));
            }
        }
        if n > 0 {
            self.comp.release(n);
        }
    }

    /// Every transmit chunk is in flight: push the kernel until one completes.
    fn wait_for_tx_chunk(&mut self) -> io::Result<Option<u64>> {
        let deadline = Instant::now() + TX_WAIT;
        loop {
            self.kick_tx()?;
            self.reap_completions();
            if let Some(a) = self.tx_free.pop() {
                return Ok(Some(a));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Make the kernel send what the tx ring holds. In copy mode every send
    /// needs a syscall and one call sends a bounded batch, so call until the
    /// ring is drained; in zero-copy mode one wake-up starts the driver.
    fn kick_tx(&mut self) -> io::Result<()> {
        for _ in 0..KICK_ROUNDS {
            if self.tx.pending() == 0 || !self.tx.needs_wakeup() {
                return Ok(());
            }
            // SAFETY: a zero-length sendto on our own socket; no buffer is read.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Batch budget used up, completion ring or device busy: go on.
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
                    | Some(libc::EINTR) => self.reap_completions(),
                    _ => return Err(e),
                }
            }
            if self.zero_copy {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The driver stopped looking at the fill ring until told (zero-copy).
    fn kick_rx(&self) {
        // SAFETY: a zero-length non-blocking recvfrom on our own socket.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain integers; all-zero is a valid value.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS, &mut s)?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_invalid: s.tx_invalid_descs,
        })
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umem_bytes_stay_inside_one_chunk() {
        let umem = Umem::new(3 * FRAME_SIZE as usize).unwrap();
        let f = u64::from(FRAME_SIZE);
        assert!(umem.chunk_bytes(0, FRAME_SIZE as usize).is_some());
        assert!(
            umem.chunk_bytes(f + 256, MAX_FRAME).is_some(),
            "a received frame after the headroom fits"
        );
        assert!(
            umem.chunk_bytes(f + 257, MAX_FRAME).is_none(),
            "crossing into the next chunk"
        );
        assert!(umem.chunk_bytes(2 * f, FRAME_SIZE as usize).is_some());
        assert!(umem.chunk_bytes(3 * f, 1).is_none(), "past the end");
        assert!(umem.chunk_bytes(u64::MAX, 1).is_none());
    }

    #[test]
    fn the_largest_frame_is_a_page_less_the_kernel_headroom() {
        assert_eq!(MAX_FRAME, 3840);
        assert_eq!(super::super::MAX_MTU, 3826);
    }
}
