//! Which process an application's end belongs to, checked without a
//! syscall: one private page marked MADV_WIPEONFORK holds this process's
//! token; a child's copy of the page reads zero, and the child draws its own.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The guard word, or None where the kernel lacks MADV_WIPEONFORK (before
/// Linux 4.14): then every check asks getpid.
fn guard() -> Option<&'static AtomicU32> {
    static GUARD: OnceLock<Option<&'static AtomicU32>> = OnceLock::new();
    *GUARD.get_or_init(|| {
        let len = 4096;
        // SAFETY: a fresh private anonymous mapping; no pointer into it exists yet.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: p/len is exactly the mapping made above.
        if unsafe { libc::madvise(p, len, libc::MADV_WIPEONFORK) } != 0 {
            // SAFETY: as above; nothing refers to it.
            unsafe { libc::munmap(p, len) };
            return None;
        }
        // SAFETY: the page is zeroed, page-aligned (so aligned for u32), and
        // never unmapped: the reference is valid for the rest of the process.
        Some(unsafe { &*(p as *const AtomicU32) })
    })
}

/// A token naming this process, to keep in a new end: a random non-zero
/// word drawn once per process (a pid could repeat across pid namespaces),
/// or the pid where there is no guard page.
pub(super) fn owner() -> u32 {
    match guard() {
        Some(g) => match g.load(Ordering::Relaxed) {
            0 => {
                let token = fresh_token();
                // Two threads drawing at once: the first store wins for both.
                match g.compare_exchange(0, token, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => token,
                    Err(other) => other,
                }
            }
            token => token,
        },
        None => std::process::id(),
    }
}

fn fresh_token() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy source: the pid still tells parent from child in one
        // pid namespace.
        return std::process::id().max(1);
    }
    u32::from_ne_bytes(b).max(1)
}

/// Is this the process `token` (from [`owner`]) names? False in a child
/// that inherited the end by fork.
pub(super) fn is_owner(token: u32) -> bool {
    match guard() {
        Some(g) => g.load(Ordering::Relaxed) == token,
        None => std::process::id() == token,
    }
}
