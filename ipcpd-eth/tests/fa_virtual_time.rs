//! The flow allocator in virtual time: two allocators wired back to back (each
//! one's Transmit actions parsed and delivered to the other, with optional
//! loss), a clock that jumps from deadline to deadline, and assertions on the
//! exact frames and state changes.

mod common;
use common::*;
// ---- allocation ----

#[test]
fn alloc_resolves_the_name_and_agrees_on_the_smaller_max_sdu() {
    let mut net = Net::new();
    net.nodes[B] = Node::new(MAC_B, INSTANCE_B, 1400);
    net.nodes[B].fa.register_name(name_hash("srv"));
    let eid = net.alloc(A, 7, "srv", 3000);
    assert!(!eid.is_none());

    assert_eq!(net.alloc_result(A, 7).map(|(_, r)| r), Some(Ok(1400)));
    let arrived = net.nodes[B].events.iter().find_map(|(_, a)| match a {
        Action::FlowReqArrived {
            name_hash: h,
            qos,
            max_sdu,
            ..
        } => Some((*h, *qos, *max_sdu)),
        _ => None,
    });
    assert_eq!(
        arrived,
        Some((name_hash("srv"), irm::Qos::raw().with_timeout(3000), 1400))
    );
    for (node, kinds) in [
        (A, [FrameType::NameQuery, FrameType::FlowReq]),
        (B, [FrameType::NameReply, FrameType::FlowReply]),
    ] {
        let sent: Vec<FrameType> = net.nodes[node].sent.iter().map(|s| s.kind).collect();
        assert_eq!(sent, kinds, "node {node}");
    }
    assert_eq!(
        (net.nodes[A].fa.flow_count(), net.nodes[B].fa.flow_count()),
        (1, 1)
    );

    // Data both ways, and A's route names the eid alloc() returned.
    let (mac, _, local) = net.nodes[A].fa.data_tx(net.now, 7).unwrap();
    assert_eq!((mac, local), (MAC_B, eid));
    assert!(net.send_data(A, 7));
    assert!(net.send_data(B, B_FIRST_FLOW));
    assert_eq!(net.nodes[B].data.last().unwrap().1, Some(B_FIRST_FLOW));
    assert_eq!(net.nodes[A].data.last().unwrap().1, Some(7));
}

#[test]
fn refusals_carry_their_reason() {
    let cases = [
        (
            RefuseReason::NoSuchName,
            irm::Error::Name("no such name".into()),
        ),
        (
            RefuseReason::NoAcceptingProcess,
            irm::Error::Refused("no accepting process".into()),
        ),
        (
            RefuseReason::ResourceLimit,
            irm::Error::Refused("resource limit".into()),
        ),
    ];
    for (reason, expected) in cases {
        let mut net = Net::new();
        net.nodes[B].fa.register_name(name_hash("srv"));
        net.nodes[B].answer = Answer::Refuse(reason);
        let start = net.now;
        net.alloc(A, 1, "srv", 1000);
        assert_eq!(
            net.alloc_result(A, 1),
            Some((start, Err(expected))),
            "{reason:?}"
        );
        assert_eq!(
            (net.nodes[A].fa.flow_count(), net.nodes[B].fa.flow_count()),
            (0, 0)
        );
        // A refused allocation leaves nothing behind: no timers, no traffic.
        net.advance(ms(10_000));
        assert_eq!(net.count_sent(A, FrameType::FlowReq), 1);
        assert_eq!(net.nodes[A].fa.poll_timeout(), None);
    }
}

#[test]
fn unanswered_name_query_fails_at_750_ms() {
    let mut net = Net::new();
    let start = net.now;
    let eid = net.alloc(A, 1, "nobody", 1000);
    assert!(!eid.is_none(), "the eid is handed out at once");
    net.advance(ms(749));
    assert_eq!(net.alloc_result(A, 1), None);
    net.advance(ms(5_000));

    let (at, result) = net.alloc_result(A, 1).expect("allocation failed");
    assert_eq!(at - start, Policy::default().name_query_window()); // 750 ms
    assert_eq!(
        result,
        Err(irm::Error::Name("no IPCP answered for this name".into()))
    );
    let queries: Vec<Duration> = net
        .sent(A, FrameType::NameQuery, start, net.now)
        .iter()
        .map(|t| *t - start)
        .collect();
    assert_eq!(queries, [ms(0), ms(50), ms(150), ms(350)]);
    assert_eq!(net.nodes[A].fa.flow_count(), 0);
}

#[test]
fn allocations_waiting_on_one_name_share_its_query() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.drop = Box::new(|from, f| from == B && is_type(f, FrameType::NameReply));
    net.alloc(A, 1, "srv", 1000);
    net.alloc(A, 2, "srv", 1000);
    assert_eq!(net.count_sent(A, FrameType::NameQuery), 1);
    net.drop = Box::new(|_, _| false);
    net.advance(ms(50));
    assert!(matches!(net.alloc_result(A, 1), Some((_, Ok(1480)))));
    assert!(matches!(net.alloc_result(A, 2), Some((_, Ok(1480)))));
    assert_eq!(net.count_sent(A, FrameType::NameQuery), 2);
}

#[test]
fn stale_cache_entry_is_requeried_once() {
    let mut net = connected(1000);
    net.nodes[B].fa.unregister_name(name_hash("srv"));
    net.advance(ms(10));
    let start = net.now;
    net.alloc(A, 2, "srv", 1000);
    // The cached MAC said NO_SUCH_NAME: A asks the segment again, nobody answers.
    assert_eq!(
        net.sent(A, FrameType::FlowReq, start, start + ms(1)).len(),
        1
    );
    assert_eq!(
        net.sent(A, FrameType::NameQuery, start, start + ms(1))
            .len(),
        1
    );
    net.advance(ms(2000));
    let (at, result) = net.alloc_result(A, 2).unwrap();
    assert_eq!(at - start, Policy::default().name_query_window()); // 750 ms
    assert_eq!(
        result,
        Err(irm::Error::Name("no IPCP answered for this name".into()))
    );

    // Re-registered: the requery finds B again, and B's NO_SUCH_NAME after a
    // fresh answer is final.
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.nodes[B].answer = Answer::Refuse(RefuseReason::NoSuchName);
    net.alloc(A, 3, "srv", 1000);
    assert_eq!(
        net.alloc_result(A, 3).unwrap().1,
        Err(irm::Error::Name("no such name".into()))
    );
}

#[test]
fn flow_req_is_retransmitted_then_the_allocation_fails() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.drop = Box::new(|from, f| from == A && is_type(f, FrameType::FlowReq));
    let start = net.now;
    net.alloc(A, 1, "srv", 1000);
    net.advance(ms(5000));
    let (at, result) = net.alloc_result(A, 1).unwrap();
    assert_eq!(at - start, Policy::default().flow_req_window()); // 2.6 s
    assert_eq!(result, Err(irm::Error::Ipcp("no flow reply".into())));
    let reqs: Vec<Duration> = net
        .sent(A, FrameType::FlowReq, start, net.now)
        .iter()
        .map(|t| *t - start)
        .collect();
    let expected: Vec<Duration> = (0..=25).map(|k| ms(100 * k)).collect();
    assert_eq!(reqs, expected);
    // The cache entry was dropped: the next allocation asks the segment.
    net.drop = Box::new(|_, _| false);
    let queries = net.count_sent(A, FrameType::NameQuery);
    net.alloc(A, 2, "srv", 1000);
    assert_eq!(net.count_sent(A, FrameType::NameQuery), queries + 1);
    assert!(matches!(net.alloc_result(A, 2), Some((_, Ok(_)))));
}

#[test]
fn duplicate_flow_req_does_not_create_a_second_flow() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    let mut replies_lost = 0;
    net.drop = Box::new(move |from, f| {
        let lose = from == B && is_type(f, FrameType::FlowReply) && replies_lost < 1;
        replies_lost += lose as u32;
        lose
    });
    let start = net.now;
    net.alloc(A, 1, "srv", 1000);
    // The responder starts sending before its lost reply is repeated: the
    // pending flow accepts the data.
    assert!(net.send_data(B, B_FIRST_FLOW));
    assert_eq!(net.nodes[A].data, [(start, Some(1))]);
    net.advance(ms(1000));
    assert_eq!(net.alloc_result(A, 1).unwrap(), (start + ms(100), Ok(1480)));
    assert_eq!(net.flow_reqs_arrived(B), 1);
    assert_eq!(net.nodes[B].fa.flow_count(), 1);
    assert_eq!(net.count_sent(B, FrameType::FlowReply), 2);
}

#[test]
fn flow_req_retransmissions_are_ignored_while_irmd_decides() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.nodes[B].answer = Answer::Hold;
    let start = net.now;
    net.alloc(A, 1, "srv", 1000);
    net.advance(ms(250));
    assert_eq!(net.count_sent(A, FrameType::FlowReq), 3);
    assert_eq!(net.flow_reqs_arrived(B), 1);
    assert_eq!(net.count_sent(B, FrameType::FlowReply), 0);
    let token = net.nodes[B].held[0];
    let (local, max_sdu) = net.nodes[B]
        .fa
        .accept_result(net.now, token, Ok(100), 1000)
        .unwrap();
    assert!(!local.is_none());
    assert_eq!(max_sdu, 1480);
    net.pump();
    assert_eq!(net.alloc_result(A, 1).unwrap(), (start + ms(250), Ok(1480)));
    // A token is good for one answer only.
    assert_eq!(
        net.nodes[B].fa.accept_result(net.now, token, Ok(101), 1000),
        None
    );
}

#[test]
fn malformed_flow_reply_does_not_stall_the_request() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.nodes[B].answer = Answer::Hold;
    let start = net.now;
    let eid = net.alloc(A, 1, "srv", 1000);
    let bogus = Frame {
        dst: eid,
        src: Eid::NONE,
        payload: Payload::FlowReply(FlowReplyRepr {
            instance: INSTANCE_B,
            code: ReplyCode::Ok,
            max_sdu: 1480,
            timeout: 1000,
        }),
    };
    net.nodes[A].fa.handle_frame(start, MAC_B, &bogus);
    net.advance(ms(3000));
    assert_eq!(
        net.alloc_result(A, 1),
        Some((
            start + Policy::default().flow_req_window(),
            Err(irm::Error::Ipcp("no flow reply".into()))
        ))
    );
}

#[test]
fn late_acceptance_of_an_abandoned_request_is_torn_down() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.nodes[B].answer = Answer::Hold;
    net.alloc(A, 1, "srv", 1000);
    net.advance(ms(3000));
    assert!(net.alloc_result(A, 1).unwrap().1.is_err());
    let token = net.nodes[B].held[0];
    assert!(net.nodes[B]
        .fa
        .accept_result(net.now, token, Ok(100), 1000)
        .is_some());
    net.pump();
    assert_eq!(net.states(B, 100), [(net.now, DownCause::UnknownEndpoint)]);
}

// ---- keep-alive and expiry ----

#[test]
fn keepalive_once_per_quarter_timeout_per_peer() {
    let mut net = connected(1000);
    let start = net.now;
    net.advance(ms(10_000));
    for node in [A, B] {
        let kas = net.sent(node, FrameType::KeepAlive, start, net.now);
        assert_eq!(kas.len(), 40, "node {node}: {kas:?}");
        assert!(
            kas.windows(2).all(|w| w[1] - w[0] == ms(250)),
            "node {node}: {kas:?}"
        );
    }
    assert_eq!(net.all_states(A) + net.all_states(B), 0);
}

#[test]
fn no_keepalive_while_data_flows() {
    let mut net = connected(1000);
    let start = net.now;
    for _ in 0..100 {
        net.advance(ms(100));
        assert!(net.send_data(A, 1));
    }
    assert_eq!(net.sent(A, FrameType::KeepAlive, start, net.now), []);
    // B only receives, so it keeps A informed with its keep-alives.
    assert_eq!(net.sent(B, FrameType::KeepAlive, start, net.now).len(), 40);
    assert_eq!(net.all_states(A) + net.all_states(B), 0);
}

#[test]
fn keepalive_cadence_follows_the_shortest_timeout() {
    let mut net = connected(1000);
    net.alloc(A, 2, "srv", 400);
    let start = net.now;
    net.advance(ms(1000));
    assert_eq!(net.sent(A, FrameType::KeepAlive, start, net.now).len(), 10);
    net.dealloc(A, 2);
    // The window is inclusive: skip the keep-alive sent at this very instant.
    let start = net.now + Duration::from_nanos(1);
    net.advance(ms(1000));
    assert_eq!(net.sent(A, FrameType::KeepAlive, start, net.now).len(), 4);
}

/// Silence B and check A's flow goes PEER exactly `timeout` after B was last
/// heard, exactly once, and comes back Up when B is heard again.
fn check_expiry(timeout_ms: u64) {
    let timeout = ms(timeout_ms);
    let mut net = connected_with(timeout_ms, uncapped());
    // Ten timeouts with both sides alive: keep-alives hold the flow up.
    let start = net.now;
    net.advance(timeout * 10);
    assert_eq!(net.all_states(A) + net.all_states(B), 0);
    let kas = net.sent(A, FrameType::KeepAlive, start, net.now).len();
    assert!((39..=40).contains(&kas), "{kas} keep-alives in 10 timeouts");

    net.drop = Box::new(|from, _| from == B);
    let heard = net.nodes[A].fa.last_heard(1).unwrap();
    let just_before = heard + timeout - ms(1).min(timeout / 2);
    net.advance_to(just_before);
    assert_eq!(net.states(A, 1), [], "PEER too early");
    net.advance_to(heard + timeout);
    assert_eq!(
        net.states(A, 1),
        [(heard + timeout, DownCause::Unresponsive)]
    );
    assert!(net.send_data(A, 1), "a PEER flow may still send");
    net.advance(timeout * 10);
    assert_eq!(net.states(A, 1).len(), 1, "PEER is reported once");
    assert_eq!(net.states(B, B_FIRST_FLOW), [], "A kept talking to B");

    net.drop = Box::new(|_, _| false);
    let back = net.now;
    net.advance(timeout);
    let states = net.states(A, 1);
    assert_eq!(states.len(), 2);
    assert_eq!(states[1].1, DownCause::Up);
    assert!(
        states[1].0 - back <= timeout / 4,
        "Up at the next keep-alive"
    );
}

#[test]
fn expiry_is_exact_with_a_one_second_timeout() {
    check_expiry(1000);
}

#[test]
fn expiry_is_exact_with_a_one_millisecond_timeout() {
    check_expiry(1);
}

#[test]
fn expiry_is_exact_with_a_ten_year_timeout() {
    check_expiry(10 * YEAR_MS);
}

#[test]
fn largest_timeout_does_not_overflow() {
    let mut net = connected_with(u64::MAX, uncapped());
    net.advance(ms(100 * YEAR_MS));
    assert!(net.nodes[A].fa.poll_timeout().is_some());
    assert_eq!(net.all_states(A) + net.all_states(B), 0);
}

#[test]
fn flows_with_different_timeouts_expire_in_order() {
    let mut net = connected(1000);
    net.alloc(A, 2, "srv", 300);
    net.alloc(A, 3, "srv", 3000);
    net.drop = Box::new(|from, _| from == B);
    let heard = net.nodes[A].fa.last_heard(1).unwrap();
    net.advance(ms(5000));
    assert_eq!(
        net.states(A, 2),
        [(heard + ms(300), DownCause::Unresponsive)]
    );
    assert_eq!(
        net.states(A, 1),
        [(heard + ms(1000), DownCause::Unresponsive)]
    );
    assert_eq!(
        net.states(A, 3),
        [(heard + ms(3000), DownCause::Unresponsive)]
    );
}

#[test]
fn hundred_thousand_idle_flows_cost_one_keepalive_per_interval() {
    const FLOWS: u32 = 100_000;
    let mut net = Net::new();
    net.nodes[A] = Node::with_policy(MAC_A, INSTANCE_A, 1480, unlimited());
    net.nodes[B] = Node::with_policy(MAC_B, INSTANCE_B, 1480, unlimited());
    net.nodes[B].fa.register_name(name_hash("srv"));
    for id in 1..=FLOWS {
        net.alloc(A, id, "srv", 1000);
    }
    assert_eq!(net.nodes[A].fa.flow_count(), FLOWS as usize);
    assert_eq!(net.nodes[B].fa.flow_count(), FLOWS as usize);
    let ok = net.nodes[A]
        .events
        .iter()
        .filter(|(_, a)| matches!(a, Action::AllocDone { result: Ok(_), .. }))
        .count();
    assert_eq!(ok, FLOWS as usize);

    net.advance(ms(1));
    let visits = [A, B].map(|n| net.nodes[n].fa.stats().flow_visits);
    let start = net.now;
    net.advance(ms(10_000));
    for node in [A, B] {
        let kas = net.sent(node, FrameType::KeepAlive, start, net.now);
        assert_eq!(kas.len(), 40, "node {node}");
        let everything = net.nodes[node]
            .sent
            .iter()
            .filter(|s| s.at >= start)
            .count();
        assert_eq!(everything, 40, "node {node} sent only keep-alives");
    }
    assert_eq!(net.all_states(A) + net.all_states(B), 0);
    // A keep-alive round (sending and receiving) is O(peers): not one flow
    // record was visited in 40 rounds over 100 000 flows.
    assert_eq!(
        [A, B].map(|n| net.nodes[n].fa.stats().flow_visits),
        visits,
        "keep-alives walked flows"
    );

    // All of them expire together, and recover together.
    net.drop = Box::new(|from, _| from == B);
    net.advance(ms(2000));
    assert_eq!(net.all_states(A), FLOWS as usize);
    net.drop = Box::new(|_, _| false);
    net.advance(ms(1000));
    assert_eq!(net.all_states(A), 2 * FLOWS as usize);
}

// ---- deallocation, restart, stale endpoints, link loss ----

#[test]
fn dealloc_takes_the_peer_down_in_one_exchange() {
    let mut net = connected(1000);
    let t = net.now;
    net.dealloc(A, 1);
    assert_eq!(
        net.states(B, B_FIRST_FLOW),
        [(t, DownCause::PeerDeallocated)]
    );
    assert_eq!(net.nodes[A].fa.flow_count(), 0);
    assert_eq!(
        net.nodes[B].fa.data_tx(net.now, B_FIRST_FLOW),
        None,
        "DOWN flows do not send"
    );
    net.advance(ms(2000));
    assert_eq!(
        net.count_sent(A, FrameType::Dealloc),
        1,
        "the ACK stopped retransmission"
    );
    assert_eq!(net.count_sent(B, FrameType::DeallocAck), 1);
    // The DOWN flow keeps its slot until B's side lets go, then says nothing.
    assert_eq!(net.nodes[B].fa.flow_count(), 1);
    net.dealloc(B, B_FIRST_FLOW);
    assert_eq!(net.nodes[B].fa.flow_count(), 0);
    assert_eq!(net.count_sent(B, FrameType::Dealloc), 0);
    assert_eq!(net.nodes[A].fa.poll_timeout(), None);
    assert_eq!(net.nodes[B].fa.poll_timeout(), None);
}

#[test]
fn lost_dealloc_is_retransmitted() {
    let mut net = connected(1000);
    let mut lost = 0;
    net.drop = Box::new(move |from, f| {
        let lose = from == A && is_type(f, FrameType::Dealloc) && lost < 2;
        lost += lose as u32;
        lose
    });
    let t = net.now;
    net.dealloc(A, 1);
    net.advance(ms(2000));
    assert_eq!(
        net.states(B, B_FIRST_FLOW),
        [(t + ms(60), DownCause::PeerDeallocated)]
    );
    assert_eq!(net.count_sent(A, FrameType::Dealloc), 3);
}

#[test]
fn dealloc_gives_up_after_five_retransmissions() {
    let mut net = connected(1000);
    net.drop = Box::new(|from, f| from == A && is_type(f, FrameType::Dealloc));
    let t = net.now;
    net.dealloc(A, 1);
    net.advance(ms(5000));
    let sends: Vec<Duration> = net
        .sent(A, FrameType::Dealloc, t, net.now)
        .iter()
        .map(|s| *s - t)
        .collect();
    assert_eq!(sends, [0, 20, 60, 140, 300, 620].map(ms));
}

#[test]
fn lost_dealloc_ack_is_answered_again() {
    let mut net = connected(1000);
    let mut lost = 0;
    net.drop = Box::new(move |from, f| {
        let lose = from == B && is_type(f, FrameType::DeallocAck) && lost < 1;
        lost += lose as u32;
        lose
    });
    net.dealloc(A, 1);
    net.advance(ms(2000));
    assert_eq!(net.count_sent(A, FrameType::Dealloc), 2);
    assert_eq!(net.count_sent(B, FrameType::DeallocAck), 2);
    assert_eq!(net.states(B, B_FIRST_FLOW).len(), 1);
}

#[test]
fn peer_restart_is_found_by_the_next_keepalive_exchange() {
    let mut net = connected(1000);
    net.advance(ms(100));
    // B's IPCP restarts: same MAC, new instance nonce, no memory of the flow.
    net.nodes[B] = Node::new(MAC_B, 0xb2b2, 1480);
    let t = net.now;
    net.advance(ms(1000));
    let states = net.states(A, 1);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].1, DownCause::PeerRestarted);
    assert!(states[0].0 - t <= ms(250), "within one keep-alive interval");
    assert_eq!(
        net.count_sent(B, FrameType::ChallengeReply),
        1,
        "one answer to the stale keep-alive"
    );
    assert_eq!(
        net.count_sent(B, FrameType::KeepAlive),
        0,
        "the new run never sends its nonce"
    );
    // Nothing live to keep alive any more.
    let quiet = net.now;
    net.advance(ms(5000));
    assert_eq!(net.sent(A, FrameType::KeepAlive, quiet, net.now), []);
}

#[test]
fn restarted_requester_takes_old_flows_down_when_it_asks_again() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.alloc(A, 1, "srv", 1000);
    net.nodes[A] = Node::new(MAC_A, 0xa2a2, 1480);
    net.alloc(A, 1, "srv", 1000);
    assert!(matches!(net.alloc_result(A, 1), Some((_, Ok(_)))));
    assert_eq!(
        net.states(B, B_FIRST_FLOW),
        [(net.now, DownCause::PeerRestarted)]
    );
    assert_eq!(net.states(B, B_FIRST_FLOW + 1), []);
}

#[test]
fn request_from_a_run_that_restarted_meanwhile_is_dropped() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.alloc(A, 1, "srv", 1000);
    net.nodes[B].answer = Answer::Hold;
    net.alloc(A, 2, "srv", 1000);
    // A restarts while B's irmd decides on flow 2, then asks again.
    net.nodes[A] = Node::new(MAC_A, 0xa2a2, 1480);
    net.nodes[B].answer = Answer::Accept;
    net.alloc(A, 1, "srv", 1000);
    assert!(matches!(net.alloc_result(A, 1), Some((_, Ok(_)))));
    let old_token = net.nodes[B].held[0];
    let now = net.now;
    assert_eq!(
        net.nodes[B].fa.accept_result(now, old_token, Ok(555), 1000),
        None
    );
    net.pump();
    assert_eq!(
        net.states(B, B_FIRST_FLOW),
        [(now, DownCause::PeerRestarted)]
    );
    assert_eq!(
        net.states(B, B_FIRST_FLOW + 1),
        [],
        "the new run's flow lives on"
    );
}

#[test]
fn stale_generation_data_gets_unknown_eid_and_goes_down() {
    let mut net = connected(1000);
    let (_, old_remote, _) = net.nodes[A].fa.data_tx(net.now, 1).unwrap();
    // B lets go of its flow but every DEALLOC is lost: A does not know.
    net.drop = Box::new(|from, f| from == B && is_type(f, FrameType::Dealloc));
    net.dealloc(B, B_FIRST_FLOW);
    // Past B's last retransmission (620 ms), before A's flow would expire.
    net.advance(ms(700));
    net.drop = Box::new(|_, _| false);
    // A new flow reuses B's only slot with a new generation.
    net.alloc(A, 2, "srv", 1000);
    let (_, new_remote, _) = net.nodes[A].fa.data_tx(net.now, 2).unwrap();
    assert_eq!(new_remote.index(), old_remote.index());
    assert_ne!(new_remote.generation(), old_remote.generation());

    // Even with the right source eid, the old generation does not match.
    let (_, _, new_local) = net.nodes[A].fa.data_tx(net.now, 2).unwrap();
    let now = net.now;
    assert_eq!(
        net.nodes[B].fa.data_rx(now, MAC_A, old_remote, new_local),
        None
    );
    assert_eq!(
        net.nodes[B].fa.data_rx(now, MAC_A, new_remote, new_local),
        Some(B_FIRST_FLOW + 1)
    );
    net.pump();
    // B's UNKNOWN_EID names the stale eid, which is not flow 2's peer.
    assert_eq!(net.states(A, 2), []);

    let t = net.now;
    assert!(net.send_data(A, 1));
    assert_eq!(
        net.nodes[B].data.last(),
        Some(&(t, None)),
        "stale frame not delivered to the new flow"
    );
    assert_eq!(net.states(A, 1), [(t, DownCause::UnknownEndpoint)]);
    assert!(net.send_data(A, 2));
    assert_eq!(net.nodes[B].data.last(), Some(&(t, Some(B_FIRST_FLOW + 1))));
    assert_eq!(net.states(A, 2), []);
}

#[test]
fn unknown_eid_about_another_endpoint_does_not_kill_a_flow() {
    let mut net = connected(1000);
    let (_, remote, local) = net.nodes[A].fa.data_tx(net.now, 1).unwrap();
    let now = net.now;
    let forged = [
        Frame {
            dst: local,
            src: Eid(remote.0 ^ (1 << 30)),
            payload: Payload::UnknownEid,
        },
        Frame {
            dst: Eid(local.0 ^ (1 << 30)),
            src: remote,
            payload: Payload::UnknownEid,
        },
        Frame {
            dst: local,
            src: remote,
            payload: Payload::Dealloc,
        },
    ];
    net.nodes[A]
        .fa
        .handle_frame(now, [2, 0, 0, 0, 0, 0xc], &forged[0]);
    net.nodes[A].fa.handle_frame(now, MAC_B, &forged[0]);
    net.nodes[A].fa.handle_frame(now, MAC_B, &forged[1]);
    net.nodes[A]
        .fa
        .handle_frame(now, [2, 0, 0, 0, 0, 0xc], &forged[2]);
    net.pump();
    assert_eq!(net.states(A, 1), []);
    net.nodes[A].fa.handle_frame(now, MAC_B, &forged[2]);
    net.pump();
    assert_eq!(net.states(A, 1), [(now, DownCause::PeerDeallocated)]);
}

#[test]
fn unknown_eid_replies_are_rate_limited() {
    let mut net = connected(1000);
    let now = net.now;
    let stray = MAC_A;
    for i in 0..1000u64 {
        let got = net.nodes[B]
            .fa
            .data_rx(now, stray, Eid::new(5, 999), Eid(i + 1));
        assert_eq!(got, None);
    }
    let mut replies = 0;
    while let Some(a) = net.nodes[B].fa.poll_action() {
        if let Action::Transmit { frame, .. } = a {
            replies += is_type(&Frame::parse(&frame).unwrap(), FrameType::UnknownEid) as usize;
        }
    }
    assert_eq!(replies, 9, "burst of 10, one spent on the NAME_REPLY");
    for i in 0..1000u64 {
        net.nodes[B]
            .fa
            .data_rx(now + ms(1000), stray, Eid::new(5, 999), Eid(i + 1));
    }
    let replies = std::iter::from_fn(|| net.nodes[B].fa.poll_action()).count();
    assert_eq!(replies, 10, "refilled at 100/s, capped at the burst");
}

#[test]
fn link_down_takes_flows_down_and_fails_pending_allocations() {
    let mut net = connected(1000);
    net.nodes[B].answer = Answer::Hold;
    net.alloc(A, 2, "srv", 1000);
    net.alloc(A, 3, "nobody", 1000);
    assert_eq!(net.alloc_result(A, 2), None);
    let t = net.now;
    net.nodes[A].fa.link_down(t);
    net.pump();
    assert_eq!(net.states(A, 1), [(t, DownCause::LinkDown)]);
    for id in [2, 3] {
        assert_eq!(
            net.alloc_result(A, id),
            Some((t, Err(irm::Error::Ipcp("link down".into()))))
        );
    }
    assert_eq!(
        net.nodes[A].fa.flow_count(),
        1,
        "the DOWN flow waits for its dealloc"
    );
    assert_eq!(net.nodes[A].fa.poll_timeout(), None, "nothing left to send");
    net.dealloc(A, 1);
    assert_eq!(net.count_sent(A, FrameType::Dealloc), 0);
    assert_eq!(net.nodes[A].fa.flow_count(), 0);
}
