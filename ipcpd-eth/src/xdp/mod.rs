//! The `xdp` backend: an XDP program on the interface filters the IPCP's
//! frames in the driver (frames for endpoints that do not exist are dropped
//! there) and hands the rest to one AF_XDP socket per receive queue; frames
//! go out through the socket of queue 0.
//!
//! * [`program`] — the eBPF side: load, attach (native, else SKB mode), maps.
//! * [`xsk`] — one AF_XDP socket with its UMEM and rings (own code over
//!   libc; see docs/decisions/0005-af-xdp.md).
//! * [`ring`] — the kernel-shared rings.
//! * [`chain`] — multi-buffer frames: descriptor chains in and out.
//!
//! An MTU up to [`MAX_MTU`] takes one UMEM chunk per frame; above it (up to
//! [`MAX_SG_MTU`]) the backend runs multi-buffer: the program's `xdp.frags`
//! entry point and sockets bound with `XDP_USE_SG` (decision 0042).
//!
//! Dropping the backend detaches the program (its bpf_link closes) and closes
//! the sockets; a crash does the same, since both are only file descriptors.

pub mod chain;
pub mod program;
pub mod queues;
pub mod ring;
pub mod xsk;

use crate::backend::FrameIo;
use crate::segment::{SegmentFilter, VLAN_TAG_LEN};
use crate::wire::{Eid, Mac};
use log::{info, warn};
use program::{Counter, Mode, Program};
use queues::XskGroup;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use xsk::Xsk;

/// The largest MTU the backend carries: an Ethernet frame must fit one UMEM
/// chunk after the kernel's headroom (3840 bytes), minus the Ethernet header.
pub const MAX_MTU: u32 = xsk::MAX_FRAME as u32 - 14;

/// The largest MTU multi-buffer mode carries: a frame of [`xsk::MAX_SEGS`]
/// receive chunks, minus the Ethernet header (65 266).
pub const MAX_SG_MTU: u32 = xsk::MAX_SG_FRAME as u32 - 14;

/// Open the XDP backend on an interface (see the module docs).
pub fn open(
    dev: &str,
    ifindex: i32,
    ethertype: u16,
    mtu: u32,
    filter: SegmentFilter,
) -> Result<Box<dyn FrameIo>, String> {
    let ifindex = u32::try_from(ifindex).map_err(|_| format!("bad interface index {ifindex}"))?;
    Ok(Box::new(XdpBackend::open(
        dev, ifindex, ethertype, mtu, filter,
    )?))
}

pub struct XdpBackend {
    // The program first: dropping it stops the redirects before the sockets close.
    program: Program,
    /// One socket per receive queue, read in turns.
    socks: XskGroup,
    name: String,
    dev: String,
    /// What a raw backend needs, should the MTU outgrow this one.
    ifindex: u32,
    ethertype: u16,
    filter: SegmentFilter,
    /// The 802.1Q tag our frames carry, if the layer has a VLAN.
    tx_tag: Option<[u8; VLAN_TAG_LEN]>,
    /// The MACs in the program's `peer_macs` map.
    peers: HashSet<Mac>,
    /// Multi-buffer mode (frames of several chunks).
    sg: bool,
}

/// The number of receive queues of `dev`, from sysfs (1 if it cannot tell).
pub fn rx_queue_count(dev: &str) -> u32 {
    let Ok(dir) = std::fs::read_dir(format!("/sys/class/net/{dev}/queues")) else {
        return 1;
    };
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    (n as u32).max(1)
}

impl XdpBackend {
    pub fn open(
        dev: &str,
        ifindex: u32,
        ethertype: u16,
        mtu: u32,
        filter: SegmentFilter,
    ) -> Result<XdpBackend, String> {
        if mtu > MAX_SG_MTU {
            return Err(format!(
                "backend xdp carries MTUs up to {MAX_SG_MTU} (a frame of at most {} AF_XDP chunks); \
                 {dev} has MTU {mtu}: lower the MTU or use backend raw",
                xsk::MAX_SEGS
            ));
        }
        // One chunk per frame while frames fit one; else multi-buffer.
        let sg = mtu > MAX_MTU;
        raise_memlock_limit();
        let n_queues = rx_queue_count(dev);
        let want = program::Want::from_env()?;
        let (mut program, why) = Program::attach(ifindex, ethertype, filter, n_queues, want, sg)
            .map_err(|e| format!("XDP on {dev}: {e}"))?;
        let mut queues = Vec::new();
        let mut copy_reason = None;
        for q in 0..n_queues {
            // Zero-copy needs the driver's support, which only native mode uses.
            let zc = if program.mode() == Mode::Native && copy_reason.is_none() {
                Xsk::open(ifindex, q, true, sg)
                    .map_err(|e| copy_reason = Some(format!("zero-copy refused: {e}")))
                    .ok()
            } else {
                None
            };
            let sock = match zc {
                Some(s) => s,
                None => Xsk::open(ifindex, q, false, sg).map_err(|e| match sg {
                    true => format!(
                        "the kernel refused a multi-buffer AF_XDP socket (XDP_USE_SG) on queue {q} of {dev}: {e}"
                    ),
                    false => format!("cannot open an AF_XDP socket on queue {q} of {dev}: {e}"),
                })?,
            };
            program.set_socket(q, sock.as_fd())?;
            queues.push(sock);
        }
        if program.mode() == Mode::Skb {
            copy_reason = Some("SKB mode copies".into());
        }
        let copy = if queues.iter().all(Xsk::zero_copy) {
            "zero-copy"
        } else {
            "copy"
        };
        let buffers = match sg {
            true => format!(
                ", multi-buffer (MTU {mtu} is above {MAX_MTU}: frames of up to {} chunks)",
                xsk::MAX_SEGS
            ),
            false => String::new(),
        };
        info!(
            "backend xdp on {dev}: program attached in {why}; {} AF_XDP socket(s), {copy} mode{}{buffers}.",
            queues.len(),
            copy_reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
        let multi = if sg { ", multi-buffer" } else { "" };
        Ok(XdpBackend {
            name: format!("xdp ({}, {copy}{multi})", program.mode().name()),
            program,
            socks: XskGroup::new(queues).map_err(|e| e.to_string())?,
            dev: dev.to_string(),
            ifindex,
            ethertype,
            filter,
            tx_tag: filter.tx_tag(),
            peers: HashSet::new(),
            sg,
        })
    }

    /// Every counter of the program and the sockets.
    pub fn all_counters(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.program.counter(c)))
            .collect();
        let mut sum = xsk::XskStats::default();
        let mut too_big = 0;
        let mut chain_drops = [0u64; 4];
        for q in self.socks.iter() {
            for (sum, n) in chain_drops.iter_mut().zip(q.rx_chain_drops()) {
                *sum += n;
            }
            if let Ok(s) = q.stats() {
                sum.rx_dropped += s.rx_dropped;
                sum.rx_ring_full += s.rx_ring_full;
                sum.rx_fill_ring_empty += s.rx_fill_ring_empty;
                sum.tx_invalid += s.tx_invalid;
            }
            too_big += q.tx_too_big;
        }
        out.extend([
            ("xsk_rx_dropped", sum.rx_dropped),
            ("xsk_rx_ring_full", sum.rx_ring_full),
            ("xsk_rx_fill_ring_empty", sum.rx_fill_ring_empty),
            ("xsk_tx_invalid", sum.tx_invalid),
            ("xsk_tx_too_big", too_big),
        ]);
        if self.sg {
            out.extend([
                ("xsk_rx_chain_bad_desc", chain_drops[0]),
                ("xsk_rx_chain_too_long", chain_drops[1]),
                ("xsk_rx_chain_too_big", chain_drops[2]),
                ("xsk_rx_chain_tail", chain_drops[3]),
            ]);
        }
        out
    }
}

impl FrameIo for XdpBackend {
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

    fn tx_slots(&mut self, want: usize) -> Option<&mut [crate::raw::TxSlot]> {
        // A slot is one chunk; multi-buffer frames are cut from a buffer.
        if self.sg {
            return None;
        }
        let tagged = self.tx_tag.is_some();
        Some(self.socks.tx().reserve(want, tagged))
    }

    fn tx_commit(&mut self, lens: &[usize]) -> io::Result<usize> {
        self.socks.tx().commit(lens, self.tx_tag)
    }

    fn endpoint_added(&mut self, eid: Eid) {
        if let Err(e) = self.program.add_endpoint(eid) {
            warn!("xdp on {}: cannot mark endpoint {:#x} live ({e}); its frames are dropped in the driver.", self.dev, eid.0);
        }
    }

    fn endpoint_removed(&mut self, eid: Eid) {
        if let Err(e) = self.program.remove_endpoint(eid) {
            warn!(
                "xdp on {}: cannot remove endpoint {:#x} ({e}).",
                self.dev, eid.0
            );
        }
    }

    fn peers_changed(&mut self, macs: &[Mac]) {
        let now: HashSet<Mac> = macs.iter().copied().collect();
        for gone in self.peers.difference(&now) {
            if let Err(e) = self.program.remove_peer(*gone) {
                warn!("xdp on {}: cannot forget peer {gone:02x?} ({e}).", self.dev);
            }
        }
        for new in now.difference(&self.peers) {
            if let Err(e) = self.program.add_peer(*new) {
                warn!("xdp on {}: cannot mark {new:02x?} as a peer ({e}); its keep-alives share the management budget.", self.dev);
            }
        }
        self.peers = now;
    }

    fn early_drops(&self) -> Option<u64> {
        let p = &self.program;
        Some(
            p.counter(Counter::DropUnknownEid)
                + p.counter(Counter::DropMalformed)
                + p.counter(Counter::DropNoSocket)
                + p.counter(Counter::DropMgmtBudget)
                + p.counter(Counter::DropNotForUs),
        )
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.all_counters()
    }

    fn max_mtu(&self) -> Option<u32> {
        Some(self.max_mtu())
    }

    /// An MTU above what this backend was opened for (possible in SKB
    /// mode): fall back to backend raw, announced (the caller swaps it in;
    /// this one detaches on drop). A single-buffer backend does not turn
    /// multi-buffer while running: its program and sockets would both change.
    fn reopen_for_mtu(&self, mtu: u32) -> Option<io::Result<Box<dyn FrameIo>>> {
        let limit = self.max_mtu();
        (mtu > limit).then(|| {
            warn!(
                "backend xdp on {} was opened for MTUs up to {limit}, the link now has {mtu}: falling back to backend raw.",
                self.dev
            );
            let ifindex = i32::try_from(self.ifindex)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface index"))?;
            crate::raw::RawSocket::open(ifindex, self.ethertype, self.filter)
                .map(|s| Box::new(s) as Box<dyn FrameIo>)
        })
    }
}

impl Drop for XdpBackend {
    fn drop(&mut self) {
        let counters: Vec<String> = self
            .all_counters()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        info!(
            "backend xdp on {}: detaching; {}.",
            self.dev,
            counters.join(" ")
        );
    }
}

impl XdpBackend {
    /// The largest MTU this backend carries: one chunk's, or a chain's.
    fn max_mtu(&self) -> u32 {
        if self.sg {
            MAX_SG_MTU
        } else {
            MAX_MTU
        }
    }
}

/// UMEM and (before kernel 5.11) BPF maps count against RLIMIT_MEMLOCK; root
/// may lift it. Best effort: without CAP_SYS_RESOURCE the open fails later
/// with its own error.
fn raise_memlock_limit() {
    let _ = irm::sys::set_memlock_unlimited();
}
