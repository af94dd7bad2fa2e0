//! The `raw` backend: one AF_PACKET socket bound to the interface and the
//! ethertype, with batched receive (recvmmsg) and send (sendmmsg) and
//! PACKET_QDISC_BYPASS.
//!
//! The socket is created with protocol 0 and only then bound with the
//! ethertype: a packet socket created with a protocol starts receiving that
//! protocol from *every* interface until it is bound.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
}

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

impl RawSocket {
    pub fn open(ifindex: i32, ethertype: u16) -> io::Result<RawSocket> {
        // SAFETY: plain socket() call; protocol 0 = receive nothing until bound.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ethertype.to_be();
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
        // Skip the qdisc: lower latency and cost; the IPCP does its own pacing.
        let _ = setsockopt_int(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
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
        })
    }

    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Receive up to `bufs.len()` frames without blocking; `lens[i]` gets each
    /// frame's length. Returns how many arrived (0 when none are waiting).
    pub fn recv_batch(&self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        let n = bufs.len().min(lens.len()).min(BATCH);
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain old data; zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: bufs[i].len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs[..n] point at iovecs over live, writable buffers of the stated sizes.
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
        }
        Ok(r as usize)
    }

    /// Send frames (each a complete Ethernet frame). Returns how many were sent;
    /// blocks while the socket's send buffer is full.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < frames.len() {
            let n = (frames.len() - sent).min(BATCH);
            let mut iov: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: mmsghdr is plain old data; zero is valid.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let f = frames[sent + i];
                iov[i] = libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                };
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: hdrs[..n] point at iovecs over live buffers; the kernel only reads them.
            let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if sent > 0 { Ok(sent) } else { Err(e) };
            }
            sent += r as usize;
        }
        Ok(sent)
    }
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
        "raw".into()
    }
    fn rx_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        RawSocket::recv_batch(self, bufs, lens)
    }
    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        RawSocket::send_batch(self, frames)
    }
}
