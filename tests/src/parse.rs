//! Parsers for what the tools print: oping's summary, oecho's `--wait-down`
//! line, and flowtest's `key=value` lines.

/// The value of `key=` in a line of `key=value` words (`None` if absent).
pub fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// `kv` parsed as a number; panics with the line if missing or malformed.
pub fn kv_num<T: std::str::FromStr>(line: &str, key: &str) -> T {
    kv(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in {line:?}"))
}

/// oping's closing statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub transmitted: u64,
    pub received: u64,
    pub loss_percent: f64,
    /// min/avg/max/mdev in ms, when at least one reply came back.
    pub rtt: Option<[f64; 4]>,
    /// Lines with `seq=`.
    pub replies: Vec<(u64, f64)>,
}

/// Parses ping-style output (`seq=N time=X ms` lines, then the summary).
pub fn ping_stats(out: &str) -> Result<PingStats, String> {
    let mut replies = Vec::new();
    let mut summary = None;
    let mut rtt = None;
    for line in out.lines() {
        if let (Some(seq), Some(time)) = (kv(line, "seq"), kv(line, "time")) {
            let seq = seq.parse().map_err(|_| format!("bad seq in {line:?}"))?;
            let time = time.parse().map_err(|_| format!("bad time in {line:?}"))?;
            replies.push((seq, time));
        } else if line.contains("packets transmitted") {
            summary = Some(summary_numbers(line).ok_or_else(|| format!("bad summary {line:?}"))?);
        } else if let Some(rest) = line.trim().strip_prefix("rtt min/avg/max/mdev = ") {
            let nums: Vec<f64> = rest
                .trim_end_matches("ms")
                .trim()
                .split('/')
                .map(|v| v.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bad rtt line {line:?}"))?;
            let four: [f64; 4] = nums
                .try_into()
                .map_err(|_| format!("bad rtt line {line:?}"))?;
            rtt = Some(four);
        }
    }
    let (transmitted, received, loss_percent) = summary.ok_or("no `packets transmitted` line")?;
    Ok(PingStats {
        transmitted,
        received,
        loss_percent,
        rtt,
        replies,
    })
}

/// "N packets transmitted, M received, X% packet loss[, ...]"
fn summary_numbers(line: &str) -> Option<(u64, u64, f64)> {
    let mut parts = line.split(',').map(str::trim);
    let tx = parts
        .next()?
        .strip_suffix("packets transmitted")?
        .trim()
        .parse()
        .ok()?;
    let rx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let loss = parts.next()?.split('%').next()?.trim().parse().ok()?;
    Some((tx, rx, loss))
}

/// From `second read failed after 0.004 s: flow down (EFLOWDOWN, -1005)`:
/// the seconds and the text after the colon.
pub fn wait_down(out: &str) -> Option<(f64, String)> {
    let line = out.lines().find(|l| l.contains("second read"))?;
    let after = line.split_once(" after ")?.1;
    let (secs, rest) = after.split_once(" s")?;
    let secs = secs.trim().parse().ok()?;
    let why = rest.trim_start_matches(':').trim().to_string();
    Some((secs, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        let l = "ended t_ns=123 code=1005 err=flow down";
        assert_eq!(kv(l, "code"), Some("1005"));
        assert_eq!(kv_num::<u64>(l, "t_ns"), 123);
        assert_eq!(kv(l, "t"), None);
    }

    #[test]
    fn oping_output() {
        let out = "64 bytes from oping: seq=0 time=0.101 ms\n\
                   64 bytes from oping: seq=1 time=0.090 ms\n\n\
                   --- oping ping statistics ---\n\
                   2 packets transmitted, 2 received, 0% packet loss, time 10.1 ms\n\
                   rtt min/avg/max/mdev = 0.090/0.095/0.101/0.005 ms\n";
        let s = ping_stats(out).unwrap();
        assert_eq!((s.transmitted, s.received, s.loss_percent), (2, 2, 0.0));
        assert_eq!(s.replies, vec![(0, 0.101), (1, 0.090)]);
        assert_eq!(s.rtt, Some([0.090, 0.095, 0.101, 0.005]));
        assert!(ping_stats("nothing").is_err());
    }

    #[test]
    fn oecho_wait_down() {
        let out = "hello\nsecond read failed after 0.004 s: flow down (EFLOWDOWN, -1005)\n";
        let (secs, why) = wait_down(out).unwrap();
        assert_eq!(secs, 0.004);
        assert_eq!(why, "flow down (EFLOWDOWN, -1005)");
    }
}
