//! `irm`: the command-line tool that configures irmd.
//!
//! The argument style follows the model's tool: keyword/value pairs, e.g.
//! `irm ipcp bootstrap type eth name eth-a layer eth dev veth0`.

#[path = "irm/json.rs"]
mod json;
#[path = "irm/keywords.rs"]
mod keywords;
#[path = "irm/manual.rs"]
mod manual;
#[path = "irm/output.rs"]
mod output;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use irm::client::Client;
use irm::proto::{BootstrapSpec, CliRequest, ClientRole, FlowRow, IpcpRow, NameRow, Reply};
use irm::Error;
use keywords::{pairs, pairs_multi, Usage};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "irm",
    about = "Configure the ethflow IPC Resource Manager",
    version
)]
struct Cli {
    /// Print JSON instead of text: one object per command, with a
    /// "version" key (schema: json.md in ethflow's documentation,
    /// /usr/share/doc/ethflow).
    #[arg(short = 'j', long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage IPC processes.
    Ipcp {
        #[command(subcommand)]
        cmd: IpcpCmd,
    },
    /// Manage names.
    Name {
        #[command(subcommand)]
        cmd: NameCmd,
    },
    /// Bind a program to a name: its processes accept flows for that name.
    Bind {
        #[command(subcommand)]
        cmd: BindCmd,
    },
    /// Undo a bind.
    Unbind {
        #[command(subcommand)]
        cmd: BindCmd,
    },
    /// Inspect flows.
    Flow {
        #[command(subcommand)]
        cmd: FlowCmd,
    },
    /// Write irm's manual pages and shell completions under a `share`
    /// directory (scripts/install.sh).
    #[command(hide = true)]
    Generate { dir: std::path::PathBuf },
}

#[derive(Subcommand, Debug)]
enum IpcpCmd {
    /// bootstrap type eth|eth-dix name <ipcp> layer <layer> dev|device <ifname> [ethertype 0x88b5] [backend raw|xdp|auto] [busy-poll <µs>] [vlan <id>] [key <file>] [encrypt] [queues <n>]
    Bootstrap {
        #[arg(num_args = 0.., allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// list [name <ipcp>] [type eth|eth-dix] [layer <layer>]: list IPCPs (all, or those matching).
    List {
        #[arg(num_args = 0..)]
        args: Vec<String>,
    },
    /// destroy name <ipcp>
    Destroy {
        #[arg(num_args = 0..)]
        args: Vec<String>,
    },
    /// keygen <file>: write a new layer key (32 random bytes, mode 0600,
    /// owned by you — run as root for an IPCP); never overwrites a file.
    Keygen { file: std::path::PathBuf },
}

#[derive(Subcommand, Debug)]
enum NameCmd {
    /// create <name> [scrtpath <cert.pem> skeypath <key.pem>] [cacrtpath <ca.pem>] [ccrtpath <cert.pem> ckeypath <key.pem>] [sencpath|cencpath <enc.conf>]: secure flows for the name
    Create {
        name: String,
        #[arg(num_args = 0..)]
        args: Vec<String>,
    },
    /// destroy <name>: remove the name's secure-flow configuration
    Destroy { name: String },
    /// register <name> layer <layer> [layer <layer>...]
    Register {
        name: String,
        #[arg(num_args = 0..)]
        args: Vec<String>,
    },
    /// unregister <name> layer <layer> [layer <layer>...]
    Unregister {
        name: String,
        #[arg(num_args = 0..)]
        args: Vec<String>,
    },
    /// List names.
    List,
}

#[derive(Subcommand, Debug)]
enum BindCmd {
    /// program <program> name <name> [auto [-- <args>...]]: with `auto`, irmd
    /// starts `<program> <args>` (as you) when a flow arrives for the name and
    /// no process of the program runs.
    Program {
        program: String,
        #[arg(num_args = 0..)]
        args: Vec<String>,
        /// Arguments for an auto-started program (after `--`).
        #[arg(last = true)]
        auto_args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum FlowCmd {
    /// List flows.
    List,
}

/// Why a command failed: exit status 2 for a usage error (as clap's own),
/// 1 when irmd (or the system) refused, as iproute2 does.
#[derive(Debug)]
enum Failure {
    Usage(Usage),
    Refused(String),
}

impl From<Usage> for Failure {
    fn from(u: Usage) -> Failure {
        Failure::Usage(u)
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Refused(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Failure {
        Failure::Refused(s.to_string())
    }
}

/// The command tree with the model's habit: any unambiguous prefix of a
/// command (`irm i l`, `irm n reg`).
/// Each keyword command's long help lists its keywords.
fn command() -> clap::Command {
    manual::document(Cli::command())
        .infer_subcommands(true)
        .mut_subcommands(|c| c.infer_subcommands(true))
}

fn main() -> ExitCode {
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli.cmd, cli.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("irm: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(e)) => {
            eprintln!("irm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn connect() -> Result<std::sync::Arc<Client>, String> {
    Client::connect(ClientRole::Cli).map_err(|e| match e {
        Error::Irmd(m) => {
            format!("cannot reach irmd at {m} (is irmd running? IRM_SOCKET selects the socket)")
        }
        other => other.to_string(),
    })
}

fn ask(client: &Client, msg: CliRequest, wait: Duration) -> Result<Reply, String> {
    let r = client
        .cli_request(msg, Some(wait))
        .map_err(|e| e.to_string())?;
    match r.env.msg {
        Reply::Err(e) => Err(e.to_string()),
        m => Ok(m),
    }
}

fn request(msg: CliRequest, wait: Duration) -> Result<Reply, String> {
    ask(&*connect()?, msg, wait)
}

/// `irm name register` / `unregister`: the request `req` makes for each
/// `layer` keyword of `args` (checked against `kw`), all on one connection.
fn per_layer(
    kw: &[manual::Kw],
    args: &[String],
    req: impl Fn(String) -> CliRequest,
) -> Result<(), Failure> {
    let (allowed, required) = (manual::allowed(kw), manual::required(kw));
    let kv = pairs_multi(args, &allowed, &required, &manual::repeatable(kw))?;
    let client = connect()?;
    for layer in &kv["layer"] {
        ask(&client, req(layer.clone()), WAIT)?;
    }
    Ok(())
}

/// `encrypt` stands alone; every other bootstrap keyword takes a value.
fn split_flags(args: &[String]) -> (Vec<String>, bool) {
    split_flag(args, |a| a == "encrypt")
}

/// `auto` stands alone in `bind program`; any unambiguous prefix of it too.
fn split_auto(args: &[String]) -> (Vec<String>, bool) {
    split_flag(args, |a| !a.is_empty() && "auto".starts_with(a))
}

/// `args` without the flag words `is_flag` picks (each stands alone where a
/// keyword would be; every other keyword takes a value), and whether any was
/// there.
fn split_flag(args: &[String], is_flag: impl Fn(&str) -> bool) -> (Vec<String>, bool) {
    let mut rest = Vec::new();
    let mut found = false;
    let mut i = 0;
    while i < args.len() {
        if is_flag(&args[i]) {
            found = true;
            i += 1;
        } else {
            rest.extend(args[i..(i + 2).min(args.len())].iter().cloned());
            i += 2;
        }
    }
    (rest, found)
}

/// How long a command waits for irmd's answer.
const WAIT: Duration = Duration::from_secs(15);

fn run(cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Generate { dir } => {
            irm::gen::generate(command(), "1", &dir)
                .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        }
        Cmd::Ipcp {
            cmd: IpcpCmd::Bootstrap { args },
        } => {
            let (args, encrypt) = split_flags(&args);
            let kw = manual::IPCP_BOOTSTRAP;
            let kv = pairs(&args, &manual::allowed(kw), &manual::required(kw))?;
            keywords::ipcp_type(&kv["type"])?;
            let ethertype = kv
                .get("ethertype")
                .map(|s| irm::proto::parse_ethertype(s).map_err(|e| Usage(e.to_string())))
                .transpose()?
                .unwrap_or(irm::proto::DEFAULT_ETHERTYPE);
            let backend = kv.get("backend").cloned().unwrap_or_else(|| "raw".into());
            let busy_poll_us = match kv.get("busy-poll") {
                Some(v) => v.parse::<u32>().map_err(|_| {
                    Usage(format!("busy-poll `{v}` is not a number of microseconds"))
                })?,
                None => 0,
            };
            let vlan = kv
                .get("vlan")
                .map(|v| {
                    v.parse::<u16>()
                        .ok()
                        .filter(|v| (1..=4094).contains(v))
                        .ok_or_else(|| Usage(format!("vlan `{v}` is not a VLAN id (1..4094)")))
                })
                .transpose()?;
            let queues = kv.get("queues").map(|v| keywords::queues(v)).transpose()?;
            let key = kv
                .get("key")
                .map(|k| {
                    std::fs::canonicalize(k)
                        .map(|p| p.display().to_string())
                        .map_err(|e| format!("key file {k}: {e}"))
                })
                .transpose()?;
            request(
                CliRequest::IpcpBootstrap(BootstrapSpec {
                    name: kv["name"].clone(),
                    layer: kv["layer"].clone(),
                    dev: kv["dev"].clone(),
                    ethertype,
                    backend,
                    busy_poll_us,
                    vlan,
                    key,
                    encrypt,
                    queues,
                }),
                WAIT,
            )?;
            match json {
                true => json::print(&json::Bootstrapped {
                    version: json::VERSION,
                    name: kv["name"].clone(),
                    layer: kv["layer"].clone(),
                    dev: kv["dev"].clone(),
                }),
                false => println!(
                    "Bootstrapped IPCP {} in layer {} on {}.",
                    kv["name"], kv["layer"], kv["dev"]
                ),
            }
        }
        Cmd::Ipcp {
            cmd: IpcpCmd::List { args },
        } => {
            let filter = pairs(&args, &manual::allowed(manual::IPCP_LIST), &[])?;
            let Reply::IpcpRows(mut rows) = request(CliRequest::IpcpList, WAIT)? else {
                return Err("unexpected reply".into());
            };
            rows.retain(|r| ipcp_matches(r, &filter));
            output::ipcps(&rows, json);
        }
        Cmd::Ipcp {
            cmd: IpcpCmd::Keygen { file },
        } => {
            irm::keyfile::keygen(&file).map_err(|e| e.to_string())?;
            match json {
                true => json::print(&json::KeyWritten {
                    version: json::VERSION,
                    file: file.display().to_string(),
                    bytes: irm::keyfile::KEY_LEN as u32,
                }),
                false => println!(
                    "Wrote a layer key to {} (32 bytes, mode 0600).",
                    file.display()
                ),
            }
        }
        Cmd::Ipcp {
            cmd: IpcpCmd::Destroy { args },
        } => {
            let kw = manual::IPCP_DESTROY;
            let kv = pairs(&args, &manual::allowed(kw), &manual::required(kw))?;
            request(
                CliRequest::IpcpDestroy {
                    name: kv["name"].clone(),
                },
                WAIT,
            )?;
        }
        Cmd::Name {
            cmd: NameCmd::Create { name, args },
        } => {
            let kv = pairs(&args, &manual::allowed(manual::NAME_CREATE), &[])?;
            // irmd keeps absolute paths: the library reads them from
            // wherever the application runs.
            let abs = |k: &str| -> Result<Option<String>, String> {
                kv.get(k)
                    .map(|p| {
                        std::path::absolute(p)
                            .map(|a| a.display().to_string())
                            .map_err(|e| format!("{k} {p}: {e}"))
                    })
                    .transpose()
            };
            let security = irm::proto::NameSecurity {
                scrt: abs("scrtpath")?,
                skey: abs("skeypath")?,
                cacrt: abs("cacrtpath")?,
                ccrt: abs("ccrtpath")?,
                ckey: abs("ckeypath")?,
                senc: abs("sencpath")?,
                cenc: abs("cencpath")?,
            };
            security.validate().map_err(|e| e.to_string())?;
            request(CliRequest::NameCreate { name, security }, WAIT)?;
        }
        Cmd::Name {
            cmd: NameCmd::Destroy { name },
        } => {
            request(CliRequest::NameDestroy { name }, WAIT)?;
        }
        Cmd::Name {
            cmd: NameCmd::Register { name, args },
        } => {
            per_layer(manual::NAME_REGISTER, &args, |layer| {
                CliRequest::NameRegister {
                    name: name.clone(),
                    layer,
                }
            })?;
        }
        Cmd::Name {
            cmd: NameCmd::Unregister { name, args },
        } => {
            per_layer(manual::NAME_UNREGISTER, &args, |layer| {
                CliRequest::NameUnregister {
                    name: name.clone(),
                    layer,
                }
            })?;
        }
        Cmd::Name { cmd: NameCmd::List } => {
            // The list comes in pages; one connection asks for them all.
            let client = connect()?;
            let mut rows: Vec<NameRow> = Vec::new();
            loop {
                let after = rows.last().map(|r| r.name.clone());
                let Reply::NameRows(page) = ask(&client, CliRequest::NameList { after }, WAIT)?
                else {
                    return Err("unexpected reply".into());
                };
                if page.is_empty() {
                    break;
                }
                rows.extend(page);
            }
            output::names(&rows, json);
        }
        Cmd::Bind {
            cmd:
                BindCmd::Program {
                    program,
                    args,
                    auto_args,
                },
        } => {
            let (args, auto) = split_auto(&args);
            let kw = manual::BIND_PROGRAM;
            let kv = pairs(&args, &manual::allowed(kw), &manual::required(kw))?;
            let name = kv["name"].clone();
            let req = match auto {
                true => {
                    let path = std::env::var("PATH").unwrap_or_default();
                    let (prog, exec) =
                        irm::proto::resolve_program(&program, &path).map_err(|e| e.to_string())?;
                    CliRequest::BindProgramAuto {
                        prog,
                        name,
                        exec,
                        args: auto_args,
                    }
                }
                false if auto_args.is_empty() => CliRequest::BindProgram {
                    prog: program,
                    name,
                },
                false => return Err(Usage("arguments after `--` need `auto`".into()).into()),
            };
            request(req, WAIT)?;
        }
        Cmd::Unbind {
            cmd:
                BindCmd::Program {
                    program,
                    args,
                    auto_args,
                },
        } => {
            if !auto_args.is_empty() {
                return Err(Usage("unbind takes no arguments after `--`".into()).into());
            }
            let kw = manual::UNBIND_PROGRAM;
            let kv = pairs(&args, &manual::allowed(kw), &manual::required(kw))?;
            request(
                CliRequest::UnbindProgram {
                    prog: program,
                    name: kv["name"].clone(),
                },
                WAIT,
            )?;
        }
        Cmd::Flow { cmd: FlowCmd::List } => {
            // The list comes in pages; one connection asks for them all.
            let client = connect()?;
            let mut rows: Vec<FlowRow> = Vec::new();
            loop {
                let after = rows.last().map(|r| r.flow_id);
                let Reply::FlowRows(page) = ask(&client, CliRequest::FlowList { after }, WAIT)?
                else {
                    return Err("unexpected reply".into());
                };
                let done = page.len() < irm::proto::FLOW_ROWS_PER_MSG;
                rows.extend(page);
                if done {
                    break;
                }
            }
            output::flows(&rows, json);
        }
    }
    Ok(())
}

/// `irm ipcp list` filters: every IPCP here is of type eth (eth-dix).
fn ipcp_matches(r: &IpcpRow, filter: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(k, v)| match k.as_str() {
        "name" => r.name == *v,
        "layer" => r.layer == *v,
        "type" => matches!(v.as_str(), "eth" | "eth-dix"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn encrypt_stands_alone() {
        let (rest, enc) = split_flags(&s(&["type", "eth", "encrypt", "key", "/k"]));
        assert!(enc);
        assert_eq!(rest, s(&["type", "eth", "key", "/k"]));
        let (rest, enc) = split_flags(&s(&["type", "eth"]));
        assert!(!enc);
        assert_eq!(rest, s(&["type", "eth"]));
    }

    #[test]
    fn keyword_pairs() {
        let kv = pairs(
            &s(&["type", "eth", "name", "a"]),
            &["type", "name"],
            &["type"],
        )
        .unwrap();
        assert_eq!(kv["name"], "a");
        assert!(pairs(&s(&["type"]), &["type"], &[])
            .unwrap_err()
            .contains("no value"));
        assert!(pairs(&s(&["colour", "red"]), &["type"], &[])
            .unwrap_err()
            .contains("unknown keyword `colour`"));
        assert!(pairs(&s(&["type", "eth"]), &["type", "dev"], &["dev"])
            .unwrap_err()
            .contains("missing `dev"));
        assert!(pairs(&s(&["type", "a", "type", "b"]), &["type"], &[])
            .unwrap_err()
            .contains("twice"));
    }

    fn parse(v: &[&str]) -> Result<Cmd, clap::Error> {
        command()
            .try_get_matches_from(v)
            .and_then(|m| Cli::from_arg_matches(&m))
            .map(|c| c.cmd)
    }

    #[test]
    fn command_prefixes() {
        assert!(matches!(
            parse(&["irm", "i", "l"]),
            Ok(Cmd::Ipcp {
                cmd: IpcpCmd::List { .. }
            })
        ));
        assert!(matches!(
            parse(&["irm", "n", "reg", "oecho", "layer", "eth"]),
            Ok(Cmd::Name {
                cmd: NameCmd::Register { .. }
            })
        ));
        assert!(matches!(
            parse(&["irm", "ip", "boot", "type", "eth-dix"]),
            Ok(Cmd::Ipcp {
                cmd: IpcpCmd::Bootstrap { .. }
            })
        ));
        // `b` could be bind only at the top (bootstrap is under ipcp).
        assert!(matches!(
            parse(&["irm", "b", "p", "oecho", "name", "oecho"]),
            Ok(Cmd::Bind { .. })
        ));
        // Not a prefix of anything: clap's usage error (exit status 2).
        let e = parse(&["irm", "x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn list_filters() {
        let row = IpcpRow {
            name: "eth-a".into(),
            pid: 1,
            layer: "lan".into(),
            dev: "eth1".into(),
            ethertype: 0x88b5,
            state: "operational".into(),
            info: None,
            counters: Vec::new(),
            counters_age_ms: None,
        };
        let f = |v: &[&str]| pairs(&s(v), &["name", "type", "layer"], &[]).unwrap();
        assert!(ipcp_matches(&row, &f(&[])));
        assert!(ipcp_matches(&row, &f(&["name", "eth-a"])));
        assert!(ipcp_matches(&row, &f(&["type", "eth-dix", "lay", "lan"])));
        assert!(!ipcp_matches(&row, &f(&["name", "eth-b"])));
        assert!(!ipcp_matches(&row, &f(&["type", "udp4"])));
        assert!(!ipcp_matches(&row, &f(&["layer", "wan"])));
    }
}
