//! Wake-up pipes (what an application can do to its own fds), end of
//! file, watchers, fork, the IPCP's own counters, exact copies, the
//! published layout.
#![allow(unsafe_code)]

use super::*;

fn flags(fd: BorrowedFd<'_>) -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).unwrap())
}

/// Run `f` on a thread; fail (instead of hanging) if it has not returned
/// after a generous bound: a blocked syscall never returns at all.
fn must_return(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(20)).is_ok(),
        "{what} blocked"
    );
}

#[test]
fn an_application_cannot_make_the_ipcp_or_irmd_block() {
    use nix::fcntl::OFlag;
    let g = geom(4, 16);
    let fds = create(g).unwrap();
    let f = flow_from(fds.try_clone_all(), g);
    // The application's worst: clear O_NONBLOCK on every description it
    // holds, fill the IPCP's wake pipe, and keep every flag armed.
    let app_fds = fds.for_app();
    for fd in &app_fds[1..] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty())).unwrap();
        assert!(!flags(fd.as_fd()).contains(OFlag::O_NONBLOCK));
    }
    // The descriptions the IPCP and irmd use are others: still non-blocking.
    for fd in &fds.for_ipcp()[1..] {
        assert!(flags(fd.as_fd()).contains(OFlag::O_NONBLOCK), "{fd:?}");
    }
    let mut filled = 0;
    while nix::unistd::write(app_fds[3], &[0u8; 512]).is_ok() {
        filled += 512;
        if filled > 1 << 20 {
            break;
        }
        // Stop before the (now blocking) write would block the test itself.
        if pending_bytes(fds.ipcp_read.as_fd()) + 512 > 4096 {
            break;
        }
    }
    let h = f.app.map().header();
    let (ipcp, app, monitor) = (f.ipcp.clone(), f.app.clone(), f.monitor);
    must_return("the IPCP and irmd", move || {
        for i in 0..20_000u32 {
            h_arm_all(app.map());
            let _ = ipcp.push_rx(&i.to_le_bytes());
            let _ = ipcp.pop_tx_into(&mut [0; 16]);
            ipcp.wake_rx();
            if i % 64 == 0 {
                ipcp.clear_tx_wakeup();
                ipcp.set_state(FlowState::Allocated);
                monitor.set_state(FlowState::Allocated);
            }
        }
    });
    // The flow itself still works for a well-behaved reader.
    assert_eq!(h.state.load(Ordering::Relaxed), STATE_ALLOCATED);
}

/// Set every flag a hostile application could set.
fn h_arm_all(map: &ShmMap) {
    let h = map.header();
    for w in [
        &*h.tx.consumer_sleeping,
        &*h.tx.producer_waiting,
        &*h.rx.consumer_sleeping,
        &*h.rx.producer_waiting,
    ] {
        w.store(u32::MAX, Ordering::Relaxed);
    }
}

#[test]
fn with_the_ipcp_and_irmd_gone_a_blocked_read_or_write_ends_down() {
    let g = geom(2, 16);
    let f = flow(g);
    f.app.write(b"a", None, false).unwrap();
    f.app.write(b"b", None, false).unwrap();
    let (a1, a2) = (f.app.clone(), f.app.clone());
    let reader = thread::spawn(move || a1.read(&mut [0; 16], None, false));
    let writer = thread::spawn(move || a2.write(b"c", None, false));
    thread::sleep(Duration::from_millis(50));
    assert!(!reader.is_finished() && !writer.is_finished());
    // Every holder of the write ends goes (no state word was set).
    drop(f.ipcp);
    drop(f.monitor);
    assert_eq!(reader.join().unwrap(), Err(Error::FlowDown));
    assert_eq!(writer.join().unwrap(), Err(Error::FlowDown));
    assert!(!f.app.arm_rx_wakeup());
    // A watcher hears DOWN too, though nobody could set the state word.
    assert_eq!(f.app.state(), FlowState::Allocated);
    assert_eq!(f.app.watch_check(true).state, FlowState::Down);
    assert_eq!(f.app.watch_check(false).state, FlowState::Down);
}

#[test]
fn the_ipcp_hears_when_nobody_can_wake_it_any_more() {
    let f = flow(geom(4, 16));
    assert_eq!(f.ipcp.clear_tx_wakeup(), TxWake::Cleared);
    // irmd holds both ends of the IPCP wake pipe while it knows the flow.
    drop(f.app);
    assert_eq!(f.ipcp.clear_tx_wakeup(), TxWake::Cleared);
    drop(f.monitor);
    assert_eq!(f.ipcp.clear_tx_wakeup(), TxWake::Closed);
}

#[test]
fn wake_pipes_are_one_page() {
    let fds = create(geom(4, 16)).unwrap();
    for fd in [&fds.ipcp_read, &fds.rx_read, &fds.tx_read] {
        assert_eq!(fcntl(fd.as_raw_fd(), FcntlArg::F_GETPIPE_SZ).unwrap(), 4096);
    }
}

#[test]
fn a_watcher_that_never_sees_an_empty_ring_keeps_getting_edges() {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let f = flow(geom(8, 16));
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    epoll
        .add(
            f.app.rx_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 7),
        )
        .unwrap();
    let mut events = [EpollEvent::empty(); 4];
    // Far more cycles than a one-page pipe holds bytes: each cycle is one
    // look by the watcher, one SDU, one read that leaves the ring non-empty.
    f.ipcp.push_rx(b"first").unwrap();
    for i in 0..6000u32 {
        assert!(f.app.watch_check(true).has_data);
        let _ = epoll.wait(&mut events, EpollTimeout::ZERO).unwrap();
        f.ipcp.push_rx(&i.to_le_bytes()).unwrap();
        // Disarmed by the look's own data: arm as a watcher that saw it.
        f.app
            .map()
            .ctrl(Dir::Rx)
            .consumer_sleeping
            .store(WATCHER_ARMED, Ordering::Relaxed);
        f.ipcp.push_rx(&i.to_le_bytes()).unwrap();
        assert_eq!(
            epoll.wait(&mut events, EpollTimeout::ZERO).unwrap(),
            1,
            "no edge at cycle {i}"
        );
        read_nb(&f.app).unwrap();
        read_nb(&f.app).unwrap();
        // Wake-ups do not pile up in the pipe (once full, it would take no
        // new byte; only some kernels still report an edge then).
        assert!(pending_bytes(f.app.rx_fd()) <= 2, "cycle {i}");
    }
}

#[test]
fn a_forked_child_cannot_use_the_parents_flow() {
    let f = flow(geom(4, 16));
    f.app.write(b"parent", None, false).unwrap();
    // SAFETY: the child only calls into this flow (no allocation-free
    // guarantee is needed: it exits with _exit right after).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let w = f.app.write(b"child", None, true);
        let r = f.app.read(&mut [0; 16], None, true);
        // A flow the child makes itself is the child's.
        let own = flow(geom(4, 16));
        let own_ok = own.app.write(b"mine", None, true) == Ok(4)
            && pop(&own.ipcp).as_deref() == Some(&b"mine"[..]);
        // And the parent's stays refused after that.
        let still = f.app.write(b"child", None, true) == Err(Error::NotAlloc);
        let ok = w == Err(Error::NotAlloc)
            && r == Err(Error::NotAlloc)
            && !f.app.arm_rx_wakeup()
            && own_ok
            && still;
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child saw {status:#x}"
    );
    // The parent's flow is untouched: one SDU, and it still writes.
    assert_eq!(pop(&f.ipcp).unwrap(), b"parent");
    assert_eq!(pop(&f.ipcp), None);
    f.app.write(b"again", None, true).unwrap();
    assert_eq!(pop(&f.ipcp).unwrap(), b"again");
}

#[test]
fn ipcp_counters_live_in_its_own_memory() {
    let f = flow(geom(2, 16));
    assert!(f.ipcp.push_rx(b"one").unwrap());
    assert!(f.ipcp.push_rx(b"two!").unwrap());
    assert!(!f.ipcp.push_rx(b"three").unwrap());
    f.ipcp.note_tx(40);
    let want = |c: FlowCounters| (c.rx_sdus, c.rx_bytes, c.rx_dropped, c.tx_sdus, c.tx_bytes);
    assert_eq!(want(f.ipcp.counters()), (2, 7, 1, 1, 40));
    // The application scribbles over the copy in the mapping...
    let h = f.app.map().header();
    h.rx_counters.sdus.store(u64::MAX, Ordering::Relaxed);
    h.tx_counters.bytes.store(0, Ordering::Relaxed);
    h.rx_counters.last_unix_ms.store(1, Ordering::Relaxed);
    assert_eq!(f.monitor.stats().rx_sdus, u64::MAX);
    // ...which the IPCP's own counters never read back.
    assert_eq!(want(f.ipcp.counters()), (2, 7, 1, 1, 40));
    let s = f.ipcp.stats();
    assert_eq!(
        (s.rx_sdus, s.rx_bytes, s.dropped, s.tx_sdus, s.tx_bytes),
        (2, 7, 1, 1, 40)
    );
    assert!(f.ipcp.counters().last_rx_unix_ms > 1_600_000_000_000);
    f.ipcp.note_tx(2);
    assert_eq!(f.ipcp.counters().tx_bytes, 42);
    assert_eq!(
        f.monitor.stats().tx_bytes,
        42,
        "the mapping's copy is rewritten"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every SDU comes out as it went in, whatever its length, the room
    /// the caller gives and the offset it copies to.
    #[test]
    fn copies_in_and_out_of_slots_are_exact(
        sdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=61), 1..12),
        room in 0usize..70,
        offset in 0usize..20,
    ) {
        let f = flow(geom(16, 61));
        for sdu in &sdus {
            f.app.write(sdu, None, true).unwrap();
            prop_assert!(f.ipcp.push_rx(sdu).unwrap());
        }
        let mut bufs = vec![vec![0xAAu8; offset + room]; sdus.len()];
        let mut lens = vec![0usize; sdus.len()];
        prop_assert_eq!(f.ipcp.pop_tx_batch_into(&mut bufs, offset, &mut lens).unwrap(), sdus.len());
        for ((sdu, buf), &len) in sdus.iter().zip(&bufs).zip(&lens) {
            prop_assert_eq!(len, sdu.len());
            let n = len.min(room);
            prop_assert_eq!(&buf[offset..offset + n], &sdu[..n]);
            prop_assert!(buf[offset + n..].iter().all(|&b| b == 0xAA), "wrote past the SDU");
            prop_assert!(buf[..offset].iter().all(|&b| b == 0xAA), "wrote before the offset");
            let mut out = vec![0u8; room];
            let got = f.app.read(&mut out, None, true).unwrap();
            prop_assert_eq!(&out[..got], &sdu[..n]);
        }
    }
}

#[test]
fn the_published_layout_is_where_the_library_looks() {
    let g = geom(8, 100);
    let f = flow(g);
    let m = f.app.map();
    let word = |off: usize| {
        // SAFETY: a 4-aligned offset inside the header page of a live mapping.
        unsafe { &*(m.base().as_ptr().add(off) as *const AtomicU32) }
    };
    assert_eq!(word(layout::SLOTS).load(Ordering::Relaxed), 8);
    assert_eq!(word(layout::SLOT_SIZE).load(Ordering::Relaxed), 100);
    word(layout::STATE).store(STATE_PEER, Ordering::Relaxed);
    assert_eq!(f.app.state(), FlowState::Peer);
    word(layout::STATE).store(STATE_ALLOCATED, Ordering::Relaxed);
    // The change log: count in bits 0..16, newest state in bits 16..18.
    f.ipcp.set_state(FlowState::Peer);
    // SAFETY: an 8-aligned offset inside the header page of a live mapping.
    let log = unsafe { &*(m.base().as_ptr().add(layout::STATE_LOG) as *const AtomicU64) };
    assert_eq!(log.load(Ordering::Relaxed), u64::from(STATE_PEER) << 16 | 1);
    f.ipcp.set_state(FlowState::Allocated);
    f.app.write(b"abc", None, true).unwrap();
    assert_eq!(word(layout::TX + layout::HEAD).load(Ordering::Relaxed), 1);
    let slot = layout::ring(g, true);
    assert_eq!(word(slot + layout::SLOT_LEN).load(Ordering::Relaxed), 3);
    // SAFETY: inside the first tx slot's data.
    let first = unsafe { *m.base().as_ptr().add(slot + layout::SLOT_DATA) };
    assert_eq!(first, b'a');
    pop(&f.ipcp).unwrap();
    assert_eq!(word(layout::TX + layout::TAIL).load(Ordering::Relaxed), 1);
    f.ipcp.arm_tx_wakeup();
    assert_eq!(
        word(layout::TX + layout::CONSUMER_SLEEPING).load(Ordering::Relaxed),
        1
    );
    assert_eq!(layout::ring(g, false), slot + 4096);
    assert_eq!(layout::slot_stride(g), 128);
    assert_eq!(
        word(layout::RX + layout::PRODUCER_WAITING).load(Ordering::Relaxed),
        0
    );
}

#[test]
fn a_state_change_racing_a_writer_that_blocks_always_wakes_it() {
    for round in 0..300u32 {
        let f = flow(geom(2, 16));
        f.app.write(b"x", None, true).unwrap();
        f.app.write(b"y", None, true).unwrap();
        let app = f.app.clone();
        let writer = thread::spawn(move || {
            app.write(b"z", Some(Instant::now() + Duration::from_secs(20)), false)
        });
        for _ in 0..round % 50 {
            thread::yield_now();
        }
        if round % 2 == 0 {
            f.ipcp.set_state(FlowState::Down);
        } else {
            f.monitor.set_state(FlowState::Down);
        }
        assert_eq!(
            writer.join().unwrap(),
            Err(Error::FlowDown),
            "round {round}"
        );
    }
}
