//! `libouroboros-dev`: the C API of the model stack (dev.h, fccntl.h,
//! fqueue.h, qos.h) over ethflow's [`irm`] library, so that Ouroboros
//! applications build against ethflow unchanged:
//!
//! ```sh
//! cc app.c $(pkg-config --cflags --libs ouroboros-dev)
//! ```
//!
//! * [`abi`] — the numbers and layouts C sees (errno codes, flags, events, `qosspec_t`);
//! * [`table`] — flow descriptors and what each adds to an [`irm::Flow`];
//! * [`events`] — `fset_t`/`fqueue_t` over [`irm::FlowSet`];
//! * `ffi` — the `extern "C"` functions, the only module with `unsafe`.
//!
//! Behaviour and differences from the model: `docs/capi.md`.
#![deny(unsafe_code)]

pub mod abi;
pub mod events;
mod ffi;
pub mod table;
