//! Kernel memory a flow's fds cost (irmd's side: the memfd and every wake-up
//! end), with the wake-up pipes of `shm::create` or, for comparison, the
//! three eventfds they replaced. Each wake-up is used once (written and
//! drained), as on a flow that has carried data.
//!
//! `cargo run --release -p irm --example flowmem -- pipe 2500` (or `pipe-idle`:
//! never used; `eventfd`; `socketpair`: three unix datagram pairs).
//! Prints the growth per flow of Slab (/proc/meminfo) and of the kernel
//! memory charged to this process's memory cgroup (cgroup v1, 0 elsewhere);
//! run on a quiet machine, several times.

use std::os::fd::{AsFd, OwnedFd};

use irm::proto::RingGeometry;
use nix::sys::eventfd::{EfdFlags, EventFd};

fn meminfo(key: &str) -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Kernel memory charged to this process's memory cgroup (v1), in KiB: it
/// counts pipe pages too, which /proc/meminfo shows in no field of its own.
fn cgroup_kmem_kib() -> i64 {
    let path = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap_or_default();
    std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{path}/memory.kmem.usage_in_bytes"
    ))
    .ok()
    .and_then(|s| s.trim().parse::<i64>().ok())
    .map_or(0, |b| b / 1024)
}

fn used_kib() -> (i64, i64) {
    (meminfo("Slab:"), cgroup_kmem_kib())
}

fn poke(r: &OwnedFd, w: &OwnedFd, word: bool) {
    let buf = [1u8; 8];
    let n = if word { 8 } else { 1 };
    let _ = nix::unistd::write(w.as_fd(), &buf[..n]);
    let mut out = [0u8; 8];
    let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(r), &mut out);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "pipe".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3000);
    irm::limits::raise_nofile();
    let geom = RingGeometry {
        slots: 4096,
        slot_size: 1500,
    };
    let before = used_kib();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(n);
    for _ in 0..n {
        match kind.as_str() {
            "eventfd" => {
                let memfd = irm::shm::create(geom).expect("create").memfd;
                let efds: Vec<OwnedFd> = (0..3)
                    .map(|_| {
                        EventFd::from_value_and_flags(
                            0,
                            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
                        )
                        .expect("eventfd")
                        .into()
                    })
                    .collect();
                for e in &efds {
                    poke(e, e, true);
                }
                keep.push(Box::new((memfd, efds)));
            }
            "socketpair" => {
                use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
                let memfd = irm::shm::create(geom).expect("create").memfd;
                let pairs: Vec<(OwnedFd, OwnedFd)> = (0..3)
                    .map(|_| {
                        socketpair(
                            AddressFamily::Unix,
                            SockType::Datagram,
                            None,
                            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                        )
                        .expect("socketpair")
                    })
                    .collect();
                for (a, b) in &pairs {
                    poke(b, a, false);
                }
                keep.push(Box::new((memfd, pairs)));
            }
            "pipe-idle" => keep.push(Box::new(irm::shm::create(geom).expect("create"))),
            _ => {
                let fds = irm::shm::create(geom).expect("create");
                poke(&fds.ipcp_read, &fds.ipcp_write, false);
                poke(&fds.rx_read, &fds.rx_write, false);
                poke(&fds.tx_read, &fds.tx_write, false);
                keep.push(Box::new(fds));
            }
        }
    }
    let after = used_kib();
    println!(
        "{kind}: {n} flows: Slab +{:.2} KiB/flow, cgroup kernel memory +{:.2} KiB/flow",
        (after.0 - before.0) as f64 / n as f64,
        (after.1 - before.1) as f64 / n as f64
    );
    drop(keep);
}
