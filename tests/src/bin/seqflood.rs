//! `seqflood`: many flows flooding at once, every SDU numbered, for the
//! multi-queue tests: the sink checks that each flow's SDUs arrive in order,
//! none lost, none twice.
//!
//! The flooder keeps at most two windows of SDUs in flight per flow (the sink
//! acknowledges the last SDU of each window), so a receive ring never
//! overflows at any speed and a lost SDU is a fault of the stack, not of the
//! test. Exit 0 = every check passed, 1 = a check failed, 2 = an ethflow call
//! failed.

use std::process::exit;
use std::time::Duration;

use clap::{Parser, Subcommand};
use irm::{Error, Flow, Qos};

/// SDUs per acknowledged window.
const WINDOW: u64 = 64;
/// The sequence number of the closing SDU (it carries the count).
const END: u64 = u64::MAX;
/// Bound on every read the checks wait on.
const STEP: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "seqflood", about = "numbered floods on many flows at once")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept FLOWS flows and check each one's sequence numbers.
    Sink {
        #[arg(long)]
        flows: usize,
    },
    /// Open FLOWS flows and send SDUS numbered SDUs of SIZE bytes on each,
    /// all flows at once.
    Flood {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        flows: usize,
        #[arg(long)]
        sdus: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
}

fn main() {
    let code = match Cli::parse().cmd {
        Cmd::Sink { flows } => sink(flows),
        Cmd::Flood {
            name,
            flows,
            sdus,
            size,
        } => flood(&name, flows, sdus, size.max(8)),
    };
    exit(code);
}

fn failed(what: &str, e: &Error) -> i32 {
    println!("error what={what} code={} err={e}", e.code());
    2
}

fn seq_of(buf: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(buf.get(..8)?.try_into().ok()?))
}

fn sink(count: usize) -> i32 {
    let mut threads = Vec::new();
    for _ in 0..count {
        let flow = match Flow::accept(None) {
            Ok(f) => f,
            Err(e) => return failed("accept", &e),
        };
        threads.push(std::thread::spawn(move || sink_one(flow)));
    }
    let mut worst = 0;
    for t in threads {
        worst = worst.max(t.join().unwrap_or(1));
    }
    println!("sink flows={count} exit={worst}");
    worst
}

fn sink_one(flow: Flow) -> i32 {
    let id = flow.flow_id();
    flow.set_read_timeout(Some(STEP));
    let mut buf = vec![0u8; flow.max_sdu().max(64)];
    let mut want = 0u64;
    loop {
        let n = match flow.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return failed("read", &e),
        };
        let Some(seq) = seq_of(&buf[..n]) else {
            println!("short flow_id={id} len={n}");
            return 1;
        };
        if seq == END {
            let sent = seq_of(&buf[8..n]).unwrap_or(0);
            if sent != want {
                println!("lost flow_id={id} sent={sent} got={want}");
                return 1;
            }
            let _ = flow.write(&END.to_be_bytes());
            println!("in-order flow_id={id} sdus={want}");
            return 0;
        }
        if seq != want {
            println!("out-of-order flow_id={id} want={want} got={seq}");
            return 1;
        }
        want += 1;
        if want.is_multiple_of(WINDOW) {
            if let Err(e) = flow.write(&seq.to_be_bytes()) {
                return failed("write", &e);
            }
        }
    }
}

fn flood(name: &str, count: usize, sdus: u64, size: usize) -> i32 {
    let mut flows = Vec::new();
    for _ in 0..count {
        match Flow::alloc(name, &Qos::raw(), Some(STEP)) {
            Ok(f) => flows.push(f),
            Err(e) => return failed("alloc", &e),
        }
    }
    println!("allocated flows={count}");
    let threads: Vec<_> = flows
        .into_iter()
        .map(|f| std::thread::spawn(move || flood_one(f, sdus, size)))
        .collect();
    let mut worst = 0;
    for t in threads {
        worst = worst.max(t.join().unwrap_or(1));
    }
    println!("flood flows={count} sdus={sdus} exit={worst}");
    worst
}

/// Wait for the sink's acknowledgement of `seq`.
fn ack(flow: &Flow, seq: u64, buf: &mut [u8]) -> Result<(), i32> {
    let n = flow.read(buf).map_err(|e| failed("read", &e))?;
    match seq_of(&buf[..n]) {
        Some(s) if s == seq => Ok(()),
        other => {
            println!(
                "bad-ack flow_id={} want={seq} got={other:?}",
                flow.flow_id()
            );
            Err(1)
        }
    }
}

fn flood_one(flow: Flow, sdus: u64, size: usize) -> i32 {
    flow.set_read_timeout(Some(STEP));
    let mut sdu = vec![0x5a; size];
    let mut buf = vec![0u8; 64];
    for seq in 0..sdus {
        sdu[..8].copy_from_slice(&seq.to_be_bytes());
        if let Err(e) = flow.write(&sdu) {
            return failed("write", &e);
        }
        // Two windows in flight: after sending window k, wait for k - 1.
        if (seq + 1).is_multiple_of(WINDOW) && seq + 1 >= 2 * WINDOW {
            if let Err(code) = ack(&flow, seq - WINDOW, &mut buf) {
                return code;
            }
        }
    }
    // The loop waited for windows 1..K-1; window K's acknowledgement is owed.
    let windows = sdus / WINDOW;
    if windows >= 1 {
        if let Err(code) = ack(&flow, windows * WINDOW - 1, &mut buf) {
            return code;
        }
    }
    let mut end = END.to_be_bytes().to_vec();
    end.extend_from_slice(&sdus.to_be_bytes());
    if let Err(e) = flow.write(&end) {
        return failed("write", &e);
    }
    if let Err(code) = ack(&flow, END, &mut buf) {
        return code;
    }
    println!("sent flow_id={} sdus={sdus}", flow.flow_id());
    0
}
