//! A PACKET_MMAP transmit ring (TPACKET_V2) for the raw backend.
//!
//! The IPCP builds each frame straight into a slot of a ring shared with the
//! kernel (no other process maps it), flips the slot's status to "send
//! request", and one `send` per batch makes the kernel send every requested
//! slot. The kernel attaches the slot's pages to the skb instead of copying
//! them, and hands the slot back (status "available") when the skb is freed.
//! Compared with sendmmsg this saves the copy from user memory into the skb
//! and the per-frame message walk; see docs/decisions/0029-raw-tx-ring.md.
//!
//! The ring lives on a socket of its own, bound to the interface with
//! protocol 0: it receives nothing, so the receive ring's socket is left as
//! it is (one socket cannot map its two rings separately).
//!
//! With a VLAN, a frame is built 4 bytes into its slot, and on commit its
//! MACs move 4 bytes forward and the tag goes in behind them (one 12-byte
//! move, no second copy of the frame).
//!
//! The status words are read and written atomically; frame bytes are
//! written only while the slot is ours (status available). PACKET_LOSS is
//! off: a frame the kernel refuses (say, the MTU shrank a moment ago and the
//! IPCP has not heard yet) stops the kernel at that slot with status
//! WRONG_FORMAT; the ring counts it as refused and moves the frames behind
//! it one slot up, so none is lost uncounted and none is left blocking.
#![allow(unsafe_code)]

use super::rx_ring::{setsockopt, Region, RingShape, TPACKET_V2};
use super::setsockopt_int;
use crate::segment::VLAN_TAG_LEN;
use crate::wire::ETH_HEADER_LEN;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Slot status values of the kernel ABI (linux/if_packet.h).
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Offset of `tp_len` in struct tpacket2_hdr.
const TP_LEN_OFF: usize = 4;
/// Where a frame starts in its slot: TPACKET_ALIGN(sizeof(struct
/// tpacket2_hdr)), the kernel's default without PACKET_TX_HAS_OFF.
pub const DATA_OFF: usize = 32;
/// Total ring memory: at MTU 1500, about 1 200 slots.
pub const TX_RING_BYTES: usize = 2 << 20;
/// How long [`TxRing::reserve`] waits for a slot when every one is in flight.
const TX_WAIT: Duration = Duration::from_millis(20);
/// `send` calls per kick while the kernel reports congestion.
const KICK_TRIES: usize = 4;
/// Room left in a slot after the largest frame of the MTU (tag, trailer).
const SLOT_SLACK: usize = 64;

/// The room of one free slot, to build one frame in. Handed out only
/// borrowed from its [`TxRing`] (by [`TxRing::reserve`]), so it cannot
/// outlive the mapping nor be used after the slot went to the kernel.
pub struct TxSlot {
    ptr: NonNull<u8>,
    len: usize,
}

impl TxSlot {
    /// The room `ptr..ptr+len`, for another kernel-shared transmit area (an
    /// AF_XDP UMEM chunk).
    ///
    /// # Safety
    /// The bytes must stay mapped, and be written by nobody else (neither
    /// the kernel nor another process), for as long as the slot lives; the
    /// caller hands slots out only borrowed from their owner, which takes
    /// them back before it gives the memory to the kernel.
    pub(crate) unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> TxSlot {
        TxSlot { ptr, len }
    }
}

// SAFETY: a slot is the sole handle to its room (see the type's doc); the
// ring that holds its slots is owned by one backend, and moving that backend
// to another thread (a queue's worker) moves the sole ownership with it.
unsafe impl Send for TxSlot {}

impl AsMut<[u8]> for TxSlot {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is the data room of one slot of a live ring
        // (see the type's doc); the slot's status is "available", so the
        // kernel neither reads nor writes it until commit flips the status,
        // and no other process maps the ring. The &mut borrows self, which
        // is borrowed from the ring, so it ends before any commit.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Counters of the transmit ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxCounters {
    /// Frames refused: before the kernel saw them (shorter than an Ethernet
    /// header, longer than the MTU or the slot), or by the kernel (longer
    /// than an MTU that shrank before the IPCP heard of it).
    pub refused: u64,
    /// Frames handed back unsent because the kernel could not send (link down).
    pub unsent: u64,
    /// Times no slot came free within the wait (the batch was cut short).
    pub stalls: u64,
    /// `send` calls made.
    pub kicks: u64,
}

/// The transmit ring of the raw backend, with the socket that owns it.
pub struct TxRing {
    // The mapping first: unmapped before the socket closes.
    region: Region,
    shape: RingShape,
    /// `None` in tests (a heap ring, nobody to kick).
    fd: Option<OwnedFd>,
    /// The next slot to fill (the kernel sends in order, from its own head).
    head: usize,
    /// Bytes kept free in front of a frame for the VLAN tag.
    headroom: usize,
    tag: Option<[u8; VLAN_TAG_LEN]>,
    /// The longest untagged frame the link carries now (MTU + header).
    max_frame: usize,
    /// The slots handed out by the last `reserve`, in ring order.
    slots: Vec<TxSlot>,
    pub counters: TxCounters,
}

impl TxRing {
    /// Open a packet socket with a transmit ring of slots for `mtu`, bound to
    /// the interface (receiving nothing). `qdisc_bypass`: frames go straight
    /// to the driver.
    pub fn open(
        ifindex: i32,
        mtu: u32,
        tag: Option<[u8; VLAN_TAG_LEN]>,
        qdisc_bypass: bool,
    ) -> io::Result<TxRing> {
        // SAFETY: plain socket() call; protocol 0 = receive nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let shape = RingShape::sized(mtu, page, TX_RING_BYTES);
        // The version must be set before the ring exists. PACKET_LOSS stays
        // off: refused frames are counted (`skip_refused`), not dropped unseen.
        setsockopt(fd.as_fd(), libc::PACKET_VERSION, &TPACKET_V2)?;
        setsockopt(fd.as_fd(), libc::PACKET_TX_RING, &shape)?;
        let region = Region::map(fd.as_fd(), shape.bytes())?;
        if qdisc_bypass {
            let _ = setsockopt(fd.as_fd(), libc::PACKET_QDISC_BYPASS, &1i32);
        }
        // The ring, not the socket's send budget, bounds the frames in flight.
        let big = 8i32 << 20;
        let r = setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, big);
        if r.is_err() {
            let _ = setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, big);
        }
        // SAFETY: sockaddr_ll is plain old data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ring = TxRing::with_region(region, shape, tag);
        ring.fd = Some(fd);
        ring.set_mtu(mtu);
        Ok(ring)
    }

    fn with_region(region: Region, shape: RingShape, tag: Option<[u8; VLAN_TAG_LEN]>) -> TxRing {
        let headroom = if tag.is_some() { VLAN_TAG_LEN } else { 0 };
        TxRing {
            region,
            shape,
            fd: None,
            head: 0,
            headroom,
            tag,
            max_frame: ETH_HEADER_LEN + 1500,
            slots: Vec::with_capacity(super::BATCH),
            counters: TxCounters::default(),
        }
    }

    pub fn shape(&self) -> RingShape {
        self.shape
    }

    /// The largest MTU a slot carries (with a tag and a trailer).
    pub fn max_mtu(&self) -> u32 {
        self.room().saturating_sub(ETH_HEADER_LEN + SLOT_SLACK) as u32
    }

    /// The link's MTU now: longer frames are refused before the kernel sees them.
    pub fn set_mtu(&mut self, mtu: u32) {
        self.max_frame = ETH_HEADER_LEN + mtu as usize;
    }

    /// Bytes of one slot a frame may fill (its untagged form).
    fn room(&self) -> usize {
        self.shape.frame_size as usize - DATA_OFF - self.headroom
    }

    /// The status word of slot `i`, shared with the kernel.
    /// The start of slot `i` (its tpacket2_hdr).
    fn slot(&self, i: usize) -> *mut u8 {
        self.region.base.wrapping_add(self.shape.slot_offset(i))
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        let off = self.shape.slot_offset(i);
        debug_assert!(off + self.shape.frame_size as usize <= self.region.len);
        // SAFETY: off is inside the region (i < frame_nr) and 16-aligned;
        // tp_status is the slot's first u32, and both sides access it
        // atomically (the kernel with smp_wmb/READ_ONCE around it).
        unsafe { &*(self.region.base.add(off) as *const AtomicU32) }
    }

    /// Whether slot `i` is ours to fill.
    fn is_free(&self, i: usize) -> bool {
        matches!(
            self.status(i).load(Ordering::Acquire),
            TP_STATUS_AVAILABLE | TP_STATUS_WRONG_FORMAT
        )
    }

    /// Up to `want` free slots, in ring order from the head, to build frames
    /// in (each [`TxSlot`] holds one untagged frame from its start). Waits
    /// (bounded) while the head slot is still in flight; an empty slice means
    /// no slot came free in time.
    pub fn reserve(&mut self, want: usize) -> &mut [TxSlot] {
        self.slots.clear();
        let nr = self.shape.frame_nr as usize;
        if want == 0 || !self.wait_free(self.head) {
            return &mut self.slots;
        }
        let room = self.room();
        for k in 0..want.min(nr) {
            let i = (self.head + k) % nr;
            if !self.is_free(i) {
                break;
            }
            let at = self.shape.slot_offset(i) + DATA_OFF + self.headroom;
            // The address is inside the mapping, hence non-null.
            let ptr = NonNull::new(self.region.base.wrapping_add(at)).expect("mapped");
            self.slots.push(TxSlot { ptr, len: room });
        }
        &mut self.slots
    }

    /// Hand the first `lens.len()` reserved slots to the kernel, slot k
    /// holding a frame of `lens[k]` bytes, and make it send them. A length
    /// that cannot be a frame is refused and counted; the frames after it
    /// move up (the kernel sends slots in order, with no gaps). Returns how
    /// many frames were handed over.
    pub fn commit(&mut self, lens: &[usize]) -> io::Result<usize> {
        let n = lens.len().min(self.slots.len());
        let nr = self.shape.frame_nr as usize;
        let (room, headroom) = (self.room(), self.headroom);
        let mut w = 0;
        for (k, &len) in lens[..n].iter().enumerate() {
            if len < ETH_HEADER_LEN || len > room || len > self.max_frame {
                self.counters.refused += 1;
                continue;
            }
            if w != k {
                // SAFETY: both are reserved slots (ours, distinct, so the
                // ranges do not overlap), each with `room` >= len bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.slots[k].ptr.as_ptr(),
                        self.slots[w].ptr.as_ptr(),
                        len,
                    )
                };
            }
            let i = (self.head + w) % nr;
            let slot = self.slot(i);
            let frame_len = match self.tag {
                Some(t) => {
                    // SAFETY: the slot is ours (reserved, status available);
                    // the frame sits at DATA_OFF + headroom, so DATA_OFF..+16
                    // lies inside the slot; ptr::copy allows the overlap.
                    unsafe {
                        let data = slot.add(DATA_OFF);
                        std::ptr::copy(data.add(headroom), data, 12);
                        std::ptr::copy_nonoverlapping(t.as_ptr(), data.add(12), VLAN_TAG_LEN);
                    }
                    len + VLAN_TAG_LEN
                }
                None => len,
            };
            // SAFETY: tp_len is the u32 at offset 4 of the slot header,
            // inside the slot, 4-aligned; the slot is still ours.
            unsafe { std::ptr::write_volatile(slot.add(TP_LEN_OFF) as *mut u32, frame_len as u32) };
            // Release: the frame and its length are visible before the status.
            self.status(i)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            w += 1;
        }
        self.head = (self.head + w) % nr;
        self.slots.clear();
        if w > 0 {
            self.kick()?;
        }
        Ok(w)
    }

    /// Make the kernel send every requested slot. Congestion (the device
    /// dropped a frame, the send budget is spent) is retried a few times;
    /// what is left goes with the next kick. A link that cannot send (down,
    /// gone) gets the requested frames back as unsent: the ring must not
    /// hold stale frames for when it comes back.
    fn kick(&mut self) -> io::Result<()> {
        let Some(fd) = &self.fd else { return Ok(()) };
        let fd = fd.as_raw_fd();
        let (mut tries, mut skips) = (0, 0);
        while tries < KICK_TRIES {
            self.counters.kicks += 1;
            // SAFETY: a zero-length send on our own socket: no buffer is read;
            // the kernel sends the ring's requested slots.
            let r = unsafe { libc::send(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
            if r >= 0 {
                if !self.unsent_waiting() {
                    return Ok(());
                }
                tries += 1;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOBUFS) => tries += 1,
                // Each refused frame costs one send; at most a ring's worth.
                _ if skips < self.shape.frame_nr && self.skip_refused() => skips += 1,
                _ => {
                    self.take_back_unsent();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// After a failed send: if the kernel stopped at a frame it refused
    /// (status WRONG_FORMAT), count it and move every requested frame behind
    /// it one slot up — the kernel resumes at the refused slot and sends in
    /// order — freeing the last. Returns whether there was such a frame.
    fn skip_refused(&mut self) -> bool {
        let nr = self.shape.frame_nr as usize;
        // The slot in front of the requested frames is where the kernel stopped.
        let requested = self.requested_run();
        let refused = (self.head + nr - 1 - requested) % nr;
        if requested == nr || self.status(refused).load(Ordering::Acquire) != TP_STATUS_WRONG_FORMAT
        {
            return false;
        }
        for k in 0..requested {
            let (to, from) = ((refused + k) % nr, (refused + k + 1) % nr);
            let (to_slot, from_slot) = (self.slot(to), self.slot(from));
            // SAFETY: both slots are ours (WRONG_FORMAT or SEND_REQUEST and
            // the kernel is not in a send: it only reads the ring inside
            // one); distinct slots, each frame_size bytes, so the header
            // word and DATA_OFF + len lie inside them and do not overlap.
            unsafe {
                let len = std::ptr::read_volatile(from_slot.add(TP_LEN_OFF) as *const u32);
                let len = (len as usize).min(self.shape.frame_size as usize - DATA_OFF);
                std::ptr::copy_nonoverlapping(from_slot.add(DATA_OFF), to_slot.add(DATA_OFF), len);
                std::ptr::write_volatile(to_slot.add(TP_LEN_OFF) as *mut u32, len as u32);
            }
            self.status(to)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        }
        let last = (refused + requested) % nr;
        self.status(last)
            .store(TP_STATUS_AVAILABLE, Ordering::Release);
        self.head = last;
        self.counters.refused += 1;
        true
    }

    /// Whether the last committed slot still waits for the kernel.
    fn unsent_waiting(&self) -> bool {
        let nr = self.shape.frame_nr as usize;
        let last = (self.head + nr - 1) % nr;
        self.status(last).load(Ordering::Acquire) == TP_STATUS_SEND_REQUEST
    }

    /// How many slots just before the head still wait for the kernel
    /// (status SEND_REQUEST): the frames it has not taken yet.
    fn requested_run(&self) -> usize {
        let nr = self.shape.frame_nr as usize;
        (0..nr)
            .take_while(|k| {
                let i = (self.head + nr - 1 - k) % nr;
                self.status(i).load(Ordering::Acquire) == TP_STATUS_SEND_REQUEST
            })
            .count()
    }

    /// After a failed send: every requested slot is made available again
    /// and counted, and the head goes back to the first of them (where the
    /// kernel's own head stands, so the next frame is the next it sends).
    fn take_back_unsent(&mut self) {
        let nr = self.shape.frame_nr as usize;
        for _ in 0..self.requested_run() {
            let last = (self.head + nr - 1) % nr;
            self.status(last)
                .store(TP_STATUS_AVAILABLE, Ordering::Release);
            self.counters.unsent += 1;
            self.head = last;
        }
    }

    /// Wait (bounded) until slot `i` is ours, kicking the kernel meanwhile.
    fn wait_free(&mut self, i: usize) -> bool {
        if self.is_free(i) {
            return true;
        }
        let deadline = Instant::now() + TX_WAIT;
        loop {
            if self.kick().is_err() || self.is_free(i) {
                // After a failed send the head moved back onto free slots.
                return self.is_free(self.head);
            }
            let Some(fd) = &self.fd else { break };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut p = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            )];
            let ms = left.as_millis().clamp(1, 1000) as u16;
            let _ = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms));
            if self.is_free(i) {
                return true;
            }
        }
        self.counters.stalls += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap-backed ring laid out like the kernel's.
    struct FakeRing {
        _mem: Vec<u128>,
        ring: TxRing,
    }

    fn small_shape() -> RingShape {
        // 2 blocks of 4096, 2 slots of 2048 each: 4 slots.
        RingShape {
            block_size: 4096,
            block_nr: 2,
            frame_size: 2048,
            frame_nr: 4,
        }
    }

    fn fake(tag: Option<[u8; 4]>) -> FakeRing {
        let shape = small_shape();
        let mut mem = vec![0u128; shape.bytes() / 16];
        let region = Region {
            base: mem.as_mut_ptr() as *mut u8,
            len: shape.bytes(),
            mapped: false,
        };
        let mut ring = TxRing::with_region(region, shape, tag);
        ring.set_mtu(1500);
        FakeRing { _mem: mem, ring }
    }

    impl FakeRing {
        fn status(&self, i: usize) -> u32 {
            self.ring.status(i).load(Ordering::Relaxed)
        }
        /// Play the kernel: the frame in slot `i`, as it would send it.
        fn sent(&self, i: usize) -> Vec<u8> {
            let off = self.ring.shape.slot_offset(i);
            // SAFETY: test memory; the slot is inside it.
            unsafe {
                let base = self.ring.region.base.add(off);
                let len = std::ptr::read_unaligned(base.add(TP_LEN_OFF) as *const u32) as usize;
                std::slice::from_raw_parts(base.add(DATA_OFF), len).to_vec()
            }
        }
        /// Play the kernel: slot `i` was sent and its skb freed.
        fn done(&self, i: usize) {
            self.ring
                .status(i)
                .store(TP_STATUS_AVAILABLE, Ordering::Relaxed);
        }
    }

    fn frame(fill: u8, len: usize) -> Vec<u8> {
        let mut f = vec![fill; len];
        if len >= ETH_HEADER_LEN {
            f[12..14].copy_from_slice(&[0x88, 0xb5]);
        }
        f
    }

    fn build(ring: &mut TxRing, frames: &[Vec<u8>]) -> usize {
        let slots = ring.reserve(frames.len());
        let n = slots.len();
        for (s, f) in slots.iter_mut().zip(frames) {
            s.as_mut()[..f.len()].copy_from_slice(f);
        }
        let lens: Vec<usize> = frames[..n].iter().map(Vec::len).collect();
        ring.commit(&lens).unwrap()
    }

    #[test]
    fn a_frame_the_kernel_refused_is_counted_and_the_rest_move_up() {
        let mut f = fake(None);
        let frames = [frame(1, 100), frame(2, 200), frame(3, 300)];
        assert_eq!(build(&mut f.ring, &frames), 3);
        // The kernel sent slot 0, refused slot 1 and stopped there.
        f.done(0);
        f.ring
            .status(1)
            .store(TP_STATUS_WRONG_FORMAT, Ordering::Relaxed);
        assert!(f.ring.skip_refused());
        assert_eq!(f.ring.counters.refused, 1);
        assert_eq!(f.status(1), TP_STATUS_SEND_REQUEST);
        assert_eq!(f.sent(1), frames[2], "frame 3 moved into the refused slot");
        assert_eq!(f.status(2), TP_STATUS_AVAILABLE);
        // The next frame goes right behind it, where the kernel looks next.
        assert_eq!(build(&mut f.ring, &[frame(4, 64)]), 1);
        assert_eq!(f.sent(2), frame(4, 64));
        // Nothing refused now: nothing to skip.
        assert!(!f.ring.skip_refused());
        assert_eq!(f.ring.counters.refused, 1);
    }

    #[test]
    fn a_refused_last_frame_frees_its_slot() {
        let mut f = fake(None);
        assert_eq!(build(&mut f.ring, &[frame(1, 100), frame(2, 200)]), 2);
        f.done(0);
        f.ring
            .status(1)
            .store(TP_STATUS_WRONG_FORMAT, Ordering::Relaxed);
        assert!(f.ring.skip_refused());
        assert_eq!(f.status(1), TP_STATUS_AVAILABLE);
        assert_eq!(build(&mut f.ring, &[frame(3, 64)]), 1);
        assert_eq!(
            f.sent(1),
            frame(3, 64),
            "the next frame reuses the refused slot"
        );
    }

    #[test]
    fn frames_built_in_slots_are_requested_in_order() {
        let mut f = fake(None);
        let frames = [frame(1, 60), frame(2, 1514)];
        assert_eq!(build(&mut f.ring, &frames), 2);
        assert_eq!(f.status(0), TP_STATUS_SEND_REQUEST);
        assert_eq!(f.status(1), TP_STATUS_SEND_REQUEST);
        assert_eq!(f.status(2), TP_STATUS_AVAILABLE);
        assert_eq!(f.sent(0), frames[0]);
        assert_eq!(f.sent(1), frames[1]);
    }

    #[test]
    fn a_full_ring_hands_out_no_slot_until_the_kernel_frees_one() {
        let mut f = fake(None);
        let four: Vec<Vec<u8>> = (0..4).map(|i| frame(i, 100)).collect();
        assert_eq!(build(&mut f.ring, &four), 4);
        // Every slot waits for the kernel: nothing to hand out.
        assert_eq!(f.ring.reserve(2).len(), 0);
        assert_eq!(f.ring.counters.stalls, 1);
        // The kernel sent the first two.
        f.done(0);
        f.done(1);
        assert_eq!(build(&mut f.ring, &[frame(9, 70), frame(8, 80)]), 2);
        assert_eq!(f.sent(0), frame(9, 70));
        assert_eq!(f.sent(1), frame(8, 80));
        // Wrapped: the head is at slot 2 again, still in flight.
        assert_eq!(f.ring.reserve(1).len(), 0);
    }

    #[test]
    fn a_refused_length_leaves_no_gap() {
        let mut f = fake(None);
        let frames = [frame(1, 100), frame(2, 1600), frame(3, 10), frame(4, 200)];
        let slots = f.ring.reserve(4);
        assert_eq!(slots.len(), 4);
        for (s, fr) in slots.iter_mut().zip(&frames) {
            s.as_mut()[..fr.len()].copy_from_slice(fr);
        }
        // 1600 is above MTU 1500 + 14; 10 is shorter than a header.
        assert_eq!(f.ring.commit(&[100, 1600, 10, 200]).unwrap(), 2);
        assert_eq!(f.ring.counters.refused, 2);
        assert_eq!(f.sent(0), frames[0]);
        assert_eq!(f.sent(1), frames[3]);
        assert_eq!(f.status(2), TP_STATUS_AVAILABLE);
        // The next frame goes into slot 2.
        assert_eq!(build(&mut f.ring, &[frame(5, 64)]), 1);
        assert_eq!(f.sent(2), frame(5, 64));
    }

    #[test]
    fn the_mtu_bounds_frames_after_it_changes() {
        let mut f = fake(None);
        f.ring.set_mtu(1000);
        assert_eq!(build(&mut f.ring, &[frame(1, 1015)]), 0);
        assert_eq!(build(&mut f.ring, &[frame(1, 1014)]), 1);
    }

    #[test]
    fn a_vlan_tag_goes_in_behind_the_macs() {
        let tag = [0x81, 0x00, 0x01, 0x23];
        let mut f = fake(Some(tag));
        let fr: Vec<u8> = (0..64u8).collect();
        assert_eq!(build(&mut f.ring, std::slice::from_ref(&fr)), 1);
        let mut want = fr[..12].to_vec();
        want.extend_from_slice(&tag);
        want.extend_from_slice(&fr[12..]);
        assert_eq!(f.sent(0), want);
        // A full-MTU frame still fits once tagged.
        assert_eq!(build(&mut f.ring, &[frame(7, 1514)]), 1);
        assert_eq!(f.sent(1).len(), 1518);
    }

    #[test]
    fn unsent_frames_are_taken_back_and_the_head_rewinds() {
        let mut f = fake(None);
        assert_eq!(build(&mut f.ring, &[frame(1, 60), frame(2, 60)]), 2);
        f.done(0);
        f.ring.take_back_unsent();
        assert_eq!(f.ring.counters.unsent, 1);
        assert_eq!(f.ring.head, 1);
        assert_eq!(f.status(1), TP_STATUS_AVAILABLE);
        assert_eq!(build(&mut f.ring, &[frame(3, 60)]), 1);
        assert_eq!(f.sent(1), frame(3, 60));
    }

    #[test]
    fn slots_fit_the_mtu_with_a_tag_and_a_trailer() {
        for mtu in [1500u32, 3000, 9000] {
            let s = RingShape::sized(mtu, 4096, TX_RING_BYTES);
            let room = s.frame_size as usize - DATA_OFF - VLAN_TAG_LEN;
            assert!(
                room >= ETH_HEADER_LEN + mtu as usize + SLOT_SLACK,
                "{mtu}: {s:?}"
            );
        }
    }
}
