//! What irmd knows, as a snapshot for the Prometheus endpoint
//! (`irmd --metrics ADDR`): flows by state, each IPCP's frame counters as
//! it last reported them, allocations and flow state changes (detection
//! events) since start.

use super::Registry;
use irm::proto::DownCause;
use std::collections::BTreeMap;

/// Totals kept by the registry as events happen.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub allocations: u64,
    /// Flow state changes reported by IPCPs, by cause (`Unresponsive`, …).
    pub state_changes: BTreeMap<String, u64>,
    /// Flows taken down because their IPCP ended.
    pub ipcp_gone: u64,
}

/// A consistent view for one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Flow count by state name (every state present, 0 included).
    pub flows: BTreeMap<String, u64>,
    /// (IPCP name, layer) → counters it reported.
    pub ipcp_counters: BTreeMap<(String, String), Vec<(String, u64)>>,
    pub ipcps: u64,
    pub names: u64,
    pub allocations: u64,
    pub state_changes: BTreeMap<String, u64>,
    pub ipcp_gone: u64,
}

impl Stats {
    pub(super) fn state_change(&mut self, cause: &DownCause) {
        *self.state_changes.entry(format!("{cause:?}")).or_default() += 1;
    }
}

impl Registry {
    pub fn metrics(&self) -> Metrics {
        let mut flows: BTreeMap<String, u64> = ["allocated", "down", "peer"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for f in self.flows.values() {
            *flows.entry(f.state.as_str().to_lowercase()).or_default() += 1;
        }
        Metrics {
            flows,
            ipcp_counters: self
                .ipcps
                .values()
                .map(|i| {
                    (
                        (i.spec.name.clone(), i.spec.layer.clone()),
                        i.counters.clone(),
                    )
                })
                .collect(),
            ipcps: self.ipcps.len() as u64,
            names: self.names.len() as u64,
            allocations: self.stats.allocations,
            state_changes: self.stats.state_changes.clone(),
            ipcp_gone: self.stats.ipcp_gone,
        }
    }
}
