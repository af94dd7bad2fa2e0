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

pub(crate) fn run(args: &Args) -> Result<(), String> {
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
pub(crate) fn load(dir: &Path) -> Result<BTreeMap<String, Value>, String> {
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
pub(crate) fn collapse_repeats(inputs: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
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
                } else if name.starts_with("cpu_")
                    || name.starts_with("cpuall_")
                    || name.starts_with("rawcpu_")
                {
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

pub(crate) fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

mod charts;
mod markdown;
mod path;
mod report;
#[cfg(test)]
mod tests;

pub(crate) use charts::*;
pub(crate) use markdown::*;
pub(crate) use path::*;
pub(crate) use report::*;
