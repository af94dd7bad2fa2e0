//! `rawbench`: what the kernel can do with raw frames, with no ethflow in the
//! way — the yardstick for scripts/bench.sh.
//!
//! * `recv` / `send`: a plain AF_PACKET receiver and sender of frames with the
//!   ethflow ethertype and the frame size ethflow would use for an SDU of
//!   `--size` bytes (Ethernet header + ethflow header + SDU). Modes: `single`
//!   (one frame per send/recv syscall), `mmsg` (sendmmsg/recvmmsg batches),
//!   `mmap` (sendmmsg into a TPACKET_V3 receive ring). The receiver counts what
//!   it saw from the first frame until the sender's end marker, which carries
//!   the number of frames sent.
//! * `ping` / `pong`: raw-frame round trips, one frame per syscall.
//! * `udp-ping` / `udp-pong`: the same over UDP sockets.
//!
//! Output is one JSON object (receiver / pinger), for the report generator.
#![allow(unsafe_code)]

use clap::{Parser, Subcommand, ValueEnum};
use ipcpd_eth::raw::link_info;
use ipcpd_eth::wire::{ETH_HEADER_LEN, HEADER_LEN};
use irm::sys::Mmap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const KIND_DATA: u8 = 0xd1;
const KIND_END: u8 = 0xe1;
const KIND_PING: u8 = 0xa1;
const KIND_PONG: u8 = 0xa2;
/// Frames per sendmmsg/recvmmsg call.
const BATCH: usize = 64;
/// The receiver stops when nothing came for this long after the first frame.
const IDLE_END: Duration = Duration::from_millis(1000);
/// How often blocking calls come back to look at the clock.
const TICK: Duration = Duration::from_millis(100);
/// Smallest payload: kind byte, padding, two u64 fields.
const MIN_PAYLOAD: usize = 24;

#[derive(Parser)]
#[command(
    name = "rawbench",
    about = "raw AF_PACKET and UDP yardsticks for ethflow's benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Single,
    Mmsg,
    Mmap,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Mmsg => "mmsg",
            Mode::Mmap => "mmap",
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Count frames until the sender's end marker; print the receiver's view.
    Recv {
        #[arg(long)]
        dev: String,
        #[arg(long, value_enum, default_value_t = Mode::Mmsg)]
        mode: Mode,
        /// SDU size the sender uses (for Mbit/s; frames of other sizes are counted too).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Give up if no frame came within this many seconds.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// Stop counting after this many seconds in any case.
        #[arg(long, default_value_t = 30.0)]
        max: f64,
        #[arg(long, default_value = "0x88b5", value_parser = parse_ethertype)]
        ethertype: u16,
    },
    /// Send frames as fast as possible for `--seconds`, then the end marker.
    Send {
        #[arg(long)]
        dev: String,
        /// Destination MAC (default broadcast).
        #[arg(long, default_value = "ff:ff:ff:ff:ff:ff", value_parser = parse_mac)]
        peer: [u8; 6],
        #[arg(long, value_enum, default_value_t = Mode::Mmsg)]
        mode: Mode,
        /// SDU size: the frame is as long as ethflow's frame for this SDU.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value = "0x88b5", value_parser = parse_ethertype)]
        ethertype: u16,
    },
    /// Raw-frame round trips to a `pong`.
    Ping {
        #[arg(long)]
        dev: String,
        #[arg(long, value_parser = parse_mac)]
        peer: [u8; 6],
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Between pings, in µs (oping's -i is in ms; 1000 µs = -i 1).
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        #[arg(long, default_value = "0x88b5", value_parser = parse_ethertype)]
        ethertype: u16,
    },
    /// Answer raw pings for `--seconds`.
    Pong {
        #[arg(long)]
        dev: String,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        #[arg(long, default_value = "0x88b5", value_parser = parse_ethertype)]
        ethertype: u16,
    },
    /// UDP round trips to a `udp-pong`.
    UdpPing {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
    },
    /// Answer UDP pings for `--seconds`.
    UdpPong {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
}

fn parse_ethertype(s: &str) -> Result<u16, String> {
    match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16).map_err(|e| e.to_string()),
        None => s
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string()),
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC `{s}`"));
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC `{s}`"))?;
    }
    Ok(m)
}

fn main() {
    let r = match Cli::parse().cmd {
        Cmd::Recv {
            dev,
            mode,
            size,
            wait,
            max,
            ethertype,
        } => recv(&dev, mode, size, wait, max, ethertype),
        Cmd::Send {
            dev,
            peer,
            mode,
            size,
            seconds,
            ethertype,
        } => send(&dev, peer, mode, size, seconds, ethertype),
        Cmd::Ping {
            dev,
            peer,
            size,
            count,
            interval_us,
            ethertype,
        } => ping(&dev, peer, size, count, interval_us, ethertype),
        Cmd::Pong {
            dev,
            seconds,
            ethertype,
        } => pong(&dev, seconds, ethertype),
        Cmd::UdpPing {
            to,
            size,
            count,
            interval_us,
        } => udp_ping(to, size, count, interval_us),
        Cmd::UdpPong { bind, seconds } => udp_pong(bind, seconds),
    };
    if let Err(e) = r {
        eprintln!("rawbench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// The packet socket
// ---------------------------------------------------------------------------

struct PacketSocket {
    fd: OwnedFd,
    mac: [u8; 6],
    mtu: usize,
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
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

impl PacketSocket {
    /// Bound to `dev` and `ethertype`, outgoing frames not looped back to us,
    /// qdisc bypassed and big buffers, as the IPCP sets its own.
    fn open(
        dev: &str,
        ethertype: u16,
        before_bind: impl FnOnce(&OwnedFd) -> io::Result<()>,
    ) -> io::Result<Self> {
        let link = link_info(dev)?;
        // SAFETY: plain socket(); protocol 0 = nothing arrives until bound.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32)?;
        let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32);
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, opt, &(8i32 << 20));
        }
        let tick = libc::timeval {
            tv_sec: 0,
            tv_usec: TICK.as_micros() as libc::suseconds_t,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tick)?;
        before_bind(&fd)?;
        // SAFETY: sockaddr_ll is plain old data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = link.ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
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
        Ok(PacketSocket {
            fd,
            mac: link.mac,
            mtu: link.mtu as usize,
        })
    }

    /// A frame of ethflow's length for an SDU of `size` bytes, kind byte first.
    fn frame(&self, dst: [u8; 6], ethertype: u16, size: usize, kind: u8) -> io::Result<Vec<u8>> {
        let payload = (HEADER_LEN + size).max(MIN_PAYLOAD);
        if payload > self.mtu {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SDU size {size} needs {payload} bytes after the Ethernet header; the MTU is {}", self.mtu),
            ));
        }
        let mut f = vec![0u8; ETH_HEADER_LEN + payload];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&self.mac);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[ETH_HEADER_LEN] = kind;
        Ok(f)
    }

    /// One frame; blocks at most TICK. Ok(None) on timeout.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is live and writable for its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as usize))
    }

    fn send_one(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is live for its length; the kernel only reads it.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `n` copies of `frame` in one sendmmsg; returns how many the kernel took.
    fn send_many(&self, frame: &[u8], n: usize) -> io::Result<usize> {
        let n = n.min(BATCH);
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        // SAFETY: mmsghdr is plain old data; zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for h in hdrs.iter_mut().take(n) {
            h.msg_hdr.msg_iov = &mut iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec over `frame`, live for the call.
        let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Up to BATCH frames into `bufs`; waits at most TICK for the first.
    fn recv_many(&self, bufs: &mut [Vec<u8>], lens: &mut [usize; BATCH]) -> io::Result<usize> {
        let n = bufs.len().min(BATCH);
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .take(n)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain old data; zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs[..n] point at iovecs over live, writable buffers.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_WAITFORONE,
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
        for (l, h) in lens.iter_mut().zip(hdrs.iter()).take(r as usize) {
            *l = h.msg_len as usize;
        }
        Ok(r as usize)
    }
}

// ---------------------------------------------------------------------------
// TPACKET_V3 receive ring (mmap mode)
// ---------------------------------------------------------------------------

const RING_BLOCK_SIZE: u32 = 1 << 20;
const RING_BLOCKS: u32 = 32;
const RING_FRAME_SIZE: u32 = 2048;
/// A block is handed over after at most this long even if not full (ms).
const RING_BLOCK_TIMEOUT_MS: u32 = 1;

struct RxRing {
    /// The ring's blocks, mapped from the socket (unmapped on drop).
    map: Mmap,
    next: u32,
}

impl RxRing {
    fn setup(fd: &OwnedFd) -> io::Result<()> {
        setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V3 as i32),
        )?;
        let req = libc::tpacket_req3 {
            tp_block_size: RING_BLOCK_SIZE,
            tp_block_nr: RING_BLOCKS,
            tp_frame_size: RING_FRAME_SIZE,
            tp_frame_nr: RING_BLOCK_SIZE / RING_FRAME_SIZE * RING_BLOCKS,
            tp_retire_blk_tov: RING_BLOCK_TIMEOUT_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
    }

    /// Map the ring the kernel set up for this socket (all its blocks).
    fn map(fd: &OwnedFd) -> io::Result<RxRing> {
        let len = (RING_BLOCK_SIZE * RING_BLOCKS) as usize;
        Ok(RxRing {
            map: Mmap::shared(fd.as_fd(), len, 0, false)?,
            next: 0,
        })
    }

    /// Hand each frame of the next ready block to `f`; false if none is ready.
    fn drain_block(&mut self, mut f: impl FnMut(&[u8])) -> bool {
        // SAFETY: block `next` lies inside the mapping; the kernel wrote a
        // tpacket_block_desc at its start.
        let block = unsafe {
            self.map
                .as_ptr()
                .add((self.next * RING_BLOCK_SIZE) as usize)
        } as *mut libc::tpacket_block_desc;
        // SAFETY: as above; block_status is read volatile since the kernel writes it.
        let status = unsafe { std::ptr::read_volatile(&(*block).hdr.bh1.block_status) };
        if status & libc::TP_STATUS_USER == 0 {
            return false;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: the block is ours until we give it back; the kernel laid out
        // num_pkts tpacket3_hdr entries from offset_to_first_pkt, chained by
        // tp_next_offset, each inside the block. Offsets are checked anyway.
        unsafe {
            let h = &(*block).hdr.bh1;
            let mut off = h.offset_to_first_pkt as usize;
            for _ in 0..h.num_pkts {
                if off + std::mem::size_of::<libc::tpacket3_hdr>() > RING_BLOCK_SIZE as usize {
                    break;
                }
                let p = (block as *mut u8).add(off) as *const libc::tpacket3_hdr;
                let start = off + (*p).tp_mac as usize;
                let len = (*p).tp_snaplen as usize;
                if start + len <= RING_BLOCK_SIZE as usize {
                    f(std::slice::from_raw_parts(
                        (block as *const u8).add(start),
                        len,
                    ));
                }
                let next = (*p).tp_next_offset as usize;
                if next == 0 {
                    break;
                }
                off += next;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::write_volatile(&mut (*block).hdr.bh1.block_status, libc::TP_STATUS_KERNEL);
        }
        self.next = (self.next + 1) % RING_BLOCKS;
        true
    }
}

fn poll_in(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------

/// What a receiver saw.
#[derive(Default)]
struct Count {
    frames: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The sender's total, from its end marker.
    sent: Option<u64>,
}

impl Count {
    fn frame(&mut self, f: &[u8], now: Instant) {
        match f.get(ETH_HEADER_LEN) {
            Some(&KIND_DATA) => {
                self.frames += 1;
                self.first.get_or_insert(now);
                self.last = Some(now);
            }
            Some(&KIND_END) if f.len() >= ETH_HEADER_LEN + 16 => {
                let b: [u8; 8] = f[ETH_HEADER_LEN + 8..ETH_HEADER_LEN + 16]
                    .try_into()
                    .expect("8 bytes");
                self.sent = Some(u64::from_be_bytes(b));
            }
            _ => {}
        }
    }

    /// Done: the end marker came, nothing came for a while, or time is up.
    fn done(&self, now: Instant, started: Instant, wait: Duration, max: Duration) -> bool {
        if self.sent.is_some() || now - started > max {
            return true;
        }
        match self.last {
            Some(l) => now - l > IDLE_END,
            None => now - started > wait,
        }
    }
}

fn recv(
    dev: &str,
    mode: Mode,
    size: usize,
    wait: f64,
    max: f64,
    ethertype: u16,
) -> Result<(), String> {
    let sock = PacketSocket::open(dev, ethertype, |fd| {
        if mode == Mode::Mmap {
            RxRing::setup(fd)
        } else {
            Ok(())
        }
    })
    .map_err(|e| e.to_string())?;
    let (wait, max) = (Duration::from_secs_f64(wait), Duration::from_secs_f64(max));
    let started = Instant::now();
    let mut c = Count::default();
    let room = ETH_HEADER_LEN + sock.mtu + 64;
    match mode {
        Mode::Single => {
            let mut buf = vec![0u8; room];
            while !c.done(Instant::now(), started, wait, max) {
                if let Some(n) = sock.recv_one(&mut buf).map_err(|e| e.to_string())? {
                    c.frame(&buf[..n], Instant::now());
                }
            }
        }
        Mode::Mmsg => {
            let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; room]).collect();
            let mut lens = [0usize; BATCH];
            while !c.done(Instant::now(), started, wait, max) {
                let n = sock
                    .recv_many(&mut bufs, &mut lens)
                    .map_err(|e| e.to_string())?;
                let now = Instant::now();
                for i in 0..n {
                    c.frame(&bufs[i][..lens[i].min(room)], now);
                }
            }
        }
        Mode::Mmap => {
            let mut ring = RxRing::map(&sock.fd).map_err(|e| e.to_string())?;
            while !c.done(Instant::now(), started, wait, max) {
                let now = Instant::now();
                if !ring.drain_block(|f| c.frame(f, now)) {
                    poll_in(&sock.fd, TICK).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    if c.frames == 0 {
        return Err("no frame received".into());
    }
    let window = match (c.first, c.last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let pps = if window > 0.0 {
        c.frames as f64 / window
    } else {
        0.0
    };
    let sent = c.sent.unwrap_or(0);
    let lost = sent.saturating_sub(c.frames);
    let loss_pct = if sent > 0 {
        100.0 * lost as f64 / sent as f64
    } else {
        0.0
    };
    println!(
        "{{\"mode\":\"{}\",\"size\":{size},\"sent\":{},\"received\":{},\"lost\":{lost},\"loss_pct\":{loss_pct:.3},\"sdus_per_s\":{pps:.1},\"mbit_per_s\":{:.3},\"window_s\":{window:.6}}}",
        mode.name(),
        c.sent.map_or("null".to_string(), |s| s.to_string()),
        c.frames,
        pps * size as f64 * 8.0 / 1e6
    );
    Ok(())
}

fn send(
    dev: &str,
    peer: [u8; 6],
    mode: Mode,
    size: usize,
    seconds: f64,
    ethertype: u16,
) -> Result<(), String> {
    let sock = PacketSocket::open(dev, ethertype, |_| Ok(())).map_err(|e| e.to_string())?;
    let frame = sock
        .frame(peer, ethertype, size, KIND_DATA)
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < until {
        // Send errors (ENOBUFS under pressure) are not counted, and retried.
        match mode {
            Mode::Single => {
                for _ in 0..BATCH {
                    if sock.send_one(&frame).is_ok() {
                        sent += 1;
                    }
                }
            }
            Mode::Mmsg | Mode::Mmap => sent += sock.send_many(&frame, BATCH).unwrap_or(0) as u64,
        }
    }
    // Let the receiver drain, then tell it the total (a few times: it may be busy).
    std::thread::sleep(Duration::from_millis(100));
    let mut end = sock
        .frame(peer, ethertype, 0, KIND_END)
        .map_err(|e| e.to_string())?;
    end[ETH_HEADER_LEN + 8..ETH_HEADER_LEN + 16].copy_from_slice(&sent.to_be_bytes());
    for _ in 0..5 {
        sock.send_one(&end)
            .map_err(|e| format!("cannot send the end marker: {e}"))?;
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "rawbench: sent {sent} frames in {seconds} s ({})",
        mode.name()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// Round-trip times, as every RTT tool of the benchmark prints them.
fn print_rtts(kind: &str, size: usize, sent: u64, mut rtts_us: Vec<f64>) -> Result<(), String> {
    if rtts_us.is_empty() {
        return Err("no reply received".into());
    }
    rtts_us.sort_by(f64::total_cmp);
    let q =
        |p: f64| rtts_us[((p * rtts_us.len() as f64).ceil() as usize).clamp(1, rtts_us.len()) - 1];
    let avg = rtts_us.iter().sum::<f64>() / rtts_us.len() as f64;
    let pct: Vec<String> = (0..=100)
        .map(|p| format!("{:.2}", q(p as f64 / 100.0)))
        .collect();
    println!(
        "{{\"kind\":\"{kind}\",\"size\":{size},\"sent\":{sent},\"received\":{},\"min_us\":{:.2},\"median_us\":{:.2},\"p99_us\":{:.2},\"max_us\":{:.2},\"avg_us\":{avg:.2},\"percentiles_us\":[{}]}}",
        rtts_us.len(),
        q(0.0),
        q(0.5),
        q(0.99),
        q(1.0),
        pct.join(",")
    );
    Ok(())
}

/// Sequence number and send time (ns since `start`) at payload offsets 8 and 16.
fn stamp(payload: &mut [u8], seq: u64, start: Instant) {
    payload[8..16].copy_from_slice(&seq.to_be_bytes());
    payload[16..24].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
}

fn read_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let u = |i: usize| {
        payload
            .get(i..i + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    Some((u(8)?, u(16)?))
}

/// Sleep until the `i`-th tick of `interval` after `start`.
fn pace(start: Instant, i: u64, interval: Duration) {
    let at = start + interval * i as u32;
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

fn ping(
    dev: &str,
    peer: [u8; 6],
    size: usize,
    count: u64,
    interval_us: u64,
    ethertype: u16,
) -> Result<(), String> {
    let sock = PacketSocket::open(dev, ethertype, |_| Ok(())).map_err(|e| e.to_string())?;
    let mut frame = sock
        .frame(peer, ethertype, size, KIND_PING)
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; ETH_HEADER_LEN + sock.mtu + 64];
    let start = Instant::now();
    let interval = Duration::from_micros(interval_us);
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        pace(start, seq, interval);
        stamp(&mut frame[ETH_HEADER_LEN..], seq, start);
        sock.send_one(&frame)
            .map_err(|e| format!("send failed: {e}"))?;
        // Wait for this ping's pong; a lost one costs at most a second.
        let give_up = Instant::now() + Duration::from_secs(1);
        while Instant::now() < give_up {
            let Some(n) = sock.recv_one(&mut buf).map_err(|e| e.to_string())? else {
                continue;
            };
            let now = start.elapsed().as_nanos() as u64;
            let p = &buf[ETH_HEADER_LEN.min(n)..n];
            if p.first() == Some(&KIND_PONG) && read_stamp(p).is_some_and(|(s, _)| s == seq) {
                let (_, t) = read_stamp(p).expect("checked");
                rtts.push(now.saturating_sub(t) as f64 / 1e3);
                break;
            }
        }
    }
    print_rtts("raw", size, count, rtts)
}

fn pong(dev: &str, seconds: f64, ethertype: u16) -> Result<(), String> {
    let sock = PacketSocket::open(dev, ethertype, |_| Ok(())).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; ETH_HEADER_LEN + sock.mtu + 64];
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let Some(n) = sock.recv_one(&mut buf).map_err(|e| e.to_string())? else {
            continue;
        };
        if n <= ETH_HEADER_LEN || buf[ETH_HEADER_LEN] != KIND_PING {
            continue;
        }
        let src: [u8; 6] = buf[6..12].try_into().expect("6 bytes");
        buf[0..6].copy_from_slice(&src);
        buf[6..12].copy_from_slice(&sock.mac);
        buf[ETH_HEADER_LEN] = KIND_PONG;
        sock.send_one(&buf[..n])
            .map_err(|e| format!("send failed: {e}"))?;
    }
    Ok(())
}

fn udp_ping(to: SocketAddr, size: usize, count: u64, interval_us: u64) -> Result<(), String> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("address");
    let sock = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    sock.connect(to).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; size.max(MIN_PAYLOAD)];
    msg[0] = KIND_PING;
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let interval = Duration::from_micros(interval_us);
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        pace(start, seq, interval);
        stamp(&mut msg, seq, start);
        sock.send(&msg).map_err(|e| format!("send failed: {e}"))?;
        let give_up = Instant::now() + Duration::from_secs(1);
        while Instant::now() < give_up {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.to_string()),
            };
            let now = start.elapsed().as_nanos() as u64;
            if let Some((s, t)) = read_stamp(&buf[..n]) {
                if s == seq {
                    rtts.push(now.saturating_sub(t) as f64 / 1e3);
                    break;
                }
            }
        }
    }
    print_rtts("udp", size, count, rtts)
}

fn udp_pong(bind: SocketAddr, seconds: f64) -> Result<(), String> {
    let sock = UdpSocket::bind(bind).map_err(|e| format!("cannot bind {bind}: {e}"))?;
    sock.set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                sock.send_to(&buf[..n], from).map_err(|e| e.to_string())?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
