//! One clock for every process on the machine: CLOCK_MONOTONIC is system-wide
//! (network namespaces do not change it), so a timestamp printed by a program
//! inside a namespace can be compared with one the test took when it acted.

use nix::time::{clock_gettime, ClockId};

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Milliseconds from `from_ns` to `to_ns` (negative if `to_ns` is earlier).
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = monotonic_ns();
        assert!(ms_between(a, b) >= 5.0);
        assert!(ms_between(b, a) < 0.0);
    }
}
