//! `hostileapp`: an application that gets a flow through the irm library as
//! any other does, then attacks its own fds and shared memory, as a hostile
//! (or buggy, or forked) program on a multi-user host could. The end-to-end
//! test `hostile_app` runs it while another flow carries pings and checks
//! that nothing but this program's own flow is harmed.
//!
//! Modes:
//! * `freeze` — the wake-up attack: fill every pipe end it may write, write
//!   an eventfd's near-overflow value into them, clear O_NONBLOCK on every fd
//!   it holds, then for `--secs` keep every sleeping/waiting flag of both
//!   rings set, write SDUs, and never read or drain anything, so the IPCP's
//!   (and irmd's) wake-ups meet full pipes.
//! * `corrupt` — garbage indices and lengths in the tx ring, then a wake-up.
//! * `fork` — a child of the process writes as a second producer: first
//!   through the library (which must refuse), then into the mapping by hand.
//! * `fork-drop` — not an attack: a child drops its inherited copy of the
//!   flow and exits; the parent's flow must still echo (`parent-flow-works`).
//!
//! For `corrupt` and `fork` the program then waits (bounded) for its flow to
//! be DOWN and prints `down after_ms=N`. Output: one `word key=value` line per
//! step. Exit 0 = the attack ran and (corrupt, fork) the flow went down;
//! 1 = a check failed; 2 = an ethflow call failed.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::process::exit;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use irm::proto::{FlowState, RingGeometry};
use irm::shm::layout;
use irm::{Error, Flow, Qos};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Freeze,
    Corrupt,
    Fork,
    /// Not an attack: a forked child drops its copy of the flow and exits
    /// normally; the parent's flow must keep working.
    ForkDrop,
}

#[derive(Parser)]
#[command(name = "hostileapp", about = "attacks its own ethflow flow")]
struct Cli {
    /// Name to allocate the flow to (an echo server).
    #[arg(short = 'n', long)]
    name: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// How long the freeze attack lasts.
    #[arg(long, default_value_t = 3)]
    secs: u64,
}

/// Bound on every wait of this program.
const STEP: Duration = Duration::from_secs(10);

fn fail(code: i32, what: &str) -> ! {
    println!("fail what={what}");
    exit(code)
}

/// The flow's memfd mapped again, as the attacker's own view.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len, "offset {off}");
        // SAFETY: a 4-aligned offset inside the library's live mapping of the
        // flow (the flow is never dropped before exit); every access is
        // atomic, as the library's and the IPCP's are.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }
}

/// Our open fds and what they are (`/memfd:...`, `pipe:[...]`, `socket:[...]`).
fn own_fds() -> Vec<(RawFd, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
            continue;
        };
        if let Ok(t) = std::fs::read_link(e.path()) {
            out.push((fd, t.to_string_lossy().into_owned()));
        }
    }
    out
}

fn fl_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL on an fd number; a closed one just fails.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn set_fl(fd: RawFd, flags: i32) {
    // SAFETY: F_SETFL on an fd number we hold.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
}

fn write_raw(fd: RawFd, bytes: &[u8]) -> isize {
    // SAFETY: writes from a live buffer.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) }
}

/// The library's own mapping of the flow, found in /proc/self/maps: it is
/// in our address space, so we can write it as the library does (the
/// library closed the memfd itself after mapping it).
fn map_flow_memory() -> Mapping {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some(line) = maps.lines().find(|l| l.contains("/memfd:ethflow-flow")) else {
        fail(1, "no-flow-mapping");
    };
    let range = line.split_whitespace().next().unwrap_or_default();
    let parse = |s: &str| usize::from_str_radix(s, 16).unwrap_or(0);
    let (start, end) = range
        .split_once('-')
        .map_or((0, 0), |(a, b)| (parse(a), parse(b)));
    if start == 0 || end <= start {
        fail(1, "bad-maps-line");
    }
    Mapping {
        base: start as *mut u8,
        len: end - start,
    }
}

fn geometry(m: &Mapping) -> RingGeometry {
    RingGeometry {
        slots: m.word(layout::SLOTS).load(Ordering::Relaxed),
        slot_size: m.word(layout::SLOT_SIZE).load(Ordering::Relaxed),
    }
}

/// Every wake-up fd we may write: fill a pipe end, and write an eventfd's
/// near-overflow value (0xfffffffffffffffe: the next `write(1)` on the
/// counter blocks, or fails when non-blocking) into pipes and eventfds.
fn fill_writable_pipes() -> usize {
    let mut filled = 0;
    for (fd, t) in own_fds() {
        if t == "anon_inode:[eventfd]" {
            set_fl(fd, fl_flags(fd) | libc::O_NONBLOCK);
            let _ = write_raw(fd, &0xffff_ffff_ffff_fffe_u64.to_ne_bytes());
            filled += 1;
            continue;
        }
        if !t.starts_with("pipe:") || fl_flags(fd) & libc::O_ACCMODE != libc::O_WRONLY {
            continue;
        }
        set_fl(fd, fl_flags(fd) | libc::O_NONBLOCK);
        let chunk = [0xffu8; 4096];
        let mut n = 0usize;
        while n < 1 << 20 && write_raw(fd, &chunk) > 0 {
            n += chunk.len();
        }
        let _ = write_raw(fd, &0xffff_ffff_ffff_fffe_u64.to_ne_bytes());
        filled += 1;
    }
    filled
}

/// Clear O_NONBLOCK on every fd we hold (pipes, sockets, the memfd...).
fn clear_nonblock_everywhere() -> usize {
    let mut n = 0;
    for (fd, _) in own_fds() {
        let f = fl_flags(fd);
        if f >= 0 {
            set_fl(fd, f & !libc::O_NONBLOCK);
            n += 1;
        }
    }
    n
}

fn arm_every_flag(m: &Mapping) {
    for ring in [layout::TX, layout::RX] {
        for w in [layout::CONSUMER_SLEEPING, layout::PRODUCER_WAITING] {
            m.word(ring + w).store(1, Ordering::Relaxed);
        }
    }
}

/// Garbage in the tx ring: a head far past the tail, impossible lengths.
fn corrupt_tx_ring(m: &Mapping, g: RingGeometry) {
    let tail = m.word(layout::TX + layout::TAIL).load(Ordering::Relaxed);
    for i in 0..g.slots as usize {
        let slot = layout::ring(g, true) + i * layout::slot_stride(g);
        m.word(slot + layout::SLOT_LEN)
            .store(u32::MAX - i as u32, Ordering::Relaxed);
    }
    m.word(layout::TX + layout::HEAD)
        .store(tail.wrapping_add(g.slots * 3 + 7), Ordering::Relaxed);
}

/// Wake the IPCP through our end of its wake pipe.
fn poke_ipcp() {
    for (fd, t) in own_fds() {
        if t.starts_with("pipe:") && fl_flags(fd) & libc::O_ACCMODE == libc::O_WRONLY {
            let f = fl_flags(fd);
            set_fl(fd, f | libc::O_NONBLOCK);
            let _ = write_raw(fd, &[1]);
        }
    }
}

/// Wait (bounded) for the flow to be DOWN; print when.
fn await_down(flow: &Flow, m: &Mapping, since: Instant) -> ! {
    let deadline = Instant::now() + STEP;
    let mut buf = [0u8; 64];
    flow.set_read_timeout(Some(Duration::from_millis(100)));
    while Instant::now() < deadline {
        let word = m.word(layout::STATE).load(Ordering::Relaxed);
        let read = flow.read(&mut buf);
        if word == 1 && matches!(read, Err(Error::FlowDown)) {
            println!("down after_ms={}", since.elapsed().as_millis());
            exit(0);
        }
    }
    println!(
        "not-down state={:?} word={}",
        flow.state(),
        m.word(layout::STATE).load(Ordering::Relaxed)
    );
    exit(1)
}

fn main() {
    let cli = Cli::parse();
    let flow = Flow::alloc(&cli.name, &Qos::default(), Some(STEP))
        .unwrap_or_else(|e| fail(2, &format!("alloc err={e}")));
    flow.set_read_timeout(Some(STEP));
    flow.write(b"hello").unwrap_or_else(|_| fail(2, "write"));
    let mut buf = [0u8; 64];
    match flow.read(&mut buf) {
        Ok(5) if &buf[..5] == b"hello" => {}
        other => fail(2, &format!("echo got={other:?}")),
    }
    let m = map_flow_memory();
    let g = geometry(&m);
    println!(
        "flow id={} slots={} slot_size={}",
        flow.flow_id(),
        g.slots,
        g.slot_size
    );
    match cli.mode {
        Mode::Freeze => {
            let pipes = fill_writable_pipes();
            let fds = clear_nonblock_everywhere();
            println!("freeze pipes_filled={pipes} fds_blocking={fds}");
            let end = Instant::now() + Duration::from_secs(cli.secs);
            let sdu = [0x55u8; 256];
            let mut written = 0u64;
            flow.set_nonblocking(true);
            while Instant::now() < end {
                arm_every_flag(&m);
                // The IPCP drains its wake pipe, so our (now blocking) wake-up
                // write waits at most for that; the ring fills, and echoes
                // come back into an rx ring nobody reads.
                if flow.write(&sdu).is_ok() {
                    written += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            println!("freeze-done written={written} state={:?}", flow.state());
            // Leave without deallocating: irmd cleans up when we exit.
            exit(0)
        }
        Mode::Corrupt => {
            let since = Instant::now();
            corrupt_tx_ring(&m, g);
            poke_ipcp();
            println!("corrupted");
            await_down(&flow, &m, since)
        }
        Mode::ForkDrop => {
            // SAFETY: the child only drops its copy of the flow and exits.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                fail(1, "fork");
            }
            if pid == 0 {
                drop(flow);
                exit(0);
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            std::thread::sleep(Duration::from_millis(300));
            flow.write(b"still mine")
                .unwrap_or_else(|e| fail(1, &format!("write err={e}")));
            match flow.read(&mut buf) {
                Ok(10) if &buf[..10] == b"still mine" => println!("parent-flow-works"),
                other => fail(1, &format!("parent-echo got={other:?}")),
            }
            exit(0)
        }
        Mode::Fork => {
            // SAFETY: the child only runs the code below and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                fail(1, "fork");
            }
            if pid == 0 {
                let refused = matches!(flow.write(b"from the child"), Err(Error::NotAlloc));
                // A second producer the library cannot stop: by hand.
                let head = m.word(layout::TX + layout::HEAD).load(Ordering::Relaxed);
                let slot = layout::ring(g, true)
                    + (head & (g.slots - 1)) as usize * layout::slot_stride(g);
                m.word(slot + layout::SLOT_LEN)
                    .store(g.slot_size + 1, Ordering::Relaxed);
                m.word(layout::TX + layout::HEAD)
                    .store(head.wrapping_add(1), Ordering::Relaxed);
                poke_ipcp();
                // SAFETY: leaves the child at once, without the parent's destructors.
                unsafe { libc::_exit(if refused { 0 } else { 3 }) };
            }
            let since = Instant::now();
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let refused = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            println!("child library_refused={refused}");
            if !refused {
                fail(1, "child-was-not-refused");
            }
            if flow.state() == FlowState::Allocated || flow.state() == FlowState::Down {
                await_down(&flow, &m, since)
            }
            fail(1, "flow-peer")
        }
    }
}
