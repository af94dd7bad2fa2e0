
//! `ipcpd-eth`: the Layer-2 IPC process of ethflow.
//!
//! * [`wire`] — frame formats (checked parsing, emitting).

pub mod wire;
