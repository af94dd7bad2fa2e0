use crate::*;

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
            json!({"sdus_per_s": 360000.0, "mbit_per_s": 5000.0, "loss_pct": 0.5,
                   "wakes": {"signals_per_sdu": 0.001, "sleeps_per_sdu": 0.0, "spin_hits": 3, "spin_misses": 1}}),
        );
        m.insert(
            format!("iperf3udp_{mtu}_{size}"),
            json!({"end": {"sum_received": {"packets": 200000.0, "lost_packets": 20000.0, "seconds": 1.0, "lost_percent": 10.0, "bits_per_second": 1e8}}}),
        );
    }
    for (mtu, size) in [
        ("1500", "64"),
        ("1500", "512"),
        ("1500", "1400"),
        ("9000", "8900"),
    ] {
        m.insert(
            format!("operfxdp_{mtu}_{size}"),
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
        "alloc_secure".into(),
        json!({"alloc_per_s": 1000.0, "latency_median_ms": 1.2, "latency_p99_ms": 3.0, "threads": 1, "flows": 10, "failures": 0}),
    );
    for (k, med) in [("oping_10ms", 100.0), ("raw_10ms", 50.0)] {
        m.insert(format!("rtt_{k}"), json!({"median_us": med, "avg_us": med + 10.0, "p99_us": med * 2.0, "sent": 10, "received": 10, "percentiles_us": pct}));
    }
    let procs = |names: &[&str], ns: f64, sleeps: f64| {
        let mut p = Map::new();
        for n in names {
            p.insert(n.to_string(), json!({"cpu_ns_per_sdu": ns, "voluntary_per_sdu": sleeps, "ctxt_per_sdu": sleeps * 2.0}));
        }
        Value::Object(p)
    };
    m.insert(
        "cpuall_raw_1500_64".into(),
        json!({"received": 1000, "cpu_ns_per_sdu": 3000.0, "procs": procs(&["app_client", "ipcp_a", "ipcp_b", "app_server", "irmd_a", "irmd_b"], 500.0, 0.01)}),
    );
    m.insert(
        "rawcpu_1500_mmsg_64".into(),
        json!({"received": 1000, "cpu_ns_per_sdu": 1500.0, "procs": procs(&["raw_send", "raw_recv"], 750.0, 0.0)}),
    );
    for (n, pps, jain) in [
        ("1", 300000.0, 1.0),
        ("16", 320000.0, 0.95),
        ("256", 280000.0, 0.8),
    ] {
        m.insert(
            format!("flows_{n}"),
            json!({"sdus_per_s": pps, "mbit_per_s": 150.0, "loss_pct": 0.0, "jain_index": jain, "per_flow": [{"sdus_per_s": pps / 2.0}, {"sdus_per_s": pps / 2.0}]}),
        );
    }
    for (c, f) in [("aes", 0.9), ("chacha", 0.7)] {
        for size in ["64", "1400"] {
            m.insert(
                format!("operf{c}_1500_{size}"),
                json!({"sdus_per_s": 360000.0 * f, "mbit_per_s": 100.0, "loss_pct": 0.0}),
            );
        }
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
    // backend xdp at MTU 9000 (multi-buffer) has its cells and ratios.
    let row = md
        .lines()
        .find(|l| l.starts_with("| 9000 | 8900 |"))
        .expect("MTU 9000 row");
    assert!(!row.contains("not measured"), "{row}");
    assert_eq!(r["ratios"]["xdp_vs_raw_backend_8900"], 1.667);
    let mut old_report = r.clone();
    old_report["operf_xdp"]["9000"] = json!({});
    let md = markdown(&old_report, "bench/");
    let row = md
        .lines()
        .find(|l| l.starts_with("| 9000 | 8900 |"))
        .expect("MTU 9000 row");
    assert!(row.contains("not measured"), "{row}");
    assert!(missing_figures(&old_report).contains(&"operf_xdp.9000.8900.sdus_per_s".to_string()));
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

#[test]
fn path_figures_ratios_and_targets() {
    let r = build(&sample());
    assert_eq!(r["ratios"]["cpu_all_vs_raw_64"], 2.0);
    assert_eq!(r["ratios"]["aes_vs_plain_1400"], 0.9);
    assert_eq!(r["ratios"]["chacha_vs_plain_64"], 0.7);
    assert_eq!(r["ratios"]["alloc_secure_vs_plain_latency"], 3.0);
    assert_eq!(r["ratios"]["oping_vs_raw_rtt_10ms"], 2.0);
    let met = |name: &str| {
        r["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == name)
            .map(|t| t["met"].clone())
    };
    assert_eq!(
        met("CPU per SDU, all ethflow processes ≤ 1.5 × raw's two at 64 B"),
        Some(json!(false))
    );
    assert_eq!(
        met("sleeps per SDU, sending side (operf client, IPCP a) ≤ 1/32 at 64 B"),
        Some(json!(true))
    );
    assert_eq!(
        met("oping average ≤ 0.12 ms at 10 ms intervals"),
        Some(json!(true))
    );
    assert_eq!(
        met("wake-ups the sending application signals per SDU ≤ 1/32 at 64 B"),
        Some(json!(true))
    );
    assert_eq!(
        met("secure AES-256-GCM ≥ 0.8 × plain at 1400 B"),
        Some(json!(true))
    );
    assert_eq!(met("secure allocation median < 5 ms"), Some(json!(true)));
    let md = path_markdown(&r);
    assert!(md.contains("| 256 | 280 |"), "{md}");
    assert!(md.contains("| 1500 | 64 | 500 · 0.0100 · 0.0200"), "{md}");
    // A process that never slept is present (zero is fine); a missing one is not.
    let mut s = sample();
    s.insert(
        "cpuall_raw_1500_64".into(),
        json!({"received": 1000, "cpu_ns_per_sdu": 3000.0, "procs": {"app_client": {"voluntary_per_sdu": 0.0}}}),
    );
    let missing = missing_figures(&build(&s));
    assert!(
        !missing.iter().any(|m| m.contains("app_client")),
        "{missing:?}"
    );
    assert!(missing.contains(&"cpu_all.raw.1500.64.procs.ipcp_b.voluntary_per_sdu".to_string()));
    s.remove("flows_256");
    assert!(missing_figures(&build(&s)).contains(&"flows.256.jain_index".to_string()));
}
