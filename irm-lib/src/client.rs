//! A process's connection to irmd.
//!
//! One persistent connection per process: irmd reads its closing as the
//! process's death and releases its flows at once. Requests from several
//! threads share it: each carries an id, and a reader thread hands every reply
//! to the thread that waits for it, so a blocked `accept` never holds up a
//! `dealloc` from another thread.

use crate::ctrl::{CtrlSocket, Received};
use crate::error::{Error, Result};
use crate::proto::{socket_path, Envelope, Msg, Role};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Client {
    sock: CtrlSocket,
    path: String,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::Sender<Received>>>,
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
    let c = Client::connect(Role::App {
        prog: program_name(),
    })?;
    *g = Some(c.clone());
    Ok(c)
}

impl Client {
    /// Connect to irmd (at `$IRM_SOCKET` or the default path) and introduce ourselves.
    pub fn connect(role: Role) -> Result<Arc<Client>> {
        let path = socket_path();
        let sock = CtrlSocket::connect(&path)?;
        let reader = sock.try_clone()?;
        let client = Arc::new(Client {
            sock,
            path,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&client);
        std::thread::Builder::new()
            .name("irm-ctrl".into())
            .spawn(move || reader_loop(reader, weak))
            .map_err(|e| Error::Io(e.to_string()))?;
        let r = client.request(
            Msg::Hello {
                role,
                pid: std::process::id(),
            },
            &[],
            Some(Duration::from_secs(10)),
        )?;
        match r.env.msg {
            Msg::Ok => Ok(client),
            Msg::Err(e) => Err(e),
            other => Err(Error::Irmd(format!("unexpected reply to hello: {other:?}"))),
        }
    }

    pub fn socket_path(&self) -> &str {
        &self.path
    }

    /// Send a request and wait for its reply (bounded by `timeout` if given).
    pub fn request(&self, msg: Msg, fds: &[RawFd], timeout: Option<Duration>) -> Result<Received> {
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

    /// Send without waiting for a reply.
    pub fn notify(&self, msg: Msg) -> Result<()> {
        self.sock.send(&Envelope { id: 0, msg }, &[])
    }

    fn gone(&self) -> Error {
        Error::Irmd(format!("{}: irmd closed the connection", self.path))
    }
}

fn reader_loop(sock: CtrlSocket, client: std::sync::Weak<Client>) {
    loop {
        let got = sock.recv();
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
                        if let Msg::FlowReady { flow_id, .. } = r.env.msg {
                            let _ = c.notify(Msg::FlowDealloc { flow_id });
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
