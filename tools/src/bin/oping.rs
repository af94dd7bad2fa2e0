//! `oping`: round-trip times over a flow, in the style of ping.

use clap::Parser;
use ethflow_tools::describe;
use irm::{Flow, Qos};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "oping", about = "ethflow ping", version)]
struct Args {
    /// Run as server (echo every SDU back).
    #[arg(short, long)]
    listen: bool,
    /// Name to ping.
    #[arg(short, long, default_value = "oping")]
    name: String,
    /// Number of pings.
    #[arg(short, long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Interval between pings in ms.
    #[arg(short, long, default_value_t = 1000)]
    interval: u64,
    /// SDU size in bytes (at least 16).
    #[arg(short, long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=65535))]
    size: u64,
    /// Only print the summary.
    #[arg(short, long)]
    quiet: bool,
    /// Flow liveness timeout in ms (default: irmd's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print one JSON object (counts, RTT min/median/p99/max and percentiles in µs) instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    ethflow_tools::init_log();
    let r = if args.listen { server() } else { client(&args) };
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oping: {e}");
            ExitCode::FAILURE
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

fn client(args: &Args) -> Result<ExitCode, String> {
    let qos = Qos::raw().with_timeout(args.timeout.unwrap_or(0));
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
        println!(
            "Pinging {} with {} bytes of data ({} packets):\n",
            args.name, args.size, args.count
        );
    }
    let start = Instant::now();
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
                    Ok(n) if n >= 16 => {
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
    let mut sdu = vec![0u8; args.size as usize];
    let mut sent = 0u64;
    let mut failure = None;
    for seq in 0..args.count {
        let next = start + Duration::from_millis(args.interval * seq);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sdu[0..8].copy_from_slice(&seq.to_be_bytes());
        sdu[8..16].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
        match flow.write(&sdu) {
            Ok(_) => sent += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Give the last replies time to come back.
    let grace = Duration::from_millis((2 * args.interval).clamp(200, 2000));
    let until = Instant::now() + grace;
    while Instant::now() < until && tally.lock().expect("tally").received < sent {
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Release);
    let read_err = reader.join().unwrap_or(None);
    let t = tally.lock().expect("tally");
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * (sent - t.received.min(sent)) as f64 / sent as f64
    };
    if args.json {
        println!("{}", rtt_json(args.size, sent, t.received, &t.rtts_ms));
    } else {
        print_summary(&args.name, sent, &t, loss, start);
    }
    if let Some(e) = failure.or(read_err) {
        eprintln!("oping: flow failed: {}", describe(&e));
        return Ok(ExitCode::FAILURE);
    }
    Ok(if t.received == sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(name: &str, sent: u64, t: &Tally, loss: f64, start: Instant) {
    println!("\n--- {name} ping statistics ---");
    println!(
        "{sent} packets transmitted, {} received, {loss:.0}% packet loss, time: {:.3} ms",
        t.received,
        start.elapsed().as_secs_f64() * 1000.0
    );
    if !t.rtts_ms.is_empty() {
        let n = t.rtts_ms.len() as f64;
        let min = t.rtts_ms.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = t.rtts_ms.iter().cloned().fold(0.0, f64::max);
        let avg = t.rtts_ms.iter().sum::<f64>() / n;
        let mdev = (t.rtts_ms.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n).sqrt();
        println!("rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
    }
}

/// The `q`-quantile (0..=1) of sorted samples; nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One run as JSON, RTTs in µs: the shape every RTT tool of scripts/bench.sh prints.
fn rtt_json(size: u64, sent: u64, received: u64, rtts_ms: &[f64]) -> serde_json::Value {
    let mut us: Vec<f64> = rtts_ms.iter().map(|ms| ms * 1e3).collect();
    us.sort_by(f64::total_cmp);
    let avg = if us.is_empty() {
        0.0
    } else {
        us.iter().sum::<f64>() / us.len() as f64
    };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "kind": "oping",
        "size": size,
        "sent": sent,
        "received": received,
        "min_us": round(quantile(&us, 0.0)),
        "median_us": round(quantile(&us, 0.5)),
        "p99_us": round(quantile(&us, 0.99)),
        "max_us": round(quantile(&us, 1.0)),
        "avg_us": round(avg),
        "percentiles_us": (0..=100).map(|p| round(quantile(&us, p as f64 / 100.0))).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_summary_has_the_quantiles_in_microseconds() {
        let rtts_ms: Vec<f64> = (1..=100).rev().map(|i| i as f64 / 1000.0).collect();
        let j = rtt_json(64, 100, 100, &rtts_ms);
        assert_eq!(j["min_us"], 1.0);
        assert_eq!(j["median_us"], 50.0);
        assert_eq!(j["p99_us"], 99.0);
        assert_eq!(j["max_us"], 100.0);
        assert_eq!(j["percentiles_us"].as_array().map(Vec::len), Some(101));
        assert_eq!(rtt_json(64, 3, 0, &[])["median_us"], 0.0);
    }
}
