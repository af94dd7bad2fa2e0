//! The ethflow wire format (see `docs/wire.md`): checked views and plain `Repr`
//! values, in the manner of smoltcp. Every parse is bounds-checked; a malformed
//! frame is an error value, never a panic.
//!
//! Layout after the 14-byte Ethernet header (all integers big-endian):
//!
//! ```text
//!  0      1      2             4                      12                     20
//!  +------+------+-------------+----------------------+----------------------+---------
//!  | ver  | type | payload len |   destination eid    |     source eid       | payload
//!  +------+------+-------------+----------------------+----------------------+---------
//! ```
//!
//! `payload len` is authoritative: Ethernet pads short frames, so bytes past it
//! are ignored; a length larger than the frame is an error.
//!
//! Every fixed layout has one private `field` table of byte ranges (smoltcp's
//! habit); lengths are taken from the tables' last field.

use std::ops::Range;

/// Wire protocol version carried in every frame. Version 2 added random
/// endpoint generations, the keep-alive challenge and CHALLENGE /
/// CHALLENGE_REPLY (see `docs/wire.md`).
pub const VERSION: u8 = 2;
/// Default ethertype (IEEE 802 local experimental 1).
pub const DEFAULT_ETHERTYPE: u16 = 0x88b5;
/// Byte ranges of the ethflow header.
mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const LEN: Range<usize> = 2..4;
    pub const DST_EID: Range<usize> = 4..12;
    pub const SRC_EID: Range<usize> = 12..20;
}

/// Byte ranges of the Ethernet header.
mod eth_field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Byte ranges inside a NAME_QUERY / NAME_REPLY payload.
pub mod name_field {
    use std::ops::Range;
    pub const NAME_HASH: Range<usize> = 0..32;
}

/// Byte ranges inside a FLOW_REQ payload.
pub mod flow_req_field {
    use std::ops::Range;
    pub const INSTANCE: Range<usize> = 0..8;
    pub const NAME_HASH: Range<usize> = 8..40;
    pub const DELAY: Range<usize> = 40..44;
    pub const BANDWIDTH: Range<usize> = 44..52;
    pub const AVAILABILITY: usize = 52;
    pub const LOSS: Range<usize> = 53..57;
    pub const BER: Range<usize> = 57..61;
    pub const IN_ORDER: usize = 61;
    pub const MAX_GAP: Range<usize> = 62..66;
    pub const TIMEOUT: Range<usize> = 66..74;
    pub const MAX_SDU: Range<usize> = 74..78;
}

/// Byte ranges inside a FLOW_REPLY payload.
pub mod flow_reply_field {
    use std::ops::Range;
    pub const INSTANCE: Range<usize> = 0..8;
    pub const CODE: usize = 8;
    pub const MAX_SDU: Range<usize> = 9..13;
    pub const TIMEOUT: Range<usize> = 13..21;
}

/// Byte ranges inside a KEEP_ALIVE payload.
pub mod keep_alive_field {
    use std::ops::Range;
    pub const SENDER_INSTANCE: Range<usize> = 0..8;
    pub const RECEIVER_INSTANCE: Range<usize> = 8..16;
    pub const CHALLENGE: Range<usize> = 16..24;
}

/// Byte ranges inside a CHALLENGE payload.
pub mod challenge_field {
    use std::ops::Range;
    pub const CHALLENGE: Range<usize> = 0..8;
    pub const BELIEVED_INSTANCE: Range<usize> = 8..16;
}

/// Byte ranges inside a CHALLENGE_REPLY payload.
pub mod challenge_reply_field {
    use std::ops::Range;
    pub const ECHO: Range<usize> = 0..8;
    pub const VERDICT: usize = 8;
}

/// Bytes of the ethflow header.
pub const HEADER_LEN: usize = field::SRC_EID.end;
/// Bytes of the Ethernet header (no VLAN tag).
pub const ETH_HEADER_LEN: usize = eth_field::ETHERTYPE.end;
/// Broadcast MAC.
pub const BROADCAST: Mac = [0xff; 6];

pub type Mac = [u8; 6];

/// An endpoint id: low 24 bits a slot index, high 40 bits a generation that
/// changes on every reuse of the slot, so a stale frame never matches a new flow.
/// 0 means "no endpoint".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Eid(pub u64);

impl Eid {
    pub const NONE: Eid = Eid(0);
    pub const INDEX_BITS: u32 = 24;
    pub const INDEX_MASK: u64 = (1 << Self::INDEX_BITS) - 1;
    pub const MAX_GENERATION: u64 = (1 << (64 - Self::INDEX_BITS)) - 1;

    pub fn new(index: u32, generation: u64) -> Eid {
        debug_assert!((index as u64) <= Self::INDEX_MASK);
        Eid(((generation & Self::MAX_GENERATION) << Self::INDEX_BITS)
            | (index as u64 & Self::INDEX_MASK))
    }
    pub fn index(self) -> u32 {
        (self.0 & Self::INDEX_MASK) as u32
    }
    pub fn generation(self) -> u64 {
        self.0 >> Self::INDEX_BITS
    }
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Data = 0,
    NameQuery = 1,
    NameReply = 2,
    FlowReq = 3,
    FlowReply = 4,
    Dealloc = 5,
    DeallocAck = 6,
    KeepAlive = 7,
    UnknownEid = 8,
    Challenge = 9,
    ChallengeReply = 10,
}

impl FrameType {
    /// Every frame type, in wire order.
    pub const ALL: [FrameType; 11] = [
        FrameType::Data,
        FrameType::NameQuery,
        FrameType::NameReply,
        FrameType::FlowReq,
        FrameType::FlowReply,
        FrameType::Dealloc,
        FrameType::DeallocAck,
        FrameType::KeepAlive,
        FrameType::UnknownEid,
        FrameType::Challenge,
        FrameType::ChallengeReply,
    ];
}

/// QoS fields as carried in a flow request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireQos {
    pub delay: u32,
    pub bandwidth: u64,
    pub availability: u8,
    pub loss: u32,
    pub ber: u32,
    pub in_order: bool,
    pub max_gap: u32,
    /// Liveness timeout in ms.
    pub timeout: u64,
}

/// Result code of a flow reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyCode {
    Ok = 0,
    NoSuchName = 1,
    NoAcceptingProcess = 2,
    ResourceLimit = 3,
}

/// A flow request: ask the peer for a flow to `name_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowReqRepr {
    /// Requester IPCP's instance nonce (changes when the IPCP restarts).
    pub instance: u64,
    pub name_hash: [u8; 32],
    pub qos: WireQos,
    /// Largest SDU the requester can carry.
    pub max_sdu: u32,
}

/// A flow reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowReplyRepr {
    pub instance: u64,
    pub code: ReplyCode,
    pub max_sdu: u32,
    /// The liveness timeout (ms) the responder runs the flow with (the
    /// requested one, or lower if capped); the requester adopts it if lower.
    /// 0 on a refusal.
    pub timeout: u64,
}

/// Per-peer keep-alive: who I am, which instance of you I believe I talk to
/// (0 = none), and a fresh random challenge. A keep-alive refreshes liveness
/// only if `receiver_instance` is the receiver's current nonce; a receiver
/// that is not that instance answers with a CHALLENGE_REPLY echoing
/// `challenge` (verdict Different), which proves it saw this unicast frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveRepr {
    pub sender_instance: u64,
    pub receiver_instance: u64,
    pub challenge: u64,
}

/// "Are you still the instance I believe?": sent to a peer MAC when a frame
/// claims that peer restarted. Carries a fresh random value to be echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeRepr {
    pub challenge: u64,
    /// The instance nonce the challenger believes the receiver has.
    pub believed_instance: u64,
}

/// Whether the answering IPCP is the instance the challenger believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    Same = 0,
    Different = 1,
}

/// Answer to a CHALLENGE (or to a keep-alive for another instance). It never
/// carries the answerer's own nonce, only the echo and a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeReplyRepr {
    pub echo: u64,
    pub verdict: Verdict,
}

/// The payload of a frame, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    Data(&'a [u8]),
    NameQuery { name_hash: [u8; 32] },
    NameReply { name_hash: [u8; 32] },
    FlowReq(FlowReqRepr),
    FlowReply(FlowReplyRepr),
    Dealloc,
    DeallocAck,
    KeepAlive(KeepAliveRepr),
    UnknownEid,
    Challenge(ChallengeRepr),
    ChallengeReply(ChallengeReplyRepr),
}

/// A parsed frame (the part after the Ethernet header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub dst: Eid,
    pub src: Eid,
    pub payload: Payload<'a>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header, or than the header's length field says.
    Truncated,
    /// A version we do not speak.
    BadVersion(u8),
    /// An unknown frame type.
    BadType(u8),
    /// The payload length does not fit the frame type.
    BadLength,
    /// A field holds a value that is not allowed (e.g. reply code).
    BadField,
}

/// Payload bytes of a name query or name reply (a SHA-256 name hash).
pub const NAME_PAYLOAD_LEN: usize = name_field::NAME_HASH.end;
/// Bytes of the QoS block inside a flow request.
pub const QOS_LEN: usize = flow_req_field::TIMEOUT.end - flow_req_field::DELAY.start;
/// Payload bytes of a flow request.
pub const FLOW_REQ_LEN: usize = flow_req_field::MAX_SDU.end;
/// Payload bytes of a flow reply.
pub const FLOW_REPLY_LEN: usize = flow_reply_field::TIMEOUT.end;
/// Payload bytes of a keep-alive.
pub const KEEP_ALIVE_LEN: usize = keep_alive_field::CHALLENGE.end;
/// Payload bytes of a challenge.
pub const CHALLENGE_LEN: usize = challenge_field::BELIEVED_INSTANCE.end;
/// Payload bytes of a challenge reply.
pub const CHALLENGE_REPLY_LEN: usize = challenge_reply_field::VERDICT + 1;
/// Largest payload the 16-bit length field can describe.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

impl TryFrom<u8> for FrameType {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Ok(match value {
            0 => FrameType::Data,
            1 => FrameType::NameQuery,
            2 => FrameType::NameReply,
            3 => FrameType::FlowReq,
            4 => FrameType::FlowReply,
            5 => FrameType::Dealloc,
            6 => FrameType::DeallocAck,
            7 => FrameType::KeepAlive,
            8 => FrameType::UnknownEid,
            9 => FrameType::Challenge,
            10 => FrameType::ChallengeReply,
            other => return Err(WireError::BadType(other)),
        })
    }
}

impl FrameType {
    /// The payload length this type must have, or `None` if any length is valid.
    pub fn fixed_payload_len(self) -> Option<usize> {
        match self {
            FrameType::Data => None,
            FrameType::NameQuery | FrameType::NameReply => Some(NAME_PAYLOAD_LEN),
            FrameType::FlowReq => Some(FLOW_REQ_LEN),
            FrameType::FlowReply => Some(FLOW_REPLY_LEN),
            FrameType::Dealloc | FrameType::DeallocAck | FrameType::UnknownEid => Some(0),
            FrameType::KeepAlive => Some(KEEP_ALIVE_LEN),
            FrameType::Challenge => Some(CHALLENGE_LEN),
            FrameType::ChallengeReply => Some(CHALLENGE_REPLY_LEN),
        }
    }
}

impl TryFrom<u8> for ReplyCode {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Ok(match value {
            0 => ReplyCode::Ok,
            1 => ReplyCode::NoSuchName,
            2 => ReplyCode::NoAcceptingProcess,
            3 => ReplyCode::ResourceLimit,
            _ => return Err(WireError::BadField),
        })
    }
}

impl TryFrom<u8> for Verdict {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Verdict::Same),
            1 => Ok(Verdict::Different),
            _ => Err(WireError::BadField),
        }
    }
}

impl From<irm::Qos> for WireQos {
    fn from(q: irm::Qos) -> Self {
        WireQos {
            delay: q.delay,
            bandwidth: q.bandwidth,
            availability: q.availability,
            loss: q.loss,
            ber: q.ber,
            in_order: q.in_order,
            max_gap: q.max_gap,
            timeout: q.timeout,
        }
    }
}

impl From<WireQos> for irm::Qos {
    fn from(q: WireQos) -> Self {
        irm::Qos {
            delay: q.delay,
            bandwidth: q.bandwidth,
            availability: q.availability,
            loss: q.loss,
            ber: q.ber,
            in_order: q.in_order,
            max_gap: q.max_gap,
            timeout: q.timeout,
            // Security is end to end: the receiving host's name
            // configuration decides, not a bit on the wire.
            encrypt: false,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("frame truncated"),
            WireError::BadVersion(v) => write!(f, "unsupported version {v}"),
            WireError::BadType(t) => write!(f, "unknown frame type {t}"),
            WireError::BadLength => f.write_str("payload length does not fit the frame type"),
            WireError::BadField => f.write_str("field holds a value that is not allowed"),
        }
    }
}

impl std::error::Error for WireError {}

/// Fixed-size field `range` of a slice whose length the caller checked.
/// Running past the end is a bug in this module, so it panics rather than erring.
fn get<const N: usize>(buf: &[u8], range: Range<usize>) -> [u8; N] {
    buf[range].try_into().expect("field table gives N bytes")
}

fn get_u32(buf: &[u8], range: Range<usize>) -> u32 {
    u32::from_be_bytes(get(buf, range))
}

fn get_u64(buf: &[u8], range: Range<usize>) -> u64 {
    u64::from_be_bytes(get(buf, range))
}

fn get_bool(buf: &[u8], at: usize) -> Result<bool, WireError> {
    match buf[at] {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::BadField),
    }
}

fn put_u32(buf: &mut [u8], range: Range<usize>, v: u32) {
    buf[range].copy_from_slice(&v.to_be_bytes());
}

fn put_u64(buf: &mut [u8], range: Range<usize>, v: u64) {
    buf[range].copy_from_slice(&v.to_be_bytes());
}

fn write_header(buf: &mut [u8], ty: FrameType, len: u16, dst: Eid, src: Eid) {
    let buf = &mut buf[..HEADER_LEN];
    buf[field::VERSION] = VERSION;
    buf[field::TYPE] = ty as u8;
    buf[field::LEN].copy_from_slice(&len.to_be_bytes());
    put_u64(buf, field::DST_EID, dst.0);
    put_u64(buf, field::SRC_EID, src.0);
}

/// Write a data header in place, for the fast path where the SDU already sits
/// at `buf[HEADER_LEN..]`. Panics if `buf` is shorter than [`HEADER_LEN`].
pub fn emit_data_header(buf: &mut [u8], dst: Eid, src: Eid, len: u16) {
    write_header(buf, FrameType::Data, len, dst, src);
}

/// A checked, zero-copy view over an ethflow header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderView<'a> {
    frame_type: FrameType,
    dst: Eid,
    src: Eid,
    payload: &'a [u8],
}

impl<'a> HeaderView<'a> {
    /// Check the header of `buf` (the part after the Ethernet header): long enough,
    /// our version, a known type, and a length that fits. Padding past the
    /// length is cut off.
    pub fn new_checked(buf: &'a [u8]) -> Result<HeaderView<'a>, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let version = buf[field::VERSION];
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let frame_type = FrameType::try_from(buf[field::TYPE])?;
        let len = u16::from_be_bytes(get(buf, field::LEN)) as usize;
        let dst = Eid(get_u64(buf, field::DST_EID));
        let src = Eid(get_u64(buf, field::SRC_EID));
        let payload = buf[HEADER_LEN..].get(..len).ok_or(WireError::Truncated)?;
        Ok(HeaderView {
            frame_type,
            dst,
            src,
            payload,
        })
    }

    pub fn frame_type(&self) -> FrameType {
        self.frame_type
    }
    pub fn dst(&self) -> Eid {
        self.dst
    }
    pub fn src(&self) -> Eid {
        self.src
    }
    /// The payload, exactly as long as the header's length field says.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

impl<'a> Payload<'a> {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Payload::Data(_) => FrameType::Data,
            Payload::NameQuery { .. } => FrameType::NameQuery,
            Payload::NameReply { .. } => FrameType::NameReply,
            Payload::FlowReq(_) => FrameType::FlowReq,
            Payload::FlowReply(_) => FrameType::FlowReply,
            Payload::Dealloc => FrameType::Dealloc,
            Payload::DeallocAck => FrameType::DeallocAck,
            Payload::KeepAlive(_) => FrameType::KeepAlive,
            Payload::UnknownEid => FrameType::UnknownEid,
            Payload::Challenge(_) => FrameType::Challenge,
            Payload::ChallengeReply(_) => FrameType::ChallengeReply,
        }
    }

    /// Bytes this payload takes on the wire.
    pub fn len(&self) -> usize {
        match self {
            Payload::Data(sdu) => sdu.len(),
            other => other.frame_type().fixed_payload_len().unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn parse(ty: FrameType, bytes: &'a [u8]) -> Result<Payload<'a>, WireError> {
        if let Some(expected) = ty.fixed_payload_len() {
            if bytes.len() != expected {
                return Err(WireError::BadLength);
            }
        }
        use flow_req_field as rq;
        let b = bytes;
        Ok(match ty {
            FrameType::Data => Payload::Data(bytes),
            FrameType::NameQuery => Payload::NameQuery {
                name_hash: get(b, name_field::NAME_HASH),
            },
            FrameType::NameReply => Payload::NameReply {
                name_hash: get(b, name_field::NAME_HASH),
            },
            FrameType::FlowReq => Payload::FlowReq(FlowReqRepr {
                instance: get_u64(b, rq::INSTANCE),
                name_hash: get(b, rq::NAME_HASH),
                qos: WireQos {
                    delay: get_u32(b, rq::DELAY),
                    bandwidth: get_u64(b, rq::BANDWIDTH),
                    availability: b[rq::AVAILABILITY],
                    loss: get_u32(b, rq::LOSS),
                    ber: get_u32(b, rq::BER),
                    in_order: get_bool(b, rq::IN_ORDER)?,
                    max_gap: get_u32(b, rq::MAX_GAP),
                    timeout: get_u64(b, rq::TIMEOUT),
                },
                max_sdu: get_u32(b, rq::MAX_SDU),
            }),
            FrameType::FlowReply => Payload::FlowReply(FlowReplyRepr {
                instance: get_u64(b, flow_reply_field::INSTANCE),
                code: ReplyCode::try_from(b[flow_reply_field::CODE])?,
                max_sdu: get_u32(b, flow_reply_field::MAX_SDU),
                timeout: get_u64(b, flow_reply_field::TIMEOUT),
            }),
            FrameType::Dealloc => Payload::Dealloc,
            FrameType::DeallocAck => Payload::DeallocAck,
            FrameType::KeepAlive => Payload::KeepAlive(KeepAliveRepr {
                sender_instance: get_u64(b, keep_alive_field::SENDER_INSTANCE),
                receiver_instance: get_u64(b, keep_alive_field::RECEIVER_INSTANCE),
                challenge: get_u64(b, keep_alive_field::CHALLENGE),
            }),
            FrameType::UnknownEid => Payload::UnknownEid,
            FrameType::Challenge => Payload::Challenge(ChallengeRepr {
                challenge: get_u64(b, challenge_field::CHALLENGE),
                believed_instance: get_u64(b, challenge_field::BELIEVED_INSTANCE),
            }),
            FrameType::ChallengeReply => Payload::ChallengeReply(ChallengeReplyRepr {
                echo: get_u64(b, challenge_reply_field::ECHO),
                verdict: Verdict::try_from(b[challenge_reply_field::VERDICT])?,
            }),
        })
    }

    /// Write the payload into `b`, which is exactly `self.len()` bytes.
    fn emit(&self, b: &mut [u8]) {
        use flow_req_field as rq;
        match self {
            Payload::Data(sdu) => b.copy_from_slice(sdu),
            Payload::NameQuery { name_hash } | Payload::NameReply { name_hash } => {
                b[name_field::NAME_HASH].copy_from_slice(name_hash)
            }
            Payload::FlowReq(req) => {
                let q = &req.qos;
                put_u64(b, rq::INSTANCE, req.instance);
                b[rq::NAME_HASH].copy_from_slice(&req.name_hash);
                put_u32(b, rq::DELAY, q.delay);
                put_u64(b, rq::BANDWIDTH, q.bandwidth);
                b[rq::AVAILABILITY] = q.availability;
                put_u32(b, rq::LOSS, q.loss);
                put_u32(b, rq::BER, q.ber);
                b[rq::IN_ORDER] = q.in_order as u8;
                put_u32(b, rq::MAX_GAP, q.max_gap);
                put_u64(b, rq::TIMEOUT, q.timeout);
                put_u32(b, rq::MAX_SDU, req.max_sdu);
            }
            Payload::FlowReply(rep) => {
                put_u64(b, flow_reply_field::INSTANCE, rep.instance);
                b[flow_reply_field::CODE] = rep.code as u8;
                put_u32(b, flow_reply_field::MAX_SDU, rep.max_sdu);
                put_u64(b, flow_reply_field::TIMEOUT, rep.timeout);
            }
            Payload::KeepAlive(ka) => {
                put_u64(b, keep_alive_field::SENDER_INSTANCE, ka.sender_instance);
                put_u64(b, keep_alive_field::RECEIVER_INSTANCE, ka.receiver_instance);
                put_u64(b, keep_alive_field::CHALLENGE, ka.challenge);
            }
            Payload::Challenge(c) => {
                put_u64(b, challenge_field::CHALLENGE, c.challenge);
                put_u64(b, challenge_field::BELIEVED_INSTANCE, c.believed_instance);
            }
            Payload::ChallengeReply(r) => {
                put_u64(b, challenge_reply_field::ECHO, r.echo);
                b[challenge_reply_field::VERDICT] = r.verdict as u8;
            }
            Payload::Dealloc | Payload::DeallocAck | Payload::UnknownEid => {}
        }
    }
}

impl<'a> Frame<'a> {
    /// Parse the ethflow part (after the Ethernet header). Bytes past the
    /// header's length are padding and ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Frame<'a>, WireError> {
        let view = HeaderView::new_checked(buf)?;
        Ok(Frame {
            dst: view.dst(),
            src: view.src(),
            payload: Payload::parse(view.frame_type(), view.payload())?,
        })
    }

    /// `HEADER_LEN` plus the payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Write the frame at the start of `buf` and return the bytes written.
    ///
    /// Panics if `buf` is shorter than [`Frame::buffer_len`], or if a data
    /// payload is longer than [`MAX_PAYLOAD_LEN`]: both are caller bugs.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let total = self.buffer_len();
        assert!(
            buf.len() >= total,
            "emit: buffer of {} bytes, frame needs {total}",
            buf.len()
        );
        let len = u16::try_from(self.payload.len()).expect("payload longer than 65535 bytes");
        write_header(buf, self.frame_type(), len, self.dst, self.src);
        self.payload.emit(&mut buf[HEADER_LEN..total]);
        total
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }

    pub fn frame_type(&self) -> FrameType {
        self.payload.frame_type()
    }
}

/// An Ethernet II header (no VLAN tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

impl EthHeader {
    /// Split `buf` into its Ethernet header and the rest of the frame.
    pub fn parse(buf: &[u8]) -> Result<(EthHeader, &[u8]), WireError> {
        if buf.len() < ETH_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header = EthHeader {
            dst: get(buf, eth_field::DST),
            src: get(buf, eth_field::SRC),
            ethertype: u16::from_be_bytes(get(buf, eth_field::ETHERTYPE)),
        };
        Ok((header, &buf[ETH_HEADER_LEN..]))
    }

    /// Write the header into `buf[..ETH_HEADER_LEN]`. Panics if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[eth_field::DST].copy_from_slice(&self.dst);
        buf[eth_field::SRC].copy_from_slice(&self.src);
        buf[eth_field::ETHERTYPE].copy_from_slice(&self.ethertype.to_be_bytes());
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
