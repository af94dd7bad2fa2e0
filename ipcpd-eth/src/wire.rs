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
mod tests {
    use super::*;

    const DST: Eid = Eid(0x0000_0102_0304_0506);
    const SRC: Eid = Eid(0x0a0b_0c0d_0e0f_1011);

    fn qos() -> WireQos {
        WireQos {
            delay: 100,
            bandwidth: 1 << 40,
            availability: 3,
            loss: 7,
            ber: 9,
            in_order: true,
            max_gap: 20,
            timeout: 120_000,
        }
    }

    fn every_payload(sdu: &[u8]) -> Vec<Payload<'_>> {
        vec![
            Payload::Data(sdu),
            Payload::NameQuery {
                name_hash: [0x11; 32],
            },
            Payload::NameReply {
                name_hash: [0x22; 32],
            },
            Payload::FlowReq(FlowReqRepr {
                instance: 42,
                name_hash: [0x33; 32],
                qos: qos(),
                max_sdu: 1480,
            }),
            Payload::FlowReply(FlowReplyRepr {
                instance: 43,
                code: ReplyCode::NoAcceptingProcess,
                max_sdu: 9000,
                timeout: 0,
            }),
            Payload::Dealloc,
            Payload::DeallocAck,
            Payload::KeepAlive(KeepAliveRepr {
                sender_instance: 1,
                receiver_instance: u64::MAX,
                challenge: 0x1234_5678_9abc_def0,
            }),
            Payload::UnknownEid,
            Payload::Challenge(ChallengeRepr {
                challenge: 77,
                believed_instance: 78,
            }),
            Payload::ChallengeReply(ChallengeReplyRepr {
                echo: 79,
                verdict: Verdict::Different,
            }),
        ]
    }

    #[test]
    fn every_frame_type_round_trips() {
        let sdu = b"hello, flow";
        let payloads = every_payload(sdu);
        assert_eq!(
            payloads.len(),
            FrameType::ALL.len(),
            "one payload per frame type"
        );
        for payload in payloads {
            let frame = Frame {
                dst: DST,
                src: SRC,
                payload,
            };
            let bytes = frame.to_vec();
            assert_eq!(bytes.len(), frame.buffer_len());
            assert_eq!(Frame::parse(&bytes), Ok(frame), "{:?}", frame.frame_type());
        }
    }

    #[test]
    fn fixed_sizes_match_the_documented_layout() {
        assert_eq!(QOS_LEN, 34);
        assert_eq!(FLOW_REQ_LEN, 78);
        assert_eq!(FLOW_REPLY_LEN, 21);
        assert_eq!(KEEP_ALIVE_LEN, 24);
        assert_eq!(CHALLENGE_LEN, 16);
        assert_eq!(CHALLENGE_REPLY_LEN, 9);
        assert_eq!(HEADER_LEN, 20);
        assert_eq!(ETH_HEADER_LEN, 14);
        for payload in every_payload(b"") {
            let frame = Frame {
                dst: DST,
                src: SRC,
                payload,
            };
            let expected = frame.frame_type().fixed_payload_len().unwrap_or(0);
            assert_eq!(frame.to_vec().len(), HEADER_LEN + expected);
        }
    }

    #[test]
    fn header_bytes_are_big_endian_in_documented_order() {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Data(&[0xaa, 0xbb, 0xcc]),
        };
        let bytes = frame.to_vec();
        assert_eq!(&bytes[..4], &[VERSION, 0, 0, 3]);
        assert_eq!(&bytes[4..12], &[0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(
            &bytes[12..20],
            &[0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11]
        );
        assert_eq!(&bytes[20..], &[0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn flow_reply_layout() {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::FlowReply(FlowReplyRepr {
                instance: 0x0102,
                code: ReplyCode::ResourceLimit,
                max_sdu: 0x0506,
                timeout: 0x0708,
            }),
        };
        let bytes = frame.to_vec();
        assert_eq!(
            &bytes[HEADER_LEN..],
            &[0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8]
        );
    }

    #[test]
    fn keep_alive_and_challenge_layouts() {
        let ka = Frame {
            dst: Eid::NONE,
            src: Eid::NONE,
            payload: Payload::KeepAlive(KeepAliveRepr {
                sender_instance: 0x0101,
                receiver_instance: 0x0202,
                challenge: 0x0303,
            }),
        }
        .to_vec();
        let p = &ka[HEADER_LEN..];
        assert_eq!(
            p[keep_alive_field::SENDER_INSTANCE],
            [0, 0, 0, 0, 0, 0, 1, 1]
        );
        assert_eq!(
            p[keep_alive_field::RECEIVER_INSTANCE],
            [0, 0, 0, 0, 0, 0, 2, 2]
        );
        assert_eq!(p[keep_alive_field::CHALLENGE], [0, 0, 0, 0, 0, 0, 3, 3]);
        let rep = Frame {
            dst: Eid::NONE,
            src: Eid::NONE,
            payload: Payload::ChallengeReply(ChallengeReplyRepr {
                echo: 0x0404,
                verdict: Verdict::Different,
            }),
        }
        .to_vec();
        assert_eq!(&rep[HEADER_LEN..], &[0, 0, 0, 0, 0, 0, 4, 4, 1]);
    }

    #[test]
    fn padding_past_the_length_is_ignored() {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Data(&[0x5a]),
        };
        let mut padded = frame.to_vec();
        padded.resize(46, 0xee);
        let parsed = Frame::parse(&padded).unwrap();
        assert_eq!(parsed.payload, Payload::Data(&[0x5a]));
        assert_eq!(HeaderView::new_checked(&padded).unwrap().payload(), &[0x5a]);
    }

    #[test]
    fn padding_after_fixed_size_payload_is_ignored() {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Dealloc,
        };
        let mut padded = frame.to_vec();
        padded.resize(46, 0);
        assert_eq!(Frame::parse(&padded), Ok(frame));
    }

    #[test]
    fn short_header_is_truncated() {
        let bytes = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Dealloc,
        }
        .to_vec();
        assert_eq!(
            Frame::parse(&bytes[..HEADER_LEN - 1]),
            Err(WireError::Truncated)
        );
        assert_eq!(Frame::parse(&[]), Err(WireError::Truncated));
    }

    #[test]
    fn length_past_the_frame_is_truncated() {
        let mut bytes = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Data(b"abcd"),
        }
        .to_vec();
        bytes[3] = 5;
        assert_eq!(Frame::parse(&bytes), Err(WireError::Truncated));
    }

    #[test]
    fn wrong_version_and_type_are_refused() {
        let mut bytes = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::UnknownEid,
        }
        .to_vec();
        bytes[0] = 1;
        assert_eq!(Frame::parse(&bytes), Err(WireError::BadVersion(1)));
        bytes[0] = VERSION;
        bytes[1] = 11;
        assert_eq!(Frame::parse(&bytes), Err(WireError::BadType(11)));
    }

    #[test]
    fn wrong_length_for_fixed_type_is_bad_length() {
        let mut bytes = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::KeepAlive(KeepAliveRepr {
                sender_instance: 1,
                receiver_instance: 2,
                challenge: 3,
            }),
        }
        .to_vec();
        bytes[3] = 23;
        assert_eq!(Frame::parse(&bytes), Err(WireError::BadLength));
    }

    #[test]
    fn bad_in_order_and_reply_code_are_bad_field() {
        let req = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::FlowReq(FlowReqRepr {
                instance: 1,
                name_hash: [0; 32],
                qos: qos(),
                max_sdu: 1,
            }),
        };
        let mut bytes = req.to_vec();
        let in_order_at = HEADER_LEN + flow_req_field::IN_ORDER;
        assert_eq!(bytes[in_order_at], 1);
        bytes[in_order_at] = 2;
        assert_eq!(Frame::parse(&bytes), Err(WireError::BadField));

        let rep = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::FlowReply(FlowReplyRepr {
                instance: 1,
                code: ReplyCode::Ok,
                max_sdu: 1,
                timeout: 1,
            }),
        };
        let mut bytes = rep.to_vec();
        bytes[HEADER_LEN + flow_reply_field::CODE] = 4;
        assert_eq!(Frame::parse(&bytes), Err(WireError::BadField));

        let mut bytes = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::ChallengeReply(ChallengeReplyRepr {
                echo: 1,
                verdict: Verdict::Same,
            }),
        }
        .to_vec();
        bytes[HEADER_LEN + challenge_reply_field::VERDICT] = 2;
        assert_eq!(Frame::parse(&bytes), Err(WireError::BadField));
    }

    #[test]
    fn data_header_in_place_matches_emit() {
        let sdu = b"in place";
        let mut buf = vec![0u8; HEADER_LEN + sdu.len()];
        buf[HEADER_LEN..].copy_from_slice(sdu);
        emit_data_header(&mut buf, DST, SRC, sdu.len() as u16);
        assert_eq!(
            buf,
            Frame {
                dst: DST,
                src: SRC,
                payload: Payload::Data(sdu)
            }
            .to_vec()
        );
        let view = HeaderView::new_checked(&buf).unwrap();
        assert_eq!(
            (view.frame_type(), view.dst(), view.src(), view.payload()),
            (FrameType::Data, DST, SRC, &sdu[..])
        );
    }

    #[test]
    fn emit_returns_length_and_leaves_the_rest() {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::DeallocAck,
        };
        let mut buf = [0x77u8; 64];
        assert_eq!(frame.emit(&mut buf), HEADER_LEN);
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0x77));
    }

    #[test]
    #[should_panic(expected = "emit: buffer")]
    fn emit_into_short_buffer_is_a_caller_bug() {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Data(b"xyz"),
        };
        frame.emit(&mut [0u8; HEADER_LEN + 2]);
    }

    #[test]
    fn type_and_code_conversions() {
        for v in 0..=255u8 {
            match FrameType::try_from(v) {
                Ok(t) => assert_eq!(t as u8, v),
                Err(e) => assert!(v > 10 && e == WireError::BadType(v)),
            }
            match ReplyCode::try_from(v) {
                Ok(c) => assert_eq!(c as u8, v),
                Err(e) => assert!(v > 3 && e == WireError::BadField),
            }
        }
    }

    #[test]
    fn qos_converts_both_ways() {
        let q = irm::Qos::video().with_timeout(1234);
        let wire = WireQos::from(q);
        assert_eq!(wire.timeout, 1234);
        assert_eq!(wire.bandwidth, q.bandwidth);
        assert_eq!(irm::Qos::from(wire), q);
    }

    #[test]
    fn eth_header_round_trips() {
        let header = EthHeader {
            dst: BROADCAST,
            src: [2, 0, 0, 0, 0, 1],
            ethertype: DEFAULT_ETHERTYPE,
        };
        let mut buf = [0u8; ETH_HEADER_LEN + 3];
        header.emit(&mut buf);
        assert_eq!(&buf[12..14], &[0x88, 0xb5]);
        let (parsed, rest) = EthHeader::parse(&buf).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(rest.len(), 3);
        assert_eq!(
            EthHeader::parse(&buf[..ETH_HEADER_LEN - 1]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn eid_fields() {
        let eid = Eid::new(0x12_3456, 0xab_cdef_0123);
        assert_eq!(eid.index(), 0x12_3456);
        assert_eq!(eid.generation(), 0xab_cdef_0123);
        assert!(!eid.is_none());
        assert!(Eid::NONE.is_none());
    }
}
