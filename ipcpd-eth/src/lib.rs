//! `ipcpd-eth`: the Layer-2 IPC process of ethflow.
//!
//! * [`wire`] — frame formats (checked parsing, emitting).

pub mod backend;
pub mod fa;
pub mod ipcp;
pub mod layer_key;
pub mod link;
pub mod raw;
pub mod segment;
pub mod wire;
pub mod xdp;
