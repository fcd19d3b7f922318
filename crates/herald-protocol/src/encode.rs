//! Encoding of server frames: replies, pushes and broadcasts, for each wire format.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::Vsn;
use crate::binary::{self, BinaryError, PayloadEncoding};

/// A server frame before encoding: `[join_ref, ref, topic, event, payload]` in v2 terms.
#[derive(Debug, Clone, Copy)]
pub struct OutFrame<'a, P: Serialize + ?Sized> {
    /// The channel join reference (v2 only; v1 never sends it).
    pub join_ref: Option<&'a str>,
    /// The reference of the message this answers, if any.
    pub ref_: Option<&'a str>,
    /// Full topic.
    pub topic: &'a str,
    /// Event name.
    pub event: &'a str,
    /// Payload.
    pub payload: &'a P,
}

#[derive(Serialize)]
struct V1Out<'a, P: Serialize + ?Sized> {
    topic: &'a str,
    event: &'a str,
    payload: &'a P,
    #[serde(rename = "ref")]
    ref_: Option<&'a str>,
}

/// Encodes a frame as text for the given protocol version.
pub fn encode_frame<P: Serialize + ?Sized>(
    vsn: Vsn,
    frame: &OutFrame<'_, P>,
) -> Result<String, serde_json::Error> {
    match vsn {
        Vsn::V1 => serde_json::to_string(&V1Out {
            topic: frame.topic,
            event: frame.event,
            payload: frame.payload,
            ref_: frame.ref_,
        }),
        Vsn::V2 => serde_json::to_string(&(
            frame.join_ref,
            frame.ref_,
            frame.topic,
            frame.event,
            frame.payload,
        )),
    }
}

#[derive(Serialize)]
struct BroadcastBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'a str,
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a RawValue>,
}

/// Encodes a broadcast with a JSON payload as a text frame:
/// `[null,null,topic,"broadcast",{"type":"broadcast","event",..,"payload",..,"meta"?}]` (v2) or the v1 object.
pub fn encode_broadcast_text(
    vsn: Vsn,
    topic: &str,
    event: &str,
    payload: &RawValue,
    meta: Option<&RawValue>,
) -> Result<String, serde_json::Error> {
    let body = BroadcastBody {
        kind: "broadcast",
        event,
        payload,
        meta,
    };
    encode_frame(
        vsn,
        &OutFrame {
            join_ref: None,
            ref_: None,
            topic,
            event: "broadcast",
            payload: &body,
        },
    )
}

/// Encodes a broadcast as a binary kind-4 frame (v2 only).
pub fn encode_broadcast_binary(
    topic: &str,
    event: &str,
    meta: Option<&RawValue>,
    encoding: PayloadEncoding,
    payload: &[u8],
) -> Result<bytes::Bytes, BinaryError> {
    let meta = meta.map(|m| m.get().as_bytes()).unwrap_or_default();
    binary::encode_broadcast(topic, event, meta, encoding, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn v2_reply() {
        let payload = json!({"status":"ok","response":{}});
        let s = encode_frame(
            Vsn::V2,
            &OutFrame {
                join_ref: None,
                ref_: Some("9"),
                topic: "phoenix",
                event: "phx_reply",
                payload: &payload,
            },
        )
        .unwrap();
        assert_eq!(
            s,
            r#"[null,"9","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
        );
    }

    #[test]
    fn v1_reply_has_no_join_ref() {
        let payload = json!({});
        let s = encode_frame(
            Vsn::V1,
            &OutFrame {
                join_ref: Some("6"),
                ref_: Some("6"),
                topic: "realtime:a",
                event: "phx_close",
                payload: &payload,
            },
        )
        .unwrap();
        assert_eq!(
            s,
            r#"{"topic":"realtime:a","event":"phx_close","payload":{},"ref":"6"}"#
        );
    }

    #[test]
    fn broadcast_text_keeps_payload_verbatim() {
        let p = raw(r#"{"b": 1,  "a":[1,2]}"#);
        let s = encode_broadcast_text(Vsn::V2, "realtime:r", "evt", &p, None).unwrap();
        assert_eq!(
            s,
            r#"[null,null,"realtime:r","broadcast",{"type":"broadcast","event":"evt","payload":{"b": 1,  "a":[1,2]}}]"#
        );
        let m = raw(r#"{"id":"x"}"#);
        let s = encode_broadcast_text(Vsn::V1, "realtime:r", "evt", &p, Some(&m)).unwrap();
        assert!(s.starts_with(
            r#"{"topic":"realtime:r","event":"broadcast","payload":{"type":"broadcast""#
        ));
        assert!(s.ends_with(r#""meta":{"id":"x"}},"ref":null}"#));
    }
}
