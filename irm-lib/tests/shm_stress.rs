//! Stress test of the shared-memory rings: SDUs flow both ways at once
//! (application → IPCP and IPCP → application) with random sizes and random
//! short pauses on every side, so the rings keep running full and empty and
//! every side keeps going to sleep. Each SDU carries its sequence number and a
//! pattern derived from it; the receivers check both. A lost wake-up shows as
//! a side that never wakes: the watchdog turns that into a failure naming the
//! stuck side instead of a hung test.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use irm::proto::RingGeometry;
use irm::shm::{create, AppEnd, IpcpEnd, ShmMap};
use irm::Error;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Small ring: it fills and drains constantly, exercising both sleep paths.
const GEOM: RingGeometry = RingGeometry {
    slots: 8,
    slot_size: 256,
};
const MIN_SDU: usize = 12;
/// Longer than any pause in this test: a side asleep this long missed a wake-up.
const STUCK: Duration = Duration::from_secs(10);
const WATCHDOG: Duration = Duration::from_secs(60);

/// SDUs per direction (debug builds run a fraction so the test stays quick).
fn sdus_per_direction() -> u64 {
    if cfg!(debug_assertions) {
        400_000
    } else {
        1_000_000
    }
}

/// xorshift64*: fast even unoptimised, and reproducible from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly nothing; sometimes a spin, a yield or a sleep of a few µs.
    fn pause(&mut self) {
        match self.below(1024) {
            0..=5 => thread::sleep(Duration::from_micros(self.below(60))),
            6..=40 => thread::yield_now(),
            41..=100 => {
                for _ in 0..self.below(3000) {
                    std::hint::spin_loop();
                }
            }
            _ => {}
        }
    }
}

/// The SDU with sequence number `seq`: its length and content follow from `seq`.
fn sdu_len(seq: u64) -> usize {
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    MIN_SDU + (h as usize) % (GEOM.slot_size as usize - MIN_SDU + 1)
}

fn fill_sdu(seq: u64, buf: &mut Vec<u8>) {
    let len = sdu_len(seq);
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend((MIN_SDU..len).map(|i| (seq as u8).wrapping_add(i as u8)));
}

fn check_sdu(want: u64, got: &[u8]) -> Result<(), String> {
    if got.len() < MIN_SDU {
        return Err(format!("SDU {want}: only {} bytes", got.len()));
    }
    let seq = u64::from_le_bytes(got[0..8].try_into().unwrap());
    if seq != want {
        return Err(format!(
            "expected SDU {want}, got {seq} (lost, duplicated or reordered)"
        ));
    }
    if got.len() != sdu_len(seq) {
        return Err(format!(
            "SDU {seq}: {} bytes, expected {}",
            got.len(),
            sdu_len(seq)
        ));
    }
    let intact = got[MIN_SDU..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (seq as u8).wrapping_add((MIN_SDU + i) as u8));
    if !intact {
        return Err(format!("SDU {seq}: payload corrupted"));
    }
    Ok(())
}

/// Wait for `fd`; failing after `STUCK` means nobody woke us.
fn wait_or_fail(fd: BorrowedFd<'_>, who: &str, at: u64) -> Result<(), String> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(STUCK.as_millis() as i32).unwrap();
    match poll(&mut fds, ms) {
        Ok(0) => Err(format!("{who}: asleep {STUCK:?} at SDU {at}: lost wake-up")),
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(format!("{who}: poll: {e}")),
    }
}

/// How far each side has got (SDUs done), shared with the watchdog and with
/// the producers, which sometimes wait for their receiver to catch up.
#[derive(Default)]
struct Progress {
    app_writer: AtomicU64,
    ipcp_consumer: AtomicU64,
    ipcp_producer: AtomicU64,
    app_reader: AtomicU64,
}

impl Progress {
    fn report(&self) -> String {
        format!(
            "app writer {}, IPCP consumer {}, IPCP producer {}, app reader {}",
            self.app_writer.load(Ordering::Relaxed),
            self.ipcp_consumer.load(Ordering::Relaxed),
            self.ipcp_producer.load(Ordering::Relaxed),
            self.app_reader.load(Ordering::Relaxed)
        )
    }
}

/// Now and then a producer stops until its receiver has taken everything, as
/// a request/response application does. That makes "the last SDU before a
/// silence" common — exactly the SDU whose wake-up must not be lost, since no
/// later SDU would rescue a receiver that slept through it.
fn maybe_wait_for_receiver(
    rng: &mut Rng,
    receiver: &AtomicU64,
    sent: u64,
    who: &str,
) -> Result<(), String> {
    if rng.below(16) != 0 {
        return Ok(());
    }
    wait_for_receiver(receiver, sent, who)
}

fn wait_for_receiver(receiver: &AtomicU64, sent: u64, who: &str) -> Result<(), String> {
    let since = Instant::now();
    while receiver.load(Ordering::Relaxed) < sent {
        if since.elapsed() > STUCK {
            return Err(format!(
                "{who}: receiver never took SDU {}: lost wake-up",
                sent - 1
            ));
        }
        thread::yield_now();
    }
    Ok(())
}

/// Application writer: blocking, deadline and non-blocking writes mixed,
/// and batches of up to 8 SDUs (one publication each).
fn app_writer(app: &AppEnd, n: u64, mut rng: Rng, p: &Progress) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut seq = 0;
    while seq < n {
        if rng.below(4) == 0 {
            let k = (1 + rng.below(8)).min(n - seq);
            let batch: Vec<Vec<u8>> = (seq..seq + k)
                .map(|s| {
                    let mut b = Vec::new();
                    fill_sdu(s, &mut b);
                    b
                })
                .collect();
            match app.write_batch(&batch, Some(Instant::now() + STUCK), false) {
                Ok(w) if w as u64 == k => {}
                other => {
                    return Err(format!(
                        "app writer: batch of {k} at SDU {seq}: {other:?} (lost wake-up?)"
                    ))
                }
            }
            seq += k;
            p.app_writer.store(seq, Ordering::Relaxed);
            maybe_wait_for_receiver(&mut rng, &p.ipcp_consumer, seq, "app writer")?;
            rng.pause();
            continue;
        }
        fill_sdu(seq, &mut buf);
        let r = match rng.below(3) {
            0 => app.write(&buf, None, false),
            1 => app.write(&buf, Some(Instant::now() + STUCK), false),
            _ => match app.write(&buf, None, true) {
                Err(Error::Again) => app.write(&buf, Some(Instant::now() + STUCK), false),
                r => r,
            },
        };
        match r {
            Ok(len) if len == buf.len() => {}
            Err(Error::TimedOut) => {
                return Err(format!(
                    "app writer: blocked {STUCK:?} at SDU {seq}: lost wake-up"
                ))
            }
            other => return Err(format!("app writer: SDU {seq}: {other:?}")),
        }
        seq += 1;
        p.app_writer.store(seq, Ordering::Relaxed);
        maybe_wait_for_receiver(&mut rng, &p.ipcp_consumer, seq, "app writer")?;
        rng.pause();
    }
    Ok(())
}

/// IPCP's tx side: pops in random batches, sleeps on ipcp_fd like an epoll loop.
fn ipcp_consumer(ipcp: &IpcpEnd, n: u64, mut rng: Rng, p: &Progress) -> Result<(), String> {
    let mut next = 0u64;
    let mut bufs = vec![vec![0u8; GEOM.slot_size as usize]; 16];
    let mut lens = [0usize; 16];
    while next < n {
        let batch = 1 + rng.below(16) as usize;
        let got = ipcp
            .pop_tx_batch_into(&mut bufs[..batch], 0, &mut lens)
            .map_err(|e| format!("IPCP pop: {e}"))?;
        for (buf, &len) in bufs.iter().zip(&lens).take(got) {
            check_sdu(next, &buf[..len]).map_err(|f| format!("IPCP consumer: {f}"))?;
            next += 1;
        }
        p.ipcp_consumer.store(next, Ordering::Relaxed);
        if got == 0 && ipcp.arm_tx_wakeup() {
            wait_or_fail(ipcp.ipcp_fd(), "IPCP consumer", next)?;
            ipcp.clear_tx_wakeup();
        }
        rng.pause();
    }
    Ok(())
}

/// IPCP's rx side: pushes never block, so a full ring means retry later
/// (a real IPCP would drop; here every SDU must arrive to check ordering).
/// Half the SDUs are staged (`push_rx_quiet`) and published in runs by
/// `wake_rx`, as the receive loop does per batch of frames.
fn ipcp_producer(ipcp: &IpcpEnd, n: u64, mut rng: Rng, p: &Progress) -> Result<(), String> {
    let mut buf = Vec::new();
    for seq in 0..n {
        fill_sdu(seq, &mut buf);
        let since = Instant::now();
        let staged = rng.below(2) == 0;
        let push = |buf: &[u8]| {
            if staged {
                ipcp.push_rx_quiet(buf)
            } else {
                ipcp.push_rx(buf)
            }
        };
        while !push(&buf).map_err(|e| format!("IPCP push: {e}"))? {
            // Full: what is staged must become visible for room to come.
            ipcp.wake_rx();
            if since.elapsed() > STUCK {
                return Err(format!(
                    "IPCP producer: rx ring full for {STUCK:?} at SDU {seq}: reader lost a wake-up"
                ));
            }
            if rng.below(2) == 0 {
                thread::yield_now();
            } else {
                thread::sleep(Duration::from_micros(rng.below(30)));
            }
        }
        if rng.below(4) == 0 || seq + 1 == n {
            ipcp.wake_rx();
        }
        p.ipcp_producer.store(seq + 1, Ordering::Relaxed);
        if rng.below(16) == 0 {
            ipcp.wake_rx();
            wait_for_receiver(&p.app_reader, seq + 1, "IPCP producer")?;
        }
        rng.pause();
    }
    Ok(())
}

/// Application reader: blocking, deadline, and non-blocking + poll (the epoll
/// user's path, which relies on an empty read leaving the wake-up armed).
fn app_reader(app: &AppEnd, n: u64, mut rng: Rng, p: &Progress) -> Result<(), String> {
    let mut buf = vec![0u8; GEOM.slot_size as usize];
    let mut bufs = vec![vec![0u8; GEOM.slot_size as usize]; 8];
    let mut lens = [0usize; 8];
    let mut seq = 0;
    while seq < n {
        if rng.below(4) == 0 {
            let k = (1 + rng.below(8)).min(n - seq) as usize;
            match app.read_batch(
                &mut bufs[..k],
                &mut lens,
                Some(Instant::now() + STUCK),
                false,
            ) {
                Ok(got) => {
                    for (b, &len) in bufs.iter().zip(&lens).take(got) {
                        check_sdu(seq, &b[..len]).map_err(|e| format!("app reader: {e}"))?;
                        seq += 1;
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "app reader: batch at SDU {seq}: {e} (TimedOut: lost wake-up)"
                    ))
                }
            }
            p.app_reader.store(seq, Ordering::Relaxed);
            rng.pause();
            continue;
        }
        let r = match rng.below(3) {
            0 => app.read(&mut buf, None, false),
            1 => app.read(&mut buf, Some(Instant::now() + STUCK), false),
            _ => loop {
                match app.read(&mut buf, None, true) {
                    Err(Error::Again) => wait_or_fail(app.rx_fd(), "app reader (poll)", seq)?,
                    r => break r,
                }
            },
        };
        match r {
            Ok(len) => check_sdu(seq, &buf[..len]).map_err(|e| format!("app reader: {e}"))?,
            Err(Error::TimedOut) => {
                return Err(format!(
                    "app reader: blocked {STUCK:?} at SDU {seq}: lost wake-up"
                ))
            }
            Err(e) => return Err(format!("app reader: SDU {seq}: {e}")),
        }
        seq += 1;
        p.app_reader.store(seq, Ordering::Relaxed);
        rng.pause();
    }
    Ok(())
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}

type Outcome = (&'static str, Result<(), String>);

/// Run `body` on its own thread; its result (or panic) arrives on `done`.
fn spawn_side(
    name: &'static str,
    done: &mpsc::Sender<Outcome>,
    body: impl FnOnce() -> Result<(), String> + Send + 'static,
) {
    let done = done.clone();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!("panicked: {}", msg.unwrap_or_default()))
            });
            let _ = done.send((name, r));
        })
        .unwrap();
}

#[test]
fn both_directions_under_random_pauses_never_lose_a_wakeup() {
    let n = sdus_per_direction();
    let seed: u64 = rand::random::<u64>() | 1;
    eprintln!("shm stress: {n} SDUs each way, seed {seed:#x}");

    let fds = create(GEOM).unwrap();
    // Separate mappings, as in two processes.
    let [_, rx, tx, ipcp_w] = fds.for_app().map(dup);
    let app = Arc::new(AppEnd::new(
        ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(),
        rx,
        tx,
        ipcp_w,
    ));
    let [_, ipcp_r, rx_w, tx_w] = fds.for_ipcp().map(dup);
    let ipcp = Arc::new(IpcpEnd::new(
        ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(),
        ipcp_r,
        rx_w,
        tx_w,
    ));
    let progress = Arc::new(Progress::default());
    let rng = move |k: u64| Rng(seed.wrapping_mul(2 * k + 3));

    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    let (a, p) = (app.clone(), progress.clone());
    spawn_side("app writer", &done_tx, move || {
        app_writer(&a, n, rng(0), &p)
    });
    let (a, p) = (app.clone(), progress.clone());
    spawn_side("app reader", &done_tx, move || {
        app_reader(&a, n, rng(1), &p)
    });
    let (i, p) = (ipcp.clone(), progress.clone());
    spawn_side("IPCP consumer", &done_tx, move || {
        ipcp_consumer(&i, n, rng(2), &p)
    });
    let (i, p) = (ipcp.clone(), progress.clone());
    spawn_side("IPCP producer", &done_tx, move || {
        ipcp_producer(&i, n, rng(3), &p)
    });
    drop(done_tx);

    let t0 = Instant::now();
    for _ in 0..4 {
        let left = WATCHDOG.saturating_sub(t0.elapsed());
        match done_rx.recv_timeout(left) {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => panic!("{name} failed (seed {seed:#x}): {e}"),
            Err(_) => panic!(
                "watchdog: not done after {WATCHDOG:?} (seed {seed:#x}); progress: {}",
                progress.report()
            ),
        }
    }
    let stats = ipcp.stats();
    assert_eq!(stats.rx_sdus, n);
    assert_eq!(
        stats.rx_bytes,
        (0..n).map(|s| sdu_len(s) as u64).sum::<u64>()
    );
    eprintln!(
        "shm stress: done in {:?}, {} full-ring retries on rx",
        t0.elapsed(),
        stats.dropped
    );
}
