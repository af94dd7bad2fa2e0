//! End-to-end: operf's warm-up (`--warmup`) stays out of the figures.
//! Each test builds its own rig; rigs in this process run one at a time.

use std::time::Duration;

use ethflow_tests::Rig;

const LONG: Duration = Duration::from_secs(60);

/// Paced flows (no loss on an idle rig) with a warm-up of 500 SDUs each:
/// the server must count only what was written after the warm-up. Were the
/// warm-up counted, every flow would have received about 500 SDUs more than
/// it sent in the measured window.
#[test]
fn warmup_sdus_are_not_counted() {
    let Some(rig) = Rig::pair("warmup_sdus_are_not_counted") else {
        return;
    };
    let _server = rig.b().serve("operf", "operf", &["--listen"]);
    let done = rig.a().run(
        "operf",
        &[
            "-n", "operf", "-s", "64", "-d", "1", "-r", "256k", "--flows", "4", "--warmup", "500",
            "--json",
        ],
        LONG,
    );
    done.assert_success();
    let v: serde_json::Value = serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("operf json: {e}: {}", done.describe()));
    assert_eq!(v["warmup_sdus"], 500, "{v}");
    assert_eq!(v["warmup_complete"], true, "{v}");
    assert!(v["warmup_s"].as_f64().is_some_and(|s| s > 0.0), "{v}");
    let flows = v["per_flow"].as_array().expect("per_flow");
    assert_eq!(flows.len(), 4, "{v}");
    for f in flows {
        let (sent, received) = (f["sent"].as_u64(), f["received"].as_u64());
        let (Some(sent), Some(received)) = (sent, received) else {
            panic!("flow without counts: {f}");
        };
        assert!(sent > 0 && received > 0, "{f}");
        assert!(
            received <= sent,
            "the server counted warm-up SDUs: {received} received of {sent} sent: {f}"
        );
    }
}
