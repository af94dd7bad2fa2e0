//! `irm -j`: what each command prints, as typed structs serialized with
//! serde. Every document is one object with a `version` (of this schema,
//! [`VERSION`]) and the command's own keys; the schema is written down in
//! docs/json.md. Keys never depend on the IPCP's backend: a value the IPCP has
//! not (yet) given is `null`, a common counter it has not reported is 0.

use irm::proto::{FlowRow, IpcpRow, NameRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema version: raised when a key changes meaning or goes away
/// (adding keys does not raise it).
pub const VERSION: u32 = 1;

/// `irm -j ipcp list`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct IpcpList {
    pub version: u32,
    pub ipcps: Vec<Ipcp>,
}

/// One IPCP.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Ipcp {
    pub name: String,
    pub pid: u32,
    /// Always "eth" (the model's "eth-dix").
    #[serde(rename = "type")]
    pub kind: String,
    pub layer: String,
    pub dev: String,
    /// "0x88b5".
    pub ethertype: String,
    /// "booting" or "operational".
    pub state: String,
    /// Known once the IPCP is operational; null before.
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub max_sdu: Option<u32>,
    pub backend: Option<String>,
    pub counters: Counters,
    /// Milliseconds since irmd received these counters from the IPCP; null
    /// when it never did.
    pub counters_age_ms: Option<u64>,
}

/// An IPCP's frame counters: the common ones always, then whatever else the
/// IPCP reports (its backend's, the flow allocator's, the layer key's).
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Counters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub malformed: u64,
    pub unknown_eid: u64,
    pub rx_ring_full: u64,
    #[serde(flatten)]
    pub other: BTreeMap<String, u64>,
}

impl Counters {
    pub fn from_named(named: &[(String, u64)]) -> Counters {
        let mut c = Counters::default();
        for (k, v) in named {
            let slot = match k.as_str() {
                "rx_frames" => &mut c.rx_frames,
                "tx_frames" => &mut c.tx_frames,
                "malformed" => &mut c.malformed,
                "unknown_eid" => &mut c.unknown_eid,
                "rx_ring_full" => &mut c.rx_ring_full,
                other => c.other.entry(other.to_string()).or_default(),
            };
            *slot = *v;
        }
        c
    }
}

impl Ipcp {
    pub fn from_row(r: &IpcpRow) -> Ipcp {
        Ipcp {
            name: r.name.clone(),
            pid: r.pid,
            kind: "eth".into(),
            layer: r.layer.clone(),
            dev: r.dev.clone(),
            ethertype: format!("0x{:04x}", r.ethertype),
            state: r.state.clone(),
            mac: r.info.as_ref().map(|i| mac(&i.mac)),
            mtu: r.info.as_ref().map(|i| i.mtu),
            max_sdu: r.info.as_ref().map(|i| i.max_sdu),
            backend: r.info.as_ref().map(|i| i.backend.clone()),
            counters: Counters::from_named(&r.counters),
            counters_age_ms: r.counters_age_ms,
        }
    }
}

/// `irm -j flow list`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowList {
    pub version: u32,
    pub flows: Vec<Flow>,
}

/// One flow, as its IPCP counts it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Flow {
    pub flow_id: u32,
    pub name: String,
    pub pid: u32,
    pub ipcp: String,
    /// "ALLOCATED", "DOWN" or "PEER".
    pub state: String,
    pub timeout_ms: u64,
    pub last_rx_ms_ago: Option<u64>,
    pub tx_sdus: u64,
    pub tx_bytes: u64,
    pub rx_sdus: u64,
    pub rx_bytes: u64,
    pub dropped: u64,
}

impl Flow {
    pub fn from_row(r: &FlowRow) -> Flow {
        Flow {
            flow_id: r.flow_id,
            name: r.name.clone(),
            pid: r.pid,
            ipcp: r.ipcp.clone(),
            state: r.state.as_str().into(),
            timeout_ms: r.timeout_ms,
            last_rx_ms_ago: r.last_rx_ms_ago,
            tx_sdus: r.tx_sdus,
            tx_bytes: r.tx_bytes,
            rx_sdus: r.rx_sdus,
            rx_bytes: r.rx_bytes,
            dropped: r.dropped,
        }
    }
}

/// `irm -j name list`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NameList {
    pub version: u32,
    pub names: Vec<Name>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Name {
    pub name: String,
    pub layers: Vec<String>,
    pub programs: Vec<String>,
}

impl Name {
    pub fn from_row(r: &NameRow) -> Name {
        Name {
            name: r.name.clone(),
            layers: r.layers.clone(),
            programs: r.programs.clone(),
        }
    }
}

/// `irm -j ipcp bootstrap`: the IPCP that is now operational.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Bootstrapped {
    pub version: u32,
    pub name: String,
    pub layer: String,
    pub dev: String,
}

/// `irm -j ipcp keygen`: the key file written.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyWritten {
    pub version: u32,
    pub file: String,
    pub bytes: u32,
}

pub fn ipcp_list(rows: &[IpcpRow]) -> IpcpList {
    IpcpList {
        version: VERSION,
        ipcps: rows.iter().map(Ipcp::from_row).collect(),
    }
}

pub fn flow_list(rows: &[FlowRow]) -> FlowList {
    FlowList {
        version: VERSION,
        flows: rows.iter().map(Flow::from_row).collect(),
    }
}

pub fn name_list(rows: &[NameRow]) -> NameList {
    NameList {
        version: VERSION,
        names: rows.iter().map(Name::from_row).collect(),
    }
}

/// One document on one line.
pub fn print<T: Serialize>(doc: &T) {
    match serde_json::to_string(doc) {
        Ok(s) => println!("{s}"),
        // Only maps with non-string keys fail, and these structs have none.
        Err(e) => eprintln!("irm: cannot write JSON: {e}"),
    }
}

pub fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use irm::proto::{FlowState, IpcpInfo};
    use serde_json::Value;

    fn ipcp_row(backend: &str, counters: &[(&str, u64)]) -> IpcpRow {
        IpcpRow {
            name: "eth-a".into(),
            pid: 42,
            layer: "lan".into(),
            dev: "veth0".into(),
            ethertype: 0x88b5,
            state: "operational".into(),
            info: Some(IpcpInfo {
                mac: [2, 0, 0, 0, 0, 0xab],
                mtu: 1500,
                max_sdu: 1462,
                backend: backend.into(),
            }),
            counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            counters_age_ms: Some(3),
        }
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    }

    const IPCP_KEYS: [&str; 13] = [
        "backend",
        "counters",
        "counters_age_ms",
        "dev",
        "ethertype",
        "layer",
        "mac",
        "max_sdu",
        "mtu",
        "name",
        "pid",
        "state",
        "type",
    ];

    #[test]
    fn ipcp_list_parses_with_version_and_keys() {
        let rows = [ipcp_row(
            "raw",
            &[("rx_frames", 7), ("tx_frames", 9), ("rx_kernel_drops", 1)],
        )];
        let text = serde_json::to_string(&ipcp_list(&rows)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(keys(&v), ["ipcps", "version"]);
        assert_eq!(v["version"], VERSION);
        let i = &v["ipcps"][0];
        assert_eq!(keys(i), IPCP_KEYS);
        assert_eq!(i["ethertype"], "0x88b5");
        assert_eq!(i["mac"], "02:00:00:00:00:ab");
        assert_eq!(i["type"], "eth");
        assert_eq!(i["counters"]["rx_frames"], 7);
        assert_eq!(i["counters"]["tx_frames"], 9);
        assert_eq!(i["counters"]["rx_kernel_drops"], 1);
        assert_eq!(i["counters"]["malformed"], 0);
        assert_eq!(i["counters_age_ms"], 3);
        // Round trip through the typed struct.
        let back: IpcpList = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ipcp_list(&rows));
    }

    #[test]
    fn keys_do_not_depend_on_the_backend() {
        let raw = ipcp_row("raw", &[("rx_frames", 1), ("rx_kernel_drops", 0)]);
        let xdp = ipcp_row("xdp", &[("tx_frames", 1), ("xdp_pass", 3)]);
        let mut booting = ipcp_row("raw", &[]);
        booting.info = None;
        booting.counters_age_ms = None;
        let v = serde_json::to_value(ipcp_list(&[raw, xdp, booting])).unwrap();
        let common = [
            "malformed",
            "rx_frames",
            "rx_ring_full",
            "tx_frames",
            "unknown_eid",
        ];
        for i in v["ipcps"].as_array().unwrap() {
            assert_eq!(keys(i), IPCP_KEYS);
            for k in common {
                assert!(i["counters"][k].is_u64(), "{k} in {i}");
            }
        }
        assert!(v["ipcps"][2]["mac"].is_null());
        assert!(v["ipcps"][2]["counters_age_ms"].is_null());
    }

    #[test]
    fn flow_list_parses_with_version_and_keys() {
        let row = FlowRow {
            flow_id: 3,
            name: "oping".into(),
            pid: 7,
            ipcp: "eth-a".into(),
            state: FlowState::Peer,
            timeout_ms: 120_000,
            last_rx_ms_ago: None,
            tx_sdus: 1,
            tx_bytes: 64,
            rx_sdus: 2,
            rx_bytes: 128,
            dropped: 0,
        };
        let v: Value =
            serde_json::from_str(&serde_json::to_string(&flow_list(&[row])).unwrap()).unwrap();
        assert_eq!(keys(&v), ["flows", "version"]);
        assert_eq!(v["version"], VERSION);
        let f = &v["flows"][0];
        assert_eq!(
            keys(f),
            [
                "dropped",
                "flow_id",
                "ipcp",
                "last_rx_ms_ago",
                "name",
                "pid",
                "rx_bytes",
                "rx_sdus",
                "state",
                "timeout_ms",
                "tx_bytes",
                "tx_sdus"
            ]
        );
        assert_eq!(f["state"], "PEER");
        assert!(f["last_rx_ms_ago"].is_null());
        assert_eq!(f["rx_bytes"], 128);
    }

    #[test]
    fn name_list_and_single_documents() {
        let rows = [NameRow {
            name: "oecho".into(),
            layers: vec!["lan".into()],
            programs: vec!["oecho".into()],
        }];
        let v = serde_json::to_value(name_list(&rows)).unwrap();
        assert_eq!(keys(&v), ["names", "version"]);
        assert_eq!(keys(&v["names"][0]), ["layers", "name", "programs"]);
        assert_eq!(v["names"][0]["layers"][0], "lan");
        let b = serde_json::to_value(Bootstrapped {
            version: VERSION,
            name: "a".into(),
            layer: "l".into(),
            dev: "d".into(),
        })
        .unwrap();
        assert_eq!(keys(&b), ["dev", "layer", "name", "version"]);
        let k = serde_json::to_value(KeyWritten {
            version: VERSION,
            file: "/k".into(),
            bytes: 32,
        })
        .unwrap();
        assert_eq!(keys(&k), ["bytes", "file", "version"]);
    }

    #[test]
    fn empty_lists_still_carry_the_version() {
        let v = serde_json::to_value(flow_list(&[])).unwrap();
        assert_eq!(v["version"], VERSION);
        assert_eq!(v["flows"].as_array().map(Vec::len), Some(0));
    }
}
