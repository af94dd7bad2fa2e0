//! A PACKET_MMAP receive ring (TPACKET_V2) for the raw backend.
//!
//! The kernel writes each frame straight into a slot of a ring shared with us
//! and flips the slot's status to "user"; we copy the frame out and hand the
//! slot back. Compared with recvmmsg this saves the syscall and the skb
//! bookkeeping per frame; a batch of frames costs no syscall at all. V2 (one
//! slot per frame) rather than V3 (blocks retired by a timer): a lone frame is
//! visible the moment it lands. See docs/decisions/0007-raw-rx-ring.md.
//!
//! Everything read from a slot is checked against the slot size before use:
//! the kernel fills the ring, but a bad offset must cost a frame, not memory.
#![allow(unsafe_code)]

use crate::segment::{VlanTag, TPID_8021Q};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Slot status values of the kernel ABI (linux/if_packet.h).
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// `PACKET_VERSION` value for TPACKET_V2.
pub(super) const TPACKET_V2: i32 = 1;
/// Slot and header alignment of the kernel ABI.
pub(super) const TPACKET_ALIGNMENT: usize = 16;

/// The per-slot header the kernel writes (struct tpacket2_hdr).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Tpacket2Hdr {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_sec: u32,
    tp_nsec: u32,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
    tp_padding: [u8; 4],
}

/// struct tpacket_req: the ring's shape, as handed to PACKET_RX_RING.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingShape {
    pub block_size: u32,
    pub block_nr: u32,
    pub frame_size: u32,
    pub frame_nr: u32,
}

/// Total ring memory we aim for.
pub const RING_BYTES: usize = 8 << 20;
/// Block size: the kernel allocates each block contiguously, so keep it modest.
const BLOCK_BYTES: usize = 128 << 10;
/// Room in a slot before the frame: header, sockaddr_ll, alignment (the kernel
/// puts the Ethernet header at TPACKET_ALIGN(hdrlen + 16) - 14).
const SLOT_OVERHEAD: usize = 96;
/// Slack after the MTU for a VLAN tag the driver may leave in.
const TAIL_SLACK: usize = 32;

fn align(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl RingShape {
    /// A ring whose slots hold a whole frame of `mtu` bytes (plus the Ethernet
    /// header), about `RING_BYTES` in all.
    pub fn for_mtu(mtu: u32, page: usize) -> RingShape {
        Self::sized(mtu, page, RING_BYTES)
    }

    /// Like [`RingShape::for_mtu`], about `bytes` in all (at least one block).
    pub fn sized(mtu: u32, page: usize, bytes: usize) -> RingShape {
        let frame_size = align(
            SLOT_OVERHEAD + 14 + mtu.max(1500) as usize + TAIL_SLACK,
            TPACKET_ALIGNMENT,
        );
        // A block holds at least one slot and is a whole number of pages.
        let block_size = align(BLOCK_BYTES.max(frame_size), page);
        let block_nr = (bytes / block_size).max(1);
        let per_block = block_size / frame_size;
        RingShape {
            block_size: block_size as u32,
            block_nr: block_nr as u32,
            frame_size: frame_size as u32,
            frame_nr: (per_block * block_nr) as u32,
        }
    }

    pub(super) fn frames_per_block(&self) -> usize {
        (self.block_size / self.frame_size) as usize
    }

    pub(super) fn bytes(&self) -> usize {
        self.block_size as usize * self.block_nr as usize
    }

    /// Byte offset of slot `i` (slots never straddle blocks).
    pub(super) fn slot_offset(&self, i: usize) -> usize {
        let per = self.frames_per_block();
        (i / per) * self.block_size as usize + (i % per) * self.frame_size as usize
    }

    /// The largest Ethernet payload (MTU) a slot carries whole.
    pub fn max_mtu(&self) -> u32 {
        (self.frame_size as usize - SLOT_OVERHEAD - 14 - TAIL_SLACK) as u32
    }
}

/// The VLAN tag the kernel took out of a frame (it strips 802.1Q and 802.1ad
/// tags before a packet socket sees the frame), from a slot header or
/// PACKET_AUXDATA.
pub fn tag_of(status: u32, tci: u16, tpid: u16) -> Option<VlanTag> {
    if status & TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        TPID_8021Q
    };
    Some(VlanTag { tpid, tci })
}

/// What one slot holds, after checking it against the slot size.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    /// Still the kernel's: nothing more to read.
    Empty,
    /// A whole frame at this offset and length within the slot.
    Frame { off: usize, len: usize },
    /// A frame we cannot deliver whole (cut to the slot, or a header that
    /// points outside the slot): count and drop it.
    Bad,
}

/// Judge a slot header. `frame_size` bounds every offset.
fn classify(h: &Tpacket2Hdr, frame_size: usize) -> Slot {
    if h.tp_status & TP_STATUS_USER == 0 {
        return Slot::Empty;
    }
    let (off, snap, len) = (h.tp_mac as usize, h.tp_snaplen as usize, h.tp_len as usize);
    if snap < len || off < std::mem::size_of::<Tpacket2Hdr>() || off + snap > frame_size {
        return Slot::Bad;
    }
    Slot::Frame { off, len: snap }
}

/// Memory the kernel shares with us: a mapping, or (in tests) a heap buffer.
pub(super) struct Region {
    pub(super) base: *mut u8,
    pub(super) len: usize,
    pub(super) mapped: bool,
}

impl Region {
    /// Map the ring(s) the kernel allocated for the packet socket `fd`:
    /// `len` bytes, exactly what it was asked for.
    pub(super) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Region> {
        // SAFETY: maps the ring the kernel just allocated for this socket, of
        // exactly the size it was asked for; the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            base: base as *mut u8,
            len,
            mapped: true,
        })
    }
}

// SAFETY: the region is owned by exactly one ring (no aliasing pointer is
// handed out), so moving it to another thread (a queue's worker) is sound.
unsafe impl Send for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: base/len are exactly what mmap returned; nothing borrows
            // into the region past this point.
            unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        }
    }
}

/// The receive ring of one packet socket.
pub struct RxRing {
    region: Region,
    shape: RingShape,
    /// The next slot the kernel fills (slots are filled in order).
    head: usize,
    /// Frames dropped because they did not fit a slot or a caller's buffer.
    pub oversize: u64,
    /// Consecutive calls that found the ring empty (for the error check).
    pub empty_streak: u32,
}

pub(super) fn setsockopt<T>(fd: BorrowedFd<'_>, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: val lives across the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl RxRing {
    /// Attach a TPACKET_V2 ring to a packet socket. Do this before `bind`, so
    /// no frame lands in the ordinary receive queue (which the ring never
    /// reads, and which would keep the fd readable).
    pub fn attach(fd: BorrowedFd<'_>, mtu: u32) -> io::Result<RxRing> {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let shape = RingShape::for_mtu(mtu, page);
        setsockopt(fd, libc::PACKET_VERSION, &TPACKET_V2)?;
        setsockopt(fd, libc::PACKET_RX_RING, &shape)?;
        Ok(RxRing {
            region: Region::map(fd, shape.bytes())?,
            shape,
            head: 0,
            oversize: 0,
            empty_streak: 0,
        })
    }

    pub fn shape(&self) -> RingShape {
        self.shape
    }

    /// The status word of slot `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        let off = self.shape.slot_offset(i);
        debug_assert!(off + self.shape.frame_size as usize <= self.region.len);
        // SAFETY: off is inside the region (slot_offset of i < frame_nr) and
        // 16-aligned; tp_status is the slot's first u32 and the kernel only
        // touches it atomically-enough (it writes, then flips the status).
        unsafe { &*(self.region.base.add(off) as *const AtomicU32) }
    }

    /// Hand up to `max` waiting frames to `each` in place, with the VLAN tag
    /// each carried, handing each slot back to the kernel right after: no
    /// copy out of the ring. Returns how many slots were read (frames that
    /// did not fit their slot are counted in `oversize`, not handed).
    pub fn recv_each(
        &mut self,
        max: usize,
        each: &mut dyn FnMut(&mut [u8], Option<VlanTag>),
    ) -> usize {
        let frame_size = self.shape.frame_size as usize;
        let mut n = 0;
        while n < max.min(self.shape.frame_nr as usize) {
            let i = self.head;
            if self.status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let off = self.shape.slot_offset(i);
            // SAFETY: as in `recv`: the slot is inside the region and ours
            // (status USER, read with Acquire) until handed back below.
            let hdr = unsafe {
                std::ptr::read_unaligned(self.region.base.add(off) as *const Tpacket2Hdr)
            };
            match classify(&hdr, frame_size) {
                Slot::Frame { off: at, len } => {
                    // SAFETY: at + len <= frame_size (checked by classify): the
                    // bytes lie inside this slot, which is ours until its
                    // status is stored below (after the borrow ends); only
                    // this process and the kernel map the ring.
                    let frame = unsafe {
                        std::slice::from_raw_parts_mut(self.region.base.add(off + at), len)
                    };
                    each(
                        frame,
                        tag_of(hdr.tp_status, hdr.tp_vlan_tci, hdr.tp_vlan_tpid),
                    );
                }
                Slot::Empty => break,
                Slot::Bad => self.oversize += 1,
            }
            self.status(i).store(TP_STATUS_KERNEL, Ordering::Release);
            self.head = (i + 1) % self.shape.frame_nr as usize;
            n += 1;
        }
        if n == 0 {
            self.empty_streak = self.empty_streak.saturating_add(1);
        } else {
            self.empty_streak = 0;
        }
        n
    }

    /// Copy up to `bufs.len()` waiting frames out of the ring, handing each
    /// slot back to the kernel; `tags[i]` gets the VLAN tag frame `i` carried.
    /// Returns how many were copied.
    pub fn recv(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
        tags: &mut [Option<VlanTag>],
    ) -> usize {
        let want = bufs.len().min(lens.len()).min(tags.len());
        let frame_size = self.shape.frame_size as usize;
        let mut n = 0;
        // Bounded: at most one lap of the ring per call.
        for _ in 0..self.shape.frame_nr {
            if n == want {
                break;
            }
            let i = self.head;
            let status = self.status(i).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            let off = self.shape.slot_offset(i);
            // SAFETY: the slot lies inside the region; the kernel has handed it
            // to us (status USER, read with Acquire) and does not write it
            // until we hand it back. read_unaligned: no alignment assumption.
            let hdr = unsafe {
                std::ptr::read_unaligned(self.region.base.add(off) as *const Tpacket2Hdr)
            };
            match classify(&hdr, frame_size) {
                Slot::Frame { off: at, len } if len <= bufs[n].len() => {
                    // SAFETY: at + len <= frame_size (checked by classify), so
                    // the source lies inside this slot; the destination is a
                    // distinct heap buffer of at least len bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.region.base.add(off + at),
                            bufs[n].as_mut_ptr(),
                            len,
                        )
                    };
                    lens[n] = len;
                    tags[n] = tag_of(hdr.tp_status, hdr.tp_vlan_tci, hdr.tp_vlan_tpid);
                    n += 1;
                }
                Slot::Empty => break,
                _ => self.oversize += 1,
            }
            self.status(i).store(TP_STATUS_KERNEL, Ordering::Release);
            self.head = (i + 1) % self.shape.frame_nr as usize;
        }
        if n == 0 {
            self.empty_streak = self.empty_streak.saturating_add(1);
        } else {
            self.empty_streak = 0;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap-backed ring laid out like the kernel's, for exercising `recv`.
    struct FakeRing {
        _mem: Vec<u128>,
        ring: RxRing,
    }

    fn fake(shape: RingShape) -> FakeRing {
        let mut mem = vec![0u128; shape.bytes() / 16];
        let base = mem.as_mut_ptr() as *mut u8;
        FakeRing {
            ring: RxRing {
                region: Region {
                    base,
                    len: shape.bytes(),
                    mapped: false,
                },
                shape,
                head: 0,
                oversize: 0,
                empty_streak: 0,
            },
            _mem: mem,
        }
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

    impl FakeRing {
        /// Play the kernel: write a frame into slot `i`.
        fn put(&mut self, i: usize, hdr: Tpacket2Hdr, payload: &[u8]) {
            let off = self.ring.shape.slot_offset(i);
            let base = self.ring.region.base;
            // SAFETY: test memory of the ring's size; the slot is inside it.
            unsafe {
                std::ptr::write_unaligned(base.add(off) as *mut Tpacket2Hdr, hdr);
                let at = (hdr.tp_mac as usize).min(self.ring.shape.frame_size as usize);
                let room = self.ring.shape.frame_size as usize - at;
                let n = payload.len().min(room);
                std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(off + at), n);
            }
        }
        fn frame(&mut self, i: usize, payload: &[u8]) {
            let hdr = Tpacket2Hdr {
                tp_status: TP_STATUS_USER,
                tp_len: payload.len() as u32,
                tp_snaplen: payload.len() as u32,
                tp_mac: 66,
                tp_net: 80,
                ..Default::default()
            };
            self.put(i, hdr, payload);
        }
        fn status(&self, i: usize) -> u32 {
            self.ring.status(i).load(Ordering::Relaxed)
        }
    }

    fn bufs(n: usize, size: usize) -> (Vec<Vec<u8>>, Vec<usize>) {
        ((0..n).map(|_| vec![0u8; size]).collect(), vec![0; n])
    }

    #[test]
    fn shape_fits_mtu_and_ring_budget() {
        for mtu in [1500u32, 9000, 65535] {
            let s = RingShape::for_mtu(mtu, 4096);
            assert!(s.max_mtu() >= mtu, "mtu {mtu}: {s:?}");
            assert_eq!(s.block_size % 4096, 0);
            assert_eq!(s.frame_size as usize % TPACKET_ALIGNMENT, 0);
            assert!(s.frames_per_block() >= 1);
            assert_eq!(
                s.frame_nr as usize,
                s.frames_per_block() * s.block_nr as usize
            );
            assert!(s.bytes() <= RING_BYTES.max(s.block_size as usize));
            // The last slot ends inside the ring.
            let last = s.slot_offset(s.frame_nr as usize - 1) + s.frame_size as usize;
            assert!(last <= s.bytes());
        }
        // Small frames get thousands of slots.
        assert!(RingShape::for_mtu(1500, 4096).frame_nr >= 4096);
    }

    #[test]
    fn slots_do_not_straddle_blocks() {
        let s = RingShape {
            block_size: 8192,
            block_nr: 2,
            frame_size: 3008,
            frame_nr: 4,
        };
        assert_eq!(s.slot_offset(1), 3008);
        assert_eq!(s.slot_offset(2), 8192);
        assert_eq!(s.slot_offset(3), 8192 + 3008);
    }

    #[test]
    fn copies_frames_in_order_and_hands_slots_back() {
        let mut f = fake(small_shape());
        f.frame(0, b"first frame");
        f.frame(1, &[7u8; 1500]);
        let (mut b, mut l) = bufs(8, 1600);
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 2);
        assert_eq!(&b[0][..l[0]], b"first frame");
        assert_eq!(&b[1][..l[1]], &[7u8; 1500][..]);
        assert_eq!(f.status(0), TP_STATUS_KERNEL);
        assert_eq!(f.status(1), TP_STATUS_KERNEL);
        // Nothing more: empty, and the streak counts it.
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 0);
        assert_eq!(f.ring.empty_streak, 1);
    }

    #[test]
    fn reports_the_vlan_tag_the_kernel_took_out() {
        let mut f = fake(small_shape());
        let tagged = Tpacket2Hdr {
            tp_status: TP_STATUS_USER | TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID,
            tp_len: 4,
            tp_snaplen: 4,
            tp_mac: 66,
            tp_vlan_tci: 0x2007,
            tp_vlan_tpid: 0x88a8,
            ..Default::default()
        };
        f.put(0, tagged, b"tag1");
        // No TPID flag (older kernels): an 802.1Q tag.
        f.put(
            1,
            Tpacket2Hdr {
                tp_status: TP_STATUS_USER | TP_STATUS_VLAN_VALID,
                tp_vlan_tpid: 0,
                ..tagged
            },
            b"tag2",
        );
        f.frame(2, b"none");
        let (mut b, mut l) = bufs(4, 64);
        let mut t = [None; 4];
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut t), 3);
        assert_eq!(
            t[..3],
            [
                Some(VlanTag {
                    tpid: 0x88a8,
                    tci: 0x2007
                }),
                Some(VlanTag {
                    tpid: TPID_8021Q,
                    tci: 0x2007
                }),
                None
            ]
        );
    }

    #[test]
    fn frames_are_handed_in_place_and_slots_given_back() {
        let mut f = fake(small_shape());
        f.frame(0, b"one");
        let tagged = Tpacket2Hdr {
            tp_status: TP_STATUS_USER | TP_STATUS_VLAN_VALID,
            tp_len: 3,
            tp_snaplen: 3,
            tp_mac: 66,
            tp_vlan_tci: 7,
            ..Default::default()
        };
        f.put(1, tagged, b"two");
        let cut = Tpacket2Hdr {
            tp_status: TP_STATUS_USER,
            tp_len: 9000,
            tp_snaplen: 1982,
            tp_mac: 66,
            ..Default::default()
        };
        f.put(2, cut, &[1u8; 1982]);
        f.frame(3, b"four");
        let mut seen = Vec::new();
        let n = f.ring.recv_each(3, &mut |frame, tag| {
            seen.push((frame.to_vec(), tag.map(|t| t.tci)));
        });
        assert_eq!(n, 3);
        assert_eq!(seen, [(b"one".to_vec(), None), (b"two".to_vec(), Some(7))]);
        assert_eq!(f.ring.oversize, 1);
        for i in 0..3 {
            assert_eq!(f.status(i), TP_STATUS_KERNEL, "slot {i} handed back");
        }
        assert_eq!(f.status(3), TP_STATUS_USER, "beyond max: still queued");
        seen.clear();
        assert_eq!(
            f.ring
                .recv_each(8, &mut |fr, _| seen.push((fr.to_vec(), None))),
            1
        );
        assert_eq!(seen[0].0, b"four");
    }

    #[test]
    fn wraps_around_the_ring() {
        let mut f = fake(small_shape());
        let (mut b, mut l) = bufs(2, 64);
        for round in 0..5u8 {
            f.frame((2 * round as usize) % 4, &[round; 10]);
            f.frame((2 * round as usize + 1) % 4, &[round + 100; 10]);
            assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 2);
            assert_eq!(&b[0][..l[0]], &[round; 10]);
            assert_eq!(&b[1][..l[1]], &[round + 100; 10]);
        }
    }

    #[test]
    fn stops_at_the_callers_batch_size() {
        let mut f = fake(small_shape());
        for i in 0..4 {
            f.frame(i, &[i as u8; 20]);
        }
        let (mut b, mut l) = bufs(3, 64);
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 3);
        assert_eq!(f.status(3), TP_STATUS_USER, "fourth frame stays queued");
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 1);
        assert_eq!(&b[0][..l[0]], &[3u8; 20]);
    }

    #[test]
    fn truncated_and_out_of_bounds_slots_are_counted_and_dropped() {
        let mut f = fake(small_shape());
        // Cut by the kernel: the wire frame was longer than the slot.
        let cut = Tpacket2Hdr {
            tp_status: TP_STATUS_USER,
            tp_len: 9000,
            tp_snaplen: 1982,
            tp_mac: 66,
            ..Default::default()
        };
        f.put(0, cut, &[1u8; 1982]);
        // Offset + length past the slot end.
        let outside = Tpacket2Hdr {
            tp_status: TP_STATUS_USER,
            tp_len: 100,
            tp_snaplen: 100,
            tp_mac: 2000,
            ..Default::default()
        };
        f.put(1, outside, &[]);
        // Offset inside the header.
        let inside_hdr = Tpacket2Hdr {
            tp_status: TP_STATUS_USER,
            tp_len: 10,
            tp_snaplen: 10,
            tp_mac: 4,
            ..Default::default()
        };
        f.put(2, inside_hdr, &[]);
        f.frame(3, b"good");
        let (mut b, mut l) = bufs(8, 64);
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 1);
        assert_eq!(&b[0][..l[0]], b"good");
        assert_eq!(f.ring.oversize, 3);
        for i in 0..4 {
            assert_eq!(f.status(i), TP_STATUS_KERNEL, "slot {i} handed back");
        }
    }

    #[test]
    fn frame_bigger_than_the_callers_buffer_is_dropped() {
        let mut f = fake(small_shape());
        f.frame(0, &[9u8; 1000]);
        f.frame(1, b"fits");
        let (mut b, mut l) = bufs(4, 100);
        assert_eq!(f.ring.recv(&mut b, &mut l, &mut [None; 16]), 1);
        assert_eq!(&b[0][..l[0]], b"fits");
        assert_eq!(f.ring.oversize, 1);
    }

    #[test]
    fn attaches_to_an_unbound_packet_socket() {
        // Protocol 0 and never bound: receives nothing, sends nothing.
        // SAFETY: plain socket() call; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            // Not root (no CAP_NET_RAW): nothing to attach to.
            let e = io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            return;
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        use std::os::fd::AsFd;
        let mut ring = RxRing::attach(fd.as_fd(), 1500).expect("ring");
        assert!(ring.shape().frame_nr > 0);
        let (mut b, mut l) = bufs(4, 2048);
        assert_eq!(ring.recv(&mut b, &mut l, &mut [None; 16]), 0);
        assert_eq!(ring.status(0).load(Ordering::Relaxed), TP_STATUS_KERNEL);
    }
}
