//! `flowtest`: flow exercises the end-to-end tests run inside namespaces,
//! for what the shipped tools do not do (many flows at once, exact max SDU,
//! timestamped waits for a flow to die, allocation loops).
//!
//! Output is one `word key=value ...` line per event (`err=` always last, it
//! holds spaces), timestamps in CLOCK_MONOTONIC nanoseconds so a test can
//! compare them with the instant it acted. Exit 0 = checks passed, 1 = a check
//! failed, 2 = an ethflow call failed.

use std::process::exit;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ethflow_tests::clock::monotonic_ns;
use ethflow_tests::procfs;
use irm::proto::FlowState;
use irm::{Error, Flow, Qos};

/// Bound for each allocation and each read a check waits on.
const STEP: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "flowtest",
    about = "flow exercises for ethflow's end-to-end tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept flows and echo each on its own thread until it ends.
    Serve {
        /// Stop after this many flows have been accepted and have ended (0 = never).
        #[arg(long, default_value_t = 0)]
        flows: usize,
        /// Deallocate a flow after echoing this many SDUs (0 = when the peer does).
        #[arg(long, default_value_t = 0)]
        rounds: usize,
        /// Keep a flow whose peer went silent (EFLOWPEER), waiting for it to recover.
        #[arg(long)]
        tolerate_peer: bool,
    },
    /// Open many flows at once, send distinct data on each, check every echo.
    Multi {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long, default_value_t = 64)]
        flows: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Keep every flow open this long after the checks (prints `holding`).
        #[arg(long, default_value_t = 0)]
        linger_ms: u64,
    },
    /// An SDU of exactly max_sdu bytes arrives intact; one byte more is refused.
    Maxsdu {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// SDUs of each size in `sizes` echo intact (content checked), in
    /// both directions; then one byte over max_sdu is refused (EMSGSIZE).
    Sizes {
        #[arg(short = 'n', long)]
        name: String,
        /// Sizes to echo, comma-separated (0 = max_sdu).
        #[arg(long, value_delimiter = ',', required = true)]
        sizes: Vec<usize>,
    },
    /// Allocate one flow; print the flow id or the error and its code (exit 2).
    Alloc {
        #[arg(short = 'n', long)]
        name: String,
        /// Bound passed to Flow::alloc (none if absent).
        #[arg(long)]
        alloc_timeout: Option<u64>,
    },
    /// Echo once, then block in read until the flow dies; print when and how.
    Hold {
        #[arg(short = 'n', long)]
        name: String,
        /// The flow's liveness timeout in ms (0 = irmd's default).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
        /// Safety bound on the blocked read, in ms.
        #[arg(long, default_value_t = 30_000)]
        max_wait: u64,
    },
    /// Echo, wait for the peer to go silent (EFLOWPEER), then for the flow to
    /// come back up, and echo again.
    Recover {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        timeout: u64,
        /// Bound on each wait, in ms.
        #[arg(long, default_value_t = 30_000)]
        max_wait: u64,
    },
    /// Echo, stay silent for `idle` ms (must not go down), echo again.
    Idle {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        timeout: u64,
        #[arg(long)]
        idle: u64,
    },
    /// Write an SDU every `interval_us` while another thread reads the
    /// echoes and a third watches the flow in a FlowSet, until a write
    /// fails; print when and how each learned, then how many of `after`
    /// more writes were accepted (exit 0 if the failure was EIRMD or
    /// EFLOWDOWN and none was).
    Stream {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        /// Bound on the whole stream, in ms.
        #[arg(long, default_value_t = 30_000)]
        max_wait: u64,
        #[arg(long, default_value_t = 100)]
        after: usize,
    },
    /// Allocate, echo and deallocate `count` flows in a loop; check no fd leaks.
    Churn {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
}

fn main() {
    let code = match Cli::parse().cmd {
        Cmd::Serve {
            flows,
            rounds,
            tolerate_peer,
        } => serve(flows, rounds, tolerate_peer),
        Cmd::Multi {
            name,
            flows,
            rounds,
            linger_ms,
        } => multi(&name, flows, rounds, Duration::from_millis(linger_ms)),
        Cmd::Maxsdu { name } => maxsdu(&name),
        Cmd::Sizes { name, sizes } => echo_sizes(&name, &sizes),
        Cmd::Alloc {
            name,
            alloc_timeout,
        } => alloc(&name, alloc_timeout.map(Duration::from_millis)),
        Cmd::Hold {
            name,
            timeout,
            max_wait,
        } => hold(&name, timeout, Duration::from_millis(max_wait)),
        Cmd::Idle {
            name,
            timeout,
            idle,
        } => stay_idle(&name, timeout, Duration::from_millis(idle)),
        Cmd::Recover {
            name,
            timeout,
            max_wait,
        } => recover(&name, timeout, Duration::from_millis(max_wait)),
        Cmd::Churn { name, count } => churn(&name, count),
        Cmd::Stream {
            name,
            interval_us,
            max_wait,
            after,
        } => stream(
            &name,
            Duration::from_micros(interval_us),
            Duration::from_millis(max_wait),
            after,
        ),
    };
    exit(code);
}

/// Prints a failed ethflow call and returns exit code 2.
fn irm_failed(what: &str, e: &Error) -> i32 {
    println!("failed op={what} code={} err={e}", e.code());
    eprintln!("flowtest: {what}: {e}");
    2
}

/// Prints a failed check and returns exit code 1.
fn check_failed(msg: &str) -> i32 {
    println!("check-failed {msg}");
    eprintln!("flowtest: {msg}");
    1
}

fn alloc_flow(name: &str, qos: &Qos) -> Result<Flow, i32> {
    Flow::alloc(name, qos, Some(STEP)).map_err(|e| irm_failed("alloc", &e))
}

/// Writes `sdu`, reads the echo (bounded), and checks it is the same bytes.
fn echo_once(flow: &Flow, sdu: &[u8]) -> Result<(), i32> {
    flow.write(sdu).map_err(|e| irm_failed("write", &e))?;
    flow.set_read_timeout(Some(STEP));
    let mut buf = vec![0u8; flow.max_sdu().max(sdu.len()) + 64];
    let n = flow.read(&mut buf).map_err(|e| irm_failed("read", &e))?;
    if buf[..n] != *sdu {
        return Err(check_failed(&format!(
            "echo-mismatch flow_id={} sent={} got={}",
            flow.flow_id(),
            sdu.len(),
            n
        )));
    }
    Ok(())
}

fn serve(flows: usize, rounds: usize, tolerate_peer: bool) -> i32 {
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    let mut accepted = 0;
    while flows == 0 || accepted < flows {
        let flow = match Flow::accept(None) {
            Ok(f) => f,
            Err(e) => return irm_failed("accept", &e),
        };
        accepted += 1;
        println!("accepted flow_id={} n={accepted}", flow.flow_id());
        running.retain(|h| !h.is_finished());
        running.push(std::thread::spawn(move || {
            echo_until_end(flow, rounds, tolerate_peer)
        }));
    }
    for h in running {
        let _ = h.join();
    }
    println!("served flows={accepted}");
    0
}

/// Echoes SDUs on one flow until `rounds` are done or the flow fails
/// (an unresponsive peer only counts as failure unless `tolerate_peer`).
fn echo_until_end(flow: Flow, rounds: usize, tolerate_peer: bool) {
    let mut buf = vec![0u8; flow.max_sdu().max(65_536)];
    let mut echoed = 0;
    let end = loop {
        if rounds != 0 && echoed == rounds {
            break "rounds-done".to_string();
        }
        match flow.read(&mut buf).and_then(|n| flow.write(&buf[..n])) {
            Ok(_) => echoed += 1,
            Err(Error::FlowPeer) if tolerate_peer => {
                println!("flow-peer flow_id={}", flow.flow_id());
                // Reads fail at once while the peer is silent: poll gently.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break format!("code={} err={e}", e.code()),
        }
    };
    println!(
        "flow-ended flow_id={} echoed={echoed} {end}",
        flow.flow_id()
    );
}

/// Distinct content per flow and round, with varying lengths.
fn payload(flow: usize, round: usize) -> Vec<u8> {
    let mut p = format!("flow {flow} round {round} ").into_bytes();
    let filler = (flow * 37 + round * 11) % 200;
    p.extend((0..filler).map(|k| (flow * 7 + round + k) as u8));
    p
}

fn multi(name: &str, count: usize, rounds: usize, linger: Duration) -> i32 {
    let mut flows = Vec::with_capacity(count);
    for _ in 0..count {
        match alloc_flow(name, &Qos::raw()) {
            Ok(f) => flows.push(f),
            Err(code) => return code,
        }
    }
    let mut ids: Vec<u32> = flows.iter().map(Flow::flow_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != count {
        return check_failed(&format!(
            "duplicate-flow-ids distinct={} flows={count}",
            ids.len()
        ));
    }
    println!("allocated flows={count}");
    let mut buf = vec![0u8; 65_536];
    for round in 0..rounds {
        // Everything is sent before anything is read: all flows carry data at once.
        for (i, f) in flows.iter().enumerate() {
            if let Err(e) = f.write(&payload(i, round)) {
                return irm_failed("write", &e);
            }
        }
        for (i, f) in flows.iter().enumerate() {
            f.set_read_timeout(Some(STEP));
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) => return irm_failed("read", &e),
            };
            if buf[..n] != payload(i, round)[..] {
                let head = String::from_utf8_lossy(&buf[..n.min(24)]).into_owned();
                return check_failed(&format!(
                    "cross-talk flow={i} flow_id={} round={round} got={head:?}",
                    f.flow_id()
                ));
            }
        }
    }
    println!("ok flows={count} rounds={rounds}");
    if !linger.is_zero() {
        println!("holding flows={count}");
        std::thread::sleep(linger);
    }
    0
}

fn maxsdu(name: &str) -> i32 {
    let flow = match alloc_flow(name, &Qos::raw()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let max = flow.max_sdu();
    println!("max_sdu={max}");
    let exact: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    match flow.write(&exact) {
        Ok(n) if n == max => {}
        Ok(n) => return check_failed(&format!("short-write wrote={n} max_sdu={max}")),
        Err(e) => return irm_failed("write-max", &e),
    }
    flow.set_read_timeout(Some(STEP));
    let mut buf = vec![0u8; max + 64];
    match flow.read(&mut buf) {
        Ok(n) if buf[..n] == exact[..] => println!("exact-ok bytes={n}"),
        Ok(n) => return check_failed(&format!("max-sdu-corrupted got={n} sent={max}")),
        Err(e) => return irm_failed("read-max", &e),
    }
    if let Err(code) = oversize_refused_then_echo(&flow, &vec![0u8; max + 1]) {
        return code;
    }
    println!("ok max_sdu={max}");
    0
}

/// `oversize` (one byte above the max SDU) must be refused with EMSGSIZE,
/// and refusing it must not hurt the flow: an echo still comes back.
fn oversize_refused_then_echo(flow: &Flow, oversize: &[u8]) -> Result<(), i32> {
    let max = flow.max_sdu();
    match flow.write(oversize) {
        Err(e) if e.code() == libc::EMSGSIZE => {
            println!("oversize-refused code={} err={e}", e.code())
        }
        Err(e) => {
            return Err(check_failed(&format!(
                "oversize-wrong-error code={} err={e}",
                e.code()
            )))
        }
        Ok(n) => {
            return Err(check_failed(&format!(
                "oversize-accepted wrote={n} max_sdu={max}"
            )))
        }
    }
    echo_once(flow, b"after the refused SDU")
}

/// Content that differs by size and position (no period of 256).
fn sized_payload(size: usize) -> Vec<u8> {
    (0..size)
        .map(|k| (k.wrapping_mul(7) ^ (k / 251) ^ size.wrapping_mul(13)) as u8)
        .collect()
}

fn echo_sizes(name: &str, sizes: &[usize]) -> i32 {
    let flow = match alloc_flow(name, &Qos::raw()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let max = flow.max_sdu();
    println!("max_sdu={max}");
    for &size in sizes {
        let size = if size == 0 { max } else { size };
        if size > max {
            return check_failed(&format!("size-above-max size={size} max_sdu={max}"));
        }
        if let Err(code) = echo_once(&flow, &sized_payload(size)) {
            return code;
        }
        println!("echo-ok bytes={size}");
    }
    if let Err(code) = oversize_refused_then_echo(&flow, &sized_payload(max + 1)) {
        return code;
    }
    println!("ok sizes={} max_sdu={max}", sizes.len());
    0
}

fn alloc(name: &str, timeout: Option<Duration>) -> i32 {
    let start = Instant::now();
    let result = Flow::alloc(name, &Qos::raw(), timeout);
    let ms = start.elapsed().as_millis();
    match result {
        Ok(f) => {
            println!("allocated flow_id={} elapsed_ms={ms}", f.flow_id());
            0
        }
        Err(e) => {
            println!("error code={} elapsed_ms={ms} err={e}", e.code());
            eprintln!("flowtest: {e}");
            2
        }
    }
}

fn hold(name: &str, timeout_ms: u64, max_wait: Duration) -> i32 {
    let flow = match alloc_flow(name, &Qos::raw().with_timeout(timeout_ms)) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Err(code) = echo_once(&flow, b"hold") {
        return code;
    }
    flow.set_read_timeout(Some(max_wait));
    println!("ready flow_id={} t_ns={}", flow.flow_id(), monotonic_ns());
    let mut buf = vec![0u8; flow.max_sdu().max(64)];
    let result = flow.read(&mut buf);
    let t_ns = monotonic_ns();
    let e = match result {
        Ok(n) => return check_failed(&format!("unexpected-data bytes={n}")),
        Err(e) => e,
    };
    println!(
        "ended t_ns={t_ns} code={} secure={} dropped_records={} err={e}",
        e.code(),
        flow.is_secure(),
        flow.dropped_records()
    );
    // Writes on a dead flow must fail too, with the same cause.
    match flow.write(b"after") {
        Err(w) => println!("write code={} err={w}", w.code()),
        Ok(n) => println!("write code=0 err=accepted {n} bytes"),
    }
    match e {
        Error::FlowDown | Error::FlowPeer => 0,
        _ => 1,
    }
}

fn recover(name: &str, timeout_ms: u64, max_wait: Duration) -> i32 {
    let flow = match alloc_flow(name, &Qos::raw().with_timeout(timeout_ms)) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Err(code) = echo_once(&flow, b"before the silence") {
        return code;
    }
    flow.set_read_timeout(Some(max_wait));
    println!("ready flow_id={} t_ns={}", flow.flow_id(), monotonic_ns());
    let mut buf = vec![0u8; flow.max_sdu().max(64)];
    match flow.read(&mut buf) {
        Err(Error::FlowPeer) => println!("peer t_ns={}", monotonic_ns()),
        Err(e) => return check_failed(&format!("not-peer code={} err={e}", e.code())),
        Ok(n) => return check_failed(&format!("unexpected-data bytes={n}")),
    }
    let deadline = Instant::now() + max_wait;
    while flow.state() != FlowState::Allocated {
        if Instant::now() >= deadline {
            return check_failed(&format!("never-up state={}", flow.state().as_str()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("up t_ns={}", monotonic_ns());
    if let Err(code) = echo_once(&flow, b"after the silence") {
        return code;
    }
    println!("ok recovered");
    0
}

fn stay_idle(name: &str, timeout_ms: u64, idle: Duration) -> i32 {
    let flow = match alloc_flow(name, &Qos::raw().with_timeout(timeout_ms)) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Err(code) = echo_once(&flow, b"before idle") {
        return code;
    }
    println!("idle flow_id={} ms={}", flow.flow_id(), idle.as_millis());
    flow.set_read_timeout(Some(idle));
    let mut buf = vec![0u8; flow.max_sdu().max(64)];
    match flow.read(&mut buf) {
        Err(Error::TimedOut | Error::Again) => {}
        Err(e) => return check_failed(&format!("went-down code={} err={e}", e.code())),
        Ok(n) => return check_failed(&format!("unexpected-data bytes={n}")),
    }
    if let Err(code) = echo_once(&flow, b"after idle") {
        return code;
    }
    println!("ok idle_ms={}", idle.as_millis());
    0
}

fn churn(name: &str, count: usize) -> i32 {
    let me = std::process::id() as i32;
    // One flow first, so lazily opened resources (the irmd connection) exist.
    let warm = match alloc_flow(name, &Qos::raw()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Err(code) = echo_once(&warm, b"warm-up") {
        return code;
    }
    drop(warm);
    let (fds_before, maps_before) = (procfs::fd_count(me), procfs::memfd_mappings(me));
    let start = Instant::now();
    for i in 0..count {
        let flow = match alloc_flow(name, &Qos::raw()) {
            Ok(f) => f,
            Err(code) => {
                println!("iteration-failed i={i}");
                return code;
            }
        };
        if let Err(code) = echo_once(&flow, format!("churn {i}").as_bytes()) {
            println!("iteration-failed i={i}");
            return code;
        }
    }
    let (fds_after, maps_after) = (procfs::fd_count(me), procfs::memfd_mappings(me));
    println!(
        "churn count={count} elapsed_ms={} fds_before={fds_before} fds_after={fds_after} \
         memfd_maps_before={maps_before} memfd_maps_after={maps_after}",
        start.elapsed().as_millis()
    );
    if fds_after > fds_before || maps_after > maps_before {
        return check_failed("leak in the application (fds or memfd mappings grew)");
    }
    0
}

/// See `Cmd::Stream`. Lines: `streaming`, then (in any order) `event`
/// (the set's first liveness event), `read-failed` (the reader's first
/// error other than a timeout), `write-failed`, then `after-failure`.
fn stream(name: &str, interval: Duration, max_wait: Duration, after: usize) -> i32 {
    let flow = match alloc_flow(name, &Qos::raw()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Err(code) = echo_once(&flow, b"stream") {
        return code;
    }
    let mut set = match irm::FlowSet::new() {
        Ok(s) => s,
        Err(e) => return irm_failed("fset", &e),
    };
    if let Err(e) = set.add_with(&flow, irm::Interest::Liveness) {
        return irm_failed("fset-add", &e);
    }
    let flow = std::sync::Arc::new(flow);
    let start = Instant::now();
    let watcher = std::thread::spawn(move || {
        while start.elapsed() < max_wait {
            match set.wait(Some(Duration::from_millis(100))) {
                Ok(events) => {
                    if let Some(e) = events.first() {
                        println!("event t_ns={} kind={:?}", monotonic_ns(), e.kind);
                        return;
                    }
                }
                Err(e) => return println!("event t_ns={} kind=error err={e}", monotonic_ns()),
            }
        }
        println!("event t_ns={} kind=none", monotonic_ns());
    });
    let reader = {
        let flow = flow.clone();
        std::thread::spawn(move || {
            flow.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = vec![0u8; flow.max_sdu().max(64)];
            let mut echoes = 0u64;
            while start.elapsed() < max_wait {
                match flow.read(&mut buf) {
                    Ok(_) => echoes += 1,
                    Err(Error::TimedOut) => {}
                    Err(e) => {
                        let t = monotonic_ns();
                        return println!(
                            "read-failed t_ns={t} echoes={echoes} code={} err={e}",
                            e.code()
                        );
                    }
                }
            }
            println!(
                "read-failed t_ns={} echoes={echoes} code=0 err=none",
                monotonic_ns()
            );
        })
    };
    println!(
        "streaming flow_id={} t_ns={}",
        flow.flow_id(),
        monotonic_ns()
    );
    let sdu = [0x5au8; 64];
    let mut written = 0u64;
    let failure = loop {
        match flow.write(&sdu) {
            Ok(_) => written += 1,
            Err(e) => break Some(e),
        }
        if start.elapsed() >= max_wait {
            break None;
        }
        std::thread::sleep(interval);
    };
    let t_ns = monotonic_ns();
    let _ = reader.join();
    let _ = watcher.join();
    let Some(e) = failure else {
        return check_failed(&format!("no-failure written={written}"));
    };
    println!(
        "write-failed t_ns={t_ns} written={written} code={} err={e}",
        e.code()
    );
    let mut accepted = 0;
    let mut last = 0;
    for _ in 0..after {
        match flow.write(&sdu) {
            Ok(_) => accepted += 1,
            Err(e) => last = e.code(),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("after-failure attempts={after} accepted={accepted} last_code={last}");
    match e {
        Error::Irmd(_) | Error::FlowDown if accepted == 0 => 0,
        _ => 1,
    }
}
