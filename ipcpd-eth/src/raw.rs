//! The `raw` backend: one AF_PACKET socket bound to the interface and the
//! ethertype, receiving through a PACKET_MMAP ring (`rx_ring`; recvmmsg when
//! the ring cannot be set up), and sending through a PACKET_MMAP transmit
//! ring on a second socket (`tx_ring`: frames are built in the ring's slots,
//! one `send` per batch; sendmmsg on the first socket when the ring cannot
//! be set up). Both skip the qdisc (PACKET_QDISC_BYPASS).
//!
//! `ETHFLOW_RAW_TX=mmsg` forces sendmmsg and `ETHFLOW_RAW_TX=ring-qdisc` the
//! ring through the qdisc (for measurements); the backend's name says which
//! path is in use: `raw (tx ring)` or `raw (sendmmsg)`.
//!
//! The socket is created with protocol 0 and only then bound: a packet
//! socket created with a protocol starts receiving that protocol from *every*
//! interface until it is bound. It is bound for every protocol (ETH_P_ALL)
//! with a classic BPF filter that keeps only our ethertype.
//!
//! Why ETH_P_ALL: the kernel takes a VLAN tag out of a frame before packet
//! sockets see it. A socket bound to one protocol gets a tagged frame only
//! after the kernel has found no VLAN device for it and *cleared* the tag, so
//! it cannot tell a tagged frame from an untagged one. An ETH_P_ALL socket
//! sees the frame while the tag is still known: the ring's slot header (or
//! PACKET_AUXDATA) reports it, and the filter's protocol is the inner one.
//!
//! Every received frame then passes [`SegmentFilter::judge`] before the IPCP
//! sees it: frames for other MACs and other VLANs are counted and dropped.
//! With a VLAN, frames go out with the tag put back between the MACs and the
//! ethertype.

pub mod fanout;
mod rx_ring;
mod tx_ring;

use crate::segment::{is_management, MgmtBudget, SegmentCounters, SegmentFilter, VlanTag};
use log::{info, warn};
use rx_ring::RxRing;
use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
pub use tx_ring::TxSlot;
use tx_ring::{TxCounters, TxRing};

/// What we learn about the interface at open.
#[derive(Debug, Clone, Copy)]
pub struct LinkInfo {
    pub ifindex: i32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub up: bool,
}

pub struct RawSocket {
    fd: OwnedFd,
    pub ifindex: i32,
    ethertype: u16,
    /// The receive ring; `None` means recvmmsg.
    rx_ring: Option<RxRing>,
    /// The transmit ring (on a socket of its own); `None` means sendmmsg.
    tx_ring: Option<TxRing>,
    /// Frames sendmmsg refused one by one (too long for the link, ...).
    tx_refused: Cell<u64>,
    /// Frames the kernel dropped for want of room (ring or socket buffer),
    /// summed: PACKET_STATISTICS resets on every read.
    kernel_drops: Cell<u64>,
    /// Our MAC and VLAN: which received frames are ours.
    filter: SegmentFilter,
    segment: SegmentCounters,
    mgmt_budget: MgmtBudget,
    /// Origin of the budget's clock.
    epoch: std::time::Instant,
    /// VLAN tags of the frames of the current receive batch.
    tags: [Option<VlanTag>; BATCH],
}

/// Receive calls per batch while the segment filter refuses frames: a flood
/// of frames for others must not end our batch early, nor hold the loop long.
const FILTER_ROUNDS: usize = 4;

/// struct tpacket_auxdata (linux/if_packet.h): what PACKET_AUXDATA reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct AuxData {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Control-message room per received frame (one PACKET_AUXDATA message).
const CMSG_ROOM: usize = 64;

/// While the ring stays empty, look for a pending socket error (ENETDOWN when
/// the link goes down) every this many calls: the error keeps the fd readable
/// (EPOLLERR) until read, and the ring alone would never read it.
const ERROR_CHECK_EVERY: u32 = 16;

/// Look up an interface by name: index, MAC, MTU, whether it is running.
pub fn link_info(dev: &str) -> io::Result<LinkInfo> {
    let cname = std::ffi::CString::new(dev)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name `{dev}`"),
        ));
    }
    // SAFETY: cname is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    if ifindex == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such interface: {dev}"),
        ));
    }
    // SAFETY: plain socket() call; the fd is owned right away.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a fresh fd nobody else owns.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in dev.bytes().enumerate() {
        ifr.ifr_name[i] = b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR/SIOCGIFMTU/SIOCGIFFLAGS fill the union of a valid ifreq.
    let mac = unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        let d = ifr.ifr_ifru.ifru_hwaddr.sa_data;
        [
            d[0] as u8, d[1] as u8, d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
        ]
    };
    // SAFETY: as above.
    let mtu = unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_mtu as u32
    };
    // SAFETY: as above.
    let flags = unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags as i32
    };
    let up = flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0;
    Ok(LinkInfo {
        ifindex,
        mac,
        mtu,
        up,
    })
}

fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, val: i32) -> io::Result<()> {
    // SAFETY: val lives across the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The MTU of the interface with this index.
fn mtu_of(ifindex: i32) -> io::Result<u32> {
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: name has the IFNAMSIZ bytes if_indextoname may write.
    let r = unsafe { libc::if_indextoname(ifindex as u32, name.as_mut_ptr()) };
    if r.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `name`.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Ok(link_info(&name.to_string_lossy())?.mtu)
}

/// Take (and clear) the socket's pending error, if any.
fn take_socket_error(fd: BorrowedFd<'_>) -> Option<io::Error> {
    let mut err: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: err and len live across the call; len holds err's size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && err != 0).then(|| io::Error::from_raw_os_error(err))
}

/// Frames dropped by the kernel since the last call (reading resets them).
fn take_kernel_drops(fd: BorrowedFd<'_>) -> u64 {
    // struct tpacket_stats: packets, drops.
    let mut stats = [0u32; 2];
    let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
    // SAFETY: stats and len live across the call; len holds stats' size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            stats.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        stats[1] as u64
    } else {
        0
    }
}

/// The classic BPF program: keep frames whose protocol (the kernel's
/// `skb->protocol`, the inner ethertype once a VLAN tag is taken out) is
/// `ethertype`, whole; drop the rest.
fn ethertype_filter(ethertype: u16) -> [libc::sock_filter; 4] {
    const BPF_W: u16 = 0x00;
    const BPF_K: u16 = 0x00;
    const BPF_JMP: u16 = 0x05;
    let op = |code: u32, extra: u16| (code as u16) | extra;
    [
        // A = skb->protocol (host order)
        libc::sock_filter {
            code: op(libc::BPF_LD | libc::BPF_ABS, BPF_W),
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32,
        },
        // if A == ethertype: next, else skip one
        libc::sock_filter {
            code: op(libc::BPF_JEQ, BPF_JMP | BPF_K),
            jt: 0,
            jf: 1,
            k: u32::from(ethertype),
        },
        libc::sock_filter {
            code: op(libc::BPF_RET, BPF_K),
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
        libc::sock_filter {
            code: op(libc::BPF_RET, BPF_K),
            jt: 0,
            jf: 0,
            k: 0,
        },
    ]
}

fn attach_filter(fd: BorrowedFd<'_>, ethertype: u16) -> io::Result<()> {
    let mut prog = ethertype_filter(ethertype);
    set_cbpf(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &mut prog)
}

/// Hand the kernel a classic BPF program through `setsockopt(level, name)`
/// (a socket filter, a fanout group's selector).
fn set_cbpf(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    prog: &mut [libc::sock_filter],
) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at `prog`, which lives across the call; the kernel
    // copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl RawSocket {
    pub fn open(ifindex: i32, ethertype: u16, filter: SegmentFilter) -> io::Result<RawSocket> {
        // SAFETY: plain socket() call; protocol 0 = receive nothing until bound.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The ring goes on before bind: until bound nothing is received, so
        // no frame can wait in the ordinary queue the ring never reads.
        let rx_ring = match mtu_of(ifindex).and_then(|mtu| RxRing::attach(fd.as_fd(), mtu)) {
            Ok(r) => {
                let s = r.shape();
                info!(
                    "raw: receive ring of {} slots of {} B ({} KiB).",
                    s.frame_nr,
                    s.frame_size,
                    (s.block_size as usize * s.block_nr as usize) >> 10
                );
                Some(r)
            }
            Err(e) => {
                warn!("raw: no receive ring ({e}); receiving with recvmmsg.");
                None
            }
        };
        // The filter goes on before bind too: from bind on, every frame meets it.
        attach_filter(fd.as_fd(), ethertype)?;
        // SAFETY: sockaddr_ll is plain old data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
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
        // Our own frames never come back to us (best effort: Linux 4.20+;
        // the segment filter drops them anyway).
        let _ = setsockopt_int(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            1,
        );
        // Without the ring, the VLAN tag of each frame comes as a control message.
        setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        // Skip the qdisc: lower latency and cost; the IPCP does its own pacing.
        let _ = setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
        let tx_ring = Self::open_tx_ring(ifindex, filter);
        // Big buffers absorb bursts while the IPCP is busy elsewhere (FORCE works as root).
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, force, 8 << 20).is_err() {
                let _ = setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, plain, 8 << 20);
            }
        }
        Ok(RawSocket {
            fd,
            ifindex,
            ethertype,
            rx_ring,
            tx_ring,
            tx_refused: Cell::new(0),
            kernel_drops: Cell::new(0),
            filter,
            segment: SegmentCounters::default(),
            mgmt_budget: MgmtBudget::default(),
            epoch: std::time::Instant::now(),
            tags: [None; BATCH],
        })
    }

    /// The transmit ring, unless `ETHFLOW_RAW_TX=mmsg` or it cannot be set
    /// up (then sendmmsg, with a warning).
    fn open_tx_ring(ifindex: i32, filter: SegmentFilter) -> Option<TxRing> {
        let mode = std::env::var("ETHFLOW_RAW_TX").unwrap_or_default();
        if mode == "mmsg" {
            info!("raw: sending with sendmmsg (ETHFLOW_RAW_TX=mmsg).");
            return None;
        }
        let bypass = mode != "ring-qdisc";
        match mtu_of(ifindex).and_then(|mtu| TxRing::open(ifindex, mtu, filter.tx_tag(), bypass)) {
            Ok(r) => {
                let s = r.shape();
                info!(
                    "raw: transmit ring of {} slots of {} B ({} KiB){}.",
                    s.frame_nr,
                    s.frame_size,
                    (s.block_size as usize * s.block_nr as usize) >> 10,
                    if bypass { "" } else { " through the qdisc" }
                );
                Some(r)
            }
            Err(e) => {
                warn!("raw: no transmit ring ({e}); sending with sendmmsg.");
                None
            }
        }
    }

    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Whether frames go out through the transmit ring.
    pub fn has_tx_ring(&self) -> bool {
        self.tx_ring.is_some()
    }

    /// The transmit ring's counters (zero without one).
    pub fn tx_counters(&self) -> TxCounters {
        self.tx_ring
            .as_ref()
            .map_or_else(TxCounters::default, |r| r.counters)
    }

    /// Send whole untagged frames through the transmit ring (copied into
    /// its slots) or, without one, with sendmmsg. Returns how many went out.
    pub fn send_frames(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let Some(ring) = self.tx_ring.as_mut() else {
            return self.send_batch(frames);
        };
        let mut lens = [0usize; BATCH];
        let mut sent = 0;
        let mut at = 0;
        while at < frames.len() {
            let slots = ring.reserve((frames.len() - at).min(BATCH));
            if slots.is_empty() {
                break;
            }
            let n = slots.len();
            for (k, slot) in slots.iter_mut().enumerate() {
                let f = frames[at + k];
                let room = slot.as_mut();
                // A frame longer than a slot: its length makes commit refuse it.
                let take = f.len().min(room.len());
                room[..take].copy_from_slice(&f[..take]);
                lens[k] = f.len();
            }
            sent += ring.commit(&lens[..n])?;
            at += n;
        }
        Ok(sent)
    }

    /// Receive up to `bufs.len()` frames for us without blocking; `lens[i]`
    /// gets each frame's length. Returns how many arrived (0 when none are
    /// waiting). Frames the segment filter refuses are counted, not returned.
    pub fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        let upto = bufs.len().min(lens.len()).min(BATCH);
        let mut kept = 0;
        for _ in 0..FILTER_ROUNDS {
            let got = self.recv_some(&mut bufs[kept..upto], &mut lens[kept..upto], kept)?;
            if got == 0 {
                break;
            }
            // Keep the admitted frames at the front (swapping buffers, not bytes).
            let now_ns = (self.epoch.elapsed().as_nanos() as u64).max(1);
            let mut w = kept;
            for i in kept..kept + got {
                let frame = &bufs[i][..lens[i]];
                let mut ok = self.segment.admit(self.filter.judge(frame, self.tags[i]));
                if ok
                    && !self.filter.keyed
                    && is_management(frame)
                    && !self.mgmt_budget.may_pass(&frame[6..], now_ns)
                {
                    self.segment.mgmt_budget += 1;
                    ok = false;
                }
                if ok {
                    bufs.swap(w, i);
                    lens[w] = lens[i];
                    w += 1;
                }
            }
            kept = w;
            if kept == upto {
                break;
            }
        }
        Ok(kept)
    }

    /// Hand up to `max` frames for us to `each` in place (in the receive
    /// ring: no copy), after the segment filter and the management budget,
    /// as `recv_batch` does. `None`: there is no ring (use `recv_batch`).
    /// Returns how many frames were read (those refused are not handed).
    pub fn recv_in_place(
        &mut self,
        max: usize,
        each: &mut dyn FnMut(&mut [u8]),
    ) -> Option<io::Result<usize>> {
        let ring = self.rx_ring.as_mut()?;
        let (filter, segment, budget) = (&self.filter, &mut self.segment, &mut self.mgmt_budget);
        let now_ns = (self.epoch.elapsed().as_nanos() as u64).max(1);
        let n = ring.recv_each(max, &mut |frame, tag| {
            let mut ok = segment.admit(filter.judge(frame, tag));
            if ok && !filter.keyed && is_management(frame) && !budget.may_pass(&frame[6..], now_ns)
            {
                segment.mgmt_budget += 1;
                ok = false;
            }
            if ok {
                each(frame);
            }
        });
        if n == 0 && ring.empty_streak % ERROR_CHECK_EVERY == 1 {
            if let Some(e) = take_socket_error(self.fd.as_fd()) {
                return Some(Err(e));
            }
        }
        Some(Ok(n))
    }

    /// One receive call into `bufs`; the tags go to `self.tags[at..]`.
    fn recv_some(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
        at: usize,
    ) -> io::Result<usize> {
        let Some(ring) = self.rx_ring.as_mut() else {
            return self.recv_mmsg(bufs, lens, at);
        };
        let n = ring.recv(bufs, lens, &mut self.tags[at..]);
        if n == 0 && ring.empty_streak % ERROR_CHECK_EVERY == 1 {
            if let Some(e) = take_socket_error(self.fd.as_fd()) {
                return Err(e);
            }
        }
        Ok(n)
    }

    /// Frames refused by the segment filter.
    pub fn segment_counters(&self) -> SegmentCounters {
        self.segment
    }

    /// Frames dropped because they were larger than a ring slot or a buffer.
    pub fn rx_oversize(&self) -> u64 {
        self.rx_ring.as_ref().map_or(0, |r| r.oversize)
    }

    /// Frames the kernel dropped because the ring (or buffer) was full.
    pub fn rx_kernel_drops(&self) -> u64 {
        let total = self.kernel_drops.get() + take_kernel_drops(self.fd.as_fd());
        self.kernel_drops.set(total);
        total
    }

    /// recvmmsg: the receive path when there is no ring. Tags go to
    /// `self.tags[at..]`, from each frame's PACKET_AUXDATA.
    fn recv_mmsg(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
        at: usize,
    ) -> io::Result<usize> {
        let n = bufs.len().min(lens.len()).min(BATCH - at);
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // u64 elements: control buffers aligned for cmsghdr.
        let mut control = [[0u64; CMSG_ROOM / 8]; BATCH];
        // SAFETY: mmsghdr is plain old data; zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: bufs[i].len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_control = control[i].as_mut_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_controllen = CMSG_ROOM;
        }
        // SAFETY: hdrs[..n] point at iovecs over live, writable buffers and at
        // control buffers of the stated sizes.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for i in 0..r as usize {
            // A frame larger than the buffer is truncated by the kernel: report the
            // truncated length so the parser refuses it by its length field.
            lens[i] = (hdrs[i].msg_len as usize).min(bufs[i].len());
            self.tags[at + i] = aux_tag(&hdrs[i].msg_hdr);
        }
        Ok(r as usize)
    }

    /// Send frames with sendmmsg (each a complete untagged Ethernet frame;
    /// with a VLAN the tag goes in on the way out). Returns how many were
    /// sent; a frame the kernel refuses is counted (`tx_refused`) and the
    /// rest still go. Blocks while the socket's send buffer is full.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let tag = self.filter.tx_tag();
        // Frames looked at, and frames that went out.
        let (mut at, mut out) = (0, 0);
        while at < frames.len() {
            let n = (frames.len() - at).min(BATCH);
            // Untagged: one piece per frame; tagged: MACs, tag, the rest.
            let mut iov: [[libc::iovec; 3]; BATCH] = [[libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 3]; BATCH];
            // SAFETY: mmsghdr is plain old data; zero is valid.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let f = frames[at + i];
                let piece = |b: &[u8]| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                };
                let parts = match (&tag, f.len() >= 12) {
                    (Some(t), true) => {
                        iov[i] = [piece(&f[..12]), piece(t), piece(&f[12..])];
                        3
                    }
                    _ => {
                        iov[i][0] = piece(f);
                        1
                    }
                };
                hdrs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
                hdrs[i].msg_hdr.msg_iovlen = parts;
            }
            // SAFETY: hdrs[..n] point at iovecs over live buffers (the frames
            // and `tag`); the kernel only reads them.
            let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // This frame cannot go (longer than the link carries, bad
                    // header): count it and send the rest of the batch.
                    Some(libc::EMSGSIZE) | Some(libc::EINVAL) => {
                        self.tx_refused.set(self.tx_refused.get() + 1);
                        at += 1;
                        continue;
                    }
                    _ => return if out > 0 { Ok(out) } else { Err(e) },
                }
            }
            at += r as usize;
            out += r as usize;
        }
        Ok(out)
    }
}

/// The VLAN tag in a received message's PACKET_AUXDATA, if any.
fn aux_tag(msg: &libc::msghdr) -> Option<VlanTag> {
    // SAFETY: msg is a msghdr the kernel filled in: msg_control/msg_controllen
    // describe our control buffer, and the CMSG_* macros stay inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points at a header inside the buffer.
        let c = unsafe { &*cmsg };
        let want = std::mem::size_of::<AuxData>();
        // SAFETY: CMSG_LEN is arithmetic.
        let full = unsafe { libc::CMSG_LEN(want as u32) } as usize;
        if c.cmsg_level == libc::SOL_PACKET
            && c.cmsg_type == libc::PACKET_AUXDATA
            && c.cmsg_len as usize >= full
        {
            // SAFETY: the message holds a whole tpacket_auxdata (length
            // checked); read_unaligned makes no alignment assumption.
            let aux: AuxData =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const AuxData) };
            return rx_ring::tag_of(aux.tp_status, aux.tp_vlan_tci, aux.tp_vlan_tpid);
        }
        // SAFETY: as above; CMSG_NXTHDR returns null past the buffer's end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

/// Frames per recvmmsg/sendmmsg call.
pub const BATCH: usize = 64;

impl AsFd for RawSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl crate::backend::FrameIo for RawSocket {
    fn name(&self) -> String {
        if self.tx_ring.is_some() {
            "raw (tx ring)".into()
        } else {
            "raw (sendmmsg)".into()
        }
    }
    fn rx_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn rx_is_ring(&self) -> bool {
        self.rx_ring.is_some()
    }
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        RawSocket::recv_batch(self, bufs, lens)
    }
    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.send_frames(frames)
    }
    fn recv_in_place(
        &mut self,
        max: usize,
        each: &mut dyn FnMut(&mut [u8]),
    ) -> Option<io::Result<usize>> {
        RawSocket::recv_in_place(self, max, each)
    }
    fn tx_slots(&mut self, want: usize) -> Option<&mut [TxSlot]> {
        Some(self.tx_ring.as_mut()?.reserve(want))
    }
    fn tx_commit(&mut self, lens: &[usize]) -> io::Result<usize> {
        match self.tx_ring.as_mut() {
            Some(r) => r.commit(lens),
            None => Ok(0),
        }
    }
    fn link_mtu(&mut self, mtu: u32) {
        if let Some(r) = self.tx_ring.as_mut() {
            r.set_mtu(mtu);
        }
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let t = self.tx_counters();
        let mut c = vec![
            ("rx_kernel_drops", self.rx_kernel_drops()),
            ("rx_oversize", self.rx_oversize()),
            ("tx_ring", u64::from(self.tx_ring.is_some())),
            ("tx_refused", self.tx_refused.get() + t.refused),
            ("tx_unsent", t.unsent),
            ("tx_ring_stalls", t.stalls),
            ("tx_kicks", t.kicks),
        ];
        c.extend(self.segment.named());
        c
    }
    fn max_mtu(&self) -> Option<u32> {
        // A frame larger than a ring slot is cut by the kernel and dropped
        // (receive), or cannot be built (transmit).
        let rx = self.rx_ring.as_ref().map(|r| r.shape().max_mtu());
        let tx = self.tx_ring.as_ref().map(|r| r.max_mtu());
        match (rx, tx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn reopen_for_mtu(&self, mtu: u32) -> Option<io::Result<Box<dyn crate::backend::FrameIo>>> {
        // The receive ring's slots were sized at open: a new socket sizes them anew.
        let limit = crate::backend::FrameIo::max_mtu(self)?;
        (mtu > limit).then(|| {
            RawSocket::open(self.ifindex, self.ethertype, self.filter)
                .map(|s| Box::new(s) as Box<dyn crate::backend::FrameIo>)
        })
    }
}
