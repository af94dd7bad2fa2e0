//! `ipcpd-eth`: spawned by irmd on `irm ipcp bootstrap type eth ...`.

use clap::{CommandFactory, FromArgMatches, Parser};
use ipcpd_eth::ipcp::{Ipcp, Options};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ipcpd-eth",
    about = "ethflow Ethernet IPC process (started by irmd)",
    version
)]
struct Args {
    /// IPCP name.
    #[arg(long)]
    name: String,
    /// Layer name.
    #[arg(long)]
    layer: String,
    /// Network interface to bind.
    #[arg(long)]
    dev: String,
    /// Ethertype (hex with 0x, or decimal).
    #[arg(long, default_value = "0x88b5", value_parser = irm::proto::parse_ethertype)]
    ethertype: u16,
    /// Backend: raw (AF_PACKET), xdp, or auto (xdp, else raw).
    #[arg(long, default_value = "raw")]
    backend: String,
    /// Spin up to this many microseconds for new work before sleeping (lower
    /// latency for a core's worth of CPU); 0 = always sleep.
    #[arg(long, default_value_t = 0)]
    busy_poll: u32,
    /// 802.1Q VLAN id (1..=4094): send tagged frames, take only frames tagged
    /// with it. Without it, tagged frames are ignored.
    #[arg(long, value_parser = ipcpd_eth::segment::parse_vlan)]
    vlan: Option<u16>,
    /// The fd of the control channel irmd created and passed at spawn (the
    /// IPCP never uses irmd's public socket).
    #[arg(long)]
    ctrl_fd: i32,
    /// Layer key file (32 bytes, owned by root, mode 0600): every frame is
    /// authenticated; FILE.next, when present, is accepted too. SIGHUP
    /// re-reads both (see docs/security.md, "Changing the key").
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    /// Encrypt frame payloads with the layer key as well.
    #[arg(long, requires = "key")]
    encrypt: bool,
    /// Longest liveness timeout (ms) a remote host may ask for in a flow
    /// request; longer requests are capped (docs/security.md). Default 1 hour.
    #[arg(long, default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_remote_timeout: u64,
    /// Write the manual page ipcpd-eth(8) and shell completions under DIR (a
    /// `share` directory: DIR/man/man8, DIR/bash-completion, …) and exit.
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    generate: Option<std::path::PathBuf>,
    /// Receive queues, one worker thread each (flows pinned to one queue by
    /// their endpoint id). Default: the interface's receive queue count,
    /// capped at the CPUs and 16; 1 is the single-threaded IPCP.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=irm::proto::MAX_QUEUES as i64))]
    queues: Option<u16>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // `--generate DIR` stands alone (the other options are required for a
    // run, not for writing the manual), so look for it before the struct is
    // filled in.
    let matches = Args::command().get_matches();
    if let Some(dir) = matches.get_one::<std::path::PathBuf>("generate") {
        return match irm::gen::generate(Args::command(), "8", dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ipcpd-eth: cannot write to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    // A dying application must never take the IPCP with it.
    let _ = irm::sys::ignore_sigpipe();
    irm::limits::raise_nofile();
    let ctrl = match irm::ctrl::CtrlSocket::inherited(args.ctrl_fd) {
        Ok(c) => c,
        Err(e) => {
            log::error!("--ctrl-fd {}: {e}", args.ctrl_fd);
            return ExitCode::FAILURE;
        }
    };
    // SIGINT/SIGTERM (`irm ipcp destroy`, a service stop) are read from a
    // signalfd in the event loop, which deallocates every flow (the peers
    // are told) before exiting: blocked here, before any thread starts, as
    // irmd's mask (which we inherit) already has them.
    let mut term = nix::sys::signal::SigSet::empty();
    term.add(nix::sys::signal::Signal::SIGTERM);
    term.add(nix::sys::signal::Signal::SIGINT);
    if let Err(e) = term.thread_block() {
        log::warn!("cannot block SIGTERM: {e}");
    }
    if args.key.is_some() {
        // SIGHUP re-reads the key files: block it before any thread starts,
        // so it only ever arrives through the IPCP's signal fd.
        let mut mask = nix::sys::signal::SigSet::empty();
        mask.add(nix::sys::signal::Signal::SIGHUP);
        if let Err(e) = mask.thread_block() {
            log::error!("cannot block SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
    }
    let opts = Options {
        name: args.name,
        layer: args.layer,
        dev: args.dev,
        ethertype: args.ethertype,
        backend: args.backend,
        busy_poll: std::time::Duration::from_micros(args.busy_poll as u64),
        vlan: args.vlan,
        max_remote_timeout: std::time::Duration::from_millis(args.max_remote_timeout),
        key: args.key,
        encrypt: args.encrypt,
        queues: args.queues,
    };
    match Ipcp::start(opts, ctrl) {
        Ok(mut ipcp) => {
            ipcp.run();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
