//! Property tests of the flow allocator against an off-path forger: whatever
//! sequence of frames (any type, random eids, nonces and challenges, from the
//! peer's MAC or a stranger's) arrives, nothing panics, the established flow
//! stays up and keeps carrying data, and its peer's liveness is not refreshed
//! (B is silenced towards A meanwhile, so no real answer refreshes it either).

mod common;
use common::*;

use ipcpd_eth::wire::{
    ChallengeReplyRepr, ChallengeRepr, FlowReqRepr, KeepAliveRepr, Verdict, WireQos,
};
use proptest::prelude::*;

const MAC_C: Mac = [2, 0, 0, 0, 0, 0xc];

/// One forged frame: (type index, from the peer's MAC?, eids, three u64 fields, a byte).
type Forged = (u8, bool, u64, u64, [u64; 3], u8);

fn forged() -> impl Strategy<Value = Forged> {
    (
        0u8..11,
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u64; 3]>(),
        any::<u8>(),
    )
}

fn build(f: &Forged, name: [u8; 32]) -> Frame<'static> {
    let (ty, _, dst, src, [x, y, z], b) = *f;
    let payload = match ty {
        0 => Payload::Data(b"forged"),
        1 => Payload::NameQuery { name_hash: name },
        2 => Payload::NameReply { name_hash: name },
        3 => Payload::FlowReq(FlowReqRepr {
            instance: x,
            name_hash: name,
            qos: WireQos {
                timeout: y,
                ..WireQos::from(irm::Qos::raw())
            },
            max_sdu: z as u32,
        }),
        4 => Payload::FlowReply(FlowReplyRepr {
            instance: x,
            code: [
                ReplyCode::Ok,
                ReplyCode::NoSuchName,
                ReplyCode::NoAcceptingProcess,
                ReplyCode::ResourceLimit,
            ][b as usize % 4],
            max_sdu: y as u32,
            timeout: z,
        }),
        5 => Payload::Dealloc,
        6 => Payload::DeallocAck,
        7 => Payload::KeepAlive(KeepAliveRepr {
            sender_instance: x,
            receiver_instance: y,
            challenge: z,
        }),
        8 => Payload::UnknownEid,
        9 => Payload::Challenge(ChallengeRepr {
            challenge: x,
            believed_instance: y,
        }),
        _ => Payload::ChallengeReply(ChallengeReplyRepr {
            echo: x,
            verdict: if b % 2 == 0 {
                Verdict::Same
            } else {
                Verdict::Different
            },
        }),
    };
    Frame {
        dst: Eid(dst),
        src: Eid(src),
        payload,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn forged_frames_change_nothing(frames in proptest::collection::vec(forged(), 1..300)) {
        let mut net = connected(1000);
        prop_assert!(net.send_data(A, 1));
        prop_assert!(net.send_data(B, B_FIRST_FLOW));
        let heard = net.nodes[A].fa.last_heard(1).unwrap();
        // B falls silent towards A: a challenge A sends B is not answered,
        // so nothing but a forgery could refresh A's view of B.
        net.drop = Box::new(|from, _| from == B);
        for f in &frames {
            net.now += Duration::from_micros(500);
            let from = if f.1 { MAC_B } else { MAC_C };
            // Half of them name the registered name, so they get as far as they can.
            let name = if f.5 % 2 == 0 { name_hash("srv") } else { [f.5; 32] };
            let frame = build(f, name);
            // B's frames from A's side too: each IPCP is attacked as a peer.
            net.forge(A, from, &frame);
            net.forge(B, if f.1 { MAC_A } else { MAC_C }, &frame);
        }
        net.drop = Box::new(|_, _| false);
        prop_assert_eq!(net.states(A, 1), []);
        prop_assert_eq!(net.states(B, B_FIRST_FLOW), []);
        prop_assert_eq!(net.nodes[A].fa.last_heard(1), Some(heard), "liveness refreshed by a forgery");
        prop_assert!(net.send_data(A, 1));
        prop_assert_eq!(net.nodes[B].data.last().unwrap().1, Some(B_FIRST_FLOW));
        prop_assert!(net.send_data(B, B_FIRST_FLOW));
        prop_assert_eq!(net.nodes[A].data.last().unwrap().1, Some(1));
    }
}
