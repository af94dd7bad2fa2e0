//! The keywords of each `irm` keyword command, in one table per command: the
//! parser takes its allowed/required/repeatable keywords from the table, and
//! the manual page and `--help` list every keyword from the same table, so a
//! keyword cannot be accepted without being documented.

/// One keyword of a keyword command.
pub struct Kw {
    /// The keyword (any unambiguous prefix is accepted).
    pub name: &'static str,
    /// Its value as the manual writes it; empty for a keyword that stands
    /// alone (`encrypt`, `auto`).
    pub value: &'static str,
    pub required: bool,
    /// May come more than once (`layer a layer b`).
    pub repeat: bool,
    pub help: &'static str,
}

const fn kw(name: &'static str, value: &'static str, help: &'static str) -> Kw {
    Kw {
        name,
        value,
        required: false,
        repeat: false,
        help,
    }
}

const fn req(name: &'static str, value: &'static str, help: &'static str) -> Kw {
    Kw {
        required: true,
        ..kw(name, value, help)
    }
}

pub const IPCP_BOOTSTRAP: &[Kw] = &[
    req(
        "type",
        "eth|eth-dix",
        "The IPCP type: eth, the Ethernet IPCP (ipcpd-eth); eth-dix is the model's name for it.",
    ),
    req("name", "<ipcp>", "Name of the new IPCP, unique on this host."),
    req(
        "layer",
        "<layer>",
        "The layer it joins: IPCPs of one layer on one Ethernet segment reach each other.",
    ),
    req(
        "dev",
        "<ifname>",
        "The network interface it sends and receives on (also spelled device).",
    ),
    kw(
        "ethertype",
        "<type>",
        "Ethertype of the layer's frames, hex with 0x or decimal; default 0x88b5. Every IPCP of a layer uses the same.",
    ),
    kw(
        "backend",
        "raw|xdp|auto",
        "raw: AF_PACKET sockets (the default, works everywhere); xdp: an XDP program and AF_XDP sockets, failing if XDP cannot attach; auto: xdp, else raw.",
    ),
    kw(
        "busy-poll",
        "<µs>",
        "Spin up to this many microseconds for new work before sleeping: lower latency for a core's worth of CPU. Default 0 (always sleep).",
    ),
    kw(
        "vlan",
        "<id>",
        "802.1Q VLAN id (1..4094): send tagged frames and take only frames tagged with it. Without it, tagged frames are ignored.",
    ),
    kw(
        "key",
        "<file>",
        "Layer key file (32 bytes, owned by root, mode 0600; see irm ipcp keygen): every frame is authenticated. FILE.next is accepted too; SIGHUP to the IPCP re-reads both.",
    ),
    kw(
        "encrypt",
        "",
        "With key: encrypt frame payloads with the layer key as well.",
    ),
    kw(
        "queues",
        "<n>",
        "Receive queues, one worker thread each (1..64); flows are spread over them by endpoint id. Default: the interface's receive queue count, at most the CPUs and 16.",
    ),
];

pub const IPCP_LIST: &[Kw] = &[
    kw("name", "<ipcp>", "Only the IPCP with this name."),
    kw(
        "type",
        "eth|eth-dix",
        "Only IPCPs of this type (every IPCP here is an Ethernet IPCP).",
    ),
    kw("layer", "<layer>", "Only IPCPs in this layer."),
];

pub const IPCP_DESTROY: &[Kw] = &[req(
    "name",
    "<ipcp>",
    "The IPCP to stop: its flows go down at once and their peers are told.",
)];

pub const NAME_CREATE: &[Kw] = &[
    kw(
        "scrtpath",
        "<cert.pem>",
        "Server side: the certificate (chain) that proves the name to clients; with skeypath.",
    ),
    kw(
        "skeypath",
        "<key.pem>",
        "Server side: the certificate's private key (readable only by the server's user).",
    ),
    kw(
        "cacrtpath",
        "<ca.pem>",
        "The CA certificates a peer's certificate must chain to: on a client, the server's; on a server, it makes client certificates required.",
    ),
    kw(
        "ccrtpath",
        "<cert.pem>",
        "Client side: the client's certificate, for servers that require one; with ckeypath.",
    ),
    kw("ckeypath", "<key.pem>", "Client side: that certificate's private key."),
    kw(
        "sencpath",
        "<enc.conf>",
        "Server side: the ciphers it accepts (cipher = aes-256-gcm, chacha20-poly1305, in order of preference).",
    ),
    kw(
        "cencpath",
        "<enc.conf>",
        "Client side: the ciphers it offers, in the same form.",
    ),
];

const LAYERS: &[Kw] = &[Kw {
    name: "layer",
    value: "<layer>",
    required: true,
    repeat: true,
    help: "A layer (may be given several times).",
}];

pub const NAME_REGISTER: &[Kw] = LAYERS;
pub const NAME_UNREGISTER: &[Kw] = LAYERS;

pub const BIND_PROGRAM: &[Kw] = &[
    req("name", "<name>", "The name whose flows the program's processes accept."),
    kw(
        "auto",
        "",
        "irmd starts the program (as you, with the arguments after --) when a flow arrives for the name and no process of it runs.",
    ),
];

pub const UNBIND_PROGRAM: &[Kw] = &[req("name", "<name>", "The name to unbind from.")];

/// Keywords that take a value.
pub fn allowed(kws: &[Kw]) -> Vec<&'static str> {
    kws.iter()
        .filter(|k| !k.value.is_empty())
        .map(|k| k.name)
        .collect()
}

pub fn required(kws: &[Kw]) -> Vec<&'static str> {
    kws.iter().filter(|k| k.required).map(|k| k.name).collect()
}

pub fn repeatable(kws: &[Kw]) -> Vec<&'static str> {
    kws.iter().filter(|k| k.repeat).map(|k| k.name).collect()
}

/// The long description: `about`, then every keyword, one paragraph each.
pub fn long_about(about: &str, kws: &[Kw]) -> String {
    let mut s = format!(
        "{about}\n\nKeywords (any unambiguous prefix of a keyword is accepted, as are the \
         command words: irm i b for irm ipcp bootstrap):\n"
    );
    for k in kws {
        let mut head = k.name.to_string();
        if !k.value.is_empty() {
            head = format!("{head} {}", k.value);
        }
        let mut notes = Vec::new();
        if k.required {
            notes.push("required");
        }
        if k.repeat {
            notes.push("repeatable");
        }
        let notes = match notes.is_empty() {
            true => String::new(),
            false => format!(" ({})", notes.join(", ")),
        };
        s.push_str(&format!("\n{head}{notes}: {}\n", k.help));
    }
    s
}

/// Every keyword command's path in the command tree, its summary and its
/// keywords.
pub const COMMANDS: &[(&str, &str, &str, &[Kw])] = &[
    (
        "ipcp",
        "bootstrap",
        "Start an IPC process and bootstrap it into a layer.",
        IPCP_BOOTSTRAP,
    ),
    (
        "ipcp",
        "list",
        "List IPCPs (all, or those matching every keyword given), with their counters.",
        IPCP_LIST,
    ),
    ("ipcp", "destroy", "Stop an IPC process.", IPCP_DESTROY),
    (
        "name",
        "create",
        "Give a name secure flows: certificates, keys and ciphers.",
        NAME_CREATE,
    ),
    (
        "name",
        "register",
        "Register a name in layers, so flows to it can be allocated from other hosts.",
        NAME_REGISTER,
    ),
    (
        "name",
        "unregister",
        "Withdraw a name from layers.",
        NAME_UNREGISTER,
    ),
    (
        "bind",
        "program",
        "Bind a program to a name: its processes accept flows for the name.",
        BIND_PROGRAM,
    ),
    (
        "unbind",
        "program",
        "Undo a bind of a program to a name.",
        UNBIND_PROGRAM,
    ),
];

/// The command tree with each keyword command's keywords in its long help
/// (and so in its manual page).
pub fn document(cmd: clap::Command) -> clap::Command {
    COMMANDS.iter().fold(cmd, |cmd, (group, sub, about, kws)| {
        cmd.mut_subcommand(group, |g| {
            g.mut_subcommand(sub, |c| c.long_about(long_about(about, kws)))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manual page text of `irm <group> <sub>`, roff escapes undone.
    fn page(dir: &std::path::Path, group: &str, sub: &str) -> String {
        let f = dir.join(format!("man/man1/irm-{group}-{sub}.1"));
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .replace("\\-", "-")
            .replace("\\*(Aq", "'")
    }

    #[test]
    fn every_keyword_is_in_its_manual_page() {
        let dir = std::env::temp_dir().join(format!("irm-manual-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        irm::gen::generate(crate::command(), "1", &dir).unwrap();
        for (group, sub, about, kws) in COMMANDS {
            let text = page(&dir, group, sub);
            assert!(
                text.contains(about),
                "irm-{group}-{sub}.1 lacks its summary"
            );
            for k in *kws {
                let line = format!("{} {}", k.name, k.value);
                assert!(
                    text.contains(line.trim_end()) && text.contains(k.help),
                    "irm-{group}-{sub}.1 does not document keyword {}",
                    k.name
                );
            }
        }
        // The summary page lists each command with its keywords.
        let top = std::fs::read_to_string(dir.join("man/man1/irm-ipcp.1")).unwrap();
        assert!(top.contains("bootstrap"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn standalone_keywords_are_the_parsed_flags() {
        let alone = |kws: &[Kw]| -> Vec<&str> {
            kws.iter()
                .filter(|k| k.value.is_empty())
                .map(|k| k.name)
                .collect()
        };
        // split_flags knows `encrypt`, split_auto `auto`; nothing else stands alone.
        assert_eq!(alone(IPCP_BOOTSTRAP), ["encrypt"]);
        assert_eq!(alone(BIND_PROGRAM), ["auto"]);
        for (g, s, _, kws) in COMMANDS {
            if (*g, *s) != ("ipcp", "bootstrap") && (*g, *s) != ("bind", "program") {
                assert!(alone(kws).is_empty(), "{g} {s}");
            }
        }
        assert_eq!(required(IPCP_BOOTSTRAP), ["type", "name", "layer", "dev"]);
        assert_eq!(repeatable(NAME_REGISTER), ["layer"]);
    }

    #[test]
    fn long_help_lists_keywords() {
        let mut cmd = crate::command();
        let help = cmd
            .find_subcommand_mut("ipcp")
            .and_then(|c| c.find_subcommand_mut("bootstrap"))
            .expect("ipcp bootstrap")
            .render_long_help()
            .to_string();
        for k in IPCP_BOOTSTRAP {
            assert!(help.contains(k.help), "{}", k.name);
        }
    }
}
