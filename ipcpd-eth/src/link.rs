//! Link monitoring: rtnetlink notifications for the interface going down or
//! away and for MTU changes, plus a carrier probe.
//!
//! The probe exists because the kernel's linkwatch batches non-urgent carrier
//! changes to one run per second: a veth whose peer has the same ifindex (as in
//! two fresh namespaces) or a NIC losing its cable is announced on netlink up
//! to a second late, and `IFF_RUNNING` follows the same delay. `ETHTOOL_GLINK`
//! reads the device's carrier bit directly, so a probe every few milliseconds
//! sees the loss at once. (`IFF_LOWER_UP` would too, but it does not fit in the
//! 16-bit flags that `SIOCGIFFLAGS` returns.)

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Multicast group of link notifications (RTMGRP_LINK).
const RTMGRP_LINK: u32 = 1;

/// What happened to our interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// Administratively up and carrier present.
    Up { mtu: Option<u32> },
    /// Down, or carrier lost.
    Down { mtu: Option<u32> },
    /// The interface was deleted (e.g. its veth peer went away).
    Gone,
}

pub struct LinkMonitor {
    sock: Socket,
    ifindex: u32,
    buf: Vec<u8>,
}

impl LinkMonitor {
    pub fn open(ifindex: u32) -> io::Result<LinkMonitor> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        sock.set_non_blocking(true)?;
        Ok(LinkMonitor {
            sock,
            ifindex,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Drain pending notifications; returns the events about our interface.
    pub fn poll_events(&mut self) -> Vec<LinkEvent> {
        let mut out = Vec::new();
        loop {
            let mut slice = &mut self.buf[..];
            let n = match self.sock.recv(&mut slice, libc::MSG_DONTWAIT) {
                Ok(n) => n.min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ENOBUFS: we missed notifications; the caller re-reads the link state.
                    log::warn!("link monitor: {e}");
                    break;
                }
            };
            parse_datagram(&self.buf[..n], self.ifindex, &mut out);
        }
        out
    }
}

/// Parse every netlink message in one datagram; malformed ones are skipped.
pub fn parse_datagram(mut data: &[u8], ifindex: u32, out: &mut Vec<LinkEvent>) {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            return;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
                    if m.header.index == ifindex =>
                {
                    out.push(link_event(&m))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m))
                    if m.header.index == ifindex =>
                {
                    out.push(LinkEvent::Gone)
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        data = &data[step.min(data.len())..];
    }
}

fn link_event(m: &LinkMessage) -> LinkEvent {
    let mtu = m.attributes.iter().find_map(|a| {
        if let LinkAttribute::Mtu(v) = a {
            Some(*v)
        } else {
            None
        }
    });
    let f = m.header.flags;
    if f.contains(LinkFlags::Up) && f.contains(LinkFlags::LowerUp) {
        LinkEvent::Up { mtu }
    } else {
        LinkEvent::Down { mtu }
    }
}

impl AsFd for LinkMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket's fd lives as long as self, which the borrow ties to.
        unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) }
    }
}

/// Reads the interface's flags with one ioctl: cheap enough to run every few ms.
pub struct CarrierProbe {
    sock: std::os::fd::OwnedFd,
    ifr: libc::ifreq,
}

impl CarrierProbe {
    pub fn new(dev: &str) -> io::Result<CarrierProbe> {
        use std::os::fd::FromRawFd;
        if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        // SAFETY: plain socket() call; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data; zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (i, b) in dev.bytes().enumerate() {
            ifr.ifr_name[i] = b as libc::c_char;
        }
        Ok(CarrierProbe { sock, ifr })
    }

    /// Up with carrier (`Ok(true)`), down or no carrier (`Ok(false)`), or gone (`Err`).
    pub fn carrier(&mut self) -> io::Result<bool> {
        // SAFETY: SIOCGIFFLAGS fills the flags member of a valid ifreq.
        let flags = unsafe {
            if libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut self.ifr) < 0 {
                return Err(io::Error::last_os_error());
            }
            self.ifr.ifr_ifru.ifru_flags as i32
        };
        if flags & libc::IFF_UP == 0 {
            return Ok(false);
        }
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        const ETHTOOL_GLINK: u32 = 0x0a;
        let mut ev = EthtoolValue {
            cmd: ETHTOOL_GLINK,
            data: 0,
        };
        let mut ifr = self.ifr;
        ifr.ifr_ifru.ifru_data = &mut ev as *mut EthtoolValue as *mut libc::c_char;
        // SAFETY: SIOCETHTOOL with ETHTOOL_GLINK writes one ethtool_value
        // through ifr_data, which points at `ev` for the duration of the call.
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
        if r < 0 {
            // No ethtool link report from this driver: fall back to IFF_RUNNING.
            return Ok(flags & libc::IFF_RUNNING != 0);
        }
        Ok(ev.data != 0)
    }
}
