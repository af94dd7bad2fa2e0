//! `irmd`: the IPC Resource Manager daemon.
//!
//! One thread runs everything: [`shell::Shell`] waits on the listening socket,
//! every client connection and every IPCP channel, and feeds what arrives to the
//! sans-IO [`registry::Registry`]. A closed connection is a dead process: its
//! flows are released at once, no polling.

mod access;
mod registry;
mod shell;
mod spawn;

use clap::Parser;
use irm::proto::{socket_path, DEFAULT_GROUP};
use log::info;
use registry::{Policy, Registry};

#[derive(Parser, Debug)]
#[command(name = "irmd", about = "ethflow IPC Resource Manager daemon", version)]
struct Args {
    /// Default flow liveness timeout in milliseconds (a flow's QoS may set its own).
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    flow_timeout: u64,
    /// Slots per shared-memory ring of a flow (power of two). Pages are touched
    /// only as SDUs pass, so an idle flow costs one page whatever the size; a
    /// deep receive ring rides out a reader that is briefly descheduled (on a
    /// 2-core machine 512 slots lost 1.5% of a 64 B flood, 4096 lost 0.02%).
    #[arg(long, default_value_t = 4096)]
    ring_slots: u32,
    /// Group whose members may use irmd (the control socket's group; mode 0660).
    /// If the group does not exist, only root can connect (with a warning).
    #[arg(long, default_value = DEFAULT_GROUP)]
    socket_group: String,
    /// Longest liveness timeout (ms) a remote peer may ask of this host's IPCPs;
    /// passed to ipcpd-eth.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_remote_timeout: Option<u64>,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if !args.ring_slots.is_power_of_two() || !(2..=65536).contains(&args.ring_slots) {
        eprintln!(
            "irmd: --ring-slots must be a power of two between 2 and 65536, got {}",
            args.ring_slots
        );
        std::process::exit(2);
    }
    // A dying client must never take the daemon with it.
    let _ = irm::sys::ignore_sigpipe();
    let nofile = irm::limits::raise_nofile();
    let path = socket_path();
    let listener = match access::listen(&path, &args.socket_group) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("irmd: cannot listen on {path}: {e}");
            std::process::exit(1);
        }
    };
    info!(
        "irmd listening on {path} (default flow timeout {} ms).",
        args.flow_timeout
    );
    install_exit_handler(path.clone());
    let policy = Policy {
        default_timeout_ms: args.flow_timeout,
        ring_slots: args.ring_slots,
        ..Policy::default()
    }
    .fit_fds(nofile);
    info!(
        "limits: {} connections, {} flows in all (fd limit {nofile}).",
        policy.max_conns, policy.max_flows
    );
    let mut shell =
        match shell::Shell::new(Registry::new(policy), listener, args.max_remote_timeout) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("irmd: {e}");
                std::process::exit(1);
            }
        };
    shell.run();
}

/// Remove the socket file on SIGINT/SIGTERM so the next irmd starts clean.
fn install_exit_handler(path: String) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Block in every thread (threads spawned later inherit the mask) and wait in one.
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            info!("irmd exiting on {sig:?}.");
            let _ = std::fs::remove_file(&path);
            std::process::exit(0);
        }
    });
}
