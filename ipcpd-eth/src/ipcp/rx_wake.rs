//! When the receiving loop wakes a sleeping application.
//!
//! Every receive pass publishes what it put into each flow's ring at once,
//! so an application that is awake (or spinning) sees it without delay.
//! Waking one that sleeps is what costs: a pipe write in this loop, and on
//! a busy machine two context switches, since the woken reader takes this
//! loop's core. During a flood a pass reads only a few frames, and a reader
//! that keeps up empties its ring and sleeps again after every pass: a
//! wake-up per few SDUs (decision 0043).
//!
//! So while the loop is busy receiving (it does not sleep before its next
//! pass) the wake-ups wait, until [`WAKE_AFTER_SDUS`] SDUs were published
//! since the last ones or the oldest waited [`WAKE_DELAY`]. A loop that may
//! sleep wakes everyone first: a lone SDU (a ping) wakes its reader in the
//! same pass, as before.

use std::time::{Duration, Instant};

/// SDUs published between two rounds of wake-ups while the loop is busy:
/// the target of at most one wake-up per 32 SDUs at flood.
pub(super) const WAKE_AFTER_SDUS: u32 = 32;
/// Longest a published SDU's sleeping reader waits for its wake-up.
pub(super) const WAKE_DELAY: Duration = Duration::from_micros(100);

/// Flows whose readers may sleep on SDUs already published.
#[derive(Debug, Default)]
pub(super) struct DeferredWakes {
    flows: Vec<u32>,
    sdus: u32,
    since: Option<Instant>,
}

impl DeferredWakes {
    /// `sdus` were just published in flow `flow_id`'s ring. `first`: the flow
    /// is not waiting yet (the caller keeps one flag per flow, so a flow is
    /// listed once).
    pub(super) fn published(&mut self, flow_id: u32, sdus: u32, first: bool, now: Instant) {
        if sdus == 0 {
            return;
        }
        if first {
            self.flows.push(flow_id);
        }
        self.sdus = self.sdus.saturating_add(sdus);
        self.since.get_or_insert(now);
    }

    /// Whether the waiting flows must be woken now. `busy`: the loop takes
    /// another receive pass before it may sleep.
    pub(super) fn due(&self, busy: bool, now: Instant) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        !busy || self.sdus >= WAKE_AFTER_SDUS || now.duration_since(since) >= WAKE_DELAY
    }

    /// The waiting flows, to wake; the count starts again.
    pub(super) fn take(&mut self) -> std::vec::Drain<'_, u32> {
        self.sdus = 0;
        self.since = None;
        self.flows.drain(..)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.since.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_published_nothing_due() {
        let w = DeferredWakes::default();
        assert!(w.is_empty());
        assert!(!w.due(false, Instant::now()));
        let mut w = DeferredWakes::default();
        w.published(1, 0, true, Instant::now());
        assert!(w.is_empty());
        assert!(!w.due(false, Instant::now()));
    }

    #[test]
    fn a_loop_that_may_sleep_wakes_at_once() {
        let t0 = Instant::now();
        let mut w = DeferredWakes::default();
        w.published(7, 1, true, t0);
        assert!(w.due(false, t0));
        assert_eq!(w.take().collect::<Vec<_>>(), [7]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_busy_loop_wakes_after_enough_sdus() {
        let t0 = Instant::now();
        let mut w = DeferredWakes::default();
        let mut published = 0;
        for round in 0.. {
            if w.due(true, t0) {
                break;
            }
            // Two flows, 3 SDUs each per pass; flow 2 listed once.
            w.published(1, 3, round == 0, t0);
            w.published(2, 3, round == 0, t0);
            published += 6;
        }
        assert!((WAKE_AFTER_SDUS..WAKE_AFTER_SDUS + 6).contains(&published));
        assert_eq!(w.take().collect::<Vec<_>>(), [1, 2]);
        assert!(!w.due(true, t0));
    }

    #[test]
    fn a_busy_loop_wakes_once_the_oldest_waited_long_enough() {
        let t0 = Instant::now();
        let mut w = DeferredWakes::default();
        w.published(3, 1, true, t0);
        assert!(!w.due(true, t0 + WAKE_DELAY / 2));
        // A later SDU does not move the oldest one's clock.
        w.published(3, 1, false, t0 + WAKE_DELAY / 2);
        assert!(w.due(true, t0 + WAKE_DELAY));
        assert_eq!(w.take().count(), 1);
        assert!(!w.due(true, t0 + WAKE_DELAY * 3));
    }
}
