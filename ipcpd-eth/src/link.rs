//! Link monitoring over rtnetlink: carrier loss, the interface going down or
//! away, and MTU changes reach the IPCP as events within milliseconds (no
//! polling).

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
