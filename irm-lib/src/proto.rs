//! The IRM control protocol: messages exchanged over the Unix seqpacket socket
//! between irmd and its clients (applications, the `irm` CLI, IPCPs). One
//! datagram carries one [`Envelope`], encoded with bincode; file descriptors
//! (flow shared memory and wake-up pipes) travel beside it as SCM_RIGHTS.

use crate::error::Error;
use crate::qos::Qos;
use serde::{Deserialize, Serialize};

/// Default control socket; `IRM_SOCKET` overrides it.
pub const DEFAULT_SOCKET: &str = "/run/ethflow/irmd.sock";
/// Largest control datagram we accept.
pub const MAX_MSG: usize = 64 * 1024;
/// Most fds one control message may carry.
pub const MAX_FDS: usize = 4;

/// The control socket path for this process.
pub fn socket_path() -> String {
    std::env::var("IRM_SOCKET").unwrap_or_else(|_| DEFAULT_SOCKET.to_string())
}

/// A request id (chosen by the sender of a request, echoed in the reply; 0 for
/// unsolicited notifications) and a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub id: u64,
    pub msg: Msg,
}

/// Who a client is; the first message on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// An application; `prog` is its program name (argv[0] base name).
    App { prog: String },
    /// The `irm` command line tool.
    Cli,
    /// An IPCP that irmd spawned, identified by its IPCP name.
    Ipcp { name: String },
}

/// Geometry of a flow's shared-memory rings (chosen by irmd, which creates them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingGeometry {
    pub slots: u32,
    pub slot_size: u32,
}

/// What an IPCP reports after bootstrapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcpInfo {
    pub mac: [u8; 6],
    pub mtu: u32,
    pub max_sdu: u32,
    pub backend: String,
}

/// One row of `irm ipcp list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcpRow {
    pub name: String,
    pub pid: u32,
    pub layer: String,
    pub dev: String,
    pub ethertype: u16,
    pub state: String,
    pub info: Option<IpcpInfo>,
    /// Frame counters the IPCP last reported (name, value).
    pub counters: Vec<(String, u64)>,
}

/// One row of `irm name list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRow {
    pub name: String,
    pub layers: Vec<String>,
    pub programs: Vec<String>,
}

/// Flow state as kept in the shared-memory state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowState {
    Allocated,
    Down,
    Peer,
}

impl FlowState {
    pub fn as_str(&self) -> &'static str {
        match self {
            FlowState::Allocated => "ALLOCATED",
            FlowState::Down => "DOWN",
            FlowState::Peer => "PEER",
        }
    }
}

/// One row of `irm flow list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    pub flow_id: u32,
    pub name: String,
    pub pid: u32,
    pub ipcp: String,
    pub state: FlowState,
    pub timeout_ms: u64,
    /// Milliseconds since the last frame from the peer (None = never).
    pub last_rx_ms_ago: Option<u64>,
    pub tx_sdus: u64,
    pub tx_bytes: u64,
    pub rx_sdus: u64,
    pub rx_bytes: u64,
    pub dropped: u64,
}

/// Why a flow went down (IPCP → irmd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownCause {
    /// The peer deallocated (or its process died).
    PeerDeallocated,
    /// The peer said it has no such endpoint.
    UnknownEndpoint,
    /// The peer IPCP restarted.
    PeerRestarted,
    /// Nothing heard for the timeout.
    Unresponsive,
    /// Local link lost.
    LinkDown,
    /// Recovered: frames resumed.
    Up,
    /// The application's side of the flow's shared memory was corrupt (a
    /// hostile or forked process wrote it); the IPCP ended the flow.
    RingCorrupt,
}

impl DownCause {
    pub fn describe(&self) -> &'static str {
        match self {
            DownCause::PeerDeallocated => "Peer deallocated",
            DownCause::UnknownEndpoint => "Peer has no such endpoint",
            DownCause::PeerRestarted => "Peer IPCP restarted",
            DownCause::Unresponsive => "Unresponsive peer",
            DownCause::LinkDown => "Link down",
            DownCause::Up => "Flow up",
            DownCause::RingCorrupt => "Corrupt flow memory",
        }
    }
}

/// Every control message. Requests come from clients, replies carry the request's
/// envelope id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    // ---- any client → irmd ----
    Hello {
        role: Role,
        pid: u32,
    },

    // ---- app → irmd ----
    FlowAlloc {
        name: String,
        qos: Qos,
        timeout_ms: Option<u64>,
    },
    FlowAccept {
        timeout_ms: Option<u64>,
    },
    FlowDealloc {
        flow_id: u32,
    },

    // ---- cli → irmd ----
    IpcpBootstrap {
        name: String,
        layer: String,
        dev: String,
        ethertype: u16,
        backend: String,
        /// Spin this long (µs) for work before the IPCP sleeps; 0 = never spin.
        busy_poll_us: u32,
    },
    IpcpList,
    IpcpDestroy {
        name: String,
    },
    NameRegister {
        name: String,
        layer: String,
    },
    NameUnregister {
        name: String,
        layer: String,
    },
    NameList,
    BindProgram {
        prog: String,
        name: String,
    },
    UnbindProgram {
        prog: String,
        name: String,
    },
    /// Flows with ids above `after` (all when None), at most [`FLOW_ROWS_PER_MSG`]
    /// per reply: a long list comes in pages, each well under [`MAX_MSG`].
    FlowList {
        after: Option<u32>,
    },

    // ---- irmd → client replies ----
    Ok,
    Err(Error),
    /// A flow for the application; fds: `shm::FlowFds::for_app()`.
    FlowReady {
        flow_id: u32,
        name: String,
        qos: Qos,
        max_sdu: u32,
        geometry: RingGeometry,
    },
    IpcpRows(Vec<IpcpRow>),
    NameRows(Vec<NameRow>),
    FlowRows(Vec<FlowRow>),

    // ---- irmd → IPCP ----
    /// Register / unregister a name in the IPCP's directory.
    IpcpRegName {
        name: String,
    },
    IpcpUnregName {
        name: String,
    },
    /// Allocate a flow to `name`; fds: `shm::FlowFds::for_ipcp()`.
    IpcpFlowAlloc {
        flow_id: u32,
        name: String,
        qos: Qos,
        geometry: RingGeometry,
        timeout_ms: u64,
    },
    /// Answer to `IpcpFlowReqArrived`: accepted (fds as above) or refused.
    IpcpFlowAcceptResult {
        token: u64,
        result: Result<(u32, RingGeometry), RefuseReason>,
        timeout_ms: u64,
    },
    IpcpFlowDealloc {
        flow_id: u32,
    },

    // ---- IPCP → irmd ----
    IpcpBootstrapped(Result<IpcpInfo, String>),
    /// Reply (by envelope id) to `IpcpFlowAlloc`: max SDU or the error.
    IpcpFlowAllocResult {
        flow_id: u32,
        result: Result<u32, Error>,
    },
    /// A remote peer asks for a flow to a name registered here.
    IpcpFlowReqArrived {
        token: u64,
        name_hash: [u8; 32],
        qos: Qos,
        max_sdu: u32,
    },
    /// A flow changed liveness state.
    IpcpFlowState {
        flow_id: u32,
        cause: DownCause,
    },
    /// The IPCP's frame counters (sent when they change, at most once a second).
    IpcpCounters(Vec<(String, u64)>),
}

/// Why a flow request was refused (carried on the wire too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    NoSuchName,
    NoAcceptingProcess,
    ResourceLimit,
}

impl RefuseReason {
    pub fn describe(&self) -> &'static str {
        match self {
            RefuseReason::NoSuchName => "no such name",
            RefuseReason::NoAcceptingProcess => "no accepting process",
            RefuseReason::ResourceLimit => "resource limit",
        }
    }
}

pub use crate::ethertype::{parse_ethertype, DEFAULT_ETHERTYPE};

/// Hash of a name as it travels on the wire (SHA-256).
pub fn name_hash(name: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(name.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

/// Encode an envelope.
pub fn encode(env: &Envelope) -> Result<Vec<u8>, Error> {
    use bincode::Options;
    codec()
        .serialize(env)
        .map_err(|e| Error::Invalid(format!("control message cannot be encoded: {e}")))
}

/// Rows of `irm flow list` per reply (a row encodes to well under 200 bytes).
pub const FLOW_ROWS_PER_MSG: usize = 256;

fn codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_MSG as u64)
}

/// Decode an envelope, refusing trailing garbage and oversize input.
pub fn decode(buf: &[u8]) -> Result<Envelope, Error> {
    if buf.len() > MAX_MSG {
        return Err(Error::Invalid("control message too large".into()));
    }
    use bincode::Options;
    codec()
        .deserialize(buf)
        .map_err(|e| Error::Invalid(format!("bad control message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let env = Envelope {
            id: 7,
            msg: Msg::FlowAlloc {
                name: "oecho".into(),
                qos: Qos::voice(),
                timeout_ms: Some(3),
            },
        };
        let back = decode(&encode(&env).unwrap()).unwrap();
        assert_eq!(back.id, 7);
        match back.msg {
            Msg::FlowAlloc {
                name,
                qos,
                timeout_ms,
            } => {
                assert_eq!(name, "oecho");
                assert_eq!(qos, Qos::voice());
                assert_eq!(timeout_ms, Some(3));
            }
            other => panic!("wrong message {other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[0xff; 3]).is_err());
        assert!(decode(&vec![0u8; MAX_MSG + 1]).is_err());
    }
}
