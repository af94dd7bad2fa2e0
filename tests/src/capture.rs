//! Frames seen on one interface of a namespace, captured by a thread that
//! joined that namespace (the rest of the test process stays where it is).

use crate::forge::PacketSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every protocol: a socket bound to one ethertype does not see the frames
/// the port transmits.
const ETH_P_ALL: u16 = 0x0003;

/// Move the calling thread into network namespace `ns`.
pub fn enter_netns(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

/// A running capture; [`Capture::finish`] returns the frames.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl Capture {
    /// Capture frames on `dev` in `ns` (only those of `ethertype` when given),
    /// at most 100 000 and for at most 120 s.
    pub fn start(ns: &str, dev: &str, ethertype: Option<u16>) -> Capture {
        let (ns, dev) = (ns.to_string(), dev.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let sock = PacketSocket::open(&dev, Some(ETH_P_ALL)).expect("capture socket");
            ready_tx.send(()).expect("ready");
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && frames.len() < 100_000
            {
                if let Ok(Some(len)) = sock.recv(&mut buf, Duration::from_millis(50)) {
                    let wanted = ethertype
                        .is_none_or(|t| buf[..len].get(12..14) == Some(&t.to_be_bytes()[..]));
                    if wanted {
                        frames.push(buf[..len].to_vec());
                    }
                }
            }
            frames
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("capture did not start");
        Capture { stop, thread }
    }

    /// Stop capturing; the frames seen, in order.
    pub fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}
