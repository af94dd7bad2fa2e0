//! `queues` > 1 on backend xdp: the backend's AF_XDP sockets (one per
//! receive queue of the interface; the program redirects each frame to the
//! socket of the queue it arrived on) are split into one set per worker.
//! Set `p` takes the sockets of queues `q` with `q mod parts == p` and sends
//! through the first of them (queue `p`); the backend keeps set 0 and the
//! program (its endpoint map is updated from the allocator's thread).
//!
//! The NIC, not the IPCP, chooses a frame's receive queue: a DATA frame that
//! arrives on another worker's queue goes through the allocator to the
//! worker of its flow (see `ipcp::worker`). On veth, a frame arrives on the
//! receive queue numbered like the peer's send queue, so two IPCPs whose
//! flows sit on the same queue index need no such detour.

use super::xsk::Xsk;
use super::XdpBackend;
use crate::backend::FrameIo;
use crate::segment::VLAN_TAG_LEN;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// AF_XDP sockets read in turns, with one rx fd over them: the backend's
/// and each worker's set. Frames go out through the first socket.
#[derive(Default)]
pub(super) struct XskGroup {
    queues: Vec<Xsk>,
    /// With several sockets, one epoll fd over them is the rx fd.
    poll: Option<Epoll>,
    /// The socket `recv_batch` starts at (turns, so no queue starves another).
    next_queue: usize,
}

impl XskGroup {
    pub(super) fn new(queues: Vec<Xsk>) -> io::Result<XskGroup> {
        let poll = if queues.len() < 2 {
            None
        } else {
            let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            for (i, q) in queues.iter().enumerate() {
                ep.add(q.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
            }
            Some(ep)
        };
        Ok(XskGroup {
            queues,
            poll,
            next_queue: 0,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, Xsk> {
        self.queues.iter()
    }

    /// The socket frames go out through.
    pub(super) fn tx(&mut self) -> &mut Xsk {
        &mut self.queues[0]
    }

    fn into_sockets(self) -> Vec<Xsk> {
        self.queues
    }

    pub(super) fn rx_fd(&self) -> BorrowedFd<'_> {
        match &self.poll {
            Some(ep) => ep.0.as_fd(),
            None => self.queues[0].as_fd(),
        }
    }

    /// One socket, whose fd is the rx fd: an empty look is a read of its
    /// rx ring. (Several sit in an epoll fd of their own, signalled anyway.)
    pub(super) fn rx_is_ring(&self) -> bool {
        self.poll.is_none() && !self.queues.is_empty()
    }

    pub(super) fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> usize {
        let n = self.queues.len();
        let mut got = 0;
        for i in 0..n {
            let q = (self.next_queue + i) % n;
            got += self.queues[q].recv(&mut bufs[got..], &mut lens[got..]);
            if got == bufs.len().min(lens.len()) {
                break;
            }
        }
        self.next_queue = (self.next_queue + 1) % n.max(1);
        got
    }
}

/// One worker's AF_XDP sockets.
pub struct XskSet {
    socks: XskGroup,
    tx_tag: Option<[u8; VLAN_TAG_LEN]>,
    name: String,
    max_mtu: u32,
}

impl XdpBackend {
    /// AF_XDP sockets (one per receive queue of the interface).
    pub fn socket_count(&self) -> usize {
        self.socks.len()
    }

    /// Split the sockets into `parts` sets (at most one per socket): this
    /// backend keeps set 0, the others are returned for the workers.
    pub fn split(&mut self, parts: usize) -> io::Result<Vec<XskSet>> {
        let parts = parts.clamp(1, self.socks.len().max(1));
        let mut sets: Vec<Vec<Xsk>> = (0..parts).map(|_| Vec::new()).collect();
        for (q, x) in std::mem::take(&mut self.socks)
            .into_sockets()
            .into_iter()
            .enumerate()
        {
            sets[q % parts].push(x);
        }
        let mut rest = sets.split_off(1);
        self.socks = XskGroup::new(sets.pop().unwrap_or_default())?;
        rest.drain(..)
            .map(|queues| {
                Ok(XskSet {
                    socks: XskGroup::new(queues)?,
                    tx_tag: self.tx_tag,
                    name: self.name.clone(),
                    max_mtu: self.max_mtu(),
                })
            })
            .collect()
    }
}

impl FrameIo for XskSet {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rx_fd(&self) -> BorrowedFd<'_> {
        self.socks.rx_fd()
    }

    fn rx_is_ring(&self) -> bool {
        self.socks.rx_is_ring()
    }

    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        Ok(self.socks.recv_batch(bufs, lens))
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.socks.tx().send(frames, self.tx_tag)
    }

    fn max_mtu(&self) -> Option<u32> {
        Some(self.max_mtu)
    }
}
