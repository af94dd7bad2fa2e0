//! Property tests for the ethflow wire codec: whatever arrives from the
//! network, parsing answers with a value or an error and never panics, and
//! everything we emit parses back to what we meant.

use ipcpd_eth::wire::*;
use proptest::prelude::*;

fn eid() -> impl Strategy<Value = Eid> {
    any::<u64>().prop_map(Eid)
}

fn qos() -> impl Strategy<Value = WireQos> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(delay, bandwidth, availability, loss, ber, in_order, max_gap, timeout)| WireQos {
                delay,
                bandwidth,
                availability,
                loss,
                ber,
                in_order,
                max_gap,
                timeout,
            },
        )
}

fn reply_code() -> impl Strategy<Value = ReplyCode> {
    prop_oneof![
        Just(ReplyCode::Ok),
        Just(ReplyCode::NoSuchName),
        Just(ReplyCode::NoAcceptingProcess),
        Just(ReplyCode::ResourceLimit),
    ]
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![Just(Verdict::Same), Just(Verdict::Different)]
}

/// A payload with owned data, so a strategy can produce it; borrow it as a
/// [`Payload`] with [`OwnedPayload::as_payload`].
#[derive(Debug, Clone)]
enum OwnedPayload {
    Data(Vec<u8>),
    Other(Payload<'static>),
}

impl OwnedPayload {
    fn as_payload(&self) -> Payload<'_> {
        match self {
            OwnedPayload::Data(sdu) => Payload::Data(sdu),
            OwnedPayload::Other(p) => *p,
        }
    }
}

fn payload() -> impl Strategy<Value = OwnedPayload> {
    let fixed = prop_oneof![
        any::<[u8; 32]>().prop_map(|name_hash| Payload::NameQuery { name_hash }),
        any::<[u8; 32]>().prop_map(|name_hash| Payload::NameReply { name_hash }),
        (any::<u64>(), any::<[u8; 32]>(), qos(), any::<u32>()).prop_map(
            |(instance, name_hash, qos, max_sdu)| {
                Payload::FlowReq(FlowReqRepr {
                    instance,
                    name_hash,
                    qos,
                    max_sdu,
                })
            }
        ),
        (any::<u64>(), reply_code(), any::<u32>(), any::<u64>()).prop_map(
            |(instance, code, max_sdu, timeout)| {
                Payload::FlowReply(FlowReplyRepr {
                    instance,
                    code,
                    max_sdu,
                    timeout,
                })
            }
        ),
        Just(Payload::Dealloc),
        Just(Payload::DeallocAck),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(sender_instance, receiver_instance, challenge)| {
                Payload::KeepAlive(KeepAliveRepr {
                    sender_instance,
                    receiver_instance,
                    challenge,
                })
            }
        ),
        Just(Payload::UnknownEid),
        (any::<u64>(), any::<u64>()).prop_map(|(challenge, believed_instance)| {
            Payload::Challenge(ChallengeRepr {
                challenge,
                believed_instance,
            })
        }),
        (any::<u64>(), verdict()).prop_map(|(echo, verdict)| {
            Payload::ChallengeReply(ChallengeReplyRepr { echo, verdict })
        }),
    ];
    prop_oneof![
        // Mostly small SDUs, sometimes up to the largest the length field allows.
        3 => proptest::collection::vec(any::<u8>(), 0..1600).prop_map(OwnedPayload::Data),
        1 => proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD_LEN).prop_map(OwnedPayload::Data),
        8 => fixed.prop_map(OwnedPayload::Other),
    ]
}

fn frame_bytes() -> impl Strategy<Value = (Eid, Eid, OwnedPayload)> {
    (eid(), eid(), payload())
}

fn fixed_type() -> impl Strategy<Value = FrameType> {
    prop_oneof![
        Just(FrameType::NameQuery),
        Just(FrameType::NameReply),
        Just(FrameType::FlowReq),
        Just(FrameType::FlowReply),
        Just(FrameType::Dealloc),
        Just(FrameType::DeallocAck),
        Just(FrameType::KeepAlive),
        Just(FrameType::UnknownEid),
        Just(FrameType::Challenge),
        Just(FrameType::ChallengeReply),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_frames_round_trip((dst, src, owned) in frame_bytes(), padding in 0usize..64) {
        let frame = Frame { dst, src, payload: owned.as_payload() };
        let mut bytes = frame.to_vec();
        prop_assert_eq!(bytes.len(), frame.buffer_len());
        bytes.resize(bytes.len() + padding, 0xa5);
        prop_assert_eq!(Frame::parse(&bytes), Ok(frame));
        let view = HeaderView::new_checked(&bytes).unwrap();
        prop_assert_eq!(view.frame_type(), frame.frame_type());
        prop_assert_eq!((view.dst(), view.src()), (dst, src));
        prop_assert_eq!(view.payload().len(), frame.payload.len());
    }

    #[test]
    fn every_truncation_is_an_error((dst, src, owned) in frame_bytes()) {
        let frame = Frame { dst, src, payload: owned.as_payload() };
        let bytes = frame.to_vec();
        // Large SDUs: check the boundary region and a spread of cuts, not all 65k.
        let step = (bytes.len() / 512).max(1);
        let cuts = (0..bytes.len()).step_by(step).chain(bytes.len().saturating_sub(64)..bytes.len());
        for cut in cuts {
            prop_assert_eq!(Frame::parse(&bytes[..cut]), Err(WireError::Truncated), "cut at {}", cut);
            prop_assert!(HeaderView::new_checked(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(frame) = Frame::parse(&bytes) {
            // Whatever parsed must re-emit to the same meaningful prefix.
            prop_assert_eq!(&frame.to_vec()[..], &bytes[..frame.buffer_len()]);
        }
        let _ = HeaderView::new_checked(&bytes);
        let _ = EthHeader::parse(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(
        ty in 0u8..=10,
        body in proptest::collection::vec(any::<u8>(), 0..128),
        extra in 0usize..8,
    ) {
        let mut bytes = vec![VERSION, ty];
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&body);
        bytes.resize(bytes.len() + extra, 0);
        match Frame::parse(&bytes) {
            Ok(frame) => prop_assert_eq!(&frame.to_vec()[..], &bytes[..HEADER_LEN + body.len()]),
            Err(e) => prop_assert!(matches!(e, WireError::BadLength | WireError::BadField), "{:?}", e),
        }
    }

    #[test]
    fn wrong_version_is_bad_version((dst, src, owned) in frame_bytes(), version in any::<u8>()) {
        prop_assume!(version != VERSION);
        let mut bytes = Frame { dst, src, payload: owned.as_payload() }.to_vec();
        bytes[0] = version;
        prop_assert_eq!(Frame::parse(&bytes), Err(WireError::BadVersion(version)));
    }

    #[test]
    fn unknown_type_is_bad_type((dst, src, owned) in frame_bytes(), ty in 11u8..=255) {
        let mut bytes = Frame { dst, src, payload: owned.as_payload() }.to_vec();
        bytes[1] = ty;
        prop_assert_eq!(Frame::parse(&bytes), Err(WireError::BadType(ty)));
    }

    #[test]
    fn length_past_the_frame_is_truncated((dst, src, owned) in frame_bytes(), excess in 1usize..1000) {
        let mut bytes = Frame { dst, src, payload: owned.as_payload() }.to_vec();
        let claimed = bytes.len() - HEADER_LEN + excess;
        prop_assume!(claimed <= MAX_PAYLOAD_LEN);
        bytes[2..4].copy_from_slice(&(claimed as u16).to_be_bytes());
        prop_assert_eq!(Frame::parse(&bytes), Err(WireError::Truncated));
        prop_assert_eq!(HeaderView::new_checked(&bytes), Err(WireError::Truncated));
    }

    #[test]
    fn fixed_size_type_with_wrong_length_is_bad_length(
        ty in fixed_type(),
        len in 0usize..200,
        dst in eid(),
        src in eid(),
    ) {
        let expected = ty.fixed_payload_len().unwrap();
        prop_assume!(len != expected);
        // Zeroed payload, so no field error (bad code, bad bool) can mask the length error.
        let mut bytes = vec![0u8; HEADER_LEN + len];
        emit_data_header(&mut bytes, dst, src, len as u16);
        bytes[1] = ty as u8;
        prop_assert_eq!(Frame::parse(&bytes), Err(WireError::BadLength));
    }

    #[test]
    fn every_fixed_type_parses_any_payload_of_its_length(
        ty in fixed_type(),
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        // Any bytes of the right length: a value or a field error, and a
        // value re-emits to exactly these bytes.
        let len = ty.fixed_payload_len().unwrap();
        let body: Vec<u8> = body.into_iter().chain(std::iter::repeat(0)).take(len).collect();
        let mut bytes = vec![0u8; HEADER_LEN];
        emit_data_header(&mut bytes, Eid(1), Eid(2), len as u16);
        bytes[1] = ty as u8;
        bytes.extend_from_slice(&body);
        match Frame::parse(&bytes) {
            Ok(frame) => {
                prop_assert_eq!(frame.frame_type(), ty);
                prop_assert_eq!(frame.to_vec(), bytes);
            }
            Err(e) => prop_assert_eq!(e, WireError::BadField),
        }
    }

    #[test]
    fn data_header_in_place_parses(dst in eid(), src in eid(), sdu in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let mut buf = vec![0u8; HEADER_LEN + sdu.len()];
        buf[HEADER_LEN..].copy_from_slice(&sdu);
        emit_data_header(&mut buf, dst, src, sdu.len() as u16);
        prop_assert_eq!(Frame::parse(&buf), Ok(Frame { dst, src, payload: Payload::Data(&sdu) }));
    }

    #[test]
    fn eth_header_round_trips(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), ethertype in any::<u16>(), rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let header = EthHeader { dst, src, ethertype };
        let mut buf = vec![0u8; ETH_HEADER_LEN];
        header.emit(&mut buf);
        buf.extend_from_slice(&rest);
        let (parsed, tail) = EthHeader::parse(&buf).unwrap();
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(tail, &rest[..]);
    }
}
