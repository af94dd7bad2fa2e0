//! FlowSet (event sets) with real `Flow`s: a small in-process stand-in for
//! irmd answers this process's control connection (hello, flow alloc, flow
//! dealloc) and keeps the IPCP end of every flow, so a test plays the IPCP:
//! it pushes SDUs and sets states, and watches what the set reports.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use irm::ctrl::{CtrlListener, CtrlSocket};
use irm::proto::{AppRequest, ClientHello, Envelope, FlowState, Reply, RingGeometry};
use irm::shm::{create, IpcpEnd, ShmMap};
use irm::{Error, EventKind, Flow, FlowEvent, FlowSet, Interest, Qos};

/// Small rings so the stress tests keep filling them.
const GEOM: RingGeometry = RingGeometry {
    slots: 16,
    slot_size: 64,
};
/// The promptness the issue asks for state changes.
const PROMPT: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Stand-in irmd
// ---------------------------------------------------------------------------

#[derive(Default)]
struct FakeIrmd {
    next_id: AtomicU32,
    ipcp_ends: Mutex<HashMap<u32, Arc<IpcpEnd>>>,
    deallocated: Mutex<HashSet<u32>>,
}

impl FakeIrmd {
    fn serve(&self, sock: CtrlSocket) {
        // The hello comes first, then only an application's requests.
        match sock.recv_raw() {
            Ok(Some(r)) if irm::proto::decode::<ClientHello>(&r.bytes).is_ok() => {
                reply(&sock, 0, Reply::Ok, &[])
            }
            _ => return,
        }
        while let Ok(Some(r)) = sock.recv::<AppRequest>() {
            let id = r.env.id;
            match r.env.msg {
                AppRequest::FlowAlloc { name, qos, .. } => {
                    let flow_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                    let fds = create(GEOM).unwrap();
                    let [_, ipcp_r, rx_w, tx_w] = fds.for_ipcp().map(|f| f.try_clone().unwrap());
                    let ipcp = IpcpEnd::new(
                        ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(),
                        ipcp_r,
                        rx_w,
                        tx_w,
                    );
                    self.ipcp_ends
                        .lock()
                        .unwrap()
                        .insert(flow_id, Arc::new(ipcp));
                    let msg = Reply::FlowReady {
                        flow_id,
                        name,
                        qos,
                        max_sdu: GEOM.slot_size,
                        geometry: GEOM,
                        security: None,
                    };
                    let raw = fds.for_app().map(|f| f.as_raw_fd());
                    reply(&sock, id, msg, &raw);
                }
                AppRequest::FlowDealloc { flow_id } => {
                    self.ipcp_ends.lock().unwrap().remove(&flow_id);
                    self.deallocated.lock().unwrap().insert(flow_id);
                    reply(&sock, id, Reply::Ok, &[]);
                }
                other => reply(
                    &sock,
                    id,
                    Reply::Err(Error::Invalid(format!("stand-in irmd: {other:?}"))),
                    &[],
                ),
            }
        }
    }

    fn was_deallocated(&self, flow_id: u32) -> bool {
        self.deallocated.lock().unwrap().contains(&flow_id)
    }
}

fn reply(sock: &CtrlSocket, id: u64, msg: Reply, fds: &[i32]) {
    sock.send(&Envelope { id, msg }, fds).unwrap();
}

/// The process-wide stand-in (the library keeps one irmd connection per process).
fn irmd() -> &'static FakeIrmd {
    static IRMD: OnceLock<&'static FakeIrmd> = OnceLock::new();
    IRMD.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("ethflow-fqueue-test-{}.sock", std::process::id()));
        let path = path.to_str().unwrap().to_string();
        let listener = CtrlListener::bind(&path).unwrap();
        std::env::set_var("IRM_SOCKET", &path);
        let irmd: &'static FakeIrmd = Box::leak(Box::default());
        thread::spawn(move || {
            while let Ok(sock) = listener.accept() {
                thread::spawn(move || irmd.serve(sock));
            }
        });
        // Connect now, then unlink the path: nothing is left in /tmp.
        irm::client::global().unwrap();
        let _ = std::fs::remove_file(&path);
        irmd
    })
}

/// A flow as the application has it, and the IPCP end the test drives.
struct TestFlow {
    flow: Flow,
    ipcp: Arc<IpcpEnd>,
}

fn open(n: usize) -> Vec<TestFlow> {
    let irmd = irmd();
    (0..n)
        .map(|_| {
            let flow =
                Flow::alloc("fqueue-test", &Qos::default(), Some(Duration::from_secs(5))).unwrap();
            flow.set_nonblocking(true);
            let ipcp = irmd.ipcp_ends.lock().unwrap()[&flow.flow_id()].clone();
            TestFlow { flow, ipcp }
        })
        .collect()
}

fn ev(flow_id: u32, kind: EventKind) -> FlowEvent {
    FlowEvent { flow_id, kind }
}

/// Read until Again; returns the SDUs.
fn drain(flow: &Flow) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match flow.read(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(Error::Again) => return out,
            Err(e) => panic!("flow {}: {e}", flow.flow_id()),
        }
    }
}

/// Push, retrying while the ring is full (the IPCP would drop; tests must
/// not). False if the test gave up (`stop`) meanwhile.
fn push(ipcp: &IpcpEnd, sdu: &[u8], deadline: Instant, stop: &AtomicBool) -> bool {
    while !ipcp.push_rx(sdu).unwrap() {
        assert!(
            Instant::now() < deadline,
            "rx ring stayed full: reader stuck"
        );
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// Raises `stop` if the thread holding it panics, so the others give up
/// at once instead of at their deadlines.
struct StopOnPanic(Arc<AtomicBool>);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// xorshift64*: reproducible pauses and choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    /// Mostly nothing; sometimes a yield or a sleep of some µs.
    fn pause(&mut self) {
        match self.below(512) {
            0..=3 => thread::sleep(Duration::from_micros(self.below(200))),
            4..=40 => thread::yield_now(),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn pkt_is_reported_for_exactly_the_flows_written_to() {
    let flows = open(100);
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        set.add(&f.flow).unwrap();
    }
    assert_eq!(set.len(), 100);
    assert_eq!(
        set.wait(Some(Duration::ZERO)).unwrap(),
        [],
        "idle flows reported"
    );

    // Round 1: SDUs are there before the set looks. Round 2: they arrive from
    // another thread while the set sleeps.
    for round in 0..2u64 {
        let mut rng = Rng(0x5EED + round);
        let chosen: Vec<usize> = (0..100).filter(|_| rng.below(5) == 0).collect();
        let expect: HashSet<u32> = chosen.iter().map(|&i| flows[i].flow.flow_id()).collect();
        let counts: Vec<(Arc<IpcpEnd>, u64)> = chosen
            .iter()
            .map(|&i| (flows[i].ipcp.clone(), 1 + rng.below(4)))
            .collect();
        let total: u64 = counts.iter().map(|c| c.1).sum();
        let writer = thread::spawn(move || {
            if round == 1 {
                thread::sleep(Duration::from_millis(30));
            }
            for (ipcp, n) in counts {
                for k in 0..n {
                    assert!(ipcp.push_rx(&k.to_le_bytes()).unwrap());
                }
            }
        });
        let mut got = HashSet::new();
        let mut read = 0u64;
        let deadline = Instant::now() + Duration::from_secs(5);
        while read < total {
            assert!(
                Instant::now() < deadline,
                "round {round}: {read} of {total} SDUs"
            );
            for e in set.wait(Some(Duration::from_secs(1))).unwrap() {
                assert_eq!(e.kind, EventKind::Pkt, "round {round}: {e:?}");
                assert!(
                    expect.contains(&e.flow_id),
                    "round {round}: PKT for an idle flow: {e:?}"
                );
                got.insert(e.flow_id);
                let f = flows
                    .iter()
                    .find(|f| f.flow.flow_id() == e.flow_id)
                    .unwrap();
                read += drain(&f.flow).len() as u64;
            }
        }
        writer.join().unwrap();
        assert_eq!(got, expect, "round {round}");
        assert_eq!(
            set.wait(Some(Duration::from_millis(30))).unwrap(),
            [],
            "round {round}: events after every flow was drained"
        );
    }
}

#[test]
fn pkt_is_level_triggered() {
    let f = &open(1)[0];
    let id = f.flow.flow_id();
    let mut set = FlowSet::new().unwrap();
    set.add(&f.flow).unwrap();
    for i in 0..3u8 {
        f.ipcp.push_rx(&[i]).unwrap();
    }
    let mut buf = [0u8; 8];
    for i in 0..3u8 {
        // Reported again while anything is left, one read per event.
        assert_eq!(
            set.wait(Some(Duration::ZERO)).unwrap(),
            [ev(id, EventKind::Pkt)]
        );
        assert_eq!(f.flow.read(&mut buf), Ok(1));
        assert_eq!(buf[0], i);
    }
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
    assert_eq!(f.flow.read(&mut buf), Err(Error::Again));
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
}

#[test]
fn state_changes_are_reported_promptly_from_a_sleeping_set() {
    let flows = open(10);
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        set.add(&f.flow).unwrap();
    }
    let (tx, rx) = mpsc::channel::<(FlowEvent, Instant)>();
    let watcher = thread::spawn(move || {
        let mut events = Vec::new();
        loop {
            events.clear();
            set.wait_into(&mut events, Some(Duration::from_secs(10)))
                .unwrap();
            if events.is_empty() {
                return; // the test is over (or stuck: the main thread notices)
            }
            for e in &events {
                if tx.send((*e, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    let steps = [
        (3, FlowState::Peer, EventKind::Peer),
        (7, FlowState::Peer, EventKind::Peer),
        (3, FlowState::Allocated, EventKind::Up),
        (3, FlowState::Down, EventKind::Down),
        (7, FlowState::Down, EventKind::Down),
        (0, FlowState::Down, EventKind::Down),
        (0, FlowState::Allocated, EventKind::Up),
    ];
    let mut latencies = Vec::new();
    for (i, state, kind) in steps {
        // Let the watcher fall asleep first.
        thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        flows[i].ipcp.set_state(state);
        let (e, at) = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("no event within 2 s");
        assert_eq!(
            e,
            ev(flows[i].flow.flow_id(), kind),
            "after flow {i} → {state:?}"
        );
        let latency = at - t0;
        assert!(latency < PROMPT, "{kind:?} took {latency:?}");
        latencies.push(latency);
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "more events than state changes"
    );
    drop(rx);
    // Wake the watcher so it sees the closed channel.
    flows[1].ipcp.set_state(FlowState::Peer);
    watcher.join().unwrap();
    eprintln!("state event latencies: {latencies:?}");
}

#[test]
fn a_flow_added_while_down_or_peer_reports_it_at_once() {
    let flows = open(3);
    flows[0].ipcp.set_state(FlowState::Down);
    flows[1].ipcp.set_state(FlowState::Peer);
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        set.add(&f.flow).unwrap();
    }
    let mut got = set.wait(Some(Duration::ZERO)).unwrap();
    got.sort_by_key(|e| e.flow_id);
    assert_eq!(
        got,
        [
            ev(flows[0].flow.flow_id(), EventKind::Down),
            ev(flows[1].flow.flow_id(), EventKind::Peer)
        ]
    );
    assert_eq!(
        set.wait(Some(Duration::ZERO)).unwrap(),
        [],
        "reported twice"
    );
}

#[test]
fn down_with_sdus_left_reports_down_then_pkt_and_reads_deliver_them_first() {
    let f = &open(1)[0];
    let id = f.flow.flow_id();
    let mut set = FlowSet::new().unwrap();
    set.add(&f.flow).unwrap();
    f.ipcp.push_rx(b"last words").unwrap();
    f.ipcp.set_state(FlowState::Down);
    assert_eq!(
        set.wait(Some(Duration::from_secs(1))).unwrap(),
        [ev(id, EventKind::Down), ev(id, EventKind::Pkt)]
    );
    let mut buf = [0u8; 64];
    assert_eq!(f.flow.read(&mut buf), Ok(10));
    assert_eq!(f.flow.read(&mut buf), Err(Error::FlowDown));
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
}

#[test]
fn a_wakeup_the_reader_consumes_still_reaches_the_set() {
    let f = &open(1)[0];
    let id = f.flow.flow_id();
    let mut set = FlowSet::new().unwrap();
    set.add(&f.flow).unwrap();
    f.ipcp.set_state(FlowState::Peer);
    assert_eq!(
        set.wait(Some(Duration::from_secs(1))).unwrap(),
        [ev(id, EventKind::Peer)]
    );
    // The peer comes back, and the application reads before the set looks:
    // its empty read drains the eventfd that announced UP.
    f.ipcp.set_state(FlowState::Allocated);
    let mut buf = [0u8; 8];
    assert_eq!(f.flow.read(&mut buf), Err(Error::Again));
    assert_eq!(
        set.wait(Some(Duration::from_secs(1))).unwrap(),
        [ev(id, EventKind::Up)]
    );
}

#[test]
fn dealloc_is_reported_once_and_remove_reports_nothing() {
    let mut flows = open(3);
    let ids: Vec<u32> = flows.iter().map(|f| f.flow.flow_id()).collect();
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        set.add(&f.flow).unwrap();
    }
    // Dropping a flow while the set sleeps in another thread.
    let doomed = flows.remove(0);
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let got = set.wait(Some(Duration::from_secs(5))).unwrap();
        tx.send(Instant::now()).unwrap();
        (set, got)
    });
    thread::sleep(Duration::from_millis(30));
    let t0 = Instant::now();
    drop(doomed.flow);
    let at = rx.recv_timeout(Duration::from_secs(6)).unwrap();
    let (mut set, got) = waiter.join().unwrap();
    assert_eq!(got, [ev(ids[0], EventKind::Dealloc)]);
    assert!(
        at.saturating_duration_since(t0) < PROMPT,
        "DEALLOC took {:?}",
        at - t0
    );
    assert!(irmd().was_deallocated(ids[0]));
    assert!(!set.contains(ids[0]));
    assert_eq!(set.len(), 2);

    // Flow::dealloc while the set is not waiting: reported by the next wait.
    let second = flows.remove(0);
    second.flow.dealloc().unwrap();
    assert_eq!(
        set.wait(Some(Duration::ZERO)).unwrap(),
        [ev(ids[1], EventKind::Dealloc)]
    );
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);

    // remove: no event, not even for what happens to the flow afterwards,
    // and the flow may join another set.
    let third = &flows[0];
    assert!(set.remove(ids[2]));
    assert!(!set.remove(ids[2]));
    assert!(set.is_empty());
    third.ipcp.push_rx(b"x").unwrap();
    third.ipcp.set_state(FlowState::Peer);
    assert_eq!(set.wait(Some(Duration::from_millis(30))).unwrap(), []);
    let mut other = FlowSet::new().unwrap();
    other.add(&third.flow).unwrap();
    assert_eq!(
        other.wait(Some(Duration::ZERO)).unwrap(),
        [ev(ids[2], EventKind::Peer), ev(ids[2], EventKind::Pkt)]
    );
}

#[test]
fn a_flow_is_in_one_set_at_a_time() {
    let f = &open(1)[0];
    let mut a = FlowSet::new().unwrap();
    let mut b = FlowSet::new().unwrap();
    a.add(&f.flow).unwrap();
    assert!(matches!(a.add(&f.flow), Err(Error::Invalid(_))));
    assert!(matches!(b.add(&f.flow), Err(Error::Invalid(_))));
    // Dropping a set lets go of its flows.
    drop(a);
    b.add(&f.flow).unwrap();
    assert!(b.contains(f.flow.flow_id()));
}

#[test]
fn timeout_returns_empty() {
    let mut empty = FlowSet::new().unwrap();
    let t0 = Instant::now();
    assert_eq!(empty.wait(Some(Duration::from_millis(50))).unwrap(), []);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(1),
        "{waited:?}"
    );

    let flows = open(5);
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        set.add(&f.flow).unwrap();
    }
    let t0 = Instant::now();
    assert_eq!(set.wait(Some(Duration::from_millis(50))).unwrap(), []);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    let t0 = Instant::now();
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), []);
    assert!(t0.elapsed() < Duration::from_millis(50));
}

/// Many writer threads, one set thread reading everything: every SDU must
/// be announced. The set thread sometimes reads one SDU per event (relying on
/// level-triggered PKT) and sometimes drains the flow.
#[test]
fn no_lost_wakeups_with_many_writers() {
    const FLOWS: usize = 32;
    const WRITERS: usize = 8;
    let per_flow: u64 = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    let flows = open(FLOWS);
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        set.add(&f.flow).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_writers = StopOnPanic(stop.clone());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mine: Vec<Arc<IpcpEnd>> = flows
                .iter()
                .skip(w)
                .step_by(WRITERS)
                .map(|f| f.ipcp.clone())
                .collect();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + w as u64);
                for seq in 0..per_flow {
                    for ipcp in &mine {
                        if !push(ipcp, &seq.to_le_bytes(), deadline, &stop) {
                            return;
                        }
                        rng.pause();
                    }
                }
            })
        })
        .collect();
    let by_id: HashMap<u32, usize> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| (f.flow.flow_id(), i))
        .collect();
    let mut next = vec![0u64; FLOWS];
    let total = per_flow * FLOWS as u64;
    let mut received = 0u64;
    let mut rng = Rng(99);
    let mut events = Vec::new();
    let mut buf = [0u8; 64];
    while received < total {
        events.clear();
        set.wait_into(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            !events.is_empty(),
            "lost wake-up: nothing announced for 5 s with {} SDUs outstanding (next per flow: {next:?})",
            total - received
        );
        for e in &events {
            assert_eq!(e.kind, EventKind::Pkt);
            let i = by_id[&e.flow_id];
            let reads = if rng.below(2) == 0 { 1 } else { usize::MAX };
            for _ in 0..reads {
                match flows[i].flow.read(&mut buf) {
                    Ok(8) => {
                        assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next[i]);
                        next[i] += 1;
                        received += 1;
                    }
                    Err(Error::Again) => break,
                    other => panic!("flow {i}: {other:?}"),
                }
            }
        }
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(set.wait(Some(Duration::from_millis(20))).unwrap(), []);
}

/// A liveness thread and blocking readers share the flows: the set must not
/// eat a reader's wake-up (a reader would hang), readers must not eat the
/// set's (DOWN would go unreported), and the set reports no PKT.
#[test]
fn a_liveness_set_and_blocking_readers_share_flows() {
    const FLOWS: usize = 8;
    let per_flow: u64 = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    let flows: Vec<Arc<TestFlow>> = open(FLOWS).into_iter().map(Arc::new).collect();
    let mut set = FlowSet::new().unwrap();
    for f in &flows {
        f.flow.set_nonblocking(false);
        f.flow.set_read_timeout(Some(Duration::from_secs(10)));
        set.add_with(&f.flow, Interest::Liveness).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_all = StopOnPanic(stop.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let wakeups = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<(FlowEvent, Instant)>();
    let monitor = {
        let wakeups = wakeups.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let _stop = StopOnPanic(stop.clone());
            let mut downs = 0;
            while downs < FLOWS {
                let events = set.wait(Some(Duration::from_secs(1))).unwrap();
                if events.is_empty() {
                    assert!(Instant::now() < deadline, "monitor: no DOWN in time");
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                wakeups.fetch_add(1, Ordering::Relaxed);
                for e in events {
                    downs += usize::from(e.kind == EventKind::Down);
                    tx.send((e, Instant::now())).unwrap();
                }
            }
        })
    };
    let readers: Vec<_> = flows
        .iter()
        .map(|f| {
            let f = f.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let _stop = StopOnPanic(stop);
                let mut buf = [0u8; 64];
                for seq in 0..per_flow {
                    match f.flow.read(&mut buf) {
                        Ok(8) => assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), seq),
                        other => panic!("reader stuck or wrong at SDU {seq}: {other:?}"),
                    }
                }
                // Then the flow goes down: the blocked read must end with it.
                assert_eq!(f.flow.read(&mut buf), Err(Error::FlowDown));
            })
        })
        .collect();
    let writers: Vec<_> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ipcp = f.ipcp.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut rng = Rng(0xABCD + i as u64);
                for seq in 0..per_flow {
                    if !push(&ipcp, &seq.to_le_bytes(), deadline, &stop) {
                        return;
                    }
                    rng.pause();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let mut t_down = HashMap::new();
    for f in &flows {
        thread::sleep(Duration::from_millis(5));
        t_down.insert(f.flow.flow_id(), Instant::now());
        f.ipcp.set_state(FlowState::Down);
    }
    readers.into_iter().for_each(|r| r.join().unwrap());
    monitor.join().unwrap();
    let events: Vec<(FlowEvent, Instant)> = rx.try_iter().collect();
    assert_eq!(events.len(), FLOWS, "{events:?}");
    for (e, at) in events {
        assert_eq!(e.kind, EventKind::Down);
        let latency = at.saturating_duration_since(t_down[&e.flow_id]);
        assert!(
            latency < PROMPT,
            "DOWN of flow {} took {latency:?}",
            e.flow_id
        );
    }
    assert!(wakeups.load(Ordering::Relaxed) <= FLOWS as u64);
}
