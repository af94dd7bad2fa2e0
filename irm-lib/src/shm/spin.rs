//! Bounded, adaptive spinning before a sleep.
//!
//! A side that runs out of work (an empty ring, a full one) would sleep and
//! cost the other side a wake-up system call, and itself two context
//! switches. Where cores are to spare, looking again for a few
//! microseconds first often finds the work and saves all three. On a
//! machine with one or two cores a spin only steals time from the side it
//! waits for, so it is off there by default.
//!
//! * [`SpinPolicy::default`]: spin up to [`SpinPolicy::DEFAULT_SPIN`] when
//!   the process may run on more than two cores
//!   (`std::thread::available_parallelism`), else not at all. The
//!   environment variable `ETHFLOW_SPIN_US=<n>` overrides it for the whole
//!   process: `n` microseconds (0 = off; at most [`SpinPolicy::MAX_SPIN`]).
//! * [`Spinner`]: one side's adaptive budget. A spin that finds work doubles
//!   the next budget (up to `max_spin`); one that finds nothing halves it
//!   (down to an eighth of `max_spin`), so a flow that idles for long
//!   stretches wastes little per sleep while a busy one keeps spinning.
//!
//! The application's blocking reads and writes spin ([`super::AppEnd`]); an
//! IPCP event loop spins with a [`Spinner`] of its own around
//! [`super::IpcpEnd::tx_ready`] and its socket. Spins are counted in
//! [`super::wake_stats`].

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::wake::{SPIN_HITS, SPIN_MISSES};

/// The environment variable that overrides [`SpinPolicy::default`].
pub const SPIN_ENV: &str = "ETHFLOW_SPIN_US";

/// How long a side spins, at most, before it sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinPolicy {
    /// Zero: never spin.
    pub max_spin: Duration,
}

impl SpinPolicy {
    /// Never spin.
    pub const OFF: SpinPolicy = SpinPolicy {
        max_spin: Duration::ZERO,
    };
    /// The spin where cores are to spare: longer than a wake-up's round
    /// trip through the scheduler, short beside any timeout.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);
    /// The longest spin [`SPIN_ENV`] may ask for.
    pub const MAX_SPIN: Duration = Duration::from_millis(10);

    /// The policy for `cores` usable cores and the value of [`SPIN_ENV`]
    /// (None: unset). A value that is not a number of microseconds is
    /// ignored (with a warning); a larger one than [`SpinPolicy::MAX_SPIN`]
    /// is clamped.
    pub fn from_env_and_cores(env: Option<&str>, cores: usize) -> SpinPolicy {
        if let Some(v) = env {
            match v.trim().parse::<u64>() {
                Ok(us) => {
                    return SpinPolicy {
                        max_spin: Duration::from_micros(us).min(Self::MAX_SPIN),
                    }
                }
                Err(_) => log::warn!("{SPIN_ENV}={v:?} is not a number of microseconds: ignored"),
            }
        }
        if cores > 2 {
            SpinPolicy {
                max_spin: Self::DEFAULT_SPIN,
            }
        } else {
            Self::OFF
        }
    }

    pub fn is_off(&self) -> bool {
        self.max_spin.is_zero()
    }
}

impl Default for SpinPolicy {
    /// From the environment and the cores this process may use, worked
    /// out once per process (see the [module docs](self)).
    fn default() -> SpinPolicy {
        static POLICY: OnceLock<SpinPolicy> = OnceLock::new();
        *POLICY.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let env = std::env::var(SPIN_ENV).ok();
            SpinPolicy::from_env_and_cores(env.as_deref(), cores)
        })
    }
}

/// Calls of `ready` between two looks at the clock.
const CLOCK_EVERY: u32 = 64;

/// One side's spin budget, adapting to whether spins pay off.
#[derive(Debug, Clone)]
pub struct Spinner {
    policy: SpinPolicy,
    budget: Duration,
}

impl Spinner {
    pub fn new(policy: SpinPolicy) -> Spinner {
        Spinner {
            policy,
            budget: policy.max_spin,
        }
    }

    pub fn policy(&self) -> SpinPolicy {
        self.policy
    }

    /// The next spin's length.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Call `ready` until it returns true (→ true) or the budget is spent
    /// (→ false). Off: returns false at once without calling it.
    pub fn spin_until(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        if self.policy.is_off() {
            return false;
        }
        let deadline = Instant::now() + self.budget;
        let mut n = 0u32;
        let hit = loop {
            if ready() {
                break true;
            }
            std::hint::spin_loop();
            n += 1;
            if n.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline {
                break false;
            }
        };
        self.note(hit);
        hit
    }

    /// Adapt the budget to a spin's outcome and count it.
    fn note(&mut self, hit: bool) {
        let max = self.policy.max_spin;
        if hit {
            SPIN_HITS.fetch_add(1, Ordering::Relaxed);
            self.budget = (self.budget * 2).min(max);
        } else {
            SPIN_MISSES.fetch_add(1, Ordering::Relaxed);
            self.budget = (self.budget / 2).max(max / 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_only_with_cores_to_spare_unless_the_environment_says() {
        let us = |p: SpinPolicy| p.max_spin.as_micros();
        assert!(SpinPolicy::from_env_and_cores(None, 1).is_off());
        assert!(SpinPolicy::from_env_and_cores(None, 2).is_off());
        assert_eq!(
            SpinPolicy::from_env_and_cores(None, 3),
            SpinPolicy {
                max_spin: SpinPolicy::DEFAULT_SPIN
            }
        );
        assert_eq!(us(SpinPolicy::from_env_and_cores(Some("7"), 1)), 7);
        assert!(SpinPolicy::from_env_and_cores(Some("0"), 64).is_off());
        assert_eq!(
            SpinPolicy::from_env_and_cores(Some("99999999999"), 1).max_spin,
            SpinPolicy::MAX_SPIN
        );
        // Not a number: as if unset.
        assert!(SpinPolicy::from_env_and_cores(Some("lots"), 2).is_off());
        assert_eq!(
            us(SpinPolicy::from_env_and_cores(Some("-1"), 8)),
            SpinPolicy::DEFAULT_SPIN.as_micros()
        );
    }

    #[test]
    fn a_spin_stops_when_ready_and_the_budget_adapts() {
        let max = Duration::from_micros(800);
        let mut s = Spinner::new(SpinPolicy { max_spin: max });
        let mut calls = 0;
        assert!(s.spin_until(|| {
            calls += 1;
            calls == 3
        }));
        assert_eq!((calls, s.budget()), (3, max));
        // Nothing comes: false, and the next spin is shorter, down to max/8.
        assert!(!s.spin_until(|| false));
        assert_eq!(s.budget(), max / 2);
        for _ in 0..5 {
            assert!(!s.spin_until(|| false));
        }
        assert_eq!(s.budget(), max / 8);
        // Hits grow it back.
        assert!(s.spin_until(|| true));
        assert_eq!(s.budget(), max / 4);
        // Off: never calls `ready`.
        let mut off = Spinner::new(SpinPolicy::OFF);
        assert!(!off.spin_until(|| panic!("called while off")));
    }
}
