//! The shell's service side: applying the configuration file through the
//! registry, the stop signals and the clean shutdown, the metrics endpoint,
//! and programs started on demand.

use super::{Shell, KIND_METRICS, TOKEN_SIGNAL};
use crate::registry::{ConnId, Cred, Input};
use irm::proto::{CliRequest, ClientRole, Reply};
use log::{info, warn};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How long a clean shutdown waits for the IPCPs to confirm the
/// deallocations (and so to have told the peers).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// The connection the configuration file is applied through, as root (client
/// connections are numbered from 1).
pub(super) const CONFIG_CONN: ConnId = 0;

/// The connection the configuration's requests of `uid` come from: root's is
/// [`CONFIG_CONN`], a user's is counted down from the top of the id space,
/// far from the ids clients get (counted up from 1).
pub(super) fn config_conn(uid: u32) -> ConnId {
    if uid == 0 {
        CONFIG_CONN
    } else {
        ConnId::MAX - ConnId::from(uid)
    }
}

/// Whether `conn` is one of the configuration's connections.
pub(super) fn is_config_conn(conn: ConnId) -> bool {
    conn == CONFIG_CONN || conn > ConnId::MAX - (1 << 32)
}
/// How long one configuration request may take (an IPCP's bootstrap is
/// bounded by the registry's own deadline well below this).
const CONFIG_WAIT: Duration = Duration::from_secs(60);

impl Shell {
    /// Read `set` (blocked by the caller) from a signalfd in the loop.
    pub fn watch_signals(&mut self, set: &nix::sys::signal::SigSet) -> irm::Result<()> {
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let fd = SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        self.epoll.add(
            fd.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
        )?;
        self.signals = Some(fd);
        Ok(())
    }

    pub(super) fn signalled(&mut self) {
        if let Some(fd) = &self.signals {
            while let Ok(Some(info)) = fd.read_signal() {
                info!("irmd exiting on signal {}.", info.ssi_signo);
                self.stop = true;
            }
        }
    }

    /// A clean stop: every application connection is closed as if its
    /// process died, so each flow is deallocated through its IPCP, which
    /// tells the peer (DEALLOC) at once; waits (bounded) for the IPCPs to
    /// confirm. The IPCPs end when irmd's channels to them close.
    pub(super) fn shutdown(&mut self) {
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        let flows = self.reg.metrics().flows.values().sum::<u64>();
        info!(
            "Deallocating {flows} flows of {} connections before exiting.",
            conns.len()
        );
        for conn in conns {
            self.close_client(conn);
        }
        let mut events = vec![EpollEvent::empty(); 256];
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        self.drain();
        while self.reg.metrics().flows.values().sum::<u64>() > 0 && Instant::now() < deadline {
            self.turn(&mut events);
        }
    }

    /// Serve the Prometheus endpoint on `listener` from the event loop.
    pub fn serve_metrics(&mut self, listener: std::net::TcpListener) -> std::io::Result<()> {
        let server = crate::metrics_http::Server::new(listener)?;
        self.epoll
            .add(
                server.listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, KIND_METRICS),
            )
            .map_err(std::io::Error::from)?;
        self.metrics = Some(server);
        Ok(())
    }

    pub(super) fn metrics_ready(&mut self, id: u64) {
        use crate::metrics_http::Event;
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        if id == 0 {
            let mut events = Vec::new();
            m.accept(&mut events);
            // A connection's fd leaves the epoll set when the server drops
            // (closes) it.
            for Event::Added(id) in events {
                if let Some(stream) = m.stream(id) {
                    let _ = self.epoll.add(
                        stream.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN, KIND_METRICS | id),
                    );
                }
            }
        } else {
            let reg = &self.reg;
            m.ready(id, || reg.metrics());
        }
    }

    /// Apply a configuration: each request goes through the registry's
    /// normal input as a CLI client of its uid (root, or a `[[bind]]`'s
    /// user), one after the other, serving the event loop until its reply
    /// comes. The first refusal stops it, labelled with `what` (the caller
    /// then exits: irmd does not run half-configured).
    pub fn apply(&mut self, reqs: Vec<(String, CliRequest, u32)>) -> Result<(), String> {
        let uids: std::collections::BTreeSet<u32> = reqs.iter().map(|r| r.2).collect();
        for &uid in &uids {
            let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or(0, |u| u.gid.as_raw());
            let conn = config_conn(uid);
            self.feed(Input::Connected {
                conn,
                cred: Cred {
                    pid: std::process::id(),
                    uid,
                    gid,
                    admin: uid == 0,
                },
            });
            self.feed(Input::Hello {
                conn,
                id: 1,
                role: ClientRole::Cli,
                admin: uid == 0,
            });
        }
        let mut events = vec![EpollEvent::empty(); 256];
        let mut result = Ok(());
        for (n, (what, req, uid)) in reqs.into_iter().enumerate() {
            let id = 2 + n as u64;
            self.feed(Input::Cli {
                conn: config_conn(uid),
                id,
                req,
            });
            let deadline = Instant::now() + CONFIG_WAIT;
            let reply = loop {
                self.drain();
                if let Some(i) = self.config_replies.iter().position(|(r, _)| *r == id) {
                    break Some(self.config_replies.swap_remove(i).1);
                }
                if Instant::now() > deadline || self.stop {
                    break None;
                }
                self.turn(&mut events);
            };
            match reply {
                Some(Reply::Err(e)) => result = Err(format!("{what}: {e}")),
                Some(_) => info!("configuration: {what}: done."),
                None if self.stop => result = Err(format!("{what}: stopped by a signal")),
                None => result = Err(format!("{what}: no answer in {CONFIG_WAIT:?}")),
            }
            if result.is_err() {
                break;
            }
        }
        for uid in uids {
            self.feed(Input::Closed {
                conn: config_conn(uid),
            });
        }
        self.drain();
        self.config_replies.clear();
        result
    }

    /// Start a bound program on demand as its binding's uid (and that user's
    /// primary group; std drops supplementary groups when root changes uid).
    /// It finds irmd through IRM_SOCKET, which irmd's main sets.
    pub(super) fn start_program(&mut self, prog: &str, args: &[String], uid: u32) {
        let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => u,
            _ => return warn!("cannot start {prog}: uid {uid} has no user entry"),
        };
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if uid != nix::unistd::getuid().as_raw() {
            // The user's own groups (irmd's socket group among them), looked
            // up here: the child may only make system calls.
            let groups: Vec<u32> = match std::ffi::CString::new(user.name.clone())
                .map_err(|e| e.to_string())
                .and_then(|n| nix::unistd::getgrouplist(&n, user.gid).map_err(|e| e.to_string()))
            {
                Ok(g) => g.into_iter().map(|g| g.as_raw()).collect(),
                Err(e) => return warn!("cannot start {prog}: groups of uid {uid}: {e}"),
            };
            irm::sys::run_as(&mut cmd, uid, user.gid.as_raw(), groups);
            cmd.env("HOME", &user.dir).env("USER", &user.name);
        }
        match cmd.spawn() {
            Ok(c) => {
                info!("Started {prog} (process {}) as uid {uid}.", c.id());
                self.started.push(c);
            }
            Err(e) => warn!("cannot start {prog} as uid {uid}: {e}"),
        }
    }
}
