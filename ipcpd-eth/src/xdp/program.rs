//! The XDP program in the kernel (`ebpf/ethflow_xdp.c`, built by build.rs):
//! loaded with the IPCP's ethertype, attached through a bpf_link (so it goes
//! away with the IPCP, crash included), and its maps: live endpoints,
//! per-CPU counters, the AF_XDP socket of each receive queue.

use crate::segment::SegmentFilter;
use crate::wire::{Eid, Mac};
use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use std::os::fd::AsRawFd;

#[cfg(ethflow_xdp_program)]
fn object() -> Result<&'static [u8], String> {
    // aya parses the ELF in place: it must be 8-byte aligned.
    Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/ethflow_xdp.o"
    )))
}

#[cfg(not(ethflow_xdp_program))]
fn object() -> Result<&'static [u8], String> {
    Err(env!("ETHFLOW_XDP_MISSING").to_string())
}

/// Unknown-eid DATA frames passed up per sender MAC, as a burst and then
/// one per interval: the same budget the flow allocator has for its
/// UNKNOWN_EID replies, so every reply it may send gets its frame.
const UNKNOWN_EID_BURST: u32 = 10;
const UNKNOWN_EID_REFILL_NS: u64 = 10_000_000;
/// Management frames (KEEP_ALIVE excepted) passed up per sender MAC and
/// CPU: the raw backend's budget (`segment::MGMT_BURST`, `MGMT_REFILL_NS`).
const MGMT_BURST: u32 = crate::segment::MGMT_BURST;
const MGMT_REFILL_NS: u64 = crate::segment::MGMT_REFILL_NS;

/// Counter slots of the program's `counters` map (same numbers as the C enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    DropUnknownEid = 0,
    DropMalformed = 1,
    PassUnknownEid = 2,
    RedirectData = 3,
    RedirectMgmt = 4,
    DropNoSocket = 5,
    DropNotForUs = 6,
    PassOtherVlan = 7,
    DropMgmtBudget = 8,
}

impl Counter {
    pub const ALL: [Counter; 9] = [
        Counter::DropUnknownEid,
        Counter::DropMalformed,
        Counter::PassUnknownEid,
        Counter::RedirectData,
        Counter::RedirectMgmt,
        Counter::DropNoSocket,
        Counter::DropNotForUs,
        Counter::PassOtherVlan,
        Counter::DropMgmtBudget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::DropUnknownEid => "xdp_drop_unknown_eid",
            Counter::DropMalformed => "xdp_drop_malformed",
            Counter::PassUnknownEid => "xdp_pass_unknown_eid",
            Counter::RedirectData => "xdp_redirect_data",
            Counter::RedirectMgmt => "xdp_redirect_mgmt",
            Counter::DropNoSocket => "xdp_drop_no_socket",
            // The same names as backend raw's: the rule is the same.
            Counter::DropNotForUs => "not_for_us",
            Counter::PassOtherVlan => "other_vlan",
            Counter::DropMgmtBudget => "xdp_drop_mgmt_budget",
        }
    }
}

/// The environment variable that picks the mode: `native`, `skb`, or unset
/// (native, else SKB). For benchmarks and for drivers whose native XDP is
/// slower than SKB mode (veth: native mode copies the frame once more).
pub const MODE_ENV: &str = "ETHFLOW_XDP_MODE";

/// Which attach modes to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    NativeElseSkb,
    Native,
    Skb,
}

impl Want {
    /// From [`MODE_ENV`].
    pub fn from_env() -> Result<Want, String> {
        match std::env::var(MODE_ENV).as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(Want::NativeElseSkb),
            Ok("native") => Ok(Want::Native),
            Ok("skb") => Ok(Want::Skb),
            Ok(other) => Err(format!("{MODE_ENV}={other}: expected native, skb or auto")),
        }
    }
}

/// Where the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the driver, before an skb exists.
    Native,
    /// In the kernel's generic receive path (works on any interface).
    Skb,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }
}

pub struct Program {
    live_eids: HashMap<MapData, u64, u8>,
    peer_macs: HashMap<MapData, u64, u8>,
    counters: PerCpuArray<MapData, u64>,
    xsks: XskMap<MapData>,
    mode: Mode,
    /// Owns the program and its link: dropping it detaches the program.
    _ebpf: Ebpf,
}

/// An error and every cause under it, on one line.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// The map key of an eid: its 8 bytes as on the wire, so the program compares
/// the frame's bytes as they are.
fn key(eid: Eid) -> u64 {
    u64::from_ne_bytes(eid.0.to_be_bytes())
}

impl Program {
    /// Load the program for `ethertype` and the segment filter (our MAC and
    /// VLAN) with room for `queues` sockets and attach it to `ifindex` as
    /// `want` says; `frags`: the multi-buffer entry point (section
    /// `xdp.frags`, for frames larger than one page). Returns it and a
    /// sentence saying which mode is active and why.
    pub fn attach(
        ifindex: u32,
        ethertype: u16,
        filter: SegmentFilter,
        queues: u32,
        want: Want,
        frags: bool,
    ) -> Result<(Program, String), String> {
        let object = object()?;
        let our_mac = mac_key(filter.mac);
        let vlan_id: u16 = filter.vlan.unwrap_or(0);
        // Keyed: no per-MAC management budget before the tag is checked
        // (see `SegmentFilter::keyed`); a bucket that never empties.
        let (mgmt_burst, mgmt_refill_ns) = if filter.keyed {
            (u32::MAX, 1u64)
        } else {
            (MGMT_BURST, MGMT_REFILL_NS)
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("ethertype", &ethertype, true)
            .override_global("our_mac", &our_mac, true)
            .override_global("vlan_id", &vlan_id, true)
            .override_global("unknown_eid_burst", &UNKNOWN_EID_BURST, true)
            .override_global("unknown_eid_refill_ns", &UNKNOWN_EID_REFILL_NS, true)
            .override_global("mgmt_burst", &mgmt_burst, true)
            .override_global("mgmt_refill_ns", &mgmt_refill_ns, true)
            .map_max_entries("xsks", queues.max(1))
            .load(object)
            .map_err(|e| {
                format!(
                    "cannot load the XDP program's maps: {} (root and a BPF-enabled kernel needed)",
                    describe(&e)
                )
            })?;
        let name = if frags {
            "ethflow_xdp_frags"
        } else {
            "ethflow_xdp"
        };
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(format!("the XDP object has no program {name}"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| describe(&e))?;
        prog.load().map_err(|e| {
            let what = if frags {
                " (multi-buffer, xdp.frags)"
            } else {
                ""
            };
            format!("the kernel refused the XDP program{what}: {}", describe(&e))
        })?;
        let native = match want {
            Want::Skb => None,
            Want::Native | Want::NativeElseSkb => {
                match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
                    Ok(_) => Some(Ok(())),
                    Err(e) => Some(Err(native_refusal(&e))),
                }
            }
        };
        let (mode, why) = match (want, native) {
            (_, Some(Ok(()))) => (Mode::Native, "native mode (in the driver)".to_string()),
            (Want::Native, Some(Err(native))) => {
                return Err(format!(
                    "native mode refused ({native}) and {MODE_ENV}=native"
                ))
            }
            (_, native) => {
                let why = match native {
                    Some(Err(refused)) => format!("native mode was refused: {refused}"),
                    _ => format!("{MODE_ENV}=skb"),
                };
                prog.attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(|e| {
                        format!(
                            "cannot attach XDP in SKB mode ({}), and {why}",
                            describe(&e)
                        )
                    })?;
                (Mode::Skb, format!("SKB mode because {why}"))
            }
        };
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or(format!("the XDP object has no map {name}"))
        };
        let live_eids =
            HashMap::try_from(take(&mut ebpf, "live_eids")?).map_err(|e| describe(&e))?;
        let peer_macs =
            HashMap::try_from(take(&mut ebpf, "peer_macs")?).map_err(|e| describe(&e))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "counters")?).map_err(|e| describe(&e))?;
        let xsks = XskMap::try_from(take(&mut ebpf, "xsks")?).map_err(|e| describe(&e))?;
        Ok((
            Program {
                live_eids,
                peer_macs,
                counters,
                xsks,
                mode,
                _ebpf: ebpf,
            },
            why,
        ))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Frames arriving on `queue` go to `socket` from now on.
    pub fn set_socket(&mut self, queue: u32, socket: impl AsRawFd) -> Result<(), String> {
        self.xsks.set(queue, socket, 0).map_err(|e| {
            format!(
                "cannot register the AF_XDP socket of queue {queue}: {}",
                describe(&e)
            )
        })
    }

    pub fn add_endpoint(&mut self, eid: Eid) -> Result<(), String> {
        self.live_eids
            .insert(key(eid), 1, 0)
            .map_err(|e| describe(&e))
    }

    pub fn remove_endpoint(&mut self, eid: Eid) -> Result<(), String> {
        self.live_eids.remove(&key(eid)).map_err(|e| describe(&e))
    }

    /// Keep-alives from `mac` pass without the management budget.
    pub fn add_peer(&mut self, mac: Mac) -> Result<(), String> {
        self.peer_macs
            .insert(mac_key(mac), 1, 0)
            .map_err(|e| describe(&e))
    }

    pub fn remove_peer(&mut self, mac: Mac) -> Result<(), String> {
        self.peer_macs
            .remove(&mac_key(mac))
            .map_err(|e| describe(&e))
    }

    /// One counter, summed over the CPUs.
    pub fn counter(&self, c: Counter) -> u64 {
        match self.counters.get(&(c as u32), 0) {
            Ok(per_cpu) => per_cpu.iter().copied().fold(0u64, u64::wrapping_add),
            Err(_) => 0,
        }
    }
}

/// A MAC as the program compares it: its 6 bytes read into a zeroed u64.
fn mac_key(mac: Mac) -> u64 {
    let mut k = [0u8; 8];
    k[..6].copy_from_slice(&mac);
    u64::from_ne_bytes(k)
}

/// Why native mode was refused, with the likely cause for the errors we know.
fn native_refusal(e: &aya::programs::ProgramError) -> String {
    let text = describe(e);
    let errno =
        std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source()).find_map(|e| {
            e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
        });
    match errno {
        Some(libc::ERANGE) => format!("{text} (the MTU is above what the driver's XDP takes)"),
        Some(libc::EOPNOTSUPP) => format!("{text} (the driver has no native XDP)"),
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            format!("{text} (another XDP program is attached)")
        }
        _ => text,
    }
}
