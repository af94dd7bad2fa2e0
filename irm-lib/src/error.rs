//! One error type for the whole stack, numbered like the model's `errno.h`
//! extensions so the C ABI can return `-code`.

use serde::{Deserialize, Serialize};

/// Errors an application or daemon can see. The `code()` of each variant is the
/// model's number (C functions return its negation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    #[error("flow not allocated (ENOTALLOC, -1000)")]
    NotAlloc,
    #[error("wrong IPCP type (EIPCPTYPE, -1001)")]
    IpcpType,
    #[error("cannot reach irmd at {0} (EIRMD, -1002)")]
    Irmd(String),
    #[error("IPCP error: {0} (EIPCP, -1003)")]
    Ipcp(String),
    #[error("IPCP in wrong state: {0} (EIPCPSTATE, -1004)")]
    IpcpState(String),
    #[error("flow down (EFLOWDOWN, -1005)")]
    FlowDown,
    #[error("flow peer unresponsive (EFLOWPEER, -1006)")]
    FlowPeer,
    #[error("name error: {0} (ENAME, -1007)")]
    Name(String),
    #[error("crypto error (ECRYPT, -1008)")]
    Crypt,
    #[error("authentication error (EAUTH, -1009)")]
    Auth,
    #[error("SDU of {len} bytes exceeds the flow's maximum of {max} (EMSGSIZE)")]
    MsgSize { len: usize, max: usize },
    #[error("operation would block (EAGAIN)")]
    Again,
    #[error("timed out (ETIMEDOUT)")]
    TimedOut,
    #[error("invalid argument: {0} (EINVAL)")]
    Invalid(String),
    #[error("refused: {0} (ECONNREFUSED)")]
    Refused(String),
    #[error("resource limit: {0} (ENOMEM)")]
    NoMem(String),
    #[error("I/O error: {0}")]
    Io(String),
    /// The caller may not do this (not its name, flow or IPCP, or not root).
    #[error("permission denied: {0} (EPERM)")]
    Perm(String),
    /// The control socket refused us (file permissions): says which group grants access.
    #[error("permission denied on {path}: join group {group} (EACCES)")]
    Access { path: String, group: String },
    /// The peer speaks another version of the control protocol.
    #[error("control protocol version {theirs} is not {ours} (EPROTO)")]
    Version { ours: u32, theirs: u32 },
}

pub const ENOTALLOC: i32 = 1000;
pub const EIPCPTYPE: i32 = 1001;
pub const EIRMD: i32 = 1002;
pub const EIPCP: i32 = 1003;
pub const EIPCPSTATE: i32 = 1004;
pub const EFLOWDOWN: i32 = 1005;
pub const EFLOWPEER: i32 = 1006;
pub const ENAME: i32 = 1007;
pub const ECRYPT: i32 = 1008;
pub const EAUTH: i32 = 1009;

impl Error {
    /// The positive error number (model numbering for ethflow errors, libc for the rest).
    pub fn code(&self) -> i32 {
        match self {
            Error::NotAlloc => ENOTALLOC,
            Error::IpcpType => EIPCPTYPE,
            Error::Irmd(_) => EIRMD,
            Error::Ipcp(_) => EIPCP,
            Error::IpcpState(_) => EIPCPSTATE,
            Error::FlowDown => EFLOWDOWN,
            Error::FlowPeer => EFLOWPEER,
            Error::Name(_) => ENAME,
            Error::Crypt => ECRYPT,
            Error::Auth => EAUTH,
            Error::MsgSize { .. } => libc::EMSGSIZE,
            Error::Again => libc::EAGAIN,
            Error::TimedOut => libc::ETIMEDOUT,
            Error::Invalid(_) => libc::EINVAL,
            Error::Refused(_) => libc::ECONNREFUSED,
            Error::NoMem(_) => libc::ENOMEM,
            Error::Io(_) => libc::EIO,
            Error::Perm(_) => libc::EPERM,
            Error::Access { .. } => libc::EACCES,
            Error::Version { .. } => libc::EPROTO,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Again,
            std::io::ErrorKind::TimedOut => Error::TimedOut,
            _ => Error::Io(e.to_string()),
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::from(std::io::Error::from(e))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_numbering() {
        assert_eq!(Error::FlowDown.code(), 1005);
        assert_eq!(Error::FlowPeer.code(), 1006);
        assert_eq!(Error::Name("x".into()).code(), 1007);
        assert_eq!(Error::MsgSize { len: 2, max: 1 }.code(), libc::EMSGSIZE);
    }
}
