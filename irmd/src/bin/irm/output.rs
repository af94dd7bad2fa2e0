//! What the listing commands print: a text table, or with `-j` the JSON
//! document of [`crate::json`].

use crate::json;
use irm::proto::{FlowRow, IpcpRow, NameRow};

pub fn ipcps(rows: &[IpcpRow], as_json: bool) {
    if as_json {
        return json::print(&json::ipcp_list(rows));
    }
    println!(
        "{:<16} {:>8} {:<10} {:<12} {:<8} {:<12} {:<18} {:>6} {:>7} {:<7}",
        "NAME", "PID", "LAYER", "DEV", "TYPE", "STATE", "MAC", "MTU", "MAX SDU", "BACKEND"
    );
    for r in rows {
        let (m, mtu, sdu, be) = match &r.info {
            Some(i) => (
                json::mac(&i.mac),
                i.mtu.to_string(),
                i.max_sdu.to_string(),
                i.backend.clone(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<16} {:>8} {:<10} {:<12} 0x{:04x}   {:<12} {:<18} {:>6} {:>7} {:<7}",
            r.name, r.pid, r.layer, r.dev, r.ethertype, r.state, m, mtu, sdu, be
        );
        if !r.counters.is_empty() {
            let c: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:>16}   counters{}: {}",
                "",
                age(r.counters_age_ms),
                c.join(" ")
            );
        }
    }
}

/// How old the counters are when they are not current: irmd asks the IPCP
/// for them for every listing, and shows the last ones only when it did not
/// answer in time.
fn age(ms: Option<u64>) -> String {
    match ms {
        Some(ms) if ms >= 100 => format!(" (as of {:.1} s ago)", ms as f64 / 1000.0),
        _ => String::new(),
    }
}

pub fn names(rows: &[NameRow], as_json: bool) {
    if as_json {
        return json::print(&json::name_list(rows));
    }
    println!("{:<24} {:<24} PROGRAMS", "NAME", "LAYERS");
    for r in rows {
        println!(
            "{:<24} {:<24} {}",
            r.name,
            r.layers.join(","),
            r.programs.join(",")
        );
    }
}

pub fn flows(rows: &[FlowRow], as_json: bool) {
    if as_json {
        return json::print(&json::flow_list(rows));
    }
    println!(
        "{:>7} {:<16} {:>8} {:<12} {:<9} {:>10} {:>10} {:>10} {:>12} {:>10} {:>12} {:>8}",
        "FLOW",
        "NAME",
        "PID",
        "IPCP",
        "STATE",
        "TIMEOUT",
        "LAST RX",
        "TX SDUS",
        "TX BYTES",
        "RX SDUS",
        "RX BYTES",
        "DROPPED"
    );
    for r in rows {
        let last = r
            .last_rx_ms_ago
            .map(|ms| format!("{:.3}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "never".into());
        println!(
            "{:>7} {:<16} {:>8} {:<12} {:<9} {:>8}ms {:>10} {:>10} {:>12} {:>10} {:>12} {:>8}",
            r.flow_id,
            r.name,
            r.pid,
            r.ipcp,
            r.state.as_str(),
            r.timeout_ms,
            last,
            r.tx_sdus,
            r.tx_bytes,
            r.rx_sdus,
            r.rx_bytes,
            r.dropped
        );
    }
}
