//! Batches: one publication and at most one wake-up per batch on every
//! side, and consumed slots handed back in groups.

use super::*;

fn shared_head(map: &ShmMap, dir: Dir) -> u32 {
    map.ctrl(dir).head.load(Ordering::Relaxed)
}

fn shared_tail(map: &ShmMap, dir: Dir) -> u32 {
    map.ctrl(dir).tail.load(Ordering::Relaxed)
}

#[test]
fn staged_rx_sdus_appear_at_once_with_one_wakeup() {
    let f = flow(geom(8, 16));
    // The reader sleeps (an empty read armed the flag).
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    for sdu in [&b"a"[..], b"bb", b"ccc"] {
        assert!(f.ipcp.push_rx_quiet(sdu).unwrap());
    }
    // Staged, not published: the application sees nothing, nobody is woken.
    assert_eq!(shared_head(f.app.map(), Dir::Rx), 0);
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert_eq!(pending_bytes(f.app.rx_fd()), 0);
    assert_eq!(f.ipcp.counters().rx_sdus, 0);
    // One commit: one store of the head, one wake-up byte, counters once.
    assert_eq!(f.ipcp.wake_rx(), 3);
    assert_eq!(shared_head(f.app.map(), Dir::Rx), 3);
    assert_eq!(pending_bytes(f.app.rx_fd()), 1);
    let c = f.ipcp.counters();
    assert_eq!((c.rx_sdus, c.rx_bytes), (3, 6));
    assert_eq!(f.monitor.stats().rx_sdus, 3);
    // Nothing staged: a commit does nothing.
    assert_eq!(f.ipcp.wake_rx(), 0);
    assert_eq!(pending_bytes(f.app.rx_fd()), 1);
    for want in [&b"a"[..], b"bb", b"ccc"] {
        assert_eq!(read_nb(&f.app).unwrap(), want);
    }
}

#[test]
fn published_sdus_wake_a_sleeping_reader_only_when_asked() {
    let f = flow(geom(8, 16));
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    assert!(f.ipcp.push_rx_quiet(b"one").unwrap());
    // Published and counted, but the sleeping reader is not signalled yet.
    assert_eq!(f.ipcp.publish_rx(), 1);
    assert_eq!(shared_head(f.app.map(), Dir::Rx), 1);
    assert_eq!(f.ipcp.counters().rx_sdus, 1);
    assert_eq!(pending_bytes(f.app.rx_fd()), 0);
    // The deferred wake-up: one byte, and only once.
    f.ipcp.wake_rx_reader();
    assert_eq!(pending_bytes(f.app.rx_fd()), 1);
    f.ipcp.wake_rx_reader();
    assert_eq!(pending_bytes(f.app.rx_fd()), 1);
    assert_eq!(read_nb(&f.app).unwrap(), b"one");
    // A reader that never armed is not signalled.
    assert!(f.ipcp.push_rx_quiet(b"two").unwrap());
    assert_eq!(f.ipcp.publish_rx(), 1);
    assert_eq!(read_nb(&f.app).unwrap(), b"two");
    let before = pending_bytes(f.app.rx_fd());
    assert!(f.ipcp.push_rx_quiet(b"three").unwrap());
    assert_eq!(f.ipcp.publish_rx(), 1);
    f.ipcp.wake_rx_reader();
    assert_eq!(pending_bytes(f.app.rx_fd()), before);
    assert_eq!(read_nb(&f.app).unwrap(), b"three");
}

#[test]
fn a_state_change_publishes_staged_sdus_first() {
    let f = flow(geom(8, 16));
    assert!(f.ipcp.push_rx_quiet(b"before").unwrap());
    f.ipcp.set_state(FlowState::Down);
    assert_eq!(read_nb(&f.app).unwrap(), b"before");
    assert_eq!(read_nb(&f.app), Err(Error::FlowDown));
}

#[test]
fn irmd_gone_publishes_staged_sdus_first() {
    let f = flow(geom(8, 16));
    assert!(f.ipcp.push_rx_quiet(b"before").unwrap());
    f.ipcp.set_irmd_gone();
    assert!(f.app.irmd_gone());
    assert_eq!(read_nb(&f.app).unwrap(), b"before");
    assert_eq!(read_nb(&f.app), Err(Error::FlowDown));
}

#[test]
fn a_batch_push_drops_what_does_not_fit_and_wakes_once() {
    let f = flow(geom(4, 16));
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    let sdus: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; usize::from(i) + 1]).collect();
    let got = f
        .ipcp
        .push_rx_batch(sdus.iter().map(Vec::as_slice))
        .unwrap();
    assert_eq!(
        got,
        RxPushed {
            pushed: 4,
            dropped: 2
        }
    );
    assert_eq!(pending_bytes(f.app.rx_fd()), 1);
    let c = f.ipcp.counters();
    assert_eq!((c.rx_sdus, c.rx_bytes, c.rx_dropped), (4, 10, 2));
    let mut bufs = [[0u8; 16]; 8];
    let mut lens = [0usize; 8];
    assert_eq!(f.app.read_batch(&mut bufs, &mut lens, None, true), Ok(4));
    for i in 0..4 {
        assert_eq!(&bufs[i][..lens[i]], &sdus[i][..]);
    }
    // An oversized SDU stops the batch after publishing those before it.
    let r = f.ipcp.push_rx_batch([&b"ok"[..], &[0; 17][..], b"never"]);
    assert_eq!(r, Err(Error::MsgSize { len: 17, max: 16 }));
    assert_eq!(read_nb(&f.app).unwrap(), b"ok");
    assert_eq!(read_nb(&f.app), Err(Error::Again));
}

#[test]
fn a_batch_pop_publishes_the_tail_once_and_wakes_a_blocked_writer_once() {
    let f = flow(geom(8, 16));
    for i in 0..8u8 {
        f.app.write(&[i], None, true).unwrap();
    }
    assert_eq!(f.app.write(b"x", None, true), Err(Error::Again));
    // A writer waits (as a blocked write does) ...
    let flag = &f.app.map().ctrl(Dir::Tx).producer_waiting;
    flag.store(1, Ordering::SeqCst);
    let mut bufs = [[0u8; 16]; 8];
    let mut lens = [0usize; 8];
    assert_eq!(f.ipcp.pop_tx_batch_into(&mut bufs, 0, &mut lens), Ok(8));
    // ... and is woken once for the whole batch, which is handed back at once.
    assert_eq!(pending_bytes(f.app.tx_fd()), 1);
    assert_eq!(flag.load(Ordering::SeqCst), 0);
    assert_eq!(shared_tail(f.app.map(), Dir::Tx), 8);
    assert_eq!(lens, [1; 8]);
}

#[test]
fn a_writer_asleep_on_a_full_ring_is_woken_once_a_quarter_of_it_is_free() {
    let f = flow(geom(64, 16));
    for i in 0..64u8 {
        f.app.write(&[i], None, true).unwrap();
    }
    assert_eq!(f.app.write(b"x", None, true), Err(Error::Again));
    let flag = &f.app.map().ctrl(Dir::Tx).producer_waiting;
    flag.store(1, Ordering::SeqCst);
    let mut bufs = [[0u8; 16]; 15];
    let mut lens = [0usize; 15];
    // 15 of 64 free: the writer sleeps on (its flag stays set), although
    // the tail is handed back.
    assert_eq!(f.ipcp.pop_tx_batch_into(&mut bufs, 0, &mut lens), Ok(15));
    assert_eq!(shared_tail(f.app.map(), Dir::Tx), 15);
    assert_eq!(pending_bytes(f.app.tx_fd()), 0);
    assert_eq!(flag.load(Ordering::SeqCst), 1);
    // 16 free: woken, once.
    assert_eq!(f.ipcp.pop_tx_into(&mut [0; 16]), Ok(Some(1)));
    assert_eq!(pending_bytes(f.app.tx_fd()), 1);
    assert_eq!(flag.load(Ordering::SeqCst), 0);
    // The writer refilled the ring in between: the mark counts the head
    // as it is now, not as the IPCP last saw it.
    for i in 0..16u8 {
        f.app.write(&[i], None, true).unwrap();
    }
    flag.store(1, Ordering::SeqCst);
    assert_eq!(f.ipcp.pop_tx_batch_into(&mut bufs, 0, &mut lens), Ok(15));
    assert_eq!(pending_bytes(f.app.tx_fd()), 1, "no second byte");
    assert_eq!(flag.load(Ordering::SeqCst), 1);
}

#[test]
fn reads_hand_slots_back_in_groups_and_always_when_the_ring_looks_empty() {
    let f = flow(geom(64, 16));
    // 64 slots: groups of 8.
    let sdus: Vec<[u8; 1]> = (0..40u8).map(|i| [i]).collect();
    f.ipcp.push_rx_batch(sdus.iter().map(|s| &s[..])).unwrap();
    for i in 0..7u8 {
        assert_eq!(read_nb(&f.app).unwrap(), [i]);
    }
    assert_eq!(
        shared_tail(f.app.map(), Dir::Rx),
        0,
        "7 reads, no store yet"
    );
    assert_eq!(read_nb(&f.app).unwrap(), [7]);
    assert_eq!(shared_tail(f.app.map(), Dir::Rx), 8);
    for i in 8..40u8 {
        assert_eq!(read_nb(&f.app).unwrap(), [i]);
    }
    // The last SDU known to be there was taken: all handed back.
    assert_eq!(shared_tail(f.app.map(), Dir::Rx), 40);
    assert_eq!(f.app.queue_lens(), (0, 0));
    // One SDU at a time (a reader that keeps up): handed back each time,
    // so a watcher comparing head and tail never sees a stale SDU.
    for i in 0..3u8 {
        f.ipcp.push_rx(&[i]).unwrap();
        assert_eq!(read_nb(&f.app).unwrap(), [i]);
        assert_eq!(shared_tail(f.app.map(), Dir::Rx), 41 + u32::from(i));
        assert!(!f.app.watch_check(true).has_data);
    }
}

#[test]
fn write_batch_writes_what_fits_and_reads_batch_take_what_is_there() {
    let f = flow(geom(4, 16));
    // The IPCP sleeps: a batch wakes it once.
    assert!(f.ipcp.arm_tx_wakeup());
    let sdus = [&b"1"[..], b"22", b"333", b"4444", b"55555", b"666666"];
    assert_eq!(f.app.write_batch(&sdus, None, true), Ok(4));
    assert_eq!(pending_bytes(f.ipcp.ipcp_fd()), 1);
    assert_eq!(shared_head(f.app.map(), Dir::Tx), 4);
    // Full and nothing written: as a single write.
    assert_eq!(f.app.write_batch(&sdus[4..], None, true), Err(Error::Again));
    assert_eq!(
        f.app.write_batch(&sdus[4..], Some(Instant::now()), false),
        Err(Error::TimedOut)
    );
    // Too long anywhere in the batch: none written.
    assert_eq!(
        f.app.write_batch(&[&b"ok"[..], &[0; 17]], None, true),
        Err(Error::MsgSize { len: 17, max: 16 })
    );
    for want in &sdus[..4] {
        assert_eq!(pop(&f.ipcp).as_deref(), Some(*want));
    }
    // A blocking batch larger than the ring goes through as the IPCP pops.
    let app = f.app.clone();
    let writer = thread::spawn(move || {
        let many: Vec<[u8; 2]> = (0..50u8).map(|i| [i, i]).collect();
        app.write_batch(&many, None, false)
    });
    let mut got = 0u8;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < 50 {
        assert!(Instant::now() < deadline, "stuck at {got}");
        match pop(&f.ipcp) {
            Some(sdu) => {
                assert_eq!(sdu, [got, got]);
                got += 1;
            }
            None => thread::yield_now(),
        }
    }
    assert_eq!(writer.join().unwrap(), Ok(50));
    // Batch reads: up to the room given, and only what is there.
    f.ipcp.push_rx_batch([&b"a"[..], b"b", b"c"]).unwrap();
    let mut bufs = vec![vec![0u8; 16]; 2];
    let mut lens = [0usize; 2];
    assert_eq!(f.app.read_batch(&mut bufs, &mut lens, None, true), Ok(2));
    assert_eq!(f.app.read_batch(&mut bufs, &mut lens, None, true), Ok(1));
    assert_eq!((&bufs[0][..lens[0]], lens[1]), (&b"c"[..], 1));
    assert_eq!(
        f.app.read_batch(&mut bufs, &mut lens, None, true),
        Err(Error::Again)
    );
    // A state change after part of a batch: the part, then the error.
    f.ipcp.push_rx(b"z").unwrap();
    f.ipcp.set_state(FlowState::Peer);
    assert_eq!(f.app.read_batch(&mut bufs, &mut lens, None, false), Ok(1));
    assert_eq!(
        f.app.read_batch(&mut bufs, &mut lens, None, false),
        Err(Error::FlowPeer)
    );
    assert_eq!(f.app.write_batch(&sdus, None, false), Err(Error::FlowPeer));
}

#[test]
fn wake_ups_and_sleeps_are_counted() {
    // Process-wide counters, shared with tests running alongside: only
    // "at least" can be asserted.
    let f = flow(geom(4, 16));
    let before = wake_stats();
    // Armed reader: the push writes a wake-up byte.
    assert_eq!(read_nb(&f.app), Err(Error::Again));
    f.ipcp.push_rx(b"a").unwrap();
    let mid = wake_stats().since(&before);
    assert!(mid.signals_sent >= 1, "{mid:?}");
    assert_eq!(read_nb(&f.app).unwrap(), b"a");
    // A blocking read that waits is a sleep.
    let mut buf = [0u8; 4];
    assert_eq!(
        f.app.read(
            &mut buf,
            Some(Instant::now() + Duration::from_millis(5)),
            false
        ),
        Err(Error::TimedOut)
    );
    note_sleep();
    let after = wake_stats().since(&before);
    assert!(after.sleeps >= 2, "{after:?}");
}
