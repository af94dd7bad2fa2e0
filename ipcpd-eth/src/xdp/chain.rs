//! Multi-buffer AF_XDP (`XDP_USE_SG`): a frame larger than one UMEM chunk
//! travels as a chain of descriptors, every one but the last with
//! `XDP_PKT_CONTD` in `options`. Pure logic over descriptors, no memory and
//! no kernel: where the next received chain ends and what becomes of it
//! ([`next_chain`]), and how a frame to send is cut into chunks
//! ([`segments`]). The socket ([`super::xsk`]) does the copies.
//!
//! Descriptors come from the kernel and are checked like any input: each one
//! must lie inside one chunk of the UMEM's receive part (the caller's
//! `valid`), and a chain is never longer than `max_segs` whatever its
//! `options` say; the rest of an over-long chain is skipped up to its end.

/// Why a received chain was dropped (each counted by the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropWhy {
    /// A descriptor outside the UMEM's receive chunks, or crossing one.
    BadDesc,
    /// More descriptors than a frame can need (`options` never ended it).
    TooLong,
    /// Longer than the receive buffer (the largest frame the IPCP takes).
    TooBig,
    /// The tail of a chain dropped as too long, up to its last descriptor.
    Tail,
}

/// What the next received descriptors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// The first `segs` descriptors are one frame of `len` bytes, all valid.
    Frame { segs: u32, len: usize },
    /// Drop the first `segs` descriptors (give their chunks back).
    /// `more`: the chain goes on past them; skip up to its end next.
    Drop { segs: u32, why: DropWhy, more: bool },
    /// The frame's last descriptor is not published yet: read again later.
    Partial,
}

/// The next chain among the `avail` published descriptors (`peek(i)`, i <
/// avail). `skipping`: the previous chain was dropped as too long and went
/// on; its remaining descriptors are dropped first. `max_segs` (≥ 1) caps a
/// chain, `max_len` its bytes; `valid` checks one descriptor's address and
/// length against the UMEM. Needs `avail` ≥ 1.
pub fn next_chain(
    avail: u32,
    peek: impl Fn(u32) -> libc::xdp_desc,
    skipping: bool,
    max_segs: u32,
    max_len: usize,
    valid: impl Fn(&libc::xdp_desc) -> bool,
) -> Chain {
    let max_segs = max_segs.max(1);
    let contd = |d: &libc::xdp_desc| d.options & libc::XDP_PKT_CONTD != 0;
    if skipping {
        // Up to and including the first descriptor that ends a frame.
        let scan = avail.min(max_segs);
        return match (0..scan).find(|&i| !contd(&peek(i))) {
            Some(last) => Chain::Drop {
                segs: last + 1,
                why: DropWhy::Tail,
                more: false,
            },
            None => Chain::Drop {
                segs: scan,
                why: DropWhy::Tail,
                more: true,
            },
        };
    }
    let mut len = 0usize;
    let mut bad = false;
    for i in 0..avail.min(max_segs) {
        let d = peek(i);
        bad |= !valid(&d);
        len = len.saturating_add(d.len as usize);
        if contd(&d) {
            continue;
        }
        let segs = i + 1;
        return if bad {
            Chain::Drop {
                segs,
                why: DropWhy::BadDesc,
                more: false,
            }
        } else if len > max_len {
            Chain::Drop {
                segs,
                why: DropWhy::TooBig,
                more: false,
            }
        } else {
            Chain::Frame { segs, len }
        };
    }
    if avail < max_segs {
        return Chain::Partial;
    }
    Chain::Drop {
        segs: max_segs,
        why: DropWhy::TooLong,
        more: true,
    }
}

/// A frame of `len` bytes cut into chunks of `chunk` bytes: (offset,
/// length) of each, all but the last full. `None` when it takes more than
/// `max_segs` chunks, or `len` or `chunk` is 0.
pub fn segments(
    len: usize,
    chunk: usize,
    max_segs: usize,
) -> Option<impl Iterator<Item = (usize, usize)>> {
    if len == 0 || chunk == 0 || len.div_ceil(chunk) > max_segs {
        return None;
    }
    Some(
        (0..len)
            .step_by(chunk)
            .map(move |off| (off, chunk.min(len - off))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTD: u32 = libc::XDP_PKT_CONTD;

    fn d(addr: u64, len: u32, options: u32) -> libc::xdp_desc {
        libc::xdp_desc { addr, len, options }
    }

    /// `next_chain` over a slice, UMEM of 16 chunks of 4096, all valid
    /// when inside one chunk.
    fn chain(descs: &[libc::xdp_desc], skipping: bool, max_segs: u32, max_len: usize) -> Chain {
        next_chain(
            descs.len() as u32,
            |i| descs[i as usize],
            skipping,
            max_segs,
            max_len,
            |d| d.addr < 16 * 4096 && d.addr % 4096 + u64::from(d.len) <= 4096,
        )
    }

    #[test]
    fn a_single_descriptor_is_a_frame() {
        let descs = [d(256, 1500, 0), d(4096 + 256, 60, 0)];
        assert_eq!(
            chain(&descs, false, 17, 9014),
            Chain::Frame { segs: 1, len: 1500 }
        );
    }

    #[test]
    fn a_jumbo_frame_is_three_descriptors() {
        let descs = [
            d(256, 3840, CONTD),
            d(4096 + 256, 3840, CONTD),
            d(2 * 4096 + 256, 1334, 0),
            d(3 * 4096 + 256, 64, 0),
        ];
        assert_eq!(
            chain(&descs, false, 17, 9014),
            Chain::Frame { segs: 3, len: 9014 }
        );
    }

    #[test]
    fn a_chain_whose_end_is_not_published_waits() {
        let descs = [d(256, 3840, CONTD), d(4096 + 256, 3840, CONTD)];
        assert_eq!(chain(&descs, false, 17, 9014), Chain::Partial);
    }

    #[test]
    fn a_chain_that_never_ends_is_cut_at_the_cap_and_its_tail_skipped() {
        let descs: Vec<_> = (0..10).map(|i| d(i * 4096 + 256, 100, CONTD)).collect();
        assert_eq!(
            chain(&descs, false, 4, 1 << 20),
            Chain::Drop {
                segs: 4,
                why: DropWhy::TooLong,
                more: true
            }
        );
        // Skipping: everything published still continues the chain.
        assert_eq!(
            chain(&descs[4..], true, 4, 1 << 20),
            Chain::Drop {
                segs: 4,
                why: DropWhy::Tail,
                more: true
            }
        );
        // The tail ends at its first descriptor without CONTD, inclusive.
        let tail = [d(256, 1, CONTD), d(4096 + 256, 1, 0), d(8192 + 256, 7, 0)];
        assert_eq!(
            chain(&tail, true, 4, 1 << 20),
            Chain::Drop {
                segs: 2,
                why: DropWhy::Tail,
                more: false
            }
        );
        assert_eq!(
            chain(&tail[2..], false, 4, 1 << 20),
            Chain::Frame { segs: 1, len: 7 },
            "the next frame is read whole"
        );
    }

    #[test]
    fn a_chain_longer_than_the_buffer_is_dropped_whole() {
        let descs = [
            d(256, 3840, CONTD),
            d(4096 + 256, 3840, CONTD),
            d(8192 + 256, 3840, 0),
        ];
        assert_eq!(
            chain(&descs, false, 17, 9014),
            Chain::Drop {
                segs: 3,
                why: DropWhy::TooBig,
                more: false
            }
        );
    }

    #[test]
    fn a_bad_descriptor_drops_its_whole_chain() {
        for bad in [
            d(64 * 4096, 100, CONTD),     // outside the UMEM
            d(4096 + 4000, 200, CONTD),   // crosses into the next chunk
            d(u64::MAX - 10, 100, CONTD), // wraps
            d(256, u32::MAX, CONTD),      // longer than a chunk
        ] {
            let descs = [d(256, 3840, CONTD), bad, d(8192 + 256, 10, 0)];
            assert_eq!(
                chain(&descs, false, 17, usize::MAX),
                Chain::Drop {
                    segs: 3,
                    why: DropWhy::BadDesc,
                    more: false
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lengths_never_overflow() {
        let descs: Vec<_> = (0..4).map(|_| d(256, u32::MAX, CONTD)).collect();
        let r = next_chain(4, |i| descs[i as usize], false, 4, usize::MAX, |_| true);
        assert_eq!(
            r,
            Chain::Drop {
                segs: 4,
                why: DropWhy::TooLong,
                more: true
            }
        );
    }

    #[test]
    fn a_cap_of_zero_still_moves_on() {
        let descs = [d(256, 10, CONTD), d(4096 + 256, 10, 0)];
        assert_eq!(
            chain(&descs, false, 0, 100),
            Chain::Drop {
                segs: 1,
                why: DropWhy::TooLong,
                more: true
            }
        );
    }

    #[test]
    fn frames_are_cut_into_full_chunks_and_a_rest() {
        let cut = |len, max| segments(len, 4096, max).map(|s| s.collect::<Vec<_>>());
        assert_eq!(cut(100, 17), Some(vec![(0, 100)]));
        assert_eq!(cut(4096, 17), Some(vec![(0, 4096)]));
        assert_eq!(cut(4097, 17), Some(vec![(0, 4096), (4096, 1)]));
        assert_eq!(
            cut(9018, 17),
            Some(vec![(0, 4096), (4096, 4096), (8192, 826)])
        );
        assert_eq!(cut(9018, 2), None, "more chunks than allowed");
        assert_eq!(cut(0, 17), None);
        assert!(segments(10, 0, 17).is_none());
        let total: usize = segments(65_535, 4096, 17).unwrap().map(|(_, l)| l).sum();
        assert_eq!(total, 65_535);
    }
}
