//! irmd's configuration file (TOML): daemon settings, IPCPs to bootstrap,
//! names to register, programs to bind.
//!
//! The file is read into toml's spanned document tree and checked key by key,
//! so every problem (unknown key, wrong type, bad value, duplicate IPCP, a
//! register in a layer no IPCP serves, …) is reported on its own with file,
//! line and key — not only the first one, as a derived deserializer would.
//! Nothing here does IO besides the caller reading the file: [`parse`] takes
//! the text.
//!
//! ```toml
//! [irmd]
//! flow_timeout_ms = 120000
//! [[ipcp]]
//! name = "eth-a"
//! type = "eth"
//! layer = "lan"
//! dev = "eth1"
//! [[register]]
//! name = "oecho"
//! layer = "lan"
//! [[bind]]
//! program = "oecho"
//! name = "oecho"
//! [[name]]                      # secure flows (`irm name create`)
//! name = "oecho"
//! scrtpath = "/etc/ethflow/oecho.crt"
//! skeypath = "/etc/ethflow/oecho.key"
//! ```

use irm::proto::{parse_ethertype, BootstrapSpec, NameSecurity, DEFAULT_ETHERTYPE};
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where irmd looks when `--config` is not given (used only if it exists).
pub const DEFAULT_PATH: &str = "/etc/ethflow/irmd.toml";

/// `[irmd]`: daemon settings; `None` = the command line's value (or its default).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Daemon {
    pub socket: Option<String>,
    pub socket_group: Option<String>,
    pub flow_timeout_ms: Option<u64>,
    pub ring_slots: Option<u32>,
    pub max_remote_timeout_ms: Option<u64>,
    pub metrics: Option<std::net::SocketAddr>,
}

/// `[[register]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub name: String,
    pub layer: String,
}

/// `[[bind]]`; `auto`: start `program auto…` on demand; `user`: the binding
/// (and the name's registrations and secure-flow configuration) belong to
/// this user, and programs started on demand run as this user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub program: String,
    pub name: String,
    pub auto: Option<Vec<String>>,
    pub user: Option<String>,
}

/// A whole, checked configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    pub irmd: Daemon,
    pub ipcps: Vec<BootstrapSpec>,
    pub registers: Vec<Register>,
    pub binds: Vec<Bind>,
    /// `[[name]]`: secure-flow configurations, as `irm name create` sets them.
    pub names: Vec<(String, NameSecurity)>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The key path, e.g. `ipcp[1].ethertype` (empty for a syntax error).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects errors with line/column from byte offsets.
struct Errors<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let at = span.start.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        self.list.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// Parse and check a configuration. `file` only labels the errors.
pub fn parse(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors {
        file,
        text,
        list: Vec::new(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        errs.push(e.span().unwrap_or(0..0), "", e.message().to_string());
    }
    if !errs.list.is_empty() {
        // A broken document says little reliable about its keys.
        return Err(errs.list);
    }
    let mut cfg = Config::default();
    for (k, v) in root.get_ref().iter() {
        match k.get_ref().as_ref() {
            "irmd" => match v.get_ref() {
                DeValue::Table(t) => cfg.irmd = daemon(&mut errs, t),
                other => errs.push(v.span(), "irmd", wrong("a table ([irmd])", other)),
            },
            section @ ("ipcp" | "register" | "bind" | "name") => {
                let DeValue::Array(items) = v.get_ref() else {
                    errs.push(
                        v.span(),
                        section,
                        format!("must be an array of tables ([[{section}]])"),
                    );
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{section}[{i}]");
                    let DeValue::Table(t) = item.get_ref() else {
                        errs.push(item.span(), &path, wrong("a table", item.get_ref()));
                        continue;
                    };
                    match section {
                        "ipcp" => {
                            if let Some(s) = ipcp(&mut errs, &path, item.span(), t) {
                                cfg.ipcps.push(s);
                            }
                        }
                        "register" => {
                            let f = fields(&mut errs, &path, item.span(), t, &["name", "layer"]);
                            if let [Some(name), Some(layer)] = f {
                                cfg.registers.push(Register { name, layer });
                            }
                        }
                        "name" => {
                            if let Some(n) = name_security(&mut errs, &path, item.span(), t) {
                                cfg.names.push(n);
                            }
                        }
                        _ => {
                            if let Some(b) = bind(&mut errs, &path, item.span(), t) {
                                cfg.binds.push(b);
                            }
                        }
                    }
                }
            }
            other => errs.push(
                k.span(),
                other,
                "unknown section (expected irmd, ipcp, register, bind, name)",
            ),
        }
    }
    cross_check(&mut errs, &root);
    if errs.list.is_empty() {
        Ok(cfg)
    } else {
        errs.list.sort_by_key(|e| (e.line, e.column));
        Err(errs.list)
    }
}

fn wrong(expected: &str, got: &DeValue<'_>) -> String {
    format!("expected {expected}, found {}", got.type_str())
}

fn string(errs: &mut Errors<'_>, path: &str, v: &Spanned<DeValue<'_>>) -> Option<String> {
    match v.get_ref() {
        DeValue::String(s) if !s.is_empty() => Some(s.to_string()),
        DeValue::String(_) => {
            errs.push(v.span(), path, "must not be empty");
            None
        }
        other => {
            errs.push(v.span(), path, wrong("a string", other));
            None
        }
    }
}

fn integer(
    errs: &mut Errors<'_>,
    path: &str,
    v: &Spanned<DeValue<'_>>,
    range: Range<u64>,
) -> Option<u64> {
    let DeValue::Integer(i) = v.get_ref() else {
        errs.push(v.span(), path, wrong("an integer", v.get_ref()));
        return None;
    };
    match u64::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            errs.push(
                v.span(),
                path,
                format!("must be between {} and {}", range.start, range.end - 1),
            );
            None
        }
    }
}

/// Keys in `names` as strings, all required; unknown keys are errors.
fn fields<const N: usize>(
    errs: &mut Errors<'_>,
    path: &str,
    span: Range<usize>,
    t: &DeTable<'_>,
    names: &[&str; N],
) -> [Option<String>; N] {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut seen = [false; N];
    for (k, v) in t.iter() {
        let key = format!("{path}.{}", k.get_ref());
        match names.iter().position(|n| *n == k.get_ref().as_ref()) {
            Some(i) => {
                seen[i] = true;
                out[i] = string(errs, &key, v);
            }
            None => errs.push(
                k.span(),
                &key,
                format!("unknown key (expected {})", names.join(", ")),
            ),
        }
    }
    for (i, n) in names.iter().enumerate() {
        if !seen[i] {
            errs.push(span.clone(), &format!("{path}.{n}"), "missing");
        }
    }
    out
}

/// `[[name]]`: `name` and any of the `irm name create` keywords.
fn name_security(
    errs: &mut Errors<'_>,
    path: &str,
    span: Range<usize>,
    t: &DeTable<'_>,
) -> Option<(String, NameSecurity)> {
    const KEYS: [&str; 8] = [
        "name",
        "scrtpath",
        "skeypath",
        "cacrtpath",
        "ccrtpath",
        "ckeypath",
        "sencpath",
        "cencpath",
    ];
    let before = errs.list.len();
    let mut v: [Option<String>; 8] = std::array::from_fn(|_| None);
    for (k, val) in t.iter() {
        let key = format!("{path}.{}", k.get_ref());
        match KEYS.iter().position(|n| *n == k.get_ref().as_ref()) {
            Some(i) => v[i] = string(errs, &key, val),
            None => errs.push(
                k.span(),
                &key,
                format!("unknown key (expected {})", KEYS.join(", ")),
            ),
        }
    }
    let [name, scrt, skey, cacrt, ccrt, ckey, senc, cenc] = v;
    let Some(name) = name else {
        errs.push(span, &format!("{path}.name"), "missing");
        return None;
    };
    let sec = NameSecurity {
        scrt,
        skey,
        cacrt,
        ccrt,
        ckey,
        senc,
        cenc,
    };
    if let Err(e) = sec.validate() {
        errs.push(span, path, e.to_string());
    }
    (errs.list.len() == before).then_some((name, sec))
}

fn bind(errs: &mut Errors<'_>, path: &str, span: Range<usize>, t: &DeTable<'_>) -> Option<Bind> {
    let before = errs.list.len();
    let mut auto = None;
    let mut user = None;
    let mut rest = DeTable::default();
    for (k, v) in t.iter() {
        if k.get_ref() == "user" {
            let key = format!("{path}.user");
            user = string(errs, &key, v);
            if let Some(u) = &user {
                if !valid_user_name(u) {
                    errs.push(v.span(), &key, format!("{u:?} is not a user name"));
                }
            }
            continue;
        }
        if k.get_ref() != "auto" {
            rest.insert(k.clone(), v.clone());
            continue;
        }
        let key = format!("{path}.auto");
        match v.get_ref() {
            DeValue::Array(a) => {
                let words: Vec<Option<String>> = a
                    .iter()
                    .map(|w| match w.get_ref() {
                        DeValue::String(s) => Some(s.to_string()),
                        other => {
                            errs.push(w.span(), &key, wrong("a string", other));
                            None
                        }
                    })
                    .collect();
                auto = words.into_iter().collect::<Option<Vec<_>>>();
            }
            other => errs.push(v.span(), &key, wrong("an array of strings", other)),
        }
    }
    let f = fields(errs, path, span, &rest, &["program", "name"]);
    if errs.list.len() != before {
        return None;
    }
    let [Some(program), Some(name)] = f else {
        return None;
    };
    Some(Bind {
        program,
        name,
        auto,
        user,
    })
}

/// What useradd accepts: letters, digits, `_`, `-`, `.`, not starting with
/// `-`, at most 32 bytes (the lookup itself happens when irmd applies it).
fn valid_user_name(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && !u.starts_with('-')
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn daemon(errs: &mut Errors<'_>, t: &DeTable<'_>) -> Daemon {
    let mut d = Daemon::default();
    for (k, v) in t.iter() {
        let key = format!("irmd.{}", k.get_ref());
        match k.get_ref().as_ref() {
            "socket" => d.socket = string(errs, &key, v),
            "socket_group" => d.socket_group = string(errs, &key, v),
            "flow_timeout_ms" => d.flow_timeout_ms = integer(errs, &key, v, 1..u64::MAX),
            "max_remote_timeout_ms" => {
                d.max_remote_timeout_ms = integer(errs, &key, v, 1..u64::MAX)
            }
            "metrics" => {
                d.metrics = string(errs, &key, v).and_then(|a| match a.parse() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        errs.push(v.span(), &key, format!("`{a}` is not an address:port"));
                        None
                    }
                })
            }
            "ring_slots" => {
                d.ring_slots = integer(errs, &key, v, 2..65537).and_then(|n| {
                    if n.is_power_of_two() {
                        Some(n as u32)
                    } else {
                        errs.push(v.span(), &key, "must be a power of two");
                        None
                    }
                })
            }
            _ => errs.push(
                k.span(),
                &key,
                "unknown key (expected socket, socket_group, flow_timeout_ms, ring_slots, max_remote_timeout_ms, metrics)",
            ),
        }
    }
    d
}

const IPCP_KEYS: &str =
    "name, type, layer, dev (or device), ethertype, backend, busy_poll, vlan, key, encrypt, queues";

fn ipcp(
    errs: &mut Errors<'_>,
    path: &str,
    span: Range<usize>,
    t: &DeTable<'_>,
) -> Option<BootstrapSpec> {
    let before = errs.list.len();
    let (mut name, mut layer, mut dev, mut typ) = (None, None, None, None);
    let mut spec = BootstrapSpec {
        name: String::new(),
        layer: String::new(),
        dev: String::new(),
        ethertype: DEFAULT_ETHERTYPE,
        backend: "raw".into(),
        busy_poll_us: 0,
        vlan: None,
        key: None,
        encrypt: false,
        queues: None,
    };
    for (k, v) in t.iter() {
        let key = format!("{path}.{}", k.get_ref());
        match k.get_ref().as_ref() {
            "name" => name = string(errs, &key, v),
            "layer" => layer = string(errs, &key, v),
            "dev" | "device" => {
                if dev.is_some() {
                    errs.push(k.span(), &key, "dev and device are the same key; give one");
                }
                dev = string(errs, &key, v)
            }
            "type" => {
                typ = string(errs, &key, v);
                if let Some(ty) = &typ {
                    if !matches!(ty.as_str(), "eth" | "eth-dix") {
                        errs.push(
                            v.span(),
                            &key,
                            format!("IPCP type `{ty}` is not supported (eth or eth-dix)"),
                        );
                    }
                }
            }
            "ethertype" => {
                let text = match v.get_ref() {
                    DeValue::String(s) => Some(s.to_string()),
                    DeValue::Integer(_) => {
                        integer(errs, &key, v, 0..u64::MAX).map(|n| format!("{n:#x}"))
                    }
                    other => {
                        errs.push(v.span(), &key, wrong("a string or integer", other));
                        None
                    }
                };
                if let Some(text) = text {
                    match parse_ethertype(&text) {
                        Ok(e) => spec.ethertype = e,
                        Err(e) => errs.push(v.span(), &key, e.to_string()),
                    }
                }
            }
            "backend" => {
                if let Some(b) = string(errs, &key, v) {
                    if matches!(b.as_str(), "raw" | "xdp" | "auto") {
                        spec.backend = b;
                    } else {
                        errs.push(
                            v.span(),
                            &key,
                            format!("unknown backend `{b}` (raw, xdp, auto)"),
                        );
                    }
                }
            }
            "busy_poll" | "busy_poll_us" => {
                if let Some(n) = integer(errs, &key, v, 0..u64::from(u32::MAX) + 1) {
                    spec.busy_poll_us = n as u32;
                }
            }
            "vlan" => spec.vlan = integer(errs, &key, v, 1..4095).map(|n| n as u16),
            "queues" => {
                spec.queues = integer(errs, &key, v, 1..u64::from(irm::proto::MAX_QUEUES) + 1)
                    .map(|n| n as u16)
            }
            "key" => spec.key = string(errs, &key, v),
            "encrypt" => match v.get_ref() {
                DeValue::Boolean(b) => spec.encrypt = *b,
                other => errs.push(v.span(), &key, wrong("a boolean", other)),
            },
            _ => errs.push(
                k.span(),
                &key,
                format!("unknown key (expected {IPCP_KEYS})"),
            ),
        }
    }
    for (val, n) in [
        (&name, "name"),
        (&layer, "layer"),
        (&dev, "dev"),
        (&typ, "type"),
    ] {
        if val.is_none()
            && !t
                .iter()
                .any(|(k, _)| k.get_ref() == n || (n == "dev" && k.get_ref() == "device"))
        {
            errs.push(span.clone(), &format!("{path}.{n}"), "missing");
        }
    }
    if spec.encrypt && spec.key.is_none() && !t.iter().any(|(k, _)| k.get_ref() == "key") {
        errs.push(span, &format!("{path}.encrypt"), "encrypt needs a key");
    }
    if errs.list.len() != before {
        return None;
    }
    spec.name = name?;
    spec.layer = layer?;
    spec.dev = dev?;
    Some(spec)
}

/// Rules between entries: unique IPCP names, registers in served layers.
/// Read from the document itself, so they are checked even for entries that
/// have other problems.
fn cross_check(errs: &mut Errors<'_>, root: &Spanned<DeTable<'_>>) {
    let mut names = BTreeSet::new();
    let mut layers = BTreeSet::new();
    for (i, t) in items(root, "ipcp") {
        if let Some((name, span)) = str_key(t, "name") {
            if !names.insert(name) {
                errs.push(
                    span,
                    &format!("ipcp[{i}].name"),
                    format!("duplicate IPCP `{name}`"),
                );
            }
        }
        if let Some((layer, _)) = str_key(t, "layer") {
            layers.insert(layer);
        }
    }
    for (i, t) in items(root, "register") {
        if let Some((layer, span)) = str_key(t, "layer") {
            if !layers.contains(layer) {
                errs.push(
                    span,
                    &format!("register[{i}].layer"),
                    format!("unknown layer `{layer}`: no [[ipcp]] is in it"),
                );
            }
        }
    }
}

/// The tables of an array-of-tables section, with their indices.
fn items<'a, 'i>(
    root: &'a Spanned<DeTable<'i>>,
    section: &str,
) -> impl Iterator<Item = (usize, &'a DeTable<'i>)> {
    let list: &[Spanned<DeValue<'i>>] = match root.get_ref().get(section).map(|v| v.get_ref()) {
        Some(DeValue::Array(a)) => a,
        _ => &[],
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, v)| match v.get_ref() {
            DeValue::Table(t) => Some((i, t)),
            _ => None,
        })
}

fn str_key<'a>(t: &'a DeTable<'_>, key: &str) -> Option<(&'a str, Range<usize>)> {
    let v = t.get(key)?;
    match v.get_ref() {
        DeValue::String(s) => Some((s.as_ref(), v.span())),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
