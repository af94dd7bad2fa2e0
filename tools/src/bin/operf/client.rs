//! The client side: N flows written at once (each by its own thread), a
//! reader per flow that counts echoes and picks up the server's reports,
//! progress lines, and the outcome (receiver's view, per flow and in total).

use crate::report::*;
use crate::{Config, Test};
use ethflow_tools::{describe, interrupted, jain_index, Wakes, JSON_VERSION};
use irm::{Error, Flow};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the client keeps asking for the server's final report.
const REPORT_WAIT: Duration = Duration::from_secs(10);
/// Between two report requests (the first may be dropped by a full ring).
const REPORT_RETRY: Duration = Duration::from_millis(200);
/// How long one flow's allocation may take.
const ALLOC_WAIT: Duration = Duration::from_secs(10);
/// The longest warm-up (`--warmup`): the run goes on without a full one.
const WARMUP_LIMIT: Duration = Duration::from_secs(30);
/// Between two warm-up report requests.
const WARMUP_POLL: Duration = Duration::from_millis(200);
/// Progress report ids during the warm-up (progress lines count up from 0).
const WARMUP_ID_BASE: u64 = 1 << 62;

/// When the measured window starts: set once, by the thread that ends the
/// warm-up (at once without one); the writers look every 64 SDUs.
#[derive(Default)]
struct Gate {
    start: OnceLock<Instant>,
}

/// One flow of the run and what its threads share.
struct Lane {
    flow: Flow,
    sent: AtomicU64,
    /// Echoes counted by the reader (test `bi`).
    echoes: Mutex<Tally>,
    /// The server's latest progress report and its final one.
    progress: Mutex<Option<Report>>,
    last: Mutex<Option<Report>>,
    /// Tells the reader to stop.
    done: AtomicBool,
}

/// One flow's figures in the outcome.
#[derive(Serialize, Debug, Clone)]
pub struct FlowOutcome {
    pub flow_id: u64,
    pub sent: u64,
    pub received: u64,
    pub bytes: u64,
    pub sdus_per_s: f64,
    pub mbit_per_s: f64,
}

/// The client's result, as `--json` prints it (docs/json.md, "Tools").
/// Rates are the receiver's: the server's for `uni`, the client's reader's
/// for `bi`; the totals are all flows' SDUs over the longest receive window.
#[derive(Serialize, Debug)]
pub struct Outcome {
    pub version: u32,
    pub kind: &'static str,
    pub test: Test,
    pub size: u64,
    pub duration_s: f64,
    /// The rate asked for per flow, bit/s of payload (`null` = as fast as possible).
    pub rate_bps: Option<u64>,
    pub flows: usize,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub sdus_per_s: f64,
    pub mbit_per_s: f64,
    /// Rate at which the client wrote, all flows.
    pub sender_sdus_per_s: f64,
    /// SDUs the server counted (equals `received` for `uni`).
    pub server_received: u64,
    /// The longest receive window of a flow, first to last SDU.
    pub window_s: f64,
    /// Jain's fairness index of what the flows received (1 = equal shares).
    pub jain_index: f64,
    /// SDUs every flow's server was to count before the measured window
    /// (`--warmup`; 0 = none), how long the warm-up took, and whether every
    /// flow got there within the limit.
    pub warmup_sdus: u64,
    pub warmup_s: f64,
    pub warmup_complete: bool,
    /// Whether Ctrl-C or SIGTERM cut the run short.
    pub interrupted: bool,
    /// The client's wake-ups over the run, per SDU it wrote.
    pub wakes: Wakes,
    pub per_flow: Vec<FlowOutcome>,
}

pub fn run(cfg: &Config, stop: &Arc<AtomicBool>) -> Result<Outcome, String> {
    let mut lanes = Vec::with_capacity(cfg.flows);
    for i in 0..cfg.flows {
        if interrupted(stop) {
            return Err(format!("interrupted after allocating {i} flows"));
        }
        let flow = Flow::alloc(&cfg.name, &cfg.qos, Some(ALLOC_WAIT)).map_err(|e| {
            format!(
                "cannot allocate flow {} of {} to {}: {}",
                i + 1,
                cfg.flows,
                cfg.name,
                describe(&e)
            )
        })?;
        if cfg.size > flow.max_sdu() || REPORT_LEN > flow.max_sdu() {
            return Err(format!(
                "size {} exceeds the flow's maximum SDU of {}",
                cfg.size,
                flow.max_sdu()
            ));
        }
        lanes.push(Arc::new(Lane {
            flow,
            sent: AtomicU64::new(0),
            echoes: Mutex::default(),
            progress: Mutex::default(),
            last: Mutex::default(),
            done: AtomicBool::new(false),
        }));
    }
    if !cfg.json {
        println!(
            "operf: {} test to {} with {}-byte SDUs for {} s over {} flow(s){}.",
            if cfg.test == Test::Uni { "uni" } else { "bi" },
            cfg.name,
            cfg.size,
            cfg.duration.as_secs_f64(),
            cfg.flows,
            cfg.rate_bps.map_or(String::from(", flooding"), |r| format!(
                " at {r} bit/s each"
            ))
        );
    }
    let readers: Vec<_> = lanes
        .iter()
        .map(|l| {
            let l = l.clone();
            std::thread::spawn(move || read_lane(&l))
        })
        .collect();
    let gate = Arc::new(Gate::default());
    let warmup_began = Instant::now();
    if cfg.warmup == 0 {
        gate.start.get_or_init(Instant::now);
    }
    let writers: Vec<_> = lanes
        .iter()
        .map(|l| {
            let (l, stop, gate) = (l.clone(), stop.clone(), gate.clone());
            let (kind, size, rate, duration) =
                (cfg.test.kind(), cfg.size, cfg.rate_bps, cfg.duration);
            std::thread::spawn(move || write_lane(&l, kind, size, rate, duration, &gate, &stop))
        })
        .collect();
    let warmup_complete = cfg.warmup == 0 || warm_up(&lanes, cfg, stop);
    for l in &lanes {
        // The warm-up's counts are not the measured window's progress.
        *l.progress.lock().expect("report") = None;
    }
    let start = *gate.start.get_or_init(Instant::now);
    let warmup_s = if cfg.warmup == 0 {
        0.0
    } else {
        (start - warmup_began).as_secs_f64()
    };
    let wakes_before = irm::shm::wake_stats();
    if let Some(every) = cfg.progress {
        progress(&lanes, cfg, start, every, stop);
    }
    let mut failure = None;
    for w in writers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("writer thread panicked".into())),
        }
    }
    let took = start.elapsed();
    // Ask every flow's server for its final counters; they follow every data
    // SDU the server got on that flow, and every echo it sent.
    let outcome = final_reports(&lanes);
    for l in &lanes {
        l.done.store(true, Ordering::Release);
    }
    for r in readers {
        if let Ok(Err(e)) = r.join() {
            failure = failure.or(Some(e));
        }
    }
    let reports = outcome?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut o = summarize(cfg, &lanes, &reports, took, interrupted(stop));
    o.wakes = Wakes::since(&wakes_before, o.sent);
    (o.warmup_sdus, o.warmup_s, o.warmup_complete) = (cfg.warmup, warmup_s, warmup_complete);
    Ok(o)
}

/// Ask every flow's server for its count until each has counted
/// `cfg.warmup` SDUs (true), or `WARMUP_LIMIT` passed or Ctrl-C (false).
/// The writers flood meanwhile, with the warm-up phase byte.
fn warm_up(lanes: &[Arc<Lane>], cfg: &Config, stop: &AtomicBool) -> bool {
    let give_up = Instant::now() + WARMUP_LIMIT;
    let mut id = WARMUP_ID_BASE;
    loop {
        let warm = lanes.iter().all(|l| {
            l.progress
                .lock()
                .expect("report")
                .is_some_and(|r| r.id >= WARMUP_ID_BASE && r.received >= cfg.warmup)
        });
        if warm {
            return true;
        }
        if Instant::now() >= give_up
            || !ethflow_tools::sleep_until(Instant::now() + WARMUP_POLL, stop)
        {
            return false;
        }
        for l in lanes {
            // A request the full ring refuses is asked again next time.
            let _ = l.flow.write(&encode_request(id));
        }
        id += 1;
    }
}

/// Write SDUs of `kind` as fast as the ring takes them or paced to `rate`
/// bit/s: with the warm-up phase byte until `gate` opens, then for
/// `duration` from the gate's start (or until Ctrl-C). Only SDUs of the
/// measured window count as sent.
fn write_lane(
    l: &Lane,
    kind: u8,
    size: usize,
    rate: Option<u64>,
    duration: Duration,
    gate: &Gate,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut sdu = vec![0u8; size];
    sdu[0] = kind;
    sdu[1] = PHASE_WARMUP;
    let mut start = Instant::now();
    let mut until = None;
    let per_s = rate.map(|r| r as f64 / (size as f64 * 8.0));
    let mut sent = 0u64;
    loop {
        // The clock and the gate are read once per 64 SDUs when flooding:
        // cheap, and at most 64 SDUs late.
        if per_s.is_some() || sent.is_multiple_of(64) {
            if interrupted(stop) {
                break;
            }
            match (until, gate.start.get()) {
                (None, Some(&s)) => {
                    (start, until, sent) = (s, Some(s + duration), 0);
                    sdu[1] = PHASE_MEASURED;
                }
                (Some(u), _) if Instant::now() >= u => break,
                _ => {}
            }
        }
        if let Some(per_s) = per_s {
            let due = start + Duration::from_secs_f64(sent as f64 / per_s);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(10)));
                continue;
            }
        }
        sdu[8..16].copy_from_slice(&sent.to_be_bytes());
        l.flow
            .write(&sdu)
            .map_err(|e| format!("write failed after {sent} SDUs: {}", describe(&e)))?;
        sent += 1;
        if until.is_some() && (sent.is_multiple_of(64) || per_s.is_some()) {
            l.sent.store(sent, Ordering::Relaxed);
        }
    }
    if until.is_none() {
        // Stopped (Ctrl-C) before the measured window: nothing counts.
        sent = 0;
    }
    l.sent.store(sent, Ordering::Relaxed);
    Ok(())
}

/// Count echoes and keep the server's reports until told to stop.
fn read_lane(l: &Lane) -> Result<(), String> {
    let mut buf = vec![0u8; 65536];
    l.flow.set_read_timeout(Some(Duration::from_millis(100)));
    while !l.done.load(Ordering::Acquire) {
        match l.flow.read(&mut buf) {
            Ok(n) if n > 0 && buf[0] == KIND_ECHO => {
                if phase_of(&buf[..n]) == PHASE_MEASURED {
                    l.echoes.lock().expect("echoes").count(n, Instant::now())
                }
            }
            Ok(n) => {
                if let Some(r) = decode_report(&buf[..n]) {
                    let slot = if r.id == FINAL_ID {
                        &l.last
                    } else {
                        &l.progress
                    };
                    *slot.lock().expect("report") = Some(r);
                }
            }
            Err(Error::TimedOut) => {}
            Err(e) => return Err(format!("read failed: {}", describe(&e))),
        }
    }
    Ok(())
}

/// Ask each flow for its final report until all came or `REPORT_WAIT` passed.
fn final_reports(lanes: &[Arc<Lane>]) -> Result<Vec<Report>, String> {
    let give_up = Instant::now() + REPORT_WAIT;
    loop {
        let missing: Vec<&Arc<Lane>> = lanes
            .iter()
            .filter(|l| l.last.lock().expect("report").is_none())
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= give_up {
            return Err(format!(
                "no report from the server on {} of {} flow(s) within {} s",
                missing.len(),
                lanes.len(),
                REPORT_WAIT.as_secs()
            ));
        }
        for l in missing {
            l.flow
                .write(&encode_request(FINAL_ID))
                .map_err(|e| format!("cannot ask for the report: {}", describe(&e)))?;
        }
        std::thread::sleep(REPORT_RETRY);
    }
    Ok(lanes
        .iter()
        .map(|l| l.last.lock().expect("report").expect("checked above"))
        .collect())
}

/// Every `every`, one line: what was written in the interval and what the
/// receiver got (the server's reports, asked for at each line, arrive
/// during the next interval: the receiver's column lags one interval).
fn progress(lanes: &[Arc<Lane>], cfg: &Config, start: Instant, every: Duration, stop: &AtomicBool) {
    let end = start + cfg.duration;
    let (mut prev_sent, mut prev_rx, mut prev_t) = (0u64, 0u64, start);
    let mut id = 0u64;
    let mut tick = start + every;
    while tick < end + every / 2 && ethflow_tools::sleep_until(tick.min(end), stop) {
        let now = Instant::now();
        let sent: u64 = lanes.iter().map(|l| l.sent.load(Ordering::Relaxed)).sum();
        let rx: u64 = lanes
            .iter()
            .map(|l| match cfg.test {
                Test::Uni => l.progress.lock().expect("report").map_or(0, |r| r.received),
                Test::Bi => l.echoes.lock().expect("echoes").sdus,
            })
            .sum();
        let secs = (now - prev_t).as_secs_f64().max(1e-9);
        let line = format!(
            "[{:6.1} s] sent {:>10} SDUs ({:>9.0} SDUs/s); {} {:>10} SDUs ({:>9.0} SDUs/s)",
            (now - start).as_secs_f64(),
            sent,
            (sent - prev_sent) as f64 / secs,
            if cfg.test == Test::Uni {
                "server got"
            } else {
                "echoed"
            },
            rx,
            rx.saturating_sub(prev_rx) as f64 / secs,
        );
        if cfg.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        if cfg.test == Test::Uni {
            for l in lanes {
                let _ = l.flow.write(&encode_request(id));
            }
            id += 1;
        }
        (prev_sent, prev_rx, prev_t) = (sent, rx, now);
        if now >= end {
            break;
        }
        tick += every;
    }
}

fn summarize(
    cfg: &Config,
    lanes: &[Arc<Lane>],
    reports: &[Report],
    took: Duration,
    interrupted: bool,
) -> Outcome {
    let per_flow: Vec<FlowOutcome> = lanes
        .iter()
        .zip(reports)
        .map(|(l, r)| {
            let (received, bytes, window) = match cfg.test {
                Test::Uni => (r.received, r.bytes, r.window),
                Test::Bi => {
                    let t = l.echoes.lock().expect("echoes");
                    (t.sdus, t.bytes, t.window())
                }
            };
            let (sdus_per_s, mbit_per_s) = rates(received, bytes, window);
            FlowOutcome {
                flow_id: l.flow.flow_id() as u64,
                sent: l.sent.load(Ordering::Relaxed),
                received,
                bytes,
                sdus_per_s,
                mbit_per_s,
            }
        })
        .collect();
    let windows: Vec<Duration> = lanes
        .iter()
        .zip(reports)
        .map(|(l, r)| match cfg.test {
            Test::Uni => r.window,
            Test::Bi => l.echoes.lock().expect("echoes").window(),
        })
        .collect();
    outcome(cfg, per_flow, reports, &windows, took, interrupted)
}

fn outcome(
    cfg: &Config,
    per_flow: Vec<FlowOutcome>,
    reports: &[Report],
    windows: &[Duration],
    took: Duration,
    interrupted: bool,
) -> Outcome {
    let sent: u64 = per_flow.iter().map(|f| f.sent).sum();
    let received: u64 = per_flow.iter().map(|f| f.received).sum();
    let bytes: u64 = per_flow.iter().map(|f| f.bytes).sum();
    let lost = sent.saturating_sub(received);
    // The flows run side by side: the aggregate is everything received over
    // the longest receive window (a flow that got a few SDUs early has a
    // tiny window of its own, so summing per-flow rates would overstate it),
    // and fairness compares what each flow got in that same time.
    let window = windows.iter().max().copied().unwrap_or_default();
    let (sdus_per_s, mbit_per_s) = rates(received, bytes, window);
    let shares: Vec<f64> = per_flow.iter().map(|f| f.received as f64).collect();
    Outcome {
        version: JSON_VERSION,
        kind: "operf",
        test: cfg.test,
        size: cfg.size as u64,
        duration_s: cfg.duration.as_secs_f64(),
        rate_bps: cfg.rate_bps,
        flows: per_flow.len(),
        sent,
        received,
        lost,
        loss_pct: if sent == 0 {
            0.0
        } else {
            100.0 * lost as f64 / sent as f64
        },
        sdus_per_s,
        mbit_per_s,
        sender_sdus_per_s: sent as f64 / took.as_secs_f64().max(1e-9),
        server_received: reports.iter().map(|r| r.received).sum(),
        window_s: window.as_secs_f64(),
        jain_index: jain_index(&shares),
        warmup_sdus: 0,
        warmup_s: 0.0,
        warmup_complete: true,
        interrupted,
        wakes: Wakes::default(),
        per_flow,
    }
}

pub fn print_outcome(o: &Outcome) {
    println!(
        "sent:     {} SDUs ({:.0} SDUs/s)",
        o.sent, o.sender_sdus_per_s
    );
    if o.test == Test::Bi {
        println!("server:   {} SDUs received and echoed", o.server_received);
    }
    println!("received: {} SDUs in {:.3} s", o.received, o.window_s);
    println!("lost:     {} SDUs ({:.3}%)", o.lost, o.loss_pct);
    println!(
        "receiver: {:.0} SDUs/s, {:.1} Mbit/s",
        o.sdus_per_s, o.mbit_per_s
    );
    if o.flows > 1 {
        println!(
            "flows:    {} (Jain's fairness index {:.3})",
            o.flows, o.jain_index
        );
    }
    if o.interrupted {
        println!("(interrupted)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(flows: usize) -> Config {
        Config {
            name: "operf".into(),
            size: 64,
            duration: Duration::from_secs(1),
            rate_bps: None,
            test: Test::Uni,
            flows,
            warmup: 0,
            progress: None,
            qos: irm::Qos::raw(),
            json: true,
        }
    }

    fn flow(sent: u64, received: u64, pps: f64) -> FlowOutcome {
        FlowOutcome {
            flow_id: 1,
            sent,
            received,
            bytes: received * 64,
            sdus_per_s: pps,
            mbit_per_s: pps * 64.0 * 8.0 / 1e6,
        }
    }

    #[test]
    fn totals_and_fairness_over_flows() {
        let r = Report {
            id: FINAL_ID,
            received: 0,
            bytes: 0,
            window: Duration::from_secs(1),
        };
        let o = outcome(
            &cfg(2),
            vec![flow(1000, 990, 990.0), flow(1000, 1000, 1000.0)],
            &[r, r],
            &[Duration::from_secs(1), Duration::from_millis(900)],
            Duration::from_secs(1),
            false,
        );
        assert_eq!((o.sent, o.received, o.lost), (2000, 1990, 10));
        assert!((o.loss_pct - 0.5).abs() < 1e-9);
        assert_eq!(o.sdus_per_s, 1990.0);
        assert!(o.jain_index > 0.999 && o.jain_index <= 1.0);
        assert_eq!(o.window_s, 1.0);
        let v = serde_json::to_value(&o).expect("json");
        assert_eq!(v["version"], JSON_VERSION);
        assert_eq!(v["test"], "uni");
        assert_eq!(v["per_flow"].as_array().map(Vec::len), Some(2));
        // A flow that got 10 SDUs within 10 µs does not count as 1 M SDUs/s.
        let o = outcome(
            &cfg(2),
            vec![flow(1000, 990, 990.0), flow(1000, 10, 1e6)],
            &[r, r],
            &[Duration::from_secs(1), Duration::from_micros(10)],
            Duration::from_secs(1),
            false,
        );
        assert_eq!(o.sdus_per_s, 1000.0);
        assert!(o.jain_index < 0.6, "{}", o.jain_index);
    }
}
