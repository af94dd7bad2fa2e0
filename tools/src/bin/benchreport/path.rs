//! Figures of the data path beyond throughput: CPU time and context switches
//! of every process on the path, many flows at once, secure flows; their
//! ratios, targets, required figures and Markdown.

use crate::*;

/// Sleeps (voluntary context switches) per SDU allowed to a process on the
/// path: at most one wake-up per 32 SDUs in each direction.
pub(crate) const SLEEPS_PER_SDU_MAX: f64 = 1.0 / 32.0;
/// The flow counts flooded at once.
pub(crate) const FLOW_COUNTS: [&str; 3] = ["1", "16", "256"];
/// Secure-flow systems: file prefix, report key, cipher as the report says it.
pub(crate) const CIPHERS: [(&str, &str); 2] =
    [("aes", "AES-256-GCM"), ("chacha", "ChaCha20-Poly1305")];

/// Measurement files this module reads: `cpuall_BACKEND_MTU_SIZE`,
/// `rawcpu_MTU_MODE_SIZE`, `flows_N`, `operfaes_MTU_SIZE`,
/// `operfchacha_MTU_SIZE`. Adds `cpu_all`, `raw_cpu`, `flows` and
/// `operf_secure` to the report.
pub(crate) fn collect(inputs: &BTreeMap<String, Value>, r: &mut Value) {
    let mut cpu_all = Map::new();
    let mut raw_cpu = Map::new();
    let mut flows = Map::new();
    let mut secure = Map::new();
    let mut spin = Map::new();
    let put = |m: &mut Map<String, Value>, keys: &[&str], v: &Value| {
        let mut at = m;
        for k in &keys[..keys.len() - 1] {
            at = at
                .entry(k.to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
        at.insert(keys[keys.len() - 1].to_string(), v.clone());
    };
    for (name, v) in inputs {
        let parts: Vec<&str> = name.split('_').collect();
        match parts.as_slice() {
            ["cpuall", backend, mtu, size] => put(&mut cpu_all, &[backend, mtu, size], v),
            ["rawcpu", mtu, mode, size] => put(&mut raw_cpu, &[mtu, size, mode], v),
            ["flows", n] => put(&mut flows, &[n], v),
            [sys, mtu, size] if sys.starts_with("operf") => {
                let cipher = &sys["operf".len()..];
                if CIPHERS.iter().any(|(c, _)| c == &cipher) {
                    put(&mut secure, &[cipher, mtu, size], v);
                } else if cipher == "spin" {
                    put(&mut spin, &[mtu, size], v);
                }
            }
            _ => {}
        }
    }
    r["cpu_all"] = Value::Object(cpu_all);
    r["raw_cpu"] = Value::Object(raw_cpu);
    r["flows"] = Value::Object(flows);
    r["operf_secure"] = Value::Object(secure);
    r["operf_spin"] = Value::Object(spin);
}

/// Raw's CPU per frame in its best mode (the mode of the raw figure).
fn raw_cpu_per_sdu(r: &Value, mtu: &str, size: &str) -> Option<f64> {
    let mode = r["raw"][mtu][size]["best_mode"].as_str()?;
    num(r, &["raw_cpu", mtu, size, mode, "cpu_ns_per_sdu"])
}

/// The most sleeps per SDU among `procs` of ethflow's backend raw at 64 B.
fn sleeps(r: &Value, procs: &[&str]) -> Option<f64> {
    procs
        .iter()
        .map(|p| {
            num(
                r,
                &[
                    "cpu_all",
                    "raw",
                    "1500",
                    "64",
                    "procs",
                    p,
                    "voluntary_per_sdu",
                ],
            )
        })
        .collect::<Option<Vec<f64>>>()
        .map(|v| v.into_iter().fold(0.0, f64::max))
}

/// Ratios of this module's figures (into `ratios`) and its targets.
pub(crate) fn ratios_and_targets(
    r: &Value,
    ratios: &mut Value,
) -> Vec<(String, Option<f64>, f64, &'static str)> {
    for (mtu, size) in [("1500", "64"), ("1500", "1400"), ("9000", "8900")] {
        ratios[format!("cpu_all_vs_raw_{size}")] = ratio(
            num(r, &["cpu_all", "raw", mtu, size, "cpu_ns_per_sdu"]),
            raw_cpu_per_sdu(r, mtu, size),
        );
    }
    for (c, _) in CIPHERS {
        for size in ["64", "1400"] {
            ratios[format!("{c}_vs_plain_{size}")] = ratio(
                num(r, &["operf_secure", c, "1500", size, "sdus_per_s"]),
                num(r, &["operf", "1500", size, "sdus_per_s"]),
            );
        }
    }
    ratios["alloc_secure_vs_plain_latency"] = ratio(
        num(r, &["alloc", "secure", "latency_median_ms"]),
        num(r, &["alloc", "seq", "latency_median_ms"]),
    );
    // The spin-before-sleep runs (full runs only) against the default.
    ratios["spin_vs_none_64"] = ratio(
        num(r, &["operf_spin", "1500", "64", "sdus_per_s"]),
        num(r, &["operf", "1500", "64", "sdus_per_s"]),
    );
    ratios["spin_vs_none_cpu_per_sdu_64"] = ratio(
        num(r, &["cpu_all", "spin", "1500", "64", "cpu_ns_per_sdu"]),
        num(r, &["cpu_all", "raw", "1500", "64", "cpu_ns_per_sdu"]),
    );
    ratios["oping_spin_vs_none_10ms"] = ratio(
        num(r, &["rtt", "oping_spin_10ms", "median_us"]),
        num(r, &["rtt", "oping_10ms", "median_us"]),
    );
    ratios["oping_vs_raw_rtt_10ms"] = ratio(
        num(r, &["rtt", "oping_10ms", "median_us"]),
        num(r, &["rtt", "raw_10ms", "median_us"]),
    );
    vec![
        (
            "operf ≥ 0.8 × raw at MTU 9000 (8900 B)".into(),
            num(ratios, &["operf_vs_raw_8900"]),
            0.8,
            ">=",
        ),
        (
            "CPU per SDU, all ethflow processes ≤ 1.5 × raw's two at 64 B".into(),
            num(ratios, &["cpu_all_vs_raw_64"]),
            1.5,
            "<=",
        ),
        (
            "sleeps per SDU, sending side (operf client, IPCP a) ≤ 1/32 at 64 B".into(),
            sleeps(r, &["app_client", "ipcp_a"]),
            SLEEPS_PER_SDU_MAX,
            "<=",
        ),
        (
            "sleeps per SDU, receiving side (IPCP b, operf server) ≤ 1/32 at 64 B".into(),
            sleeps(r, &["ipcp_b", "app_server"]),
            SLEEPS_PER_SDU_MAX,
            "<=",
        ),
        (
            "wake-ups the sending application signals per SDU ≤ 1/32 at 64 B".into(),
            num(r, &["operf", "1500", "64", "wakes", "signals_per_sdu"]),
            SLEEPS_PER_SDU_MAX,
            "<=",
        ),
        (
            "oping average ≤ 0.12 ms at 10 ms intervals".into(),
            num(r, &["rtt", "oping_10ms", "avg_us"]).map(|us| us / 1e3),
            0.12,
            "<=",
        ),
        (
            "oping median ≤ 2.5 × raw RTT at 10 ms intervals".into(),
            num(ratios, &["oping_vs_raw_rtt_10ms"]),
            2.5,
            "<=",
        ),
        (
            "secure AES-256-GCM ≥ 0.8 × plain at 1400 B".into(),
            num(ratios, &["aes_vs_plain_1400"]),
            0.8,
            ">=",
        ),
        (
            "secure allocation median < 5 ms".into(),
            num(r, &["alloc", "secure", "latency_median_ms"]),
            5.0,
            "<",
        ),
    ]
}

/// Figures the smoke test needs from this module (must be positive), and
/// those that must be present but may be zero (a process that never slept).
pub(crate) fn required(r: &Value) -> (Vec<String>, Vec<String>) {
    let mut positive = vec![
        "cpu_all.raw.1500.64.cpu_ns_per_sdu".to_string(),
        "ratios.cpu_all_vs_raw_64".into(),
        "rtt.oping_10ms.avg_us".into(),
        "rtt.raw_10ms.median_us".into(),
        "ratios.oping_vs_raw_rtt_10ms".into(),
        "alloc.secure.latency_median_ms".into(),
        "ratios.alloc_secure_vs_plain_latency".into(),
    ];
    if let Some(mode) = r["raw"]["1500"]["64"]["best_mode"].as_str() {
        positive.push(format!("raw_cpu.1500.64.{mode}.cpu_ns_per_sdu"));
    }
    for n in FLOW_COUNTS {
        positive.push(format!("flows.{n}.sdus_per_s"));
        positive.push(format!("flows.{n}.jain_index"));
    }
    for (c, _) in CIPHERS {
        for size in ["64", "1400"] {
            positive.push(format!("operf_secure.{c}.1500.{size}.sdus_per_s"));
            positive.push(format!("ratios.{c}_vs_plain_{size}"));
        }
    }
    let mut present: Vec<String> = [
        "app_client",
        "ipcp_a",
        "ipcp_b",
        "app_server",
        "irmd_a",
        "irmd_b",
    ]
    .iter()
    .map(|p| format!("cpu_all.raw.1500.64.procs.{p}.voluntary_per_sdu"))
    .collect();
    present.push("operf.1500.64.wakes.signals_per_sdu".into());
    present.push("operf.1500.64.wakes.sleeps_per_sdu".into());
    (positive, present)
}

/// The Markdown of this module's figures.
pub(crate) fn path_markdown(r: &Value) -> String {
    let mut s = String::from(
        "\n### Every process on the path, per SDU received (operf flood, backend raw; /proc and GNU time)\n\n\
         CPU ns per SDU · sleeps (voluntary context switches) per SDU · all context switches per SDU.\n\n\
         | MTU | SDU B | operf client | IPCP a | IPCP b | operf server | irmd a | irmd b | ethflow total ns | raw send | raw recv | raw total ns | ethflow/raw |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let cell = |v: &Value| {
        format!(
            "{} · {} · {}",
            fmt(num(v, &["cpu_ns_per_sdu"]), 0),
            fmt(num(v, &["voluntary_per_sdu"]), 4),
            fmt(num(v, &["ctxt_per_sdu"]), 4)
        )
    };
    for (mtu, size) in [
        ("1500", "64"),
        ("1500", "512"),
        ("1500", "1400"),
        ("9000", "8900"),
    ] {
        let e = &r["cpu_all"]["raw"][mtu][size];
        if e.is_null() {
            continue;
        }
        let mode = r["raw"][mtu][size]["best_mode"].as_str().unwrap_or("?");
        let raw = &r["raw_cpu"][mtu][size][mode];
        let p = |k: &str| cell(&e["procs"][k]);
        s +=
            &format!(
            "| {mtu} | {size} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({mode}) | {} |\n",
            p("app_client"),
            p("ipcp_a"),
            p("ipcp_b"),
            p("app_server"),
            p("irmd_a"),
            p("irmd_b"),
            fmt(num(e, &["cpu_ns_per_sdu"]), 0),
            cell(&raw["procs"]["raw_send"]),
            cell(&raw["procs"]["raw_recv"]),
            fmt(num(raw, &["cpu_ns_per_sdu"]), 0),
            fmt(
                num(&ratio(num(e, &["cpu_ns_per_sdu"]), num(raw, &["cpu_ns_per_sdu"])), &[]),
                2
            ),
        );
    }
    s += "\nA sleep is a voluntary context switch: the process blocked (on its eventfd, its socket or a full ring) and had to be woken.\n";
    let w = |size: &str, k: &str| num(r, &["operf", "1500", size, "wakes", k]);
    s += "\nThe sending application's own count (irm::shm::wake_stats, operf's `wakes`), backend raw: wake-ups it signalled and sleeps per SDU written; spins that found work / gave up.\n\n| SDU B | signals/SDU | sleeps/SDU | spin hits | spin misses |\n|---:|---:|---:|---:|---:|\n";
    for size in ["64", "512", "1400"] {
        s += &format!(
            "| {size} | {} | {} | {} | {} |\n",
            fmt(w(size, "signals_per_sdu"), 5),
            fmt(w(size, "sleeps_per_sdu"), 5),
            fmt(w(size, "spin_hits"), 0),
            fmt(w(size, "spin_misses"), 0)
        );
    }
    s += "\n### Many flows at once (operf --flows N, 64 B, backend raw)\n\n| flows | aggregate kSDU/s | Mbit/s | loss % | Jain's fairness index | slowest flow kSDU/s | fastest flow kSDU/s | warm-up s |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for n in FLOW_COUNTS {
        let v = &r["flows"][n];
        if v.is_null() {
            continue;
        }
        let per: Vec<f64> = v["per_flow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| num(f, &["sdus_per_s"]))
            .collect();
        let min = per.iter().cloned().reduce(f64::min);
        let max = per.iter().cloned().reduce(f64::max);
        s += &format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |\n",
            kpps(num(v, &["sdus_per_s"])),
            fmt(num(v, &["mbit_per_s"]), 0),
            fmt(num(v, &["loss_pct"]), 2),
            fmt(num(v, &["jain_index"]), 3),
            kpps(min),
            kpps(max),
            fmt(num(v, &["warmup_s"]), 1)
        );
    }
    s += "\n### Secure flows (backend raw, MTU 1500; kSDU/s · Mbit/s · loss %)\n\n| SDU B | plain | AES-256-GCM | ChaCha20-Poly1305 | AES/plain | ChaCha/plain | CPU ns/SDU (all processes): plain · AES · ChaCha |\n|---:|---:|---:|---:|---:|---:|---:|\n";
    for size in ["64", "1400"] {
        let cell = |v: &Value| {
            format!(
                "{} · {} · {}%",
                kpps(num(v, &["sdus_per_s"])),
                fmt(num(v, &["mbit_per_s"]), 0),
                fmt(num(v, &["loss_pct"]), 1)
            )
        };
        let cpu = |b: &str| fmt(num(r, &["cpu_all", b, "1500", size, "cpu_ns_per_sdu"]), 0);
        let rt = |c: &str| fmt(num(r, &["ratios", &format!("{c}_vs_plain_{size}")]), 2);
        s += &format!(
            "| {size} | {} | {} | {} | {} | {} | {} · {} · {} |\n",
            cell(&r["operf"]["1500"][size]),
            cell(&r["operf_secure"]["aes"]["1500"][size]),
            cell(&r["operf_secure"]["chacha"]["1500"][size]),
            rt("aes"),
            rt("chacha"),
            cpu("raw"),
            cpu("aes"),
            cpu("chacha")
        );
    }
    if r["operf_spin"].as_object().is_some_and(|m| !m.is_empty()) {
        let rt = |k: &str| fmt(num(r, &["ratios", k]), 2);
        s += &format!(
            "\n### Spin before sleeping (ETHFLOW_SPIN_US for every process, backend raw)\n\n\
             operf 64 B: {} kSDU/s with the spin, {} without ({}×); CPU per SDU of all processes {} ns with, {} ns without ({}×). \
             oping median at 10 ms intervals: {} µs with, {} µs without ({}×).\n",
            kpps(num(r, &["operf_spin", "1500", "64", "sdus_per_s"])),
            kpps(num(r, &["operf", "1500", "64", "sdus_per_s"])),
            rt("spin_vs_none_64"),
            fmt(num(r, &["cpu_all", "spin", "1500", "64", "cpu_ns_per_sdu"]), 0),
            fmt(num(r, &["cpu_all", "raw", "1500", "64", "cpu_ns_per_sdu"]), 0),
            rt("spin_vs_none_cpu_per_sdu_64"),
            fmt(num(r, &["rtt", "oping_spin_10ms", "median_us"]), 1),
            fmt(num(r, &["rtt", "oping_10ms", "median_us"]), 1),
            rt("oping_spin_vs_none_10ms"),
        );
    }
    let a = |k: &str, f: &str| fmt(num(r, &["alloc", k, f]), 3);
    s += &format!(
        "\nAllocation, one after another (allocbench seq): plain median {} ms (p99 {}), secure (AES-256-GCM, ECDSA P-256 server certificate, `raw_crypt`) median {} ms (p99 {}); secure ÷ plain {}.\n",
        a("seq", "latency_median_ms"),
        a("seq", "latency_p99_ms"),
        a("secure", "latency_median_ms"),
        a("secure", "latency_p99_ms"),
        fmt(num(r, &["ratios", "alloc_secure_vs_plain_latency"]), 2)
    );
    s
}
