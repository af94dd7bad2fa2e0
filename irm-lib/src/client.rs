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
        if got.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        got
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
