//! The send path's copy out of a flow's ring (`fill_batch`), against real
//! flow memory: SDUs land after the headers, SDUs that cannot go are dropped
//! without leaving holes, a corrupt ring is reported and stays so.

use super::frames::{fill_batch, send_built, Fill, TxCtx};
use super::*;
use crate::wire::Eid;
use irm::shm::{create, AppEnd};
use std::os::fd::OwnedFd;

const GEOM: RingGeometry = RingGeometry {
    slots: 256,
    slot_size: 1500,
};
const AT: usize = ETH_HEADER_LEN + HEADER_LEN;
const ROUTE: Option<(Mac, Eid, Eid)> = Some(([2, 0, 0, 0, 0, 2], Eid(77), Eid(88)));
const ME: Mac = [2, 0, 0, 0, 0, 1];

fn flow() -> (AppEnd, IpcpEnd) {
    let (app, ipcp, _) = flow_with_fds();
    (app, ipcp)
}

fn flow_with_fds() -> (AppEnd, IpcpEnd, irm::shm::FlowFds) {
    let fds = create(GEOM).unwrap();
    let dup = |f: &OwnedFd| f.try_clone().unwrap();
    let [_, rx, tx, w] = fds.for_app().map(dup);
    let app = AppEnd::new(ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(), rx, tx, w);
    let [_, r, rx_w, tx_w] = fds.for_ipcp().map(dup);
    let ipcp = IpcpEnd::new(ShmMap::map(fds.memfd.as_fd(), GEOM).unwrap(), r, rx_w, tx_w);
    (app, ipcp, fds)
}

/// Frame buffers with room for SDUs of up to `max_sdu` bytes.
fn bufs(max_sdu: usize) -> Vec<Vec<u8>> {
    (0..BATCH).map(|_| vec![0u8; AT + max_sdu]).collect()
}

/// A send batch being built: frame buffers, their lengths, how many are built.
struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
    count: usize,
}

impl Batch {
    /// An empty batch with room for SDUs of up to `max_sdu` bytes.
    fn new(max_sdu: usize) -> Batch {
        Batch {
            bufs: bufs(max_sdu),
            lens: [0; BATCH],
            count: 0,
        }
    }

    /// `fill_batch` of flow `id` into this batch.
    fn fill(&mut self, id: u32, f: &FlowIo, route: Option<(Mac, Eid, Eid)>, cx: TxCtx) -> Fill {
        fill_batch(
            id,
            f,
            route,
            &mut self.bufs,
            &mut self.lens,
            &mut self.count,
            cx,
        )
    }

    /// Built frame `k`.
    fn frame(&self, k: usize) -> &[u8] {
        &self.bufs[k][..self.lens[k]]
    }
}

/// A send batch for our MAC, with no MTU limit below the buffers'.
fn cx(ethertype: u16) -> TxCtx {
    TxCtx {
        my_mac: ME,
        ethertype,
        max_sdu: 9000,
        now: Duration::ZERO,
        arm: true,
    }
}

fn sdu(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 7 + k) as u8).collect()
}

#[test]
fn sdus_land_after_the_headers_and_ones_too_large_leave_no_gap() {
    let (app, ipcp) = flow();
    let ipcp = FlowIo::new(ipcp, false);
    let lens = [10, 300, 0, 1500, 64, 301, 7];
    for (i, &n) in lens.iter().enumerate() {
        app.write(&sdu(i, n), None, true).unwrap();
    }
    let mut batch = Batch::new(300);
    let fill = batch.fill(1, &ipcp, ROUTE, cx(0x88b5));
    assert!(matches!(fill, Fill::Emptied));
    // 1500 and 301 do not fit frames for 300-byte SDUs: dropped.
    let sent: Vec<usize> = vec![0, 1, 2, 4, 6];
    assert_eq!(batch.count, sent.len());
    for (k, &i) in sent.iter().enumerate() {
        let frame = batch.frame(k);
        let (eth, rest) = EthHeader::parse(frame).unwrap();
        assert_eq!(
            (eth.dst, eth.src, eth.ethertype),
            (ROUTE.unwrap().0, ME, 0x88b5)
        );
        let view = HeaderView::new_checked(rest).unwrap();
        assert_eq!((view.dst(), view.src()), (Eid(77), Eid(88)));
        assert_eq!(view.payload(), &sdu(i, lens[i])[..], "SDU {i}");
    }
    let c = ipcp.end.counters();
    assert_eq!((c.tx_sdus, c.tx_bytes), (5, 10 + 300 + 64 + 7));
}

#[test]
fn a_flow_without_a_route_drops_and_a_full_batch_says_so() {
    let (app, ipcp) = flow();
    let ipcp = FlowIo::new(ipcp, false);
    for i in 0..3 {
        app.write(&sdu(i, 40), None, true).unwrap();
    }
    let mut batch = Batch::new(100);
    let fill = batch.fill(1, &ipcp, None, cx(1));
    assert!(matches!(fill, Fill::Emptied));
    assert_eq!((batch.count, ipcp.end.counters().tx_sdus), (0, 0));
    // More SDUs than a batch: the batch fills, the rest waits.
    for i in 0..BATCH + 3 {
        app.write(&sdu(i, 40), None, true).unwrap();
    }
    let fill = batch.fill(1, &ipcp, ROUTE, cx(1));
    assert!(matches!(fill, Fill::BatchFull));
    assert_eq!(batch.count, BATCH);
    batch.count = 0;
    let fill = batch.fill(1, &ipcp, ROUTE, cx(1));
    assert!(matches!(fill, Fill::Emptied));
    assert_eq!(batch.count, 3);
}

#[test]
fn a_corrupt_ring_is_reported_after_the_good_sdus_and_for_ever() {
    let (app, ipcp, fds) = flow_with_fds();
    let ipcp = FlowIo::new(ipcp, false);
    app.write(b"good", None, true).unwrap();
    let mut batch = Batch::new(100);
    let fill = batch.fill(1, &ipcp, ROUTE, cx(1));
    assert!(matches!(fill, Fill::Emptied) && batch.count == 1);
    // The application writes an impossible head into its tx ring.
    app.write(b"more", None, true).unwrap();
    batch.count = 0;
    corrupt_head(&fds.memfd);
    for _ in 0..3 {
        let fill = batch.fill(1, &ipcp, ROUTE, cx(1));
        assert!(matches!(&fill, Fill::Broken(irm::Error::Invalid(m)) if m.contains("corrupt")));
    }
    assert_eq!(batch.count, 0);
    assert!(ipcp.end.is_broken() && !ipcp.end.arm_tx_wakeup());
}

/// What a hostile application does to its own mapping: an impossible tx head.
fn corrupt_head(memfd: &OwnedFd) {
    let at = (irm::shm::layout::TX + irm::shm::layout::HEAD) as u64;
    let word = 1_000_000u32.to_ne_bytes();
    let n = nix::sys::uio::pwrite(memfd, &word, at as i64).unwrap();
    assert_eq!(n, 4);
}

/// A backend that sends like the kernel's sendmmsg: frames in order, until
/// one is longer than the link's MTU (refused: the call ends there, with an
/// error if it was the first).
struct KernelLike {
    mtu: usize,
    sent: Vec<Vec<u8>>,
    fd: std::fs::File,
}

impl FrameIo for KernelLike {
    fn name(&self) -> String {
        "kernel-like".into()
    }
    fn rx_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn recv_batch(&mut self, _: &mut [Vec<u8>], _: &mut [usize]) -> std::io::Result<usize> {
        Ok(0)
    }
    fn send_batch(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        for (i, f) in frames.iter().enumerate() {
            if f.len() > ETH_HEADER_LEN + self.mtu {
                return match i {
                    0 => Err(std::io::Error::from_raw_os_error(libc::EMSGSIZE)),
                    _ => Ok(i),
                };
            }
            self.sent.push(f.to_vec());
        }
        Ok(frames.len())
    }
}

/// Issue 11's defect: the MTU shrank from 1500 to 1000 while two flows ran
/// (their rings still take 1480-byte SDUs). One flow's SDU between the new
/// and the old limit must not take the rest of the batch with it: it is
/// dropped and counted on its flow, and every other frame goes out.
#[test]
fn after_the_mtu_shrank_an_oversize_sdu_is_counted_and_the_batch_still_goes() {
    let (app_a, a) = flow();
    let (app_b, b) = flow();
    let (a, b) = (FlowIo::new(a, true), FlowIo::new(b, true));
    for (app, lens) in [(&app_a, [100, 1200, 200]), (&app_b, [300, 980, 40])] {
        for (i, n) in lens.into_iter().enumerate() {
            app.write(&sdu(i, n), None, true).unwrap();
        }
    }
    let max_sdu = 1000 - HEADER_LEN;
    let cx = TxCtx {
        max_sdu,
        ..cx(0x88b5)
    };
    // Buffers sized for the old MTU, as before the change was seen.
    let mut batch = Batch::new(1500);
    for (id, f) in [(1, &a), (2, &b)] {
        let fill = batch.fill(id, f, ROUTE, cx);
        assert!(matches!(fill, Fill::Emptied));
    }
    let mut io = KernelLike {
        mtu: 1000,
        sent: Vec::new(),
        fd: std::fs::File::open("/dev/null").unwrap(),
    };
    let mut counters = Counters::default();
    send_built(
        &mut io,
        &batch.bufs,
        &batch.lens[..batch.count],
        &mut counters,
    );
    let payloads: Vec<usize> = io.sent.iter().map(|f| f.len() - AT).collect();
    assert_eq!(payloads, [100, 200, 300, 980, 40]);
    assert_eq!(counters.tx_frames, 5);
    assert_eq!(a.tx_oversize.get(), 1);
    assert_eq!(b.tx_oversize.get(), 0);
    assert_eq!(a.end.counters().tx_sdus, 2);
    assert_eq!(b.end.counters().tx_sdus, 3);
}

/// Three writers that keep their rings full: one send batch each in turn.
/// (Before, every batch started at the head of the list, so the first flow
/// took every batch while the others waited: Jain's index 0.16 at 16 flows
/// in the benchmark.)
#[test]
fn flows_with_full_rings_take_the_send_batches_in_turn() {
    use super::frames::fill_round;
    let ends: Vec<(AppEnd, IpcpEnd)> = (0..3).map(|_| flow()).collect();
    let mut flows = HashMap::new();
    let mut apps = Vec::new();
    for (id, (app, ipcp)) in ends.into_iter().enumerate() {
        // More than two batches' worth each.
        for i in 0..(2 * BATCH + 5) {
            app.write(&sdu(i, 32), None, true).unwrap();
        }
        flows.insert(id as u32, FlowIo::new(ipcp, true));
        apps.push(app);
    }
    let mut ids: Vec<u32> = vec![0, 1, 2];
    let (mut tx_bufs, mut tx_lens, mut corrupt) = (bufs(64), [0usize; BATCH], Vec::new());
    let mut served = Vec::new();
    for _ in 0..3 {
        let n = fill_round(
            &mut |_| ROUTE,
            &mut flows,
            &mut ids,
            &mut corrupt,
            &mut tx_bufs,
            &mut tx_lens,
            cx(0x88b5),
        );
        assert_eq!(n, BATCH);
        let sent: Vec<u64> = (0..3u32)
            .map(|id| flows[&id].end.counters().tx_sdus)
            .collect();
        served.push(sent);
    }
    // After three batches every flow has sent exactly one batch.
    assert_eq!(served[2], vec![BATCH as u64; 3], "{served:?}");
    assert!(corrupt.is_empty());
}
