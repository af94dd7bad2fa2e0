//! `rawflood`: sends ethflow frames that no IPCP should accept, as fast as it
//! can, through an AF_PACKET socket on one interface (one the test rig made).
//! The XDP tests use it to check that the driver-level filter drops them.
//!
//! Kinds: `unknown` — DATA frames for endpoint ids that do not exist (a new
//! one per frame); `malformed` — frames with version 2.
//!
//! Prints one line: `sent=N elapsed_ms=T pps=P`. Exit 1 on a socket error.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::exit;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Unknown,
    Malformed,
}

#[derive(Parser)]
#[command(
    name = "rawflood",
    about = "flood an interface with ethflow frames nobody accepts"
)]
struct Args {
    /// Interface to send on.
    #[arg(long)]
    dev: String,
    /// Destination MAC (aa:bb:cc:dd:ee:ff).
    #[arg(long)]
    dst: String,
    /// Frames to send.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    #[arg(long, value_enum, default_value_t = Kind::Unknown)]
    kind: Kind,
    #[arg(long, default_value = "0x88b5")]
    ethertype: String,
    /// Pause after each batch of 64 frames, in microseconds (0 = none).
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
}

const BATCH: usize = 64;
/// Ethernet header + ethflow header + 26 bytes: a 60-byte minimum frame.
const FRAME_LEN: usize = 14 + 20 + 26;

fn fail(what: &str) -> ! {
    eprintln!("rawflood: {what}: {}", std::io::Error::last_os_error());
    exit(1);
}

fn parse_mac(s: &str) -> [u8; 6] {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s}")))
        .collect();
    parts.try_into().unwrap_or_else(|_| panic!("bad MAC {s}"))
}

fn main() {
    let args = Args::parse();
    let ethertype =
        u16::from_str_radix(args.ethertype.trim_start_matches("0x"), 16).expect("hex ethertype");
    let dst = parse_mac(&args.dst);
    let cname = std::ffi::CString::new(args.dev.clone()).expect("interface name");
    // SAFETY: cname is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    if ifindex == 0 {
        fail("no such interface");
    }
    // SAFETY: plain socket() call, protocol 0: this socket receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        fail("socket");
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a valid sockaddr_ll and its size is passed.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    } < 0
    {
        fail("bind");
    }
    let mut frames = vec![[0u8; FRAME_LEN]; BATCH];
    for f in frames.iter_mut() {
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&[0x02, 0xf1, 0x00, 0x00, 0x00, 0x01]);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[14] = match args.kind {
            Kind::Unknown => 2,      // wire version 2
            Kind::Malformed => 0x7f, // no such version
        };
        f[15] = 0; // DATA
        f[16..18].copy_from_slice(&26u16.to_be_bytes());
        f[26..34].copy_from_slice(&0x0000_0001_0000_0001u64.to_be_bytes()); // src eid
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let mut seq = 0u64;
    while sent < args.count {
        let n = ((args.count - sent) as usize).min(BATCH);
        for f in frames.iter_mut().take(n) {
            // Generation 0xdead, never handed out by a fresh IPCP: unknown.
            seq += 1;
            let eid = 0xdead_0000_0000_0000u64 | (seq & 0xff_ffff);
            f[18..26].copy_from_slice(&eid.to_be_bytes());
        }
        let mut iov: Vec<libc::iovec> = frames[..n]
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain old data; zero is valid.
        let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs point at iovecs over live frames; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR)
            ) {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            fail("sendmmsg");
        }
        sent += r as u64;
        if args.pause_us > 0 {
            std::thread::sleep(Duration::from_micros(args.pause_us));
        }
    }
    let elapsed = start.elapsed();
    println!(
        "sent={sent} elapsed_ms={:.1} pps={:.0}",
        elapsed.as_secs_f64() * 1e3,
        sent as f64 / elapsed.as_secs_f64()
    );
}
