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

/// Wire protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Default ethertype (IEEE 802 local experimental 1).
pub const DEFAULT_ETHERTYPE: u16 = 0x88b5;
/// Bytes of the ethflow header.
pub const HEADER_LEN: usize = 20;
/// Bytes of the Ethernet header (no VLAN tag).
pub const ETH_HEADER_LEN: usize = 14;
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
        Eid(((generation & Self::MAX_GENERATION) << Self::INDEX_BITS) | (index as u64 & Self::INDEX_MASK))
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
}

/// Per-peer keep-alive: who I am, and which instance of you I believe I talk to
/// (0 = none), so a restarted peer can say at once that it is someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveRepr {
    pub sender_instance: u64,
    pub receiver_instance: u64,
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
