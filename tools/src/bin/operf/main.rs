//! `operf`: throughput over one or more flows, with the model's flags.
//!
//! `operf --listen` serves; `operf -n NAME -s SIZE -d 5s` floods (the server
//! counts) or, with `-t bi`, has every SDU sent back; `-r RATE` paces each
//! flow instead of flooding; `--flows N` runs N flows at once; `-i 1` prints
//! a progress line a second. What counts is what the *receiver* saw: when the
//! client is done it asks the server for its counters over each flow (a
//! report request, answered in order after every data SDU the server got), so
//! loss and rates are the receiver's.

mod client;
mod report;

use clap::{Parser, ValueEnum};
use ethflow_tools::{describe, interrupt_flag, parse_qos, parse_secs, EXIT_FAILURE};
use irm::{Flow, Qos};
use report::*;
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "operf",
    about = "Throughput and loss over ethflow flows",
    long_about = "Throughput and loss over ethflow flows, measured at the receiver. \
                  Without -r the client writes as fast as the flow takes SDUs (-f); \
                  Ctrl-C ends the run early and still prints the summary.",
    version,
    after_help = ethflow_tools::EXIT_STATUS_HELP
)]
struct Args {
    /// Run as server (count, or echo, every SDU).
    #[arg(short, long)]
    listen: bool,
    /// Name of the operf server.
    #[arg(short, long, visible_alias = "server-name", default_value = "operf")]
    name: String,
    /// SDU size in bytes.
    #[arg(short, long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(MIN_SIZE..=65535))]
    size: u64,
    /// Test duration; a bare number is in seconds (500ms, 10s, 2m).
    #[arg(short, long, default_value = "5", value_parser = parse_secs)]
    duration: Duration,
    /// uni: the server counts; bi: the server sends every SDU back.
    #[arg(short, long, visible_alias = "mode", value_enum, default_value_t = Test::Uni)]
    test: Test,
    /// Send SDUs as fast as possible (the default unless -r is given).
    #[arg(short, long, conflicts_with = "rate")]
    flood: bool,
    /// Pace each flow to this payload rate in bit/s; a bare number is in
    /// kbit/s, or suffix k, M, G (as the model's operf).
    #[arg(short, long, value_parser = parse_rate)]
    rate: Option<u64>,
    /// Flows to run at once (aggregate rate and Jain's fairness index).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    flows: u64,
    /// Before the measured window, flood until the server has counted this
    /// many SDUs on every flow (at most 30 s; 0 = no warm-up). A fresh
    /// flow's rings get their memory as they first fill: irmd's ring slots
    /// (4096 by default) is the count that has every slot written once.
    #[arg(long, default_value_t = 0, value_name = "SDUS")]
    warmup: u64,
    /// Print a progress line every this many seconds (500ms, 1, 2s).
    #[arg(short, long, value_parser = parse_secs)]
    interval: Option<Duration>,
    /// QoS cube of the flows: raw, best, video, voice, data, raw_safe, raw_crypt.
    #[arg(short = 'q', long = "qos", default_value = "raw", value_parser = parse_qos)]
    qos: Qos,
    /// Flow liveness timeout in ms (default: irmd's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print one JSON object instead of text (progress lines go to stderr).
    #[arg(short, long)]
    json: bool,
    /// Write the manual page and shell completions under DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate: Option<std::path::PathBuf>,
}

/// The kind of test, named as the model's `-t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Test {
    /// The server counts what arrives.
    #[value(alias = "flood")]
    Uni,
    /// The server sends every SDU back; the client counts the echoes.
    #[value(alias = "echo")]
    Bi,
}

impl Test {
    fn kind(self) -> u8 {
        match self {
            Test::Uni => KIND_DATA,
            Test::Bi => KIND_ECHO,
        }
    }
}

/// What the client runs, from the arguments.
pub struct Config {
    pub name: String,
    pub size: usize,
    pub duration: Duration,
    pub rate_bps: Option<u64>,
    pub test: Test,
    pub flows: usize,
    /// SDUs every flow's server must have counted before the measured window.
    pub warmup: u64,
    pub progress: Option<Duration>,
    pub qos: Qos,
    pub json: bool,
}

/// `10M`, `500k`, `1G` bit/s; a bare number is in kbit/s.
fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        Some((i, 'G')) => (&t[..i], 1e9),
        _ => (t, 1e3),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (a number, then k, M or G)"))?;
    let bps = v * mul;
    if !bps.is_finite() || !(1.0..=1e12).contains(&bps) {
        return Err(format!("`{text}` is out of range (1 bit/s to 1 Tbit/s)"));
    }
    Ok(bps as u64)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate {
        return ethflow_tools::generate(<Args as clap::CommandFactory>::command(), dir);
    }
    ethflow_tools::init_log();
    let r = if args.listen { server() } else { client(&args) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operf: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

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
    let mut counted = PhasedTally::default();
    let end = loop {
        let n = match flow.read(&mut buf) {
            Ok(n) => n,
            Err(e) => break e,
        };
        if n == 0 {
            continue;
        }
        match buf[0] {
            KIND_DATA => counted.count(&buf[..n], Instant::now()),
            KIND_ECHO => {
                counted.count(&buf[..n], Instant::now());
                if let Err(e) = flow.write(&buf[..n]) {
                    break e;
                }
            }
            KIND_REPORT_REQ => {
                if let Err(e) = flow.write(&encode_report(request_id(&buf[..n]), &counted.tally)) {
                    break e;
                }
            }
            _ => {}
        }
    };
    let tally = counted.tally;
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

fn client(args: &Args) -> Result<(), String> {
    let stop = interrupt_flag();
    let cfg = Config {
        name: args.name.clone(),
        size: args.size as usize,
        duration: args.duration,
        rate_bps: args.rate,
        test: args.test,
        flows: args.flows as usize,
        warmup: args.warmup,
        progress: args.interval,
        qos: args.qos.with_timeout(args.timeout.unwrap_or(0)),
        json: args.json,
    };
    let outcome = client::run(&cfg, &stop)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&outcome).map_err(|e| e.to_string())?
        );
    } else {
        client::print_outcome(&outcome);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_the_models_units() {
        assert_eq!(parse_rate("10M"), Ok(10_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("2"), Ok(2_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn flags_follow_the_model() {
        let a = Args::try_parse_from([
            "operf", "-n", "x", "-d", "2", "-t", "bi", "-q", "video", "-i", "1", "--flows", "16",
        ])
        .expect("parse");
        assert_eq!(a.duration, Duration::from_secs(2));
        assert_eq!((a.test, a.flows, a.qos), (Test::Bi, 16, Qos::video()));
        assert_eq!(a.interval, Some(Duration::from_secs(1)));
        let a =
            Args::try_parse_from(["operf", "--mode", "echo", "-d", "500ms", "-f"]).expect("parse");
        assert_eq!((a.test, a.duration), (Test::Bi, Duration::from_millis(500)));
        let e = Args::try_parse_from(["operf", "-f", "-r", "1M"]).expect_err("conflict");
        assert_eq!(e.exit_code(), i32::from(ethflow_tools::EXIT_USAGE));
        let e = Args::try_parse_from(["operf", "-d", "0"]).expect_err("zero");
        assert_eq!(e.exit_code(), i32::from(ethflow_tools::EXIT_USAGE));
    }
}
