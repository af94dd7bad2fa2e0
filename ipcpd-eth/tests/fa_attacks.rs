//! Attacks on the flow allocator by a host on the segment without a layer key,
//! in virtual time. A and B have a flow; C forges frames with any source MAC
//! (often B's). Frames the allocators send to any MAC but A's and B's are
//! lost, as they would be for an off-path attacker: what C learns is only
//! what is sent to its own MAC or broadcast. Each test performs one attack of
//! `docs/security.md` ("On the segment (no key)").

mod common;
use common::*;

use ipcpd_eth::wire::{
    ChallengeReplyRepr, ChallengeRepr, FlowReqRepr, KeepAliveRepr, Verdict, WireQos,
};

const MAC_C: Mac = [2, 0, 0, 0, 0, 0xc];

/// A random-looking MAC for the i-th forged sender (locally administered).
fn mac_of(i: u64) -> Mac {
    let b = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16).to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// A cheap deterministic stream of guesses.
fn guesses(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x)
    })
}

fn ka(sender: u64, receiver: u64, challenge: u64) -> Frame<'static> {
    Frame {
        dst: Eid::NONE,
        src: Eid::NONE,
        payload: Payload::KeepAlive(KeepAliveRepr {
            sender_instance: sender,
            receiver_instance: receiver,
            challenge,
        }),
    }
}

fn frame(dst: Eid, src: Eid, payload: Payload<'static>) -> Frame<'static> {
    Frame { dst, src, payload }
}

fn flow_req(instance: u64, name: &str, timeout: u64) -> Payload<'static> {
    Payload::FlowReq(FlowReqRepr {
        instance,
        name_hash: name_hash(name),
        qos: WireQos {
            timeout,
            ..WireQos::from(irm::Qos::raw())
        },
        max_sdu: 1480,
    })
}

/// Every 8-byte window of every frame `node` sent to a MAC other than A's
/// and B's (what an off-path C could read), as integers.
fn seen_by_others(net: &Net, node: usize) -> Vec<u64> {
    net.nodes[node]
        .sent
        .iter()
        .filter(|s| s.dst != MAC_A && s.dst != MAC_B)
        .flat_map(|s| {
            s.bytes
                .windows(8)
                .map(|w| u64::from_be_bytes(w.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The nonce node `of` shows to `to`'s MAC.
fn nonce(net: &Net, of: usize, to: Mac) -> u64 {
    net.nodes[of].fa.instance_for(to)
}

/// A flow A→B that has carried one SDU each way (each side proved the other).
fn busy_pair() -> Net {
    let mut net = connected(1000);
    assert!(net.send_data(A, 1));
    assert!(net.send_data(B, B_FIRST_FLOW));
    net
}

// ---- restart claims ----

#[test]
fn forged_keepalive_with_a_new_instance_does_not_take_flows_down() {
    let mut net = busy_pair();
    // The attack: a KEEP_ALIVE from B's MAC with a new sender
    // instance, whatever receiver instance C guesses, even A's real one.
    let real = nonce(&net, A, MAC_B);
    for (i, receiver) in [0, 1, real, u64::MAX].into_iter().enumerate() {
        net.forge(A, MAC_B, &ka(0xdead_0000 + i as u64, receiver, 77));
    }
    assert_eq!(
        net.nodes[A].fa.stats().challenges_sent,
        1,
        "one challenge to B's MAC"
    );
    assert_eq!(net.count_sent(B, FrameType::ChallengeReply), 1);
    net.advance(ms(5000));
    assert_eq!(net.states(A, 1), []);
    assert_eq!(net.states(B, B_FIRST_FLOW), []);
    assert_eq!(net.nodes[A].fa.stats().restarts_confirmed, 0);
    assert!(net.send_data(A, 1));
    assert_eq!(net.nodes[B].data.last().unwrap().1, Some(B_FIRST_FLOW));
}

#[test]
fn forged_challenge_reply_without_the_echo_does_nothing() {
    let mut net = busy_pair();
    net.advance(ms(300)); // A has sent keep-alives with challenges by now.
    for guess in guesses(5).take(1000) {
        let reply = Payload::ChallengeReply(ChallengeReplyRepr {
            echo: guess,
            verdict: Verdict::Different,
        });
        net.forge(A, MAC_B, &frame(Eid::NONE, Eid::NONE, reply));
        net.forge(B, MAC_A, &frame(Eid::NONE, Eid::NONE, reply));
    }
    net.advance(ms(3000));
    assert_eq!(net.states(A, 1), []);
    assert_eq!(net.states(B, B_FIRST_FLOW), []);
}

#[test]
fn real_restart_is_found_one_round_trip_after_the_next_keepalive() {
    let mut net = busy_pair();
    net.advance(ms(100));
    net.nodes[B] = Node::new(MAC_B, 0xb2b2_0000_0000_0001, 1480);
    let t = net.now;
    net.advance(ms(1000));
    let next_ka = net.sent(A, FrameType::KeepAlive, t, net.now)[0];
    // Delivery is instant here: one round trip is the same instant.
    assert_eq!(net.states(A, 1), [(next_ka, DownCause::PeerRestarted)]);
    assert!(next_ka - t <= ms(250), "within a quarter timeout");
    assert_eq!(net.nodes[A].fa.stats().restarts_confirmed, 1);
}

#[test]
fn forged_flow_req_with_a_new_instance_is_challenged_and_dropped() {
    let mut net = busy_pair();
    // C claims, with A's MAC, that A restarted and asks for a flow.
    net.forge(
        B,
        MAC_A,
        &frame(Eid::NONE, Eid(0x1234_5678), flow_req(0xf00, "srv", 1000)),
    );
    assert_eq!(net.nodes[B].fa.stats().challenges_sent, 1);
    assert_eq!(net.flow_reqs_arrived(B), 1, "only the first, real request");
    net.advance(ms(3000));
    assert_eq!(net.states(B, B_FIRST_FLOW), []);
    assert_eq!(net.nodes[B].fa.flow_count(), 1);
}

// ---- guessed endpoints ----

#[test]
fn forged_dealloc_and_unknown_eid_with_guessed_eids_do_nothing() {
    let mut net = Net::new();
    // No budget in the way: every guess reaches the matching code.
    let open = Policy {
        rx_per_mac: Rate::UNLIMITED,
        rx_total: Rate::UNLIMITED,
        ..Policy::default()
    };
    net.nodes[A] = Node::with_policy(MAC_A, INSTANCE_A, 1480, open);
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.alloc(A, 1, "srv", 1000);
    let (_, remote, local) = net.nodes[A].fa.data_tx(net.now, 1).unwrap();
    let mut g = guesses(11);
    for _ in 0..5000 {
        // The right indices (C may guess those), random generations; and
        // the predictable eids of a fresh IPCP.
        let guess_local = Eid::new(local.index(), g.next().unwrap());
        let guess_remote = Eid::new(remote.index(), g.next().unwrap());
        for (dst, src) in [
            (guess_local, guess_remote),
            (guess_local, remote),
            (local, guess_remote),
            (Eid(0x100_0000), Eid(0x100_0000)),
        ] {
            net.forge(A, MAC_B, &frame(dst, src, Payload::Dealloc));
            net.forge(A, MAC_B, &frame(dst, src, Payload::UnknownEid));
        }
    }
    assert_eq!(net.states(A, 1), []);
    assert!(net.send_data(A, 1));
    assert_eq!(net.nodes[B].data.last().unwrap().1, Some(B_FIRST_FLOW));
    // Every DEALLOC_ACK went back to B's MAC, echoing only the guesses.
    assert!(!seen_by_others(&net, A).contains(&local.0));
}

#[test]
fn forged_data_is_not_delivered() {
    let mut net = busy_pair();
    let (_, remote, local) = net.nodes[B].fa.data_tx(net.now, B_FIRST_FLOW).unwrap();
    let sdu = Payload::Data(b"forged");
    let mut g = guesses(3);
    for _ in 0..2000 {
        let wrong_gen = Eid::new(remote.index(), g.next().unwrap());
        assert_eq!(net.forge(A, MAC_B, &frame(wrong_gen, local, sdu)), None);
        let wrong_src = Eid(g.next().unwrap() | 1);
        assert_eq!(net.forge(A, MAC_B, &frame(remote, wrong_src, sdu)), None);
    }
    // The right eids from another MAC.
    assert_eq!(net.forge(A, MAC_C, &frame(remote, local, sdu)), None);
    // And only the real ones deliver.
    assert_eq!(net.forge(A, MAC_B, &frame(remote, local, sdu)), Some(1));
}

#[test]
fn data_during_setup_is_accepted_only_from_the_first_source_eid() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.nodes[B].answer = Answer::Hold;
    let requesting = net.alloc(A, 1, "srv", 1000);
    let sdu = Payload::Data(b"early");
    assert_eq!(
        net.forge(A, MAC_C, &frame(requesting, Eid(9), sdu)),
        None,
        "wrong MAC"
    );
    assert_eq!(
        net.forge(A, MAC_B, &frame(requesting, Eid(9), sdu)),
        Some(1)
    );
    assert_eq!(
        net.forge(A, MAC_B, &frame(requesting, Eid(10), sdu)),
        None,
        "source pinned"
    );
    assert_eq!(
        net.forge(A, MAC_B, &frame(requesting, Eid(9), sdu)),
        Some(1)
    );
}

// ---- liveness proofs ----

#[test]
fn frames_that_prove_nothing_do_not_keep_a_dead_peer_alive() {
    let mut net = busy_pair();
    let (_, remote, local) = net.nodes[A].fa.data_tx(net.now, 1).unwrap();
    // B dies: nothing more comes from it.
    net.drop = Box::new(|from, _| from == B);
    let heard = net.nodes[A].fa.last_heard(1).unwrap();
    let b_nonce = nonce(&net, B, MAC_A);
    let junk = [
        frame(Eid::NONE, Eid::NONE, Payload::DeallocAck),
        frame(local, Eid(5), Payload::DeallocAck),
        frame(Eid::NONE, Eid::NONE, Payload::UnknownEid),
        frame(
            Eid::NONE,
            Eid::NONE,
            Payload::NameReply { name_hash: [7; 32] },
        ),
        frame(Eid::NONE, Eid(77), flow_req(b_nonce, "nothing here", 1000)),
        ka(b_nonce, 0, 1),
        ka(b_nonce, 0x5eed, 1),
        frame(
            Eid::NONE,
            Eid::NONE,
            Payload::ChallengeReply(ChallengeReplyRepr {
                echo: 3,
                verdict: Verdict::Same,
            }),
        ),
        frame(
            Eid::NONE,
            Eid::NONE,
            Payload::Challenge(ChallengeRepr {
                challenge: 1,
                believed_instance: 2,
            }),
        ),
        frame(Eid(local.0 ^ 1 << 40), remote, Payload::Data(b"x")),
    ];
    while net.now < heard + ms(2000) {
        for f in &junk {
            net.forge(A, MAC_B, f);
        }
        net.advance(ms(50));
    }
    assert_eq!(
        net.states(A, 1),
        [(heard + ms(1000), DownCause::Unresponsive)]
    );
    assert_eq!(net.nodes[A].fa.last_heard(1), Some(heard));
}

#[test]
fn keepalive_with_our_nonce_is_the_proof() {
    let mut net = busy_pair();
    net.drop = Box::new(|from, _| from == B);
    let heard = net.nodes[A].fa.last_heard(1).unwrap();
    net.advance(ms(500));
    // An on-path host that learned both nonces could do this; off-path, no.
    let valid = ka(nonce(&net, B, MAC_A), nonce(&net, A, MAC_B), 1);
    net.forge(A, MAC_B, &valid);
    assert_eq!(net.nodes[A].fa.last_heard(1), Some(heard + ms(500)));
}

// ---- what a stranger can learn ----

#[test]
fn strangers_never_get_our_nonce_or_eids() {
    let mut net = busy_pair();
    net.nodes[A].fa.register_name(name_hash("a-srv"));
    let (_, remote, local) = net.nodes[A].fa.data_tx(net.now, 1).unwrap();
    let mut g = guesses(21);
    for i in 0..3000u64 {
        let guess = g.next().unwrap();
        net.now += Duration::from_micros(300);
        net.forge(A, MAC_C, &ka(guess, guess ^ 1, i));
        net.forge(A, MAC_C, &ka(guess, 0, i));
        let c = ChallengeRepr {
            challenge: i,
            believed_instance: guess,
        };
        net.forge(
            A,
            MAC_C,
            &frame(Eid::NONE, Eid::NONE, Payload::Challenge(c)),
        );
        net.forge(
            A,
            MAC_C,
            &frame(Eid(guess), Eid(i + 1), Payload::Data(b"?")),
        );
        net.forge(A, MAC_C, &frame(Eid(guess), Eid(i + 1), Payload::Dealloc));
        net.forge(
            A,
            MAC_C,
            &frame(Eid::NONE, Eid(i + 1), flow_req(guess, "a-srv", 1)),
        );
        net.forge(
            A,
            MAC_C,
            &frame(
                Eid::NONE,
                Eid::NONE,
                Payload::NameQuery {
                    name_hash: name_hash("a-srv"),
                },
            ),
        );
    }
    let seen = seen_by_others(&net, A);
    assert!(!seen.is_empty(), "C got answers");
    let secrets = [
        nonce(&net, A, MAC_B),
        nonce(&net, B, MAC_A),
        local.0,
        remote.0,
    ];
    for secret in secrets {
        assert!(!seen.contains(&secret), "{secret:#x} leaked");
    }
    assert!(net.nodes[A]
        .sent
        .iter()
        .all(|s| s.dst != MAC_C || s.kind != FrameType::KeepAlive));
}

// ---- budgets ----

#[test]
fn flow_req_with_an_endless_timeout_is_capped() {
    let mut net = connected(u64::MAX);
    let capped = net.nodes[B].events.iter().find_map(|(_, a)| match a {
        Action::FlowReqArrived { qos, .. } => Some(qos.timeout),
        _ => None,
    });
    assert_eq!(capped, Some(3_600_000), "one hour by default");
    assert_eq!(net.nodes[B].fa.stats().timeouts_capped, 1);
    // The requester adopts the cap from the FLOW_REPLY: both ends expire.
    net.drop = Box::new(|_, _| true);
    let heard = net.nodes[A].fa.last_heard(1).unwrap();
    net.advance(ms(2 * 3_600_000));
    assert_eq!(
        net.states(A, 1),
        [(heard + ms(3_600_000), DownCause::Unresponsive)]
    );
    assert_eq!(net.states(B, B_FIRST_FLOW).len(), 1);
}

fn small_caps() -> Policy {
    Policy {
        max_pending: 256,
        max_pending_per_mac: 16,
        max_inbound_flows: 4096,
        max_inbound_flows_per_mac: 64,
        mac_table_cap: 1024,
        ..Policy::default()
    }
}

/// 20 000 FLOW_REQs at 5 000/s with random eids and timeout u64::MAX, from
/// `mac(i)` with instance `instance(i)`; B's irmd accepts whatever arrives.
fn flow_req_flood(net: &mut Net, mac: impl Fn(u64) -> Mac, instance: impl Fn(u64) -> u64) {
    let mut g = guesses(99);
    for i in 0..20_000u64 {
        net.now += Duration::from_micros(200);
        let req = flow_req(instance(i), "srv", u64::MAX);
        net.forge(
            B,
            mac(i),
            &frame(Eid::NONE, Eid(g.next().unwrap() | 1), req),
        );
    }
}

#[test]
fn flow_req_flood_from_one_mac_stays_under_its_caps() {
    let mut net = connected_with(1000, small_caps());
    assert!(net.send_data(A, 1));
    // One instance: a MAC claiming ever new ones is challenged instead.
    flow_req_flood(&mut net, |_| MAC_C, |_| 0xc0c0);
    let b = &net.nodes[B].fa;
    assert_eq!(b.inbound_count(Some(MAC_C)), 64, "per-MAC cap");
    assert!(b.pending_count() <= 16);
    assert!(b.stats().requests_capped > 0);
    net.alloc(A, 2, "srv", 1000);
    assert!(matches!(net.alloc_result(A, 2), Some((_, Ok(_)))));
}

#[test]
fn a_legitimate_burst_over_the_pending_cap_only_waits() {
    let mut net = connected_with(1000, small_caps());
    // B's irmd is slow: 40 requests from A at once, 16 pending places per MAC.
    net.nodes[B].answer = Answer::Hold;
    for id in 2..42 {
        net.alloc(A, id, "srv", 1000);
    }
    assert_eq!(net.nodes[B].fa.pending_count(), 16);
    assert_eq!(
        net.count_sent(B, FrameType::FlowReply),
        1,
        "no refusals, only flow 1's reply"
    );
    // irmd answers the held ones; the rest come in with the retransmissions.
    net.nodes[B].answer = Answer::Accept;
    let now = net.now;
    for (i, token) in std::mem::take(&mut net.nodes[B].held)
        .into_iter()
        .enumerate()
    {
        assert!(net.nodes[B]
            .fa
            .accept_result(now, token, Ok(500 + i as u32), 0)
            .is_some());
    }
    net.pump();
    net.advance(ms(500));
    for id in 2..42 {
        assert!(
            matches!(net.alloc_result(A, id), Some((_, Ok(_)))),
            "flow {id}"
        );
    }
}

#[test]
fn a_mac_claiming_ever_new_instances_is_challenged_not_served() {
    let mut net = connected_with(1000, small_caps());
    flow_req_flood(&mut net, |_| MAC_C, |i| i + 1);
    let b = &net.nodes[B].fa;
    assert_eq!(b.inbound_count(Some(MAC_C)), 1, "only its first instance");
    assert!(b.stats().challenges_sent > 0);
    assert_eq!(
        b.stats().restarts_confirmed,
        0,
        "C never sees the challenges"
    );
}

#[test]
fn flow_req_flood_from_random_macs_leaves_room_for_known_peers() {
    let mut net = connected_with(1000, small_caps());
    assert!(net.send_data(A, 1)); // B has seen A prove the flow.
    flow_req_flood(&mut net, mac_of, |i| i + 1);
    let b = &net.nodes[B].fa;
    let strangers_share = 4096 - 4096 / 4;
    assert!(
        b.inbound_count(None) <= strangers_share + 1,
        "{}",
        b.inbound_count(None)
    );
    assert!(b.pending_count() <= 256);
    assert!(b.mac_table_len() <= 1024);
    assert!(b.stats().requests_capped > 0);
    // A proved a live flow: the reserved share lets its request through.
    net.alloc(A, 2, "srv", 1000);
    assert!(matches!(net.alloc_result(A, 2), Some((_, Ok(_)))));
    assert!(net.send_data(A, 2));
}

#[test]
fn a_keepalive_flood_from_one_mac_is_cut_to_its_budget() {
    let mut net = busy_pair();
    let before = net.nodes[A].fa.stats();
    for i in 0..10_000u64 {
        net.nodes[A]
            .fa
            .handle_frame(net.now, MAC_C, &ka(i, i + 1, i));
    }
    net.pump();
    let after = net.nodes[A].fa.stats();
    let burst = Policy::default().rx_per_mac.burst as u64;
    assert_eq!(after.budget_drops - before.budget_drops, 10_000 - burst);
    let burst_replies = Policy::default().reply_per_mac.burst as usize;
    let replies = net.nodes[A].sent.iter().filter(|s| s.dst == MAC_C).count();
    assert_eq!(
        replies, burst_replies,
        "replies to one MAC: its reply burst"
    );
}

#[test]
fn a_keepalive_flood_from_random_macs_does_not_starve_a_peers_keepalives() {
    let mut net = busy_pair();
    net.drop = Box::new(|from, _| from == B);
    let heard = net.nodes[A].fa.last_heard(1).unwrap();
    net.advance(ms(500));
    // Enough keep-alives from ever new MACs, all at once, to empty the
    // global keep-alive budget (its burst plus what it earned meanwhile).
    let flood = 4 * Policy::default().rx_total.burst as u64;
    let before = net.nodes[A].fa.stats().budget_drops;
    for i in 0..flood {
        net.nodes[A]
            .fa
            .handle_frame(net.now, mac_of(i + 1), &ka(i + 1, i + 2, i));
    }
    assert!(
        net.nodes[A].fa.stats().budget_drops > before,
        "the flood never reached the global budget"
    );
    // B's next keep-alive still counts as proof of life.
    let drops = net.nodes[A].fa.stats().budget_drops;
    let real = ka(nonce(&net, B, MAC_A), nonce(&net, A, MAC_B), 1);
    net.forge(A, MAC_B, &real);
    assert_eq!(net.nodes[A].fa.last_heard(1), Some(heard + ms(500)));
    assert_eq!(net.nodes[A].fa.stats().budget_drops, drops);
}

#[test]
fn replies_never_amplify_and_are_bounded_in_total() {
    let mut net = busy_pair();
    net.nodes[A].fa.register_name(name_hash("a-srv"));
    let provokers = [
        frame(
            Eid::NONE,
            Eid::NONE,
            Payload::NameQuery {
                name_hash: name_hash("a-srv"),
            },
        ),
        frame(Eid(3), Eid(4), Payload::Dealloc),
        frame(Eid(3), Eid(4), Payload::Data(b"")),
        ka(1, 2, 3),
        frame(
            Eid::NONE,
            Eid::NONE,
            Payload::Challenge(ChallengeRepr {
                challenge: 1,
                believed_instance: 2,
            }),
        ),
        frame(Eid::NONE, Eid(4), flow_req(5, "unknown", 1)),
    ];
    let start = net.now;
    for f in &provokers {
        let len = f.buffer_len();
        let sent_before = net.nodes[A].sent.len();
        // One second of a 10 000/s flood from ever new MACs.
        for i in 0..10_000u64 {
            net.now += Duration::from_micros(100);
            net.forge(A, mac_of(i + 1), f);
        }
        let replies = &net.nodes[A].sent[sent_before..];
        assert!(
            replies.iter().all(|s| s.bytes.len() <= len),
            "{:?} amplified",
            f.frame_type()
        );
        let to_strangers = replies.iter().filter(|s| s.dst != MAC_B).count();
        let total = Policy::default().reply_total;
        // burst + one per `every` over the second.
        assert!(
            to_strangers as u32 <= total.burst + 1000 + 1,
            "{to_strangers} replies"
        );
    }
    assert!(net.now - start >= ms(6000));
    assert!(net.nodes[A].fa.stats().replies_suppressed > 0);
    assert_eq!(net.states(A, 1), []);
}

// ---- cost ----

/// Flow records visited while `n` flows are open and 1 000 valid and 1 000
/// forged keep-alives arrive.
fn keepalive_visits(n: u32) -> u64 {
    let mut net = Net::new();
    let open = Policy {
        rx_per_mac: Rate::UNLIMITED,
        rx_total: Rate::UNLIMITED,
        reply_per_mac: Rate::UNLIMITED,
        reply_total: Rate::UNLIMITED,
        max_inbound_flows_per_mac: 1 << 20,
        max_inbound_flows: 1 << 20,
        max_pending_per_mac: 1 << 20,
        max_pending: 1 << 20,
        ..Policy::default()
    };
    net.nodes[A] = Node::with_policy(MAC_A, INSTANCE_A, 1480, open.clone());
    net.nodes[B] = Node::with_policy(MAC_B, INSTANCE_B, 1480, open);
    net.nodes[B].fa.register_name(name_hash("srv"));
    for id in 1..=n {
        net.alloc(A, id, "srv", 1000);
    }
    assert_eq!(net.nodes[A].fa.flow_count(), n as usize);
    let before = net.nodes[A].fa.stats().flow_visits;
    let (a_nonce, b_nonce) = (nonce(&net, A, MAC_B), nonce(&net, B, MAC_A));
    let gap = ms(50);
    let mut reports = 0;
    for i in 0..1000u64 {
        net.now += Duration::from_micros(100);
        let now = net.now;
        // Frames that prove nothing never call for a walk over the flows...
        net.forge(A, MAC_B, &ka(b_nonce, i + 1, i + 1));
        net.forge(A, MAC_C, &ka(i, a_nonce, i + 1));
        assert!(!net.nodes[A].fa.liveness_report_due(MAC_B, now, gap));
        assert!(!net.nodes[A].fa.liveness_report_due(MAC_C, now, gap));
        // ...valid ones at most once per gap.
        net.forge(A, MAC_B, &ka(b_nonce, a_nonce, i + 1));
        reports += net.nodes[A].fa.liveness_report_due(MAC_B, now, gap) as u32;
    }
    assert_eq!(reports, 2, "100 ms of keep-alives, one report per 50 ms");
    assert_eq!(net.nodes[A].fa.last_heard(1), Some(net.now));
    net.nodes[A].fa.stats().flow_visits - before
}

#[test]
fn keepalive_cost_does_not_grow_with_the_flows() {
    assert_eq!(keepalive_visits(1), 0);
    assert_eq!(keepalive_visits(10_000), 0);
}

// ---- names ----

#[test]
fn a_second_answer_for_a_name_is_reported_once() {
    let mut net = connected(1000);
    let reply = frame(
        Eid::NONE,
        Eid::NONE,
        Payload::NameReply {
            name_hash: name_hash("srv"),
        },
    );
    for _ in 0..100 {
        net.forge(A, MAC_C, &reply);
    }
    let conflicts: Vec<_> = net.nodes[A]
        .events
        .iter()
        .filter_map(|(_, a)| match a {
            Action::NameConflict { kept, other, .. } => Some((*kept, *other)),
            _ => None,
        })
        .collect();
    assert_eq!(conflicts, [(MAC_B, MAC_C)]);
    assert_eq!(net.nodes[A].fa.stats().name_conflicts, 100);
    // Unsolicited answers change nothing.
    net.alloc(A, 2, "srv", 1000);
    assert_eq!(net.nodes[A].fa.data_tx(net.now, 2).unwrap().0, MAC_B);
}

#[test]
fn an_expired_answer_is_asked_again_and_the_old_server_kept() {
    let mut net = connected(1000);
    net.dealloc(A, 1);
    net.advance(Policy::default().name_cache_ttl);
    // C answers the re-query before B does (B's first answer is lost).
    let mut lost = false;
    net.drop = Box::new(move |from, f| {
        let lose = from == B && f.frame_type() == FrameType::NameReply && !lost;
        lost |= lose;
        lose
    });
    let t = net.now;
    net.alloc(A, 2, "srv", 1000);
    assert_eq!(
        net.sent(A, FrameType::NameQuery, t, t).len(),
        1,
        "asked again"
    );
    let reply = frame(
        Eid::NONE,
        Eid::NONE,
        Payload::NameReply {
            name_hash: name_hash("srv"),
        },
    );
    net.forge(A, MAC_C, &reply);
    assert_eq!(
        net.alloc_result(A, 2),
        None,
        "the newcomer is not taken at once"
    );
    net.advance(ms(100));
    let (_, result) = net.alloc_result(A, 2).unwrap();
    assert!(result.is_ok());
    assert_eq!(net.nodes[A].fa.data_tx(net.now, 2).unwrap().0, MAC_B);
}

#[test]
fn a_silent_old_server_gives_way_after_one_wait() {
    let mut net = connected(1000);
    net.dealloc(A, 1);
    net.advance(Policy::default().name_cache_ttl);
    net.nodes[B].fa.unregister_name(name_hash("srv"));
    let t = net.now;
    net.alloc(A, 2, "srv", 1000);
    let reply = frame(
        Eid::NONE,
        Eid::NONE,
        Payload::NameReply {
            name_hash: name_hash("srv"),
        },
    );
    net.forge(A, MAC_C, &reply);
    net.advance(ms(200));
    // The old server gets the query at 50 ms and its wait; then C is used.
    let to_c = net.nodes[A]
        .sent
        .iter()
        .filter(|s| s.dst == MAC_C && s.kind == FrameType::FlowReq);
    assert_eq!(to_c.map(|s| s.at).next(), Some(t + ms(150)));
}

#[test]
fn forged_no_such_name_without_our_eid_does_not_reopen_the_race() {
    let mut net = Net::new();
    net.nodes[B].fa.register_name(name_hash("srv"));
    net.nodes[B].answer = Answer::Hold;
    let requesting = net.alloc(A, 1, "srv", 1000);
    let mut g = guesses(8);
    for _ in 0..1000 {
        let guess = Eid::new(requesting.index(), g.next().unwrap());
        let refusal = Payload::FlowReply(FlowReplyRepr {
            instance: 1,
            code: ReplyCode::NoSuchName,
            max_sdu: 1,
            timeout: 0,
        });
        net.forge(A, MAC_B, &frame(guess, Eid::NONE, refusal));
    }
    assert_eq!(net.alloc_result(A, 1), None, "still asking B");
    assert_eq!(net.count_sent(A, FrameType::NameQuery), 1, "no new race");
}
