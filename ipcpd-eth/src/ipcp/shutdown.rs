//! Ending the IPCP. On SIGTERM or SIGINT (`irm ipcp destroy`, a service
//! stop), and when irmd's channel closes (irmd died), every flow is ended as
//! if its application had let go: the SDUs it already wrote are sent, it is
//! marked DOWN for its application (state word and both wake-ups), and the
//! peer gets a DEALLOC, retransmitted until acknowledged for at most
//! [`LINGER`]. So the peer's application learns within a round trip, not
//! after its liveness timeout.

use super::*;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The longest the IPCP waits for its peers to acknowledge its DEALLOCs
/// before it exits (the allocator's first four retransmissions fit).
const LINGER: Duration = Duration::from_millis(300);

/// SIGTERM and SIGINT, as `main` blocked them, read from a signalfd in the
/// event loop. Without a signalfd they are unblocked again, so they still
/// end the process (without telling the peers).
pub(super) fn stop_signals() -> Option<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!("no signalfd for SIGTERM ({e}): a stop will not tell the peers.");
            let _ = set.thread_unblock();
            None
        }
    }
}

impl Ipcp {
    /// Deallocate every flow (see the module docs), then return: the
    /// caller exits.
    pub(super) fn release_all(&mut self, irmd_gone: bool) {
        let why = if irmd_gone {
            "irmd is gone"
        } else {
            "stopping"
        };
        let mut ids: Vec<u32> = self.flows.keys().copied().collect();
        ids.sort_unstable();
        if !ids.is_empty() {
            info!(
                "IPCP {} deallocates its {} flows: {why}.",
                self.opts.name,
                ids.len()
            );
        }
        for id in ids {
            self.flush_flow(id);
            if let Some(f) = self.flows.get(&id) {
                if irmd_gone {
                    // The application says EIRMD, not EFLOWDOWN.
                    f.end.set_irmd_gone();
                } else {
                    f.end.set_state(FlowState::Down);
                }
            }
            let now = self.now();
            self.fa.dealloc(now, id);
            self.detach(id);
        }
        self.carry_out_actions();
        let deadline = Instant::now() + LINGER;
        while self.fa.deallocs_pending() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let mut wait = deadline - now;
            if let Some(t) = self.fa.poll_timeout() {
                wait = wait.min(t.saturating_sub(self.now()));
            }
            let ms = wait.as_micros().div_ceil(1000).min(1000) as u16;
            let mut fds = vec![nix::poll::PollFd::new(
                self.sock.rx_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            // With queues, the DEALLOC_ACKs reach the flows' workers first.
            fds.extend(
                self.pool_events_fd()
                    .map(|fd| nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)),
            );
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            self.receive();
            self.pool_events();
            let now = self.now();
            if self.fa.poll_timeout().is_some_and(|t| t <= now) {
                self.fa.handle_timeout(now);
            }
            self.carry_out_actions();
        }
    }
}
