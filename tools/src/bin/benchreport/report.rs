//! report.json: every figure by system and size, the same-run ratios and
//! the targets, and which figures are missing.

use crate::*;

/// Measurement files are named `kind_mtu_size` (for example `raw_1500_mmsg_64`,
/// `operf_9000_8900` (backend raw), `operfxdp_1500_64` (backend xdp),
/// `operfkey_1500_64` / `operfencrypt_1500_64` (backend raw with a layer key,
/// without and with `encrypt`), `cpu_xdp_1500_64`, `iperf3udp_1500_64`, `iperf3tcp_9000`,
/// `rtt_raw`, `flood_xdp`, `kaflood_5000`, `alloc_seq`, `alloc_hold`, `meta`).
pub(crate) fn build(inputs: &BTreeMap<String, Value>) -> Value {
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
    collect(inputs, &mut r);
    add_headline(&mut r);
    r
}

/// iperf3's UDP result as the receiver saw it.
pub(crate) fn iperf3_udp(v: &Value, size: u64) -> Option<Value> {
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

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}

/// Ratios, headline figures and targets.
pub(crate) fn add_headline(r: &mut Value) {
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
    // backend xdp against backend raw and the raw-socket limit (MTU 1500;
    // MTU 9000 is multi-buffer AF_XDP, decision 0042).
    let xdp = |mtu: &str, size: &str| num(r, &["operf_xdp", mtu, size, "sdus_per_s"]);
    for (mtu, size) in [
        ("1500", "64"),
        ("1500", "512"),
        ("1500", "1400"),
        ("9000", "8900"),
    ] {
        ratios[format!("xdp_vs_raw_backend_{size}")] =
            ratio(xdp(mtu, size), operf(mtu, size, "sdus_per_s"));
        ratios[format!("xdp_vs_raw_limit_{size}")] = ratio(xdp(mtu, size), raw(mtu, size));
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
    let mut targets: Vec<(String, Option<f64>, f64, &str)> = targets
        .into_iter()
        .map(|(name, v, b, op)| (name.to_string(), v, b, op))
        .collect();
    targets.extend(ratios_and_targets(r, &mut ratios));
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
pub(crate) fn missing_figures(r: &Value) -> Vec<String> {
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
    for (mtu, size) in [
        ("1500", "64"),
        ("1500", "512"),
        ("1500", "1400"),
        ("9000", "8900"),
    ] {
        paths.push(p(&format!("operf_xdp.{mtu}.{size}.sdus_per_s")));
        paths.push(p(&format!("operf_xdp.{mtu}.{size}.mbit_per_s")));
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
    let (positive, present) = required(r);
    paths.extend(positive.iter().map(|s| p(s)));
    let mut missing: Vec<String> = paths
        .into_iter()
        .filter(|path| {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            !num(r, &keys).is_some_and(|v| v.is_finite() && v > 0.0)
        })
        .map(|path| path.join("."))
        .collect();
    missing.extend(present.into_iter().filter(|path| {
        let keys: Vec<&str> = path.split('.').collect();
        !num(r, &keys).is_some_and(|v| v.is_finite() && v >= 0.0)
    }));
    missing
}

// ---------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------
