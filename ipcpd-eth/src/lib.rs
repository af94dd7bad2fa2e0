//! `ipcpd-eth`: the Layer-2 IPC process of ethflow.
//!
//! * [`wire`] — frame formats (checked parsing, emitting).

pub mod backend;
pub mod fa;
pub mod ipcp;
pub mod layer_key;
// System-call modules that keep their `unsafe` (ioctls, socket options,
// packet rings), each block with its SAFETY note; the AF_XDP ring and umem
// modules opt in themselves.
#[allow(unsafe_code)]
pub mod link;
#[allow(unsafe_code)]
pub mod raw;
pub mod segment;
pub mod wire;
pub mod xdp;
