//! `irmd`: the IPC Resource Manager daemon.
//!
//! One thread runs everything: [`shell::Shell`] waits on the listening socket,
//! every client connection and every IPCP channel, and feeds what arrives to the
//! sans-IO [`registry::Registry`]. A closed connection is a dead process: its
//! flows are released at once, no polling.

mod access;
mod config;
mod logging;
mod metrics_http;
mod registry;
mod shell;
mod spawn;

use clap::Parser;
use irm::proto::{CliRequest, DEFAULT_GROUP, DEFAULT_SOCKET};
use log::info;
use registry::{Policy, Registry};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "irmd", about = "ethflow IPC Resource Manager daemon", version)]
struct Args {
    /// Configuration file (TOML): daemon settings, IPCPs to bootstrap, names
    /// to register, programs to bind. Default: /etc/ethflow/irmd.toml if it
    /// exists. Command-line settings override the file's [irmd] section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration file, print every problem, and exit
    /// (status 0 if it is good, 1 if not).
    #[arg(long)]
    check_config: bool,
    /// Write irmd's manual page and shell completions under DIR (a `share`
    /// directory: DIR/man/man8, DIR/bash-completion, …) and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate: Option<PathBuf>,
    /// Log to syslog (/dev/log, facility daemon) instead of stderr. Under
    /// systemd the log goes to the journal, with levels, without this flag.
    #[arg(long)]
    syslog: bool,
    /// Default flow liveness timeout in milliseconds (a flow's QoS may set its
    /// own) [default: 120000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    flow_timeout: Option<u64>,
    /// Slots per shared-memory ring of a flow (power of two) [default: 4096].
    /// Pages are touched only as SDUs pass, so an idle flow costs one page
    /// whatever the size; a deep receive ring rides out a reader that is
    /// briefly descheduled (on a 2-core machine 512 slots lost 1.5% of a 64 B
    /// flood, 4096 lost 0.02%).
    #[arg(long)]
    ring_slots: Option<u32>,
    /// Group whose members may use irmd (the control socket's group; mode 0660)
    /// [default: ethflow]. If the group does not exist, only root can connect
    /// (with a warning).
    #[arg(long)]
    socket_group: Option<String>,
    /// Longest liveness timeout (ms) a remote peer may ask of this host's IPCPs;
    /// passed to ipcpd-eth.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_remote_timeout: Option<u64>,
    /// Serve Prometheus metrics (ethflow_*) at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9464. Off unless given (here or as [irmd] metrics).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

/// Read and check the configuration: `Ok(None)` when there is none.
fn load_config(args: &Args) -> Result<Option<(String, config::Config)>, ()> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None if std::path::Path::new(config::DEFAULT_PATH).exists() => {
            PathBuf::from(config::DEFAULT_PATH)
        }
        None => return Ok(None),
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        eprintln!("irmd: cannot read configuration {shown}: {e}");
    })?;
    match config::parse(&shown, &text) {
        Ok(c) => Ok(Some((shown, c))),
        Err(errs) => {
            for e in &errs {
                eprintln!("irmd: {e}");
            }
            eprintln!("irmd: {} problem(s) in {shown}; not starting.", errs.len());
            Err(())
        }
    }
}

/// The configuration's entries as CLI requests, in order, each labelled.
/// The configuration as requests, each with the uid it is made as: root,
/// or the `user` of the name's `[[bind]]` (who then owns the name).
fn config_requests(c: &config::Config) -> Result<Vec<(String, CliRequest, u32)>, String> {
    let mut owners = std::collections::BTreeMap::<&str, (&str, u32)>::new();
    for b in &c.binds {
        let Some(user) = &b.user else { continue };
        let uid = match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => u.uid.as_raw(),
            Ok(None) => return Err(format!("[[bind]] of {}: no user {user}", b.name)),
            Err(e) => return Err(format!("[[bind]] of {}: user {user}: {e}", b.name)),
        };
        if let Some((other, _)) = owners.insert(&b.name, (user, uid)) {
            if other != user {
                return Err(format!(
                    "[[bind]] of {}: users {other} and {user} both claim the name",
                    b.name
                ));
            }
        }
    }
    let uid_of = |name: &str| owners.get(name).map_or(0, |(_, uid)| *uid);
    let mut out = Vec::new();
    for s in &c.ipcps {
        out.push((
            format!("bootstrap IPCP {} (layer {} on {})", s.name, s.layer, s.dev),
            CliRequest::IpcpBootstrap(s.clone()),
            0,
        ));
    }
    for r in &c.registers {
        out.push((
            format!("register {} in layer {}", r.name, r.layer),
            CliRequest::NameRegister {
                name: r.name.clone(),
                layer: r.layer.clone(),
            },
            uid_of(&r.name),
        ));
    }
    for (name, security) in &c.names {
        out.push((
            format!("secure-flow configuration of {name}"),
            CliRequest::NameCreate {
                name: name.clone(),
                security: security.clone(),
            },
            uid_of(name),
        ));
    }
    for b in &c.binds {
        let what = format!("bind program {} to {}", b.program, b.name);
        let req = match &b.auto {
            // irmd's own PATH; a path in the file is taken as it is.
            Some(args) => match irm::proto::resolve_program(
                &b.program,
                &std::env::var("PATH").unwrap_or_default(),
            ) {
                Ok((prog, exec)) => CliRequest::BindProgramAuto {
                    prog,
                    name: b.name.clone(),
                    exec,
                    args: args.clone(),
                },
                // Refused through the registry like any other bad entry.
                Err(_) => CliRequest::BindProgramAuto {
                    prog: b.program.clone(),
                    name: b.name.clone(),
                    exec: format!("{} (not found in PATH)", b.program),
                    args: args.clone(),
                },
            },
            None => CliRequest::BindProgram {
                prog: b.program.clone(),
                name: b.name.clone(),
            },
        };
        out.push((what, req, uid_of(&b.name)));
    }
    Ok(out)
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.generate {
        use clap::CommandFactory;
        if let Err(e) = irm::gen::generate(Args::command(), "8", dir) {
            eprintln!("irmd: cannot write to {}: {e}", dir.display());
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    logging::init(logging::Sink::choose(args.syslog));
    let Ok(cfg) = load_config(&args) else {
        std::process::exit(1);
    };
    // Users named in the file must exist (checked before anything starts).
    let requests = match cfg.as_ref().map(|(f, c)| (f, config_requests(c))) {
        Some((file, Err(e))) => {
            eprintln!("irmd: configuration {file}: {e}");
            std::process::exit(1);
        }
        Some((_, Ok(r))) => r,
        None => Vec::new(),
    };
    if args.check_config {
        match &cfg {
            Some((file, c)) => println!(
                "{file}: configuration is valid ({} IPCPs, {} registrations, {} bindings).",
                c.ipcps.len(),
                c.registers.len(),
                c.binds.len()
            ),
            None => println!(
                "no configuration file ({} does not exist); built-in defaults.",
                config::DEFAULT_PATH
            ),
        }
        std::process::exit(0);
    }
    let daemon = cfg
        .as_ref()
        .map(|(_, c)| c.irmd.clone())
        .unwrap_or_default();
    let flow_timeout = args
        .flow_timeout
        .or(daemon.flow_timeout_ms)
        .unwrap_or(120_000);
    let ring_slots = args.ring_slots.or(daemon.ring_slots).unwrap_or(4096);
    let socket_group = args
        .socket_group
        .clone()
        .or(daemon.socket_group)
        .unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let max_remote_timeout = args.max_remote_timeout.or(daemon.max_remote_timeout_ms);
    if !ring_slots.is_power_of_two() || !(2..=65536).contains(&ring_slots) {
        eprintln!(
            "irmd: --ring-slots must be a power of two between 2 and 65536, got {ring_slots}"
        );
        std::process::exit(2);
    }
    // A dying client must never take the daemon with it.
    let _ = irm::sys::ignore_sigpipe();
    let nofile = irm::limits::raise_nofile();
    // IRM_SOCKET (as for every program) over the file's socket over the default.
    let path = std::env::var("IRM_SOCKET")
        .ok()
        .or(daemon.socket)
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    // Programs irmd starts on demand find it here (set before any thread).
    std::env::set_var("IRM_SOCKET", &path);
    let listener = match access::listen(&path, &socket_group) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("irmd: cannot listen on {path}: {e}");
            std::process::exit(1);
        }
    };
    info!(
        "irmd listening on {path} (default flow timeout {} ms).",
        flow_timeout
    );
    // SIGINT/SIGTERM are blocked here and read from a signalfd in the event
    // loop: a clean shutdown (see `Shell::run`), never a handler mid-state.
    let stop_signals = {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        let _ = set.thread_block();
        set
    };
    let policy = Policy {
        default_timeout_ms: flow_timeout,
        ring_slots,
        ..Policy::default()
    }
    .fit_fds(nofile);
    info!(
        "limits: {} connections, {} flows in all (fd limit {nofile}).",
        policy.max_conns, policy.max_flows
    );
    let mut shell = match shell::Shell::new(Registry::new(policy), listener, max_remote_timeout)
        .and_then(|mut s| s.watch_signals(&stop_signals).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("irmd: {e}");
            std::process::exit(1);
        }
    };
    if let Some(addr) = args.metrics.or(daemon.metrics) {
        match std::net::TcpListener::bind(addr).and_then(|l| shell.serve_metrics(l)) {
            Ok(()) => info!("Metrics at http://{addr}/metrics."),
            Err(e) => {
                eprintln!("irmd: cannot serve metrics on {addr}: {e}");
                let _ = std::fs::remove_file(&path);
                std::process::exit(1);
            }
        }
    }
    if let Some((file, _)) = &cfg {
        if let Err(e) = shell.apply(requests) {
            // (Also when a stop signal came while applying.)
            eprintln!("irmd: configuration {file}: {e}; not starting half-configured.");
            let _ = std::fs::remove_file(&path);
            std::process::exit(1);
        }
        info!("Configuration {file} applied.");
    }
    // Ready only now: under systemd (Type=notify) units ordered after irmd
    // find every configured IPCP, name and binding in place.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    shell.run();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&path);
    info!("irmd stopped.");
}
