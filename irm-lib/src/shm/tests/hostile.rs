//! A hostile application: bogus indices and lengths, scribbles anywhere in
//! the mapping (proptests and a concurrent scribbler), and what stays broken.
#![allow(unsafe_code)]

use super::*;

#[test]
fn bogus_tx_head_is_an_error_not_a_crash() {
    for bogus in [9u32, 100, u32::MAX, u32::MAX - 7] {
        let f = flow(geom(8, 32));
        f.app.map().header().tx.head.store(bogus, Ordering::Relaxed);
        assert!(
            matches!(try_pop(&f.ipcp), Err(Error::Invalid(m)) if m.contains("tx ring corrupt"))
        );
        assert!(f.ipcp.is_broken());
        let mut bufs = [[0u8; 32]; 4];
        assert!(f.ipcp.pop_tx_batch_into(&mut bufs, 0, &mut [0; 4]).is_err());
        assert!(
            !f.ipcp.arm_tx_wakeup(),
            "corruption must be seen by the next pop, not slept on"
        );
    }
    // Exactly `slots` ahead is a full ring, not corruption.
    let f = flow(geom(8, 32));
    f.app.map().header().tx.head.store(8, Ordering::Relaxed);
    assert_eq!(f.ipcp.pop_tx_into(&mut [0; 32]).unwrap(), Some(0));
    assert!(!f.ipcp.is_broken());
}

#[test]
fn a_corrupt_ring_stays_broken_and_earlier_sdus_still_arrive() {
    let f = flow(geom(8, 32));
    f.app.write(b"one", None, false).unwrap();
    f.app.write(b"two", None, false).unwrap();
    // The second slot's length is bogus: the batch returns the first SDU...
    let tail = f.ipcp.tx_tail();
    f.app
        .map()
        .slot_len(Dir::Tx, tail.wrapping_add(1))
        .store(999, Ordering::Relaxed);
    let mut bufs = [[0u8; 32]; 4];
    let mut lens = [0usize; 4];
    assert_eq!(f.ipcp.pop_tx_batch_into(&mut bufs, 0, &mut lens), Ok(1));
    assert_eq!(&bufs[0][..lens[0]], b"one");
    // ...and every later call reports the corruption, even once repaired.
    f.app
        .map()
        .slot_len(Dir::Tx, tail.wrapping_add(1))
        .store(3, Ordering::Relaxed);
    for _ in 0..3 {
        assert!(matches!(try_pop(&f.ipcp), Err(Error::Invalid(m)) if m.contains("length")));
    }
    // The receive side of a broken flow is refused as well.
    assert!(f.ipcp.push_rx(b"x").is_err());
}

#[test]
fn bogus_tx_lengths_are_errors() {
    for bad in [33u32, 64, u32::MAX] {
        let f = flow(geom(4, 32));
        f.app.write(b"ok", None, false).unwrap();
        let tail = f.ipcp.tx_tail();
        f.app
            .map()
            .slot_len(Dir::Tx, tail)
            .store(bad, Ordering::Relaxed);
        assert!(matches!(try_pop(&f.ipcp), Err(Error::Invalid(m)) if m.contains("length")));
    }
    // The largest legal length is fine.
    let f = flow(geom(4, 32));
    f.app.write(b"ok", None, false).unwrap();
    let tail = f.ipcp.tx_tail();
    f.app
        .map()
        .slot_len(Dir::Tx, tail)
        .store(32, Ordering::Relaxed);
    assert_eq!(f.ipcp.pop_tx_into(&mut [0; 32]).unwrap(), Some(32));
}

#[test]
fn pop_into_a_short_buffer_reports_the_full_length() {
    let f = flow(geom(4, 32));
    f.app.write(b"0123456789", None, false).unwrap();
    f.app.write(b"next", None, false).unwrap();
    let mut small = [0u8; 4];
    assert_eq!(f.ipcp.pop_tx_into(&mut small).unwrap(), Some(10));
    assert_eq!(&small, b"0123");
    // An offset past the end of a buffer copies nothing, but pops.
    let mut bufs = [[0u8; 2]];
    let mut lens = [0];
    assert_eq!(f.ipcp.pop_tx_batch_into(&mut bufs, 5, &mut lens), Ok(1));
    assert_eq!(lens, [4]);
    assert_eq!(pop(&f.ipcp), None);
}

#[test]
fn bogus_rx_tail_and_geometry_fields() {
    let f = flow(geom(4, 32));
    let h = f.app.map().header();
    // Geometry in shared memory is informational: the IPCP does not read it.
    h.identity.slots.store(u32::MAX, Ordering::Relaxed);
    h.identity.slot_size.store(u32::MAX, Ordering::Relaxed);
    assert_eq!(
        f.ipcp.push_rx(&[0; 33]),
        Err(Error::MsgSize { len: 33, max: 32 })
    );
    assert!(f.ipcp.push_rx(b"fine").unwrap());
    // Tail ahead of the IPCP's head: the IPCP reads the tail only when its
    // cached view says full, so it finds out within `slots` pushes.
    h.rx.tail.store(7, Ordering::Relaxed);
    let results: Vec<_> = (0..4).map(|_| f.ipcp.push_rx(b"x")).collect();
    assert_eq!(results[..3], [Ok(true), Ok(true), Ok(true)]);
    assert!(
        matches!(&results[3], Err(Error::Invalid(m)) if m.contains("rx ring corrupt")),
        "{results:?}"
    );
    assert!(f.ipcp.is_broken());
    // Faking the head the IPCP owns changes nothing for the IPCP.
    let f = flow(geom(4, 32));
    let h = f.app.map().header();
    assert!(f.ipcp.push_rx(b"a").unwrap());
    h.rx.head.store(12345, Ordering::Relaxed);
    assert!(f.ipcp.push_rx(b"y").unwrap());
    assert_eq!(h.rx.head.load(Ordering::Relaxed), 2);
    // An unknown state word reads as Down, and never panics.
    h.state.store(77, Ordering::Relaxed);
    assert_eq!(f.monitor.stats().state, FlowState::Down);
}

/// Where a hostile write lands.
#[derive(Debug, Clone)]
enum Scribble {
    /// A 32-bit word at a 4-aligned offset anywhere in the file.
    Word { offset: usize, value: u32 },
    /// Raw bytes at any offset.
    Bytes { offset: usize, bytes: Vec<u8> },
    /// One of the control words, with an interesting value.
    Ctrl { which: usize, value: u32 },
}

fn scribble_strategy(len: usize) -> impl Strategy<Value = Scribble> {
    let value = prop_oneof![any::<u32>(), 0u32..40, (u32::MAX - 40)..=u32::MAX];
    prop_oneof![
        (0..len / 4, value.clone()).prop_map(|(w, value)| Scribble::Word {
            offset: w * 4,
            value
        }),
        (0..len, proptest::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(offset, bytes)| Scribble::Bytes { offset, bytes }),
        (0usize..16, value).prop_map(|(which, value)| Scribble::Ctrl { which, value }),
    ]
}

fn apply(map: &ShmMap, s: &Scribble) {
    let h = map.header();
    match s {
        Scribble::Word { offset, value } => {
            // SAFETY: 4-aligned offset inside the mapping.
            unsafe { &*(map.base().as_ptr().add(*offset) as *const AtomicU32) }
                .store(*value, Ordering::Relaxed)
        }
        Scribble::Bytes { offset, bytes } => {
            let n = bytes.len().min(map.mmap.len() - offset);
            // SAFETY: offset + n <= len; only this thread touches the mapping now.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.base().as_ptr().add(*offset), n)
            }
        }
        Scribble::Ctrl { which, value } => {
            let words = [
                &*h.tx.head,
                &*h.tx.tail,
                &*h.rx.head,
                &*h.rx.tail,
                &*h.tx.consumer_sleeping,
                &*h.tx.producer_waiting,
                &*h.rx.consumer_sleeping,
                &*h.state,
                &h.identity.slots,
                &h.identity.slot_size,
            ];
            if let Some(w) = words.get(*which) {
                w.store(*value, Ordering::Relaxed);
            } else {
                // A slot length word.
                map.slot_len(Dir::Tx, *which as u32)
                    .store(*value, Ordering::Relaxed);
            }
        }
    }
}

/// Drive every IPCP and irmd entry point; check every length the IPCP
/// reports fits a slot.
fn exercise_ipcp(f: &Flow) {
    let slot_size = f.ipcp.geometry().slot_size as usize;
    let mut bufs = vec![vec![0u8; slot_size + 8]; 5];
    let mut lens = [0usize; 5];
    for _ in 0..20 {
        if let Ok(Some(n)) = f.ipcp.pop_tx_into(&mut bufs[0]) {
            assert!(n <= slot_size, "SDU of {n} bytes");
        }
        if let Ok(k) = f.ipcp.pop_tx_batch_into(&mut bufs, 3, &mut lens) {
            assert!(lens[..k].iter().all(|&n| n <= slot_size), "{lens:?}");
        }
        let _ = f.ipcp.push_rx(&[9; 40]);
        let _ = f.ipcp.arm_tx_wakeup();
        f.ipcp.clear_tx_wakeup();
    }
    let _ = f.ipcp.stats();
    let _ = f.ipcp.counters();
    let _ = f.monitor.stats();
    f.ipcp.note_tx(1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ipcp_survives_any_shared_memory_content(
        sdus in proptest::collection::vec(0usize..=48, 0..8),
        scribbles in proptest::collection::vec(scribble_strategy(required_len(geom(8, 48))), 1..24),
    ) {
        let f = flow(geom(8, 48));
        for (i, n) in sdus.iter().enumerate() {
            f.app.write(&vec![i as u8; *n], None, true).unwrap();
            f.ipcp.push_rx(&[i as u8; 7]).unwrap();
        }
        for s in &scribbles {
            apply(f.app.map(), s);
            exercise_ipcp(&f);
        }
    }
}

#[test]
fn ipcp_survives_a_concurrent_scribbler() {
    let f = flow(geom(8, 48));
    let stop = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let app = f.app.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut x = 0x9E37_79B9u32;
            let words = app.map().mmap.len() / 4;
            while !stop.load(Ordering::Relaxed) {
                // xorshift: cheap, deterministic garbage.
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let s = match x % 3 {
                    0 => Scribble::Ctrl {
                        which: (x >> 8) as usize % 16,
                        value: x.rotate_left(7) % 24,
                    },
                    1 => Scribble::Ctrl {
                        which: (x >> 8) as usize % 16,
                        value: x,
                    },
                    _ => Scribble::Word {
                        offset: (x as usize % words) * 4,
                        value: x >> 3,
                    },
                };
                apply(app.map(), &s);
            }
        })
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        exercise_ipcp(&f);
    }
    stop.store(true, Ordering::Relaxed);
    scribbler.join().unwrap();
}
