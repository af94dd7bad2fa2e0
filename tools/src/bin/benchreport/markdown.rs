//! report.md and the section `--update-doc` puts into a document.

use crate::*;

pub(crate) fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

pub(crate) fn kpps(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.0}", v / 1e3))
}

/// The report as Markdown; `chart_dir` is prefixed to the chart file names.
pub(crate) fn markdown(r: &Value, chart_dir: &str) -> String {
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
            // A run without backend xdp at this size (an older report) says so.
            let (xdp, xdp_vs_backend, xdp_vs_raw) = if r["operf_xdp"][mtu].get(*size).is_some() {
                (
                    cell("operf_xdp"),
                    ratio2("operf_xdp", "operf"),
                    ratio2("operf_xdp", "raw"),
                )
            } else {
                let na = "not measured".to_string();
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
    s += &path_markdown(r);
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
pub(crate) fn keepalive_markdown(r: &Value) -> String {
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
pub(crate) fn xdp_markdown(r: &Value) -> String {
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

pub(crate) fn update_doc(doc: &Path, r: &Value, out: &Path) -> Result<(), String> {
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
