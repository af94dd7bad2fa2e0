//! Administration in virtual time: limits, who may do what, IPCPs, names,
//! auto-start and the lists.

use super::*;

#[test]
fn per_uid_limits_are_enforced_with_a_clear_error() {
    let mut t = T::new(Policy {
        max_names_per_uid: 2,
        max_conns_per_uid: 3,
        max_accepts_per_uid: 1,
        max_flows_per_uid: 1,
        ..Policy::default()
    });
    t.ipcp();
    t.connect(2, user(1000), ClientRole::Cli);
    for (i, n) in ["a", "b"].iter().enumerate() {
        let r = t.register(2, i as u64 + 1, n);
        assert_eq!(r, Reply::Ok);
    }
    let r = t.register(2, 3, "c");
    assert!(
        matches!(&r, Reply::Err(Error::NoMem(m)) if m.contains("names")),
        "{r:?}"
    );
    // Root is not held to it.
    let r = t.register(ROOT_CLI, 4, "c");
    assert_eq!(r, Reply::Ok);
    // Names longer than 255 bytes are refused.
    let r = t.register(ROOT_CLI, 5, &"n".repeat(256));
    assert!(is_err(&r, irm::error::ENAME), "{r:?}");
    // Accepts.
    t.connect(3, user(1000), ClientRole::App { prog: "p".into() });
    t.input(Input::App {
        conn: 3,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    t.input(Input::App {
        conn: 3,
        id: 2,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    assert!(matches!(t.reply(3, 2), Some(Reply::Err(Error::NoMem(m))) if m.contains("accepts")));
    // Flows.
    for id in [3, 4] {
        t.input(Input::App {
            conn: 3,
            id,
            req: AppRequest::FlowAlloc {
                name: "x".into(),
                qos: Qos::raw(),
                timeout_ms: None,
            },
        });
    }
    assert!(matches!(t.reply(3, 4), Some(Reply::Err(Error::NoMem(m))) if m.contains("flows")));
    // Connections: this uid holds 2; the 4th is refused and closed.
    t.connect(4, user(1000), ClientRole::Cli);
    t.input(Input::Connected {
        conn: 5,
        cred: user(1000),
    });
    assert!(
        matches!(t.reply(5, 0), Some(Reply::Err(Error::NoMem(m))) if m.contains("connections"))
    );
    assert!(t.take().contains(&Output::Close { conn: 5 }));
}

#[test]
fn name_list_pages_stay_under_the_message_limit() {
    let mut t = T::new(Policy::default());
    t.ipcp();
    for i in 0..300 {
        let name = format!("{i:04}{}", "n".repeat(251));
        let r = t.register(ROOT_CLI, 10 + i, &name);
        assert_eq!(r, Reply::Ok);
    }
    let mut after = None;
    let mut seen = 0;
    loop {
        let r = t.cli(
            ROOT_CLI,
            1,
            CliRequest::NameList {
                after: after.clone(),
            },
        );
        let bytes = irm::proto::encode(&irm::proto::Envelope {
            id: 1,
            msg: r.clone(),
        })
        .unwrap();
        assert!(bytes.len() <= irm::proto::MAX_MSG);
        let Reply::NameRows(rows) = r else { panic!() };
        if rows.is_empty() {
            break;
        }
        seen += rows.len();
        after = rows.last().map(|r| r.name.clone());
    }
    assert_eq!(seen, 300);
}

/// Every CLI request by root, by the owner of the objects it touches (a
/// member), and by another member; and what each must get.
#[test]
fn authorization_table() {
    const OWNER: u32 = 1000;
    const OTHER: u32 = 1001;
    #[derive(Clone, Copy, Debug)]
    enum Who {
        Root,
        Owner,
        Other,
    }
    // (request, root allowed, owner allowed, other allowed)
    let table: Vec<(CliRequest, [bool; 3])> = vec![
        (
            CliRequest::IpcpBootstrap(BootstrapSpec {
                dev: "veth1".into(),
                ..spec("eth-b")
            }),
            [true, false, false],
        ),
        (
            CliRequest::IpcpDestroy {
                name: "eth-a".into(),
            },
            [true, false, false],
        ),
        (CliRequest::IpcpList, [true, true, true]),
        (
            CliRequest::NameRegister {
                name: "svc".into(),
                layer: "eth".into(),
            },
            [true, true, false],
        ),
        (
            CliRequest::BindProgram {
                prog: "srv2".into(),
                name: "svc".into(),
            },
            [true, true, false],
        ),
        (
            CliRequest::UnbindProgram {
                prog: "srv".into(),
                name: "svc".into(),
            },
            [true, true, false],
        ),
        (
            CliRequest::NameUnregister {
                name: "svc".into(),
                layer: "eth".into(),
            },
            [true, true, false],
        ),
        (CliRequest::NameList { after: None }, [true, true, true]),
        (CliRequest::FlowList { after: None }, [true, true, true]),
    ];
    for (req, allowed) in table {
        for (k, who) in [Who::Root, Who::Owner, Who::Other].into_iter().enumerate() {
            // A fresh world each time: an IPCP, and OWNER's name with a binding.
            let mut t = T::new(Policy::default());
            t.ipcp();
            serve(&mut t, 3, user(OWNER), "svc", "srv");
            let conn = 9;
            let cred = match who {
                Who::Root => ROOT,
                Who::Owner => user(OWNER),
                Who::Other => user(OTHER),
            };
            t.connect(conn, cred, ClientRole::Cli);
            t.input(Input::Cli {
                conn,
                id: 1,
                req: req.clone(),
            });
            let r = t.reply(conn, 1);
            let denied = matches!(&r, Some(Reply::Err(Error::Perm(_))));
            assert_eq!(!denied, allowed[k], "{req:?} by {who:?}: got {r:?}");
            if !denied {
                // Allowed requests did what they say (bootstrap answers later).
                assert!(
                    r.is_none() || !matches!(r, Some(Reply::Err(_))),
                    "{req:?} by {who:?}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn flows_are_private_to_their_process_and_uid() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    let flow_of = |t: &mut T, conn: ConnId, uid: u32| {
        t.connect(conn, user(uid), ClientRole::App { prog: "c".into() });
        t.allocated_flow(ipcp, conn)
    };
    let a = flow_of(&mut t, 2, 1000);
    let b = flow_of(&mut t, 3, 1001);
    // 1001 cannot deallocate 1000's flow.
    t.input(Input::App {
        conn: 3,
        id: 5,
        req: AppRequest::FlowDealloc { flow_id: a },
    });
    assert_eq!(t.reply(3, 5), Some(Reply::Err(Error::NotAlloc)));
    // Each member's list shows its own flow only; root sees both.
    let list = |t: &mut T, conn: ConnId, cred: Cred| -> Vec<u32> {
        t.connect(conn, cred, ClientRole::Cli);
        match t.flow_list(conn, &[]) {
            Reply::FlowRows(r) => r.into_iter().map(|r| r.flow_id).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(list(&mut t, 10, user(1000)), vec![a]);
    assert_eq!(list(&mut t, 11, user(1001)), vec![b]);
    assert_eq!(list(&mut t, 12, ROOT), vec![a, b]);
}

#[test]
fn a_destroyed_ipcp_is_gone_at_once_and_its_device_is_free_again() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    let r = t.cli(
        ROOT_CLI,
        7,
        CliRequest::IpcpDestroy {
            name: "eth-a".into(),
        },
    );
    assert_eq!(r, Reply::Ok);
    assert!(
        t.take()
            .iter()
            .any(|o| matches!(o, Output::Kill { ipcp: i } if *i == ipcp)),
        "the shell is told to stop the process"
    );
    match t.cli(ROOT_CLI, 8, CliRequest::IpcpList) {
        Reply::IpcpRows(rows) => assert!(rows.is_empty(), "still listed: {rows:?}"),
        other => panic!("unexpected {other:?}"),
    }
    // The same device and ethertype can be bootstrapped again at once.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 9,
        req: CliRequest::IpcpBootstrap(spec("eth-b")),
    });
    assert!(
        t.take().iter().any(|o| matches!(o, Output::Spawn { .. })),
        "a new IPCP on the freed device is spawned"
    );
}

#[test]
fn destroying_an_ipcp_takes_its_flows_down() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "c".into() });
    t.request_flow(2, 1, None);
    let (flow_id, req) = t.alloc_req().unwrap();
    t.input(alloc_ok(ipcp, req, flow_id));
    t.take();
    let r = t.cli(
        ROOT_CLI,
        2,
        CliRequest::IpcpDestroy {
            name: "eth-a".into(),
        },
    );
    assert_eq!(r, Reply::Ok);
    let out = t.take();
    assert!(out.contains(&Output::Kill { ipcp }), "{out:?}");
    assert!(out.contains(&Output::SetFlowState {
        flow_id,
        state: FlowState::Down
    }));
    match t.cli(ROOT_CLI, 4, CliRequest::FlowList { after: None }) {
        Reply::FlowRows(r) => assert_eq!(r[0].state, FlowState::Down),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_connection_without_hello_is_closed_after_five_seconds() {
    let mut t = T::new(Policy::default());
    t.input(Input::Connected {
        conn: 7,
        cred: user(1000),
    });
    t.connect(8, user(1000), ClientRole::Cli);
    t.advance(Duration::from_millis(4_999));
    assert!(!t.outs.contains(&Output::Close { conn: 7 }));
    t.advance(Duration::from_millis(1));
    assert!(matches!(t.reply(7, 0), Some(Reply::Err(Error::Invalid(m))) if m.contains("hello")));
    let out = t.take();
    assert!(out.contains(&Output::Close { conn: 7 }), "{out:?}");
    assert!(!out.contains(&Output::Close { conn: 8 }), "{out:?}");
}

#[test]
fn flow_list_shows_counters_the_ipcp_reports_when_asked() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "c".into() });
    let flow_id = t.allocated_flow(ipcp, 2);
    // A periodic report, then a second passes.
    let old = FlowCounters {
        flow_id,
        rx_sdus: 1,
        last_rx_ms_ago: Some(0),
        ..Default::default()
    };
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::FlowCounters(vec![old]),
    });
    t.take();
    t.advance(Duration::from_secs(1));
    let row = |r: Reply| match r {
        Reply::FlowRows(rows) => rows.into_iter().next().expect("one row"),
        other => panic!("{other:?}"),
    };
    // Asked now, the IPCP's fresh numbers are what the list shows.
    let fresh = FlowCounters {
        rx_sdus: 9,
        last_rx_ms_ago: Some(20),
        ..old
    };
    let r = row(t.flow_list(ROOT_CLI, &[fresh]));
    assert_eq!((r.rx_sdus, r.last_rx_ms_ago), (9, Some(20)));
    // An IPCP that does not answer holds the list up for flow_list_wait
    // only; then the last reported numbers are shown, aged.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 78,
        req: CliRequest::FlowList { after: None },
    });
    assert!(t.reply(ROOT_CLI, 78).is_none(), "waits for the IPCP");
    t.advance(Duration::from_millis(199));
    assert!(t.reply(ROOT_CLI, 78).is_none(), "still within the wait");
    t.advance(Duration::from_millis(1));
    let r = row(t.reply(ROOT_CLI, 78).expect("answered at the deadline"));
    assert_eq!((r.rx_sdus, r.last_rx_ms_ago), (9, Some(220)));
}

#[test]
fn a_bootstrap_on_another_protocols_ethertype_is_refused() {
    let mut t = T::new(Policy::default());
    for ethertype in [0x0800, 0x86dd, 0x8100, 0x05dc, 0xffff] {
        let r = t.cli(
            ROOT_CLI,
            3,
            CliRequest::IpcpBootstrap(BootstrapSpec {
                ethertype,
                ..spec("eth-x")
            }),
        );
        assert!(
            is_err(&r, Error::Invalid(String::new()).code()),
            "{ethertype:#06x}: {r:?}"
        );
        assert!(
            !t.take().iter().any(|o| matches!(o, Output::Spawn { .. })),
            "{ethertype:#06x} spawned an IPCP"
        );
    }
}

#[test]
fn auto_start_runs_the_bound_program_once_per_deadline_as_its_uid() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    serve(&mut t, 3, user(1000), "svc", "srv");
    // Without auto: no instance, refused at once, nothing started.
    arrive(&mut t, ipcp, 8, "svc");
    assert_eq!(refusal(&mut t, 8), Some(RefuseReason::NoAcceptingProcess));
    let r = t.cli(
        3,
        3,
        CliRequest::BindProgramAuto {
            prog: "srv".into(),
            name: "svc".into(),
            exec: "/usr/bin/srv".into(),
            args: vec!["--listen".into()],
        },
    );
    assert_eq!(r, Reply::Ok);
    arrive(&mut t, ipcp, 9, "svc");
    let outs = t.take();
    let started: Vec<_> = outs
        .iter()
        .filter(|o| matches!(o, Output::StartProgram { .. }))
        .collect();
    assert_eq!(
        started,
        vec![&Output::StartProgram {
            exec: "/usr/bin/srv".into(),
            args: vec!["--listen".into()],
            uid: 1000,
        }]
    );
    assert!(!outs.iter().any(|o| matches!(
        o,
        Output::ToIpcp {
            msg: IrmdToIpcp::FlowAcceptResult { .. },
            ..
        }
    )));
    // A second request within the deadline waits too, without a second start.
    arrive(&mut t, ipcp, 10, "svc");
    assert!(!t
        .take()
        .iter()
        .any(|o| matches!(o, Output::StartProgram { .. })));
    // The started program connects and accepts: it gets the first flow.
    t.connect(4, user(1000), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 4,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    assert!(matches!(t.reply(4, 1), Some(Reply::FlowReady { .. })));
    // Once the deadline passed and the program is gone, a request starts it again.
    t.input(Input::Closed { conn: 4 });
    t.advance(Duration::from_secs(3));
    t.take();
    arrive(&mut t, ipcp, 11, "svc");
    assert!(t
        .take()
        .iter()
        .any(|o| matches!(o, Output::StartProgram { uid: 1000, .. })));
    // After an unbind, nothing starts and the request is refused.
    let r = t.cli(
        3,
        4,
        CliRequest::UnbindProgram {
            prog: "srv".into(),
            name: "svc".into(),
        },
    );
    assert_eq!(r, Reply::Ok);
    t.advance(Duration::from_secs(3));
    t.take();
    arrive(&mut t, ipcp, 12, "svc");
    let outs = t.take();
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::StartProgram { .. })));
}

#[test]
fn name_security_is_owned_checked_and_travels_with_flows() {
    let mut t = T::new(Policy::default());
    let alice = Cred {
        uid: 1000,
        gid: 1000,
        pid: 50,
        admin: false,
    };
    let bob = Cred {
        uid: 1001,
        gid: 1001,
        pid: 51,
        admin: false,
    };
    t.connect(20, alice, ClientRole::Cli);
    t.connect(21, bob, ClientRole::Cli);
    let sec = irm::proto::NameSecurity {
        scrt: Some("/etc/ethflow/svc.crt".into()),
        skey: Some("/etc/ethflow/svc.key".into()),
        ..Default::default()
    };
    let create = |security| CliRequest::NameCreate {
        name: "svc".into(),
        security,
    };
    // Relative paths and a certificate without its key are refused.
    let bad = irm::proto::NameSecurity {
        scrt: Some("svc.crt".into()),
        ..sec.clone()
    };
    assert!(matches!(
        t.cli(20, 1, create(bad)),
        Reply::Err(Error::Invalid(_))
    ));
    let half = irm::proto::NameSecurity {
        skey: None,
        ..sec.clone()
    };
    assert!(matches!(
        t.cli(20, 2, create(half)),
        Reply::Err(Error::Invalid(_))
    ));
    assert_eq!(t.cli(20, 3, create(sec.clone())), Reply::Ok);
    // Another user can neither replace nor remove it.
    assert!(matches!(
        t.cli(21, 1, create(sec.clone())),
        Reply::Err(Error::Perm(_))
    ));
    assert!(matches!(
        t.cli(21, 2, CliRequest::NameDestroy { name: "svc".into() }),
        Reply::Err(Error::Perm(_))
    ));
    assert_eq!(t.reg.security_of("svc", 1000), Some(sec.clone()));
    // Alice's configuration is not handed to Bob's flows.
    assert_eq!(t.reg.security_of("svc", 1001), None);
    assert_eq!(
        t.cli(20, 4, CliRequest::NameDestroy { name: "svc".into() }),
        Reply::Ok
    );
    assert_eq!(t.reg.security_of("svc", 1000), None);
    assert!(matches!(
        t.cli(20, 5, CliRequest::NameDestroy { name: "svc".into() }),
        Reply::Err(Error::Name(_))
    ));
    // Root's applies to everyone.
    t.connect(
        22,
        Cred {
            uid: 0,
            gid: 0,
            pid: 52,
            admin: true,
        },
        ClientRole::Cli,
    );
    assert_eq!(t.cli(22, 1, create(sec.clone())), Reply::Ok);
    assert_eq!(t.reg.security_of("svc", 1001), Some(sec));
}

#[test]
fn ipcp_list_shows_counters_the_ipcp_reports_when_asked() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    let counters = |rx: u64, tx: u64| vec![("rx_frames".to_string(), rx), ("tx_frames".into(), tx)];
    // A periodic report, then a second passes without one.
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::Counters(counters(0, 1)),
    });
    t.advance(Duration::from_secs(1));
    t.take();
    let row = |r: Option<Reply>| match r {
        Some(Reply::IpcpRows(rows)) => rows.into_iter().next().expect("one row"),
        other => panic!("{other:?}"),
    };
    // The list waits for the IPCP's answer to ReportCounters.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 5,
        req: CliRequest::IpcpList,
    });
    assert!(t.reply(ROOT_CLI, 5).is_none(), "waits for the IPCP");
    let asked = t
        .take()
        .into_iter()
        .find_map(|o| match o {
            Output::ToIpcp {
                ipcp: i,
                id,
                msg: IrmdToIpcp::ReportCounters,
                ..
            } if i == ipcp => Some(id),
            _ => None,
        })
        .expect("irmd asks the IPCP for its counters");
    t.input(Input::FromIpcp {
        ipcp,
        id: 0,
        msg: IpcpToIrmd::Counters(counters(7, 7)),
    });
    t.input(Input::FromIpcp {
        ipcp,
        id: asked,
        msg: IpcpToIrmd::Done(Ok(())),
    });
    let r = row(t.reply(ROOT_CLI, 5));
    assert_eq!(r.counters, counters(7, 7));
    assert_eq!(r.counters_age_ms, Some(0));
    // An IPCP that does not answer holds the list up for flow_list_wait
    // only; then the last numbers are shown with their age.
    t.input(Input::Cli {
        conn: ROOT_CLI,
        id: 6,
        req: CliRequest::IpcpList,
    });
    t.advance(Duration::from_millis(199));
    assert!(t.reply(ROOT_CLI, 6).is_none(), "still within the wait");
    t.advance(Duration::from_millis(1));
    let r = row(t.reply(ROOT_CLI, 6));
    assert_eq!(r.counters, counters(7, 7));
    assert_eq!(r.counters_age_ms, Some(200));
}

#[test]
fn ipcp_list_without_an_operational_ipcp_answers_at_once() {
    let mut t = T::new(Policy::default());
    t.spawn_ipcp(1, "eth-a");
    // Booting: not asked, listed at once with no counters yet.
    match t.cli(ROOT_CLI, 2, CliRequest::IpcpList) {
        Reply::IpcpRows(rows) => {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].state, "booting");
            assert_eq!(rows[0].counters_age_ms, None);
        }
        other => panic!("{other:?}"),
    }
}
