//! What the `irm` tool asks: IPCPs (admin only), names and bindings (owned
//! by the uid that made them), lists.

use super::{
    ConnId, Cred, Ipcp, IpcpId, IpcpState, ListOf, NameEntry, Output, PendingList, Registry, Timer,
};
use irm::proto::{
    check_name, BootstrapSpec, IpcpInfo, IpcpRow, IrmdToIpcp, NameRow, Reply, MAX_MSG,
    NAME_ROWS_PER_MSG,
};
use irm::Error;
use log::{info, warn};
use std::collections::BTreeSet;
use std::time::Instant;

pub(super) type CliResult = Result<Option<Reply>, Error>;

impl Registry {
    pub(super) fn bootstrap(
        &mut self,
        now: Instant,
        cred: Cred,
        conn: u64,
        id: u64,
        spec: BootstrapSpec,
    ) -> CliResult {
        cred.check_admin("bootstrapping an IPCP")?;
        check_name("IPCP name", &spec.name)?;
        check_name("layer name", &spec.layer)?;
        check_name("interface name", &spec.dev)?;
        if spec.dev.len() >= 16 || spec.dev.contains('/') {
            return Err(Error::Invalid(format!(
                "`{}` is not an interface name",
                spec.dev
            )));
        }
        // The same rule as `irm`'s parser: a client that sends the request
        // itself must not start an IPCP on another protocol's ethertype.
        irm::ethertype::check_ethertype(spec.ethertype)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if spec.busy_poll_us > self.policy.max_busy_poll_us {
            return Err(Error::Invalid(format!(
                "busy-poll {} µs is above the limit of {} µs",
                spec.busy_poll_us, self.policy.max_busy_poll_us
            )));
        }
        if let Some(q) = spec.queues {
            if !(1..=irm::proto::MAX_QUEUES).contains(&q) {
                return Err(Error::Invalid(format!(
                    "queues {q} is not in 1..={}",
                    irm::proto::MAX_QUEUES
                )));
            }
        }
        if let Some(v) = spec.vlan {
            if !(1..=4094).contains(&v) {
                return Err(Error::Invalid(format!("VLAN id {v} is not in 1..=4094")));
            }
        }
        if let Some(k) = &spec.key {
            if !k.starts_with('/') || k.len() > 4096 {
                return Err(Error::Invalid(format!(
                    "key file `{k}` must be an absolute path"
                )));
            }
        }
        if spec.encrypt && spec.key.is_none() {
            return Err(Error::Invalid(
                "encrypt needs a layer key (key <file>)".into(),
            ));
        }
        if !matches!(spec.backend.as_str(), "raw" | "xdp" | "auto") {
            return Err(Error::Invalid(format!(
                "unknown backend {} (raw, xdp, auto)",
                spec.backend
            )));
        }
        if self.ipcps.values().any(|i| i.spec.name == spec.name) {
            return Err(Error::Ipcp(format!(
                "an IPCP named {} already exists",
                spec.name
            )));
        }
        if let Some(other) = self
            .ipcps
            .values()
            .find(|i| i.spec.dev == spec.dev && i.spec.ethertype == spec.ethertype)
        {
            return Err(Error::Ipcp(format!(
                "IPCP {} already runs on {} with ethertype 0x{:04x}",
                other.spec.name, spec.dev, spec.ethertype
            )));
        }
        let ipcp = self.next_ipcp;
        self.next_ipcp += 1;
        self.ipcps.insert(
            ipcp,
            Ipcp {
                id: ipcp,
                spec: spec.clone(),
                pid: None,
                state: IpcpState::Booting {
                    reply: Some((conn, id)),
                },
                info: None,
                counters: Vec::new(),
                counters_at: None,
            },
        );
        self.out.push_back(Output::Spawn { ipcp, spec });
        self.arm(now + self.policy.bootstrap_wait, Timer::Bootstrap { ipcp });
        Ok(None)
    }

    pub(super) fn bootstrapped(&mut self, ipcp: IpcpId, result: Result<IpcpInfo, String>) {
        let Some(i) = self.ipcps.get_mut(&ipcp) else {
            return;
        };
        let name = i.spec.name.clone();
        match result {
            Ok(info) if matches!(i.state, IpcpState::Operational) => {
                info!(
                    "IPCP {name}: MTU now {}, max SDU {}.",
                    info.mtu, info.max_sdu
                );
                i.info = Some(info);
            }
            Ok(info) => {
                let mac = info
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                info!(
                    "Bootstrapped IPCP {name} in layer {} on {} ({mac}, MTU {}, max SDU {}, backend {}).",
                    i.spec.layer, i.spec.dev, info.mtu, info.max_sdu, info.backend
                );
                i.info = Some(info);
                let reply = match std::mem::replace(&mut i.state, IpcpState::Operational) {
                    IpcpState::Booting { reply } => reply,
                    IpcpState::Operational => None,
                };
                let layer = i.spec.layer.clone();
                let names: Vec<String> = self
                    .names
                    .iter()
                    .filter(|(_, e)| e.layers.contains(&layer))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in names {
                    self.send_ipcp(ipcp, 0, IrmdToIpcp::RegName { name: n }, None);
                }
                if let Some((c, r)) = reply {
                    self.send(c, r, Reply::Ok);
                }
            }
            Err(e) => {
                warn!("IPCP {name} failed to bootstrap: {e}");
                if let IpcpState::Booting {
                    reply: Some((c, r)),
                } = std::mem::replace(&mut i.state, IpcpState::Booting { reply: None })
                {
                    self.send(c, r, Reply::Err(Error::Ipcp(e.clone())));
                }
                self.ipcp_gone(ipcp, &e);
            }
        }
    }

    pub(super) fn ipcp_destroy(&mut self, cred: Cred, name: &str) -> CliResult {
        cred.check_admin("destroying an IPCP")?;
        let Some(id) = self
            .ipcps
            .values()
            .find(|i| i.spec.name == name)
            .map(|i| i.id)
        else {
            return Err(Error::Ipcp(format!("no IPCP named {name}")));
        };
        // Gone from the registry at once (its flows down, its name and device
        // free for a new bootstrap); the shell stops and reaps the process.
        self.ipcp_gone(id, "destroyed with irm");
        Ok(Some(Reply::Ok))
    }

    /// `irm ipcp list`: ask every operational IPCP for its counters now and
    /// answer once all have sent them (or after `flow_list_wait`, with the
    /// last reported ones and their age). No operational IPCP: at once.
    pub(super) fn ipcp_list(&mut self, now: Instant, conn: ConnId, id: u64) -> Option<Reply> {
        let ipcps: Vec<IpcpId> = self
            .ipcps
            .values()
            .filter(|i| matches!(i.state, IpcpState::Operational))
            .map(|i| i.id)
            .collect();
        if ipcps.is_empty() {
            return Some(self.ipcp_rows(now));
        }
        let cred = self.conns.get(&conn).map(|c| c.cred)?;
        self.hold_list(
            now,
            ipcps,
            IrmdToIpcp::ReportCounters,
            PendingList {
                conn,
                id,
                cred,
                what: ListOf::Ipcps,
                waiting: BTreeSet::new(),
            },
        );
        None
    }

    pub(super) fn ipcp_rows(&self, now: Instant) -> Reply {
        Reply::IpcpRows(
            self.ipcps
                .values()
                .map(|i| IpcpRow {
                    name: i.spec.name.clone(),
                    pid: i.pid.unwrap_or(0),
                    layer: i.spec.layer.clone(),
                    dev: i.spec.dev.clone(),
                    ethertype: i.spec.ethertype,
                    state: match i.state {
                        IpcpState::Operational => "operational".into(),
                        IpcpState::Booting { .. } => "booting".into(),
                    },
                    info: i.info.clone(),
                    counters: i.counters.clone(),
                    counters_age_ms: i
                        .counters_at
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                })
                .collect(),
        )
    }

    /// Room for one more name of `cred`'s uid?
    fn name_room(&self, cred: &Cred) -> Result<(), Error> {
        if self.names.len() >= self.policy.max_names {
            return Err(Error::NoMem(format!(
                "irmd holds {} names, its limit",
                self.policy.max_names
            )));
        }
        if cred.limited()
            && self.names.values().filter(|e| e.owner == cred.uid).count()
                >= self.policy.max_names_per_uid
        {
            return Err(Error::NoMem(format!(
                "uid {} already owns {} names, the limit per user",
                cred.uid, self.policy.max_names_per_uid
            )));
        }
        Ok(())
    }

    /// The entry for `name`, made (owned by `cred`'s uid) if new; an existing
    /// one must be `cred`'s (or `cred` root).
    fn own_entry(&mut self, cred: Cred, name: &str) -> Result<&mut NameEntry, Error> {
        check_name("name", name)?;
        match self.names.get(name) {
            Some(e) => cred.check_owner(e.owner, &format!("name {name}"))?,
            None => {
                self.name_room(&cred)?;
                self.names.insert(
                    name.to_string(),
                    NameEntry {
                        owner: cred.uid,
                        layers: BTreeSet::new(),
                        bindings: BTreeSet::new(),
                    },
                );
            }
        }
        Ok(self.names.get_mut(name).expect("present"))
    }

    /// Drop an entry nothing refers to any more.
    fn tidy(&mut self, name: &str) {
        if self
            .names
            .get(name)
            .is_some_and(|e| e.layers.is_empty() && e.bindings.is_empty())
        {
            self.names.remove(name);
        }
    }

    pub(super) fn name_register(&mut self, cred: Cred, name: String, layer: String) -> CliResult {
        check_name("layer name", &layer)?;
        let targets: Vec<IpcpId> = self
            .ipcps
            .values()
            .filter(|i| i.spec.layer == layer)
            .map(|i| i.id)
            .collect();
        if targets.is_empty() {
            return Err(Error::Ipcp(format!(
                "layer {layer} is unknown: no IPCP is bootstrapped in it"
            )));
        }
        self.own_entry(cred, &name)?.layers.insert(layer.clone());
        for t in targets {
            if matches!(self.ipcps[&t].state, IpcpState::Operational) {
                self.send_ipcp(t, 0, IrmdToIpcp::RegName { name: name.clone() }, None);
            }
        }
        info!("Registered {name} in layer {layer}.");
        Ok(Some(Reply::Ok))
    }

    pub(super) fn name_unregister(&mut self, cred: Cred, name: String, layer: String) -> CliResult {
        let Some(e) = self.names.get(&name) else {
            return Err(Error::Name(format!("{name} is not registered")));
        };
        cred.check_owner(e.owner, &format!("name {name}"))?;
        let e = self.names.get_mut(&name).expect("present");
        if !e.layers.remove(&layer) {
            return Err(Error::Name(format!("{name} is not registered in {layer}")));
        }
        let targets: Vec<IpcpId> = self
            .ipcps
            .values()
            .filter(|i| i.spec.layer == layer)
            .map(|i| i.id)
            .collect();
        for t in targets {
            self.send_ipcp(t, 0, IrmdToIpcp::UnregName { name: name.clone() }, None);
        }
        self.tidy(&name);
        Ok(Some(Reply::Ok))
    }

    pub(super) fn bind(
        &mut self,
        _now: Instant,
        cred: Cred,
        prog: String,
        name: String,
    ) -> CliResult {
        check_name("program name", &prog)?;
        self.own_entry(cred, &name)?
            .bindings
            .insert((prog.clone(), cred.uid));
        info!("Bound program {prog} to name {name}.");
        self.match_incoming();
        Ok(Some(Reply::Ok))
    }

    pub(super) fn unbind(&mut self, cred: Cred, prog: String, name: String) -> CliResult {
        let Some(e) = self.names.get(&name) else {
            return Err(Error::Name(format!("{name} is not registered")));
        };
        // Root may remove any uid's binding; others only their own.
        let key = if cred.is_root() {
            e.bindings.iter().find(|(p, _)| *p == prog).cloned()
        } else {
            cred.check_owner(e.owner, &format!("name {name}"))?;
            Some((prog.clone(), cred.uid))
        };
        let removed = match key {
            Some(k) => self
                .names
                .get_mut(&name)
                .is_some_and(|e| e.bindings.remove(&k)),
            None => false,
        };
        if !removed {
            return Err(Error::Name(format!("{prog} is not bound to {name}")));
        }
        self.tidy(&name);
        Ok(Some(Reply::Ok))
    }

    /// One page of `irm name list`: names after `after`, at most
    /// [`NAME_ROWS_PER_MSG`] and well under the message limit.
    pub(super) fn name_rows(&self, after: Option<String>) -> Reply {
        let from = match &after {
            Some(a) => std::ops::Bound::Excluded(a.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        let mut rows = Vec::new();
        let mut size = 0usize;
        for (n, e) in self
            .names
            .range::<str, _>((from, std::ops::Bound::Unbounded))
        {
            let row = NameRow {
                name: n.clone(),
                layers: e.layers.iter().cloned().collect(),
                programs: e
                    .bindings
                    .iter()
                    .map(|(p, _)| p.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
            let est = 16
                + row.name.len()
                + row.layers.iter().map(|l| l.len() + 2).sum::<usize>()
                + row.programs.iter().map(|p| p.len() + 2).sum::<usize>();
            if rows.len() >= NAME_ROWS_PER_MSG || (size + est > MAX_MSG / 2 && !rows.is_empty()) {
                break;
            }
            size += est;
            rows.push(row);
        }
        Reply::NameRows(rows)
    }
}
