//! The `extern "C"` functions of libouroboros-dev. Each one checks its
//! pointers, turns them into Rust values and calls the safe code in
//! [`crate::table`] and [`crate::events`]; nothing else here.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use irm::Flow;
use libc::{size_t, ssize_t, timespec};

use crate::abi::*;
use crate::events::{FQueue, FSet};
use crate::table::{self, err, errno, table, Ret};

/// Runs `f`; a panic (a bug) becomes -EIO instead of unwinding into C.
fn guard(f: impl FnOnce() -> Ret) -> Ret {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(-(libc::EIO as Ret))
}

// Thread cancellation (glibc values). Inside the library a thread is never
// cancelled: a cancellation unwinding through Rust frames that hold locks
// would be undefined behaviour. Blocking calls wait in slices instead, and
// act on a pending `pthread_cancel` between them, in frames that own
// nothing (see docs/capi.md).
const PTHREAD_CANCEL_DISABLE: c_int = 1;

extern "C" {
    fn pthread_setcancelstate(state: c_int, oldstate: *mut c_int) -> c_int;
}

extern "C-unwind" {
    fn pthread_testcancel();
}

/// Longest a blocking call waits before it looks for a pending cancellation.
const CANCEL_SLICE: Duration = Duration::from_millis(250);
/// The same for `flow_accept`, which costs a request to irmd per slice.
const ACCEPT_SLICE: Duration = Duration::from_secs(1);

/// Runs `f` with this thread's cancellation disabled, then restores it.
fn no_cancel<R>(f: impl FnOnce() -> R) -> R {
    let mut old: c_int = 0;
    // SAFETY: plain libc call with a valid out-pointer.
    unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) };
    let r = f();
    let mut ignored: c_int = 0;
    // SAFETY: as above; restores the caller's state.
    unsafe { pthread_setcancelstate(old, &mut ignored) };
    r
}

/// What one slice of a blocking call came to.
enum Step {
    Done(Ret),
    /// Nothing yet: look for a cancellation, then go on.
    Again,
}

/// Runs `step` until it is done, acting on a pending thread cancellation
/// between steps. `step` must capture only references and `Copy` values:
/// a cancellation unwinds through this frame, which must own nothing.
fn blocking(mut step: impl FnMut() -> Step) -> Ret {
    loop {
        match no_cancel(&mut step) {
            Step::Done(r) => return r,
            // SAFETY: a cancellation point; the frames it may unwind
            // (this one and the extern "C-unwind" caller) own nothing
            // that needs dropping.
            Step::Again => unsafe { pthread_testcancel() },
        }
    }
}

/// The wait for one slice of an operation whose whole wait ends at
/// `deadline` (None: without bound), and whether this slice is the last.
fn slice_of(deadline: Option<Instant>, slice: Duration) -> (Duration, bool) {
    match deadline {
        None => (slice, false),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left <= slice {
                (left, true)
            } else {
                (slice, false)
            }
        }
    }
}

fn int(r: Ret) -> c_int {
    c_int::try_from(r).unwrap_or(-libc::EOVERFLOW)
}

/// A C timeout: NULL = none (block), else checked.
///
/// # Safety
/// `t` is NULL or points to a readable `struct timespec`.
unsafe fn timeout_of(t: *const timespec) -> Result<Option<Duration>, Ret> {
    if t.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, and the caller promises it points to a timespec.
    let ts = unsafe { std::ptr::read(t) };
    duration_of(ts.tv_sec, ts.tv_nsec)
        .map(Some)
        .ok_or(errno(libc::EINVAL))
}

/// Tell the caller the QoS it got, writing only the fields that differ (so
/// a caller that passed a read-only cube is never written to for nothing).
///
/// # Safety
/// `qs` is NULL or points to a `qosspec_t`.
unsafe fn report_qos(qs: *mut QosSpec, got: QosSpec) {
    if qs.is_null() {
        return;
    }
    // SAFETY: non-null, points to a qosspec_t (caller's promise).
    let asked = unsafe { std::ptr::read(qs) };
    if asked != got {
        // SAFETY: as above; the caller passed it for writing (flow_alloc(3)).
        unsafe { std::ptr::write(qs, got) };
    }
}

fn connected() {
    static ATFORK: Once = Once::new();
    ATFORK.call_once(|| {
        extern "C" fn child() {
            table::after_fork_in_child();
        }
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe as a fork child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(child)) };
    });
    table::mark_connected();
}

fn install(r: irm::Result<Flow>, qs: *mut QosSpec) -> Ret {
    match r {
        Ok(flow) => {
            let got = QosSpec::from_qos(&flow.qos());
            // SAFETY: qs is what the caller passed to flow_alloc/flow_accept.
            unsafe { report_qos(qs, got) };
            table().insert(flow)
        }
        Err(e) => err(&e),
    }
}

/// # Safety
/// `dst_name` is a NUL-terminated string; `qs` NULL or a `qosspec_t`;
/// `timeo` NULL or a `struct timespec`.
#[no_mangle]
pub unsafe extern "C" fn flow_alloc(
    dst_name: *const c_char,
    qs: *mut QosSpec,
    timeo: *const timespec,
) -> c_int {
    // Bounded by irmd (about a second without a timeout): no slices.
    int(no_cancel(|| {
        guard(|| {
            if dst_name.is_null() {
                return errno(libc::EINVAL);
            }
            if table::inherited() {
                return errno(EIRMD);
            }
            // SAFETY: non-null C string (caller's promise).
            let name = unsafe { CStr::from_ptr(dst_name) };
            let Ok(name) = name.to_str() else {
                return errno(libc::EINVAL);
            };
            // SAFETY: timeo is NULL or a timespec (caller's promise).
            let timeout = match unsafe { timeout_of(timeo) } {
                Ok(t) => t,
                Err(r) => return r,
            };
            let spec = if qs.is_null() {
                QosSpec::raw_default()
            } else {
                // SAFETY: non-null qosspec_t (caller's promise).
                unsafe { std::ptr::read(qs) }
            };
            connected();
            install(Flow::alloc(name, &spec.to_qos(), timeout), qs)
        })
    }))
}

/// # Safety
/// `qs` NULL or a `qosspec_t`; `timeo` NULL or a `struct timespec`.
#[no_mangle]
pub unsafe extern "C-unwind" fn flow_accept(qs: *mut QosSpec, timeo: *const timespec) -> c_int {
    if table::inherited() {
        return -EIRMD;
    }
    // SAFETY: timeo is NULL or a timespec (caller's promise).
    let timeout = match unsafe { timeout_of(timeo) } {
        Ok(t) => t,
        Err(r) => return int(r),
    };
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    // Each slice is one accept request that irmd itself ends at its
    // deadline, so no flow is lost between slices: irmd keeps an incoming
    // flow for the next request.
    int(blocking(|| {
        guard_step(|| {
            connected();
            let (wait, last) = slice_of(deadline, ACCEPT_SLICE);
            match Flow::accept(Some(wait)) {
                Err(irm::Error::TimedOut) if !last => Step::Again,
                r => Step::Done(install(r, qs)),
            }
        })
    }))
}

/// [`guard`] for one step.
fn guard_step(f: impl FnOnce() -> Step) -> Step {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Step::Done(-(libc::EIO as Ret)))
}

/// Broadcast layers do not exist over ethflow's Ethernet layer.
#[no_mangle]
pub extern "C" fn flow_join(_dst: *const c_char, _timeo: *const timespec) -> c_int {
    -libc::ENOTSUP
}

#[no_mangle]
pub extern "C" fn flow_dealloc(fd: c_int) -> c_int {
    // Waits (bounded) for irmd's acknowledgement.
    int(no_cancel(|| guard(|| table::dealloc(fd))))
}

/// # Safety
/// `buf` points to `count` readable bytes (or `count` is 0).
#[no_mangle]
pub unsafe extern "C-unwind" fn flow_write(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
) -> ssize_t {
    if buf.is_null() && count > 0 || count > isize::MAX as usize {
        return errno(libc::EINVAL);
    }
    sliced(fd, true, |entry, wait| {
        let data: &[u8] = if count == 0 {
            &[]
        } else {
            // SAFETY: non-null, count readable bytes (caller's promise),
            // and the library does not keep the slice past this call.
            unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), count) }
        };
        entry.write(data, Some(wait))
    })
}

/// # Safety
/// `buf` points to `count` writable bytes (or `count` is 0).
#[no_mangle]
pub unsafe extern "C-unwind" fn flow_read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    if buf.is_null() && count > 0 || count > isize::MAX as usize {
        return errno(libc::EINVAL);
    }
    sliced(fd, false, |entry, wait| {
        let data: &mut [u8] = if count == 0 {
            &mut []
        } else {
            // SAFETY: non-null, count writable bytes (caller's promise),
            // not aliased by anything of ours, and not kept past this call.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), count) }
        };
        entry.read(data, Some(wait))
    })
}

/// A blocking read (`send` false) or write on `fd`: `io` waits at most one
/// cancellation slice each time, until it is done or the flow's timeout
/// (taken at the first step) has run out.
fn sliced(fd: c_int, send: bool, mut io: impl FnMut(&table::Entry, Duration) -> Ret) -> Ret {
    let mut deadline: Option<Option<Instant>> = None;
    blocking(|| {
        guard_step(|| {
            let entry = match table().get(fd) {
                Ok(e) => e,
                Err(r) => return Step::Done(r),
            };
            let d = *deadline.get_or_insert_with(|| {
                entry
                    .timeout(send)
                    .and_then(|t| Instant::now().checked_add(t))
            });
            let (wait, last) = slice_of(d, CANCEL_SLICE);
            match io(&entry, wait) {
                r if r == -(libc::ETIMEDOUT as Ret) && !last => Step::Again,
                r => Step::Done(r),
            }
        })
    })
}

/// `fccntl` for the commands that take a pointer (the header's inline
/// `fccntl` picks this one or [`ethflow_fccntl_val`] by command).
///
/// # Safety
/// `arg` is what the command documents: NULL or a `struct timespec *`,
/// `qosspec_t *`, `uint32_t *`, `uint16_t *` or `size_t *`.
#[no_mangle]
pub unsafe extern "C" fn ethflow_fccntl_ptr(fd: c_int, cmd: c_int, arg: *mut c_void) -> c_int {
    int(guard(|| {
        let entry = match table().get(fd) {
            Ok(e) => e,
            Err(r) => return r,
        };
        match cmd {
            FLOWSRCVTIMEO | FLOWSSNDTIMEO => {
                // SAFETY: NULL or a timespec (fccntl(3)).
                match unsafe { timeout_of(arg.cast::<timespec>()) } {
                    Ok(t) => {
                        entry.set_timeout(cmd == FLOWSSNDTIMEO, t);
                        0
                    }
                    Err(r) => r,
                }
            }
            _ if arg.is_null() => errno(libc::EINVAL),
            FLOWGRCVTIMEO | FLOWGSNDTIMEO => match entry.timeout(cmd == FLOWGSNDTIMEO) {
                // fccntl(3): asking for a timeout that was never set is EPERM.
                None => errno(libc::EPERM),
                Some(t) => {
                    let (s, ns) = timespec_of(t);
                    // SAFETY: all-zero bytes are a valid timespec (zeroed so
                    // no padding stays uninitialised).
                    let mut ts: timespec = unsafe { std::mem::zeroed() };
                    ts.tv_sec = s;
                    ts.tv_nsec = ns;
                    // SAFETY: non-null timespec to fill (fccntl(3)).
                    unsafe { std::ptr::write(arg.cast::<timespec>(), ts) };
                    0
                }
            },
            FLOWGQOSSPEC => {
                let q = QosSpec::from_qos(&entry.flow.qos());
                // SAFETY: non-null qosspec_t to fill (fccntl(3)).
                unsafe { std::ptr::write(arg.cast::<QosSpec>(), q) };
                0
            }
            FLOWGFLAGS => {
                // SAFETY: non-null uint32_t to fill (fccntl(3)).
                unsafe { std::ptr::write(arg.cast::<u32>(), entry.get_flags()) };
                0
            }
            FRCTGFLAGS => {
                // SAFETY: non-null uint16_t to fill (fccntl(3)).
                unsafe { std::ptr::write(arg.cast::<u16>(), entry.frct_flags() as u16) };
                0
            }
            FLOWGRXQLEN | FLOWGTXQLEN => {
                let (rx, tx) = entry.flow.queue_lens();
                let n = if cmd == FLOWGRXQLEN { rx } else { tx };
                // SAFETY: non-null size_t to fill (fccntl(3)).
                unsafe { std::ptr::write(arg.cast::<size_t>(), n) };
                0
            }
            FLOWSFLAGS | FRCTSFLAGS => errno(libc::EINVAL),
            _ => errno(libc::ENOTSUP),
        }
    }))
}

/// `fccntl` for the commands that take a flags value (`FLOWSFLAGS`,
/// `FRCTSFLAGS`).
#[no_mangle]
pub extern "C" fn ethflow_fccntl_val(fd: c_int, cmd: c_int, arg: u32) -> c_int {
    int(guard(|| {
        let entry = match table().get(fd) {
            Ok(e) => e,
            Err(r) => return r,
        };
        match cmd {
            FLOWSFLAGS => entry.set_flags(arg),
            FRCTSFLAGS => entry.set_frct_flags(arg),
            _ => errno(libc::ENOTSUP),
        }
    }))
}

// ---------------------------------------------------------------------------
// fset_t / fqueue_t: opaque pointers to Box<FSet> / Box<FQueue>.
// ---------------------------------------------------------------------------

/// # Safety
/// None: returns a new set or NULL.
#[no_mangle]
pub extern "C" fn fset_create() -> *mut FSet {
    match catch_unwind(FSet::new) {
        Ok(Ok(s)) => Box::into_raw(Box::new(s)),
        _ => std::ptr::null_mut(),
    }
}

/// # Safety
/// `set` is NULL or came from `fset_create` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fset_destroy(set: *mut FSet) {
    if !set.is_null() {
        // SAFETY: made by Box::into_raw in fset_create; the caller gives it up.
        drop(unsafe { Box::from_raw(set) });
    }
}

/// # Safety
/// `set` is NULL or a live set from `fset_create`.
unsafe fn set_ref<'a>(set: *const FSet) -> Option<&'a FSet> {
    // SAFETY: NULL or a live Box<FSet> (caller's promise); FSet is Sync.
    unsafe { set.as_ref() }
}

/// # Safety
/// `fq` is NULL or a live queue from `fqueue_create`.
unsafe fn fq_ref<'a>(fq: *const FQueue) -> Option<&'a FQueue> {
    // SAFETY: NULL or a live Box<FQueue> (caller's promise).
    unsafe { fq.as_ref() }
}

/// # Safety
/// `set` is NULL or a live set.
#[no_mangle]
pub unsafe extern "C" fn fset_zero(set: *mut FSet) {
    // SAFETY: caller's promise.
    if let Some(s) = unsafe { set_ref(set) } {
        let _ = guard(|| {
            s.zero();
            0
        });
    }
}

/// # Safety
/// `set` is NULL or a live set.
#[no_mangle]
pub unsafe extern "C" fn fset_add(set: *mut FSet, fd: c_int) -> c_int {
    // SAFETY: caller's promise.
    match unsafe { set_ref(set) } {
        Some(s) => int(guard(|| s.add(fd))),
        None => -libc::EINVAL,
    }
}

/// # Safety
/// `set` is NULL or a live set.
#[no_mangle]
pub unsafe extern "C" fn fset_has(set: *const FSet, fd: c_int) -> bool {
    // SAFETY: caller's promise.
    unsafe { set_ref(set) }.is_some_and(|s| s.has(fd))
}

/// # Safety
/// `set` is NULL or a live set.
#[no_mangle]
pub unsafe extern "C" fn fset_del(set: *mut FSet, fd: c_int) {
    // SAFETY: caller's promise.
    if let Some(s) = unsafe { set_ref(set) } {
        let _ = guard(|| {
            s.del(fd);
            0
        });
    }
}

#[no_mangle]
pub extern "C" fn fqueue_create() -> *mut FQueue {
    Box::into_raw(Box::default())
}

/// # Safety
/// `fq` is NULL or came from `fqueue_create` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fqueue_destroy(fq: *mut FQueue) {
    if !fq.is_null() {
        // SAFETY: made by Box::into_raw in fqueue_create; the caller gives it up.
        drop(unsafe { Box::from_raw(fq) });
    }
}

/// # Safety
/// `fq` is NULL or a live queue.
#[no_mangle]
pub unsafe extern "C" fn fqueue_next(fq: *mut FQueue) -> c_int {
    // SAFETY: caller's promise.
    match unsafe { fq_ref(fq) } {
        Some(q) => int(q.next()),
        None => -libc::EINVAL,
    }
}

/// # Safety
/// `fq` is NULL or a live queue.
#[no_mangle]
pub unsafe extern "C" fn fqueue_type(fq: *mut FQueue) -> c_int {
    // SAFETY: caller's promise.
    match unsafe { fq_ref(fq) } {
        Some(q) => q.kind(),
        None => -libc::EINVAL,
    }
}

/// # Safety
/// `set` and `fq` are NULL or live; `timeo` NULL or a `struct timespec`.
#[no_mangle]
pub unsafe extern "C-unwind" fn fevent(
    set: *mut FSet,
    fq: *mut FQueue,
    timeo: *const timespec,
) -> ssize_t {
    // SAFETY: set is NULL or a live set (caller's promise).
    let s = unsafe { set_ref(set) };
    // SAFETY: fq is NULL or a live queue (caller's promise).
    let q = unsafe { fq_ref(fq) };
    let (s, q) = match (s, q) {
        (Some(s), Some(q)) => (s, q),
        _ => return errno(libc::EINVAL),
    };
    // SAFETY: caller's promise.
    let timeout = match unsafe { timeout_of(timeo) } {
        Ok(t) => t,
        Err(r) => return r,
    };
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    blocking(|| {
        guard_step(|| {
            let (wait, last) = slice_of(deadline, CANCEL_SLICE);
            match s.wait(q, Some(wait)) {
                r if r == -(libc::ETIMEDOUT as Ret) && !last => Step::Again,
                r => Step::Done(r),
            }
        })
    })
}

/// Length in bytes of a digest of `algo` (`enum hash_algo` of hash.h);
/// 0 for an unknown algorithm.
#[no_mangle]
pub extern "C" fn hash_len(algo: c_int) -> u16 {
    match algo {
        0 => 4,  // CRC32
        1 => 16, // MD5
        2 => 28, // SHA3-224
        3 => 32, // SHA3-256
        4 => 48, // SHA3-384
        5 => 64, // SHA3-512
        _ => 0,
    }
}
