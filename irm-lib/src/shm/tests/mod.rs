#![allow(unsafe_code)]
use super::map::ShmMap;
use super::wake::{READER_ARMED, WATCHER_ARMED};
use super::*;
use nix::errno::Errno;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::stat::fstat;
use nix::sys::time::TimeSpec;
use proptest::prelude::*;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A woken side returns within this; one nobody woke never returns at all.
/// Generous: a loaded two-core machine can hold a thread off its core for
/// longer than any latency worth asserting in a unit test.
const WOKEN_WITHIN: Duration = Duration::from_secs(5);

fn geom(slots: u32, slot_size: u32) -> RingGeometry {
    RingGeometry { slots, slot_size }
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().unwrap()
}

/// One flow as three processes would see it: separate mappings per side.
struct Flow {
    app: Arc<AppEnd>,
    ipcp: Arc<IpcpEnd>,
    monitor: Monitor,
}

fn flow(g: RingGeometry) -> Flow {
    let fds = create(g).unwrap();
    flow_from(fds, g)
}

fn flow_from(fds: FlowFds, g: RingGeometry) -> Flow {
    let app_map = ShmMap::map(fds.memfd.as_fd(), g).unwrap();
    let ipcp_map = ShmMap::map(fds.memfd.as_fd(), g).unwrap();
    let [_, rx, tx, ipcp_w] = fds.for_app().map(dup);
    let app = AppEnd::new(app_map, rx, tx, ipcp_w);
    let [_, ipcp_r, rx_w, tx_w] = fds.for_ipcp().map(dup);
    let ipcp = IpcpEnd::new(ipcp_map, ipcp_r, rx_w, tx_w);
    let monitor = fds.monitor().unwrap();
    Flow {
        app: Arc::new(app),
        ipcp: Arc::new(ipcp),
        monitor,
    }
}

fn try_pop(ipcp: &IpcpEnd) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; ipcp.geometry().slot_size as usize];
    Ok(ipcp.pop_tx_into(&mut buf)?.map(|n| {
        buf.truncate(n);
        buf
    }))
}

fn pop(ipcp: &IpcpEnd) -> Option<Vec<u8>> {
    try_pop(ipcp).unwrap()
}

fn read_nb(app: &AppEnd) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; app.geometry().slot_size as usize];
    let n = app.read(&mut buf, None, true)?;
    buf.truncate(n);
    Ok(buf)
}

fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    ppoll(&mut fds, Some(TimeSpec::from(Duration::ZERO)), None).unwrap() == 1
}

/// Records the notices a flow gives its watcher.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<WatchNotice>>);

impl RxWatch for Recorder {
    fn notice(&self, n: WatchNotice) {
        self.0.lock().unwrap().push(n);
    }
}

/// Wake-up bytes waiting in a pipe.
fn pending_bytes(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0);
    n as usize
}

fn rx_flag(app: &AppEnd) -> u32 {
    app.map()
        .ctrl(Dir::Rx)
        .consumer_sleeping
        .load(Ordering::Relaxed)
}

#[test]
fn reader_arm_and_disarm_leave_a_watcher_arm_alone() {
    let f = flow(geom(4, 16));
    // Reader alone: an empty read arms, a successful read disarms.
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert_eq!(rx_flag(&f.app), READER_ARMED);
    f.ipcp.push_rx(b"a").unwrap();
    assert_eq!(rx_flag(&f.app), 0, "the producer clears the arm it signals");
    assert!(readable(f.app.rx_fd()));
    assert_eq!(read_nb(&f.app).unwrap(), b"a");
    // A watcher's arm: reads neither replace nor clear it.
    let seen = f.app.watch_check(true);
    assert_eq!((seen.has_data, seen.state), (false, FlowState::Allocated));
    assert_eq!(rx_flag(&f.app), WATCHER_ARMED);
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert_eq!(rx_flag(&f.app), WATCHER_ARMED);
    f.ipcp.push_rx(b"b").unwrap();
    f.ipcp.push_rx(b"c").unwrap();
    assert_eq!(rx_flag(&f.app), 0);
    assert!(f.app.watch_check(true).has_data);
    assert_eq!(read_nb(&f.app).unwrap(), b"b");
    assert_eq!(
        rx_flag(&f.app),
        WATCHER_ARMED,
        "a read cleared the watcher's arm"
    );
    // Without arm_data the watcher only reads the state word.
    f.ipcp.set_state(FlowState::Peer);
    let seen = f.app.watch_check(false);
    assert_eq!((seen.has_data, seen.state), (false, FlowState::Peer));
}

#[test]
fn a_state_only_watcher_hears_only_of_states_it_has_not_seen() {
    let f = flow(geom(4, 16));
    let rec = Arc::new(Recorder::default());
    f.app.set_watch(rec.clone(), false).unwrap();
    let cycle = || {
        // A reader's sleep/wake cycle: arm, SDU signals, read, drain.
        assert_eq!(read_nb(&f.app), Err(Error::Again));
        f.ipcp.push_rx(b"a").unwrap();
        assert_eq!(read_nb(&f.app).unwrap(), b"a");
        assert_eq!(read_nb(&f.app), Err(Error::Again));
    };
    // Before the watcher's first look every consumed wake-up is passed on.
    cycle();
    assert_eq!(rec.0.lock().unwrap().len(), 1);
    // Once it has seen ALLOCATED, data wake-ups are not its business.
    assert_eq!(f.app.watch_check(false).state, FlowState::Allocated);
    for _ in 0..3 {
        cycle();
    }
    assert_eq!(rec.0.lock().unwrap().len(), 1);
    // A state it has not seen is passed on.
    f.ipcp.set_state(FlowState::Down);
    assert!(!f.app.arm_rx_wakeup());
    assert_eq!(*rec.0.lock().unwrap(), [WatchNotice::Wakeup; 2]);
    // Seen now: the next drained signal of the same state is not.
    assert_eq!(f.app.watch_check(false).state, FlowState::Down);
    f.ipcp.set_state(FlowState::Down);
    assert!(!f.app.arm_rx_wakeup());
    assert_eq!(rec.0.lock().unwrap().len(), 2);
}

#[test]
fn a_reader_passes_consumed_wakeups_to_its_watcher() {
    let f = flow(geom(4, 16));
    let rec = Arc::new(Recorder::default());
    let w: Arc<dyn RxWatch> = rec.clone();
    f.app.set_watch(w.clone(), true).unwrap();
    assert!(f
        .app
        .set_watch(Arc::new(Recorder::default()), true)
        .is_err());
    // Nothing pending: an empty read drains nothing and tells nobody.
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert!(rec.0.lock().unwrap().is_empty());
    // A state change the reader's drain eats (PEER and back) is passed on.
    f.ipcp.set_state(FlowState::Peer);
    f.ipcp.set_state(FlowState::Allocated);
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert!(!readable(f.app.rx_fd()));
    assert_eq!(*rec.0.lock().unwrap(), [WatchNotice::Wakeup]);
    // So is one eaten by arm_rx_wakeup.
    f.ipcp.set_state(FlowState::Allocated);
    assert!(f.app.arm_rx_wakeup());
    assert_eq!(rec.0.lock().unwrap().len(), 2);
    // Clearing someone else's watcher does nothing; closing tells ours.
    f.app
        .clear_watch(&(Arc::new(Recorder::default()) as Arc<dyn RxWatch>));
    f.app.close_watch();
    assert_eq!(rec.0.lock().unwrap().last(), Some(&WatchNotice::Closed));
    // Gone: no more notices, and a new watcher may come.
    f.ipcp.set_state(FlowState::Allocated);
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert_eq!(rec.0.lock().unwrap().len(), 3);
    f.app.set_watch(w.clone(), true).unwrap();
    f.app.clear_watch(&w);
    f.app.close_watch();
    assert_eq!(rec.0.lock().unwrap().len(), 3);
}

#[test]
fn round_trip_both_directions() {
    let f = flow(geom(8, 64));
    assert_eq!(f.app.write(b"hello", None, false).unwrap(), 5);
    assert_eq!(f.app.write(b"", None, false).unwrap(), 0);
    assert_eq!(pop(&f.ipcp).as_deref(), Some(&b"hello"[..]));
    assert_eq!(pop(&f.ipcp).as_deref(), Some(&b""[..]));
    assert_eq!(pop(&f.ipcp), None);

    assert!(f.ipcp.push_rx(b"world").unwrap());
    assert_eq!(read_nb(&f.app).unwrap(), b"world");
    assert_eq!(read_nb(&f.app), Err(Error::Again));
}

#[test]
fn read_truncates_like_a_datagram() {
    let f = flow(geom(4, 64));
    f.ipcp.push_rx(b"0123456789").unwrap();
    f.ipcp.push_rx(b"next").unwrap();
    let mut small = [0u8; 4];
    assert_eq!(f.app.read(&mut small, None, true).unwrap(), 4);
    assert_eq!(&small, b"0123");
    assert_eq!(read_nb(&f.app).unwrap(), b"next");
}

#[test]
fn wraps_around_many_times() {
    let f = flow(geom(4, 32));
    let mut seq = 0u32;
    for round in 0..5000u32 {
        let burst = round % 4 + 1;
        for i in 0..burst {
            let sdu = (seq + i).to_le_bytes();
            f.app.write(&sdu, None, true).unwrap();
            assert!(f.ipcp.push_rx(&sdu).unwrap());
        }
        for _ in 0..burst {
            assert_eq!(pop(&f.ipcp).unwrap(), seq.to_le_bytes());
            assert_eq!(read_nb(&f.app).unwrap(), seq.to_le_bytes());
            seq += 1;
        }
    }
    assert_eq!(pop(&f.ipcp), None);
    assert_eq!(f.monitor.stats().rx_sdus, u64::from(seq));
}

#[test]
fn free_running_indices_wrap_past_u32_max() {
    let g = geom(4, 16);
    let fds = create(g).unwrap();
    {
        let m = ShmMap::map_header(fds.memfd.as_fd(), g).unwrap();
        for c in [&m.header().tx, &m.header().rx] {
            c.head.store(u32::MAX - 6, Ordering::Relaxed);
            c.tail.store(u32::MAX - 6, Ordering::Relaxed);
        }
    }
    let f = flow_from(fds, g);
    for i in 0..40u32 {
        f.app.write(&i.to_le_bytes(), None, true).unwrap();
        f.app.write(&(i + 1000).to_le_bytes(), None, true).unwrap();
        f.ipcp.push_rx(&i.to_le_bytes()).unwrap();
        assert_eq!(pop(&f.ipcp).unwrap(), i.to_le_bytes());
        assert_eq!(pop(&f.ipcp).unwrap(), (i + 1000).to_le_bytes());
        assert_eq!(read_nb(&f.app).unwrap(), i.to_le_bytes());
    }
    let head = f.ipcp.map().header().tx.head.load(Ordering::Relaxed);
    assert!(head < 100, "head should have wrapped, is {head}");
}

#[test]
fn full_tx_ring_gives_again_timeout_then_blocked_writer_is_woken() {
    let f = flow(geom(2, 16));
    f.app.write(b"a", None, true).unwrap();
    f.app.write(b"b", None, true).unwrap();
    assert_eq!(f.app.write(b"c", None, true), Err(Error::Again));

    let t0 = Instant::now();
    let r = f
        .app
        .write(b"c", Some(t0 + Duration::from_millis(50)), false);
    assert_eq!(r, Err(Error::TimedOut));
    assert!(t0.elapsed() >= Duration::from_millis(50));

    let app = f.app.clone();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let writer = thread::spawn(move || {
        let r = app.write(b"c", None, false);
        done2.store(true, Ordering::SeqCst);
        r
    });
    thread::sleep(Duration::from_millis(50));
    assert!(
        !done.load(Ordering::SeqCst),
        "writer must block on a full ring"
    );
    let t1 = Instant::now();
    assert_eq!(pop(&f.ipcp).unwrap(), b"a");
    assert_eq!(writer.join().unwrap(), Ok(1));
    assert!(
        t1.elapsed() < WOKEN_WITHIN,
        "writer woken late: {:?}",
        t1.elapsed()
    );
    assert_eq!(pop(&f.ipcp).unwrap(), b"b");
    assert_eq!(pop(&f.ipcp).unwrap(), b"c");
}

#[test]
fn empty_rx_ring_gives_again_timeout_then_blocked_reader_is_woken() {
    let f = flow(geom(4, 16));
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        f.app
            .read(&mut buf, Some(t0 + Duration::from_millis(30)), false),
        Err(Error::TimedOut)
    );
    assert!(t0.elapsed() >= Duration::from_millis(30));

    let app = f.app.clone();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 16];
        app.read(&mut buf, None, false).map(|n| buf[..n].to_vec())
    });
    thread::sleep(Duration::from_millis(50));
    assert!(!reader.is_finished(), "reader must block on an empty ring");
    let t1 = Instant::now();
    f.ipcp.push_rx(b"wake").unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), b"wake");
    assert!(t1.elapsed() < WOKEN_WITHIN);
}

#[test]
fn oversized_sdus_are_refused_with_msgsize() {
    let f = flow(geom(4, 100));
    assert_eq!(
        f.app.write(&[0; 101], None, false),
        Err(Error::MsgSize { len: 101, max: 100 })
    );
    assert_eq!(
        f.ipcp.push_rx(&[0; 101]),
        Err(Error::MsgSize { len: 101, max: 100 })
    );
    assert_eq!(f.app.write(&[7; 100], None, false), Ok(100));
    assert_eq!(pop(&f.ipcp).unwrap(), vec![7; 100]);
}

#[test]
fn full_rx_ring_drops_and_counts() {
    let f = flow(geom(2, 16));
    assert!(f.ipcp.push_rx(b"one").unwrap());
    assert!(f.ipcp.push_rx(b"two").unwrap());
    assert!(!f.ipcp.push_rx(b"three").unwrap());
    f.ipcp.note_tx(40);
    let s = f.monitor.stats();
    assert_eq!(
        (s.rx_sdus, s.rx_bytes, s.dropped, s.tx_sdus, s.tx_bytes),
        (2, 6, 1, 1, 40)
    );
    assert!(s.last_rx_unix_ms > 1_600_000_000_000);
    assert_eq!(s.state, FlowState::Allocated);
    assert_eq!(read_nb(&f.app).unwrap(), b"one");
    assert!(f.ipcp.push_rx(b"four").unwrap());
}

fn blocked_reader_and_writer_see_state(set: impl FnOnce(&Flow), want: Error) {
    let f = flow(geom(2, 16));
    f.app.write(b"x", None, false).unwrap();
    f.app.write(b"y", None, false).unwrap();
    let (a1, a2) = (f.app.clone(), f.app.clone());
    let writer = thread::spawn(move || {
        let r = a1.write(b"z", None, false);
        (r, Instant::now())
    });
    let reader = thread::spawn(move || {
        let mut b = [0u8; 16];
        let r = a2.read(&mut b, None, false);
        (r, Instant::now())
    });
    thread::sleep(Duration::from_millis(50));
    assert!(!writer.is_finished() && !reader.is_finished());
    let t0 = Instant::now();
    set(&f);
    for (r, at) in [writer.join().unwrap(), reader.join().unwrap()] {
        assert_eq!(r, Err(want.clone()));
        assert!(
            at.duration_since(t0) < WOKEN_WITHIN,
            "woken after {:?}",
            at - t0
        );
    }
}

#[test]
fn ipcp_state_change_wakes_blocked_reader_and_writer() {
    blocked_reader_and_writer_see_state(|f| f.ipcp.set_state(FlowState::Down), Error::FlowDown);
}

#[test]
fn irmd_state_change_wakes_blocked_reader_and_writer() {
    blocked_reader_and_writer_see_state(|f| f.monitor.set_state(FlowState::Peer), Error::FlowPeer);
}

/// An IPCP that lost its irmd ends the flow with the "irmd gone" word: it
/// reads as DOWN (blocked calls wake with `FlowDown`), and the application
/// can tell why (its library then reports EIRMD).
#[test]
fn irmd_gone_reads_as_down_and_says_why() {
    let f = flow(geom(2, 16));
    assert!(!f.app.irmd_gone());
    f.ipcp.set_state(FlowState::Down);
    assert!(!f.app.irmd_gone(), "a plain DOWN is not irmd's death");
    let f = flow(geom(2, 16));
    blocked_reader_and_writer_see_state(|g| g.ipcp.set_irmd_gone(), Error::FlowDown);
    f.ipcp.set_irmd_gone();
    assert!(f.app.irmd_gone());
    assert_eq!(f.app.state(), FlowState::Down);
    assert_eq!(f.app.write(b"x", None, false), Err(Error::FlowDown));
}

#[test]
fn data_before_down_is_still_delivered() {
    for (state, err) in [
        (FlowState::Down, Error::FlowDown),
        (FlowState::Peer, Error::FlowPeer),
    ] {
        let f = flow(geom(4, 16));
        f.ipcp.push_rx(b"last").unwrap();
        f.ipcp.push_rx(b"words").unwrap();
        f.ipcp.set_state(state);
        assert_eq!(f.app.state(), state);
        assert_eq!(f.monitor.state(), state);
        assert!(
            readable(f.app.rx_fd()),
            "state change must make the rx fd readable"
        );
        assert_eq!(read_nb(&f.app).unwrap(), b"last");
        assert_eq!(read_nb(&f.app).unwrap(), b"words");
        assert_eq!(read_nb(&f.app), Err(err.clone()));
        // Blocking read without deadline must not hang either.
        assert_eq!(f.app.read(&mut [0; 4], None, false), Err(err.clone()));
        assert_eq!(f.app.write(b"no", None, false), Err(err));
        // A flow that recovers works again.
        f.ipcp.set_state(FlowState::Allocated);
        f.app.write(b"up", None, false).unwrap();
        assert_eq!(pop(&f.ipcp).unwrap(), b"up");
    }
}

#[test]
fn empty_nonblocking_read_arms_the_rx_fd_and_busy_reads_do_not() {
    let f = flow(geom(8, 16));
    // Never armed: a push makes no wake-up syscall.
    f.ipcp.push_rx(b"1").unwrap();
    assert!(!readable(f.app.rx_fd()));
    assert_eq!(read_nb(&f.app).unwrap(), b"1");
    // An empty read arms; the next push signals exactly once.
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert!(!readable(f.app.rx_fd()));
    f.ipcp.push_rx(b"2").unwrap();
    assert!(readable(f.app.rx_fd()));
    assert_eq!(read_nb(&f.app).unwrap(), b"2");
    // Data read: the flag is clear, so further pushes make no syscall.
    assert_eq!(
        f.ipcp
            .map()
            .header()
            .rx
            .consumer_sleeping
            .load(Ordering::Relaxed),
        0
    );
    // The empty read drains the stale count and re-arms.
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert!(!readable(f.app.rx_fd()));
    assert_eq!(
        f.ipcp
            .map()
            .header()
            .rx
            .consumer_sleeping
            .load(Ordering::Relaxed),
        1
    );
    // arm_rx_wakeup for event loops.
    assert!(f.app.arm_rx_wakeup());
    f.ipcp.push_rx(b"3").unwrap();
    assert!(!f.app.arm_rx_wakeup());
}

#[test]
fn ipcp_wakeup_is_armed_only_when_asked() {
    let f = flow(geom(8, 16));
    f.app.write(b"busy", None, false).unwrap();
    assert!(
        !readable(f.ipcp.ipcp_fd()),
        "no syscall while the IPCP is busy"
    );
    assert!(!f.ipcp.arm_tx_wakeup(), "data present: do not sleep");
    assert_eq!(
        f.app
            .map()
            .header()
            .tx
            .consumer_sleeping
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(pop(&f.ipcp).unwrap(), b"busy");
    assert!(f.ipcp.arm_tx_wakeup());
    f.app.write(b"wake", None, false).unwrap();
    assert!(readable(f.ipcp.ipcp_fd()));
    f.ipcp.clear_tx_wakeup();
    assert!(!readable(f.ipcp.ipcp_fd()));
    // The flag was consumed by that wake-up: the next write stays silent.
    f.app.write(b"quiet", None, false).unwrap();
    assert!(!readable(f.ipcp.ipcp_fd()));
    let mut bufs = [[0u8; 16]; 10];
    let mut lens = [0usize; 10];
    assert_eq!(
        f.ipcp.pop_tx_batch_into(&mut bufs, 2, &mut lens).unwrap(),
        2
    );
    assert_eq!(
        (&bufs[0][2..6], &bufs[1][2..7]),
        (&b"wake"[..], &b"quiet"[..])
    );
    assert_eq!(lens[..2], [4, 5]);
}

#[test]
fn memfd_is_sealed() {
    let g = geom(4, 64);
    let fds = create(g).unwrap();
    let len = required_len(g) as i64;
    assert_eq!(ftruncate(&fds.memfd, len / 2), Err(Errno::EPERM));
    assert_eq!(ftruncate(&fds.memfd, len * 2), Err(Errno::EPERM));
    let seals =
        SealFlag::from_bits_truncate(fcntl(fds.memfd.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap());
    assert!(seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL));
    assert!(fcntl(
        fds.memfd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)
    )
    .is_err());
    assert_eq!(fstat(fds.memfd.as_raw_fd()).unwrap().st_size, len);
    let m = ShmMap::map_header(fds.memfd.as_fd(), g).unwrap();
    let id = &m.header().identity;
    assert_eq!(id.magic.load(Ordering::Relaxed), MAGIC);
    assert_eq!(
        (
            id.slots.load(Ordering::Relaxed),
            id.slot_size.load(Ordering::Relaxed)
        ),
        (4, 64)
    );
}

fn sealed_memfd(len: i64, seal: bool) -> OwnedFd {
    let fd = memfd_create(
        c"test",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .unwrap();
    ftruncate(&fd, len).unwrap();
    if seal {
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
    }
    fd
}

#[test]
fn map_refuses_small_unsealed_or_mismatched_memfds() {
    let g = geom(8, 256);
    let need = required_len(g) as i64;
    let small = sealed_memfd(need - 1, true);
    assert!(matches!(ShmMap::map(small.as_fd(), g), Err(Error::Invalid(m)) if m.contains("needs")));
    assert!(ShmMap::map_header(small.as_fd(), g).is_err());
    let unsealed = sealed_memfd(need, false);
    assert!(
        matches!(ShmMap::map(unsealed.as_fd(), g), Err(Error::Invalid(m)) if m.contains("sealed"))
    );
    // irmd said a bigger geometry than the memfd was made for.
    let fds = create(g).unwrap();
    assert!(ShmMap::map(fds.memfd.as_fd(), geom(16, 256)).is_err());
    assert!(ShmMap::map(fds.memfd.as_fd(), geom(3, 256)).is_err());
    assert!(ShmMap::map(fds.memfd.as_fd(), g).is_ok());
    // Right size and seals, but never initialised by `create`.
    let blank = sealed_memfd(need, true);
    assert!(
        matches!(ShmMap::map(blank.as_fd(), g), Err(Error::Invalid(m)) if m.contains("layout version"))
    );
}

#[test]
fn geometry_is_validated() {
    for ok in [geom(2, 1), geom(65536, 65536), geom(64, 1500)] {
        validate_geometry(ok).unwrap();
    }
    for (bad, word) in [
        (geom(0, 10), "power of two"),
        (geom(1, 10), "power of two"),
        (geom(6, 10), "power of two"),
        (geom(131072, 10), "power of two"),
        (geom(4, 0), "slot_size"),
        (geom(4, 65537), "slot_size"),
    ] {
        match validate_geometry(bad) {
            Err(Error::Invalid(m)) => assert!(m.contains(word), "{m}"),
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(create(bad).is_err());
    }
    // Header page + two page-rounded rings of 64-byte-rounded slots.
    assert_eq!(
        required_len(geom(64, 1500)),
        4096 + 2 * round_up(64 * 1536, 4096) as usize
    );
    assert_eq!(required_len(geom(2, 1)), 4096 * 3);
}

fn resident_bytes(map: &ShmMap) -> usize {
    let page = 4096;
    let mut vec = vec![0u8; map.mmap.len().div_ceil(page)];
    // SAFETY: base/len describe a live mapping; vec has one byte per page.
    let rc = unsafe { libc::mincore(map.base().as_ptr().cast(), map.mmap.len(), vec.as_mut_ptr()) };
    assert_eq!(rc, 0);
    vec.iter().filter(|&&b| b & 1 != 0).count() * page
}

#[test]
fn idle_flow_stays_small_in_memory() {
    // 1024 slots of 9000 bytes: an 18 MB memfd, of which almost nothing is resident.
    let f = flow(geom(1024, 9000));
    assert!(f.ipcp.map().mmap.len() > 18_000_000);
    f.app.write(&[1; 100], None, false).unwrap();
    pop(&f.ipcp).unwrap();
    f.ipcp.push_rx(&[2; 100]).unwrap();
    read_nb(&f.app).unwrap();
    let r = resident_bytes(f.ipcp.map());
    assert!(r > 0 && r < 64 << 10, "resident {r} bytes");
}

#[test]
fn concurrent_writers_on_one_app_end_do_not_corrupt_the_ring() {
    let f = flow(geom(8, 64));
    let per_writer = 5000u32;
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let app = f.app.clone();
            thread::spawn(move || {
                for i in 0..per_writer {
                    // [seq (4 bytes)] [filler] [writer id]
                    let mut sdu = i.to_le_bytes().to_vec();
                    sdu.resize(4 + (i % 56) as usize, w);
                    sdu.push(w);
                    app.write(&sdu, None, false).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 2];
    let deadline = Instant::now() + Duration::from_secs(30);
    while next.iter().sum::<u32>() < 2 * per_writer {
        assert!(Instant::now() < deadline, "stuck at {next:?}");
        match pop(&f.ipcp) {
            Some(sdu) => {
                let w = *sdu.last().unwrap();
                let i = u32::from_le_bytes(sdu[0..4].try_into().unwrap());
                assert_eq!(i, next[w as usize], "writer {w} out of order");
                assert_eq!(sdu.len(), 5 + (i % 56) as usize);
                next[w as usize] += 1;
            }
            None => thread::yield_now(),
        }
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
}

#[test]
fn sdus_pushed_before_a_concurrent_down_all_arrive_first() {
    for round in 0..200u32 {
        let f = flow(geom(8, 16));
        let ipcp = f.ipcp.clone();
        let k = round % 8;
        let producer = thread::spawn(move || {
            for i in 0..k {
                assert!(ipcp.push_rx(&i.to_le_bytes()).unwrap());
            }
            ipcp.set_state(FlowState::Down);
        });
        let mut got = 0u32;
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(5);
        let end = loop {
            match f.app.read(&mut buf, Some(deadline), round % 2 == 0) {
                Ok(4) => {
                    assert_eq!(buf[..4], got.to_le_bytes());
                    got += 1;
                }
                Err(Error::Again) => thread::yield_now(),
                other => break other,
            }
        };
        producer.join().unwrap();
        assert_eq!((end, got), (Err(Error::FlowDown), k), "round {round}");
    }
}

mod batch;
mod hostile;
mod locks;
mod pipes;

#[test]
fn the_link_max_sdu_the_ipcp_announces_reaches_the_application() {
    let f = flow(geom(8, 1500));
    assert_eq!(f.app.link_max_sdu(), None, "never announced");
    f.ipcp.set_link_max_sdu(1180);
    assert_eq!(f.app.link_max_sdu(), Some(1180));
    f.ipcp.set_link_max_sdu(1480);
    assert_eq!(f.app.link_max_sdu(), Some(1480));
    // The word is where the published layout says; whatever an application
    // writes there is only what its own library reads back.
    let m = f.app.map();
    // SAFETY: a 4-aligned offset inside the header page of a live mapping.
    let word = unsafe { &*(m.base().as_ptr().add(layout::LINK_MAX_SDU) as *const AtomicU32) };
    assert_eq!(word.load(Ordering::Relaxed), 1480);
    word.store(u32::MAX, Ordering::Relaxed);
    assert_eq!(f.app.link_max_sdu(), Some(u32::MAX));
    f.app.write(&[7u8; 1500], None, true).unwrap();
    assert_eq!(pop(&f.ipcp).unwrap().len(), 1500);
}
