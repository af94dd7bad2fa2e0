//! Unit tests of the wire codec (kept apart so `wire.rs` stays readable).

use super::*;

const DST: Eid = Eid(0x0000_0102_0304_0506);
const SRC: Eid = Eid(0x0a0b_0c0d_0e0f_1011);

fn qos() -> WireQos {
    WireQos {
        delay: 100,
        bandwidth: 1 << 40,
        availability: 3,
        loss: 7,
        ber: 9,
        in_order: true,
        max_gap: 20,
        timeout: 120_000,
    }
}

fn every_payload(sdu: &[u8]) -> Vec<Payload<'_>> {
    vec![
        Payload::Data(sdu),
        Payload::NameQuery {
            name_hash: [0x11; 32],
        },
        Payload::NameReply {
            name_hash: [0x22; 32],
        },
        Payload::FlowReq(FlowReqRepr {
            instance: 42,
            name_hash: [0x33; 32],
            qos: qos(),
            max_sdu: 1480,
        }),
        Payload::FlowReply(FlowReplyRepr {
            instance: 43,
            code: ReplyCode::NoAcceptingProcess,
            max_sdu: 9000,
            timeout: 0,
        }),
        Payload::Dealloc,
        Payload::DeallocAck,
        Payload::KeepAlive(KeepAliveRepr {
            sender_instance: 1,
            receiver_instance: u64::MAX,
            challenge: 0x1234_5678_9abc_def0,
        }),
        Payload::UnknownEid,
        Payload::Challenge(ChallengeRepr {
            challenge: 77,
            believed_instance: 78,
        }),
        Payload::ChallengeReply(ChallengeReplyRepr {
            echo: 79,
            verdict: Verdict::Different,
        }),
    ]
}

#[test]
fn every_frame_type_round_trips() {
    let sdu = b"hello, flow";
    let payloads = every_payload(sdu);
    assert_eq!(
        payloads.len(),
        FrameType::ALL.len(),
        "one payload per frame type"
    );
    for payload in payloads {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload,
        };
        let bytes = frame.to_vec();
        assert_eq!(bytes.len(), frame.buffer_len());
        assert_eq!(Frame::parse(&bytes), Ok(frame), "{:?}", frame.frame_type());
    }
}

#[test]
fn fixed_sizes_match_the_documented_layout() {
    assert_eq!(QOS_LEN, 34);
    assert_eq!(FLOW_REQ_LEN, 78);
    assert_eq!(FLOW_REPLY_LEN, 21);
    assert_eq!(KEEP_ALIVE_LEN, 24);
    assert_eq!(CHALLENGE_LEN, 16);
    assert_eq!(CHALLENGE_REPLY_LEN, 9);
    assert_eq!(HEADER_LEN, 20);
    assert_eq!(ETH_HEADER_LEN, 14);
    for payload in every_payload(b"") {
        let frame = Frame {
            dst: DST,
            src: SRC,
            payload,
        };
        let expected = frame.frame_type().fixed_payload_len().unwrap_or(0);
        assert_eq!(frame.to_vec().len(), HEADER_LEN + expected);
    }
}

#[test]
fn header_bytes_are_big_endian_in_documented_order() {
    let frame = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::Data(&[0xaa, 0xbb, 0xcc]),
    };
    let bytes = frame.to_vec();
    assert_eq!(&bytes[..4], &[VERSION, 0, 0, 3]);
    assert_eq!(&bytes[4..12], &[0, 0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(
        &bytes[12..20],
        &[0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11]
    );
    assert_eq!(&bytes[20..], &[0xaa, 0xbb, 0xcc]);
}

#[test]
fn flow_reply_layout() {
    let frame = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::FlowReply(FlowReplyRepr {
            instance: 0x0102,
            code: ReplyCode::ResourceLimit,
            max_sdu: 0x0506,
            timeout: 0x0708,
        }),
    };
    let bytes = frame.to_vec();
    assert_eq!(
        &bytes[HEADER_LEN..],
        &[0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8]
    );
}

#[test]
fn keep_alive_and_challenge_layouts() {
    let ka = Frame {
        dst: Eid::NONE,
        src: Eid::NONE,
        payload: Payload::KeepAlive(KeepAliveRepr {
            sender_instance: 0x0101,
            receiver_instance: 0x0202,
            challenge: 0x0303,
        }),
    }
    .to_vec();
    let p = &ka[HEADER_LEN..];
    assert_eq!(
        p[keep_alive_field::SENDER_INSTANCE],
        [0, 0, 0, 0, 0, 0, 1, 1]
    );
    assert_eq!(
        p[keep_alive_field::RECEIVER_INSTANCE],
        [0, 0, 0, 0, 0, 0, 2, 2]
    );
    assert_eq!(p[keep_alive_field::CHALLENGE], [0, 0, 0, 0, 0, 0, 3, 3]);
    let rep = Frame {
        dst: Eid::NONE,
        src: Eid::NONE,
        payload: Payload::ChallengeReply(ChallengeReplyRepr {
            echo: 0x0404,
            verdict: Verdict::Different,
        }),
    }
    .to_vec();
    assert_eq!(&rep[HEADER_LEN..], &[0, 0, 0, 0, 0, 0, 4, 4, 1]);
}

#[test]
fn padding_past_the_length_is_ignored() {
    let frame = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::Data(&[0x5a]),
    };
    let mut padded = frame.to_vec();
    padded.resize(46, 0xee);
    let parsed = Frame::parse(&padded).unwrap();
    assert_eq!(parsed.payload, Payload::Data(&[0x5a]));
    assert_eq!(HeaderView::new_checked(&padded).unwrap().payload(), &[0x5a]);
}

#[test]
fn padding_after_fixed_size_payload_is_ignored() {
    let frame = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::Dealloc,
    };
    let mut padded = frame.to_vec();
    padded.resize(46, 0);
    assert_eq!(Frame::parse(&padded), Ok(frame));
}

#[test]
fn short_header_is_truncated() {
    let bytes = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::Dealloc,
    }
    .to_vec();
    assert_eq!(
        Frame::parse(&bytes[..HEADER_LEN - 1]),
        Err(WireError::Truncated)
    );
    assert_eq!(Frame::parse(&[]), Err(WireError::Truncated));
}

#[test]
fn length_past_the_frame_is_truncated() {
    let mut bytes = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::Data(b"abcd"),
    }
    .to_vec();
    bytes[3] = 5;
    assert_eq!(Frame::parse(&bytes), Err(WireError::Truncated));
}

#[test]
fn wrong_version_and_type_are_refused() {
    let mut bytes = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::UnknownEid,
    }
    .to_vec();
    bytes[0] = 1;
    assert_eq!(Frame::parse(&bytes), Err(WireError::BadVersion(1)));
    bytes[0] = VERSION;
    bytes[1] = 11;
    assert_eq!(Frame::parse(&bytes), Err(WireError::BadType(11)));
}

#[test]
fn wrong_length_for_fixed_type_is_bad_length() {
    let mut bytes = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::KeepAlive(KeepAliveRepr {
            sender_instance: 1,
            receiver_instance: 2,
            challenge: 3,
        }),
    }
    .to_vec();
    bytes[3] = 23;
    assert_eq!(Frame::parse(&bytes), Err(WireError::BadLength));
}

#[test]
fn bad_in_order_and_reply_code_are_bad_field() {
    let req = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::FlowReq(FlowReqRepr {
            instance: 1,
            name_hash: [0; 32],
            qos: qos(),
            max_sdu: 1,
        }),
    };
    let mut bytes = req.to_vec();
    let in_order_at = HEADER_LEN + flow_req_field::IN_ORDER;
    assert_eq!(bytes[in_order_at], 1);
    bytes[in_order_at] = 2;
    assert_eq!(Frame::parse(&bytes), Err(WireError::BadField));

    let rep = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::FlowReply(FlowReplyRepr {
            instance: 1,
            code: ReplyCode::Ok,
            max_sdu: 1,
            timeout: 1,
        }),
    };
    let mut bytes = rep.to_vec();
    bytes[HEADER_LEN + flow_reply_field::CODE] = 4;
    assert_eq!(Frame::parse(&bytes), Err(WireError::BadField));

    let mut bytes = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::ChallengeReply(ChallengeReplyRepr {
            echo: 1,
            verdict: Verdict::Same,
        }),
    }
    .to_vec();
    bytes[HEADER_LEN + challenge_reply_field::VERDICT] = 2;
    assert_eq!(Frame::parse(&bytes), Err(WireError::BadField));
}

#[test]
fn data_header_in_place_matches_emit() {
    let sdu = b"in place";
    let mut buf = vec![0u8; HEADER_LEN + sdu.len()];
    buf[HEADER_LEN..].copy_from_slice(sdu);
    emit_data_header(&mut buf, DST, SRC, sdu.len() as u16);
    assert_eq!(
        buf,
        Frame {
            dst: DST,
            src: SRC,
            payload: Payload::Data(sdu)
        }
        .to_vec()
    );
    let view = HeaderView::new_checked(&buf).unwrap();
    assert_eq!(
        (view.frame_type(), view.dst(), view.src(), view.payload()),
        (FrameType::Data, DST, SRC, &sdu[..])
    );
}

#[test]
fn emit_returns_length_and_leaves_the_rest() {
    let frame = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::DeallocAck,
    };
    let mut buf = [0x77u8; 64];
    assert_eq!(frame.emit(&mut buf), HEADER_LEN);
    assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0x77));
}

#[test]
#[should_panic(expected = "emit: buffer")]
fn emit_into_short_buffer_is_a_caller_bug() {
    let frame = Frame {
        dst: DST,
        src: SRC,
        payload: Payload::Data(b"xyz"),
    };
    frame.emit(&mut [0u8; HEADER_LEN + 2]);
}

#[test]
fn type_and_code_conversions() {
    for v in 0..=255u8 {
        match FrameType::try_from(v) {
            Ok(t) => assert_eq!(t as u8, v),
            Err(e) => assert!(v > 10 && e == WireError::BadType(v)),
        }
        match ReplyCode::try_from(v) {
            Ok(c) => assert_eq!(c as u8, v),
            Err(e) => assert!(v > 3 && e == WireError::BadField),
        }
    }
}

#[test]
fn qos_converts_both_ways() {
    let q = irm::Qos::video().with_timeout(1234);
    let wire = WireQos::from(q);
    assert_eq!(wire.timeout, 1234);
    assert_eq!(wire.bandwidth, q.bandwidth);
    assert_eq!(irm::Qos::from(wire), q);
}

#[test]
fn eth_header_round_trips() {
    let header = EthHeader {
        dst: BROADCAST,
        src: [2, 0, 0, 0, 0, 1],
        ethertype: DEFAULT_ETHERTYPE,
    };
    let mut buf = [0u8; ETH_HEADER_LEN + 3];
    header.emit(&mut buf);
    assert_eq!(&buf[12..14], &[0x88, 0xb5]);
    let (parsed, rest) = EthHeader::parse(&buf).unwrap();
    assert_eq!(parsed, header);
    assert_eq!(rest.len(), 3);
    assert_eq!(
        EthHeader::parse(&buf[..ETH_HEADER_LEN - 1]),
        Err(WireError::Truncated)
    );
}

#[test]
fn eid_fields() {
    let eid = Eid::new(0x12_3456, 0xab_cdef_0123);
    assert_eq!(eid.index(), 0x12_3456);
    assert_eq!(eid.generation(), 0xab_cdef_0123);
    assert!(!eid.is_none());
    assert!(Eid::NONE.is_none());
}
