//! Forging frames for the attack tests: any Ethernet frame (source and
//! destination MAC, ethertype, optional 802.1Q tag) around any ethflow frame
//! (type, endpoint ids, payload), sent at a bounded count, rate and duration
//! from an AF_PACKET socket on one interface of a rig; and an impostor that
//! answers NAME_QUERY and FLOW_REQ for a name.
//!
//! The Ethernet and VLAN layers are built with `pnet_packet`; the ethflow part
//! with `ipcpd_eth::wire` (`Frame::emit`), so the tool follows the wire format.
//! Everything is bounded: a [`Bounds`] must say how many frames and for how
//! long, and the limits refuse runaway values.

mod sys;

use std::io;
use std::time::{Duration, Instant};

use ipcpd_eth::wire::{
    self, ChallengeReplyRepr, ChallengeRepr, Eid, EthHeader, FlowReplyRepr, FlowReqRepr, Frame,
    FrameType, KeepAliveRepr, Mac, Payload, ReplyCode, Verdict, WireQos, ETH_HEADER_LEN,
    HEADER_LEN,
};
use pnet_base::MacAddr;
use pnet_packet::ethernet::{EtherType, EtherTypes, MutableEthernetPacket};
use pnet_packet::vlan::{ClassOfService, MutableVlanPacket};
use pnet_packet::MutablePacket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use sys::PacketSocket;

/// Most frames one run may send.
pub const MAX_COUNT: u64 = 100_000_000;
/// Longest one run may last.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Frames per sendmmsg.
pub const BATCH: usize = 64;
/// Most frames a run builds ahead (random parts repeat after this many).
pub const POOL_FRAMES: usize = 65_536;
/// Most bytes of frames a run builds ahead.
pub const POOL_BYTES: usize = 16 << 20;
/// Ethernet minimum frame without FCS: shorter frames are padded, as a NIC does.
pub const MIN_FRAME: usize = 60;
/// Bytes of an 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;

/// Why a forge request was refused.
#[derive(Debug)]
pub enum ForgeError {
    BadMac(String),
    BadNumber(String),
    BadHex(String),
    BadVlan(u16),
    Unbounded(&'static str),
    TooLarge(usize),
    Io(io::Error),
}

impl std::fmt::Display for ForgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForgeError::BadMac(s) => write!(f, "`{s}` is not a MAC (aa:bb:cc:dd:ee:ff)"),
            ForgeError::BadNumber(s) => write!(f, "`{s}` is not a number (decimal or 0x hex)"),
            ForgeError::BadHex(s) => write!(f, "`{s}` is not an even number of hex digits"),
            ForgeError::BadVlan(v) => write!(f, "VLAN id {v} is outside 0..=4095"),
            ForgeError::Unbounded(what) => write!(f, "refused: {what}"),
            ForgeError::TooLarge(n) => write!(f, "frame of {n} bytes is larger than 65535"),
            ForgeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ForgeError {}

impl From<io::Error> for ForgeError {
    fn from(e: io::Error) -> Self {
        ForgeError::Io(e)
    }
}

pub fn parse_mac(s: &str) -> Result<Mac, ForgeError> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(ForgeError::BadMac(s.into()));
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(ForgeError::BadMac(s.into()));
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| ForgeError::BadMac(s.into()))?;
    }
    Ok(mac)
}

pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A number given as decimal or `0x` hex (any value: the forge sends what it
/// is told, including ethertypes an IPCP refuses).
pub fn parse_u64(s: &str) -> Result<u64, ForgeError> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| ForgeError::BadNumber(s.into()))
}

pub fn parse_hex(s: &str) -> Result<Vec<u8>, ForgeError> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !t.len().is_multiple_of(2) {
        return Err(ForgeError::BadHex(s.into()));
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| ForgeError::BadHex(s.into())))
        .collect()
}

/// The MAC of `dev`, as the namespace the caller runs in sees it.
pub fn interface_mac(dev: &str) -> Result<Mac, ForgeError> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{dev}/address"))?;
    parse_mac(text.trim())
}

/// The Ethernet layer of a forged frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthSpec {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    /// 802.1Q VLAN id: the frame carries a tag (TPID 0x8100) before `ethertype`.
    pub vlan: Option<u16>,
}

impl EthSpec {
    /// Ethernet (and tag) around `body`, padded to the 60-byte minimum.
    pub fn build(&self, body: &[u8]) -> Result<Vec<u8>, ForgeError> {
        let tag = if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 };
        let len = (ETH_HEADER_LEN + tag + body.len()).max(MIN_FRAME);
        if len > u16::MAX as usize {
            return Err(ForgeError::TooLarge(len));
        }
        let mut buf = vec![0u8; len];
        let mut eth = MutableEthernetPacket::new(&mut buf).expect("buffer >= header");
        eth.set_destination(mac_addr(self.dst));
        eth.set_source(mac_addr(self.src));
        match self.vlan {
            None => {
                eth.set_ethertype(EtherType(self.ethertype));
                eth.payload_mut()[..body.len()].copy_from_slice(body);
            }
            Some(id) => {
                if id > 0x0fff {
                    return Err(ForgeError::BadVlan(id));
                }
                eth.set_ethertype(EtherTypes::Vlan);
                let mut vlan = MutableVlanPacket::new(eth.payload_mut()).expect("room for tag");
                vlan.set_priority_code_point(ClassOfService(0));
                vlan.set_drop_eligible_indicator(0);
                vlan.set_vlan_identifier(id);
                vlan.set_ethertype(EtherType(self.ethertype));
                vlan.payload_mut()[..body.len()].copy_from_slice(body);
            }
        }
        Ok(buf)
    }
}

fn mac_addr(m: Mac) -> MacAddr {
    MacAddr(m[0], m[1], m[2], m[3], m[4], m[5])
}

/// An endpoint id: a fixed value, or a fresh random one per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EidSpec {
    Fixed(u64),
    Random,
}

impl EidSpec {
    fn pick(self, rng: &mut StdRng) -> Eid {
        match self {
            EidSpec::Fixed(v) => Eid(v),
            EidSpec::Random => Eid(rng.gen()),
        }
    }
}

/// Payload bytes: given, or random of a length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytes {
    Given(Vec<u8>),
    Random(usize),
}

impl Bytes {
    fn make(&self, rng: &mut StdRng) -> Vec<u8> {
        match self {
            Bytes::Given(b) => b.clone(),
            Bytes::Random(n) => {
                let mut v = vec![0u8; *n];
                rng.fill(&mut v[..]);
                v
            }
        }
    }
}

/// What comes after the Ethernet header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// One ethflow frame type, built with the wire module.
    Ethflow(FrameType),
    /// A well-formed ethflow header with a random type, random eids and a
    /// random payload of the length that type needs: the random-frame flood.
    RandomEthflow,
    /// Bytes, with no ethflow structure at all.
    Garbage,
}

/// The ethflow fields a forged frame may set; unused ones are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySpec {
    pub kind: Kind,
    pub dst_eid: EidSpec,
    pub src_eid: EidSpec,
    /// SHA-256 name hash for NAME_QUERY, NAME_REPLY, FLOW_REQ.
    pub name_hash: [u8; 32],
    /// Instance nonce (FLOW_REQ, FLOW_REPLY, KEEP_ALIVE sender); `None`: random.
    pub instance: Option<u64>,
    /// KEEP_ALIVE receiver instance.
    pub receiver_instance: u64,
    /// FLOW_REQ liveness timeout in ms.
    pub timeout_ms: u64,
    pub max_sdu: u32,
    pub code: ReplyCode,
    /// DATA payload (and GARBAGE bytes).
    pub payload: Bytes,
}

impl Default for BodySpec {
    fn default() -> Self {
        BodySpec {
            kind: Kind::Ethflow(FrameType::Data),
            dst_eid: EidSpec::Random,
            src_eid: EidSpec::Random,
            name_hash: [0; 32],
            instance: None,
            receiver_instance: 0,
            timeout_ms: 120_000,
            max_sdu: 1480,
            code: ReplyCode::Ok,
            payload: Bytes::Random(26),
        }
    }
}

/// Names a frame type the way the command line does (`keep-alive`, ...).
pub fn frame_type_by_name(s: &str) -> Option<FrameType> {
    Some(match s {
        "data" => FrameType::Data,
        "name-query" => FrameType::NameQuery,
        "name-reply" => FrameType::NameReply,
        "flow-req" => FrameType::FlowReq,
        "flow-reply" => FrameType::FlowReply,
        "dealloc" => FrameType::Dealloc,
        "dealloc-ack" => FrameType::DeallocAck,
        "keep-alive" => FrameType::KeepAlive,
        "unknown-eid" => FrameType::UnknownEid,
        "challenge" => FrameType::Challenge,
        "challenge-reply" => FrameType::ChallengeReply,
        _ => return None,
    })
}

impl BodySpec {
    /// The bytes after the Ethernet header for one frame.
    pub fn build(&self, rng: &mut StdRng) -> Vec<u8> {
        let ty = match &self.kind {
            Kind::Garbage => return self.payload.make(rng),
            Kind::Ethflow(t) => *t,
            Kind::RandomEthflow => FrameType::ALL[rng.gen_range(0..FrameType::ALL.len())],
        };
        let random = self.kind == Kind::RandomEthflow;
        let instance = self.instance.unwrap_or_else(|| rng.gen());
        let name_hash = if random { rng.gen() } else { self.name_hash };
        let data = if random {
            Bytes::Random(rng.gen_range(0..64)).make(rng)
        } else {
            self.payload.make(rng)
        };
        let payload = match ty {
            FrameType::Data => Payload::Data(&data),
            FrameType::NameQuery => Payload::NameQuery { name_hash },
            FrameType::NameReply => Payload::NameReply { name_hash },
            FrameType::FlowReq => Payload::FlowReq(FlowReqRepr {
                instance,
                name_hash,
                qos: WireQos {
                    delay: 0,
                    bandwidth: 0,
                    availability: 0,
                    loss: 1,
                    ber: 1,
                    in_order: false,
                    max_gap: 0,
                    timeout: if random { rng.gen() } else { self.timeout_ms },
                },
                max_sdu: self.max_sdu,
            }),
            FrameType::FlowReply => Payload::FlowReply(FlowReplyRepr {
                instance,
                code: self.code,
                max_sdu: self.max_sdu,
                timeout: self.timeout_ms,
            }),
            FrameType::Dealloc => Payload::Dealloc,
            FrameType::DeallocAck => Payload::DeallocAck,
            FrameType::KeepAlive => Payload::KeepAlive(KeepAliveRepr {
                sender_instance: instance,
                receiver_instance: if random {
                    rng.gen()
                } else {
                    self.receiver_instance
                },
                challenge: rng.gen(),
            }),
            FrameType::UnknownEid => Payload::UnknownEid,
            FrameType::Challenge => Payload::Challenge(ChallengeRepr {
                challenge: rng.gen(),
                believed_instance: if random {
                    rng.gen()
                } else {
                    self.receiver_instance
                },
            }),
            FrameType::ChallengeReply => Payload::ChallengeReply(ChallengeReplyRepr {
                echo: rng.gen(),
                verdict: if rng.gen() {
                    Verdict::Same
                } else {
                    Verdict::Different
                },
            }),
        };
        let (dst, src) = if random {
            (Eid(rng.gen()), Eid(rng.gen()))
        } else {
            (self.dst_eid.pick(rng), self.src_eid.pick(rng))
        };
        Frame { dst, src, payload }.to_vec()
    }
}

/// How many frames, how fast, for how long. Both bounds are mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub count: u64,
    /// Frames per second; `None` = as fast as the socket takes them.
    pub rate: Option<u64>,
    pub duration: Duration,
}

impl Bounds {
    pub fn check(&self) -> Result<(), ForgeError> {
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(ForgeError::Unbounded("count must be 1..=100000000"));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(ForgeError::Unbounded("duration must be 1 ms ..= 600 s"));
        }
        if self.rate == Some(0) {
            return Err(ForgeError::Unbounded("rate 0 would never finish"));
        }
        Ok(())
    }
}

/// What a send run did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SendStats {
    pub sent: u64,
    /// Send calls the kernel refused for lack of buffer (retried).
    pub busy: u64,
    pub elapsed: Duration,
}

impl SendStats {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for SendStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} elapsed_ms={:.1} pps={:.0} busy={}",
            self.sent,
            self.elapsed.as_secs_f64() * 1e3,
            self.pps(),
            self.busy
        )
    }
}

/// Builds and sends frames on `dev` until `bounds` says stop.
pub fn send(
    dev: &str,
    eth: &EthSpec,
    body: &BodySpec,
    bounds: &Bounds,
    seed: Option<u64>,
) -> Result<SendStats, ForgeError> {
    bounds.check()?;
    let sock = PacketSocket::open(dev, None)?;
    let mut rng = match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_entropy(),
    };
    // Frames are built ahead, so a flood costs the sender only its sends;
    // random parts repeat after POOL_FRAMES frames (or POOL_BYTES).
    let fixed = matches!(body.kind, Kind::Ethflow(_))
        && body.dst_eid != EidSpec::Random
        && body.src_eid != EidSpec::Random
        && body.instance.is_some()
        && !matches!(body.payload, Bytes::Random(_));
    let first = eth.build(&body.build(&mut rng))?;
    let room = (POOL_BYTES / first.len()).clamp(1, POOL_FRAMES) as u64;
    let pool_len = if fixed {
        1
    } else {
        bounds.count.min(room) as usize
    };
    let mut pool = Vec::with_capacity(pool_len);
    pool.push(first);
    while pool.len() < pool_len {
        pool.push(eth.build(&body.build(&mut rng))?);
    }
    let start = Instant::now();
    let deadline = start + bounds.duration;
    let mut stats = SendStats::default();
    let mut next = 0usize;
    let mut batch: Vec<&[u8]> = Vec::with_capacity(BATCH);
    while stats.sent < bounds.count {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut n = (bounds.count - stats.sent).min(BATCH as u64) as usize;
        if let Some(rate) = bounds.rate {
            // Frame i is due at start + i / rate.
            let due = (now - start).as_secs_f64() * rate as f64;
            let allowed = (due.floor() as u64 + 1).saturating_sub(stats.sent);
            if allowed == 0 {
                let next_due = start + Duration::from_secs_f64((stats.sent as f64) / rate as f64);
                std::thread::sleep(next_due.saturating_duration_since(now).min(deadline - now));
                continue;
            }
            n = n.min(allowed as usize);
        }
        batch.clear();
        batch.extend((0..n).map(|i| pool[(next + i) % pool.len()].as_slice()));
        match sock.send_batch(&batch) {
            Ok(k) => {
                stats.sent += k as u64;
                next = (next + k) % pool.len();
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR)
                ) =>
            {
                stats.busy += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// What the impostor answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImpostorStats {
    /// NAME_QUERY frames for the name it saw.
    pub name_queries: u64,
    /// FLOW_REQ frames for the name it answered with OK.
    pub flow_reqs: u64,
    /// DATA frames that reached one of its endpoint ids.
    pub data: u64,
}

impl std::fmt::Display for ImpostorStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "impostor name_queries={} flow_reqs={} data={}",
            self.name_queries, self.flow_reqs, self.data
        )
    }
}

/// Plays the holder of `name_hash` on `dev` for `duration`: answers every
/// NAME_QUERY for it with a NAME_REPLY and every FLOW_REQ for it with an OK
/// FLOW_REPLY, and counts DATA frames for the endpoints it handed out.
/// `on_event` sees each answer (for live output).
pub fn impostor(
    dev: &str,
    ethertype: u16,
    name_hash: [u8; 32],
    duration: Duration,
    mut on_event: impl FnMut(&str),
) -> Result<ImpostorStats, ForgeError> {
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(ForgeError::Unbounded("duration must be 1 ms ..= 600 s"));
    }
    let sock = PacketSocket::open(dev, Some(ethertype))?;
    let me = interface_mac(dev)?;
    let mut rng = StdRng::from_entropy();
    let mut stats = ImpostorStats::default();
    let mut handed_out: Vec<Eid> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + duration;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(n) = sock.recv(&mut buf, left.min(Duration::from_millis(100)))? else {
            continue;
        };
        let Ok((eh, rest)) = EthHeader::parse(&buf[..n]) else {
            continue;
        };
        if eh.src == me || (eh.dst != me && eh.dst != wire::BROADCAST) {
            continue;
        }
        let Ok(frame) = Frame::parse(rest) else {
            continue;
        };
        let reply = match frame.payload {
            Payload::NameQuery { name_hash: h } if h == name_hash => {
                stats.name_queries += 1;
                on_event(&format!("answer name-query from {}", format_mac(&eh.src)));
                Frame {
                    dst: Eid::NONE,
                    src: Eid::NONE,
                    payload: Payload::NameReply { name_hash },
                }
                .to_vec()
            }
            Payload::FlowReq(req) if req.name_hash == name_hash => {
                stats.flow_reqs += 1;
                let eid = Eid(rng.gen::<u64>() | 1);
                handed_out.push(eid);
                on_event(&format!("answer flow-req from {}", format_mac(&eh.src)));
                Frame {
                    dst: frame.src,
                    src: eid,
                    payload: Payload::FlowReply(FlowReplyRepr {
                        instance: rng.gen(),
                        code: ReplyCode::Ok,
                        max_sdu: req.max_sdu,
                        timeout: req.qos.timeout,
                    }),
                }
                .to_vec()
            }
            Payload::Data(_) if handed_out.contains(&frame.dst) => {
                stats.data += 1;
                continue;
            }
            _ => continue,
        };
        let out = EthSpec {
            dst: eh.src,
            src: me,
            ethertype,
            vlan: None,
        }
        .build(&reply)?;
        sock.send_batch(&[&out])?;
    }
    Ok(stats)
}

/// Bytes of the ethflow header plus Ethernet header: where a payload starts.
pub const PAYLOAD_OFFSET: usize = ETH_HEADER_LEN + HEADER_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::ethernet::EthernetPacket;
    use pnet_packet::vlan::VlanPacket;
    use pnet_packet::Packet;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), A);
        assert_eq!(format_mac(&A), "02:00:00:00:00:0a");
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
        assert!(parse_mac("02:00:00:00:00:100").is_err());
    }

    #[test]
    fn numbers_and_hex() {
        assert_eq!(parse_u64("0x88b5").unwrap(), 0x88b5);
        assert_eq!(parse_u64("18446744073709551615").unwrap(), u64::MAX);
        assert!(parse_u64("x").is_err());
        assert_eq!(parse_hex("00ff10").unwrap(), vec![0, 0xff, 0x10]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }

    #[test]
    fn untagged_frame_is_padded_and_parses() {
        let body = BodySpec {
            kind: Kind::Ethflow(FrameType::Dealloc),
            dst_eid: EidSpec::Fixed(0x0100_0000),
            src_eid: EidSpec::Fixed(0x0200_0000),
            ..BodySpec::default()
        }
        .build(&mut rng());
        let frame = EthSpec {
            dst: B,
            src: A,
            ethertype: 0x88b5,
            vlan: None,
        }
        .build(&body)
        .unwrap();
        assert_eq!(frame.len(), MIN_FRAME);
        let (eh, rest) = EthHeader::parse(&frame).unwrap();
        assert_eq!((eh.dst, eh.src, eh.ethertype), (B, A, 0x88b5));
        let f = Frame::parse(rest).unwrap();
        assert_eq!(
            (f.dst, f.src, f.payload),
            (Eid(0x0100_0000), Eid(0x0200_0000), Payload::Dealloc)
        );
    }

    #[test]
    fn tagged_frame_carries_the_vlan_id() {
        let body = BodySpec {
            kind: Kind::Ethflow(FrameType::KeepAlive),
            instance: Some(9),
            receiver_instance: 3,
            ..BodySpec::default()
        }
        .build(&mut rng());
        let frame = EthSpec {
            dst: B,
            src: A,
            ethertype: 0x88b5,
            vlan: Some(42),
        }
        .build(&body)
        .unwrap();
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_ethertype(), EtherTypes::Vlan);
        let vlan = VlanPacket::new(eth.payload()).unwrap();
        assert_eq!(vlan.get_vlan_identifier(), 42);
        assert_eq!(vlan.get_ethertype(), EtherType(0x88b5));
        let f = Frame::parse(vlan.payload()).unwrap();
        assert!(matches!(
            f.payload,
            Payload::KeepAlive(KeepAliveRepr {
                sender_instance: 9,
                receiver_instance: 3,
                ..
            })
        ));
        assert!(matches!(
            EthSpec {
                dst: B,
                src: A,
                ethertype: 0x88b5,
                vlan: Some(4096)
            }
            .build(&body),
            Err(ForgeError::BadVlan(4096))
        ));
    }

    #[test]
    fn random_ethflow_frames_are_well_formed() {
        let spec = BodySpec {
            kind: Kind::RandomEthflow,
            ..BodySpec::default()
        };
        let mut r = rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let body = spec.build(&mut r);
            match Frame::parse(&body) {
                Ok(f) => {
                    seen.insert(f.frame_type() as u8);
                }
                // Random reply codes and flags are the only refusals.
                Err(e) => assert_eq!(e, wire::WireError::BadField),
            }
        }
        assert_eq!(
            seen.len(),
            FrameType::ALL.len(),
            "every type drawn: {seen:?}"
        );
    }

    #[test]
    fn flow_req_carries_the_asked_timeout() {
        let body = BodySpec {
            kind: Kind::Ethflow(FrameType::FlowReq),
            timeout_ms: u64::MAX,
            name_hash: [5; 32],
            ..BodySpec::default()
        }
        .build(&mut rng());
        match Frame::parse(&body).unwrap().payload {
            Payload::FlowReq(r) => {
                assert_eq!(r.qos.timeout, u64::MAX);
                assert_eq!(r.name_hash, [5; 32]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unbounded_runs_are_refused() {
        let ok = Bounds {
            count: 10,
            rate: Some(100),
            duration: Duration::from_secs(1),
        };
        assert!(ok.check().is_ok());
        for bad in [
            Bounds { count: 0, ..ok },
            Bounds {
                count: MAX_COUNT + 1,
                ..ok
            },
            Bounds {
                duration: Duration::ZERO,
                ..ok
            },
            Bounds {
                duration: MAX_DURATION + Duration::from_secs(1),
                ..ok
            },
            Bounds {
                rate: Some(0),
                ..ok
            },
        ] {
            assert!(
                matches!(bad.check(), Err(ForgeError::Unbounded(_))),
                "{bad:?}"
            );
        }
    }
}
