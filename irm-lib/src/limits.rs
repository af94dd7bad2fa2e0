//! File descriptor limits. Every flow costs a few fds in each process that
//! holds it (wake-up pipe ends; irmd holds more), so 10 000 flows need tens
//! of thousands: raise the soft limit to the hard one, and as root the hard one
//! too (up to `fs.nr_open`).

use crate::sys::{nofile_limit, set_nofile_limit, Limit};

/// Raise RLIMIT_NOFILE as far as this process may; returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let Ok(lim) = nofile_limit() else {
        return 0;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(lim.max)
        .min(1 << 20);
    if nr_open > lim.max
        && set_nofile_limit(Limit {
            cur: nr_open,
            max: nr_open,
        })
        .is_ok()
    {
        return nr_open;
    }
    if set_nofile_limit(Limit {
        cur: lim.max,
        max: lim.max,
    })
    .is_ok()
    {
        return lim.max;
    }
    lim.cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_lowers_the_limit() {
        let before = crate::sys::nofile_limit().unwrap();
        let now = super::raise_nofile();
        assert!(now >= before.cur, "{now} < {}", before.cur);
    }
}
