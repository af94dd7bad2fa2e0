//! The send path's copy out of a flow's ring (`fill_batch`), against real
//! flow memory: SDUs land after the headers, SDUs that cannot go are dropped
//! without leaving holes, a corrupt ring is reported and stays so.

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

fn sdu(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 7 + k) as u8).collect()
}

#[test]
fn sdus_land_after_the_headers_and_ones_too_large_leave_no_gap() {
    let (app, ipcp) = flow();
    let lens = [10, 300, 0, 1500, 64, 301, 7];
    for (i, &n) in lens.iter().enumerate() {
        app.write(&sdu(i, n), None, true).unwrap();
    }
    let mut tx_bufs = bufs(300);
    let mut tx_lens = [0usize; BATCH];
    let mut count = 0;
    let fill = fill_batch(
        &ipcp,
        ROUTE,
        &mut tx_bufs,
        &mut tx_lens,
        &mut count,
        ME,
        0x88b5,
    );
    assert!(matches!(fill, Fill::Emptied));
    // 1500 and 301 do not fit frames for 300-byte SDUs: dropped.
    let sent: Vec<usize> = vec![0, 1, 2, 4, 6];
    assert_eq!(count, sent.len());
    for (k, &i) in sent.iter().enumerate() {
        let frame = &tx_bufs[k][..tx_lens[k]];
        let (eth, rest) = EthHeader::parse(frame).unwrap();
        assert_eq!(
            (eth.dst, eth.src, eth.ethertype),
            (ROUTE.unwrap().0, ME, 0x88b5)
        );
        let view = HeaderView::new_checked(rest).unwrap();
        assert_eq!((view.dst(), view.src()), (Eid(77), Eid(88)));
        assert_eq!(view.payload(), &sdu(i, lens[i])[..], "SDU {i}");
    }
    let c = ipcp.counters();
    assert_eq!((c.tx_sdus, c.tx_bytes), (5, 10 + 300 + 64 + 7));
}

#[test]
fn a_flow_without_a_route_drops_and_a_full_batch_says_so() {
    let (app, ipcp) = flow();
    for i in 0..3 {
        app.write(&sdu(i, 40), None, true).unwrap();
    }
    let (mut tx_bufs, mut tx_lens, mut count) = (bufs(100), [0usize; BATCH], 0);
    let fill = fill_batch(&ipcp, None, &mut tx_bufs, &mut tx_lens, &mut count, ME, 1);
    assert!(matches!(fill, Fill::Emptied));
    assert_eq!((count, ipcp.counters().tx_sdus), (0, 0));
    // More SDUs than a batch: the batch fills, the rest waits.
    for i in 0..BATCH + 3 {
        app.write(&sdu(i, 40), None, true).unwrap();
    }
    let fill = fill_batch(&ipcp, ROUTE, &mut tx_bufs, &mut tx_lens, &mut count, ME, 1);
    assert!(matches!(fill, Fill::BatchFull));
    assert_eq!(count, BATCH);
    let mut count = 0;
    let fill = fill_batch(&ipcp, ROUTE, &mut tx_bufs, &mut tx_lens, &mut count, ME, 1);
    assert!(matches!(fill, Fill::Emptied));
    assert_eq!(count, 3);
}

#[test]
fn a_corrupt_ring_is_reported_after_the_good_sdus_and_for_ever() {
    let (app, ipcp, fds) = flow_with_fds();
    app.write(b"good", None, true).unwrap();
    let (mut tx_bufs, mut tx_lens, mut count) = (bufs(100), [0usize; BATCH], 0);
    let fill = fill_batch(&ipcp, ROUTE, &mut tx_bufs, &mut tx_lens, &mut count, ME, 1);
    assert!(matches!(fill, Fill::Emptied) && count == 1);
    // The application writes an impossible head into its tx ring.
    app.write(b"more", None, true).unwrap();
    let mut count = 0;
    corrupt_head(&fds.memfd);
    for _ in 0..3 {
        let fill = fill_batch(&ipcp, ROUTE, &mut tx_bufs, &mut tx_lens, &mut count, ME, 1);
        assert!(matches!(&fill, Fill::Broken(irm::Error::Invalid(m)) if m.contains("corrupt")));
    }
    assert_eq!(count, 0);
    assert!(ipcp.is_broken() && !ipcp.arm_tx_wakeup());
}

/// What a hostile application does to its own mapping: an impossible tx head.
fn corrupt_head(memfd: &OwnedFd) {
    let at = (irm::shm::layout::TX + irm::shm::layout::HEAD) as u64;
    let word = 1_000_000u32.to_ne_bytes();
    let n = nix::sys::uio::pwrite(memfd, &word, at as i64).unwrap();
    assert_eq!(n, 4);
}
