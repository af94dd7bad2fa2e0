//! `forge`: sends forged frames on one interface of a test rig, or plays an
//! impostor for a name. Run inside a rig's namespace, on an interface the rig
//! made; every run is bounded in count and time.
//!
//! ```text
//! forge --dev IF --dst MAC [--src MAC] [--ethertype 0x88b5] [--vlan ID]
//!       --type data|name-query|name-reply|flow-req|flow-reply|dealloc|
//!              dealloc-ack|keep-alive|unknown-eid|random|garbage
//!       [--dst-eid N|random] [--src-eid N|random] [--name NAME | --name-hash HEX]
//!       [--instance N|random] [--receiver-instance N] [--timeout-ms N]
//!       [--code ok|no-such-name|no-accepting-process|resource-limit]
//!       [--payload HEX | --random-payload LEN]
//!       --count N [--rate PPS] [--duration-s S]
//! forge --dev IF --impostor NAME --duration-s S [--ethertype 0x88b5]
//! ```
//!
//! Prints one result line: `sent=N elapsed_ms=T pps=P busy=B`, or for the
//! impostor one line per answer and `impostor name_queries=N flow_reqs=M data=D`.
//! Exit 2 on a refused request, 1 on a socket error.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ethflow_tests::forge::{
    self, frame_type_by_name, BodySpec, Bounds, Bytes, EidSpec, EthSpec, ForgeError, Kind,
};
use ipcpd_eth::wire::{ReplyCode, DEFAULT_ETHERTYPE};

#[derive(Parser)]
#[command(name = "forge", about = "send forged ethflow frames (test rigs only)")]
struct Args {
    /// Interface to send on.
    #[arg(long)]
    dev: String,
    /// Destination MAC.
    #[arg(long, default_value = "ff:ff:ff:ff:ff:ff")]
    dst: String,
    /// Source MAC (default: the interface's own).
    #[arg(long)]
    src: Option<String>,
    /// Ethertype, any 16-bit value (decimal or 0x hex).
    #[arg(long, default_value_t = format!("{DEFAULT_ETHERTYPE:#06x}"))]
    ethertype: String,
    /// Add an 802.1Q tag with this VLAN id.
    #[arg(long)]
    vlan: Option<u16>,
    /// Frame type, `random` (well-formed header, random everything) or
    /// `garbage` (random bytes after the Ethernet header).
    #[arg(long = "type", default_value = "data")]
    frame_type: String,
    #[arg(long, default_value = "random")]
    dst_eid: String,
    #[arg(long, default_value = "random")]
    src_eid: String,
    /// Name whose hash goes into NAME_QUERY/NAME_REPLY/FLOW_REQ.
    #[arg(long)]
    name: Option<String>,
    /// The 32-byte name hash in hex (instead of --name).
    #[arg(long)]
    name_hash: Option<String>,
    /// Sender instance nonce, or `random` (one per frame).
    #[arg(long, default_value = "random")]
    instance: String,
    #[arg(long, default_value = "0")]
    receiver_instance: String,
    /// FLOW_REQ liveness timeout in ms (u64).
    #[arg(long, default_value = "120000")]
    timeout_ms: String,
    #[arg(long, default_value_t = 1480)]
    max_sdu: u32,
    #[arg(long, default_value = "ok")]
    code: String,
    /// Payload bytes in hex (DATA, garbage).
    #[arg(long)]
    payload: Option<String>,
    /// Random payload of this many bytes, new per frame.
    #[arg(long, default_value_t = 26)]
    random_payload: usize,
    /// Frames to send (required, at most 100 000 000).
    #[arg(long)]
    count: Option<u64>,
    /// Frames per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this many seconds even if frames remain (at most 600).
    #[arg(long, default_value_t = 60.0)]
    duration_s: f64,
    /// Seed for the random parts (reproducible runs).
    #[arg(long)]
    seed: Option<u64>,
    /// Play the holder of this name instead of sending.
    #[arg(long)]
    impostor: Option<String>,
}

fn eid(s: &str) -> Result<EidSpec, ForgeError> {
    if s == "random" {
        Ok(EidSpec::Random)
    } else {
        forge::parse_u64(s).map(EidSpec::Fixed)
    }
}

fn code(s: &str) -> Result<ReplyCode, ForgeError> {
    Ok(match s {
        "ok" => ReplyCode::Ok,
        "no-such-name" => ReplyCode::NoSuchName,
        "no-accepting-process" => ReplyCode::NoAcceptingProcess,
        "resource-limit" => ReplyCode::ResourceLimit,
        other => return Err(ForgeError::BadNumber(other.into())),
    })
}

fn duration(s: f64) -> Result<Duration, ForgeError> {
    Duration::try_from_secs_f64(s).map_err(|_| ForgeError::Unbounded("duration must be finite"))
}

fn run(args: Args) -> Result<(), ForgeError> {
    let ethertype = u16::try_from(forge::parse_u64(&args.ethertype)?)
        .map_err(|_| ForgeError::BadNumber(args.ethertype.clone()))?;
    if let Some(name) = &args.impostor {
        let stats = forge::impostor(
            &args.dev,
            ethertype,
            irm::proto::name_hash(name),
            duration(args.duration_s)?,
            |event| println!("{event}"),
        )?;
        println!("{stats}");
        return Ok(());
    }
    let count = args
        .count
        .ok_or(ForgeError::Unbounded("--count is required"))?;
    let src = match &args.src {
        Some(s) => forge::parse_mac(s)?,
        None => forge::interface_mac(&args.dev)?,
    };
    let eth = EthSpec {
        dst: forge::parse_mac(&args.dst)?,
        src,
        ethertype,
        vlan: args.vlan,
    };
    let kind = match args.frame_type.as_str() {
        "random" => Kind::RandomEthflow,
        "garbage" => Kind::Garbage,
        t => Kind::Ethflow(frame_type_by_name(t).ok_or(ForgeError::BadNumber(t.into()))?),
    };
    let name_hash = match (&args.name, &args.name_hash) {
        (Some(n), _) => irm::proto::name_hash(n),
        (None, Some(h)) => forge::parse_hex(h)?
            .try_into()
            .map_err(|_| ForgeError::BadHex(h.clone()))?,
        (None, None) => [0; 32],
    };
    let body = BodySpec {
        kind,
        dst_eid: eid(&args.dst_eid)?,
        src_eid: eid(&args.src_eid)?,
        name_hash,
        instance: match args.instance.as_str() {
            "random" => None,
            s => Some(forge::parse_u64(s)?),
        },
        receiver_instance: forge::parse_u64(&args.receiver_instance)?,
        timeout_ms: forge::parse_u64(&args.timeout_ms)?,
        max_sdu: args.max_sdu,
        code: code(&args.code)?,
        payload: match &args.payload {
            Some(h) => Bytes::Given(forge::parse_hex(h)?),
            None => Bytes::Random(args.random_payload),
        },
    };
    let bounds = Bounds {
        count,
        rate: args.rate,
        duration: duration(args.duration_s)?,
    };
    let stats = forge::send(&args.dev, &eth, &body, &bounds, args.seed)?;
    println!("{stats}");
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ForgeError::Io(e)) => {
            eprintln!("forge: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("forge: {e}");
            ExitCode::from(2)
        }
    }
}
