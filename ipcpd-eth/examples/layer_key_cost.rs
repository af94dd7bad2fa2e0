//! Time spent sealing and opening one frame with the layer key, by payload
//! size and mode (a quick measurement for `docs/decisions/0017`; the
//! end-to-end cost is measured by `scripts/bench.sh`).
//!
//! `cargo run --release -p ipcpd-eth --example layer_key_cost [rounds]`

use ipcpd_eth::layer_key::{Keyring, LayerKeys, Mode, Policy, TRAILER_LEN};
use ipcpd_eth::wire::{emit_data_header, Eid, EthHeader, ETH_HEADER_LEN, HEADER_LEN};
use irm::keyfile::LayerKey;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let key = LayerKey::from_bytes([7; 32]);
    println!("payload  mode          seal ns  open ns  forged-MAC ns");
    for size in [64usize, 1400] {
        for mode in [Mode::Authenticate, Mode::Encrypt] {
            let ring = || Keyring::new(mode, &key, &[]);
            let mut tx = LayerKeys::new(&Policy::default(), mode, ring(), now).unwrap();
            let mut rx = LayerKeys::new(&Policy::default(), mode, ring(), now).unwrap();
            let len = ETH_HEADER_LEN + HEADER_LEN + size;
            let mut frame = vec![0u8; len + TRAILER_LEN];
            EthHeader {
                dst: [2, 0, 0, 0, 0, 2],
                src: [2, 0, 0, 0, 0, 1],
                ethertype: 0x88b5,
            }
            .emit(&mut frame);
            emit_data_header(&mut frame[ETH_HEADER_LEN..], Eid(1), Eid(2), size as u16);
            let frames: Vec<Vec<u8>> = (0..rounds)
                .map(|_| {
                    let mut f = frame.clone();
                    tx.seal(&mut f, len).unwrap();
                    f
                })
                .collect();
            let mut f = frame.clone();
            let t = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(tx.seal(&mut f, len).unwrap());
            }
            let seal = t.elapsed().as_nanos() as f64 / rounds as f64;
            let mut frames = frames;
            let t = Instant::now();
            for f in frames.iter_mut() {
                std::hint::black_box(rx.open(f).unwrap());
            }
            let open = t.elapsed().as_nanos() as f64 / rounds as f64;
            // Forged frames from ever-new source MACs: the receiver derives
            // a frame key for each before the tag fails (an attacker's cost).
            let mut forged: Vec<Vec<u8>> = frames
                .iter()
                .take(20_000)
                .enumerate()
                .map(|(i, f)| {
                    let mut g = f.clone();
                    g[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                    g
                })
                .collect();
            let t = Instant::now();
            for f in forged.iter_mut() {
                assert!(rx.open(f).is_err());
            }
            let forge = t.elapsed().as_nanos() as f64 / forged.len() as f64;
            println!(
                "{size:>7}  {:<12} {seal:>8.0} {open:>8.0} {forge:>14.0}",
                format!("{mode:?}")
            );
        }
    }
}
