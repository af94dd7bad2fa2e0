//! The control socket: Unix SOCK_SEQPACKET datagrams carrying one encoded
//! message each, with file descriptors passed beside it (SCM_RIGHTS).
//!
//! Every received fd is owned at once (`OwnedFd`), so any error path closes it;
//! fds arrive with CLOEXEC set; a message carrying more than [`MAX_FDS`] fds or
//! a truncated control part is refused, and every fd that did arrive with it is
//! closed (the control buffer is walked by hand, since a truncated one is exactly
//! the case a library iterator refuses to read).

use crate::error::{Error, Result};
use crate::proto::{decode, encode, Envelope, DEFAULT_GROUP, MAX_FDS, MAX_MSG};
use nix::sys::socket::{
    self, accept4, bind, connect, listen, sendmsg, socket, AddressFamily, Backlog, ControlMessage,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// One end of a control connection.
#[derive(Debug)]
pub struct CtrlSocket {
    fd: OwnedFd,
}

/// A received datagram (not yet decoded) and the fds that came with it.
pub struct RawReceived {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A received message and the fds that came with it.
pub struct Received<M> {
    pub env: Envelope<M>,
    pub fds: Vec<OwnedFd>,
}

/// Who is at the other end of a connection, as the kernel recorded it when the
/// peer connected (SO_PEERCRED): the peer cannot choose these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The group that owns the socket file at `path`, by name, if it can be read.
fn socket_group(path: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata(path).ok()?.gid();
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

impl CtrlSocket {
    /// Connect to irmd at `path`. The error names the path, so a user sees where
    /// the tool looked; a refusal by file permissions names the group that
    /// grants access.
    pub fn connect(path: &str) -> Result<CtrlSocket> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::Irmd(format!("{path}: {e}")))?;
        let addr = UnixAddr::new(path).map_err(|e| Error::Irmd(format!("{path}: {e}")))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => Ok(CtrlSocket { fd }),
            Err(nix::errno::Errno::EACCES) | Err(nix::errno::Errno::EPERM) => Err(Error::Access {
                path: path.to_string(),
                group: socket_group(path).unwrap_or_else(|| DEFAULT_GROUP.to_string()),
            }),
            Err(e) => Err(Error::Irmd(format!("{path}: {}", e.desc()))),
        }
    }

    pub fn from_fd(fd: OwnedFd) -> CtrlSocket {
        CtrlSocket { fd }
    }

    /// Take over the channel a parent passed as fd `fd` (`--ctrl-fd`): it
    /// must be an open seqpacket Unix socket; it gets CLOEXEC again, so our
    /// own children do not inherit it.
    pub fn inherited(fd: RawFd) -> Result<CtrlSocket> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        if fd < 3 {
            return Err(Error::Invalid(format!("fd {fd} is a standard stream")));
        }
        fcntl(fd, FcntlArg::F_GETFD).map_err(|e| Error::Invalid(format!("fd {fd}: {e}")))?;
        // SAFETY: the fd is open (F_GETFD succeeded) and was given to this
        // process to own by its parent; nothing else in the process uses it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let ty = socket::getsockopt(&owned, socket::sockopt::SockType)
            .map_err(|e| Error::Invalid(format!("fd {fd} is not a socket: {e}")))?;
        if ty != SockType::SeqPacket {
            return Err(Error::Invalid(format!("fd {fd} is not a seqpacket socket")));
        }
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok(CtrlSocket { fd: owned })
    }

    /// A connected pair (irmd's private channel to an IPCP it spawns). Both
    /// ends are CLOEXEC; the spawner clears it on the child's end only.
    pub fn pair() -> Result<(CtrlSocket, CtrlSocket)> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((CtrlSocket { fd: a }, CtrlSocket { fd: b }))
    }

    /// Make receives and sends on this socket return `Error::Again` instead of
    /// blocking (the socket is our own description, shared with nobody).
    pub fn set_nonblocking(&self) -> Result<()> {
        set_nonblocking(self.fd.as_raw_fd())
    }

    /// Bound a blocking receive (`None`: wait for ever); a receive that times
    /// out is `Error::Again`.
    pub fn set_recv_timeout(&self, t: Option<Duration>) -> Result<()> {
        let t = t.unwrap_or(Duration::ZERO);
        let tv = nix::sys::time::TimeVal::new(t.as_secs() as i64, t.subsec_micros() as i64);
        socket::setsockopt(&self.fd, socket::sockopt::ReceiveTimeout, &tv)?;
        Ok(())
    }

    /// Bound a blocking send so a stuck peer cannot stall the sender for ever.
    pub fn set_send_timeout(&self, t: Duration) -> Result<()> {
        let tv = nix::sys::time::TimeVal::new(t.as_secs() as i64, t.subsec_micros() as i64);
        socket::setsockopt(&self.fd, socket::sockopt::SendTimeout, &tv)?;
        Ok(())
    }

    /// Send one message (an envelope or a hello) with optional fds.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<()> {
        self.send_with(msg, fds, MsgFlags::empty())
    }

    /// Send without blocking: a full socket buffer is `Error::Again`.
    pub fn try_send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<()> {
        self.send_with(msg, fds, MsgFlags::MSG_DONTWAIT)
    }

    fn send_with<T: Serialize>(&self, msg: &T, fds: &[RawFd], flags: MsgFlags) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::Invalid(format!(
                "{} fds in one message (max {MAX_FDS})",
                fds.len()
            )));
        }
        let bytes = encode(msg)?;
        self.send_bytes(&bytes, fds, flags)
    }

    /// Send bytes as they are (tests use it to send what no encoder would).
    pub fn send_bytes(&self, bytes: &[u8], fds: &[RawFd], flags: MsgFlags) -> Result<()> {
        let iov = [IoSlice::new(bytes)];
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

    /// Receive one message of type `M`. `Ok(None)` means the peer closed the
    /// connection.
    pub fn recv<M: DeserializeOwned>(&self) -> Result<Option<Received<M>>> {
        match self.recv_raw()? {
            None => Ok(None),
            Some(r) => {
                // On a decoding error `r.fds` drops here and closes.
                let env = decode(&r.bytes)?;
                Ok(Some(Received { env, fds: r.fds }))
            }
        }
    }

    /// Receive one datagram without decoding it. Every fd that arrived is
    /// owned before anything is checked, so an error closes them all.
    pub fn recv_raw(&self) -> Result<Option<RawReceived>> {
        let mut buf = vec![0u8; MAX_MSG];
        // Room for one fd more than allowed: more than that shows as MSG_CTRUNC
        // (the kernel never installs fds that do not fit).
        const CMSG_SPACE: usize = 64;
        #[repr(C, align(8))]
        struct CmsgBuf([u8; CMSG_SPACE]);
        let mut cbuf = CmsgBuf([0u8; CMSG_SPACE]);
        let (len, flags, fds) = loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: msghdr is plain data; zero is a valid value for every field.
            let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = cbuf.0.as_mut_ptr().cast();
            mh.msg_controllen = CMSG_SPACE as _;
            // SAFETY: every pointer in `mh` points at a live buffer of the stated length.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) };
            if n < 0 {
                let e = nix::errno::Errno::last();
                match e {
                    nix::errno::Errno::EINTR => continue,
                    nix::errno::Errno::EAGAIN => return Err(Error::Again),
                    _ => return Err(Error::Io(format!("control recv: {}", e.desc()))),
                }
            }
            let fds = take_fds(&mh);
            break (n as usize, mh.msg_flags, fds);
        };
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        if flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            // `fds` drops here and closes whatever did arrive.
            return Err(Error::Invalid(
                "truncated control message (too long or too many fds)".into(),
            ));
        }
        if fds.len() > MAX_FDS {
            return Err(Error::Invalid(format!(
                "{} fds in one message (max {MAX_FDS})",
                fds.len()
            )));
        }
        buf.truncate(len);
        Ok(Some(RawReceived { bytes: buf, fds }))
    }

    /// The peer's pid, uid and gid (SO_PEERCRED).
    pub fn peer_cred(&self) -> Result<PeerCred> {
        let cred = socket::getsockopt(&self.fd, socket::sockopt::PeerCredentials)?;
        Ok(PeerCred {
            pid: cred.pid() as u32,
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }

    /// A pidfd for the process that connected (SO_PEERPIDFD, Linux 6.5+): it
    /// names that very process, so a pid reused after it exits cannot be
    /// mistaken for it.
    pub fn peer_pidfd(&self) -> Result<OwnedFd> {
        const SO_PEERPIDFD: libc::c_int = 77;
        let mut fd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `fd`, a c_int.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERPIDFD,
                (&mut fd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 || fd < 0 {
            return Err(Error::from(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel installed a new pidfd for us; we own it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Process id of the peer (SO_PEERCRED).
    pub fn peer_pid(&self) -> Result<u32> {
        Ok(self.peer_cred()?.pid)
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

    /// Give up the socket as a plain fd (to hand it to a child process).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// Own every fd in the SCM_RIGHTS parts of a received control buffer, whether
/// or not it was truncated.
fn take_fds(mh: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `mh` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within
    // msg_control[..msg_controllen], which the kernel set to what it wrote.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(mh) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the control buffer (checked by the macros).
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let hdr = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = (h.cmsg_len as usize).saturating_sub(hdr) / std::mem::size_of::<RawFd>();
            // SAFETY: the data part follows the header inside the buffer.
            let data = unsafe { libc::CMSG_DATA(c) } as *const RawFd;
            for i in 0..n {
                // SAFETY: `i < n` ints lie within this cmsg's data (cmsg_len bounds
                // them); read unaligned since the buffer gives no guarantee.
                let fd = unsafe { std::ptr::read_unaligned(data.add(i)) };
                if fd >= 0 {
                    // SAFETY: the kernel just installed this fd in our table for
                    // us; nobody else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(mh, c) };
    }
    fds
}

impl AsFd for CtrlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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
    /// Bind at `path` (its directory must exist), replacing a stale socket file
    /// (one nobody answers on). The socket keeps the mode the umask gives it.
    pub fn bind(path: &str) -> Result<CtrlListener> {
        Self::bind_with(path, None, None)
    }

    /// Bind at `path`, then set the socket file's `mode` and group `gid` before
    /// it listens, so nobody connects while it is more open than intended.
    pub fn bind_with(path: &str, mode: Option<u32>, gid: Option<u32>) -> Result<CtrlListener> {
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
        // Bound under a temporary name and renamed into place once listening,
        // so the path never exists while a connect would be refused (clients
        // and tests take the path's appearance as "irmd is up"). A path too
        // long for the suffix is bound directly.
        let staged = format!("{path}.new");
        let at = if UnixAddr::new(staged.as_str()).is_ok() {
            let _ = std::fs::remove_file(&staged);
            staged.as_str()
        } else {
            path
        };
        let addr = UnixAddr::new(at)?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| Error::Io(format!("bind {at}: {}", e.desc())))?;
        let setup = || -> Result<()> {
            if let Some(gid) = gid {
                std::os::unix::fs::chown(at, None, Some(gid))
                    .map_err(|e| Error::Io(format!("chown {at}: {e}")))?;
            }
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::Io(format!("chmod {at}: {e}")))?;
            }
            listen(&fd, Backlog::new(1024).expect("valid backlog"))?;
            if at != path {
                std::fs::rename(at, path)
                    .map_err(|e| Error::Io(format!("rename {at} to {path}: {e}")))?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = std::fs::remove_file(at);
            return Err(e);
        }
        Ok(CtrlListener { fd })
    }

    pub fn accept(&self) -> Result<CtrlSocket> {
        self.accept_with(SockFlag::SOCK_CLOEXEC)
    }

    /// Accept without blocking (the listener must be non-blocking too): no
    /// pending connection is `Error::Again`; the new socket is non-blocking.
    pub fn accept_nonblocking(&self) -> Result<CtrlSocket> {
        self.accept_with(SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)
    }

    /// Make `accept_nonblocking` return at once when nobody waits.
    pub fn set_nonblocking(&self) -> Result<()> {
        set_nonblocking(self.fd.as_raw_fd())
    }

    fn accept_with(&self, flags: SockFlag) -> Result<CtrlSocket> {
        loop {
            match accept4(self.fd.as_raw_fd(), flags) {
                Ok(fd) => {
                    return Ok(CtrlSocket {
                        // SAFETY: accept4 returned a fresh fd that we now own.
                        fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    });
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Err(Error::Again),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Set O_NONBLOCK on `fd`'s description (ours alone: a control socket).
fn set_nonblocking(fd: std::os::fd::RawFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_socket_path_appears_listening_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ethflow-ctrl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("irmd.sock");
        let p = path.to_str().unwrap();
        let l = CtrlListener::bind_with(p, Some(0o660), None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(
            !dir.join("irmd.sock.new").exists(),
            "the staged name is gone"
        );
        // The path exists only once a connect succeeds.
        let c = CtrlSocket::connect(p);
        assert!(c.is_ok(), "{:?}", c.err());
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }
    use super::*;
    use crate::proto::{AppRequest, Reply};

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
                msg: AppRequest::FlowDealloc { flow_id: 9 },
            },
            &[efd.as_fd().as_raw_fd()],
        )
        .unwrap();
        let got = b.recv::<AppRequest>().unwrap().unwrap();
        assert_eq!(got.env.id, 3);
        assert!(matches!(
            got.env.msg,
            AppRequest::FlowDealloc { flow_id: 9 }
        ));
        assert_eq!(got.fds.len(), 1);
        let flags =
            nix::fcntl::fcntl(got.fds[0].as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fds must be CLOEXEC"
        );
        drop(a);
        assert!(
            b.recv::<AppRequest>().unwrap().is_none(),
            "closed peer reads as None"
        );
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
                    msg: Reply::Ok
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
