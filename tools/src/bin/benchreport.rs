//! `benchreport`: turns the measurements scripts/bench.sh collected (one JSON
//! file per measurement) into `report.json` (every figure, the ratios, the
//! targets), `report.md` and SVG charts.
//!
//! ```text
//! benchreport --input target/bench/raw --out target/bench [--check] [--update-doc docs/benchmarks.md]
//! ```
//!
//! `--check` fails unless every figure was produced and is positive (the smoke
//! test). `--update-doc` puts the report between the `<!-- bench:begin -->`
//! and `<!-- bench:end -->` markers of a document and copies the charts next to
//! it (into `bench/`).

use clap::Parser;
use plotters::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "benchreport", about = "ethflow benchmark report generator")]
struct Args {
    /// Folder of measurement files written by scripts/bench.sh.
    #[arg(long)]
    input: PathBuf,
    /// Where report.json, report.md and the charts go.
    #[arg(long)]
    out: PathBuf,
    /// Fail unless every figure is present and positive.
    #[arg(long)]
    check: bool,
    /// Replace the report section of this Markdown document and copy the charts beside it.
    #[arg(long)]
    update_doc: Option<PathBuf>,
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
const THROUGHPUT_SVG: &str = "throughput.svg";
const RTT_SVG: &str = "rtt.svg";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchreport: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let inputs = collapse_repeats(load(&args.input)?);
    let report = build(&inputs);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let write = |name: &str, text: String| {
        let p = args.out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(&report).expect("json"),
    )?;
    throughput_chart(&report, &args.out.join(THROUGHPUT_SVG))?;
    rtt_chart(&report, &args.out.join(RTT_SVG))?;
    let md = markdown(&report, "");
    write("report.md", md)?;
    if let Some(doc) = &args.update_doc {
        update_doc(doc, &report, &args.out)?;
    }
    let missing = missing_figures(&report);
    for m in &missing {
        eprintln!("benchreport: figure missing or not positive: {m}");
    }
    if args.check && !missing.is_empty() {
        return Err(format!(
            "{} figure(s) missing or not positive",
            missing.len()
        ));
    }
    println!(
        "benchreport: wrote {}",
        args.out.join("report.json").display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// Every `*.json` file of the folder, by file stem.
fn load(dir: &Path) -> Result<BTreeMap<String, Value>, String> {
    let mut m = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        // A tool that failed leaves an empty or partial file: that figure is missing.
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) => {
                m.insert(stem, v);
            }
            Err(err) => eprintln!("benchreport: skipping {}: {err}", p.display()),
        }
    }
    Ok(m)
}

/// A measurement repeated as `NAME@1`, `NAME@2`, ... becomes `NAME`: the run
/// with the median figure (the lower one of the middle two), with every run's
/// figure in `runs` (ascending).
fn collapse_repeats(inputs: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, v) in inputs {
        let base = name.split('@').next().unwrap_or(&name).to_string();
        groups.entry(base).or_default().push(v);
    }
    groups
        .into_iter()
        .map(|(name, mut runs)| {
            let figure = |v: &Value| -> f64 {
                if name.starts_with("iperf3udp") {
                    iperf3_udp(v, 0)
                        .and_then(|x| num(&x, &["sdus_per_s"]))
                        .unwrap_or(0.0)
                } else if name.starts_with("iperf3tcp") {
                    num(v, &["end", "sum_received", "bits_per_second"]).unwrap_or(0.0)
                } else if name.starts_with("cpu_") {
                    num(v, &["cpu_ns_per_sdu"]).unwrap_or(0.0)
                } else {
                    num(v, &["sdus_per_s"]).unwrap_or(0.0)
                }
            };
            runs.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
            let figures: Vec<f64> = runs.iter().map(figure).collect();
            let mut median = runs.swap_remove((runs.len() - 1) / 2);
            if figures.len() > 1 {
                if let Some(o) = median.as_object_mut() {
                    o.insert("runs".into(), json!(figures));
                }
            }
            (name, median)
        })
        .collect()
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// Measurement files are named `kind_mtu_size` (for example `raw_1500_mmsg_64`,
/// `operf_9000_8900` (backend raw), `operfxdp_1500_64` (backend xdp),
/// `operfkey_1500_64` / `operfencrypt_1500_64` (backend raw with a layer key,
/// without and with `encrypt`), `cpu_xdp_1500_64`, `iperf3udp_1500_64`, `iperf3tcp_9000`,
/// `rtt_raw`, `flood_xdp`, `kaflood_5000`, `alloc_seq`, `alloc_hold`, `meta`).
fn build(inputs: &BTreeMap<String, Value>) -> Value {
    let mut raw: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut operf: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut operf_xdp: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut operf_key: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut operf_encrypt: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut cpu: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> = BTreeMap::new();
    let mut flood = Map::new();
    let mut kaflood = Map::new();
    let mut udp: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut tcp: BTreeMap<String, Value> = BTreeMap::new();
    let mut rtt = Map::new();
    let mut alloc = Map::new();
    for (name, v) in inputs {
        let parts: Vec<&str> = name.split('_').collect();
        match parts.as_slice() {
            ["raw", mtu, mode, size] => {
                let e = raw
                    .entry(mtu.to_string())
                    .or_default()
                    .entry(size.to_string())
                    .or_insert_with(|| json!({"modes": {}}));
                e["modes"][*mode] = v.clone();
                let pps = num(v, &["sdus_per_s"]).unwrap_or(0.0);
                if pps > num(e, &["sdus_per_s"]).unwrap_or(0.0) {
                    e["sdus_per_s"] = json!(pps);
                    e["mbit_per_s"] = v["mbit_per_s"].clone();
                    e["best_mode"] = json!(mode);
                    e["loss_pct"] = v["loss_pct"].clone();
                }
            }
            ["operf", mtu, size] => {
                operf
                    .entry(mtu.to_string())
                    .or_default()
                    .insert(size.to_string(), v.clone());
            }
            ["operfxdp", mtu, size] => {
                operf_xdp
                    .entry(mtu.to_string())
                    .or_default()
                    .insert(size.to_string(), v.clone());
            }
            ["operfkey", mtu, size] => {
                operf_key
                    .entry(mtu.to_string())
                    .or_default()
                    .insert(size.to_string(), v.clone());
            }
            ["operfencrypt", mtu, size] => {
                operf_encrypt
                    .entry(mtu.to_string())
                    .or_default()
                    .insert(size.to_string(), v.clone());
            }
            ["cpu", backend, mtu, size] => {
                cpu.entry(backend.to_string())
                    .or_default()
                    .entry(mtu.to_string())
                    .or_default()
                    .insert(size.to_string(), v.clone());
            }
            ["flood", backend] => {
                flood.insert(backend.to_string(), v.clone());
            }
            ["kaflood", flows] => {
                kaflood.insert(flows.to_string(), v.clone());
            }
            ["iperf3udp", mtu, size] => {
                if let Some(s) = iperf3_udp(v, size.parse().unwrap_or(0)) {
                    udp.entry(mtu.to_string())
                        .or_default()
                        .insert(size.to_string(), s);
                }
            }
            ["iperf3tcp", mtu] => {
                if let Some(bps) = num(v, &["end", "sum_received", "bits_per_second"]) {
                    tcp.insert(mtu.to_string(), json!({"mbit_per_s": bps / 1e6}));
                }
            }
            ["rtt", kind @ ..] => {
                rtt.insert(kind.join("_"), v.clone());
            }
            ["alloc", kind] => {
                alloc.insert(kind.to_string(), v.clone());
            }
            _ => {}
        }
    }
    let mut r = json!({
        "meta": inputs.get("meta").cloned().unwrap_or(json!({})),
        "raw": raw,
        "iperf3_udp": udp,
        "iperf3_tcp": tcp,
        "operf": operf,
        "operf_xdp": operf_xdp,
        "operf_key": operf_key,
        "operf_encrypt": operf_encrypt,
        "cpu": cpu,
        "flood": flood,
        "keepalive_flood": kaflood,
        "rtt": rtt,
        "alloc": alloc,
    });
    add_headline(&mut r);
    r
}

/// iperf3's UDP result as the receiver saw it.
fn iperf3_udp(v: &Value, size: u64) -> Option<Value> {
    let rx = &v["end"]["sum_received"];
    let packets = num(rx, &["packets"])?;
    let lost = num(rx, &["lost_packets"]).unwrap_or(0.0);
    let secs = num(rx, &["seconds"])?;
    let received = packets - lost;
    if secs <= 0.0 {
        return None;
    }
    Some(json!({
        "size": size,
        "sent": packets,
        "received": received,
        "loss_pct": num(rx, &["lost_percent"]).unwrap_or(0.0),
        "sdus_per_s": received / secs,
        "mbit_per_s": num(rx, &["bits_per_second"]).unwrap_or(0.0) / 1e6,
    }))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}

/// Ratios, headline figures and targets.
fn add_headline(r: &mut Value) {
    let operf = |mtu: &str, size: &str, k: &str| num(r, &["operf", mtu, size, k]);
    let raw = |mtu: &str, size: &str| num(r, &["raw", mtu, size, "sdus_per_s"]);
    let udp = |size: &str| num(r, &["iperf3_udp", "1500", size, "sdus_per_s"]);
    let rtt_median = |k: &str| num(r, &["rtt", k, "median_us"]);
    let mut ratios = json!({
        "operf_vs_raw_64": ratio(operf("1500", "64", "sdus_per_s"), raw("1500", "64")),
        "operf_vs_raw_1400": ratio(operf("1500", "1400", "sdus_per_s"), raw("1500", "1400")),
        "operf_vs_iperf3_64": ratio(operf("1500", "64", "sdus_per_s"), udp("64")),
        "operf_vs_iperf3_1400": ratio(operf("1500", "1400", "sdus_per_s"), udp("1400")),
        "operf_vs_tcp_9000": ratio(operf("9000", "8900", "mbit_per_s"), num(r, &["iperf3_tcp", "9000", "mbit_per_s"])),
        "oping_vs_raw_rtt": ratio(rtt_median("oping"), rtt_median("raw")),
    });
    // Extra ratios, where measured: the other sizes and the busy-poll IPCP.
    ratios["operf_vs_raw_512"] = ratio(operf("1500", "512", "sdus_per_s"), raw("1500", "512"));
    ratios["operf_vs_iperf3_512"] = ratio(operf("1500", "512", "sdus_per_s"), udp("512"));
    ratios["operf_vs_raw_8900"] = ratio(operf("9000", "8900", "sdus_per_s"), raw("9000", "8900"));
    // backend xdp against backend raw and the raw-socket limit (MTU 1500).
    let xdp = |size: &str| num(r, &["operf_xdp", "1500", size, "sdus_per_s"]);
    for size in ["64", "512", "1400"] {
        ratios[format!("xdp_vs_raw_backend_{size}")] =
            ratio(xdp(size), operf("1500", size, "sdus_per_s"));
        ratios[format!("xdp_vs_raw_limit_{size}")] = ratio(xdp(size), raw("1500", size));
    }
    let cpu = |backend: &str| num(r, &["cpu", backend, "1500", "64", "cpu_ns_per_sdu"]);
    ratios["xdp_vs_raw_cpu_per_sdu"] = ratio(cpu("xdp"), cpu("raw"));
    ratios["xdp_vs_raw_backend_rtt"] = ratio(rtt_median("oping_xdp"), rtt_median("oping"));
    let xdp_drop_pps = num(r, &["flood", "xdp", "counted_per_s"]);
    ratios["xdp_drop_vs_raw_read"] =
        ratio(xdp_drop_pps, num(r, &["flood", "raw", "counted_per_s"]));
    // KEEP_ALIVE flood: CPU per frame with the most open flows measured over
    // CPU per frame with one (O(1) keep-alive handling keeps it near 1).
    let ka: Vec<(u64, f64)> = r["keepalive_flood"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.parse().ok()?, num(v, &["cpu_ns_per_frame"])?)))
        .collect();
    let one = ka.iter().find(|(f, _)| *f == 1).map(|&(_, c)| c);
    let most = ka.iter().max_by_key(|(f, _)| *f).filter(|(f, _)| *f > 1);
    ratios["keepalive_cpu_many_vs_one_flow"] = ratio(most.map(|&(_, c)| c), one);
    // A layer key against none (backend raw, same rounds): SDUs/s and the
    // IPCPs' CPU per SDU.
    for (kind, sys) in [("key", "operf_key"), ("encrypt", "operf_encrypt")] {
        for size in ["64", "1400"] {
            if let Some(v) = num(r, &[sys, "1500", size, "sdus_per_s"]) {
                ratios[format!("{kind}_vs_none_{size}")] =
                    ratio(Some(v), operf("1500", size, "sdus_per_s"));
                let cpu = |b: &str| num(r, &["cpu", b, "1500", size, "cpu_ns_per_sdu"]);
                ratios[format!("{kind}_vs_none_cpu_per_sdu_{size}")] = ratio(cpu(kind), cpu("raw"));
            }
        }
    }
    if r["rtt"].get("oping_busy_poll").is_some() {
        ratios["oping_busy_poll_vs_raw_rtt"] =
            ratio(rtt_median("oping_busy_poll"), rtt_median("raw"));
    }
    let alloc_per_s = [
        num(r, &["alloc", "seq", "alloc_per_s"]),
        num(r, &["alloc", "conc", "alloc_per_s"]),
    ]
    .into_iter()
    .flatten()
    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let latency = num(r, &["alloc", "seq", "latency_median_ms"]);
    // Memory per flow on one side: its IPCP plus its application (pages both
    // map count twice: an upper bound). The larger side is the figure.
    let per = |k: &str| num(r, &["alloc", "hold", "rss", k, "per_flow_kib"]);
    let side_a = per("ipcp_a").zip(per("app_client")).map(|(a, b)| a + b);
    let side_b = per("ipcp_b").zip(per("app_server")).map(|(a, b)| a + b);
    let memory = side_a.zip(side_b).map(|(a, b)| a.max(b));
    let loss = |size: &str| operf("1500", size, "loss_pct");
    let targets = [
        (
            "operf ≥ 0.8 × raw at 64 B",
            num(&ratios, &["operf_vs_raw_64"]),
            0.8,
            ">=",
        ),
        (
            "operf ≥ 0.9 × raw at 1400 B",
            num(&ratios, &["operf_vs_raw_1400"]),
            0.9,
            ">=",
        ),
        ("operf loss < 1 % at 64 B", loss("64"), 1.0, "<"),
        ("operf loss < 1 % at 1400 B", loss("1400"), 1.0, "<"),
        (
            "operf ≥ 2 × iperf3 UDP at 64 B",
            num(&ratios, &["operf_vs_iperf3_64"]),
            2.0,
            ">=",
        ),
        (
            "operf ≥ 2 × iperf3 UDP at 512 B",
            num(&ratios, &["operf_vs_iperf3_512"]),
            2.0,
            ">=",
        ),
        (
            "operf ≥ 2 × iperf3 UDP at 1400 B",
            num(&ratios, &["operf_vs_iperf3_1400"]),
            2.0,
            ">=",
        ),
        (
            "operf Gbit/s ≥ iperf3 TCP at MTU 9000",
            num(&ratios, &["operf_vs_tcp_9000"]),
            1.0,
            ">=",
        ),
        (
            "oping median ≤ 2.5 × raw RTT",
            num(&ratios, &["oping_vs_raw_rtt"]),
            2.5,
            "<=",
        ),
        (
            "oping (busy-poll) median ≤ 1.5 × raw RTT",
            num(&ratios, &["oping_busy_poll_vs_raw_rtt"]),
            1.5,
            "<=",
        ),
        (
            "xdp ≥ 1.5 × backend raw at 64 B",
            num(&ratios, &["xdp_vs_raw_backend_64"]),
            1.5,
            ">=",
        ),
        (
            "xdp ≥ 1.0 × raw limit at 64 B",
            num(&ratios, &["xdp_vs_raw_limit_64"]),
            1.0,
            ">=",
        ),
        (
            "xdp oping median ≤ backend raw's",
            num(&ratios, &["xdp_vs_raw_backend_rtt"]),
            1.0,
            "<=",
        ),
        (
            "xdp IPCP CPU per SDU ≤ 0.6 × raw at 64 B",
            num(&ratios, &["xdp_vs_raw_cpu_per_sdu"]),
            0.6,
            "<=",
        ),
        (
            "xdp unknown-eid drops/s ≥ 5 × raw IPCP reads/s",
            num(&ratios, &["xdp_drop_vs_raw_read"]),
            5.0,
            ">=",
        ),
        ("≥ 5000 allocations/s", alloc_per_s, 5000.0, ">="),
        ("median allocation latency < 1 ms", latency, 1.0, "<"),
        ("< 64 KiB per open idle flow and side", memory, 64.0, "<"),
    ];
    let targets: Vec<Value> = targets
        .iter()
        .map(|(name, value, bound, op)| {
            let met = value.map(|v| match *op {
                ">=" => v >= *bound,
                "<=" => v <= *bound,
                _ => v < *bound,
            });
            json!({"target": name, "value": value, "bound": bound, "op": op, "met": met})
        })
        .collect();
    r["ratios"] = ratios;
    r["xdp_drop_pps"] = json!(xdp_drop_pps);
    r["alloc_per_s"] = json!(alloc_per_s);
    r["alloc_latency_median_ms"] = json!(latency);
    r["flow_memory_kib"] = json!(memory);
    r["targets"] = json!(targets);
}

/// Every figure the smoke test needs, by path: absent, null or ≤ 0 is missing.
fn missing_figures(r: &Value) -> Vec<String> {
    let mut paths: Vec<Vec<String>> = Vec::new();
    let p = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
    for (mtu, sizes) in [
        ("1500", &["64", "512", "1400"][..]),
        ("9000", &["8900"][..]),
    ] {
        for size in sizes {
            paths.push(p(&format!("raw.{mtu}.{size}.sdus_per_s")));
            paths.push(p(&format!("operf.{mtu}.{size}.sdus_per_s")));
            paths.push(p(&format!("operf.{mtu}.{size}.mbit_per_s")));
            paths.push(p(&format!("iperf3_udp.{mtu}.{size}.sdus_per_s")));
        }
    }
    for size in ["64", "512", "1400"] {
        paths.push(p(&format!("operf_xdp.1500.{size}.sdus_per_s")));
        paths.push(p(&format!("operf_xdp.1500.{size}.mbit_per_s")));
    }
    for backend in ["raw", "xdp"] {
        paths.push(p(&format!("cpu.{backend}.1500.64.cpu_ns_per_sdu")));
        paths.push(p(&format!("flood.{backend}.counted_per_s")));
    }
    // Measured only where irm and ipcpd-eth take `key` (bench.sh checks).
    if r["operf_key"].as_object().is_some_and(|m| !m.is_empty()) {
        for kind in ["key", "encrypt"] {
            for size in ["64", "1400"] {
                paths.push(p(&format!("operf_{kind}.1500.{size}.sdus_per_s")));
                paths.push(p(&format!("cpu.{kind}.1500.{size}.cpu_ns_per_sdu")));
            }
        }
    }
    paths.push(p("iperf3_tcp.9000.mbit_per_s"));
    for k in ["raw", "udp", "oping", "oping_xdp"] {
        paths.push(p(&format!("rtt.{k}.median_us")));
        paths.push(p(&format!("rtt.{k}.p99_us")));
    }
    for k in ["seq", "conc"] {
        paths.push(p(&format!("alloc.{k}.alloc_per_s")));
        paths.push(p(&format!("alloc.{k}.latency_median_ms")));
        paths.push(p(&format!("alloc.{k}.latency_p99_ms")));
    }
    for k in [
        "operf_vs_raw_64",
        "operf_vs_raw_1400",
        "operf_vs_iperf3_64",
        "operf_vs_iperf3_1400",
        "operf_vs_tcp_9000",
        "oping_vs_raw_rtt",
        "xdp_vs_raw_backend_64",
        "xdp_vs_raw_limit_64",
        "xdp_vs_raw_cpu_per_sdu",
        "xdp_vs_raw_backend_rtt",
        "xdp_drop_vs_raw_read",
    ] {
        paths.push(vec!["ratios".into(), k.into()]);
    }
    for k in [
        "xdp_drop_pps",
        "alloc_per_s",
        "alloc_latency_median_ms",
        "flow_memory_kib",
    ] {
        paths.push(vec![k.into()]);
    }
    paths
        .into_iter()
        .filter(|path| {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            !num(r, &keys).is_some_and(|v| v.is_finite() && v > 0.0)
        })
        .map(|path| path.join("."))
        .collect()
}

// ---------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn kpps(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.0}", v / 1e3))
}

/// The report as Markdown; `chart_dir` is prefixed to the chart file names.
fn markdown(r: &Value, chart_dir: &str) -> String {
    let mut s = String::new();
    let m = &r["meta"];
    let meta = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    s += &format!(
        "Measured {} on `{}` ({} CPUs, {}), kernel {}, {} run; each figure over {} s; load average at start {}{}; commit {}.\n\n",
        meta("date"),
        meta("host"),
        m.get("cpus").and_then(Value::as_u64).unwrap_or(0),
        meta("cpu_model"),
        meta("kernel"),
        meta("mode"),
        m.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
        meta("load_at_start"),
        match m.get("irmd_args").and_then(Value::as_str) {
            Some(a) if !a.is_empty() => format!("; irmd {a}"),
            _ => String::new(),
        },
        meta("commit")
    );
    s += "### Targets\n\n| target | measured | met |\n|---|---:|:---:|\n";
    for t in r["targets"].as_array().into_iter().flatten() {
        let met = match t["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        s += &format!(
            "| {} | {} | {met} |\n",
            t["target"].as_str().unwrap_or("?"),
            fmt(t["value"].as_f64(), 3)
        );
    }
    s += "\n### Throughput (receiver's view, kSDU/s · Mbit/s of SDU payload · loss %)\n\n";
    s += "| MTU | SDU B | raw best (mode) | iperf3 UDP | operf, backend raw | operf, backend xdp | raw backend/raw | raw backend/iperf3 | xdp/raw backend | xdp/raw |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (mtu, sizes) in [
        ("1500", &["64", "512", "1400"][..]),
        ("9000", &["8900"][..]),
    ] {
        for size in sizes {
            let cell = |sys: &str| {
                let v = &r[sys][mtu][*size];
                format!(
                    "{} · {} · {}%",
                    kpps(num(v, &["sdus_per_s"])),
                    fmt(num(v, &["mbit_per_s"]), 0),
                    fmt(num(v, &["loss_pct"]), 1)
                )
            };
            let mode = r["raw"][mtu][*size]["best_mode"].as_str().unwrap_or("?");
            let pps = |sys: &str| num(r, &[sys, mtu, size, "sdus_per_s"]);
            let ratio2 = |a: &str, b: &str| fmt(num(&ratio(pps(a), pps(b)), &[]), 2);
            // backend xdp refuses frames larger than one 4096-byte UMEM chunk.
            let (xdp, xdp_vs_backend, xdp_vs_raw) = if mtu == "1500" {
                (
                    cell("operf_xdp"),
                    ratio2("operf_xdp", "operf"),
                    ratio2("operf_xdp", "raw"),
                )
            } else {
                let na = "n/a: MTU > 3826".to_string();
                (na.clone(), na.clone(), na)
            };
            s += &format!(
                "| {mtu} | {size} | {} ({mode}) | {} | {} | {xdp} | {} | {} | {xdp_vs_backend} | {xdp_vs_raw} |\n",
                cell("raw"),
                cell("iperf3_udp"),
                cell("operf"),
                ratio2("operf", "raw"),
                ratio2("operf", "iperf3_udp"),
            );
        }
    }
    if r["operf_key"].as_object().is_some_and(|m| !m.is_empty()) {
        s += "\n### Layer key (backend raw, MTU 1500; kSDU/s · Mbit/s · loss %; IPCPs' CPU per received SDU)\n\n";
        s += "| SDU B | no key | key | key + encrypt | key/no key | encrypt/no key | CPU ns/SDU: none · key · encrypt |\n|---:|---:|---:|---:|---:|---:|---:|\n";
        for size in ["64", "1400"] {
            let cell = |sys: &str| {
                let v = &r[sys]["1500"][size];
                format!(
                    "{} · {} · {}%",
                    kpps(num(v, &["sdus_per_s"])),
                    fmt(num(v, &["mbit_per_s"]), 0),
                    fmt(num(v, &["loss_pct"]), 1)
                )
            };
            let cpu = |b: &str| fmt(num(r, &["cpu", b, "1500", size, "cpu_ns_per_sdu"]), 0);
            let rt = |k: &str| fmt(num(r, &["ratios", &format!("{k}_vs_none_{size}")]), 2);
            s += &format!(
                "| {size} | {} | {} | {} | {} | {} | {} · {} · {} |\n",
                cell("operf"),
                cell("operf_key"),
                cell("operf_encrypt"),
                rt("key"),
                rt("encrypt"),
                cpu("raw"),
                cpu("key"),
                cpu("encrypt")
            );
        }
    }
    s += "\nRaw modes (kSDU/s, loss %):\n\n| MTU | SDU B | single | mmsg | mmap |\n|---:|---:|---:|---:|---:|\n";
    for (mtu, sizes) in r["raw"].as_object().into_iter().flatten() {
        for (size, v) in sizes.as_object().into_iter().flatten() {
            let c = |mode: &str| {
                let x = &v["modes"][mode];
                format!(
                    "{} · {}%",
                    kpps(num(x, &["sdus_per_s"])),
                    fmt(num(x, &["loss_pct"]), 1)
                )
            };
            s += &format!(
                "| {mtu} | {size} | {} | {} | {} |\n",
                c("single"),
                c("mmsg"),
                c("mmap")
            );
        }
    }
    s += &format!(
        "\niperf3 TCP at MTU 9000: {} Mbit/s; ethflow operf 8900 B at MTU 9000: {} Mbit/s (ratio {}).\n",
        fmt(num(r, &["iperf3_tcp", "9000", "mbit_per_s"]), 0),
        fmt(num(r, &["operf", "9000", "8900", "mbit_per_s"]), 0),
        fmt(num(r, &["ratios", "operf_vs_tcp_9000"]), 2)
    );
    s += &format!("\n![throughput by SDU size]({chart_dir}{THROUGHPUT_SVG})\n");
    s += &xdp_markdown(r);
    s += &keepalive_markdown(r);
    s += "\n### Round trips, 64 B (µs)\n\n| path | min | median | p99 | max | received/sent |\n|---|---:|---:|---:|---:|---:|\n";
    for (k, v) in r["rtt"].as_object().into_iter().flatten() {
        s += &format!(
            "| {k} | {} | {} | {} | {} | {}/{} |\n",
            fmt(num(v, &["min_us"]), 1),
            fmt(num(v, &["median_us"]), 1),
            fmt(num(v, &["p99_us"]), 1),
            fmt(num(v, &["max_us"]), 1),
            v["received"],
            v["sent"]
        );
    }
    s += &format!("\n![RTT distribution]({chart_dir}{RTT_SVG})\n");
    s += "\n### Flow allocation\n\n| run | flows | allocations/s | latency median ms | p99 ms | max ms | failed | deallocations/s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (k, v) in r["alloc"].as_object().into_iter().flatten() {
        s += &format!(
            "| {k} ({} thread(s)) | {} | {} | {} | {} | {} | {} | {} |\n",
            v["threads"],
            v["flows"],
            fmt(num(v, &["alloc_per_s"]), 0),
            fmt(num(v, &["latency_median_ms"]), 3),
            fmt(num(v, &["latency_p99_ms"]), 3),
            fmt(num(v, &["latency_max_ms"]), 3),
            v["failures"],
            fmt(num(v, &["dealloc_per_s"]), 0)
        );
    }
    if let Some(rss) = r["alloc"]["hold"]["rss"].as_object() {
        s += &format!(
            "\nResident memory with {} open idle flows (VmRSS before → after, KiB; per flow):\n\n| process | before | after | per flow KiB |\n|---|---:|---:|---:|\n",
            r["alloc"]["hold"]["flows"]
        );
        for (k, v) in rss {
            s += &format!(
                "| {k} | {} | {} | {} |\n",
                v["before_kib"],
                v["after_kib"],
                fmt(num(v, &["per_flow_kib"]), 2)
            );
        }
        s += &format!(
            "\nflow_memory_kib (larger side, IPCP + application): {}\n",
            fmt(num(r, &["flow_memory_kib"]), 2)
        );
    }
    s
}

/// The KEEP_ALIVE flood: a's IPCP's CPU per frame against its open flows.
fn keepalive_markdown(r: &Value) -> String {
    let mut rows: Vec<(u64, &Value)> = r["keepalive_flood"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    rows.sort_by_key(|(f, _)| *f);
    let mut s = String::from(
        "\n### KEEP_ALIVE flood (forge from b's MAC toward a's IPCP, backend raw)\n\n| open flows | frames sent | frames/s | CPU s of a's IPCP | ns per frame |\n|---:|---:|---:|---:|---:|\n",
    );
    for (flows, v) in rows {
        s += &format!(
            "| {flows} | {} | {} | {} | {} |\n",
            v["sent"],
            fmt(num(v, &["flood_pps"]), 0),
            fmt(num(v, &["ipcp_cpu_s"]), 2),
            fmt(num(v, &["cpu_ns_per_frame"]), 1)
        );
    }
    s += &format!(
        "\nns per frame, most flows ÷ one flow: {} (keep-alive handling is O(1) per frame: about 1).\n",
        fmt(num(r, &["ratios", "keepalive_cpu_many_vs_one_flow"]), 2)
    );
    s
}

/// backend xdp against backend raw: IPCP CPU time per SDU and the
/// unknown-eid flood.
fn xdp_markdown(r: &Value) -> String {
    let mut s = String::from(
        "\n### IPCP CPU time per SDU during the operf flood (both IPCPs, /proc utime + stime)\n\n| MTU | SDU B | backend | CPU s | SDUs received | ns per SDU |\n|---:|---:|---|---:|---:|---:|\n",
    );
    for (backend, mtus) in r["cpu"].as_object().into_iter().flatten() {
        for (mtu, size) in [
            ("1500", "64"),
            ("1500", "512"),
            ("1500", "1400"),
            ("9000", "8900"),
        ] {
            if let Some(v) = mtus[mtu].get(size) {
                s += &format!(
                    "| {mtu} | {size} | {backend} | {} | {} | {} |\n",
                    fmt(num(v, &["ipcp_cpu_s"]), 2),
                    v["received"],
                    fmt(num(v, &["cpu_ns_per_sdu"]), 0)
                );
            }
        }
    }
    s += &format!(
        "\nxdp ÷ raw CPU per SDU at 64 B: {}.\n",
        fmt(num(r, &["ratios", "xdp_vs_raw_cpu_per_sdu"]), 2)
    );
    s += "\n### Unknown-eid flood (rawflood from b toward a's IPCP)\n\n| backend | counter | frames sent | flood frames/s | counted | counted/s | CPU s of a's IPCP |\n|---|---|---:|---:|---:|---:|---:|\n";
    for (backend, v) in r["flood"].as_object().into_iter().flatten() {
        s += &format!(
            "| {backend} | `{}` | {} | {} | {} | {} | {} |\n",
            v["counter"].as_str().unwrap_or("?"),
            v["sent"],
            fmt(num(v, &["flood_pps"]), 0),
            v["counted"],
            fmt(num(v, &["counted_per_s"]), 0),
            fmt(num(v, &["ipcp_cpu_s"]), 2)
        );
    }
    s += &format!(
        "\nxdp_drop_pps: {}; dropped by XDP ÷ read by the raw IPCP: {}.\n",
        fmt(num(r, &["xdp_drop_pps"]), 0),
        fmt(num(r, &["ratios", "xdp_drop_vs_raw_read"]), 2)
    );
    s
}

fn update_doc(doc: &Path, r: &Value, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Err(format!(
            "{}: markers {BEGIN} / {END} not found",
            doc.display()
        ));
    };
    if e < b {
        return Err(format!("{}: {END} before {BEGIN}", doc.display()));
    }
    let charts = doc.parent().unwrap_or(Path::new(".")).join("bench");
    std::fs::create_dir_all(&charts).map_err(|e| format!("{}: {e}", charts.display()))?;
    for f in [THROUGHPUT_SVG, RTT_SVG] {
        std::fs::copy(out.join(f), charts.join(f)).map_err(|e| format!("copy {f}: {e}"))?;
    }
    let new = format!(
        "{}{BEGIN}\n{}\n{}",
        &text[..b],
        markdown(r, "bench/"),
        &text[e..]
    );
    std::fs::write(doc, new).map_err(|e| format!("{}: {e}", doc.display()))
}

// ---------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------

fn plot_err(e: impl std::fmt::Display) -> String {
    format!("chart: {e}")
}

/// (SDU size, SDUs/s) points of one system.
type Points = Vec<(f64, f64)>;

/// Receiver SDUs/s by SDU size for raw, iperf3 UDP and ethflow (log-log).
fn throughput_chart(r: &Value, path: &Path) -> Result<(), String> {
    let series = |sys: &str| -> Points {
        let mut pts = Vec::new();
        for (mtu, size) in [
            ("1500", "64"),
            ("1500", "512"),
            ("1500", "1400"),
            ("9000", "8900"),
        ] {
            if let Some(v) = num(r, &[sys, mtu, size, "sdus_per_s"]).filter(|v| *v > 0.0) {
                pts.push((size.parse().expect("size"), v));
            }
        }
        pts
    };
    let all: Vec<(&str, Points, RGBColor)> = vec![
        ("raw AF_PACKET (best mode)", series("raw"), BLACK),
        ("iperf3 UDP", series("iperf3_udp"), RED),
        ("ethflow operf, backend raw", series("operf"), BLUE),
        ("ethflow operf, backend xdp", series("operf_xdp"), GREEN),
    ];
    let max = all
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|x| x.1))
        .fold(1e3, f64::max);
    let min = all
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|x| x.1))
        .fold(max, f64::min);
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput by SDU size (receiver, MTU 1500; 8900 B at MTU 9000)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (48f64..12000f64).log_scale(),
            ((min / 2.0)..(max * 2.0)).log_scale(),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("SDU size (bytes)")
        .y_desc("SDUs/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
        .draw()
        .map_err(plot_err)?;
    for (label, pts, color) in all {
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// RTT distribution (CDF) of each round-trip measurement.
fn rtt_chart(r: &Value, path: &Path) -> Result<(), String> {
    let colors = [BLACK, RED, BLUE, GREEN, MAGENTA];
    let runs: Vec<(String, Vec<f64>)> = r["rtt"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let pct = v["percentiles_us"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .filter(|x| *x > 0.0)
                .collect();
            (k.clone(), pct)
        })
        .filter(|(_, p): &(String, Vec<f64>)| p.len() > 1)
        .collect();
    let hi = runs
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(10.0, f64::max);
    let lo = runs
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(hi, f64::min);
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Round-trip time distribution, 64 B", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(((lo * 0.8)..(hi * 1.2)).log_scale(), 0f64..100f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("RTT (µs)")
        .y_desc("percentile")
        .draw()
        .map_err(plot_err)?;
    for (i, (label, pct)) in runs.into_iter().enumerate() {
        let color = colors[i % colors.len()];
        let n = pct.len() - 1;
        let pts: Vec<(f64, f64)> = pct
            .into_iter()
            .enumerate()
            .map(|(j, x)| (x, 100.0 * j as f64 / n as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        let pct: Vec<f64> = (0..=100).map(|i| 10.0 + i as f64).collect();
        for (mtu, size) in [
            ("1500", "64"),
            ("1500", "512"),
            ("1500", "1400"),
            ("9000", "8900"),
        ] {
            m.insert(
                format!("raw_{mtu}_mmsg_{size}"),
                json!({"sdus_per_s": 400000.0, "mbit_per_s": 100.0, "loss_pct": 0.0}),
            );
            m.insert(
                format!("raw_{mtu}_single_{size}"),
                json!({"sdus_per_s": 300000.0, "mbit_per_s": 90.0, "loss_pct": 0.0}),
            );
            m.insert(
                format!("operf_{mtu}_{size}"),
                json!({"sdus_per_s": 360000.0, "mbit_per_s": 5000.0, "loss_pct": 0.5}),
            );
            m.insert(
                format!("iperf3udp_{mtu}_{size}"),
                json!({"end": {"sum_received": {"packets": 200000.0, "lost_packets": 20000.0, "seconds": 1.0, "lost_percent": 10.0, "bits_per_second": 1e8}}}),
            );
        }
        for size in ["64", "512", "1400"] {
            m.insert(
                format!("operfxdp_1500_{size}"),
                json!({"sdus_per_s": 600000.0, "mbit_per_s": 300.0, "loss_pct": 0.0}),
            );
        }
        m.insert(
            "cpu_raw_1500_64".into(),
            json!({"ipcp_cpu_s": 2.0, "received": 1000000, "cpu_ns_per_sdu": 2000.0}),
        );
        m.insert(
            "cpu_xdp_1500_64".into(),
            json!({"ipcp_cpu_s": 1.0, "received": 1000000, "cpu_ns_per_sdu": 1000.0}),
        );
        m.insert(
            "flood_xdp".into(),
            json!({"counter": "xdp_drop_unknown_eid", "sent": 100, "counted": 100, "counted_per_s": 400000.0}),
        );
        m.insert(
            "flood_raw".into(),
            json!({"counter": "unknown_eid", "sent": 100, "counted": 20, "counted_per_s": 100000.0}),
        );
        m.insert(
            "iperf3tcp_9000".into(),
            json!({"end": {"sum_received": {"bits_per_second": 4e9}}}),
        );
        for (k, med) in [
            ("raw", 40.0),
            ("udp", 50.0),
            ("oping", 80.0),
            ("oping_xdp", 60.0),
        ] {
            m.insert(format!("rtt_{k}"), json!({"median_us": med, "p99_us": med * 2.0, "sent": 10, "received": 10, "percentiles_us": pct}));
        }
        for (k, rate) in [("seq", 3000.0), ("conc", 6000.0)] {
            m.insert(format!("alloc_{k}"), json!({"alloc_per_s": rate, "latency_median_ms": 0.4, "latency_p99_ms": 2.0, "threads": 1, "flows": 10, "failures": 0}));
        }
        m.insert(
            "alloc_hold".into(),
            json!({"flows": 100, "rss": {
                "ipcp_a": {"per_flow_kib": 10.0}, "app_client": {"per_flow_kib": 12.0},
                "ipcp_b": {"per_flow_kib": 11.0}, "app_server": {"per_flow_kib": 20.0}}}),
        );
        m
    }

    #[test]
    fn builds_ratios_and_headline_figures() {
        let r = build(&sample());
        assert_eq!(r["raw"]["1500"]["64"]["best_mode"], "mmsg");
        assert_eq!(r["ratios"]["operf_vs_raw_64"], 0.9);
        assert_eq!(r["ratios"]["operf_vs_iperf3_1400"], 2.0);
        assert_eq!(r["ratios"]["operf_vs_tcp_9000"], 1.25);
        assert_eq!(r["ratios"]["oping_vs_raw_rtt"], 2.0);
        assert_eq!(r["ratios"]["xdp_vs_raw_backend_64"], 1.667);
        assert_eq!(r["ratios"]["xdp_vs_raw_limit_64"], 1.5);
        assert_eq!(r["ratios"]["xdp_vs_raw_cpu_per_sdu"], 0.5);
        assert_eq!(r["ratios"]["xdp_vs_raw_backend_rtt"], 0.75);
        assert_eq!(r["ratios"]["xdp_drop_vs_raw_read"], 4.0);
        assert_eq!(r["xdp_drop_pps"], 400000.0);
        let met = |name: &str| {
            r["targets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["target"] == name)
                .map(|t| t["met"].clone())
        };
        assert_eq!(met("xdp ≥ 1.5 × backend raw at 64 B"), Some(json!(true)));
        assert_eq!(
            met("xdp unknown-eid drops/s ≥ 5 × raw IPCP reads/s"),
            Some(json!(false))
        );
        assert_eq!(r["alloc_per_s"], 6000.0);
        assert_eq!(r["alloc_latency_median_ms"], 0.4);
        assert_eq!(r["flow_memory_kib"], 31.0);
        assert!(missing_figures(&r).is_empty(), "{:?}", missing_figures(&r));
        let md = markdown(&r, "bench/");
        assert!(md.contains("| 1500 | 64 |"));
        assert!(md.contains("n/a: MTU > 3826"));
        assert!(md.contains("| 1500 | 64 | xdp | 1.00 | 1000000 | 1000 |"));
        assert!(md.contains("bench/throughput.svg"));
    }

    #[test]
    fn keepalive_flood_rows_and_ratio() {
        let mut m = sample();
        m.insert(
            "kaflood_1".into(),
            json!({"flows": 1, "sent": 1000, "flood_pps": 500.0, "ipcp_cpu_s": 0.2, "cpu_ns_per_frame": 200.0}),
        );
        m.insert(
            "kaflood_5000".into(),
            json!({"flows": 5000, "sent": 1000, "flood_pps": 500.0, "ipcp_cpu_s": 0.21, "cpu_ns_per_frame": 210.0}),
        );
        let r = build(&m);
        assert_eq!(r["ratios"]["keepalive_cpu_many_vs_one_flow"], 1.05);
        let md = keepalive_markdown(&r);
        let one = md.find("| 1 | 1000").expect("row for 1 flow");
        let many = md.find("| 5000 | 1000").expect("row for 5000 flows");
        assert!(one < many, "rows sorted by flows:\n{md}");
        assert!(md.contains("1.05"), "{md}");
        // Not measured: no section, no ratio.
        let r = build(&sample());
        assert_eq!(keepalive_markdown(&r), "");
        assert!(r["ratios"]["keepalive_cpu_many_vs_one_flow"].is_null());
    }

    #[test]
    fn repeated_runs_collapse_to_the_median() {
        let mut m = BTreeMap::new();
        for (i, pps) in [300.0, 100.0, 200.0].iter().enumerate() {
            m.insert(
                format!("operf_1500_64@{}", i + 1),
                json!({ "sdus_per_s": pps }),
            );
        }
        m.insert("rtt_raw".into(), json!({"median_us": 10.0}));
        let c = collapse_repeats(m);
        assert_eq!(c.len(), 2);
        assert_eq!(c["operf_1500_64"]["sdus_per_s"], 200.0);
        assert_eq!(c["operf_1500_64"]["runs"], json!([100.0, 200.0, 300.0]));
        assert_eq!(c["rtt_raw"]["median_us"], 10.0);
        assert!(c["rtt_raw"].get("runs").is_none());
    }

    #[test]
    fn a_missing_or_zero_figure_is_reported() {
        let mut s = sample();
        s.remove("rtt_udp");
        s.remove("flood_xdp");
        s.insert(
            "operf_1500_64".into(),
            json!({"sdus_per_s": 0.0, "mbit_per_s": 0.0}),
        );
        let missing = missing_figures(&build(&s));
        assert!(missing.contains(&"rtt.udp.median_us".to_string()));
        assert!(missing.contains(&"xdp_drop_pps".to_string()));
        assert!(missing.contains(&"ratios.xdp_drop_vs_raw_read".to_string()));
        assert!(missing.contains(&"operf.1500.64.sdus_per_s".to_string()));
        assert!(missing.contains(&"ratios.operf_vs_raw_64".to_string()));
        assert!(missing.contains(&"ratios.xdp_vs_raw_backend_64".to_string()));
    }

    #[test]
    fn writes_charts_and_updates_a_document() {
        let dir = std::env::temp_dir().join(format!("benchreport-test-{}", std::process::id()));
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let r = build(&sample());
        throughput_chart(&r, &out.join(THROUGHPUT_SVG)).unwrap();
        rtt_chart(&r, &out.join(RTT_SVG)).unwrap();
        let svg = std::fs::read_to_string(out.join(THROUGHPUT_SVG)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("backend xdp"));
        let doc = dir.join("doc.md");
        std::fs::write(
            &doc,
            format!("# T\n\nintro\n\n{BEGIN}\nSTALE-REPORT\n{END}\n\nafter\n"),
        )
        .unwrap();
        update_doc(&doc, &r, &out).unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(text.contains("intro") && text.contains("after") && !text.contains("STALE-REPORT"));
        assert!(text.contains("### Targets"));
        assert!(dir.join("bench").join(RTT_SVG).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
