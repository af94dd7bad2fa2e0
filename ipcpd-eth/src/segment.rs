//! Which frames on the segment are ours at all, before any parsing: the rule
//! both backends apply (the raw backend here, the XDP program in
//! `ebpf/ethflow_xdp.c` by the same rule), so they never disagree.
//!
//! * A frame whose VLAN does not match the IPCP's is not ours (`other_vlan`):
//!   an IPCP bootstrapped without `vlan` takes only untagged (or
//!   priority-tagged, VLAN id 0) frames; with `vlan N` only frames tagged N.
//!   802.1ad service tags (TPID 0x88a8) are never ours.
//! * A frame for another unicast or multicast MAC is not ours (`not_for_us`);
//!   a broadcast frame is ours only if it is a NAME_QUERY (the one frame we
//!   broadcast). Frames that claim our own MAC as source are ignored (own).

use crate::wire::{FrameType, Mac, BROADCAST, ETH_HEADER_LEN};

/// TPID of an 802.1Q customer VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad service tag (QinQ outer tag).
pub const TPID_8021AD: u16 = 0x88a8;
/// Bytes of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Largest VLAN id a layer may use (4095 is reserved).
pub const MAX_VLAN_ID: u16 = 4094;

/// A VLAN tag as a backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    /// Tag control information: priority (3 bits), DEI (1), VLAN id (12).
    pub tci: u16,
}

impl VlanTag {
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
}

/// What the backend does with one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the IPCP.
    Accept,
    /// Addressed to another MAC (or a broadcast other than NAME_QUERY).
    NotForUs,
    /// Carries a VLAN tag other than ours (or none when we have one).
    OtherVlan,
    /// Claims our own MAC as source (our own frame looped back, or a forgery).
    Own,
}

/// The IPCP's place on the segment: its MAC and VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFilter {
    pub mac: Mac,
    /// `None`: untagged frames only.
    pub vlan: Option<u16>,
    /// The layer has a key: the backends keep no per-MAC budget of their
    /// own. Before the tag is checked the source MAC is only a claim, so a
    /// forger could spend a member's budget and starve its keep-alives; the
    /// flow allocator's budgets apply after verification instead.
    pub keyed: bool,
}

/// Why a VLAN id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadVlan(pub u32);

impl std::fmt::Display for BadVlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VLAN id {} is outside 1..={MAX_VLAN_ID} (0 means untagged, 4095 is reserved)",
            self.0
        )
    }
}

impl std::error::Error for BadVlan {}

/// Parses a `vlan` argument: 1..=4094.
pub fn parse_vlan(s: &str) -> Result<u16, String> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("VLAN id `{s}` is not a number"))?;
    match u16::try_from(v) {
        Ok(id) if (1..=MAX_VLAN_ID).contains(&id) => Ok(id),
        _ => Err(BadVlan(v).to_string()),
    }
}

impl SegmentFilter {
    /// The tag our frames carry on the wire, if any.
    pub fn tx_tag(&self) -> Option<[u8; VLAN_TAG_LEN]> {
        self.vlan.map(|id| {
            let t = TPID_8021Q.to_be_bytes();
            let c = id.to_be_bytes();
            [t[0], t[1], c[0], c[1]]
        })
    }

    /// Judge a frame: `frame` starts with the Ethernet header (the tag, if
    /// any, already taken out of it), `tag` is the VLAN tag the frame carried.
    pub fn judge(&self, frame: &[u8], tag: Option<VlanTag>) -> Verdict {
        let vid = match tag {
            None => None,
            Some(t) if t.tpid != TPID_8021Q => return Verdict::OtherVlan,
            // VLAN id 0: a priority tag on the untagged network.
            Some(t) if t.vid() == 0 => None,
            Some(t) => Some(t.vid()),
        };
        if vid != self.vlan {
            return Verdict::OtherVlan;
        }
        let Some(dst) = frame.get(..6) else {
            // Not even an Ethernet header: the parser counts it as malformed.
            return Verdict::Accept;
        };
        if frame.get(6..12) == Some(&self.mac[..]) {
            return Verdict::Own;
        }
        if dst == self.mac {
            return Verdict::Accept;
        }
        if dst == BROADCAST
            && frame.get(ETH_HEADER_LEN + 1).copied() == Some(FrameType::NameQuery as u8)
        {
            return Verdict::Accept;
        }
        Verdict::NotForUs
    }
}

/// Slots of [`MgmtBudget`]: MACs hash into them; MACs sharing a slot share
/// its budget (which only ever passes fewer frames).
pub const BUDGET_SLOTS: usize = 256;

/// A token bucket per sender MAC (hashed into [`BUDGET_SLOTS`] slots) for
/// management frames, before the flow allocator: the same budget the XDP
/// program applies in the driver (`mgmt_limiters`), so a flood from one host
/// costs backend raw a copy and a compare per frame, not the allocator's
/// work. The allocator keeps its own, finer budgets (per type, global).
/// Sans-IO: the caller passes the time in nanoseconds.
#[derive(Debug, Clone)]
pub struct MgmtBudget {
    burst: u32,
    refill_ns: u64,
    /// (tokens, refilled at) per slot; refilled at 0 = never used.
    slots: Vec<(u32, u64)>,
}

/// Management frames per sender MAC: a burst of 1024, then 10 000/s — the
/// XDP program's numbers (`xdp/program.rs`), and the flow allocator's per-type
/// rate: room for the 5 000 allocations/s target from one host.
pub const MGMT_BURST: u32 = 1024;
pub const MGMT_REFILL_NS: u64 = 100_000;

impl Default for MgmtBudget {
    fn default() -> Self {
        MgmtBudget::new(MGMT_BURST, MGMT_REFILL_NS)
    }
}

impl MgmtBudget {
    pub fn new(burst: u32, refill_ns: u64) -> MgmtBudget {
        MgmtBudget {
            burst: burst.max(1),
            refill_ns: refill_ns.max(1),
            slots: vec![(0, 0); BUDGET_SLOTS],
        }
    }

    fn slot(mac: &[u8]) -> usize {
        let mut key = [0u8; 8];
        key[..6].copy_from_slice(&mac[..6]);
        // Fibonacci hash, as in the XDP program.
        (u64::from_le_bytes(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
    }

    /// Whether one more management frame from `src` may pass at `now_ns`
    /// (nanoseconds on any clock that does not go back; never 0).
    pub fn may_pass(&mut self, src: &[u8], now_ns: u64) -> bool {
        if src.len() < 6 {
            return true;
        }
        let (tokens, at) = &mut self.slots[Self::slot(src)];
        if *at == 0 {
            *tokens = self.burst;
            *at = now_ns;
        }
        let earned = now_ns.saturating_sub(*at) / self.refill_ns;
        let room = u64::from(self.burst - *tokens);
        if earned >= room {
            *tokens = self.burst;
            *at = now_ns;
        } else if earned > 0 {
            *tokens += earned as u32;
            *at += earned * self.refill_ns;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

/// Whether an accepted frame (Ethernet header first) is a management frame
/// under the [`MgmtBudget`]: any ethflow type but DATA and KEEP_ALIVE. A
/// KEEP_ALIVE is exempt: it carries liveness, which a flood spoofing the
/// peer's MAC must not be able to starve; the flow allocator handles it in
/// O(1) and budgets those from MACs that are not its peers.
pub fn is_management(frame: &[u8]) -> bool {
    frame
        .get(ETH_HEADER_LEN + 1)
        .is_some_and(|&t| t != FrameType::Data as u8 && t != FrameType::KeepAlive as u8)
}

/// Counts of frames a backend refused by [`SegmentFilter::judge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounters {
    pub not_for_us: u64,
    pub other_vlan: u64,
    /// Management frames over their sender's [`MgmtBudget`].
    pub mgmt_budget: u64,
}

impl SegmentCounters {
    /// Count a verdict; true when the frame goes on to the IPCP.
    pub fn admit(&mut self, v: Verdict) -> bool {
        match v {
            Verdict::Accept => true,
            Verdict::NotForUs => {
                self.not_for_us += 1;
                false
            }
            Verdict::OtherVlan => {
                self.other_vlan += 1;
                false
            }
            Verdict::Own => false,
        }
    }

    /// By name, the same names the XDP program's counters use.
    pub fn named(&self) -> [(&'static str, u64); 3] {
        [
            ("not_for_us", self.not_for_us),
            ("other_vlan", self.other_vlan),
            ("mgmt_budget_drops", self.mgmt_budget),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Eid, EthHeader, Frame, Payload, DEFAULT_ETHERTYPE};

    const ME: Mac = [2, 0, 0, 0, 0, 0xb];
    const PEER: Mac = [2, 0, 0, 0, 0, 0xa];
    const OTHER: Mac = [2, 0, 0, 0, 0, 0xc];

    fn frame(dst: Mac, src: Mac, payload: Payload<'_>) -> Vec<u8> {
        let body = Frame {
            dst: Eid(1),
            src: Eid(2),
            payload,
        }
        .to_vec();
        let mut f = vec![0u8; ETH_HEADER_LEN];
        EthHeader {
            dst,
            src,
            ethertype: DEFAULT_ETHERTYPE,
        }
        .emit(&mut f);
        f.extend_from_slice(&body);
        f
    }

    fn tag(vid: u16) -> Option<VlanTag> {
        Some(VlanTag {
            tpid: TPID_8021Q,
            tci: 0xe000 | vid,
        })
    }

    const UNTAGGED: SegmentFilter = SegmentFilter {
        mac: ME,
        vlan: None,
        keyed: false,
    };

    #[test]
    fn unicast_to_us_is_accepted_other_macs_are_not() {
        let f = frame(ME, PEER, Payload::Dealloc);
        assert_eq!(UNTAGGED.judge(&f, None), Verdict::Accept);
        for dst in [OTHER, [0x01, 0x00, 0x5e, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1]] {
            let f = frame(dst, PEER, Payload::Dealloc);
            assert_eq!(UNTAGGED.judge(&f, None), Verdict::NotForUs, "{dst:02x?}");
        }
    }

    #[test]
    fn broadcast_only_for_name_queries() {
        let q = frame(BROADCAST, PEER, Payload::NameQuery { name_hash: [1; 32] });
        assert_eq!(UNTAGGED.judge(&q, None), Verdict::Accept);
        for p in [
            Payload::Dealloc,
            Payload::UnknownEid,
            Payload::NameReply { name_hash: [1; 32] },
            Payload::Data(b"x"),
        ] {
            let f = frame(BROADCAST, PEER, p);
            assert_eq!(UNTAGGED.judge(&f, None), Verdict::NotForUs, "{p:?}");
        }
        // Too short to show its type.
        assert_eq!(
            UNTAGGED.judge(&q[..ETH_HEADER_LEN], None),
            Verdict::NotForUs
        );
    }

    #[test]
    fn our_own_source_mac_is_ignored() {
        let f = frame(ME, ME, Payload::Dealloc);
        assert_eq!(UNTAGGED.judge(&f, None), Verdict::Own);
    }

    #[test]
    fn vlans_must_match() {
        let f = frame(ME, PEER, Payload::Dealloc);
        let tagged7 = SegmentFilter {
            mac: ME,
            vlan: Some(7),
            keyed: false,
        };
        assert_eq!(UNTAGGED.judge(&f, tag(7)), Verdict::OtherVlan);
        assert_eq!(tagged7.judge(&f, tag(7)), Verdict::Accept);
        assert_eq!(tagged7.judge(&f, tag(8)), Verdict::OtherVlan);
        assert_eq!(tagged7.judge(&f, None), Verdict::OtherVlan);
        // Priority tag (VLAN id 0) belongs to the untagged network.
        assert_eq!(UNTAGGED.judge(&f, tag(0)), Verdict::Accept);
        assert_eq!(tagged7.judge(&f, tag(0)), Verdict::OtherVlan);
        // A service tag is never ours.
        let s_tag = Some(VlanTag {
            tpid: TPID_8021AD,
            tci: 7,
        });
        assert_eq!(tagged7.judge(&f, s_tag), Verdict::OtherVlan);
        // The VLAN is judged before the address.
        let other = frame(OTHER, PEER, Payload::Dealloc);
        assert_eq!(tagged7.judge(&other, tag(8)), Verdict::OtherVlan);
        assert_eq!(tagged7.judge(&other, tag(7)), Verdict::NotForUs);
    }

    #[test]
    fn short_frames_go_on_to_the_parser() {
        assert_eq!(UNTAGGED.judge(&[1, 2, 3], None), Verdict::Accept);
    }

    #[test]
    fn tx_tag_bytes() {
        assert_eq!(UNTAGGED.tx_tag(), None);
        let f = SegmentFilter {
            mac: ME,
            vlan: Some(0x123),
            keyed: false,
        };
        assert_eq!(f.tx_tag(), Some([0x81, 0x00, 0x01, 0x23]));
    }

    #[test]
    fn vlan_ids_parse() {
        assert_eq!(parse_vlan("1"), Ok(1));
        assert_eq!(parse_vlan("4094"), Ok(4094));
        for bad in ["0", "4095", "70000", "-1", "x", ""] {
            assert!(parse_vlan(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn management_budget_per_mac() {
        let mut b = MgmtBudget::new(3, 1000);
        let t0 = 1_000_000;
        // A burst of 3, then one per 1000 ns.
        assert!((0..3).all(|_| b.may_pass(&PEER, t0)));
        assert!(!b.may_pass(&PEER, t0));
        assert!(!b.may_pass(&PEER, t0 + 999));
        assert!(b.may_pass(&PEER, t0 + 1000));
        assert!(!b.may_pass(&PEER, t0 + 1000));
        // Another MAC (another slot) has its own budget.
        assert_ne!(MgmtBudget::slot(&PEER), MgmtBudget::slot(&OTHER));
        assert!(b.may_pass(&OTHER, t0));
        // A long pause refills to the burst, no more.
        let later = t0 + 1_000_000;
        assert!((0..3).all(|_| b.may_pass(&PEER, later)));
        assert!(!b.may_pass(&PEER, later));
        // A clock that seems to go back passes nothing extra, and never panics.
        assert!(!b.may_pass(&PEER, t0));
        assert!(b.may_pass(&[1, 2], t0));
    }

    #[test]
    fn management_frames_are_told_from_data() {
        assert!(is_management(&frame(ME, PEER, Payload::Dealloc)));
        assert!(!is_management(&frame(ME, PEER, Payload::Data(b"x"))));
        let ka = frame(ME, PEER, Payload::Dealloc);
        let mut ka = ka;
        ka[ETH_HEADER_LEN + 1] = FrameType::KeepAlive as u8;
        assert!(!is_management(&ka), "keep-alives are exempt");
        assert!(!is_management(&[0u8; ETH_HEADER_LEN]));
    }

    #[test]
    fn counters_count_refusals_only() {
        let mut c = SegmentCounters::default();
        assert!(c.admit(Verdict::Accept));
        assert!(!c.admit(Verdict::NotForUs));
        assert!(!c.admit(Verdict::OtherVlan));
        assert!(!c.admit(Verdict::OtherVlan));
        assert!(!c.admit(Verdict::Own));
        assert_eq!(
            c,
            SegmentCounters {
                not_for_us: 1,
                other_vlan: 2,
                mgmt_budget: 0
            }
        );
    }
}
