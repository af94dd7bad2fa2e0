//! `operf`: throughput over a flow, in the spirit of the model's operf.
//!
//! `operf --listen` serves; `operf -n NAME -s SIZE -d SECONDS` floods (the
//! server counts) or, with `--mode echo`, has every SDU sent back. What counts
//! is what the *receiver* saw: when the client is done it asks the server for
//! its counters over the same flow (a report request, answered in order after
//! every data SDU the server got), so loss and rates are the receiver's.
//!
//! Every SDU starts with a kind byte; bytes 8..16 carry a sequence number.

use clap::{Parser, ValueEnum};
use ethflow_tools::describe;
use irm::{Error, Flow, Qos};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIND_DATA: u8 = 1;
const KIND_ECHO: u8 = 2;
const KIND_REPORT_REQ: u8 = 3;
const KIND_REPORT: u8 = 4;
/// Smallest SDU operf sends: kind byte, padding, sequence number.
const MIN_SIZE: u64 = 16;
/// A report: kind, padding, then received, bytes, window_ns (u64 each).
const REPORT_LEN: usize = 40;
/// How long the client keeps asking for the server's report.
const REPORT_WAIT: Duration = Duration::from_secs(10);
/// Between two report requests (the first may be dropped by a full ring).
const REPORT_RETRY: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(name = "operf", about = "ethflow throughput test", version)]
struct Args {
    /// Run as server (count, or echo, every SDU).
    #[arg(short, long)]
    listen: bool,
    /// Name of the operf server.
    #[arg(short, long, default_value = "operf")]
    name: String,
    /// SDU size in bytes.
    #[arg(short, long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(MIN_SIZE..=65535))]
    size: u64,
    /// Test duration in seconds (fractions allowed).
    #[arg(short, long, default_value_t = 5.0)]
    duration: f64,
    /// flood: the server counts; echo: the server sends every SDU back.
    #[arg(short, long, value_enum, default_value_t = Mode::Flood)]
    mode: Mode,
    /// Flow liveness timeout in ms (default: irmd's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Flood,
    Echo,
}

fn main() -> ExitCode {
    let args = Args::parse();
    ethflow_tools::init_log();
    let r = if args.listen { server() } else { client(&args) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operf: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Counting what arrives (both sides)
// ---------------------------------------------------------------------------

/// SDUs and bytes received, and the span from the first to the last one.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    sdus: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Tally {
    fn count(&mut self, len: usize, now: Instant) {
        self.sdus += 1;
        self.bytes += len as u64;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    fn window(&self) -> Duration {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l - f,
            _ => Duration::ZERO,
        }
    }
}

/// Rates over a receive window; zero when the window is empty.
fn rates(sdus: u64, bytes: u64, window: Duration) -> (f64, f64) {
    let s = window.as_secs_f64();
    if s <= 0.0 {
        return (0.0, 0.0);
    }
    (sdus as f64 / s, bytes as f64 * 8.0 / s / 1e6)
}

fn encode_report(t: &Tally) -> [u8; REPORT_LEN] {
    let mut r = [0u8; REPORT_LEN];
    r[0] = KIND_REPORT;
    r[16..24].copy_from_slice(&t.sdus.to_be_bytes());
    r[24..32].copy_from_slice(&t.bytes.to_be_bytes());
    r[32..40].copy_from_slice(&(t.window().as_nanos() as u64).to_be_bytes());
    r
}

/// The server's counters: (received, bytes, window).
fn decode_report(b: &[u8]) -> Option<(u64, u64, Duration)> {
    if b.len() < REPORT_LEN || b[0] != KIND_REPORT {
        return None;
    }
    let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Some((u(16), u(24), Duration::from_nanos(u(32))))
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

fn server() -> Result<(), String> {
    println!("operf server listening.");
    loop {
        let flow = Flow::accept(None).map_err(|e| format!("accept failed: {}", describe(&e)))?;
        println!("New flow {}.", flow.flow_id());
        std::thread::spawn(move || serve_flow(flow));
    }
}

fn serve_flow(flow: Flow) {
    let mut buf = vec![0u8; 65536];
    let mut tally = Tally::default();
    let end = loop {
        let n = match flow.read(&mut buf) {
            Ok(n) => n,
            Err(e) => break e,
        };
        if n == 0 {
            continue;
        }
        match buf[0] {
            KIND_DATA => tally.count(n, Instant::now()),
            KIND_ECHO => {
                tally.count(n, Instant::now());
                if let Err(e) = flow.write(&buf[..n]) {
                    break e;
                }
            }
            KIND_REPORT_REQ => {
                if let Err(e) = flow.write(&encode_report(&tally)) {
                    break e;
                }
            }
            _ => {}
        }
    };
    let (pps, mbps) = rates(tally.sdus, tally.bytes, tally.window());
    println!(
        "Flow {} ended ({}): received {} SDUs, {} bytes in {:.3} s: {pps:.0} SDUs/s, {mbps:.1} Mbit/s.",
        flow.flow_id(),
        describe(&end),
        tally.sdus,
        tally.bytes,
        tally.window().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// The client's result, as `--json` prints it. Rates are the receiver's.
#[derive(Serialize, Debug)]
struct Outcome {
    mode: Mode,
    size: u64,
    duration_s: f64,
    /// SDUs the client wrote.
    sent: u64,
    /// SDUs the final receiver got (the server in flood mode, the client's
    /// reader in echo mode).
    received: u64,
    lost: u64,
    loss_pct: f64,
    sdus_per_s: f64,
    mbit_per_s: f64,
    /// Rate at which the client wrote.
    sender_sdus_per_s: f64,
    /// SDUs the server counted (equals `received` in flood mode).
    server_received: u64,
    /// The receiver's window, first to last SDU.
    window_s: f64,
}

fn client(args: &Args) -> Result<(), String> {
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        return Err(format!(
            "duration must be in (0, 86400] seconds, got {}",
            args.duration
        ));
    }
    let qos = Qos::raw().with_timeout(args.timeout.unwrap_or(0));
    let flow = Arc::new(
        Flow::alloc(&args.name, &qos, Some(Duration::from_secs(10)))
            .map_err(|e| format!("cannot allocate a flow to {}: {}", args.name, describe(&e)))?,
    );
    let size = args.size as usize;
    if size > flow.max_sdu() || REPORT_LEN > flow.max_sdu() {
        return Err(format!(
            "size {size} exceeds the flow's maximum SDU of {}",
            flow.max_sdu()
        ));
    }
    if !args.json {
        println!(
            "operf: {} test to {} with {size}-byte SDUs for {} s (flow {}).",
            if args.mode == Mode::Flood {
                "flood"
            } else {
                "echo"
            },
            args.name,
            args.duration,
            flow.flow_id()
        );
    }
    let outcome = match args.mode {
        Mode::Flood => flood(&flow, size, args.duration)?,
        Mode::Echo => echo(&flow, size, args.duration)?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&outcome).map_err(|e| e.to_string())?
        );
    } else {
        print_outcome(&outcome);
    }
    Ok(())
}

fn print_outcome(o: &Outcome) {
    println!(
        "sent:     {} SDUs ({:.0} SDUs/s)",
        o.sent, o.sender_sdus_per_s
    );
    if o.mode == Mode::Echo {
        println!("server:   {} SDUs received and echoed", o.server_received);
    }
    println!("received: {} SDUs in {:.3} s", o.received, o.window_s);
    println!("lost:     {} SDUs ({:.3}%)", o.lost, o.loss_pct);
    println!(
        "receiver: {:.0} SDUs/s, {:.1} Mbit/s",
        o.sdus_per_s, o.mbit_per_s
    );
}

/// Write SDUs of `kind` as fast as the ring takes them for `duration`.
/// Returns how many were written and over what time.
fn write_for(flow: &Flow, kind: u8, size: usize, duration: f64) -> Result<(u64, Duration), String> {
    let mut sdu = vec![0u8; size];
    sdu[0] = kind;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(duration);
    let mut sent = 0u64;
    loop {
        // The clock is read once per 64 SDUs: cheap, and at most 64 SDUs late.
        if sent.is_multiple_of(64) && Instant::now() >= until {
            break;
        }
        sdu[8..16].copy_from_slice(&sent.to_be_bytes());
        flow.write(&sdu)
            .map_err(|e| format!("write failed after {sent} SDUs: {}", describe(&e)))?;
        sent += 1;
    }
    Ok((sent, start.elapsed()))
}

/// Ask for the server's report until it comes (it follows every data SDU the
/// server got, on the same flow). `on_other` sees any other SDU read meanwhile.
fn fetch_report(
    flow: &Flow,
    mut on_other: impl FnMut(&[u8]),
) -> Result<(u64, u64, Duration), String> {
    let mut req = [0u8; MIN_SIZE as usize];
    req[0] = KIND_REPORT_REQ;
    let mut buf = vec![0u8; 65536];
    flow.set_read_timeout(Some(REPORT_RETRY));
    let give_up = Instant::now() + REPORT_WAIT;
    while Instant::now() < give_up {
        flow.write(&req)
            .map_err(|e| format!("cannot ask for the report: {}", describe(&e)))?;
        let asked = Instant::now();
        // Read what comes until this request's wait is over.
        while asked.elapsed() < REPORT_RETRY {
            match flow.read(&mut buf) {
                Ok(n) => match decode_report(&buf[..n]) {
                    Some(r) => return Ok(r),
                    None => on_other(&buf[..n]),
                },
                Err(Error::TimedOut) => break,
                Err(e) => {
                    return Err(format!(
                        "flow failed while waiting for the report: {}",
                        describe(&e)
                    ))
                }
            }
        }
    }
    Err(format!(
        "no report from the server within {} s",
        REPORT_WAIT.as_secs()
    ))
}

fn outcome(mode: Mode, size: usize, duration: f64, sent: u64, wrote_for: Duration) -> Outcome {
    Outcome {
        mode,
        size: size as u64,
        duration_s: duration,
        sent,
        received: 0,
        lost: 0,
        loss_pct: 0.0,
        sdus_per_s: 0.0,
        mbit_per_s: 0.0,
        sender_sdus_per_s: sent as f64 / wrote_for.as_secs_f64().max(1e-9),
        server_received: 0,
        window_s: 0.0,
    }
}

fn finish(mut o: Outcome, received: u64, bytes: u64, window: Duration) -> Outcome {
    o.received = received;
    o.lost = o.sent.saturating_sub(received);
    o.loss_pct = if o.sent == 0 {
        0.0
    } else {
        100.0 * o.lost as f64 / o.sent as f64
    };
    (o.sdus_per_s, o.mbit_per_s) = rates(received, bytes, window);
    o.window_s = window.as_secs_f64();
    o
}

fn flood(flow: &Flow, size: usize, duration: f64) -> Result<Outcome, String> {
    let (sent, took) = write_for(flow, KIND_DATA, size, duration)?;
    let (received, bytes, window) = fetch_report(flow, |_| {})?;
    let mut o = outcome(Mode::Flood, size, duration, sent, took);
    o.server_received = received;
    Ok(finish(o, received, bytes, window))
}

fn echo(flow: &Arc<Flow>, size: usize, duration: f64) -> Result<Outcome, String> {
    // A reader counts the echoes while the writer writes; after the writer is
    // done the report request goes out and the reader stops at the report.
    let writing_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (flow, writing_done) = (flow.clone(), writing_done.clone());
        std::thread::spawn(move || -> Result<Tally, String> {
            let mut buf = vec![0u8; 65536];
            let mut tally = Tally::default();
            flow.set_read_timeout(Some(Duration::from_millis(100)));
            while !writing_done.load(Ordering::Acquire) {
                match flow.read(&mut buf) {
                    Ok(n) if n > 0 && buf[0] == KIND_ECHO => tally.count(n, Instant::now()),
                    Ok(_) | Err(Error::TimedOut) => {}
                    Err(e) => return Err(format!("read failed: {}", describe(&e))),
                }
            }
            Ok(tally)
        })
    };
    let written = write_for(flow, KIND_ECHO, size, duration);
    writing_done.store(true, Ordering::Release);
    let mut tally = reader
        .join()
        .map_err(|_| "reader thread panicked".to_string())??;
    let (sent, took) = written?;
    // Echoes still on their way arrive before the report; count them too.
    let (server_received, _, _) = fetch_report(flow, |b| {
        if b.first() == Some(&KIND_ECHO) {
            tally.count(b.len(), Instant::now());
        }
    })?;
    let mut o = outcome(Mode::Echo, size, duration, sent, took);
    o.server_received = server_received;
    Ok(finish(o, tally.sdus, tally.bytes, tally.window()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.count(100, t0);
        t.count(100, t0 + Duration::from_millis(500));
        let (sdus, bytes, window) = decode_report(&encode_report(&t)).expect("a report");
        assert_eq!((sdus, bytes, window), (2, 200, Duration::from_millis(500)));
        assert!(decode_report(&[KIND_DATA; REPORT_LEN]).is_none());
        assert!(decode_report(&[KIND_REPORT; 10]).is_none());
    }

    #[test]
    fn rates_are_over_the_receive_window() {
        let (pps, mbps) = rates(1000, 125_000, Duration::from_millis(500));
        assert_eq!(pps, 2000.0);
        assert_eq!(mbps, 2.0);
        assert_eq!(rates(1, 64, Duration::ZERO), (0.0, 0.0));
    }

    #[test]
    fn loss_is_sent_minus_received() {
        let o = finish(
            outcome(Mode::Flood, 64, 1.0, 1000, Duration::from_secs(1)),
            990,
            990 * 64,
            Duration::from_secs(1),
        );
        assert_eq!(o.lost, 10);
        assert!((o.loss_pct - 1.0).abs() < 1e-9);
        assert_eq!(o.sdus_per_s, 990.0);
    }
}
