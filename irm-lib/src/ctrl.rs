//! The control socket: Unix SOCK_SEQPACKET datagrams carrying one [`Envelope`]
//! each, with file descriptors passed beside it (SCM_RIGHTS).
//!
//! Every received fd is owned at once (`OwnedFd`), so any error path closes it;
//! fds arrive with CLOEXEC set; a message carrying more than [`MAX_FDS`] fds or
//! a truncated control part is refused.

use crate::error::{Error, Result};
use crate::proto::{decode, encode, Envelope, MAX_FDS, MAX_MSG};
use nix::sys::socket::{
    self, accept4, bind, connect, listen, recvmsg, sendmsg, socket, AddressFamily, Backlog,
    ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// One end of a control connection.
#[derive(Debug)]
pub struct CtrlSocket {
    fd: OwnedFd,
}

/// A received message and the fds that came with it.
pub struct Received {
    pub env: Envelope,
    pub fds: Vec<OwnedFd>,
}

impl CtrlSocket {
    /// Connect to irmd at `path`. The error names the path, so a user sees where
    /// the tool looked.
    pub fn connect(path: &str) -> Result<CtrlSocket> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::Irmd(format!("{path}: {e}")))?;
        let addr = UnixAddr::new(path).map_err(|e| Error::Irmd(format!("{path}: {e}")))?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| Error::Irmd(format!("{path}: {}", e.desc())))?;
        Ok(CtrlSocket { fd })
    }

    pub fn from_fd(fd: OwnedFd) -> CtrlSocket {
        CtrlSocket { fd }
    }

    /// Bound a blocking send so a stuck peer cannot stall the sender for ever.
    pub fn set_send_timeout(&self, t: Duration) -> Result<()> {
        let tv = nix::sys::time::TimeVal::new(t.as_secs() as i64, t.subsec_micros() as i64);
        socket::setsockopt(&self.fd, socket::sockopt::SendTimeout, &tv)?;
        Ok(())
    }

    /// Send one message with optional fds.
    pub fn send(&self, env: &Envelope, fds: &[RawFd]) -> Result<()> {
        self.send_with(env, fds, MsgFlags::empty())
    }

    /// Send without blocking: a full socket buffer is `Error::Again`.
    pub fn try_send(&self, env: &Envelope, fds: &[RawFd]) -> Result<()> {
        self.send_with(env, fds, MsgFlags::MSG_DONTWAIT)
    }

    fn send_with(&self, env: &Envelope, fds: &[RawFd], flags: MsgFlags) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::Invalid(format!(
                "{} fds in one message (max {MAX_FDS})",
                fds.len()
            )));
        }
        let bytes = encode(env)?;
        let iov = [IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL | flags,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Err(Error::Again),
                Err(e) => return Err(Error::Io(format!("control send: {}", e.desc()))),
            }
        }
    }

    /// Receive one message. `Ok(None)` means the peer closed the connection.
    pub fn recv(&self) -> Result<Option<Received>> {
        let mut buf = vec![0u8; MAX_MSG];
        let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (len, flags, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(|e| Error::Io(e.to_string()))? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            for r in raw {
                                // SAFETY: the kernel just installed this fd in our table for us;
                                // nobody else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                            }
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::Io(format!("control recv: {}", e.desc()))),
            }
        };
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            // `fds` drops here and closes whatever did arrive.
            return Err(Error::Invalid("truncated control message".into()));
        }
        let env = decode(&buf[..len])?;
        Ok(Some(Received { env, fds }))
    }

    /// Process id of the peer (SO_PEERCRED).
    pub fn peer_pid(&self) -> Result<u32> {
        let cred = socket::getsockopt(&self.fd, socket::sockopt::PeerCredentials)?;
        Ok(cred.pid() as u32)
    }

    pub fn try_clone(&self) -> Result<CtrlSocket> {
        Ok(CtrlSocket {
            fd: self.fd.try_clone()?,
        })
    }

    /// Stop both directions (wakes a reader blocked in recv).
    pub fn shutdown(&self) {
        let _ = socket::shutdown(self.fd.as_raw_fd(), socket::Shutdown::Both);
    }
}

impl AsFd for CtrlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for CtrlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The listening socket of irmd.
pub struct CtrlListener {
    fd: OwnedFd,
}

impl CtrlListener {
    /// Bind at `path`, replacing a stale socket file (one nobody answers on).
    pub fn bind(path: &str) -> Result<CtrlListener> {
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        }
        if std::path::Path::new(path).exists() {
            if CtrlSocket::connect(path).is_ok() {
                return Err(Error::Invalid(format!(
                    "an irmd is already listening on {path}"
                )));
            }
            let _ = std::fs::remove_file(path);
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| Error::Io(format!("bind {path}: {}", e.desc())))?;
        listen(&fd, Backlog::new(128).expect("valid backlog"))?;
        Ok(CtrlListener { fd })
    }

    pub fn accept(&self) -> Result<CtrlSocket> {
        loop {
            match accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a fresh fd that we now own.
                Ok(fd) => {
                    return Ok(CtrlSocket {
                        fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    })
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Msg;

    #[test]
    fn message_and_fds_cross_a_socketpair() {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (a, b) = (CtrlSocket::from_fd(a), CtrlSocket::from_fd(b));
        let efd = nix::sys::eventfd::EventFd::new().unwrap();
        a.send(
            &Envelope {
                id: 3,
                msg: Msg::FlowDealloc { flow_id: 9 },
            },
            &[efd.as_fd().as_raw_fd()],
        )
        .unwrap();
        let got = b.recv().unwrap().unwrap();
        assert_eq!(got.env.id, 3);
        assert!(matches!(got.env.msg, Msg::FlowDealloc { flow_id: 9 }));
        assert_eq!(got.fds.len(), 1);
        let flags =
            nix::fcntl::fcntl(got.fds[0].as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fds must be CLOEXEC"
        );
        drop(a);
        assert!(b.recv().unwrap().is_none(), "closed peer reads as None");
    }

    #[test]
    fn too_many_fds_refused() {
        let (a, _b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let a = CtrlSocket::from_fd(a);
        let fds = [0; MAX_FDS + 1];
        assert!(a
            .send(
                &Envelope {
                    id: 1,
                    msg: Msg::Ok
                },
                &fds
            )
            .is_err());
    }

    #[test]
    fn connect_error_names_the_path() {
        let err = CtrlSocket::connect("/nonexistent/ethflow/x.sock").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/ethflow/x.sock"),
            "{err}"
        );
        assert_eq!(err.code(), crate::error::EIRMD);
    }
}
