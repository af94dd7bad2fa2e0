//! What the IPCP's event loop needs from an Ethernet backend: batched frame
//! receive and send, a pollable fd, and (for in-driver filtering) to hear which
//! endpoint ids are live.

use crate::wire::Eid;
use std::io;
use std::os::fd::BorrowedFd;

/// Frames in and out of one interface.
pub trait FrameIo {
    /// Short name for logs and `irm ipcp list` (`raw`, `xdp (native)`, ...).
    fn name(&self) -> String;
    /// The fd that becomes readable when frames wait.
    fn rx_fd(&self) -> BorrowedFd<'_>;
    /// Receive up to `bufs.len()` whole Ethernet frames without blocking;
    /// `lens[i]` gets each length. Returns how many arrived (0 = none waiting).
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize>;
    /// Send whole Ethernet frames; returns how many went out.
    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize>;
    /// A local endpoint became live (frames for it must be delivered).
    fn endpoint_added(&mut self, _eid: Eid) {}
    /// A local endpoint is gone (frames for it may be dropped early).
    fn endpoint_removed(&mut self, _eid: Eid) {}
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
