//! The flow API: allocate a flow to a name, accept one, read and write SDUs.

use crate::client::{global, Client};
use crate::error::{Error, Result};
use crate::proto::{AppRequest, FlowState, Reply, RingGeometry};
use crate::qos::Qos;
use crate::secure::session::{self, Secure};
use crate::shm::{AppEnd, ShmMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a deallocation waits for irmd's acknowledgement.
const DEALLOC_WAIT: Duration = Duration::from_secs(2);

/// A flow's read or write timeout, read on every call without a lock:
/// nanoseconds, [`Timeout::NONE`] for none.
#[derive(Debug)]
struct Timeout(AtomicU64);

impl Timeout {
    const NONE: u64 = u64::MAX;

    fn new() -> Timeout {
        Timeout(AtomicU64::new(Self::NONE))
    }

    fn set(&self, t: Option<Duration>) {
        let v = t.map_or(Self::NONE, |t| {
            u64::try_from(t.as_nanos()).map_or(Self::NONE, |n| n.min(Self::NONE - 1))
        });
        self.0.store(v, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            Self::NONE => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// When a call starting now gives up (None: never, also when the
    /// timeout reaches past what an `Instant` can hold).
    fn deadline(&self) -> Option<Instant> {
        self.get().and_then(|t| Instant::now().checked_add(t))
    }
}

/// An allocated flow. Reads and writes go through shared memory with the IPCP;
/// the fd ([`AsRawFd`]) becomes readable when an SDU arrives or the flow's
/// state changes, so flows can sit in an epoll set beside sockets; to watch
/// many flows from one thread, use a [`crate::FlowSet`].
/// Dropping it deallocates the flow.
pub struct Flow {
    id: u32,
    name: String,
    qos: Qos,
    max_sdu: usize,
    /// Shared with a [`crate::FlowSet`] watching the flow, which must keep
    /// the rx fd open until it has taken it out of its epoll set.
    end: Arc<AppEnd>,
    client: Arc<Client>,
    read_timeout: Timeout,
    write_timeout: Timeout,
    nonblocking: AtomicBool,
    deallocated: AtomicBool,
    /// Record state of a secure flow (`None`: plain).
    secure: Option<Secure>,
    /// Largest record the ring carries (a secure flow's SDU plus overhead).
    max_record: usize,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("max_sdu", &self.max_sdu)
            .finish()
    }
}

impl Flow {
    /// Allocate a flow to the application registered as `name`. `timeout`
    /// bounds the whole allocation; without it irmd's and the IPCP's own
    /// bounds apply (a name nobody answers fails in about a second).
    pub fn alloc(name: &str, qos: &Qos, timeout: Option<Duration>) -> Result<Flow> {
        let client = global()?;
        let msg = AppRequest::FlowAlloc {
            name: name.to_string(),
            qos: *qos,
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
        };
        // irmd answers within its own bounds; the margin covers a timeout it enforces.
        let r = client.request(msg, &[], timeout.map(|t| t + Duration::from_secs(1)))?;
        let (mut flow, sec) = Flow::from_reply(client, r)?;
        // A name this host has a configuration for gets only secure flows;
        // the handshake runs before the application sees the flow (and a
        // failure deallocates it when `flow` drops).
        if session::client_wants(sec.as_ref(), qos.encrypt) {
            let s = session::client(&flow.end, name, sec.as_ref(), flow.max_sdu, timeout)?;
            flow.make_secure(s);
        }
        Ok(flow)
    }

    /// Wait for a flow to one of the names this program is bound to. For a
    /// name configured with a server certificate, only flows whose
    /// handshake succeeds are returned; the others are logged and dropped.
    pub fn accept(timeout: Option<Duration>) -> Result<Flow> {
        let client = global()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(Error::TimedOut);
            }
            let msg = AppRequest::FlowAccept {
                timeout_ms: left.map(|t| t.as_millis() as u64),
            };
            let r = client.request(msg, &[], left.map(|t| t + Duration::from_secs(1)))?;
            let (mut flow, sec) = Flow::from_reply(client.clone(), r)?;
            let Some(sec) = sec.filter(|s| session::server_wants(Some(s))) else {
                return Ok(flow);
            };
            let hs_left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let hs_timeout = hs_left.map(|l| l.min(session::HANDSHAKE_TIMEOUT));
            match session::server(&flow.end, &flow.name, &sec, flow.max_sdu, hs_timeout) {
                Ok(s) => {
                    flow.make_secure(s);
                    return Ok(flow);
                }
                // Logged by the handshake; `flow` drops and deallocates.
                Err(_) => continue,
            }
        }
    }

    fn make_secure(&mut self, s: Secure) {
        self.max_record = self.max_sdu;
        self.max_sdu = session::max_sdu(self.max_sdu);
        self.secure = Some(s);
    }

    fn from_reply(
        client: Arc<Client>,
        r: crate::ctrl::Received<Reply>,
    ) -> Result<(Flow, Option<crate::proto::NameSecurity>)> {
        match r.env.msg {
            Reply::FlowReady {
                flow_id,
                name,
                qos,
                max_sdu,
                geometry,
                security,
            } => {
                let fds = r.fds;
                let flow = Flow::attach(client.clone(), flow_id, name, qos, max_sdu, geometry, fds);
                if flow.is_err() {
                    // We cannot use it; let irmd release it.
                    let _ = client.notify(AppRequest::FlowDealloc { flow_id });
                }
                Ok((flow?, security))
            }
            Reply::Err(e) => Err(e),
            other => Err(Error::Irmd(format!("unexpected reply: {other:?}"))),
        }
    }

    fn attach(
        client: Arc<Client>,
        id: u32,
        name: String,
        qos: Qos,
        max_sdu: u32,
        geometry: RingGeometry,
        fds: Vec<OwnedFd>,
    ) -> Result<Flow> {
        let [memfd, rx_wake, tx_wake, ipcp_wake]: [OwnedFd; 4] =
            fds.try_into().map_err(|v: Vec<OwnedFd>| {
                Error::Irmd(format!("flow came with {} fds, expected 4", v.len()))
            })?;
        let map = ShmMap::map(memfd.as_fd(), geometry)?;
        drop(memfd);
        let end = Arc::new(AppEnd::new(map, rx_wake, tx_wake, ipcp_wake));
        let max_sdu = max_sdu.min(geometry.slot_size) as usize;
        Ok(Flow {
            id,
            name,
            qos,
            max_sdu,
            max_record: max_sdu,
            end,
            client,
            read_timeout: Timeout::new(),
            write_timeout: Timeout::new(),
            nonblocking: AtomicBool::new(false),
            deallocated: AtomicBool::new(false),
            secure: None,
        })
    }

    /// Read one SDU (truncated to `buf` like a datagram). Blocks until one
    /// arrives, the read timeout passes, or the flow goes down.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let deadline = self.read_timeout.deadline();
        self.read_inner(buf, deadline, self.nonblocking.load(Ordering::Relaxed))
    }

    fn read_inner(&self, buf: &mut [u8], deadline: Option<Instant>, nb: bool) -> Result<usize> {
        let r = match &self.secure {
            Some(s) => s.read(&self.end, buf, self.max_record, deadline, nb),
            None => self.end.read(buf, deadline, nb),
        };
        // SDUs already in the ring are delivered; after them, irmd's death
        // is the error (it ends the IPCP too, which wakes a blocked read).
        r.map_err(|e| self.or_irmd_gone(e))
    }

    /// `Some(EIRMD)` once irmd closed this process's connection: it died
    /// or stopped, and the flow went with it (a restarted irmd knows
    /// nothing of it). One atomic load: no syscall on the data path.
    fn irmd_gone(&self) -> Option<Error> {
        self.client.is_closed().then(|| self.irmd_error())
    }

    /// [`Flow::irmd_gone`] for error paths: also looks at the connection
    /// itself (one syscall), since the IPCP may end the flow before this
    /// process's reader thread has seen irmd go.
    fn irmd_gone_now(&self) -> Option<Error> {
        (self.end.irmd_gone() || self.client.is_closed_now()).then(|| self.irmd_error())
    }

    /// `e`, or EIRMD if irmd is gone. A flow that went down looks at the
    /// connection itself; the frequent EAGAIN and ETIMEDOUT only at the flag.
    fn or_irmd_gone(&self, e: Error) -> Error {
        let gone = match e {
            Error::Again | Error::TimedOut => self.irmd_gone(),
            _ => self.irmd_gone_now(),
        };
        gone.unwrap_or(e)
    }

    fn irmd_error(&self) -> Error {
        Error::Irmd(format!("{}: irmd is gone", self.client.socket_path()))
    }

    fn write_inner(&self, sdu: &[u8], deadline: Option<Instant>, nb: bool) -> Result<usize> {
        if let Some(e) = self.irmd_gone() {
            return Err(e);
        }
        let max = self.max_sdu();
        if sdu.len() > max {
            return Err(Error::MsgSize {
                len: sdu.len(),
                max,
            });
        }
        let r = match &self.secure {
            Some(s) => s.write(&self.end, sdu, deadline, nb),
            None => self.end.write(sdu, deadline, nb),
        };
        r.map_err(|e| self.or_irmd_gone(e))
    }

    /// Whether SDUs on this flow are encrypted end to end.
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// Records dropped on a secure flow because they did not authenticate
    /// (forged, tampered, replayed); 0 on a plain flow.
    pub fn dropped_records(&self) -> u64 {
        self.secure.as_ref().map_or(0, |s| s.dropped())
    }

    /// Write one SDU. Larger than [`Flow::max_sdu`] → `Error::MsgSize`; a full
    /// ring blocks (or `Error::Again` when non-blocking); nothing is dropped.
    pub fn write(&self, sdu: &[u8]) -> Result<usize> {
        let deadline = self.write_timeout.deadline();
        self.write_inner(sdu, deadline, self.nonblocking.load(Ordering::Relaxed))
    }

    /// Read up to `min(bufs.len(), lens.len())` SDUs at once: SDU k into
    /// `bufs[k]` (truncated like a datagram), its length in `lens[k]`.
    /// Waits like [`Flow::read`] for the first and takes the rest only if
    /// they are already there; returns how many were read. Cheaper per SDU
    /// than one `read` each: one lock and one look at the ring per batch.
    pub fn read_batch<B: AsMut<[u8]>>(&self, bufs: &mut [B], lens: &mut [usize]) -> Result<usize> {
        self.read_batch_inner(bufs, lens)
            .map_err(|e| self.or_irmd_gone(e))
    }

    fn read_batch_inner<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        lens: &mut [usize],
    ) -> Result<usize> {
        let deadline = self.read_timeout.deadline();
        let nb = self.nonblocking.load(Ordering::Relaxed);
        let Some(s) = &self.secure else {
            return self.end.read_batch(bufs, lens, deadline, nb);
        };
        // Records open one by one; after the first, take only what is there.
        let max = bufs.len().min(lens.len());
        let mut n = 0;
        while n < max {
            let first = n == 0;
            match s.read(
                &self.end,
                bufs[n].as_mut(),
                self.max_record,
                deadline,
                nb || !first,
            ) {
                Ok(len) => lens[n] = len,
                Err(e) if first => return Err(e),
                Err(_) => break,
            }
            n += 1;
        }
        Ok(n)
    }

    /// Write SDUs in order; returns how many were written: all, or fewer
    /// when the ring filled and the flow is non-blocking, the write timeout
    /// passed or the flow's state changed after some were written (the next
    /// call reports why). With none written, the errors of [`Flow::write`].
    /// Any SDU larger than [`Flow::max_sdu`] refuses the whole batch with
    /// `Error::MsgSize`. One publication and one look whether the IPCP
    /// sleeps per batch (per SDU on a secure flow).
    pub fn write_batch<S: AsRef<[u8]>>(&self, sdus: &[S]) -> Result<usize> {
        if let Some(e) = self.irmd_gone() {
            return Err(e);
        }
        self.write_batch_inner(sdus)
            .map_err(|e| self.or_irmd_gone(e))
    }

    fn write_batch_inner<S: AsRef<[u8]>>(&self, sdus: &[S]) -> Result<usize> {
        let max = self.max_sdu();
        if let Some(big) = sdus.iter().find(|s| s.as_ref().len() > max) {
            return Err(Error::MsgSize {
                len: big.as_ref().len(),
                max,
            });
        }
        let deadline = self.write_timeout.deadline();
        let nb = self.nonblocking.load(Ordering::Relaxed);
        let Some(s) = &self.secure else {
            return self.end.write_batch(sdus, deadline, nb);
        };
        for (n, sdu) in sdus.iter().enumerate() {
            if let Err(e) = s.write(&self.end, sdu.as_ref(), deadline, nb) {
                return if n == 0 { Err(e) } else { Ok(n) };
            }
        }
        Ok(sdus.len())
    }

    /// Read with this call's own timeout and blocking mode instead of the
    /// flow's settings (for callers that keep per-direction settings, such
    /// as the C API's separate read and write non-blocking flags).
    pub fn read_with(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
        nonblocking: bool,
    ) -> Result<usize> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.read_inner(buf, deadline, nonblocking)
    }

    /// Write with this call's own timeout and blocking mode (see [`Flow::read_with`]).
    pub fn write_with(
        &self,
        sdu: &[u8],
        timeout: Option<Duration>,
        nonblocking: bool,
    ) -> Result<usize> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.write_inner(sdu, deadline, nonblocking)
    }

    /// SDUs waiting to be read and SDUs not yet taken by the IPCP: (rx, tx).
    pub fn queue_lens(&self) -> (usize, usize) {
        self.end.queue_lens()
    }

    /// Bound every later blocking read (None: wait for ever). Timeouts
    /// beyond about 584 years mean for ever.
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        self.read_timeout.set(t);
    }
    pub fn set_write_timeout(&self, t: Option<Duration>) {
        self.write_timeout.set(t);
    }
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout.get()
    }
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout.get()
    }
    /// How long a blocking read or write spins before it sleeps
    /// ([`crate::shm::SpinPolicy`]; by default from the cores and
    /// `ETHFLOW_SPIN_US`).
    pub fn set_spin(&self, spin: crate::shm::SpinPolicy) {
        self.end.set_spin(spin);
    }
    pub fn set_nonblocking(&self, nb: bool) {
        self.nonblocking.store(nb, Ordering::Relaxed);
    }
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    pub fn flow_id(&self) -> u32 {
        self.id
    }
    /// Largest SDU this flow carries now: the limit it was allocated with,
    /// lowered while the link's MTU is below what it was then (the IPCP
    /// announces the link's limit in the flow's memory when the MTU
    /// changes). A raised MTU lifts it again, up to the allocation's limit
    /// and no further: the rings were sized for that. Larger SDUs are
    /// refused by [`Flow::write`] with `Error::MsgSize` (EMSGSIZE).
    pub fn max_sdu(&self) -> usize {
        let Some(link) = self.end.link_max_sdu() else {
            return self.max_sdu;
        };
        let link = link as usize;
        // A secure flow's records carry the SDU plus the AEAD's overhead.
        let link = if self.secure.is_some() {
            session::max_sdu(link)
        } else {
            link
        };
        self.max_sdu.min(link)
    }
    /// Largest SDU a read can return: the limit the flow was allocated
    /// with, which [`Flow::max_sdu`] never exceeds. After the link's MTU
    /// shrank, SDUs that arrived before may still be this large, so a
    /// buffer for whole SDUs is sized by this, not by `max_sdu`.
    pub fn max_read_sdu(&self) -> usize {
        self.max_sdu
    }
    pub fn qos(&self) -> Qos {
        self.qos
    }
    /// The name this flow was allocated to (or accepted for).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Liveness state as the IPCP last set it.
    pub fn state(&self) -> FlowState {
        self.end.state()
    }

    /// The shared-memory end, for [`crate::FlowSet`].
    pub(crate) fn app_end(&self) -> &Arc<AppEnd> {
        &self.end
    }

    /// Deallocate now, and wait for irmd to confirm.
    pub fn dealloc(self) -> Result<()> {
        self.dealloc_inner()
    }

    fn dealloc_inner(&self) -> Result<()> {
        if self.deallocated.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A child that inherited the flow by fork does not own it: dropping
        // its copy must not deallocate the parent's flow.
        if !self.end.is_owner() {
            return Err(Error::NotAlloc);
        }
        // An event set watching the flow reports DEALLOC and lets go of it.
        self.end.close_watch();
        let r = self.client.request(
            AppRequest::FlowDealloc { flow_id: self.id },
            &[],
            Some(DEALLOC_WAIT),
        )?;
        match r.env.msg {
            Reply::Ok => Ok(()),
            Reply::Err(e) => Err(e),
            other => Err(Error::Irmd(format!("unexpected reply: {other:?}"))),
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.dealloc_inner();
    }
}

impl AsRawFd for Flow {
    fn as_raw_fd(&self) -> RawFd {
        self.end.rx_fd().as_raw_fd()
    }
}

impl AsFd for Flow {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.end.rx_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_and_huge_ones_mean_for_ever() {
        let t = Timeout::new();
        assert_eq!((t.get(), t.deadline()), (None, None));
        t.set(Some(Duration::from_millis(1500)));
        assert_eq!(t.get(), Some(Duration::from_millis(1500)));
        assert!(t.deadline().is_some());
        t.set(Some(Duration::ZERO));
        assert_eq!(t.get(), Some(Duration::ZERO));
        // Beyond u64 nanoseconds: no deadline, and no panic adding it to now.
        t.set(Some(Duration::MAX));
        assert_eq!(t.deadline(), None);
        t.set(Some(Duration::from_nanos(u64::MAX - 1)));
        let _ = t.deadline();
        t.set(None);
        assert_eq!(t.get(), None);
    }
}
