//! `mtuprobe`: the writer's side of the MTU-shrink test (tests/tests/mtu.rs).
//!
//! Talks to `flowtest serve` (an echo server) over one flow, in three phases
//! the test steers through stdout lines and files:
//!
//! 1. SDUs of the flow's max SDU echo intact; prints `ready max_sdu=N`.
//! 2. Writes SDUs of that size every `--gap-ms` (reading echoes as they
//!    come, non-blocking) while the test lowers the MTU, until a write is
//!    refused with EMSGSIZE; prints `refused ...` and, after the echoes
//!    settle, `drained ...`.
//! 3. Once `--go` exists: small SDUs and SDUs of the new max SDU echo
//!    intact, one byte more is refused (write and write_batch); prints
//!    `after ...`.
//! 4. Once `--regrow` exists (the test raised the MTU back): the max SDU
//!    returns to the allocation's and SDUs of that size echo again; prints
//!    `regrown ...` and `done written=N`, then holds the flow until
//!    `--finish` exists, so the test can read the flow's counters.
//!
//! Exit 0 = every check passed, 1 = a check failed, 2 = an ethflow call failed.

use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::{Duration, Instant};

use clap::Parser;
use irm::{Error, Flow, Qos};

/// Bound for the allocation, each echo, and each wait for a file.
const STEP: Duration = Duration::from_secs(5);
/// Bound for phase 2 (the MTU change must reach the application by then).
const PHASE2: Duration = Duration::from_secs(20);
/// Bound for each wait on the test.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(name = "mtuprobe", about = "writer side of ethflow's MTU-shrink test")]
struct Cli {
    #[arg(short = 'n', long)]
    name: String,
    /// Start phase 3 once this file exists.
    #[arg(long)]
    go: PathBuf,
    /// Start phase 4 once this file exists.
    #[arg(long)]
    regrow: PathBuf,
    /// Deallocate and exit once this file exists.
    #[arg(long)]
    finish: PathBuf,
    /// Pause between the SDUs of phase 2.
    #[arg(long, default_value_t = 2)]
    gap_ms: u64,
}

struct Probe {
    flow: Flow,
    buf: Vec<u8>,
    /// SDUs `write` accepted, over the whole run.
    written: u64,
}

/// A failed ethflow call: exit 2.
fn failed(what: &str, e: &Error) -> ! {
    println!("failed op={what} code={} err={e}", e.code());
    eprintln!("mtuprobe: {what}: {e}");
    exit(2)
}

/// A failed check: exit 1.
fn check_failed(msg: &str) -> ! {
    println!("check-failed {msg}");
    eprintln!("mtuprobe: {msg}");
    exit(1)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed) as u8)
        .collect()
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        if Instant::now() >= deadline {
            check_failed(&format!("no-file path={}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Probe {
    fn write(&mut self, sdu: &[u8]) -> Result<(), Error> {
        self.flow.write(sdu)?;
        self.written += 1;
        Ok(())
    }

    /// Write `sdu` and check that the same bytes come back.
    fn echo(&mut self, sdu: &[u8], what: &str) {
        if let Err(e) = self.write(sdu) {
            failed(what, &e);
        }
        self.flow.set_read_timeout(Some(STEP));
        match self.flow.read(&mut self.buf) {
            Ok(n) if self.buf[..n] == *sdu => {}
            Ok(n) => check_failed(&format!(
                "echo-mismatch what={what} len={n} sent={}",
                sdu.len()
            )),
            Err(e) => failed(what, &e),
        }
    }

    /// Echoes waiting now, without blocking.
    fn drain_now(&mut self) -> u64 {
        let mut n = 0;
        while self.flow.read_with(&mut self.buf, None, true).is_ok() {
            n += 1;
        }
        n
    }

    /// Echoes arriving until the flow has been quiet for 300 ms.
    fn drain_quiet(&mut self) -> u64 {
        let mut n = 0;
        while self
            .flow
            .read_with(&mut self.buf, Some(Duration::from_millis(300)), false)
            .is_ok()
        {
            n += 1;
        }
        n
    }
}

fn main() {
    let cli = Cli::parse();
    let flow = match Flow::alloc(&cli.name, &Qos::raw(), Some(STEP)) {
        Ok(f) => f,
        Err(e) => failed("alloc", &e),
    };
    let mut p = Probe {
        buf: vec![0u8; 65_536],
        flow,
        written: 0,
    };

    // Phase 1: the allocation's max SDU goes through.
    let old_max = p.flow.max_sdu();
    for k in 0..5 {
        p.echo(&pattern(old_max, k), "echo-old-max");
    }
    println!("ready max_sdu={old_max}");

    // Phase 2: keep writing SDUs of the old max until the library refuses one.
    let deadline = Instant::now() + PHASE2;
    let mut big = 0u64;
    let mut echoed = 0u64;
    let sdu = pattern(old_max, 99);
    let refused = loop {
        if Instant::now() >= deadline {
            check_failed(&format!(
                "never-refused max_sdu={} written={big}",
                p.flow.max_sdu()
            ));
        }
        match p.write(&sdu) {
            Ok(()) => big += 1,
            Err(e) if e.code() == libc::EMSGSIZE => break e,
            Err(e) => failed("write-old-max", &e),
        }
        echoed += p.drain_now();
        std::thread::sleep(Duration::from_millis(cli.gap_ms));
    };
    println!(
        "refused len={old_max} max_sdu={} written={big} code={} err={refused}",
        p.flow.max_sdu(),
        refused.code()
    );
    echoed += p.drain_quiet();
    println!("drained written={big} echoed={echoed}");

    // Phase 3: the flow still works below the new limit, refuses above it.
    wait_for(&cli.go);
    let new_max = p.flow.max_sdu();
    if new_max >= old_max {
        check_failed(&format!("max-not-lowered old={old_max} new={new_max}"));
    }
    for k in 0..10 {
        p.echo(&pattern(64, k), "echo-small");
    }
    p.echo(&pattern(new_max, 7), "echo-new-max");
    let over = pattern(new_max + 1, 8);
    let single = p.flow.write(&over);
    let batch = p.flow.write_batch(&[pattern(64, 9), over]);
    for (what, r) in [("write", single), ("write_batch", batch)] {
        match r {
            Err(e) if e.code() == libc::EMSGSIZE => {}
            Err(e) => failed(&format!("{what}-new-max-plus-one"), &e),
            Ok(_) => check_failed(&format!("{what}-accepted len={}", new_max + 1)),
        }
    }
    // Nothing half-written by the refused batch: the ring is as it was.
    p.echo(&pattern(64, 10), "echo-after-refusal");
    println!("after old_max={old_max} max_sdu={new_max} small-ok exact-ok oversize-refused");

    // Phase 4: a raised MTU lifts the limit back to the allocation's.
    wait_for(&cli.regrow);
    let deadline = Instant::now() + STEP;
    while p.flow.max_sdu() != old_max {
        if Instant::now() >= deadline {
            check_failed(&format!(
                "max-not-raised old={old_max} now={}",
                p.flow.max_sdu()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for k in 0..3 {
        p.echo(&pattern(old_max, 20 + k), "echo-old-max-again");
    }
    match p.flow.write(&pattern(old_max + 1, 30)) {
        Err(e) if e.code() == libc::EMSGSIZE => {}
        Err(e) => failed("write-old-max-plus-one", &e),
        Ok(_) => check_failed(&format!("write-accepted len={}", old_max + 1)),
    }
    println!("regrown max_sdu={}", p.flow.max_sdu());
    println!("done written={}", p.written);
    wait_for(&cli.finish);
}
