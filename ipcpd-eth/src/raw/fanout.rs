//! `queues` > 1 on backend raw: one packet socket per queue, all in one
//! PACKET_FANOUT group whose classic BPF program picks the socket from the
//! ethflow **destination endpoint id** (docs/decisions/0031):
//!
//! * a frame of our ethertype goes to socket `dst eid index mod n`, so every
//!   frame of a flow — its DATA and the DEALLOC or UNKNOWN_EID that ends it
//!   — lands on the one worker that owns the flow, in the order it came,
//!   whatever the NIC's receive hash does (the worker hands management
//!   frames to the allocator after the data before them);
//! * frames without a destination eid (eid 0: name queries, flow requests,
//!   keep-alives), other ethertypes (the sockets' own filters drop them) and
//!   frames too short to carry an eid go to socket 0, the allocator's.
//!
//! The program runs before any socket filter, on the frame as the kernel
//! receives it: `skb->protocol` is the ethertype with any VLAN tag already
//! taken out (the tag travels as metadata on AF_PACKET), so the ethflow header
//! is read relative to the network header (`SKF_NET_OFF`), never at a fixed
//! Ethernet offset.
//!
//! When the MTU grows past what the sockets' receive rings hold, queue 0's
//! member opens a whole new group ([`Member`]'s `reopen_for_mtu`): the new
//! members of the other queues wait in [`Group`], admitting no frame until
//! their worker has closed the old socket and calls [`Member::admit`], so no
//! frame is received twice (a frame that arrives in between is lost, as on
//! any link whose MTU changes).

use super::{set_cbpf, setsockopt_int, RawSocket};
use crate::backend::FrameIo;
use crate::segment::SegmentFilter;
use crate::wire::Eid;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

/// Linux's PACKET_FANOUT_FLAG_UNIQUEID: the kernel picks a free group id.
const FLAG_UNIQUEID: u32 = 0x2000;
/// `SKF_NET_OFF` (linux/filter.h): loads relative to the network header.
const SKF_NET_OFF: i32 = -0x10_0000;
/// Offset of the low 32 bits of the destination eid (bytes 4..12 of the
/// ethflow header, big-endian: the slot index is the low 24 bits).
const DST_EID_LOW_AT: u32 = 8;

/// One member of the fanout group: a raw socket that is never swapped for
/// another (a reopened socket would leave the group and break the pinning of
/// flows to queues), so its MTU limit stays the one it was opened with.
pub struct Member {
    sock: RawSocket,
    /// Queue 0's member: the group to reopen when the MTU grows.
    group: Option<Arc<Group>>,
}

/// What a group's reopening needs, and the new members it leaves for the
/// other queues' workers.
pub struct Group {
    ifindex: i32,
    ethertype: u16,
    filter: SegmentFilter,
    queues: usize,
    handoff: Mutex<Vec<(usize, Member)>>,
}

impl Group {
    /// New members (queue, member) for the workers, each admitting no
    /// frame yet.
    pub fn take_handoff(&self) -> Vec<(usize, Member)> {
        let mut h = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *h)
    }
}

impl Member {
    pub fn socket(&self) -> &RawSocket {
        &self.sock
    }

    /// What lets frames into a member from [`Group::take_handoff`], to use
    /// once its worker closed the socket it replaces.
    pub fn admission(&self) -> io::Result<Admission> {
        Ok(Admission {
            fd: self.sock.as_fd().try_clone_to_owned()?,
            ethertype: self.sock.ethertype(),
        })
    }

    /// The group, on queue 0's member.
    pub fn group(&self) -> Option<Arc<Group>> {
        self.group.clone()
    }
}

/// A held member's socket (a second descriptor of it) and its ethertype.
pub struct Admission {
    fd: std::os::fd::OwnedFd,
    ethertype: u16,
}

impl Admission {
    /// Put the ethertype filter back: frames come in from now on.
    pub fn admit(self) -> io::Result<()> {
        super::attach_filter(self.fd.as_fd(), self.ethertype)
    }
}

/// A classic BPF program that refuses every frame.
fn hold(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut prog = [insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0)];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at `prog`, which lives across the call; the kernel
    // copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
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

fn op(code: u32) -> u16 {
    code as u16
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: op(code),
        jt,
        jf,
        k,
    }
}

/// The queue a flow with this local endpoint id belongs to.
pub fn queue_of(eid: Eid, queues: usize) -> usize {
    eid.index() as usize % queues.max(1)
}

/// The fanout program for `queues` sockets: frames of `ethertype` to
/// [`queue_of`] their destination eid, everything else to 0.
pub fn program(ethertype: u16, queues: u32) -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_ALU, BPF_AND, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MOD};
    use libc::{BPF_RET, BPF_W};
    let net = |at: u32| (SKF_NET_OFF as u32).wrapping_add(at);
    vec![
        // A = skb->protocol
        insn(
            BPF_LD | BPF_W | BPF_ABS,
            0,
            0,
            (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32,
        ),
        // not ours: queue 0 (its socket filter drops it)
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, u32::from(ethertype)),
        // A = low word of the destination eid (a short frame ends the
        // program with 0: queue 0, where the parser refuses it)
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, net(DST_EID_LOW_AT)),
        insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, Eid::INDEX_MASK as u32),
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, queues.max(1)),
        insn(BPF_RET | libc::BPF_A, 0, 0, 0),
        insn(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<u32> {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: v and len live across the call; len holds v's size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &mut v as *mut u32 as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

fn set_program(fd: BorrowedFd<'_>, prog: &mut [libc::sock_filter]) -> io::Result<()> {
    set_cbpf(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, prog)
}

/// Drop whatever waits in the members' sockets.
fn drain(ifindex: i32, members: &mut [Member]) -> io::Result<()> {
    let room = super::mtu_of(ifindex).unwrap_or(1500) as usize + 64;
    let mut bufs: Vec<Vec<u8>> = (0..super::BATCH).map(|_| vec![0u8; room]).collect();
    let mut lens = vec![0usize; super::BATCH];
    for m in members {
        for _ in 0..64 {
            if m.sock.recv_batch(&mut bufs, &mut lens)? == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// Open `queues` raw sockets on the interface, joined in order into one new
/// fanout group (the kernel numbers members in the order they join), with
/// the program of [`program`]. Member `k` serves queue `k`.
pub fn open_group(
    ifindex: i32,
    ethertype: u16,
    filter: SegmentFilter,
    queues: usize,
) -> io::Result<Vec<Member>> {
    let mut members = Vec::with_capacity(queues);
    for _ in 0..queues {
        members.push(Member {
            sock: RawSocket::open(ifindex, ethertype, filter)?,
            group: None,
        });
    }
    let cbpf = libc::PACKET_FANOUT_CBPF;
    // The first member makes the group under an id the kernel chooses.
    setsockopt_int(
        members[0].sock.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_FANOUT,
        ((cbpf | FLAG_UNIQUEID) << 16) as i32,
    )?;
    let id = getsockopt_int(
        members[0].sock.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_FANOUT,
    )? & 0xffff;
    set_program(
        members[0].sock.as_fd(),
        &mut program(ethertype, queues as u32),
    )?;
    for m in &members[1..] {
        setsockopt_int(
            m.sock.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (id | (cbpf << 16)) as i32,
        )?;
    }
    // Until it joined, each socket received every frame on its own: those
    // are copies of what the group's first member received; drop them.
    drain(ifindex, &mut members[1..])?;
    members[0].group = Some(Arc::new(Group {
        ifindex,
        ethertype,
        filter,
        queues,
        handoff: Mutex::new(Vec::new()),
    }));
    Ok(members)
}

impl FrameIo for Member {
    fn name(&self) -> String {
        "raw".into()
    }
    fn rx_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
    fn rx_is_ring(&self) -> bool {
        FrameIo::rx_is_ring(&self.sock)
    }
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        self.sock.recv_batch(bufs, lens)
    }
    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.sock.send_batch(frames)
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        FrameIo::counters(&self.sock)
    }
    fn max_mtu(&self) -> Option<u32> {
        FrameIo::max_mtu(&self.sock)
    }
    fn reopen_for_mtu(&self, mtu: u32) -> Option<io::Result<Box<dyn FrameIo>>> {
        let g = self.group.as_ref()?;
        let limit = FrameIo::max_mtu(&self.sock)?;
        (mtu > limit).then(|| {
            let mut fresh = open_group(g.ifindex, g.ethertype, g.filter, g.queues)?;
            let mut rest = fresh.split_off(1);
            for m in &rest {
                hold(m.sock.as_fd())?;
            }
            // What they took before the hold, the old group took too.
            drain(g.ifindex, &mut rest)?;
            let mut first = fresh.pop().expect("queue 0");
            first.group = Some(g.clone());
            let mut h = g.handoff.lock().unwrap_or_else(|e| e.into_inner());
            *h = rest
                .into_iter()
                .enumerate()
                .map(|(i, m)| (i + 1, m))
                .collect();
            Ok(Box::new(first) as Box<dyn FrameIo>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_data_header, Frame, Payload, DEFAULT_ETHERTYPE, HEADER_LEN};

    /// Run the classic BPF subset the program uses over an ethflow frame
    /// (`net` is what follows the Ethernet header; `proto` the ethertype).
    fn run(prog: &[libc::sock_filter], proto: u16, net: &[u8]) -> u32 {
        let load = |k: u32, size: usize| -> Option<u32> {
            if k == (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32 {
                return Some(u32::from(proto));
            }
            let at = k.wrapping_sub(SKF_NET_OFF as u32) as usize;
            let b = net.get(at..at + size)?;
            Some(b.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)))
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => match load(i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => match load(i.k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf })
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= i.k,
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= i.k,
                c if c == libc::BPF_RET | libc::BPF_A => return a,
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                other => panic!("opcode {other:#x} not in the program"),
            }
        }
    }

    fn data(dst: Eid) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_LEN + 4];
        emit_data_header(&mut f, dst, Eid::new(9, 77), 4);
        f
    }

    #[test]
    fn data_frames_go_to_the_queue_of_their_destination_eid() {
        for queues in [2u32, 3, 4, 16] {
            let prog = program(DEFAULT_ETHERTYPE, queues);
            for index in [0u32, 1, 2, 3, 5, 1000, Eid::INDEX_MASK as u32] {
                let eid = Eid::new(index, 0xab_cdef_0123);
                let q = run(&prog, DEFAULT_ETHERTYPE, &data(eid));
                assert_eq!(
                    q as usize,
                    queue_of(eid, queues as usize),
                    "{index}/{queues}"
                );
            }
        }
    }

    #[test]
    fn a_flow_s_management_frames_follow_its_data() {
        let prog = program(DEFAULT_ETHERTYPE, 4);
        let eid = Eid::new(3, 5);
        for p in [Payload::Dealloc, Payload::UnknownEid] {
            let f = Frame {
                dst: eid,
                src: Eid::new(1, 1),
                payload: p,
            }
            .to_vec();
            assert_eq!(run(&prog, DEFAULT_ETHERTYPE, &f), 3, "{p:?}");
        }
    }

    #[test]
    fn everything_else_goes_to_queue_zero() {
        let prog = program(DEFAULT_ETHERTYPE, 4);
        let eid = Eid::new(3, 5);
        // Another ethertype.
        assert_eq!(run(&prog, 0x0800, &data(eid)), 0);
        // Frames without a destination eid.
        let q = Frame {
            dst: Eid::NONE,
            src: Eid::NONE,
            payload: Payload::NameQuery { name_hash: [7; 32] },
        }
        .to_vec();
        assert_eq!(run(&prog, DEFAULT_ETHERTYPE, &q), 0);
        // Too short to carry a destination eid.
        assert_eq!(run(&prog, DEFAULT_ETHERTYPE, &data(eid)[..10]), 0);
    }
}
