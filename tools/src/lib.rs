//! Shared bits of the ethflow tools: error wording, the command-line
//! conventions every tool follows (durations with units, QoS cube names,
//! exit statuses, Ctrl-C) and the version of their JSON output.

use irm::{Error, Qos};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Version of the tools' `--json` objects (the `"version"` key); raised when
/// a key changes meaning or goes away, not when one is added (docs/json.md).
pub const JSON_VERSION: u32 = 1;

/// Exit status of a refusal or failure at run time (allocation refused, flow
/// down, replies missing), as iproute2 does.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (clap's own, and the tools' checks of values).
pub const EXIT_USAGE: u8 = 2;

/// Send the library's log lines (such as which certificate check failed on
/// a secure flow) to stderr: warnings and errors unless `RUST_LOG` says more.
pub fn init_log() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
}

/// `flow down (EFLOWDOWN, -1005)` and the like: what happened, the model's
/// errno name and the value a C caller would see.
pub fn describe(e: &Error) -> String {
    match e {
        Error::FlowDown => "flow down (EFLOWDOWN, -1005)".into(),
        Error::FlowPeer => "peer unresponsive (EFLOWPEER, -1006)".into(),
        Error::TimedOut => format!("timed out (ETIMEDOUT, -{})", libc::ETIMEDOUT),
        other => format!("{other} (-{})", other.code()),
    }
}

/// `--generate DIR` (a hidden option of every tool): write the program's
/// manual page (section 1) and its bash, zsh and fish completions under DIR
/// (`man/man1/`, `bash-completion/completions/`, …), as scripts/install.sh
/// and the Debian package want them.
pub fn generate(cmd: clap::Command, dir: &Path) -> ExitCode {
    let name = cmd.get_name().to_string();
    match irm::gen::generate(cmd, "1", dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: cannot write to {}: {e}", dir.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The exit statuses, for the end of every tool's manual page.
pub const EXIT_STATUS_HELP: &str =
    "Exit status: 0 on success, 1 when the run failed or was refused \
(allocation refused, flow down, replies missing), 2 for a usage error.";

/// Wake-ups of this process over a run (irm::shm::wake_stats), as the
/// tools' `--json` prints them: absolute and per SDU moved.
#[derive(serde::Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct Wakes {
    /// Wake-up syscalls this process made (pipe writes, event signals).
    pub signals_sent: u64,
    /// Times this process blocked waiting.
    pub sleeps: u64,
    /// Bounded spins that found work (a sleep saved) and that gave up.
    pub spin_hits: u64,
    pub spin_misses: u64,
    pub signals_per_sdu: f64,
    pub sleeps_per_sdu: f64,
}

impl Wakes {
    /// The wake-ups since `before`, per `sdus` SDUs moved.
    pub fn since(before: &irm::shm::WakeStats, sdus: u64) -> Wakes {
        let d = irm::shm::wake_stats().since(before);
        let per = |x: u64| {
            if sdus == 0 {
                0.0
            } else {
                x as f64 / sdus as f64
            }
        };
        Wakes {
            signals_sent: d.signals_sent,
            sleeps: d.sleeps,
            spin_hits: d.spin_hits,
            spin_misses: d.spin_misses,
            signals_per_sdu: per(d.signals_sent),
            sleeps_per_sdu: per(d.sleeps),
        }
    }
}

/// The QoS cube names the tools take with `-q` (the model's, plus the
/// ethflow presets).
pub const QOS_NAMES: &[&str] = &[
    "raw",
    "best",
    "video",
    "voice",
    "data",
    "raw_safe",
    "raw_crypt",
];

/// A QoS cube by name (`-q`): the model's `raw`, `best`, `video`, `voice`,
/// `data`, and `raw_safe`, `raw_crypt`.
pub fn parse_qos(name: &str) -> Result<Qos, String> {
    let canonical = if name == "best" { "best_effort" } else { name };
    Qos::by_name(canonical).ok_or_else(|| {
        format!(
            "unknown QoS cube `{name}` (one of: {})",
            QOS_NAMES.join(", ")
        )
    })
}

/// Longest duration a tool takes: one year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// A duration such as `500ms`, `1.5s`, `2m`, `1h`, `1d` or `250us`; a bare
/// number is in `bare` units (`"s"` or `"ms"`).
pub fn parse_duration(text: &str, bare: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = if unit.is_empty() { bare } else { unit };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (a number, then us, ms, s, m, h or d)"))?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown time unit `{other}` in `{text}` (us, ms, s, m, h, d)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("`{text}` is out of range (0 to 365 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A positive duration, bare numbers in seconds (`-d`).
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    positive(parse_duration(text, "s")?, text)
}

/// A positive duration, bare numbers in milliseconds (`-i` of oping).
pub fn parse_millis(text: &str) -> Result<Duration, String> {
    positive(parse_duration(text, "ms")?, text)
}

fn positive(d: Duration, text: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("`{text}` must be more than zero"))
    } else {
        Ok(d)
    }
}

/// Set once SIGINT (Ctrl-C) or SIGTERM arrives: the client stops and prints
/// its summary. A second Ctrl-C ends the process at once (status 130).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The conditional shutdown goes first: it sees the flag still clear
        // on the first signal and set on the second.
        let registered = flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| flag::register(sig, stop.clone()));
        if let Err(e) = registered {
            eprintln!("warning: cannot catch signal {sig}: {e}");
        }
    }
    stop
}

/// Whether the flag of [`interrupt_flag`] is set.
pub fn interrupted(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Sleep until `until`, in slices, returning early (false) once `stop` is set.
pub fn sleep_until(until: std::time::Instant, stop: &AtomicBool) -> bool {
    loop {
        if interrupted(stop) {
            return false;
        }
        let Some(left) = until.checked_duration_since(std::time::Instant::now()) else {
            return true;
        };
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The `q`-quantile (0..=1) of sorted samples; nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Jain's fairness index of per-flow rates: 1 when every flow got the same,
/// 1/n when one flow got everything; 0 for no flows or nothing received.
pub fn jain_index(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || sq <= 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * sq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_liveness_errors_like_the_model() {
        assert_eq!(describe(&Error::FlowDown), "flow down (EFLOWDOWN, -1005)");
        assert_eq!(
            describe(&Error::FlowPeer),
            "peer unresponsive (EFLOWPEER, -1006)"
        );
        assert!(describe(&Error::Name("x".into())).ends_with("(-1007)"));
    }

    #[test]
    fn durations_take_units_and_a_bare_default() {
        assert_eq!(parse_duration("5", "s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5", "ms"), Ok(Duration::from_millis(5)));
        assert_eq!(
            parse_duration("1.5s", "ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("250us", "s"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m", "s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1d", "s"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5x", "s").is_err());
        assert!(parse_duration("", "s").is_err());
        assert!(parse_duration("-1", "s").is_err());
        assert!(parse_duration("1e9", "d").is_err());
        assert!(parse_duration("366d", "s").is_err());
        assert!(parse_secs("0").is_err());
        assert!(parse_millis("0.5").is_ok());
    }

    #[test]
    fn qos_cubes_by_the_models_names() {
        assert_eq!(parse_qos("raw"), Ok(Qos::raw()));
        assert_eq!(parse_qos("best"), Ok(Qos::best_effort()));
        assert_eq!(parse_qos("voice"), Ok(Qos::voice()));
        assert!(parse_qos("raw_crypt").is_ok_and(|q| q.encrypt));
        assert!(parse_qos("gold").unwrap_err().contains("video"));
    }

    #[test]
    fn jain_index_is_one_for_equal_shares_and_one_over_n_for_one_hog() {
        assert!((jain_index(&[5.0, 5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain_index(&[8.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert_eq!(jain_index(&[]), 0.0);
        assert_eq!(jain_index(&[0.0, 0.0]), 0.0);
    }

    #[test]
    fn generate_writes_the_manual_page_and_completions() {
        let dir = std::env::temp_dir().join(format!("ethflow-tools-gen-{}", std::process::id()));
        let cmd = clap::Command::new("otool").about("a tool").arg(
            clap::Arg::new("quiet")
                .short('Q')
                .long("quiet")
                .action(clap::ArgAction::SetTrue),
        );
        assert_eq!(generate(cmd, &dir), ExitCode::SUCCESS);
        let page = std::fs::read_to_string(dir.join("man/man1/otool.1")).expect("man page");
        assert!(page.contains("quiet"), "{page}");
        assert!(dir.join("bash-completion/completions/otool").exists());
        assert!(dir.join("zsh/vendor-completions/_otool").exists());
        assert!(dir.join("fish/vendor_completions.d/otool.fish").exists());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&xs, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
