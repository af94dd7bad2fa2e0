//! `oping`: round-trip times over a flow, in the style of ping and of the
//! model's oping: by default one ping a second until Ctrl-C, which prints the
//! summary; `-c` and `-d` bound the run, `-f` floods, `-q` names the QoS cube
//! and `-Q` prints only the summary.

use clap::Parser;
use ethflow_tools::{
    describe, interrupt_flag, interrupted, parse_millis, parse_qos, parse_secs, quantile,
    sleep_until, Wakes, EXIT_FAILURE, JSON_VERSION,
};
use irm::{Flow, Qos};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Smallest ping: sequence number and send time.
const MIN_SIZE: u64 = 16;
/// In flood mode, the next ping goes out when the last reply came back or
/// after this long, whichever is first (as ping -f does).
const FLOOD_WAIT: Duration = Duration::from_millis(10);

#[derive(Parser, Debug)]
#[command(
    name = "oping",
    about = "Round-trip times and loss over an ethflow flow",
    long_about = "Round-trip times and loss over an ethflow flow. Without -c or -d, \
                  oping pings once per interval until Ctrl-C, which prints the summary \
                  (as the model's oping and ping do).",
    version,
    after_help = ethflow_tools::EXIT_STATUS_HELP
)]
struct Args {
    /// Run as server (echo every SDU back).
    #[arg(short, long)]
    listen: bool,
    /// Name of the oping server.
    #[arg(short, long, visible_alias = "server-name", default_value = "oping")]
    name: String,
    /// Number of pings (default: until -d ends the run or Ctrl-C).
    #[arg(short, long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Interval between pings; a bare number is in ms (500us, 10ms, 1s).
    #[arg(short, long, default_value = "1000", value_parser = parse_millis)]
    interval: Duration,
    /// Stop after this long; a bare number is in seconds (500ms, 10s, 2m).
    #[arg(short, long, value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Flood: send the next ping as soon as the reply to the last one is back
    /// (or 10 ms later), ignoring -i.
    #[arg(short, long)]
    flood: bool,
    /// SDU size in bytes (at least 16).
    #[arg(short, long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(MIN_SIZE..=65535))]
    size: u64,
    /// QoS cube of the flow: raw, best, video, voice, data, raw_safe, raw_crypt.
    #[arg(short = 'q', long = "qos", default_value = "raw", value_parser = parse_qos)]
    qos: Qos,
    /// Only print the summary.
    #[arg(short = 'Q', long)]
    quiet: bool,
    /// Flow liveness timeout in ms (default: irmd's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print one JSON object (counts, RTT min/median/p99/max and percentiles in µs) instead of text.
    #[arg(short, long)]
    json: bool,
    /// Write the manual page and shell completions under DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate {
        return ethflow_tools::generate(<Args as clap::CommandFactory>::command(), dir);
    }
    ethflow_tools::init_log();
    let r = if args.listen { server() } else { client(&args) };
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oping: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn server() -> Result<ExitCode, String> {
    println!("oping server listening.");
    loop {
        let flow = Flow::accept(None).map_err(|e| format!("accept failed: {}", describe(&e)))?;
        println!("New flow {}.", flow.flow_id());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match flow.read(&mut buf) {
                    Ok(n) => {
                        if flow.write(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        println!("Flow {} ended: {}", flow.flow_id(), describe(&e));
                        break;
                    }
                }
            }
        });
    }
}

#[derive(Default)]
struct Tally {
    received: u64,
    rtts_ms: Vec<f64>,
    seen: std::collections::HashSet<u64>,
    duplicates: u64,
}

/// When the writer may send ping `seq`, or `None` when the run is over.
struct Pacer {
    start: Instant,
    interval: Duration,
    flood: bool,
    count: Option<u64>,
    end: Option<Instant>,
}

impl Pacer {
    fn due(&self, seq: u64) -> Option<Instant> {
        if self.count.is_some_and(|c| seq >= c) {
            return None;
        }
        let at = if self.flood {
            Instant::now()
        } else {
            self.start
                + self
                    .interval
                    .saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX))
        };
        match self.end {
            Some(end) if at >= end => None,
            _ => Some(at),
        }
    }
}

fn client(args: &Args) -> Result<ExitCode, String> {
    let stop = interrupt_flag();
    let qos = args.qos.with_timeout(args.timeout.unwrap_or(0));
    let flow = Arc::new(
        Flow::alloc(&args.name, &qos, Some(Duration::from_secs(10)))
            .map_err(|e| format!("cannot allocate a flow to {}: {}", args.name, describe(&e)))?,
    );
    if args.size as usize > flow.max_sdu() {
        return Err(format!(
            "size {} exceeds the flow's maximum SDU of {}",
            args.size,
            flow.max_sdu()
        ));
    }
    if !args.json {
        match args.count {
            Some(c) => println!(
                "Pinging {} with {} bytes of data ({c} packets):\n",
                args.name, args.size
            ),
            None => println!("Pinging {} with {} bytes of data:\n", args.name, args.size),
        }
    }
    let start = Instant::now();
    let wakes_before = irm::shm::wake_stats();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (flow, tally, done, quiet, name) = (
            flow.clone(),
            tally.clone(),
            done.clone(),
            args.quiet || args.json,
            args.name.clone(),
        );
        std::thread::spawn(move || -> Option<irm::Error> {
            let mut buf = vec![0u8; 65536];
            flow.set_read_timeout(Some(Duration::from_millis(100)));
            while !done.load(Ordering::Acquire) {
                match flow.read(&mut buf) {
                    Ok(n) if n >= MIN_SIZE as usize => {
                        let now = start.elapsed().as_nanos() as u64;
                        let seq = u64::from_be_bytes(buf[0..8].try_into().expect("8 bytes"));
                        let sent = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"));
                        let ms = now.saturating_sub(sent) as f64 / 1e6;
                        let mut t = tally.lock().expect("tally");
                        if !t.seen.insert(seq) {
                            t.duplicates += 1;
                            continue;
                        }
                        t.received += 1;
                        t.rtts_ms.push(ms);
                        if !quiet {
                            println!("{n} bytes from {name}: seq={seq} time={ms:.3} ms");
                        }
                    }
                    Ok(_) => {}
                    Err(irm::Error::TimedOut) => {}
                    Err(e) => return Some(e),
                }
            }
            None
        })
    };
    let pacer = Pacer {
        start,
        interval: args.interval,
        flood: args.flood,
        count: args.count,
        end: args.duration.map(|d| start + d),
    };
    let mut sdu = vec![0u8; args.size as usize];
    let mut sent = 0u64;
    let mut failure = None;
    while let Some(at) = pacer.due(sent) {
        if !sleep_until(at, &stop) {
            break;
        }
        sdu[0..8].copy_from_slice(&sent.to_be_bytes());
        sdu[8..16].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
        match flow.write(&sdu) {
            Ok(_) => sent += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if args.flood {
            let until = Instant::now() + FLOOD_WAIT;
            while Instant::now() < until && tally.lock().expect("tally").received < sent {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
    // Give the last replies time to come back (not after Ctrl-C: ping stops there).
    let grace = if interrupted(&stop) {
        Duration::ZERO
    } else {
        (2 * args.interval).clamp(Duration::from_millis(200), Duration::from_secs(2))
    };
    let until = Instant::now() + grace;
    while Instant::now() < until
        && !interrupted(&stop)
        && tally.lock().expect("tally").received < sent
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Release);
    let read_err = reader.join().unwrap_or(None);
    let t = tally.lock().expect("tally");
    let mut summary = Summary::new(args, sent, &t, start.elapsed(), interrupted(&stop));
    summary.wakes = Wakes::since(&wakes_before, sent);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| e.to_string())?
        );
    } else {
        print_summary(&args.name, &summary, &t.rtts_ms);
    }
    if let Some(e) = failure.or(read_err) {
        eprintln!("oping: flow failed: {}", describe(&e));
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    Ok(if t.received == sent && sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// One run as `--json` prints it, RTTs in µs: the shape every RTT tool of
/// scripts/bench.sh prints (docs/json.md, "Tools").
#[derive(Serialize, Debug)]
struct Summary {
    version: u32,
    kind: &'static str,
    size: u64,
    /// The interval asked for, in ms (0 with `--flood`).
    interval_ms: f64,
    sent: u64,
    received: u64,
    duplicates: u64,
    loss_pct: f64,
    /// Whether Ctrl-C or SIGTERM ended the run.
    interrupted: bool,
    elapsed_ms: f64,
    min_us: f64,
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    avg_us: f64,
    mdev_us: f64,
    /// The 0th to 100th percentile.
    percentiles_us: Vec<f64>,
    /// This process's wake-ups over the run, per ping sent.
    wakes: Wakes,
}

impl Summary {
    fn new(args: &Args, sent: u64, t: &Tally, elapsed: Duration, interrupted: bool) -> Summary {
        let mut s = summarize(args.size, sent, t.received, &t.rtts_ms);
        s.interval_ms = if args.flood {
            0.0
        } else {
            args.interval.as_secs_f64() * 1e3
        };
        s.duplicates = t.duplicates;
        s.interrupted = interrupted;
        s.elapsed_ms = round2(elapsed.as_secs_f64() * 1e3);
        s
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn summarize(size: u64, sent: u64, received: u64, rtts_ms: &[f64]) -> Summary {
    let mut us: Vec<f64> = rtts_ms.iter().map(|ms| ms * 1e3).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len().max(1) as f64;
    let avg = us.iter().sum::<f64>() / n;
    let mdev = (us.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n).sqrt();
    Summary {
        version: JSON_VERSION,
        kind: "oping",
        size,
        interval_ms: 0.0,
        sent,
        received,
        duplicates: 0,
        loss_pct: if sent == 0 {
            100.0
        } else {
            100.0 * (sent - received.min(sent)) as f64 / sent as f64
        },
        interrupted: false,
        elapsed_ms: 0.0,
        min_us: round2(quantile(&us, 0.0)),
        median_us: round2(quantile(&us, 0.5)),
        p99_us: round2(quantile(&us, 0.99)),
        max_us: round2(quantile(&us, 1.0)),
        avg_us: round2(avg),
        mdev_us: round2(mdev),
        percentiles_us: (0..=100)
            .map(|p| round2(quantile(&us, p as f64 / 100.0)))
            .collect(),
        wakes: Wakes::default(),
    }
}

fn print_summary(name: &str, s: &Summary, rtts_ms: &[f64]) {
    println!("\n--- {name} ping statistics ---");
    println!(
        "{} packets transmitted, {} received, {:.0}% packet loss, time: {:.3} ms",
        s.sent, s.received, s.loss_pct, s.elapsed_ms
    );
    if !rtts_ms.is_empty() {
        println!(
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            s.min_us / 1e3,
            s.avg_us / 1e3,
            s.max_us / 1e3,
            s.mdev_us / 1e3
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_summary_has_the_quantiles_in_microseconds() {
        let rtts_ms: Vec<f64> = (1..=100).rev().map(|i| i as f64 / 1000.0).collect();
        let j = serde_json::to_value(summarize(64, 100, 100, &rtts_ms)).expect("json");
        assert_eq!(j["version"], JSON_VERSION);
        assert_eq!(j["min_us"], 1.0);
        assert_eq!(j["median_us"], 50.0);
        assert_eq!(j["p99_us"], 99.0);
        assert_eq!(j["max_us"], 100.0);
        assert_eq!(j["percentiles_us"].as_array().map(Vec::len), Some(101));
        assert_eq!(summarize(64, 3, 0, &[]).median_us, 0.0);
        assert_eq!(summarize(64, 4, 3, &[]).loss_pct, 25.0);
    }

    #[test]
    fn the_pacer_stops_at_the_count_or_the_end() {
        let start = Instant::now();
        let p = Pacer {
            start,
            interval: Duration::from_millis(10),
            flood: false,
            count: Some(3),
            end: None,
        };
        assert_eq!(p.due(2), Some(start + Duration::from_millis(20)));
        assert_eq!(p.due(3), None);
        let p = Pacer {
            count: None,
            end: Some(start + Duration::from_millis(25)),
            ..p
        };
        assert!(p.due(2).is_some());
        assert_eq!(p.due(3), None);
    }

    #[test]
    fn flags_follow_the_model() {
        let a = Args::try_parse_from(["oping", "-n", "x", "-q", "voice", "-Q", "-d", "2", "-f"])
            .expect("parse");
        assert_eq!(a.qos, Qos::voice());
        assert!(a.quiet && a.flood);
        assert_eq!(a.duration, Some(Duration::from_secs(2)));
        assert_eq!(a.count, None);
        assert_eq!(a.interval, Duration::from_secs(1));
        let a = Args::try_parse_from(["oping", "-i", "10", "-c", "5"]).expect("parse");
        assert_eq!(a.interval, Duration::from_millis(10));
        let e = Args::try_parse_from(["oping", "-q", "gold"]).expect_err("bad cube");
        assert_eq!(e.exit_code(), i32::from(ethflow_tools::EXIT_USAGE));
    }
}
