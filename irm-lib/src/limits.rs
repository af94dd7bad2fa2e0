//! File descriptor limits. Every flow costs a few fds in each process that
//! holds it (wake-up pipe ends; irmd holds more), so 10 000 flows need tens
//! of thousands: raise the soft limit to the hard one, and as root the hard one
//! too (up to `fs.nr_open`).

/// Raise RLIMIT_NOFILE as far as this process may; returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(lim.rlim_max)
        .min(1 << 20);
    if nr_open > lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: nr_open,
            rlim_max: nr_open,
        };
        // SAFETY: setrlimit reads a valid rlimit; failing (not root) is fine.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return nr_open;
        }
    }
    let want = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return lim.rlim_max;
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_lowers_the_limit() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a valid rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) };
        let now = super::raise_nofile();
        assert!(now >= before.rlim_cur, "{now} < {}", before.rlim_cur);
    }
}
