//! Property tests: every frame the codec encodes decodes back to the same message, and no input
//! of any shape makes the decoders panic.

use bytes::Bytes;
use herald_protocol::binary::{decode_push, encode_push};
use herald_protocol::{
    BinaryPush, InboundPayload, OutFrame, PayloadEncoding, Vsn, decode_binary, decode_text,
    encode_frame,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn short_string() -> impl Strategy<Value = String> {
    // Up to 255 bytes once UTF-8 encoded: 60 chars of at most 4 bytes each.
    proptest::collection::vec(any::<char>(), 0..60).prop_map(|c| c.into_iter().collect())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        short_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(short_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn binary_push_round_trips(
        join_ref in proptest::option::of("[0-9]{1,6}"),
        ref_ in proptest::option::of("[0-9]{1,6}"),
        topic in short_string(),
        event in short_string(),
        raw in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let push = BinaryPush {
            join_ref, ref_, topic, event,
            metadata: Bytes::from_static(br#"{"persist":true}"#),
            encoding: if raw { PayloadEncoding::Raw } else { PayloadEncoding::Json },
            payload: Bytes::from(payload),
        };
        let frame = encode_push(&push).unwrap();
        prop_assert_eq!(decode_push(&frame).unwrap(), push);
    }

    #[test]
    fn v2_text_round_trips(
        join_ref in proptest::option::of(short_string()),
        ref_ in proptest::option::of(short_string()),
        topic in short_string(),
        event in short_string(),
        payload in json_value(),
    ) {
        for vsn in [Vsn::V1, Vsn::V2] {
            let text = encode_frame(vsn, &OutFrame {
                join_ref: join_ref.as_deref(), ref_: ref_.as_deref(), topic: &topic, event: &event, payload: &payload,
            }).unwrap();
            let m = decode_text(vsn, &text).unwrap();
            prop_assert_eq!(&m.topic, &topic);
            prop_assert_eq!(&m.event, &event);
            prop_assert_eq!(&m.ref_, &ref_);
            if vsn == Vsn::V2 { prop_assert_eq!(&m.join_ref, &join_ref); }
            let InboundPayload::Json(raw) = m.payload else { panic!("text frame decoded as binary") };
            let back: Value = serde_json::from_str(raw.get()).unwrap();
            prop_assert_eq!(back, payload.clone());
        }
    }

    #[test]
    fn decoders_never_panic_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_binary(Vsn::V2, &Bytes::from(data.clone()));
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = decode_text(Vsn::V1, text);
            let _ = decode_text(Vsn::V2, text);
        }
    }

    #[test]
    fn decoders_never_panic_on_json(v in json_value()) {
        let text = v.to_string();
        let _ = decode_text(Vsn::V1, &text);
        let _ = decode_text(Vsn::V2, &text);
        let _ = herald_protocol::JoinConfig::parse(&v);
        let _ = herald_protocol::JoinConfig::parse(&json!({"config": v}));
    }

    #[test]
    fn binary_header_lengths_are_checked(header in proptest::collection::vec(any::<u8>(), 7..=7), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = vec![3u8];
        frame.extend_from_slice(&header[1..]);
        frame.extend_from_slice(&tail);
        let needed: usize = 7 + header[1..6].iter().map(|b| usize::from(*b)).sum::<usize>();
        let result = decode_push(&Bytes::from(frame.clone()));
        if frame.len() < needed { prop_assert!(result.is_err()); }
    }
}

mod cursor {
    use herald_protocol::cursor::{CursorEntry, CursorError, MAX_ENTRIES, decode, encode};
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = CursorEntry> {
        (any::<u32>(), "[a-z0-9]{0,16}", any::<u64>()).prop_map(|(channel, epoch, offset)| {
            CursorEntry {
                channel,
                epoch,
                offset,
            }
        })
    }

    proptest! {
        #[test]
        fn cursors_round_trip(entries in proptest::collection::vec(entry(), 0..MAX_ENTRIES)) {
            let token = encode(&entries, b"k").unwrap();
            prop_assert_eq!(decode(&token, b"k").unwrap(), entries);
        }

        #[test]
        fn any_flipped_character_is_refused(entries in proptest::collection::vec(entry(), 1..8), at in any::<usize>(), with in "[A-Za-z0-9_-]") {
            let token = encode(&entries, b"k").unwrap();
            let i = at % token.len();
            let mut chars: Vec<char> = token.chars().collect();
            let replacement = with.chars().next().unwrap();
            prop_assume!(chars[i] != replacement);
            chars[i] = replacement;
            let tampered: String = chars.into_iter().collect();
            // Either refused, or (when the change only touched padding bits of the last character) the same entries.
            match decode(&tampered, b"k") {
                Err(_) => {}
                Ok(decoded) => prop_assert_eq!(decoded, entries),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = decode(&text, b"k");
        }
    }

    #[test]
    fn too_many_entries_or_too_long_tokens_are_refused() {
        let e = CursorEntry {
            channel: 1,
            epoch: "e".into(),
            offset: 1,
        };
        assert_eq!(
            encode(&vec![e; MAX_ENTRIES + 1], b"k"),
            Err(CursorError::TooLarge)
        );
        assert_eq!(decode(&"A".repeat(5000), b"k"), Err(CursorError::TooLarge));
    }
}
