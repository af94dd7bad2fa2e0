//! Budgets per source MAC and in total: token buckets for every management
//! frame type and for the replies a MAC can provoke, plus counts of the
//! pending requests and open flows a MAC holds.
//!
//! Source MACs are free to forge, so the table is bounded: lookups are O(1)
//! (a `HashMap` with a per-process random hash key), and when it is full a
//! random entry that holds no requests or flows is evicted (sampling a few
//! slots of a dense array, so eviction is O(1) and an attacker rotating MACs
//! cannot choose whom it pushes out). A MAC that finds no room lives on the
//! global budgets only.

use std::collections::HashMap;
use std::time::Duration;

use super::policy::{mgmt_index, Policy, Rate, MGMT_TYPES};
use crate::wire::{FrameType, Mac};

/// Entries looked at to find an evictable one.
const EVICTION_SAMPLES: usize = 8;

/// A token bucket; its shape ([`Rate`]) is passed in, so a policy change
/// needs no walk over the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: u32,
    refilled_at: Duration,
}

impl TokenBucket {
    pub(crate) fn full(rate: Rate, now: Duration) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Duration, rate: Rate) {
        let earned = now.saturating_sub(self.refilled_at).as_nanos() / rate.every.as_nanos();
        let room = rate.burst.saturating_sub(self.tokens);
        if earned >= u128::from(room) {
            self.tokens = rate.burst;
            self.refilled_at = now;
        } else if earned > 0 {
            // earned < room <= burst, so it fits in u32.
            self.tokens += earned as u32;
            self.refilled_at += rate.every * earned as u32;
        }
    }

    /// Take one token if there is one.
    pub(crate) fn take(&mut self, now: Duration, rate: Rate) -> bool {
        self.refill(now, rate);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What one source MAC may still do, and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    mac: Mac,
    rx: [TokenBucket; MGMT_TYPES],
    reply: TokenBucket,
    /// FLOW_REQs from this MAC that irmd is deciding on.
    pub(crate) pending: u32,
    /// Flows this MAC asked for that are still held here.
    pub(crate) inbound_flows: u32,
}

impl Host {
    fn new(mac: Mac, now: Duration, p: &Policy) -> Host {
        Host {
            mac,
            rx: [TokenBucket::full(p.rx_per_mac, now); MGMT_TYPES],
            reply: TokenBucket::full(p.reply_per_mac, now),
            pending: 0,
            inbound_flows: 0,
        }
    }

    fn pinned(&self) -> bool {
        self.pending > 0 || self.inbound_flows > 0
    }
}

/// Per-MAC and global budgets.
#[derive(Debug)]
pub(crate) struct Budgets {
    hosts: Vec<Host>,
    by_mac: HashMap<Mac, usize>,
    rx_total: [TokenBucket; MGMT_TYPES],
    reply_total: TokenBucket,
    /// Pending FLOW_REQs and inbound flows, all MACs together.
    pub(crate) pending: usize,
    pub(crate) inbound_flows: usize,
    /// Frames dropped for want of budget.
    pub(crate) dropped: u64,
    /// Replies not sent for want of budget.
    pub(crate) replies_suppressed: u64,
}

impl Budgets {
    pub(crate) fn new(p: &Policy) -> Budgets {
        Budgets {
            hosts: Vec::new(),
            by_mac: HashMap::new(),
            rx_total: [TokenBucket::full(p.rx_total, Duration::ZERO); MGMT_TYPES],
            reply_total: TokenBucket::full(p.reply_total, Duration::ZERO),
            pending: 0,
            inbound_flows: 0,
            dropped: 0,
            replies_suppressed: 0,
        }
    }

    /// Entries held (for tests and counters).
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The entry of `mac`, made if there is room (evicting a random
    /// unpinned entry when the table is full). `pick` draws randomness.
    pub(crate) fn host(
        &mut self,
        now: Duration,
        mac: Mac,
        p: &Policy,
        pick: &mut dyn FnMut() -> u64,
    ) -> Option<&mut Host> {
        if let Some(&i) = self.by_mac.get(&mac) {
            return Some(&mut self.hosts[i]);
        }
        if self.hosts.len() >= p.mac_table_cap {
            let n = self.hosts.len();
            let victim = (0..EVICTION_SAMPLES)
                .map(|_| (pick() % n as u64) as usize)
                .find(|&i| !self.hosts[i].pinned())?;
            self.remove_at(victim);
        }
        self.hosts.push(Host::new(mac, now, p));
        let i = self.hosts.len() - 1;
        self.by_mac.insert(mac, i);
        Some(&mut self.hosts[i])
    }

    /// The entry of `mac` if it has one.
    pub(crate) fn get_mut(&mut self, mac: Mac) -> Option<&mut Host> {
        let i = *self.by_mac.get(&mac)?;
        Some(&mut self.hosts[i])
    }

    pub(crate) fn get(&self, mac: Mac) -> Option<&Host> {
        Some(&self.hosts[*self.by_mac.get(&mac)?])
    }

    fn remove_at(&mut self, i: usize) {
        let gone = self.hosts.swap_remove(i);
        self.by_mac.remove(&gone.mac);
        if let Some(moved) = self.hosts.get(i) {
            self.by_mac.insert(moved.mac, i);
        }
    }

    /// May a management frame of type `ty` from `mac` be processed?
    pub(crate) fn admit_rx(
        &mut self,
        now: Duration,
        mac: Mac,
        ty: FrameType,
        p: &Policy,
        pick: &mut dyn FnMut() -> u64,
    ) -> bool {
        let Some(t) = mgmt_index(ty) else {
            return true;
        };
        let per_mac = match self.host(now, mac, p, pick) {
            Some(h) => h.rx[t].take(now, p.rx_per_mac),
            None => true,
        };
        let ok = per_mac && self.rx_total[t].take(now, p.rx_total);
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    /// May a reply provoked by `mac` be sent?
    pub(crate) fn admit_reply(
        &mut self,
        now: Duration,
        mac: Mac,
        p: &Policy,
        pick: &mut dyn FnMut() -> u64,
    ) -> bool {
        let per_mac = match self.host(now, mac, p, pick) {
            Some(h) => h.reply.take(now, p.reply_per_mac),
            None => true,
        };
        let ok = per_mac && self.reply_total.take(now, p.reply_total);
        if !ok {
            self.replies_suppressed += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_bursts_then_refills_at_its_rate() {
        let rate = Rate::new(10, ms(10));
        let t0 = Duration::from_secs(5);
        let mut b = TokenBucket::full(rate, t0);
        assert_eq!((0..20).filter(|_| b.take(t0, rate)).count(), 10);
        assert!(!b.take(t0 + ms(9), rate));
        assert!(b.take(t0 + ms(10), rate));
        assert!(!b.take(t0 + ms(19), rate));
        let later = t0 + ms(10_000);
        assert_eq!((0..20).filter(|_| b.take(later, rate)).count(), 10);
    }

    #[test]
    fn full_table_evicts_only_unpinned_entries() {
        let p = Policy {
            mac_table_cap: 4,
            ..Policy::default()
        };
        let mut b = Budgets::new(&p);
        let mut n = 0u64;
        let mut pick = move || {
            n += 1;
            n
        };
        for i in 0..4u8 {
            b.host(ms(0), [2, 0, 0, 0, 0, i], &p, &mut pick)
                .unwrap()
                .pending = 1;
        }
        assert!(b.host(ms(0), [2, 0, 0, 0, 1, 0], &p, &mut pick).is_none());
        b.get_mut([2, 0, 0, 0, 0, 2]).unwrap().pending = 0;
        assert!(b.host(ms(0), [2, 0, 0, 0, 1, 0], &p, &mut pick).is_some());
        assert_eq!(b.len(), 4);
        assert!(b.get([2, 0, 0, 0, 0, 2]).is_none(), "the idle one went");
        for i in [0u8, 1, 3] {
            assert_eq!(b.get([2, 0, 0, 0, 0, i]).unwrap().pending, 1);
        }
    }

    #[test]
    fn per_mac_and_total_reply_budgets() {
        let p = Policy {
            reply_per_mac: Rate::new(2, ms(1000)),
            reply_total: Rate::new(3, ms(1000)),
            ..Policy::default()
        };
        let mut b = Budgets::new(&p);
        let mut pick = || 0;
        let a = [2, 0, 0, 0, 0, 1];
        let c = [2, 0, 0, 0, 0, 2];
        let got: Vec<bool> = [a, a, a, c, c]
            .iter()
            .map(|&m| b.admit_reply(ms(0), m, &p, &mut pick))
            .collect();
        assert_eq!(got, [true, true, false, true, false]);
        assert_eq!(b.replies_suppressed, 2);
    }
}
