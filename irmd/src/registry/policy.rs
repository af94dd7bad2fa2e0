//! Tunables of the registry, with defaults an operator can reason about.

use std::time::Duration;

/// Limits and deadlines. Root is not held to the per-uid limits (it can do
/// anything on the host anyway); the totals bound what irmd holds in all,
/// sized well under its 20 000 fds (a flow costs irmd about 8 fds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Default flow liveness timeout (ms) when a flow's QoS sets none.
    pub default_timeout_ms: u64,
    /// Slots per ring of a new flow.
    pub ring_slots: u32,
    /// How long a bootstrap waits for the IPCP to report.
    pub bootstrap_wait: Duration,
    /// How long an incoming flow waits for a bound program to accept.
    pub incoming_wait: Duration,
    /// Connections (processes) one non-root uid may hold open.
    pub max_conns_per_uid: usize,
    /// Flows (allocated or being allocated) one non-root uid may hold.
    pub max_flows_per_uid: usize,
    /// Pending `accept` calls one non-root uid may have waiting.
    pub max_accepts_per_uid: usize,
    /// Names one non-root uid may own.
    pub max_names_per_uid: usize,
    /// Connections in all (every uid, root too).
    pub max_conns: usize,
    /// Flows in all.
    pub max_flows: usize,
    /// Names in all.
    pub max_names: usize,
    /// Largest busy-poll an IPCP may be bootstrapped with (µs).
    pub max_busy_poll_us: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            default_timeout_ms: 120_000,
            ring_slots: 4096,
            bootstrap_wait: Duration::from_secs(10),
            incoming_wait: Duration::from_secs(2),
            max_conns_per_uid: 512,
            max_flows_per_uid: 1024,
            max_accepts_per_uid: 64,
            max_names_per_uid: 256,
            max_conns: 4096,
            max_flows: 1536,
            max_names: 4096,
            max_busy_poll_us: 10_000,
        }
    }
}
