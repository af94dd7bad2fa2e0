//! `irm`: the ethflow application library.
//!
//! * [`Flow`] — allocate, accept, read, write and deallocate flows by name.
//! * [`FlowSet`] — one thread watches many flows: PKT, DOWN, PEER, UP, DEALLOC.
//! * [`proto`] / [`ctrl`] / [`client`] — the control protocol spoken with irmd.
//! * [`shm`] — the per-flow shared-memory rings between an application and its IPCP.
//! * [`Error`] — one error type, numbered like the model stack.

pub mod client;
// The control socket is a system-call module of its own (recvmsg with
// SCM_RIGHTS, accept4, SO_PEERPIDFD): it keeps its `unsafe`, every block
// with its SAFETY note.
#[allow(unsafe_code)]
pub mod ctrl;
pub mod error;
pub mod ethertype;
pub mod flow;
pub mod fqueue;
#[cfg(feature = "gen")]
pub mod gen;
pub mod keyfile;
pub mod limits;
pub mod proto;
pub mod qos;
pub mod secure;
pub mod shm;
pub mod sys;

pub use error::{Error, Result};
pub use flow::Flow;
pub use fqueue::{EventKind, FlowEvent, FlowSet, Interest};
pub use qos::Qos;
