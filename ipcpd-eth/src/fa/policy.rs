//! Every tunable of the flow allocator, with the rules between them.

use std::time::Duration;

use crate::wire::FrameType;

/// A token bucket's shape: up to `burst` tokens, one more every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    pub const fn new(burst: u32, every: Duration) -> Rate {
        Rate { burst, every }
    }

    /// As many as anyone could send: for tests and trusted links.
    pub const UNLIMITED: Rate = Rate::new(u32::MAX, Duration::from_nanos(1));
}

/// Tunables of one flow allocator. [`Policy::default`] documents each value;
/// [`Policy::validate`] checks the rules that tie them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Waits after each NAME_QUERY; when the last one ends the allocation
    /// fails. Default 50, 100, 200, 400 ms (sent at 0, 50, 150, 350 ms, fails
    /// at 750 ms): four tries cover a lost broadcast or two on a LAN.
    pub name_query_waits: Vec<Duration>,
    /// Gap between FLOW_REQ transmissions. Default 100 ms.
    pub flow_req_interval: Duration,
    /// Retransmissions of a FLOW_REQ. Default 25: with the first send that is
    /// 26 × 100 ms = 2.6 s, longer than irmd waits for a bound program to call
    /// accept (2 s), so a busy server is not mistaken for a dead one.
    pub flow_req_retransmits: u32,
    /// Waits after each DEALLOC; after the last one the sender gives up.
    /// Default 20, 40, 80, 160, 320 ms (sent at 0, 20, 60, 140, 300, 620 ms).
    pub dealloc_waits: Vec<Duration>,
    /// A keep-alive goes out when nothing was sent to a peer for
    /// `timeout / keepalive_fraction` (shortest live timeout). Default 4: three
    /// keep-alives may be lost before a flow goes PEER.
    pub keepalive_fraction: u32,
    /// How long a refusal is remembered, to answer retransmitted FLOW_REQs the
    /// same way. Must outlast the requester's whole FLOW_REQ window. Default 5 s
    /// (the window is 2.6 s).
    pub refusal_memory: Duration,
    /// A flow timeout below this is raised to it (0 ms would expire before any
    /// frame could arrive). Default 1 ms.
    pub min_timeout: Duration,
    /// The longest liveness timeout a remote requester may ask for; longer
    /// requests are capped. Default 1 hour: far above any timeout an
    /// application needs to ride out a reboot or a link flap (the model uses a
    /// fixed 120 s), yet a flow that a vanished or forging host set up frees
    /// its slot within the hour instead of never. The requester adopts the
    /// capped value from the FLOW_REPLY; a timeout irmd passes with its
    /// accept is local and not capped.
    pub max_remote_timeout: Duration,
    /// Slots in the endpoint table (at most 2^24). Default 2^24.
    pub max_slots: usize,
    /// FLOW_REQs irmd is deciding on, in all. Default 4096.
    pub max_pending: usize,
    /// FLOW_REQs irmd is deciding on, per requester MAC. Default 64.
    pub max_pending_per_mac: u32,
    /// Flows a remote host asked for and that are still held, in all.
    /// Default 65 536.
    pub max_inbound_flows: usize,
    /// Flows a remote host asked for and that are still held, per requester
    /// MAC. Default 4096.
    pub max_inbound_flows_per_mac: u32,
    /// Share (1/n) of `max_pending` and `max_inbound_flows` kept for MACs that
    /// proved a live flow with us: strangers rotating MACs cannot take it.
    /// Default 4 (a quarter).
    pub verified_reserve_fraction: u32,
    /// Management frames accepted per source MAC and type. Default burst 256,
    /// then 10 000/s: far above what allocation, keep-alive and deallocation
    /// need, far below line rate.
    pub rx_per_mac: Rate,
    /// Management frames accepted per type from all MACs together. Default
    /// burst 2048, then 50 000/s.
    pub rx_total: Rate,
    /// Answers a MAC can provoke (NAME_REPLY, refusals, repeated FLOW_REPLYs,
    /// DEALLOC_ACK, UNKNOWN_EID, CHALLENGE_REPLY). Default burst 10, then
    /// 100/s. No answer is larger than the frame that provoked it.
    pub reply_per_mac: Rate,
    /// The same answers from all MACs together. Default burst 100, then 1000/s.
    pub reply_total: Rate,
    /// Source MACs with budgets held at once. Default 8192; beyond that a
    /// random idle entry is evicted (MACs with pending or open flows never
    /// are), and a MAC with no entry lives on the global budgets only.
    pub mac_table_cap: usize,
    /// Least gap between two CHALLENGEs to one peer. Default 20 ms.
    pub challenge_gap: Duration,
    /// Names remembered (name hash → MAC). Default 4096.
    pub directory_cap: usize,
    /// A cached name is used this long, then asked again (and the old answer
    /// preferred if it still answers). Default 30 s.
    pub name_cache_ttl: Duration,
    /// One name-conflict report per name per this gap. Default 60 s.
    pub conflict_report_gap: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        let ms = Duration::from_millis;
        Policy {
            name_query_waits: [50, 100, 200, 400].map(ms).to_vec(),
            flow_req_interval: ms(100),
            flow_req_retransmits: 25,
            dealloc_waits: [20, 40, 80, 160, 320].map(ms).to_vec(),
            keepalive_fraction: 4,
            refusal_memory: Duration::from_secs(5),
            min_timeout: ms(1),
            max_remote_timeout: Duration::from_secs(3600),
            max_slots: 1 << crate::wire::Eid::INDEX_BITS,
            max_pending: 4096,
            max_pending_per_mac: 64,
            max_inbound_flows: 65_536,
            max_inbound_flows_per_mac: 4096,
            verified_reserve_fraction: 4,
            rx_per_mac: Rate::new(256, Duration::from_micros(100)),
            rx_total: Rate::new(2048, Duration::from_micros(20)),
            reply_per_mac: Rate::new(10, ms(10)),
            reply_total: Rate::new(100, ms(1)),
            mac_table_cap: 8192,
            challenge_gap: ms(20),
            directory_cap: 4096,
            name_cache_ttl: Duration::from_secs(30),
            conflict_report_gap: Duration::from_secs(60),
        }
    }
}

/// A rule between policy values that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// A list or count that must not be empty or zero is.
    Empty(&'static str),
    /// `refusal_memory` ends before the requester's FLOW_REQ window.
    RefusalMemoryTooShort { memory: Duration, window: Duration },
    /// A per-MAC cap larger than the global one.
    PerMacAboveTotal(&'static str),
    /// More slots than an eid's index can name.
    TooManySlots(usize),
    /// A remote timeout cap below the minimum timeout.
    RemoteTimeoutBelowMinimum,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::Empty(what) => write!(f, "policy: {what} must not be empty or zero"),
            PolicyError::RefusalMemoryTooShort { memory, window } => write!(
                f,
                "policy: refusal_memory {memory:?} must outlast the FLOW_REQ window {window:?}"
            ),
            PolicyError::PerMacAboveTotal(what) => {
                write!(f, "policy: per-MAC {what} above the global cap")
            }
            PolicyError::TooManySlots(n) => write!(f, "policy: {n} slots exceed 2^24"),
            PolicyError::RemoteTimeoutBelowMinimum => {
                f.write_str("policy: max_remote_timeout below min_timeout")
            }
        }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// How long a requester keeps sending one FLOW_REQ before it gives up.
    pub fn flow_req_window(&self) -> Duration {
        self.flow_req_interval * (self.flow_req_retransmits + 1)
    }

    /// When an unanswered NAME_QUERY fails, counted from the first send.
    pub fn name_query_window(&self) -> Duration {
        self.name_query_waits.iter().sum()
    }

    /// Check the rules between the values.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let empty = [
            ("name_query_waits", self.name_query_waits.is_empty()),
            ("dealloc_waits", self.dealloc_waits.is_empty()),
            ("keepalive_fraction", self.keepalive_fraction == 0),
            ("flow_req_interval", self.flow_req_interval.is_zero()),
            ("max_slots", self.max_slots == 0),
            ("max_pending", self.max_pending == 0),
            ("max_pending_per_mac", self.max_pending_per_mac == 0),
            ("max_inbound_flows", self.max_inbound_flows == 0),
            (
                "max_inbound_flows_per_mac",
                self.max_inbound_flows_per_mac == 0,
            ),
            (
                "verified_reserve_fraction",
                self.verified_reserve_fraction == 0,
            ),
            ("mac_table_cap", self.mac_table_cap == 0),
            ("directory_cap", self.directory_cap == 0),
            ("min_timeout", self.min_timeout.is_zero()),
        ];
        for rate in [
            self.rx_per_mac,
            self.rx_total,
            self.reply_per_mac,
            self.reply_total,
        ] {
            if rate.burst == 0 || rate.every.is_zero() {
                return Err(PolicyError::Empty("rate"));
            }
        }
        if let Some((what, _)) = empty.iter().find(|(_, e)| *e) {
            return Err(PolicyError::Empty(what));
        }
        let window = self.flow_req_window();
        if self.refusal_memory <= window {
            return Err(PolicyError::RefusalMemoryTooShort {
                memory: self.refusal_memory,
                window,
            });
        }
        if self.max_pending_per_mac as usize > self.max_pending {
            return Err(PolicyError::PerMacAboveTotal("pending"));
        }
        if self.max_inbound_flows_per_mac as usize > self.max_inbound_flows {
            return Err(PolicyError::PerMacAboveTotal("inbound flows"));
        }
        if self.max_slots > 1 << crate::wire::Eid::INDEX_BITS {
            return Err(PolicyError::TooManySlots(self.max_slots));
        }
        if self.max_remote_timeout < self.min_timeout {
            return Err(PolicyError::RemoteTimeoutBelowMinimum);
        }
        Ok(())
    }
}

/// Index of a management frame type in per-type budget arrays (DATA has none).
pub(crate) fn mgmt_index(ty: FrameType) -> Option<usize> {
    match ty {
        FrameType::Data => None,
        other => Some(other as usize - 1),
    }
}

/// Number of management frame types.
pub(crate) const MGMT_TYPES: usize = FrameType::ALL.len() - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_refusals_outlast_the_request_window() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.flow_req_window(), Duration::from_millis(2600));
        assert_eq!(p.name_query_window(), Duration::from_millis(750));
        assert!(p.refusal_memory > p.flow_req_window());
    }

    #[test]
    fn broken_rules_are_named() {
        let p = Policy {
            refusal_memory: Duration::from_secs(2),
            ..Policy::default()
        };
        assert!(matches!(
            p.validate(),
            Err(PolicyError::RefusalMemoryTooShort { .. })
        ));
        let p = Policy {
            max_pending_per_mac: 5000,
            ..Policy::default()
        };
        assert_eq!(p.validate(), Err(PolicyError::PerMacAboveTotal("pending")));
        let p = Policy {
            keepalive_fraction: 0,
            ..Policy::default()
        };
        assert_eq!(p.validate(), Err(PolicyError::Empty("keepalive_fraction")));
        let p = Policy {
            max_slots: (1 << 24) + 1,
            ..Policy::default()
        };
        assert!(matches!(p.validate(), Err(PolicyError::TooManySlots(_))));
    }

    #[test]
    fn every_management_type_has_a_budget_index() {
        let idx: Vec<usize> = FrameType::ALL
            .iter()
            .filter_map(|&t| mgmt_index(t))
            .collect();
        assert_eq!(idx, (0..MGMT_TYPES).collect::<Vec<_>>());
    }
}
