//! Flow descriptors: the small integers C programs hold, each naming one
//! [`irm::Flow`] with the per-descriptor state the C API adds (flags,
//! timeouts, the rest of an SDU read in parts). Safe code only; the
//! `extern "C"` shells in [`crate::ffi`] turn pointers into slices and call
//! in here.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use irm::proto::FlowState;
use irm::{Error, Flow};

use crate::abi::*;

/// Lowest descriptor handed out: the numbers below stay free, so a flow
/// descriptor never looks like stdin/stdout/stderr to a careless program.
pub const FD_BASE: i32 = 64;
/// One past the highest descriptor (at most `FD_LIMIT - FD_BASE` flows).
pub const FD_LIMIT: i32 = 4096;

/// A C return value: >= 0 success, `-errno` failure.
pub type Ret = isize;

/// `-code` of an irm error.
pub fn err(e: &Error) -> Ret {
    -(e.code() as Ret)
}

pub fn errno(code: i32) -> Ret {
    -(code as Ret)
}

/// One open flow descriptor.
#[derive(Debug)]
pub struct Entry {
    pub flow: Flow,
    flags: AtomicU32,
    frct_flags: AtomicU32,
    rcv_timeo: Mutex<Option<Duration>>,
    snd_timeo: Mutex<Option<Duration>>,
    /// Serialises readers, and keeps what is left of an SDU read in parts.
    part: Mutex<Partial>,
}

/// The unread rest of an SDU (partial reads, the default).
#[derive(Debug, Default)]
struct Partial {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last part exactly filled the caller's buffer: the next read
    /// returns 0 to mark the end of the SDU.
    boundary: bool,
}

impl Entry {
    pub fn new(flow: Flow) -> Entry {
        Entry {
            flow,
            flags: AtomicU32::new(FLOWFDEFAULT),
            frct_flags: AtomicU32::new(0),
            rcv_timeo: Mutex::new(None),
            snd_timeo: Mutex::new(None),
            part: Mutex::new(Partial::default()),
        }
    }

    fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// `flow_read`: one SDU (or the next part of one) into `buf`, waiting
    /// at most `wait` (None: without bound) unless the flow is
    /// non-blocking. The caller passes the read timeout ([`Entry::timeout`])
    /// or a slice of it.
    pub fn read(&self, buf: &mut [u8], wait: Option<Duration>) -> Ret {
        let flags = self.flags();
        if flags & FLOWFACCMODE == FLOWFWRONLY {
            return errno(libc::EPERM);
        }
        if flags & FLOWFDOWN != 0 {
            return errno(EFLOWDOWN);
        }
        let mut part = lock(&self.part);
        if part.boundary {
            part.boundary = false;
            return 0;
        }
        if part.start < part.end {
            let n = buf.len().min(part.end - part.start);
            buf[..n].copy_from_slice(&part.buf[part.start..part.start + n]);
            part.start += n;
            if part.start == part.end && n == buf.len() {
                part.boundary = true;
            }
            return n as Ret;
        }
        let timeout = wait;
        let nonblocking = flags & FLOWFRNOBLOCK != 0;
        // Whole SDUs, also those that came before the link's MTU shrank.
        let max = self.flow.max_read_sdu();
        if buf.len() >= max {
            return match self.flow.read_with(buf, timeout, nonblocking) {
                Ok(n) => n as Ret,
                Err(e) => err(&e),
            };
        }
        // The caller's buffer may be smaller than the SDU: read it whole.
        let mut scratch = std::mem::take(&mut part.buf);
        scratch.resize(max, 0);
        let r = self.flow.read_with(&mut scratch, timeout, nonblocking);
        let ret = match r {
            Err(e) => err(&e),
            Ok(n) if n <= buf.len() => {
                buf[..n].copy_from_slice(&scratch[..n]);
                n as Ret
            }
            // Partial reads off: the SDU does not fit, and is dropped.
            Ok(_) if flags & FLOWFRNOPART != 0 => errno(libc::EMSGSIZE),
            Ok(n) => {
                let k = buf.len();
                buf.copy_from_slice(&scratch[..k]);
                part.start = k;
                part.end = n;
                k as Ret
            }
        };
        part.buf = scratch;
        ret
    }

    /// `flow_write`: one SDU; larger than the flow's maximum is refused
    /// (EMSGSIZE) unless partial writes are on, which split it. Waits for
    /// ring space at most `wait`, as [`Entry::read`].
    pub fn write(&self, data: &[u8], wait: Option<Duration>) -> Ret {
        let flags = self.flags();
        if flags & FLOWFACCMODE == FLOWFRDONLY {
            return errno(libc::EPERM);
        }
        if flags & FLOWFDOWN != 0 {
            return errno(EFLOWDOWN);
        }
        let timeout = wait;
        let nonblocking = flags & FLOWFWNOBLOCK != 0;
        let max = self.flow.max_sdu();
        if data.len() <= max || flags & FLOWFWNOPART != 0 || max == 0 {
            return match self.flow.write_with(data, timeout, nonblocking) {
                Ok(n) => n as Ret,
                Err(e) => err(&e),
            };
        }
        let mut sent = 0;
        for chunk in data.chunks(max) {
            match self.flow.write_with(chunk, timeout, nonblocking) {
                Ok(n) => sent += n,
                Err(e) if sent == 0 => return err(&e),
                Err(_) => break,
            }
        }
        sent as Ret
    }

    pub fn set_timeout(&self, send: bool, t: Option<Duration>) {
        let slot = if send {
            &self.snd_timeo
        } else {
            &self.rcv_timeo
        };
        *lock(slot) = t;
    }

    pub fn timeout(&self, send: bool) -> Option<Duration> {
        *lock(if send {
            &self.snd_timeo
        } else {
            &self.rcv_timeo
        })
    }

    /// `FLOWSFLAGS`: unknown bits or both access bits → EINVAL.
    pub fn set_flags(&self, flags: u32) -> Ret {
        if flags & !FLOWF_KNOWN != 0 || flags & FLOWFACCMODE == FLOWFINVALID {
            return errno(libc::EINVAL);
        }
        self.flags.store(flags, Ordering::Relaxed);
        0
    }

    /// `FLOWGFLAGS`: the flags, with FLOWFDOWN also when the flow is down.
    pub fn get_flags(&self) -> u32 {
        let mut f = self.flags();
        if self.flow.state() != FlowState::Allocated {
            f |= FLOWFDOWN;
        }
        f
    }

    pub fn set_frct_flags(&self, flags: u32) -> Ret {
        let known = FRCTFRESCNTRL | FRCTFRTX | FRCTFLINGER;
        if flags & !known != 0 {
            return errno(libc::EINVAL);
        }
        // FRCTFRTX cannot be changed (fccntl(3)): keep what it was.
        let keep = self.frct_flags.load(Ordering::Relaxed) & FRCTFRTX;
        self.frct_flags
            .store((flags & !FRCTFRTX) | keep, Ordering::Relaxed);
        0
    }

    pub fn frct_flags(&self) -> u32 {
        self.frct_flags.load(Ordering::Relaxed)
    }
}

/// The process's descriptor table.
#[derive(Debug, Default)]
pub struct Table {
    slots: RwLock<Vec<Option<Arc<Entry>>>>,
}

/// Set in a child of `fork` when the parent had talked to irmd: the
/// connection and the flows belong to the parent (see docs/capi.md).
static INHERITED: AtomicBool = AtomicBool::new(false);
/// This process has a connection to irmd (so a fork child must not use it).
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Called in the child after `fork` (registered with pthread_atfork).
pub fn after_fork_in_child() {
    if CONNECTED.load(Ordering::Relaxed) {
        INHERITED.store(true, Ordering::Relaxed);
    }
}

/// Whether this process is a fork child of a process that used flows.
pub fn inherited() -> bool {
    INHERITED.load(Ordering::Relaxed)
}

pub fn mark_connected() {
    CONNECTED.store(true, Ordering::Relaxed);
}

pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::default)
}

impl Table {
    /// Give `flow` the lowest free descriptor; -EBADF if none is left (the
    /// flow is deallocated then).
    pub fn insert(&self, flow: Flow) -> Ret {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let free = slots.iter().position(Option::is_none);
        let idx = match free {
            Some(i) => i,
            None if slots.len() < (FD_LIMIT - FD_BASE) as usize => {
                slots.push(None);
                slots.len() - 1
            }
            None => return errno(libc::EBADF),
        };
        slots[idx] = Some(Arc::new(Entry::new(flow)));
        FD_BASE as Ret + idx as Ret
    }

    /// The entry of `fd`: -EBADF for a number that is no descriptor,
    /// -ENOTALLOC for a descriptor that holds no flow.
    pub fn get(&self, fd: i32) -> Result<Arc<Entry>, Ret> {
        if !(FD_BASE..FD_LIMIT).contains(&fd) {
            return Err(errno(libc::EBADF));
        }
        if inherited() {
            return Err(errno(ENOTALLOC));
        }
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .get((fd - FD_BASE) as usize)
            .and_then(Clone::clone)
            .ok_or(errno(ENOTALLOC))
    }

    /// Take `fd` out of the table (the caller deallocates the flow).
    pub fn remove(&self, fd: i32) -> Result<Arc<Entry>, Ret> {
        if !(FD_BASE..FD_LIMIT).contains(&fd) {
            return Err(errno(libc::EBADF));
        }
        if inherited() {
            return Err(errno(ENOTALLOC));
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots
            .get_mut((fd - FD_BASE) as usize)
            .and_then(Option::take)
            .ok_or(errno(ENOTALLOC))
    }
}

/// `flow_dealloc`: take the descriptor out and deallocate. If another
/// thread is still inside a call on it, the flow is deallocated when that
/// call returns.
pub fn dealloc(fd: i32) -> Ret {
    let entry = match table().remove(fd) {
        Ok(e) => e,
        Err(r) => return r,
    };
    match Arc::try_unwrap(entry) {
        Ok(e) => match e.flow.dealloc() {
            Ok(()) => 0,
            Err(e) => err(&e),
        },
        Err(_shared) => 0,
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_outside_the_table_are_ebadf_and_empty_ones_enotalloc() {
        let t = Table::default();
        assert_eq!(t.get(-1).unwrap_err(), -(libc::EBADF as Ret));
        assert_eq!(t.get(FD_LIMIT).unwrap_err(), -(libc::EBADF as Ret));
        assert_eq!(t.get(FD_BASE).unwrap_err(), -1000);
        assert_eq!(t.remove(FD_BASE + 3).unwrap_err(), -1000);
    }
}
