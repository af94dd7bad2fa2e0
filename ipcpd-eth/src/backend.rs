//! What the IPCP's event loop needs from an Ethernet backend: batched frame
//! receive and send, a pollable fd, and (for in-driver filtering) to hear which
//! endpoint ids are live.

use crate::raw::TxSlot;
use crate::wire::{Eid, Mac};
use std::io;
use std::os::fd::BorrowedFd;

/// Frames in and out of one interface.
pub trait FrameIo {
    /// Short name for logs and `irm ipcp list` (`raw`, `xdp (native)`, ...).
    fn name(&self) -> String;
    /// The fd that becomes readable when frames wait.
    fn rx_fd(&self) -> BorrowedFd<'_>;
    /// Frames are received through a ring in memory shared with the kernel:
    /// looking for them costs no syscall, so the event loop may take
    /// [`FrameIo::rx_fd`] out of its epoll set while it is busy (see
    /// `ipcp::rx_watch`). `false`: the fd stays watched.
    fn rx_is_ring(&self) -> bool {
        false
    }
    /// Receive up to `bufs.len()` whole Ethernet frames without blocking;
    /// `lens[i]` gets each length. Returns how many arrived (0 = none waiting).
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize>;
    /// Hand up to `max` received frames to `each`, in place in the
    /// backend's own memory (a receive ring: no copy into a caller's buffer);
    /// the frame may be changed in place (a layer key opens it there).
    /// Returns how many were read (0 = none waiting; frames the backend's own
    /// filter refused are read but not handed). `None`: the backend cannot;
    /// use [`FrameIo::recv_batch`].
    fn recv_in_place(
        &mut self,
        _max: usize,
        _each: &mut dyn FnMut(&mut [u8]),
    ) -> Option<io::Result<usize>> {
        None
    }
    /// Send whole Ethernet frames; returns how many went out.
    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize>;
    /// Room to build up to `want` untagged frames in place (the slots of the
    /// backend's transmit ring), each from the start of its slot; then
    /// [`FrameIo::tx_commit`] sends them. `None`: the backend has no such
    /// room; build frames elsewhere and use [`FrameIo::send_batch`]. An
    /// empty slice: no room came free in time (try again later).
    fn tx_slots(&mut self, _want: usize) -> Option<&mut [TxSlot]> {
        None
    }
    /// Send the first `lens.len()` slots of the last [`FrameIo::tx_slots`],
    /// slot k holding a frame of `lens[k]` bytes; returns how many went out.
    fn tx_commit(&mut self, _lens: &[usize]) -> io::Result<usize> {
        Ok(0)
    }
    /// The link's MTU is now `mtu` (frames longer than it cannot go).
    fn link_mtu(&mut self, _mtu: u32) {}
    /// A local endpoint became live (frames for it must be delivered).
    fn endpoint_added(&mut self, _eid: Eid) {}
    /// A local endpoint is gone (frames for it may be dropped early).
    fn endpoint_removed(&mut self, _eid: Eid) {}
    /// The hosts this IPCP has flows with are now `macs` (their keep-alives
    /// may skip an early management budget).
    fn peers_changed(&mut self, _macs: &[Mac]) {}
    /// Frames the backend dropped before the IPCP saw them, if it counts them.
    fn early_drops(&self) -> Option<u64> {
        None
    }
    /// Every counter the backend keeps, by name (for logs and `irm ipcp list`).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The largest MTU the backend carries, when it has a limit of its own
    /// (the IPCP's max SDU must then follow the smaller of it and the link's).
    fn max_mtu(&self) -> Option<u32> {
        None
    }
    /// The link's MTU grew past [`FrameIo::max_mtu`]: a backend that can carry
    /// it with fresh buffers returns a new instance (the caller swaps it in and
    /// polls its `rx_fd`); `None` keeps this one and its limit.
    fn reopen_for_mtu(&self, _mtu: u32) -> Option<io::Result<Box<dyn FrameIo>>> {
        None
    }
}
