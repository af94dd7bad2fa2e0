//! A rig: hosts (network namespaces) joined by a veth pair or by a bridge in a
//! switch namespace, each host with its own irmd and an eth IPCP.
//!
//! Teardown runs in `Drop`, so it also runs when a test panics: it kills the
//! processes the rig started (and whatever they started inside the rig's own
//! namespaces), deletes the namespaces (their links go with them), prints
//! every log when the test failed, and otherwise removes the log directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::proc::{kill_and_reap, run, tail, Finished, Proc, SharedChild, POLL};
use crate::{bins, names, netns, procfs};

/// Layer name every rig bootstraps its IPCPs into.
pub const LAYER: &str = "eth";

/// Bound for one `irm` command.
const IRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for irmd to create its socket, or an IPCP to appear.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Rigs in one test process run one at a time: the timing assertions of the
/// liveness tests must not compete with another rig for the machine's cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// How hosts are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Two hosts, one veth pair.
    Pair,
    /// N hosts, each with a veth to a bridge in a switch namespace.
    Bridge,
}

/// Configures a [`Rig`]; `build` returns `None` when namespace tests are skipped.
pub struct RigBuilder {
    test: String,
    hosts: usize,
    topology: Topology,
    mtu: Option<u32>,
    daemons: bool,
    irmd_args: Vec<String>,
    /// Queues of the veth pair (and `queues` at bootstrap), see [`queues`].
    queues: Option<u16>,
    /// Bootstrap each host's IPCP (false: irmd only, the test bootstraps).
    bootstrap: bool,
}

impl RigBuilder {
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// Join the hosts through a bridge in a switch namespace (any number of hosts).
    pub fn bridge(mut self) -> Self {
        self.topology = Topology::Bridge;
        self
    }

    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// A veth pair with `n` receive/send queues per end, IPCPs bootstrapped
    /// with `queues n` (overrides `ETHFLOW_TEST_QUEUES`).
    pub fn queues(mut self, n: u16) -> Self {
        self.queues = Some(n);
        self
    }

    /// irmd on every host, but no IPCP: the test bootstraps its own.
    pub fn bare_ipcps(mut self) -> Self {
        self.bootstrap = false;
        self
    }

    /// Namespaces and links only: no irmd, no IPCP.
    pub fn bare(mut self) -> Self {
        self.daemons = false;
        self
    }

    /// `irmd --flow-timeout MS` on every host.
    pub fn flow_timeout_ms(mut self, ms: u64) -> Self {
        self.irmd_args.push("--flow-timeout".into());
        self.irmd_args.push(ms.to_string());
        self
    }

    pub fn build(self) -> Option<Rig> {
        if !netns_usable(&self.test) {
            return None;
        }
        assert!(self.hosts >= 1, "a rig needs hosts");
        if self.topology == Topology::Pair {
            assert_eq!(
                self.hosts, 2,
                "a veth pair joins exactly two hosts; use .bridge()"
            );
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let tag = names::rig_tag();
        let dir = std::env::temp_dir()
            .join(format!("ethflow-{}", std::process::id()))
            .join(&tag);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
        // irmd's socket lives here: root-owned 0755 whatever the umask, so the
        // test users can reach it and irmd's directory check passes.
        for d in [dir.parent(), Some(dir.as_path())].into_iter().flatten() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
        let _ = std::fs::write(dir.join("test-name"), &self.test);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            children: Mutex::new(Vec::new()),
            seq: AtomicU32::new(0),
        });
        // The rig exists before anything is created, so a failure half-way
        // through setup is cleaned up by its Drop like any other failure.
        let mut rig = Rig {
            test: self.test,
            tag,
            dir,
            topology: self.topology,
            hosts: Vec::new(),
            switch_ns: None,
            namespaces: Vec::new(),
            shared,
            _serial: serial,
        };
        let queues = self.queues.or_else(queues);
        rig.create_network(self.hosts, self.mtu, queues);
        if self.daemons {
            for host in &rig.hosts {
                host.start_irmd(&self.irmd_args);
                if self.bootstrap {
                    host.bootstrap().assert_success();
                }
            }
        }
        Some(rig)
    }
}

/// What the rig and its hosts share: where logs go, and every child to reap.
struct Shared {
    dir: PathBuf,
    children: Mutex<Vec<(String, SharedChild, bool)>>,
    seq: AtomicU32,
}

impl Shared {
    fn label(&self, host: &str, program: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let base = Path::new(program)
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or(program);
        format!("{n:03}-{host}-{base}")
    }

    fn track(&self, proc: &Proc, daemon: bool) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.push((proc.label().to_string(), proc.shared(), daemon));
    }
}

/// One host: a namespace with one interface, its own irmd socket and IPCP.
pub struct Host {
    name: String,
    ns: String,
    ifname: String,
    /// The other end of this host's veth: (namespace, interface).
    peer_end: (String, String),
    socket: PathBuf,
    ipcp: String,
    ip4: String,
    /// `queues` for its IPCP (its veth has as many), if set.
    queues: Option<u16>,
    irmd: Mutex<Option<Proc>>,
    shared: Arc<Shared>,
}

/// Namespaces, links and daemons for one test. See the module docs.
pub struct Rig {
    test: String,
    tag: String,
    dir: PathBuf,
    topology: Topology,
    hosts: Vec<Host>,
    switch_ns: Option<String>,
    namespaces: Vec<String>,
    shared: Arc<Shared>,
    _serial: MutexGuard<'static, ()>,
}

impl Rig {
    /// Configure a rig for the test named `test` (2 hosts, veth pair, daemons).
    pub fn builder(test: &str) -> RigBuilder {
        RigBuilder {
            test: test.to_string(),
            hosts: 2,
            topology: Topology::Pair,
            mtu: None,
            daemons: true,
            irmd_args: Vec::new(),
            queues: None,
            bootstrap: true,
        }
    }

    /// Two hosts on a veth pair, irmd and IPCP running in each.
    pub fn pair(test: &str) -> Option<Rig> {
        Rig::builder(test).build()
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Where logs and sockets live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn a(&self) -> &Host {
        self.host(0)
    }

    pub fn b(&self) -> &Host {
        self.host(1)
    }

    pub fn c(&self) -> &Host {
        self.host(2)
    }

    pub fn switch_ns(&self) -> Option<&str> {
        self.switch_ns.as_deref()
    }

    /// Drops every frame to and from host `i` at the bridge, leaving its carrier
    /// up (total loss without a link event). Bridge rigs only.
    pub fn block_host(&self, i: usize) {
        let (ns, port) = self.bridge_port(i);
        netns::set_bridge_port_forwarding(ns, port, false);
    }

    /// Frames the bridge could not hand to host `i` (its port's transmit
    /// drops). Bridge rigs only.
    pub fn port_tx_dropped(&self, i: usize) -> u64 {
        let (ns, port) = self.bridge_port(i);
        netns::tx_dropped(ns, port)
    }

    pub fn unblock_host(&self, i: usize) {
        let (ns, port) = self.bridge_port(i);
        netns::set_bridge_port_forwarding(ns, port, true);
    }

    /// Turns MAC learning off (or on) at host `i`'s bridge port: frames it
    /// sends with a forged source MAC then cannot steer the bridge's
    /// forwarding (a switch with port security). Bridge rigs only.
    pub fn set_learning(&self, i: usize, on: bool) {
        let (ns, port) = self.bridge_port(i);
        netns::set_bridge_port_learning(ns, port, on);
    }

    /// Makes the bridge forget every MAC at once (ageing time 0): it floods
    /// every frame to every port, so each host sees all traffic (on-path).
    pub fn flood_everything(&self) {
        let ns = self
            .switch_ns
            .as_deref()
            .expect("flooding everything needs a bridge rig");
        netns::ip_in(
            ns,
            &["link", "set", "br0", "type", "bridge", "ageing_time", "0"],
        );
    }

    fn bridge_port(&self, i: usize) -> (&str, &str) {
        assert_eq!(
            self.topology,
            Topology::Bridge,
            "blocking a port needs a bridge rig"
        );
        let (ns, port) = &self.hosts[i].peer_end;
        (ns, port)
    }

    fn add_netns(&mut self, ns: String) -> String {
        netns::add_netns(&ns);
        self.namespaces.push(ns.clone());
        ns
    }

    fn create_network(&mut self, hosts: usize, mtu: Option<u32>, queues: Option<u16>) {
        let letters: Vec<String> = (0..hosts)
            .map(|i| ((b'a' + i as u8) as char).to_string())
            .collect();
        let host_ns: Vec<String> = letters
            .iter()
            .map(|l| self.add_netns(format!("{}{l}", self.tag)))
            .collect();
        let ifnames: Vec<String> = letters
            .iter()
            .map(|l| names::ifname(format!("{}{l}", self.tag)))
            .collect();
        let peer_ends: Vec<(String, String)> = match self.topology {
            Topology::Pair => {
                let (a, b) = (&host_ns[0], &host_ns[1]);
                match queues {
                    Some(q) => netns::add_veth_queues(a, &ifnames[0], b, &ifnames[1], mtu, q),
                    None => netns::add_veth(a, &ifnames[0], b, &ifnames[1], mtu),
                }
                vec![
                    (host_ns[1].clone(), ifnames[1].clone()),
                    (host_ns[0].clone(), ifnames[0].clone()),
                ]
            }
            Topology::Bridge => {
                let switch = self.add_netns(format!("{}s", self.tag));
                netns::add_bridge(&switch, "br0");
                let mut ends = Vec::new();
                for (i, l) in letters.iter().enumerate() {
                    let port = names::ifname(format!("{}{l}p", self.tag));
                    netns::add_veth(&host_ns[i], &ifnames[i], &switch, &port, mtu);
                    netns::enslave(&switch, &port, "br0");
                    // Frames leave the bridge with their VLAN tag in the bytes,
                    // as on a wire (veth would otherwise pass it beside them).
                    netns::set_tx_vlan_offload(&switch, &port, false);
                    ends.push((switch.clone(), port));
                }
                if let Some(mtu) = mtu {
                    netns::set_mtu(&switch, "br0", mtu);
                }
                self.switch_ns = Some(switch);
                ends
            }
        };
        for (i, letter) in letters.iter().enumerate() {
            // Plain IPv4 on the same links: lets a test compare with ping.
            let ip4 = format!("10.77.0.{}", i + 1);
            netns::add_addr(&host_ns[i], &ifnames[i], &format!("{ip4}/24"));
            self.hosts.push(Host {
                name: letter.clone(),
                ns: host_ns[i].clone(),
                ifname: ifnames[i].clone(),
                peer_end: peer_ends[i].clone(),
                socket: self.dir.join(format!("{letter}.sock")),
                ipcp: format!("eth-{letter}"),
                ip4,
                queues,
                irmd: Mutex::new(None),
                shared: Arc::clone(&self.shared),
            });
        }
    }

    /// Every log the rig collected: daemons first, then the programs, in start order.
    pub fn logs(&self) -> String {
        let children = self
            .shared
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut ordered: Vec<&(String, SharedChild, bool)> =
            children.iter().filter(|c| c.2).collect();
        ordered.extend(children.iter().filter(|c| !c.2));
        for (label, _, _) in ordered {
            for ext in ["err", "out"] {
                let path = self.dir.join(format!("{label}.{ext}"));
                let text = tail(&path, 150);
                if !text.trim().is_empty() {
                    out.push_str(&format!("===== {label}.{ext} =====\n{text}"));
                }
            }
        }
        out
    }

    fn teardown(&mut self) {
        // Let stopped processes run again, so irmd can shut down in order.
        for ns in &self.namespaces {
            for pid in netns::netns_pids(ns) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
        }
        let children: Vec<(String, SharedChild, bool)> = {
            let guard = self
                .shared
                .children
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            guard
                .iter()
                .map(|(l, c, d)| (l.clone(), Arc::clone(c), *d))
                .collect()
        };
        // Applications first, then the daemons (SIGTERM, a short grace, SIGKILL).
        for (_, child, daemon) in &children {
            if !daemon {
                kill_and_reap(child);
            }
        }
        let daemons: Vec<&SharedChild> = children.iter().filter(|c| c.2).map(|c| &c.1).collect();
        for child in &daemons {
            let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(c.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            }
        }
        let grace = Instant::now() + Duration::from_secs(1);
        while Instant::now() < grace && daemons.iter().any(|c| still_running(c)) {
            std::thread::sleep(POLL);
        }
        for child in &daemons {
            kill_and_reap(child);
        }
        // Whatever our daemons started (ipcpd-eth) lives in our namespaces.
        for ns in &self.namespaces {
            kill_everything_in(ns);
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = netns::del_netns(ns) {
                eprintln!("warning: cannot delete namespace {ns}: {e}");
            }
        }
    }
}

/// Waits until `path` exists (a socket, a file), at most `timeout`, giving up
/// early once `alive()` says the process that should create it has died.
pub fn wait_for_path(path: &Path, timeout: Duration, alive: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if path.exists() {
            return true;
        }
        if !alive() || Instant::now() >= deadline {
            return path.exists();
        }
        std::thread::sleep(POLL);
    }
}

fn still_running(child: &SharedChild) -> bool {
    let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
    matches!(c.try_wait(), Ok(None))
}

/// SIGKILL every process left in one of the rig's own namespaces, waiting
/// (bounded) until they are gone.
fn kill_everything_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = netns::netns_pids(ns);
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("warning: processes {pids:?} still in namespace {ns}");
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        self.teardown();
        if failed {
            eprintln!(
                "===== test {} failed; logs of rig {} (kept in {}) =====\n{}",
                self.test,
                self.tag,
                self.dir.display(),
                self.logs()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
            // The per-process parent goes too once its last rig is gone.
            if let Some(parent) = self.dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

impl Host {
    /// `a`, `b`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// This host's interface (the one its IPCP is bootstrapped on).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The other end of this host's veth: (namespace, interface).
    pub fn peer_end(&self) -> (&str, &str) {
        (&self.peer_end.0, &self.peer_end.1)
    }

    /// This host's IRM_SOCKET.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Name of the IPCP bootstrapped at start (`eth-a`, ...).
    pub fn ipcp_name(&self) -> &str {
        &self.ipcp
    }

    /// IPv4 address on the interface (for plain ping comparisons).
    pub fn ip4(&self) -> &str {
        &self.ip4
    }

    /// `program args...` inside this host, with this host's IRM_SOCKET.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = netns::exec_cmd(&self.ns, &bins::resolve(program));
        cmd.args(args)
            .env("IRM_SOCKET", &self.socket)
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    /// `program args...` inside this host as `user` (through `setpriv`).
    pub fn cmd_as(&self, user: crate::User, program: &str, args: &[&str]) -> Command {
        let prefix = user.prefix();
        if prefix.is_empty() {
            return self.cmd(program, args);
        }
        let mut cmd = netns::exec_cmd(&self.ns, &prefix[0]);
        cmd.args(&prefix[1..])
            .arg(bins::resolve_for_others(program))
            .args(args)
            .env("IRM_SOCKET", &self.socket)
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    /// [`Host::spawn`] as `user`.
    pub fn spawn_as(&self, user: crate::User, program: &str, args: &[&str]) -> Proc {
        let label = self.shared.label(&self.name, program);
        let proc = Proc::spawn(self.cmd_as(user, program, args), &self.shared.dir, &label);
        self.shared.track(&proc, false);
        proc
    }

    /// [`Host::run`] as `user`.
    pub fn run_as(
        &self,
        user: crate::User,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Finished {
        let label = self.shared.label(&self.name, program);
        run(
            self.cmd_as(user, program, args),
            &self.shared.dir,
            &label,
            timeout,
        )
    }

    /// `irm ARGS` as `user`.
    pub fn irm_as(&self, user: crate::User, args: &[&str]) -> Finished {
        self.run_as(user, "irm", args, IRM_TIMEOUT)
    }

    /// Starts a program in the background; the rig kills it at the end at the latest.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Proc {
        let label = self.shared.label(&self.name, program);
        let proc = Proc::spawn(self.cmd(program, args), &self.shared.dir, &label);
        self.shared.track(&proc, false);
        proc
    }

    /// Runs a program to completion within `timeout`.
    pub fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Finished {
        let label = self.shared.label(&self.name, program);
        run(self.cmd(program, args), &self.shared.dir, &label, timeout)
    }

    /// Runs a program (20 s bound) and panics with its output unless it exits 0.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> Finished {
        let done = self.run(program, args, Duration::from_secs(20));
        done.assert_success();
        done
    }

    /// `irm ARGS` against this host's irmd.
    pub fn irm(&self, args: &[&str]) -> Finished {
        self.run("irm", args, IRM_TIMEOUT)
    }

    /// `irm ARGS`, which must succeed; returns its stdout.
    pub fn irm_ok(&self, args: &[&str]) -> String {
        let done = self.irm(args);
        assert!(
            done.success(),
            "host {}: irm {} failed: {}",
            self.name,
            args.join(" "),
            done.describe()
        );
        done.stdout
    }

    /// Starts irmd with `args` and waits for its socket.
    pub fn start_irmd(&self, args: &[String]) {
        self.start_irmd_env(args, &[]);
    }

    /// [`Host::start_irmd`] with `env` added to irmd's environment (which
    /// the IPCPs it starts inherit).
    pub fn start_irmd_env(&self, args: &[String], env: &[(&str, &str)]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let label = self.shared.label(&self.name, "irmd");
        let mut cmd = self.cmd("irmd", &args);
        cmd.envs(env.iter().copied());
        let proc = Proc::spawn(cmd, &self.shared.dir, &label);
        self.shared.track(&proc, true);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.socket.exists() {
            if !proc.is_running() || Instant::now() >= deadline {
                let done = proc.kill();
                panic!(
                    "host {}: irmd did not create {:?}: {}",
                    self.name,
                    self.socket,
                    done.describe()
                );
            }
            std::thread::sleep(POLL);
        }
        *self.irmd.lock().unwrap_or_else(|e| e.into_inner()) = Some(proc);
    }

    /// SIGKILL irmd (its IPCPs stay; the rig's teardown removes them).
    pub fn kill_irmd(&self) {
        if let Some(p) = self.irmd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            p.kill();
        }
    }

    /// Sends `sig` to this host's irmd (SIGSTOP, SIGKILL...).
    pub fn signal_irmd(&self, sig: Signal) {
        if let Some(p) = self.irmd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            p.signal(sig);
        }
    }

    pub fn irmd_pid(&self) -> i32 {
        self.irmd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Proc::pid)
            .expect("this host runs no irmd")
    }

    /// irmd's stderr so far (IPCPs it spawns inherit it, so their logs are here too).
    pub fn irmd_log(&self) -> String {
        self.irmd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Proc::stderr)
            .unwrap_or_default()
    }

    /// Waits (bounded) for a line of the irmd log containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.irmd_log().lines().find(|l| l.contains(needle)) {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Like [`Host::wait_log`], but a missing line fails the test.
    pub fn expect_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log(needle, timeout).unwrap_or_else(|| {
            panic!(
                "host {}: irmd log has no line with {needle:?} after {timeout:?}",
                self.name
            )
        })
    }

    /// `irm ipcp bootstrap type eth name eth-X layer eth dev IF`.
    pub fn bootstrap(&self) -> Finished {
        self.bootstrap_as(&self.ipcp)
    }

    /// [`Host::bootstrap`] with more keywords (`vlan 7`, `ethertype 88b6`...).
    pub fn bootstrap_with(&self, extra: &[&str]) -> Finished {
        self.bootstrap_ipcp(&self.ipcp, &backend(), extra)
    }

    /// `irm ipcp bootstrap type eth name IPCP layer eth dev IF backend
    /// BACKEND`, then `queues n` if the rig has queues, then `extra`.
    pub fn bootstrap_ipcp(&self, ipcp: &str, backend: &str, extra: &[&str]) -> Finished {
        let queues = self.queues.map(|q| q.to_string());
        let mut args = vec![
            "ipcp",
            "bootstrap",
            "type",
            "eth",
            "name",
            ipcp,
            "layer",
            LAYER,
            "dev",
            &self.ifname,
            "backend",
            backend,
        ];
        if let Some(q) = &queues {
            args.extend_from_slice(&["queues", q]);
        }
        args.extend_from_slice(extra);
        self.irm(&args)
    }

    /// The MAC of this host's interface (`aa:bb:cc:dd:ee:ff`).
    pub fn mac(&self) -> String {
        let out = netns::ip_in(&self.ns, &["-j", "link", "show", "dev", &self.ifname]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link");
        v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {out}"))
            .to_string()
    }

    /// The counters of this host's (first) IPCP, as `irm ipcp list --json` shows them.
    pub fn ipcp_counters(&self) -> std::collections::BTreeMap<String, u64> {
        let out = self.irm_ok(&["ipcp", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`irm ipcp list --json`: {e}:\n{out}"));
        v["ipcps"][0]["counters"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bootstraps an eth IPCP with another name (e.g. after killing the first),
    /// with the backend [`backend`] names.
    pub fn bootstrap_as(&self, ipcp: &str) -> Finished {
        self.bootstrap_ipcp(ipcp, &backend(), &[])
    }

    /// `irm bind program PROGRAM name NAME` and `irm name register NAME layer eth`.
    pub fn register(&self, program: &str, name: &str) {
        self.irm_ok(&["bind", "program", program, "name", name]);
        self.irm_ok(&["name", "register", name, "layer", LAYER]);
    }

    /// Registers `name` for `program` and starts `program args...` as its server.
    /// Waits (bounded) for irmd to log the new instance, so a client started
    /// right after finds a process that accepts.
    pub fn serve(&self, program: &str, name: &str, args: &[&str]) -> Proc {
        self.register(program, name);
        let server = self.spawn(program, args);
        let line = format!("New instance ({}) of {program} added.", server.pid());
        if self.wait_log(&line, Duration::from_secs(5)).is_none() {
            assert!(
                server.is_running(),
                "server {program} exited: {}",
                server.kill().describe()
            );
            eprintln!(
                "note: host {}: irmd did not log {line:?} within 5 s; going on",
                self.name
            );
        }
        server
    }

    /// Pids of the eth IPCPs this host's irmd spawned (waits up to 10 s for one).
    pub fn ipcp_pids(&self) -> Vec<i32> {
        let irmd = self.irmd_pid();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pids = procfs::children_named(irmd, "ipcpd-eth");
            if !pids.is_empty() || Instant::now() >= deadline {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The one eth IPCP of this host (panics if there is none or several).
    pub fn ipcp_pid(&self) -> i32 {
        let pids = self.ipcp_pids();
        assert_eq!(
            pids.len(),
            1,
            "host {}: expected one ipcpd-eth child of irmd, found {pids:?}",
            self.name
        );
        pids[0]
    }

    /// Sends `sig` to this host's IPCP (a process the rig's irmd started).
    pub fn signal_ipcp(&self, sig: Signal) -> i32 {
        let pid = self.ipcp_pid();
        kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
        pid
    }

    /// `irm flow list --json`, parsed.
    pub fn flows(&self) -> Vec<serde_json::Value> {
        let out = self.irm_ok(&["flow", "list", "--json"]);
        match serde_json::from_str::<serde_json::Value>(&out).map(|mut v| v["flows"].take()) {
            Ok(serde_json::Value::Array(flows)) => flows,
            other => panic!(
                "host {}: `irm flow list --json` has no array of flows ({other:?}):\n{out}",
                self.name
            ),
        }
    }

    /// Waits (bounded) until `irm flow list` is empty; `Err` holds what is left.
    pub fn wait_no_flows(&self, timeout: Duration) -> Result<(), Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let flows = self.flows();
            if flows.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(flows);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn link_down(&self) {
        netns::set_down(&self.ns, &self.ifname);
    }

    pub fn link_up(&self) {
        netns::set_up(&self.ns, &self.ifname);
    }

    /// Takes the far end of this host's veth down: this host loses carrier.
    pub fn peer_end_down(&self) {
        netns::set_down(&self.peer_end.0, &self.peer_end.1);
    }

    /// Deletes the far end of this host's veth (which deletes the pair).
    pub fn delete_peer_end(&self) {
        netns::del_link(&self.peer_end.0, &self.peer_end.1);
    }

    /// `tc qdisc replace dev IF root netem SPEC` on this host's interface.
    pub fn netem(&self, spec: &[&str]) -> Result<(), String> {
        netns::netem(&self.ns, &self.ifname, spec)
    }
}

/// Once per test process: whether namespace tests can run, and cleanup of
/// what a killed earlier run left behind.
fn netns_usable(test: &str) -> bool {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    let reason = REASON.get_or_init(|| {
        let probe = format!("ef{}xprobe", std::process::id());
        let reason = netns::unusable_reason(&probe);
        if reason.is_none() {
            sweep_stale_namespaces();
        }
        reason
    });
    let Some(reason) = reason else {
        return true;
    };
    if std::env::var("ETHFLOW_SKIP_NETNS").as_deref() == Ok("1") {
        // Straight to fd 2: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {reason} (ETHFLOW_SKIP_NETNS=1)"
        );
        false
    } else {
        panic!("{test} cannot run: {reason}. Run as root with iproute2, or set ETHFLOW_SKIP_NETNS=1 to skip");
    }
}

/// Deletes namespaces named by a rig of a test process that no longer exists
/// (killed before its Drop ran), with any process still inside them — by
/// their name, those can only be daemons that run started.
fn sweep_stale_namespaces() {
    for ns in netns::list_netns() {
        let Some(pid) = names::tag_pid(&ns) else {
            continue;
        };
        if pid == std::process::id() || procfs::is_alive(pid as i32) {
            continue;
        }
        eprintln!("note: removing namespace {ns} left by dead test process {pid}");
        kill_everything_in(&ns);
        let _ = netns::del_netns(&ns);
    }
}

/// The IPCP backend the end-to-end suite runs against: `ETHFLOW_BACKEND`
/// (`raw` when unset). `scripts/test.sh` runs the suite once per backend.
pub fn backend() -> String {
    std::env::var("ETHFLOW_BACKEND").unwrap_or_else(|_| "raw".into())
}

/// Receive queues for every veth pair and IPCP of the suite:
/// `ETHFLOW_TEST_QUEUES` (unset: veth's one queue, no `queues` keyword).
pub fn queues() -> Option<u16> {
    let v = std::env::var("ETHFLOW_TEST_QUEUES").ok()?;
    let q = v
        .parse::<u16>()
        .unwrap_or_else(|_| panic!("ETHFLOW_TEST_QUEUES={v} is not a queue count"));
    (q >= 1).then_some(q)
}
