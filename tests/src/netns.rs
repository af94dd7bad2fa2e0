//! Network namespaces, veth pairs, bridges and link impairments, through `ip`,
//! `bridge` and `tc` (iproute2). Every command is bounded in time.
//!
//! Links are created directly inside their namespaces (`ip link add ... netns`),
//! so nothing a rig makes ever appears in the machine's own namespace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::POLL;

/// Bound for one iproute2 command.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs an iproute2 program; `Err` holds its stderr (or why it could not run).
pub fn iproute(program: &str, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + IP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} {} timed out", args.join(" ")));
            }
        }
    }
    // Output of iproute2 commands is small: the pipes cannot have filled up.
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip ARGS`, panicking with the command and its error on failure.
pub fn ip(args: &[&str]) -> String {
    iproute("ip", args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -n NS ARGS`.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Frames the kernel dropped on their way out of `ifname` in `ns` (a veth
/// counts here what its peer could not take: a full receive queue or XDP
/// ring, a full backlog).
pub fn tx_dropped(ns: &str, ifname: &str) -> u64 {
    let out = ip_in(ns, &["-s", "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ip -s -j link show {ifname}: {e}: {out}"));
    v[0]["stats64"]["tx"]["dropped"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tx dropped counter for {ifname}: {out}"))
}

/// A command run inside `ns` (`ip netns exec NS PROGRAM`). `ip netns exec`
/// execs the program, so the child's pid is the program's own pid.
pub fn exec_cmd(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

pub fn add_netns(ns: &str) {
    ip(&["netns", "add", ns]);
    // Loopback up: some tools (and plain ping sanity checks) expect it.
    ip_in(ns, &["link", "set", "lo", "up"]);
}

/// Deletes a namespace; its links go with it. Errors are returned, not raised,
/// because this runs during cleanup.
pub fn del_netns(ns: &str) -> Result<(), String> {
    iproute("ip", &["netns", "del", ns]).map(|_| ())
}

/// Names of all namespaces `ip netns` knows.
pub fn list_netns() -> Vec<String> {
    iproute("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

pub fn netns_exists(ns: &str) -> bool {
    list_netns().iter().any(|n| n == ns)
}

/// Pids of every process whose network namespace is `ns`.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    iproute("ip", &["netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A veth pair with one end in each namespace, both up.
///
/// Joining two fresh namespaces, both ends get ifindex 2. The kernel's
/// linkwatch then treats them like a physical NIC (ifindex == iflink) and
/// batches their carrier events to one run per second, so a carrier loss can
/// reach rtnetlink up to 1 s late — as on real hardware. Rigs keep it that way
/// on purpose: the liveness tests then hold the IPCP to NIC conditions.
/// (`ip link add NAME index N ...` would make the events immediate.)
pub fn add_veth(ns_a: &str, if_a: &str, ns_b: &str, if_b: &str, mtu: Option<u32>) {
    ip(&[
        "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
    ]);
    for (ns, ifname) in [(ns_a, if_a), (ns_b, if_b)] {
        if let Some(mtu) = mtu {
            set_mtu(ns, ifname, mtu);
        }
        set_up(ns, ifname);
    }
}

/// [`add_veth`] with `queues` receive and send queues on each end (veth has
/// one unless told).
pub fn add_veth_queues(
    ns_a: &str,
    if_a: &str,
    ns_b: &str,
    if_b: &str,
    mtu: Option<u32>,
    queues: u16,
) {
    let q = queues.to_string();
    let each = ["numrxqueues", &q, "numtxqueues", &q];
    let mut args = vec!["link", "add", if_a, "netns", ns_a];
    args.extend_from_slice(&each);
    args.extend_from_slice(&["type", "veth", "peer", "name", if_b, "netns", ns_b]);
    args.extend_from_slice(&each);
    ip(&args);
    for (ns, ifname) in [(ns_a, if_a), (ns_b, if_b)] {
        if let Some(mtu) = mtu {
            set_mtu(ns, ifname, mtu);
        }
        set_up(ns, ifname);
    }
}

pub fn add_bridge(ns: &str, bridge: &str) {
    ip_in(ns, &["link", "add", bridge, "type", "bridge"]);
    set_up(ns, bridge);
}

pub fn enslave(ns: &str, port: &str, bridge: &str) {
    ip_in(ns, &["link", "set", port, "master", bridge]);
}

pub fn set_mtu(ns: &str, ifname: &str, mtu: u32) {
    ip_in(ns, &["link", "set", ifname, "mtu", &mtu.to_string()]);
}

pub fn set_up(ns: &str, ifname: &str) {
    ip_in(ns, &["link", "set", ifname, "up"]);
}

pub fn set_down(ns: &str, ifname: &str) {
    ip_in(ns, &["link", "set", ifname, "down"]);
}

pub fn del_link(ns: &str, ifname: &str) {
    ip_in(ns, &["link", "del", ifname]);
}

pub fn add_addr(ns: &str, ifname: &str, cidr: &str) {
    ip_in(ns, &["addr", "add", cidr, "dev", ifname]);
}

/// `ip -br link` inside `ns`, e.g. to assert a link's state.
pub fn link_brief(ns: &str, ifname: &str) -> String {
    ip_in(ns, &["-br", "link", "show", "dev", ifname])
}

/// Disables (`forwarding == false`) or re-enables a bridge port: a disabled port
/// drops every frame in both directions while both ends keep their carrier —
/// total frame loss without a link event.
pub fn set_bridge_port_forwarding(ns: &str, port: &str, forwarding: bool) {
    let state = if forwarding { "3" } else { "0" };
    iproute(
        "ip",
        &[
            "netns", "exec", ns, "bridge", "link", "set", "dev", port, "state", state,
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `ethtool -K IF txvlan on|off` inside `ns`. With it off, a VLAN tag goes
/// out inside the frame's bytes: what a receiver's XDP program sees on a wire.
pub fn set_tx_vlan_offload(ns: &str, ifname: &str, on: bool) {
    let state = if on { "on" } else { "off" };
    iproute(
        "ip",
        &[
            "netns", "exec", ns, "ethtool", "-K", ifname, "txvlan", state,
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Turns MAC learning on a bridge port on or off.
pub fn set_bridge_port_learning(ns: &str, port: &str, on: bool) {
    let state = if on { "on" } else { "off" };
    iproute(
        "ip",
        &[
            "netns", "exec", ns, "bridge", "link", "set", "dev", port, "learning", state,
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `tc qdisc replace dev IF root netem SPEC...` inside `ns`. `Err` explains why
/// not, e.g. kernels built without `sch_netem` (CONFIG_NET_SCH_NETEM).
pub fn netem(ns: &str, ifname: &str, spec: &[&str]) -> Result<(), String> {
    let mut args = vec![
        "netns", "exec", ns, "tc", "qdisc", "replace", "dev", ifname, "root", "netem",
    ];
    args.extend_from_slice(spec);
    iproute("ip", &args).map(|_| ()).map_err(|e| {
        if e.contains("Specified qdisc kind is unknown") {
            format!("{e} (this kernel has no netem: CONFIG_NET_SCH_NETEM is not set)")
        } else {
            e
        }
    })
}

/// Removes any root qdisc set by [`netem`].
pub fn clear_qdisc(ns: &str, ifname: &str) -> Result<(), String> {
    iproute(
        "ip",
        &[
            "netns", "exec", ns, "tc", "qdisc", "del", "dev", ifname, "root",
        ],
    )
    .map(|_| ())
}

/// Whether `tc ... netem` works here (probed in a throwaway namespace).
pub fn netem_available(probe_ns: &str) -> bool {
    add_netns(probe_ns);
    let ok = netem(probe_ns, "lo", &["delay", "1ms"]).is_ok();
    let _ = del_netns(probe_ns);
    ok
}

/// Why namespace tests cannot run here, if they cannot: not root, or
/// `ip netns add` fails (no iproute2, no CAP_SYS_ADMIN, no /run/netns...).
pub fn unusable_reason(probe_ns: &str) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (namespace tests need root)".into());
    }
    match iproute("ip", &["netns", "add", probe_ns]) {
        Ok(_) => {
            let _ = del_netns(probe_ns);
            None
        }
        Err(e) => Some(format!("`ip netns add` does not work here: {e}")),
    }
}
