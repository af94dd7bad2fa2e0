//! The IRM control protocol: messages exchanged over Unix seqpacket sockets
//! between irmd and its clients (applications, the `irm` CLI) and between irmd
//! and the IPCPs it spawned. One datagram carries one [`Envelope`], encoded with
//! `postcard` (decision 0008); file descriptors (flow shared memory and wake-up
//! fds) travel beside it as SCM_RIGHTS.
//!
//! Messages are typed per role, so a role cannot even express another role's
//! requests: on the public socket a connection opens with a [`ClientHello`]
//! naming its role, and irmd then decodes every further message as
//! [`AppRequest`] or [`CliRequest`]; irmd answers with [`Reply`]. An IPCP speaks
//! [`IpcpToIrmd`] on the private channel irmd created when it spawned it, and
//! hears [`IrmdToIpcp`]. Every first message starts with [`PROTO_VERSION`].

use crate::error::Error;
use crate::qos::Qos;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Default control socket; `IRM_SOCKET` overrides it.
pub const DEFAULT_SOCKET: &str = "/run/ethflow/irmd.sock";
/// Group whose members may reach irmd (the socket's group).
pub const DEFAULT_GROUP: &str = "ethflow";
/// Largest control datagram we accept.
pub const MAX_MSG: usize = 64 * 1024;
/// Most fds one control message may carry.
pub const MAX_FDS: usize = 4;
/// Version of this protocol; the first field of every hello. A peer speaking
/// another version is refused with [`Error::Version`].
pub const PROTO_VERSION: u32 = 2;
/// Longest name (service name, layer, program, IPCP name) in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The control socket path for this process.
pub fn socket_path() -> String {
    std::env::var("IRM_SOCKET").unwrap_or_else(|_| DEFAULT_SOCKET.to_string())
}

/// A request id (chosen by the sender of a request, echoed in the reply; 0 for
/// unsolicited notifications) and a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<M> {
    pub id: u64,
    pub msg: M,
}

/// The first message on a connection to the public socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Must stay the first field: irmd reads it before anything else.
    pub version: u32,
    pub role: ClientRole,
}

/// Who a client of the public socket is. (IPCPs are not clients: they speak on
/// their own channel.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRole {
    /// An application; `prog` is its program name (argv[0] base name).
    App { prog: String },
    /// The `irm` command line tool.
    Cli,
}

/// The first message an IPCP sends on its channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcpHello {
    /// Must stay the first field.
    pub version: u32,
    pub name: String,
}

/// The version a first message claims, read before the rest is decoded, so a
/// peer of another version gets a clear refusal instead of a decoding error.
pub fn peek_version(buf: &[u8]) -> Option<u32> {
    postcard::take_from_bytes::<u32>(buf).ok().map(|(v, _)| v)
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
    /// Milliseconds since irmd received `counters` from the IPCP (None:
    /// never). `irm ipcp list` asks the IPCP first, so this is small unless
    /// the IPCP did not answer in time.
    pub counters_age_ms: Option<u64>,
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

/// What an IPCP is started with (`irm ipcp bootstrap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapSpec {
    pub name: String,
    pub layer: String,
    pub dev: String,
    pub ethertype: u16,
    pub backend: String,
    /// Spin this long (µs) for work before the IPCP sleeps; 0 = never spin.
    pub busy_poll_us: u32,
    /// 802.1Q VLAN id to tag frames with.
    pub vlan: Option<u16>,
    /// File holding the layer key.
    pub key: Option<String>,
    /// Encrypt every frame with the layer key.
    pub encrypt: bool,
    /// Receive queues (one worker thread each); `None`: the interface's
    /// queue count, capped at the CPUs (docs/decisions/0031).
    pub queues: Option<u16>,
}

/// Most receive queues (worker threads) an IPCP may be bootstrapped with.
pub const MAX_QUEUES: u16 = 64;

/// A name's secure-flow configuration (`irm name create`): absolute paths
/// of PEM files, read by the application's library at allocation (see
/// docs/decisions/0021-secure-flows.md). The server's side uses `scrt`,
/// `skey`, `cacrt` (then client certificates are required) and `senc`; a
/// client's side `cacrt`, `ccrt`, `ckey` and `cenc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameSecurity {
    pub scrt: Option<String>,
    pub skey: Option<String>,
    pub cacrt: Option<String>,
    pub ccrt: Option<String>,
    pub ckey: Option<String>,
    pub senc: Option<String>,
    pub cenc: Option<String>,
}

impl NameSecurity {
    /// Every path set, with its keyword.
    pub fn paths(&self) -> [(&'static str, Option<&String>); 7] {
        [
            ("scrtpath", self.scrt.as_ref()),
            ("skeypath", self.skey.as_ref()),
            ("cacrtpath", self.cacrt.as_ref()),
            ("ccrtpath", self.ccrt.as_ref()),
            ("ckeypath", self.ckey.as_ref()),
            ("sencpath", self.senc.as_ref()),
            ("cencpath", self.cenc.as_ref()),
        ]
    }

    /// Paths absolute and bounded; certificate and key come in pairs.
    pub fn validate(&self) -> Result<(), Error> {
        for (kw, p) in self.paths() {
            if let Some(p) = p {
                if !p.starts_with('/') || p.len() > 4096 || p.chars().any(|c| c.is_control()) {
                    return Err(Error::Invalid(format!("{kw} must be an absolute path")));
                }
            }
        }
        if self.scrt.is_some() != self.skey.is_some() {
            return Err(Error::Invalid("scrtpath and skeypath go together".into()));
        }
        if self.ccrt.is_some() != self.ckey.is_some() {
            return Err(Error::Invalid("ccrtpath and ckeypath go together".into()));
        }
        Ok(())
    }
}

/// Requests an application may make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AppRequest {
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
}

/// Requests the `irm` tool may make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CliRequest {
    IpcpBootstrap(BootstrapSpec),
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
    /// Set a name's secure-flow configuration (replacing any).
    NameCreate {
        name: String,
        security: NameSecurity,
    },
    /// Remove a name's secure-flow configuration.
    NameDestroy {
        name: String,
    },
    /// Names after `after` (all when None), at most [`NAME_ROWS_PER_MSG`] per reply.
    NameList {
        after: Option<String>,
    },
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
    /// Bind as [`CliRequest::BindProgram`], and have irmd start `exec args…`
    /// (as the binder's uid) when a flow arrives for the name and no process
    /// of the program runs. `exec` is the program's absolute path (the
    /// client resolves it with its own PATH); `prog` its base name.
    BindProgramAuto {
        prog: String,
        name: String,
        exec: String,
        args: Vec<String>,
    },
}

/// irmd's answers to clients (carrying the request's envelope id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Err(Error),
    /// A flow for the application; fds: `FlowFds::for_app()`.
    FlowReady {
        flow_id: u32,
        name: String,
        qos: Qos,
        max_sdu: u32,
        geometry: RingGeometry,
        /// The name's secure-flow configuration on this host, if any.
        security: Option<NameSecurity>,
    },
    IpcpRows(Vec<IpcpRow>),
    NameRows(Vec<NameRow>),
    FlowRows(Vec<FlowRow>),
}

/// irmd → IPCP, on the IPCP's private channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IrmdToIpcp {
    /// Answer to the IPCP's hello.
    Welcome(Result<(), Error>),
    /// Register / unregister a name in the IPCP's directory.
    RegName {
        name: String,
    },
    UnregName {
        name: String,
    },
    /// Allocate a flow to `name`; fds: `FlowFds::for_ipcp()`.
    FlowAlloc {
        flow_id: u32,
        name: String,
        qos: Qos,
        geometry: RingGeometry,
        timeout_ms: u64,
    },
    /// Answer to `FlowReqArrived`: accepted (fds as above) or refused.
    FlowAcceptResult {
        token: u64,
        result: Result<(u32, RingGeometry), RefuseReason>,
        timeout_ms: u64,
    },
    FlowDealloc {
        flow_id: u32,
    },
    /// Send the counters of every flow now (`FlowCounters` pages), then
    /// `Done` with this request's envelope id: `irm flow list` shows fresh
    /// numbers, not the last periodic report.
    ReportFlowCounters,
    /// Send the IPCP's own counters now (`Counters`, even when unchanged),
    /// then `Done` with this request's envelope id: `irm ipcp list` shows
    /// current numbers, not the last periodic report.
    ReportCounters,
}

/// Per-flow counters as the IPCP counts them (never read from the
/// application-writable mapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCounters {
    pub flow_id: u32,
    pub tx_sdus: u64,
    pub tx_bytes: u64,
    pub rx_sdus: u64,
    pub rx_bytes: u64,
    pub dropped: u64,
    /// Milliseconds since the last frame from the peer (None = never).
    pub last_rx_ms_ago: Option<u64>,
}

/// IPCP → irmd, on the IPCP's private channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IpcpToIrmd {
    Bootstrapped(Result<IpcpInfo, String>),
    /// Reply (by envelope id) to `FlowAlloc`: max SDU or the error.
    FlowAllocResult {
        flow_id: u32,
        result: Result<u32, Error>,
    },
    /// A remote peer asks for a flow to a name registered here.
    FlowReqArrived {
        token: u64,
        name_hash: [u8; 32],
        qos: Qos,
        max_sdu: u32,
    },
    /// A flow changed liveness state.
    FlowState {
        flow_id: u32,
        cause: DownCause,
    },
    /// The IPCP's frame counters (sent when they change, at most once a second).
    Counters(Vec<(String, u64)>),
    /// Per-flow counters (sent with the frame counters, for flows that changed).
    FlowCounters(Vec<FlowCounters>),
    /// Reply (by envelope id) to `FlowDealloc`.
    Done(Result<(), Error>),
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

/// Encode a message (an [`Envelope`] or a hello).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    let v = postcard::to_allocvec(msg)
        .map_err(|e| Error::Invalid(format!("control message cannot be encoded: {e}")))?;
    if v.len() > MAX_MSG {
        return Err(Error::Invalid(format!(
            "control message of {} bytes exceeds {MAX_MSG}",
            v.len()
        )));
    }
    Ok(v)
}

/// Rows of `irm flow list` per reply (a row encodes to well under 200 bytes).
pub const FLOW_ROWS_PER_MSG: usize = 256;
/// Rows of `irm name list` per reply. A row is a name (≤ 255 bytes) plus its
/// layers and programs; irmd also stops a page early when it nears [`MAX_MSG`].
pub const NAME_ROWS_PER_MSG: usize = 64;

/// Decode a message, refusing trailing garbage and oversize input. Never
/// panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<T, Error> {
    if buf.len() > MAX_MSG {
        return Err(Error::Invalid("control message too large".into()));
    }
    match postcard::take_from_bytes::<T>(buf) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::Invalid(format!(
            "bad control message: {} trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(Error::Invalid(format!("bad control message: {e}"))),
    }
}

/// Check a name from a client: not empty, at most [`MAX_NAME_LEN`] bytes, no
/// control characters.
/// A program to start: `prog` with a `/` is taken as a path, otherwise it is
/// looked up in `path` (a PATH list). Returns (base name, absolute path).
pub fn resolve_program(prog: &str, path: &str) -> Result<(String, String), Error> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if prog.contains('/') {
        Some(std::path::PathBuf::from(prog)).filter(|p| executable(p))
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| std::path::Path::new(d).join(prog))
            .find(|p| executable(p))
    };
    let found = found
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| Error::Name(format!("program {prog} not found (or not executable)")))?;
    let base = std::path::Path::new(prog)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((base, found.display().to_string()))
}

pub fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::Name(format!("empty {what}")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::Name(format!(
            "{what} of {} bytes is longer than {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Name(format!("{what} contains control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_round_trip() {
        let env = Envelope {
            id: 7,
            msg: AppRequest::FlowAlloc {
                name: "oecho".into(),
                qos: Qos::voice(),
                timeout_ms: Some(3),
            },
        };
        let back: Envelope<AppRequest> = decode(&encode(&env).unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn hello_version_is_read_first() {
        let h = ClientHello {
            version: 77,
            role: ClientRole::App { prog: "x".into() },
        };
        assert_eq!(peek_version(&encode(&h).unwrap()), Some(77));
        let h = IpcpHello {
            version: PROTO_VERSION,
            name: "eth-a".into(),
        };
        assert_eq!(peek_version(&encode(&h).unwrap()), Some(PROTO_VERSION));
        assert_eq!(peek_version(&[]), None);
    }

    #[test]
    fn trailing_bytes_refused() {
        let mut b = encode(&Envelope {
            id: 1,
            msg: Reply::Ok,
        })
        .unwrap();
        b.push(0);
        assert!(decode::<Envelope<Reply>>(&b)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
    }

    #[test]
    fn names_checked() {
        assert!(check_name("name", "oecho").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", &"n".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name("name", &"n".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name("name", "a\nb").is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9.\\-]{0,40}"
    }

    fn qos() -> impl Strategy<Value = Qos> {
        (any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(d, t, o)| Qos {
            delay: d,
            timeout: t,
            in_order: o,
            ..Qos::raw()
        })
    }

    fn geometry() -> impl Strategy<Value = RingGeometry> {
        (any::<u32>(), any::<u32>())
            .prop_map(|(slots, slot_size)| RingGeometry { slots, slot_size })
    }

    fn app_request() -> impl Strategy<Value = AppRequest> {
        prop_oneof![
            (name(), qos(), any::<Option<u64>>()).prop_map(|(name, qos, timeout_ms)| {
                AppRequest::FlowAlloc {
                    name,
                    qos,
                    timeout_ms,
                }
            }),
            any::<Option<u64>>().prop_map(|timeout_ms| AppRequest::FlowAccept { timeout_ms }),
            any::<u32>().prop_map(|flow_id| AppRequest::FlowDealloc { flow_id }),
        ]
    }

    fn cli_request() -> impl Strategy<Value = CliRequest> {
        prop_oneof![
            (
                (name(), name(), name(), any::<u16>(), name(), any::<u32>()),
                (
                    any::<Option<u16>>(),
                    proptest::option::of(name()),
                    any::<bool>(),
                    any::<Option<u16>>()
                )
            )
                .prop_map(
                    |(
                        (name, layer, dev, ethertype, backend, busy_poll_us),
                        (vlan, key, encrypt, queues),
                    )| {
                        CliRequest::IpcpBootstrap(BootstrapSpec {
                            name,
                            layer,
                            dev,
                            ethertype,
                            backend,
                            busy_poll_us,
                            vlan,
                            key,
                            encrypt,
                            queues,
                        })
                    }
                ),
            Just(CliRequest::IpcpList),
            name().prop_map(|name| CliRequest::IpcpDestroy { name }),
            (name(), name()).prop_map(|(name, layer)| CliRequest::NameRegister { name, layer }),
            (name(), name()).prop_map(|(name, layer)| CliRequest::NameUnregister { name, layer }),
            proptest::option::of(name()).prop_map(|after| CliRequest::NameList { after }),
            (name(), name()).prop_map(|(prog, name)| CliRequest::BindProgram { prog, name }),
            (name(), name()).prop_map(|(prog, name)| CliRequest::UnbindProgram { prog, name }),
            any::<Option<u32>>().prop_map(|after| CliRequest::FlowList { after }),
        ]
    }

    fn irmd_to_ipcp() -> impl Strategy<Value = IrmdToIpcp> {
        prop_oneof![
            Just(IrmdToIpcp::Welcome(Ok(()))),
            name().prop_map(|n| IrmdToIpcp::Welcome(Err(Error::Ipcp(n)))),
            name().prop_map(|name| IrmdToIpcp::RegName { name }),
            name().prop_map(|name| IrmdToIpcp::UnregName { name }),
            (any::<u32>(), name(), qos(), geometry(), any::<u64>()).prop_map(
                |(flow_id, name, qos, geometry, timeout_ms)| IrmdToIpcp::FlowAlloc {
                    flow_id,
                    name,
                    qos,
                    geometry,
                    timeout_ms
                }
            ),
            (any::<u64>(), any::<u32>(), geometry(), any::<u64>()).prop_map(
                |(token, f, g, timeout_ms)| IrmdToIpcp::FlowAcceptResult {
                    token,
                    result: Ok((f, g)),
                    timeout_ms
                }
            ),
            any::<u64>().prop_map(|token| IrmdToIpcp::FlowAcceptResult {
                token,
                result: Err(RefuseReason::NoAcceptingProcess),
                timeout_ms: 0
            }),
            any::<u32>().prop_map(|flow_id| IrmdToIpcp::FlowDealloc { flow_id }),
        ]
    }

    fn ipcp_to_irmd() -> impl Strategy<Value = IpcpToIrmd> {
        prop_oneof![
            (any::<[u8; 6]>(), any::<u32>(), any::<u32>(), name()).prop_map(
                |(mac, mtu, max_sdu, backend)| IpcpToIrmd::Bootstrapped(Ok(IpcpInfo {
                    mac,
                    mtu,
                    max_sdu,
                    backend
                }))
            ),
            name().prop_map(|e| IpcpToIrmd::Bootstrapped(Err(e))),
            (any::<u32>(), any::<u32>()).prop_map(|(flow_id, m)| IpcpToIrmd::FlowAllocResult {
                flow_id,
                result: Ok(m)
            }),
            (any::<u64>(), any::<[u8; 32]>(), qos(), any::<u32>()).prop_map(
                |(token, name_hash, qos, max_sdu)| IpcpToIrmd::FlowReqArrived {
                    token,
                    name_hash,
                    qos,
                    max_sdu
                }
            ),
            any::<u32>().prop_map(|flow_id| IpcpToIrmd::FlowState {
                flow_id,
                cause: DownCause::Unresponsive
            }),
            proptest::collection::vec((name(), any::<u64>()), 0..8).prop_map(IpcpToIrmd::Counters),
            proptest::collection::vec((any::<u32>(), any::<u64>(), any::<Option<u64>>()), 0..8)
                .prop_map(|v| IpcpToIrmd::FlowCounters(
                    v.into_iter()
                        .map(|(flow_id, n, last)| FlowCounters {
                            flow_id,
                            tx_sdus: n,
                            rx_bytes: n / 3,
                            last_rx_ms_ago: last,
                            ..Default::default()
                        })
                        .collect()
                )),
            Just(IpcpToIrmd::Done(Ok(()))),
        ]
    }

    fn round_trip<M>(id: u64, msg: M) -> Result<(), TestCaseError>
    where
        M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let env = Envelope { id, msg };
        let back: Envelope<M> = decode(&encode(&env).unwrap()).unwrap();
        prop_assert_eq!(back, env);
        Ok(())
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ClientHello>(&bytes);
            let _ = decode::<IpcpHello>(&bytes);
            let _ = decode::<Envelope<AppRequest>>(&bytes);
            let _ = decode::<Envelope<CliRequest>>(&bytes);
            let _ = decode::<Envelope<Reply>>(&bytes);
            let _ = decode::<Envelope<IrmdToIpcp>>(&bytes);
            let _ = decode::<Envelope<IpcpToIrmd>>(&bytes);
            let _ = peek_version(&bytes);
        }

        #[test]
        fn app_requests_round_trip(id in any::<u64>(), m in app_request()) {
            round_trip(id, m)?;
        }

        #[test]
        fn cli_requests_round_trip(id in any::<u64>(), m in cli_request()) {
            round_trip(id, m)?;
        }

        #[test]
        fn irmd_to_ipcp_round_trip(id in any::<u64>(), m in irmd_to_ipcp()) {
            round_trip(id, m)?;
        }

        #[test]
        fn ipcp_to_irmd_round_trip(id in any::<u64>(), m in ipcp_to_irmd()) {
            round_trip(id, m)?;
        }

        /// Valid messages cut short or with a byte flipped decode to an error
        /// or some message, never a panic.
        #[test]
        fn mangled_messages_never_panic(m in cli_request(), cut in any::<usize>(), flip in any::<(usize, u8)>()) {
            let mut b = encode(&Envelope { id: 1, msg: m }).unwrap();
            if !b.is_empty() {
                let i = flip.0 % b.len();
                b[i] ^= flip.1;
            }
            let _ = decode::<Envelope<CliRequest>>(&b);
            b.truncate(cut % (b.len() + 1));
            let _ = decode::<Envelope<CliRequest>>(&b);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<Envelope<AppRequest>>(&[0xff; 3]).is_err());
        assert!(decode::<Envelope<AppRequest>>(&vec![0u8; MAX_MSG + 1]).is_err());
    }
}
