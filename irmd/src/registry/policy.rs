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
    /// How long a new connection may take to say hello before it is closed.
    pub hello_wait: Duration,
    /// How long `irm flow list` waits for the IPCPs' fresh counters before it
    /// answers with the last ones they reported.
    pub flow_list_wait: Duration,
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

/// fds irmd holds per flow once it is handed out (the monitor's four), and
/// one spare. While a flow is being allocated irmd holds seven more; if that
/// runs out of fds, the requester gets the error, nothing else breaks.
const FDS_PER_FLOW: u64 = 5;
/// fds kept aside for irmd itself (listener, epoll, IPCP channels, logs).
const FDS_RESERVED: u64 = 256;

impl Policy {
    /// Bound the totals by what `nofile` fds can hold: every connection one
    /// fd, every flow [`FDS_PER_FLOW`]; connections get at most a fifth.
    pub fn fit_fds(mut self, nofile: u64) -> Policy {
        let room = nofile.saturating_sub(FDS_RESERVED);
        self.max_conns = self.max_conns.min((room / 5) as usize).max(16);
        let left = room.saturating_sub(self.max_conns as u64);
        self.max_flows = ((left / FDS_PER_FLOW) as usize).max(16);
        self
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            default_timeout_ms: 120_000,
            ring_slots: 4096,
            bootstrap_wait: Duration::from_secs(10),
            incoming_wait: Duration::from_secs(2),
            hello_wait: Duration::from_secs(5),
            flow_list_wait: Duration::from_millis(200),
            max_conns_per_uid: 512,
            max_flows_per_uid: 1024,
            max_accepts_per_uid: 64,
            max_names_per_uid: 256,
            max_conns: 4096,
            max_flows: 1536,
            // (both replaced by `fit_fds` at start from the fd limit)
            max_names: 4096,
            max_busy_poll_us: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_fit_the_fd_limit() {
        let p = Policy::default().fit_fds(20_000);
        assert_eq!(p.max_conns, 3_948);
        assert!(
            p.max_conns as u64 + p.max_flows as u64 * FDS_PER_FLOW + FDS_RESERVED <= 20_000,
            "{p:?}"
        );
        assert!(p.max_flows >= 1_000, "{p:?}");
        let big = Policy::default().fit_fds(1 << 20);
        assert_eq!(big.max_conns, 4096);
        assert!(big.max_flows > 80_000, "{big:?}");
        let tiny = Policy::default().fit_fds(100);
        assert_eq!((tiny.max_conns, tiny.max_flows), (16, 16));
    }
}
