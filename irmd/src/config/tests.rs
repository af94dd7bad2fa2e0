use super::*;

const GOOD: &str = r#"
[irmd]
flow_timeout_ms = 5000
ring_slots = 1024
socket_group = "ethflow"

[[ipcp]]
name = "eth-a"
type = "eth-dix"
layer = "lan"
device = "eth1"
ethertype = 0x88b6
backend = "auto"
vlan = 7
busy_poll = 50
queues = 4

[[register]]
name = "oecho"
layer = "lan"

[[bind]]
program = "oecho"
name = "oecho"
auto = ["--listen"]

[[bind]]
program = "oping"
name = "oping"
"#;

fn errors(text: &str) -> Vec<String> {
    parse("t.toml", text)
        .expect_err("configuration accepted")
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_full_configuration_parses() {
    let c = parse("t.toml", GOOD).unwrap();
    assert_eq!(c.irmd.flow_timeout_ms, Some(5000));
    assert_eq!(c.irmd.ring_slots, Some(1024));
    assert_eq!(c.irmd.socket_group.as_deref(), Some("ethflow"));
    assert_eq!(c.ipcps.len(), 1);
    let s = &c.ipcps[0];
    assert_eq!(
        (s.name.as_str(), s.layer.as_str(), s.dev.as_str()),
        ("eth-a", "lan", "eth1")
    );
    assert_eq!(s.ethertype, 0x88b6);
    assert_eq!(s.backend, "auto");
    assert_eq!(s.vlan, Some(7));
    assert_eq!(s.busy_poll_us, 50);
    assert_eq!(s.queues, Some(4));
    assert_eq!(
        c.registers,
        vec![Register {
            name: "oecho".into(),
            layer: "lan".into()
        }]
    );
    assert_eq!(
        c.binds,
        vec![
            Bind {
                program: "oecho".into(),
                name: "oecho".into(),
                auto: Some(vec!["--listen".into()]),
                user: None,
            },
            Bind {
                program: "oping".into(),
                name: "oping".into(),
                auto: None,
                user: None,
            },
        ]
    );
}

#[test]
fn an_empty_file_is_an_empty_configuration() {
    assert_eq!(parse("t.toml", "").unwrap(), Config::default());
}

#[test]
fn ethertype_as_string_and_default() {
    let c = parse(
        "t.toml",
        "[[ipcp]]\nname='a'\ntype='eth'\nlayer='l'\ndev='d'\n[[ipcp]]\nname='b'\ntype='eth'\nlayer='l'\ndev='e'\nethertype='0x88B6'\n",
    )
    .unwrap();
    assert_eq!(c.ipcps[0].ethertype, DEFAULT_ETHERTYPE);
    assert_eq!(c.ipcps[1].ethertype, 0x88b6);
}

#[test]
fn syntax_error_is_located() {
    let e = errors("[irmd]\nflow_timeout_ms = = 3\n");
    assert!(e[0].starts_with("t.toml:2:"), "{e:?}");
}

#[test]
fn every_problem_is_reported_with_line_and_key() {
    let text = "\
[irmd]
flow_timeout = 5
ring_slots = 1000
[[ipcp]]
name = \"a\"
type = \"eth\"
layer = \"lan\"
dev = \"d0\"
ethertype = \"0x0100\"
vlan = 5000
[[ipcp]]
name = \"b\"
type = 3
layer = \"lan\"
dev = \"d1\"
encrypt = \"yes\"
[[register]]
name = \"x\"
layer = \"lan\"
colour = \"red\"
";
    let e = errors(text);
    let want = [
        "t.toml:2:1: irmd.flow_timeout: unknown key",
        "t.toml:3:14: irmd.ring_slots: must be a power of two",
        "t.toml:9:13: ipcp[0].ethertype:",
        "t.toml:10:8: ipcp[0].vlan: must be between 1 and 4094",
        "t.toml:13:8: ipcp[1].type: expected a string, found integer",
        "t.toml:16:11: ipcp[1].encrypt: expected a boolean",
        "t.toml:20:1: register[0].colour: unknown key",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, w) in e.iter().zip(want) {
        assert!(got.starts_with(w), "got {got:?}, want {w:?}");
    }
}

#[test]
fn duplicate_ipcp_and_unknown_layer() {
    let text = "\
[[ipcp]]
name = \"a\"
type = \"eth\"
layer = \"lan\"
dev = \"d0\"
[[ipcp]]
name = \"a\"
type = \"eth\"
layer = \"lan\"
dev = \"d1\"
[[register]]
name = \"x\"
layer = \"wan\"
";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("t.toml:7:8: ipcp[1].name: duplicate IPCP `a`"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.toml:13:9: register[0].layer: unknown layer `wan`"),
        "{e:?}"
    );
}

#[test]
fn missing_keys_and_bad_sections() {
    let e =
        errors("ipcp_x = 2\n[[ipcp]]\nname = \"a\"\n[[bind]]\nprogram = \"p\"\n[other]\nx = 1\n");
    let joined = e.join("\n");
    for want in [
        "ipcp[0].type: missing",
        "ipcp[0].layer: missing",
        "ipcp[0].dev: missing",
        "bind[0].name: missing",
        "other: unknown section",
        "ipcp_x: unknown section",
    ] {
        assert!(joined.contains(want), "{want} not in {joined}");
    }
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    for text in [
        "irmd = 3",
        "ipcp = 3",
        "ipcp = [1, 2]",
        "[ipcp]\nname = \"a\"",
        "[irmd]\nflow_timeout_ms = -1",
        "[irmd]\nflow_timeout_ms = 0",
        "[irmd]\nsocket = \"\"",
        "[[ipcp]]\nname='a'\ntype='eth'\nlayer='l'\ndev='d'\nbackend='dpdk'",
        "[[ipcp]]\nname='a'\ntype='eth'\nlayer='l'\ndev='d'\nencrypt=true",
        "[[ipcp]]\nname='a'\ntype='eth'\nlayer='l'\ndev='d'\ndevice='e'",
        "[[bind]]\nprogram='p'\nname='n'\nauto='--listen'",
        "[[bind]]\nprogram='p'\nname='n'\nauto=['--listen', 3]",
    ] {
        let e = errors(text);
        assert!(!e.is_empty(), "{text}");
        assert!(e.iter().all(|e| e.starts_with("t.toml:")), "{e:?}");
    }
}

#[test]
fn secure_flow_names_parse_and_bad_ones_are_reported() {
    let c = parse(
        "t.toml",
        r#"
[[name]]
name = "oecho"
scrtpath = "/etc/ethflow/oecho.crt"
skeypath = "/etc/ethflow/oecho.key"
[[name]]
name = "oping"
cacrtpath = "/etc/ethflow/ca.pem"
"#,
    )
    .expect("parses");
    assert_eq!(
        c.names,
        vec![
            (
                "oecho".to_string(),
                NameSecurity {
                    scrt: Some("/etc/ethflow/oecho.crt".into()),
                    skey: Some("/etc/ethflow/oecho.key".into()),
                    ..Default::default()
                }
            ),
            (
                "oping".to_string(),
                NameSecurity {
                    cacrt: Some("/etc/ethflow/ca.pem".into()),
                    ..Default::default()
                }
            ),
        ]
    );
    let e = errors(
        r#"
[[name]]
scrtpath = "relative.crt"
[[name]]
name = "a"
scrtpath = "/x.crt"
[[name]]
name = "b"
keypath = "/x.key"
"#,
    )
    .join("\n");
    assert!(e.contains("name[0].name"), "{e}");
    assert!(e.contains("scrtpath and skeypath go together"), "{e}");
    assert!(e.contains("name[2].keypath"), "{e}");
}
