//! `allocbench`: how fast flows are allocated, and what an open flow costs.
//!
//! * `allocbench --listen` accepts flows and holds them until it is stopped.
//! * `allocbench -n NAME --mode seq -d S`: one allocation after another for S
//!   seconds: flows/s and the latency of each allocation.
//! * `allocbench -n NAME --mode conc --threads 8 -d S`: the same from 8 threads.
//! * `allocbench -n NAME --mode hold --count 10000 --pid ipcp=PID ...`: open
//!   that many flows, let them idle, and report the resident memory (VmRSS)
//!   each listed process and this one gained per open flow.
//!
//! Flows are kept open until the measurement is over, so the rate is that of
//! allocation alone; then they are deallocated one by one from the same
//! threads (timed too). Not by exiting with thousands of flows open: irmd
//! releases a dead process's flows while holding its registry lock, and with
//! thousands of them that stalls it (see docs/benchmarks.md).

use clap::{Parser, ValueEnum};
use ethflow_tools::{describe, parse_qos, JSON_VERSION};
use irm::{Flow, Qos};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound for one allocation.
const ALLOC_WAIT: Duration = Duration::from_secs(5);
/// A run stops after this many failed allocations in a row.
const MAX_FAILURES_IN_A_ROW: usize = 20;
/// How long the flows of a run may take to deallocate.
const RELEASE_WAIT: Duration = Duration::from_secs(30);
/// File descriptors an open flow holds in an application (three wake-up pipe ends).
const FDS_PER_FLOW: u64 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "allocbench",
    about = "ethflow flow allocation rate, latency and memory per flow",
    version,
    after_help = ethflow_tools::EXIT_STATUS_HELP
)]
struct Args {
    /// Run as server: accept flows and hold them.
    #[arg(short, long)]
    listen: bool,
    /// Name of the allocbench server.
    #[arg(short, long, default_value = "allocbench")]
    name: String,
    #[arg(short, long, value_enum, default_value_t = Mode::Seq)]
    mode: Mode,
    /// Allocating threads (conc and hold modes; seq uses one).
    #[arg(short, long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// How long seq and conc allocate, in seconds; the bound for hold.
    #[arg(short, long, default_value_t = 3.0)]
    duration: f64,
    /// Most flows to open (seq, conc), or exactly how many (hold).
    #[arg(short, long, default_value_t = 10_000)]
    count: u64,
    /// hold: a process to measure, as LABEL=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    /// hold: how long the flows idle before memory is read, in ms.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// QoS cube of the flows: raw, best, video, voice, data, raw_safe,
    /// raw_crypt (raw_crypt fails unless the flows are secure).
    #[arg(short = 'q', long = "qos", default_value = "raw", value_parser = parse_qos)]
    qos: Qos,
    /// Print one JSON object instead of text.
    #[arg(short, long)]
    json: bool,
    /// Write the manual page and shell completions under DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Seq,
    Conc,
    Hold,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (label, pid) = s.split_once('=').ok_or("expected LABEL=PID")?;
    if label.is_empty() {
        return Err("empty label".into());
    }
    Ok((
        label.to_string(),
        pid.parse().map_err(|e| format!("bad pid `{pid}`: {e}"))?,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate {
        return ethflow_tools::generate(<Args as clap::CommandFactory>::command(), dir);
    }
    let fd_limit = irm::limits::raise_nofile();
    let r = if args.listen {
        server()
    } else {
        client(&args, fd_limit)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allocbench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

fn server() -> Result<(), String> {
    println!("allocbench server listening.");
    let held: Arc<Mutex<Vec<Flow>>> = Arc::default();
    // Several accepts wait at once, so a burst of requests is matched at once.
    let acceptors: Vec<_> = (0..4)
        .map(|_| {
            let held = held.clone();
            std::thread::spawn(move || -> String {
                loop {
                    match Flow::accept(None) {
                        Ok(f) => held.lock().unwrap_or_else(|p| p.into_inner()).push(f),
                        Err(e) => return format!("accept failed: {}", describe(&e)),
                    }
                }
            })
        })
        .collect();
    // Flows the client gave up are released now and then, so memory tracks open flows.
    let janitor = {
        let held = held.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let gone: Vec<Flow> = {
                let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
                let (gone, live) = std::mem::take(&mut *h)
                    .into_iter()
                    .partition(|f: &Flow| f.state() != irm::proto::FlowState::Allocated);
                *h = live;
                gone
            };
            drop(gone);
        })
    };
    drop(janitor);
    for a in acceptors {
        if let Ok(e) = a.join() {
            return Err(e);
        }
    }
    Err("acceptors ended".into())
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

#[derive(Serialize, Debug)]
struct RateOutcome {
    version: u32,
    kind: &'static str,
    mode: Mode,
    threads: u64,
    flows: u64,
    failures: u64,
    seconds: f64,
    alloc_per_s: f64,
    latency_min_ms: f64,
    latency_median_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    dealloc_per_s: f64,
    /// The first failed allocation's error, if any failed.
    first_error: Option<String>,
}

#[derive(Serialize, Debug, Clone, Copy, Default)]
struct Rss {
    before_kib: u64,
    after_kib: u64,
    per_flow_kib: f64,
}

#[derive(Serialize, Debug)]
struct HoldOutcome {
    version: u32,
    kind: &'static str,
    mode: Mode,
    threads: u64,
    flows: u64,
    failures: u64,
    seconds: f64,
    alloc_per_s: f64,
    dealloc_per_s: f64,
    /// Resident memory per process; `app_client` is this process.
    rss: BTreeMap<String, Rss>,
}

/// What the allocating threads collect.
#[derive(Default)]
struct Collected {
    flows: Vec<Flow>,
    latencies: Vec<Duration>,
    failures: u64,
    first_error: Option<String>,
}

/// Allocate from `threads` threads until `deadline` or until `max` flows are
/// open. Flows stay open (returned) so the caller decides when they go.
fn allocate(name: &str, qos: Qos, threads: u64, deadline: Instant, max: u64) -> Collected {
    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (name, opened, stop) = (name.to_string(), opened.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = Collected::default();
                let mut failed_in_a_row = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // Claim a slot first, so `max` holds exactly across threads.
                    if opened.fetch_add(1, Ordering::Relaxed) as u64 >= max {
                        break;
                    }
                    let t0 = Instant::now();
                    match Flow::alloc(&name, &qos, Some(ALLOC_WAIT)) {
                        Ok(f) => {
                            c.latencies.push(t0.elapsed());
                            c.flows.push(f);
                            failed_in_a_row = 0;
                        }
                        Err(e) => {
                            opened.fetch_sub(1, Ordering::Relaxed);
                            c.failures += 1;
                            c.first_error.get_or_insert_with(|| describe(&e));
                            failed_in_a_row += 1;
                            if failed_in_a_row >= MAX_FAILURES_IN_A_ROW {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                c
            })
        })
        .collect();
    let mut all = Collected::default();
    for w in workers {
        if let Ok(c) = w.join() {
            all.flows.extend(c.flows);
            all.latencies.extend(c.latencies);
            all.failures += c.failures;
            if all.first_error.is_none() {
                all.first_error = c.first_error;
            }
        }
    }
    all
}

/// Deallocate every flow, from `threads` threads, for at most `RELEASE_WAIT`;
/// returns the flows deallocated per second. Flows still open then are left
/// to irmd's clean-up when we exit (a stalled irmd must not stall the run).
fn release(flows: Vec<Flow>, threads: u64) -> f64 {
    if flows.is_empty() {
        return 0.0;
    }
    let start = Instant::now();
    let deadline = start + RELEASE_WAIT;
    let released = Arc::new(AtomicUsize::new(0));
    let mut chunks: Vec<Vec<Flow>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, f) in flows.into_iter().enumerate() {
        chunks[i % threads as usize].push(f);
    }
    let workers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let released = released.clone();
            std::thread::spawn(move || {
                let mut chunk = chunk.into_iter();
                for f in chunk.by_ref() {
                    if f.dealloc().is_ok() {
                        released.fetch_add(1, Ordering::Relaxed);
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                // Not deallocated one by one: released when the process exits.
                chunk.for_each(std::mem::forget);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    released.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The `q`-quantile (0..=1) of sorted samples, in ms; nearest rank.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn client(args: &Args, fd_limit: u64) -> Result<(), String> {
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err(format!(
            "duration must be in (0, 3600] seconds, got {}",
            args.duration
        ));
    }
    // Keep room for the program's own fds.
    let fd_room = fd_limit.saturating_sub(64) / FDS_PER_FLOW;
    let max = args.count.min(fd_room);
    if args.mode == Mode::Hold && max < args.count {
        return Err(format!(
            "{} flows need {} fds; the limit is {fd_limit}",
            args.count,
            args.count * FDS_PER_FLOW
        ));
    }
    match args.mode {
        Mode::Seq | Mode::Conc => rate(args, max),
        Mode::Hold => hold(args),
    }
}

fn rate(args: &Args, max: u64) -> Result<(), String> {
    let threads = if args.mode == Mode::Seq {
        1
    } else {
        args.threads
    };
    let start = Instant::now();
    let mut c = allocate(
        &args.name,
        args.qos,
        threads,
        start + Duration::from_secs_f64(args.duration),
        max,
    );
    let seconds = start.elapsed().as_secs_f64();
    if c.flows.is_empty() {
        return Err(format!(
            "no flow allocated: {}",
            c.first_error.unwrap_or_default()
        ));
    }
    c.latencies.sort();
    let flows = c.flows.len() as u64;
    let dealloc_per_s = release(std::mem::take(&mut c.flows), threads);
    let o = RateOutcome {
        version: JSON_VERSION,
        kind: "allocbench",
        mode: args.mode,
        threads,
        flows,
        failures: c.failures,
        seconds,
        alloc_per_s: flows as f64 / seconds,
        latency_min_ms: quantile_ms(&c.latencies, 0.0),
        latency_median_ms: quantile_ms(&c.latencies, 0.5),
        latency_p99_ms: quantile_ms(&c.latencies, 0.99),
        latency_max_ms: quantile_ms(&c.latencies, 1.0),
        dealloc_per_s,
        first_error: c.first_error.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&o).map_err(|e| e.to_string())?);
    } else {
        println!(
            "{} flows in {:.3} s from {threads} thread(s): {:.0} allocations/s; latency min/median/p99/max = {:.3}/{:.3}/{:.3}/{:.3} ms{}; {:.0} deallocations/s",
            o.flows,
            o.seconds,
            o.alloc_per_s,
            o.latency_min_ms,
            o.latency_median_ms,
            o.latency_p99_ms,
            o.latency_max_ms,
            match &o.first_error {
                Some(e) => format!(" ({} failed, first: {e})", o.failures),
                None => String::new(),
            },
            o.dealloc_per_s
        );
    }
    Ok(())
}

/// VmRSS of a process in KiB, from /proc/PID/status.
fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_vm_rss(&s).ok_or_else(|| format!("{path}: no VmRSS line"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn hold(args: &Args) -> Result<(), String> {
    let me = std::process::id();
    let mut watched: Vec<(String, u32)> = args.pids.clone();
    watched.push(("app_client".into(), me));
    let mut before = BTreeMap::new();
    for (label, pid) in &watched {
        before.insert(label.clone(), vm_rss_kib(*pid)?);
    }
    let start = Instant::now();
    let c = allocate(
        &args.name,
        args.qos,
        args.threads,
        start + Duration::from_secs_f64(args.duration),
        args.count,
    );
    let seconds = start.elapsed().as_secs_f64();
    let n = c.flows.len() as u64;
    if n < args.count {
        return Err(format!(
            "opened {n} of {} flows in {seconds:.1} s ({} failed: {})",
            args.count,
            c.failures,
            c.first_error.unwrap_or_default()
        ));
    }
    std::thread::sleep(Duration::from_millis(args.settle_ms));
    let mut rss = BTreeMap::new();
    for (label, pid) in &watched {
        let after = vm_rss_kib(*pid)?;
        let b = before[label];
        rss.insert(
            label.clone(),
            Rss {
                before_kib: b,
                after_kib: after,
                per_flow_kib: after.saturating_sub(b) as f64 / n as f64,
            },
        );
    }
    let dealloc_per_s = release(c.flows, args.threads);
    let o = HoldOutcome {
        version: JSON_VERSION,
        kind: "allocbench",
        mode: Mode::Hold,
        threads: args.threads,
        flows: n,
        failures: c.failures,
        seconds,
        alloc_per_s: n as f64 / seconds,
        dealloc_per_s,
        rss,
    };
    if args.json {
        println!("{}", serde_json::to_string(&o).map_err(|e| e.to_string())?);
    } else {
        println!(
            "{n} flows open (allocated in {seconds:.3} s, {:.0}/s; deallocated at {:.0}/s). Resident memory:",
            o.alloc_per_s, o.dealloc_per_s
        );
        for (label, r) in &o.rss {
            println!(
                "  {label:<12} {:>8} KiB -> {:>8} KiB: {:.2} KiB per flow",
                r.before_kib, r.after_kib, r.per_flow_kib
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&v, 0.0), 1.0);
        assert_eq!(quantile_ms(&v, 0.5), 50.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&v, 1.0), 100.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn reads_vm_rss_from_status() {
        let s = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_vm_rss(s), Some(1234));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib(std::process::id()).map(|k| k > 0), Ok(true));
    }

    #[test]
    fn pid_arguments_need_a_label() {
        assert_eq!(parse_pid("ipcp_a=42"), Ok(("ipcp_a".into(), 42)));
        assert!(parse_pid("=42").is_err());
        assert!(parse_pid("ipcp_a").is_err());
        assert!(parse_pid("x=y").is_err());
    }
}
