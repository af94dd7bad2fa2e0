//! Threads of one application on one flow: a thread asleep in a blocking
//! read or write never holds up another thread's non-blocking call, and no
//! thread's wake-up is lost to another.

use super::*;

/// Wait (bounded) until `cond`; a failure names what never happened.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::yield_now();
    }
}

/// Run `f` on a thread and return its result; fail instead of hanging if
/// it does not return (a call stuck behind a sleeper never does).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} blocked behind a sleeping thread"))
}

#[test]
fn a_nonblocking_read_returns_again_while_another_thread_sleeps_in_read() {
    let f = flow(geom(4, 16));
    let app = f.app.clone();
    let sleeper = thread::spawn(move || {
        let mut buf = [0u8; 16];
        app.read(&mut buf, None, false).map(|n| buf[..n].to_vec())
    });
    until("the reader arms its wake-up", || rx_flag(&f.app) != 0);
    let app = f.app.clone();
    assert_eq!(
        returns("a non-blocking read", move || read_nb(&app)),
        Err(Error::Again)
    );
    // The sleeper still gets the next SDU.
    f.ipcp.push_rx(b"late").unwrap();
    assert_eq!(sleeper.join().unwrap().unwrap(), b"late");
}

#[test]
fn a_nonblocking_write_returns_again_while_another_thread_sleeps_in_write() {
    let f = flow(geom(2, 16));
    f.app.write(b"a", None, false).unwrap();
    f.app.write(b"b", None, false).unwrap();
    let app = f.app.clone();
    let sleeper = thread::spawn(move || app.write(b"c", None, false));
    let waiting = || {
        f.app
            .map()
            .ctrl(Dir::Tx)
            .producer_waiting
            .load(Ordering::SeqCst)
            != 0
    };
    until("the writer arms its wake-up", waiting);
    let app = f.app.clone();
    assert_eq!(
        returns("a non-blocking write", move || app.write(b"d", None, true)),
        Err(Error::Again)
    );
    assert_eq!(pop(&f.ipcp).unwrap(), b"a");
    assert_eq!(sleeper.join().unwrap(), Ok(1));
    assert_eq!(pop(&f.ipcp).unwrap(), b"b");
    assert_eq!(pop(&f.ipcp).unwrap(), b"c");
}

/// Several reader and writer threads on one flow, blocking and not, with
/// an IPCP thread echoing tx into rx through tiny rings: every SDU arrives
/// exactly once and nobody sleeps through its wake-up (a blocked call
/// gives up after `STUCK`, which fails the test).
fn many_threads_on_one_flow(spin: SpinPolicy) {
    const WRITERS: u32 = 3;
    const PER_WRITER: u32 = 3000;
    const STUCK: Duration = Duration::from_secs(10);
    let total = u64::from(WRITERS * PER_WRITER);
    let f = flow(geom(4, 16));
    f.app.set_spin(spin);
    let stop = Arc::new(AtomicBool::new(false));
    let ipcp = {
        let (ipcp, stop) = (f.ipcp.clone(), stop.clone());
        thread::spawn(move || {
            let mut bufs = [[0u8; 16]; 4];
            let mut lens = [0usize; 4];
            while !stop.load(Ordering::SeqCst) {
                let n = ipcp.pop_tx_batch_into(&mut bufs, 0, &mut lens).unwrap();
                for k in 0..n {
                    while !ipcp.push_rx(&bufs[k][..lens[k]]).unwrap() {
                        thread::yield_now();
                    }
                }
                if n == 0 && ipcp.arm_tx_wakeup() {
                    let mut fds = [PollFd::new(ipcp.ipcp_fd(), PollFlags::POLLIN)];
                    // Bounded so a stop is noticed; a missed wake-up shows
                    // as writers that give up.
                    let _ = ppoll(
                        &mut fds,
                        Some(TimeSpec::from(Duration::from_millis(50))),
                        None,
                    );
                    ipcp.clear_tx_wakeup();
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let app = f.app.clone();
            thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let sdu = (w * PER_WRITER + i).to_le_bytes();
                    loop {
                        let nb = w == 0;
                        match app.write(&sdu, Some(Instant::now() + STUCK), nb) {
                            Ok(_) => break,
                            Err(Error::Again) => thread::yield_now(),
                            Err(e) => panic!("writer {w} at {i}: {e:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    let seen = Arc::new(Mutex::new(vec![false; total as usize]));
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (app, seen, count) = (f.app.clone(), seen.clone(), count.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 16];
                loop {
                    match app.read(&mut buf, Some(Instant::now() + STUCK), r == 0) {
                        Ok(4) => {
                            let k = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                            let mut s = seen.lock().unwrap();
                            assert!(!s[k], "SDU {k} twice");
                            s[k] = true;
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::Again) => thread::yield_now(),
                        Err(Error::FlowDown) => return,
                        other => panic!("reader {r}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    until("every SDU read", || count.load(Ordering::SeqCst) == total);
    f.ipcp.set_state(FlowState::Down);
    for r in readers {
        r.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    ipcp.join().unwrap();
    assert!(seen.lock().unwrap().iter().all(|&b| b));
}

#[test]
fn many_threads_on_one_flow_without_spinning() {
    many_threads_on_one_flow(SpinPolicy::OFF);
}

#[test]
fn many_threads_on_one_flow_with_spinning() {
    many_threads_on_one_flow(SpinPolicy {
        max_spin: Duration::from_micros(20),
    });
}
