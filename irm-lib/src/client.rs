//! A process's connection to irmd.
//!
//! One persistent connection per process: irmd reads its closing as the
//! process's death and releases its flows at once. Requests from several
//! threads share it: each carries an id, and a reader thread hands every reply
//! to the thread that waits for it, so a blocked `accept` never holds up a
//! `dealloc` from another thread.

use crate::ctrl::{CtrlSocket, Received};
use crate::error::{Error, Result};
use crate::proto::{
    socket_path, AppRequest, CliRequest, ClientHello, ClientRole, Envelope, Reply, PROTO_VERSION,
};
use serde::Serialize;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Client {
    sock: CtrlSocket,
    path: String,
    role: ClientRole,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::Sender<Received<Reply>>>>,
    closed: AtomicBool,
}

static GLOBAL: Mutex<Option<Arc<Client>>> = Mutex::new(None);

/// This program's name as irmd knows it: the base name of argv[0].
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The process-wide connection, made on first use (and again if irmd went away).
pub fn global() -> Result<Arc<Client>> {
    let mut g = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = g.as_ref() {
        if !c.closed.load(Ordering::Acquire) {
            return Ok(c.clone());
        }
    }
    // Each flow holds a few fds (wake-up pipe ends) in this process.
    crate::limits::raise_nofile();
    let c = Client::connect(ClientRole::App {
        prog: program_name(),
    })?;
    *g = Some(c.clone());
    Ok(c)
}

impl Client {
    /// Connect to irmd (at `$IRM_SOCKET` or the default path) and introduce
    /// ourselves: the hello carries the protocol version and our role, which
    /// fixes the only requests this connection can make.
    pub fn connect(role: ClientRole) -> Result<Arc<Client>> {
        let path = socket_path();
        let sock = CtrlSocket::connect(&path)?;
        // irmd answers a hello at once; a stopped or wedged one must not hang us.
        sock.set_send_timeout(Duration::from_secs(10))?;
        sock.set_recv_timeout(Some(Duration::from_secs(10)))?;
        sock.send(
            &ClientHello {
                version: PROTO_VERSION,
                role: role.clone(),
            },
            &[],
        )
        .map_err(|e| Error::Irmd(format!("{path}: {e}")))?;
        match sock.recv::<Reply>() {
            Ok(Some(r)) => match r.env.msg {
                Reply::Ok => {}
                Reply::Err(e) => return Err(e),
                other => {
                    return Err(Error::Irmd(format!(
                        "{path}: unexpected reply to hello: {other:?}"
                    )))
                }
            },
            Ok(None) => return Err(Error::Irmd(format!("{path}: irmd closed the connection"))),
            Err(Error::Again) => {
                return Err(Error::Irmd(format!(
                    "{path}: irmd did not answer the hello within 10 s"
                )))
            }
            Err(e) => return Err(Error::Irmd(format!("{path}: {e}"))),
        }
        sock.set_recv_timeout(None)?;
        Client::start(sock, path, role)
    }

    /// A client on a connection whose hello is done: starts its reader thread.
    fn start(sock: CtrlSocket, path: String, role: ClientRole) -> Result<Arc<Client>> {
        let reader = sock.try_clone()?;
        let client = Arc::new(Client {
            sock,
            path,
            role,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&client);
        std::thread::Builder::new()
            .name("irm-ctrl".into())
            .spawn(move || reader_loop(reader, weak))
            .map_err(|e| Error::Io(e.to_string()))?;
        Ok(client)
    }

    pub fn socket_path(&self) -> &str {
        &self.path
    }

    /// An application's request; waits for its reply (bounded by `timeout` if given).
    pub fn request(
        &self,
        msg: AppRequest,
        fds: &[RawFd],
        timeout: Option<Duration>,
    ) -> Result<Received<Reply>> {
        if !matches!(self.role, ClientRole::App { .. }) {
            return Err(Error::Invalid("not connected as an application".into()));
        }
        self.exchange(msg, fds, timeout)
    }

    /// A request of the `irm` tool; waits for its reply.
    pub fn cli_request(
        &self,
        msg: CliRequest,
        timeout: Option<Duration>,
    ) -> Result<Received<Reply>> {
        if self.role != ClientRole::Cli {
            return Err(Error::Invalid("not connected as the irm tool".into()));
        }
        self.exchange(msg, &[], timeout)
    }

    fn exchange<M: Serialize>(
        &self,
        msg: M,
        fds: &[RawFd],
        timeout: Option<Duration>,
    ) -> Result<Received<Reply>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.gone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        if let Err(e) = self.sock.send(&Envelope { id, msg }, fds) {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(if self.closed.load(Ordering::Acquire) {
                self.gone()
            } else {
                e
            });
        }
        let got = match timeout {
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => Error::TimedOut,
                mpsc::RecvTimeoutError::Disconnected => self.gone(),
            }),
            None => rx.recv().map_err(|_| self.gone()),
        };
        match got {
            Err(Error::TimedOut) => self.settle_timeout(id, &rx),
            Err(e) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                Err(e)
            }
            ok => ok,
        }
    }

    /// Our wait for request `id` timed out. If the reader thread has not
    /// taken the waiter yet, withdraw it: a reply that comes later finds
    /// nobody and is given back ([`reader_loop`]). If it has, the reply is
    /// on its way into `rx` (the reader sends right after it takes the
    /// waiter, or drops the sender when irmd is gone): take it and return
    /// it. Dropping it would drop a flow irmd and the IPCP hold for this
    /// process, and nobody would deallocate it until the process exits.
    fn settle_timeout(
        &self,
        id: u64,
        rx: &mpsc::Receiver<Received<Reply>>,
    ) -> Result<Received<Reply>> {
        let withdrawn = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .is_some();
        if withdrawn {
            return Err(Error::TimedOut);
        }
        rx.recv().map_err(|_| self.gone())
    }

    /// Whether irmd closed this connection (it died or stopped). Flows
    /// made through it fail with `Irmd` (EIRMD) from then on: a restarted
    /// irmd knows nothing of them.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// [`Client::is_closed`], or the connection hung up and the reader
    /// thread has not run since (one `poll`: for error paths). A daemon's
    /// death can reach a flow (its state word, its pipes' end of file)
    /// before that thread is scheduled.
    pub fn is_closed_now(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        if self.is_closed() {
            return true;
        }
        // POLLHUP and POLLERR are reported whatever was asked for.
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::empty())];
        let hup = PollFlags::POLLHUP | PollFlags::POLLERR;
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0].revents().is_some_and(|r| r.intersects(hup))
    }

    /// Send an application's request without waiting for a reply.
    pub fn notify(&self, msg: AppRequest) -> Result<()> {
        self.sock.send(&Envelope { id: 0, msg }, &[])
    }

    fn gone(&self) -> Error {
        Error::Irmd(format!("{}: irmd closed the connection", self.path))
    }
}

fn reader_loop(sock: CtrlSocket, client: std::sync::Weak<Client>) {
    loop {
        let got = sock.recv::<Reply>();
        let Some(c) = client.upgrade() else { return };
        match got {
            Ok(Some(r)) => {
                let waiter = c
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&r.env.id);
                match waiter {
                    Some(w) => {
                        let _ = w.send(r);
                    }
                    None => {
                        // Nobody waits any more (timed out): a flow handed to us
                        // now would leak in irmd, so give it back.
                        if let Reply::FlowReady { flow_id, .. } = r.env.msg {
                            let _ = c.notify(AppRequest::FlowDealloc { flow_id });
                        }
                    }
                }
            }
            Ok(None) | Err(_) => {
                c.closed.store(true, Ordering::Release);
                // Dropping the senders wakes every waiter with an error.
                c.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return;
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.sock.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RingGeometry;
    use crate::Qos;

    fn ready(flow_id: u32) -> Reply {
        Reply::FlowReady {
            flow_id,
            name: "svc".into(),
            qos: Qos::raw(),
            max_sdu: 100,
            geometry: RingGeometry {
                slots: 2,
                slot_size: 100,
            },
            security: None,
        }
    }

    /// A client on one end of a socketpair; the other end plays irmd.
    fn client() -> (Arc<Client>, CtrlSocket) {
        let (ours, irmd) = CtrlSocket::pair().unwrap();
        let role = ClientRole::App { prog: "t".into() };
        (Client::start(ours, "test".into(), role).unwrap(), irmd)
    }

    /// The reader thread took the waiter of request 5 and is handing it the
    /// reply (a flow) just as the wait times out: the reply is returned,
    /// not dropped with the channel (which left the flow allocated in irmd
    /// and the IPCP until the process exited).
    #[test]
    fn a_reply_taken_as_the_wait_times_out_is_returned() {
        let (c, _irmd) = client();
        let (tx, rx) = mpsc::channel();
        c.pending.lock().unwrap().insert(5, tx);
        // What the reader does: take the waiter, then send.
        let w = c.pending.lock().unwrap().remove(&5).unwrap();
        w.send(Received {
            env: Envelope {
                id: 5,
                msg: ready(9),
            },
            fds: Vec::new(),
        })
        .unwrap();
        let got = c.settle_timeout(5, &rx).expect("the reply that came");
        assert_eq!(got.env.msg, ready(9));
    }

    /// Timed out before the reader took the waiter: the waiter is withdrawn
    /// and the caller sees the timeout.
    #[test]
    fn a_wait_that_times_out_first_is_withdrawn() {
        let (c, _irmd) = client();
        let (tx, rx) = mpsc::channel();
        c.pending.lock().unwrap().insert(6, tx);
        assert!(matches!(c.settle_timeout(6, &rx), Err(Error::TimedOut)));
        assert!(c.pending.lock().unwrap().is_empty());
    }

    /// A flow that arrives for a withdrawn request is given back to irmd.
    #[test]
    fn a_flow_nobody_waits_for_is_deallocated() {
        let (c, irmd) = client();
        irmd.send(
            &Envelope {
                id: 42,
                msg: ready(17),
            },
            &[],
        )
        .unwrap();
        irmd.set_recv_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let back = irmd.recv::<AppRequest>().unwrap().expect("a message");
        assert_eq!(back.env.msg, AppRequest::FlowDealloc { flow_id: 17 });
        assert!(!c.is_closed());
    }

    /// irmd closing the connection marks the client closed (flows made
    /// through it then fail with EIRMD) and ends every wait.
    #[test]
    fn irmd_closing_the_connection_is_seen() {
        let (c, irmd) = client();
        assert!(!c.is_closed_now());
        drop(irmd);
        for _ in 0..1000 {
            if c.is_closed() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(c.is_closed() && c.is_closed_now());
        let r = c.request(AppRequest::FlowAccept { timeout_ms: None }, &[], None);
        assert!(matches!(r, Err(Error::Irmd(_))));
    }
}
