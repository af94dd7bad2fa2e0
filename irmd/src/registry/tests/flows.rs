//! Allocation in virtual time: deadlines, races, process and IPCP death.

use super::*;

#[test]
fn bootstrap_gives_up_after_ten_seconds() {
    let mut t = T::new(Policy::default());
    let ipcp = t.spawn_ipcp(5, "eth-a");
    t.input(Input::Spawned { ipcp, pid: 77 });
    t.advance(Duration::from_millis(9_999));
    assert_eq!(t.reply(ROOT_CLI, 5), None, "still waiting");
    t.advance(Duration::from_millis(1));
    let r = t.reply(ROOT_CLI, 5).expect("answered at 10 s");
    assert!(
        matches!(&r, Reply::Err(Error::Ipcp(m)) if m.contains("did not report")),
        "{r:?}"
    );
    assert!(t.take().contains(&Output::Kill { ipcp }));
    // It is gone: a list shows nothing.
    assert_eq!(
        t.cli(ROOT_CLI, 6, CliRequest::IpcpList),
        Reply::IpcpRows(vec![])
    );
}

#[test]
fn accept_times_out_when_asked_to() {
    let mut t = T::new(Policy::default());
    t.connect(2, user(1000), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 2,
        id: 1,
        req: AppRequest::FlowAccept {
            timeout_ms: Some(500),
        },
    });
    t.advance(Duration::from_millis(499));
    assert_eq!(t.reply(2, 1), None);
    t.advance(Duration::from_millis(1));
    assert_eq!(t.reply(2, 1), Some(Reply::Err(Error::TimedOut)));
}

/// Register `name` and bind `prog` to it as `cred` over CLI connection `conn`.
#[test]
fn incoming_flow_waits_two_seconds_for_an_accept() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    serve(&mut t, 3, user(1000), "svc", "srv");
    // A live instance that has not called accept yet.
    t.connect(4, user(1000), ClientRole::App { prog: "srv".into() });
    arrive(&mut t, ipcp, 9, "svc");
    assert_eq!(refusal(&mut t, 9), None, "waits for the instance");
    t.advance(Duration::from_millis(1_999));
    assert_eq!(refusal(&mut t, 9), None);
    t.advance(Duration::from_millis(1));
    assert_eq!(refusal(&mut t, 9), Some(RefuseReason::NoAcceptingProcess));
}

#[test]
fn incoming_flow_goes_to_an_accept_of_the_binding_uid_only() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    serve(&mut t, 3, user(1000), "svc", "srv");
    // Another user runs a program of the same name and waits in accept.
    t.connect(5, user(1001), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 5,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    arrive(&mut t, ipcp, 9, "svc");
    assert_eq!(
        refusal(&mut t, 9),
        Some(RefuseReason::NoAcceptingProcess),
        "not another uid's instance"
    );
    assert_eq!(t.reply(5, 1), None);
    // The owner's instance gets it.
    t.connect(4, user(1000), ClientRole::App { prog: "srv".into() });
    t.input(Input::App {
        conn: 4,
        id: 1,
        req: AppRequest::FlowAccept { timeout_ms: None },
    });
    arrive(&mut t, ipcp, 10, "svc");
    assert!(matches!(t.reply(4, 1), Some(Reply::FlowReady { .. })));
    assert_eq!(t.reply(5, 1), None);
}

#[test]
fn allocation_completes_only_for_the_right_ipcp_and_request() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    t.request_flow(2, 7, None);
    let (flow_id, req) = t.alloc_req().expect("asked the IPCP");
    assert!(t.outs.contains(&Output::CreateFlow {
        flow_id,
        geometry: RingGeometry {
            slots: 4096,
            slot_size: 1480
        }
    }));
    t.take();
    // A guessed request id, or another IPCP, does not complete it.
    for (who, id) in [(ipcp, req + 1), (ipcp + 1, req)] {
        t.input(alloc_ok(who, id, flow_id));
        assert_eq!(t.reply(2, 7), None);
    }
    t.input(alloc_ok(ipcp, req, flow_id));
    let out = t.take();
    assert!(out.contains(&Output::Send {
        conn: 2,
        id: 7,
        msg: Reply::FlowReady {
            flow_id,
            name: "svc".into(),
            qos: Qos::raw(),
            max_sdu: 1000,
            geometry: RingGeometry {
                slots: 4096,
                slot_size: 1480
            },
            security: None,
        },
        fds: Some(FdsOf::App(flow_id)),
    }));
}

#[test]
fn process_death_during_an_allocation_releases_the_flow() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    let (flow_id, req) = t.ask_flow(2, 7);
    t.input(Input::Closed { conn: 2 });
    let dealloc = t.take().into_iter().find_map(|o| match o {
        Output::ToIpcp {
            id,
            msg: IrmdToIpcp::FlowDealloc { flow_id: f },
            ..
        } if f == flow_id => Some(id),
        _ => None,
    });
    let dealloc = dealloc.expect("the IPCP is told at once");
    // The late answer to the allocation finds nobody to hand the flow to.
    t.input(alloc_ok(ipcp, req, flow_id));
    assert!(!t
        .outs
        .iter()
        .any(|o| matches!(o, Output::Send { conn: 2, .. })));
    t.input(Input::FromIpcp {
        ipcp,
        id: dealloc,
        msg: IpcpToIrmd::Done(Ok(())),
    });
    assert!(t.take().contains(&Output::DropFlow { flow_id }));
    match t.cli(ROOT_CLI, 3, CliRequest::FlowList { after: None }) {
        Reply::FlowRows(r) => assert!(r.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn allocation_deadline_and_ipcp_death() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    t.request_flow(2, 7, Some(300));
    t.advance(Duration::from_millis(300));
    assert_eq!(t.reply(2, 7), Some(Reply::Err(Error::TimedOut)));
    // Another allocation, then the IPCP dies: the waiter hears at once.
    t.request_flow(2, 8, None);
    t.input(Input::IpcpGone {
        ipcp,
        why: "test".into(),
    });
    assert!(matches!(t.reply(2, 8), Some(Reply::Err(Error::Ipcp(_)))));
}

/// The IPCP's answer and the allocation's deadline at the same instant, in
/// both orders: either the application gets the flow and irmd keeps it, or
/// it gets ETIMEDOUT and neither irmd nor the IPCP keeps anything (the IPCP
/// is told to deallocate, and the late answer changes nothing).
#[test]
fn an_answer_at_the_allocation_deadline_leaves_nothing_behind() {
    for answer_first in [true, false] {
        let mut t = T::new(Policy::default());
        let ipcp = t.ipcp();
        t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
        t.request_flow(2, 7, Some(300));
        let (flow_id, req) = t.alloc_req().expect("asked the IPCP");
        t.take();
        let answer = alloc_ok(ipcp, req, flow_id);
        t.now += Duration::from_millis(300);
        if answer_first {
            t.input(answer);
            t.advance(Duration::ZERO);
        } else {
            t.advance(Duration::ZERO);
            t.input(answer);
        }
        let out = t.take();
        let deallocs = out
            .iter()
            .filter(|o| {
                matches!(o, Output::ToIpcp { msg: IrmdToIpcp::FlowDealloc { flow_id: f }, .. }
                    if *f == flow_id)
            })
            .count();
        let to_app: Vec<&Reply> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    conn: 2,
                    id: 7,
                    msg,
                    ..
                } => Some(msg),
                _ => None,
            })
            .collect();
        let rows = match t.flow_list(ROOT_CLI, &[]) {
            Reply::FlowRows(r) => r,
            other => panic!("{other:?}"),
        };
        if answer_first {
            assert!(
                matches!(to_app[..], [Reply::FlowReady { .. }]),
                "{to_app:?}"
            );
            assert_eq!(deallocs, 0, "{out:?}");
            assert_eq!(rows.len(), 1);
        } else {
            assert_eq!(to_app, [&Reply::Err(Error::TimedOut)], "{out:?}");
            assert_eq!(deallocs, 1, "the IPCP is told once: {out:?}");
            assert!(out.contains(&Output::DropFlow { flow_id }), "{out:?}");
            assert!(rows.is_empty(), "{rows:?}");
        }
    }
}

/// An IPCP whose channel closes (it died): every flow over it is DOWN at
/// once (state word and wake-ups, through the shell), a pending allocation
/// fails with EIPCP, a pending deallocation completes, and the
/// application's later deallocation is answered at once.
#[test]
fn an_ipcp_that_dies_takes_every_flow_of_it_down_at_once() {
    let mut t = T::new(Policy::default());
    let ipcp = t.ipcp();
    t.connect(2, user(1000), ClientRole::App { prog: "cli".into() });
    let up = t.allocated_flow(ipcp, 2);
    let leaving = t.allocated_flow(ipcp, 2);
    t.input(Input::App {
        conn: 2,
        id: 20,
        req: AppRequest::FlowDealloc { flow_id: leaving },
    });
    let (pending, _) = t.ask_flow(2, 30);
    t.input(Input::IpcpGone {
        ipcp,
        why: "its channel closed".into(),
    });
    let out = t.take();
    for flow_id in [up, leaving, pending] {
        assert!(
            out.contains(&Output::SetFlowState {
                flow_id,
                state: FlowState::Down
            }),
            "flow {flow_id}: {out:?}"
        );
    }
    assert!(out.contains(&Output::Kill { ipcp }), "{out:?}");
    let to_app = |id: u64| {
        out.iter().find_map(|o| match o {
            Output::Send {
                conn: 2,
                id: i,
                msg,
                ..
            } if *i == id => Some(msg.clone()),
            _ => None,
        })
    };
    assert_eq!(to_app(20), Some(Reply::Ok), "{out:?}");
    assert!(
        matches!(to_app(30), Some(Reply::Err(Error::Ipcp(_)))),
        "{out:?}"
    );
    assert!(out.contains(&Output::DropFlow { flow_id: leaving }));
    assert!(out.contains(&Output::DropFlow { flow_id: pending }));
    match t.cli(ROOT_CLI, 3, CliRequest::FlowList { after: None }) {
        Reply::FlowRows(r) => {
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!((r[0].flow_id, r[0].state), (up, FlowState::Down));
        }
        other => panic!("{other:?}"),
    }
    t.input(Input::App {
        conn: 2,
        id: 40,
        req: AppRequest::FlowDealloc { flow_id: up },
    });
    assert_eq!(t.reply(2, 40), Some(Reply::Ok));
    assert!(t.take().contains(&Output::DropFlow { flow_id: up }));
}
