//! Decoding of client frames (v1 objects, v2 arrays, v2 binary pushes) into [`Inbound`] messages.
//!
//! Payloads stay raw JSON text until a handler needs them, so a broadcast's user payload is never
//! parsed into a tree and serialized again.

use bytes::Bytes;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use thiserror::Error;

use crate::Vsn;
use crate::binary::{self, BinaryError, BinaryPush};

/// A message a client sent.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The channel's join reference, when the client sent one.
    pub join_ref: Option<String>,
    /// The message reference, when the client sent one (replies echo it).
    pub ref_: Option<String>,
    /// Full topic, e.g. `realtime:room1` or `phoenix`.
    pub topic: String,
    /// Protocol event, e.g. `phx_join`, `heartbeat`, `broadcast`.
    pub event: String,
    /// The payload.
    pub payload: InboundPayload,
}

/// The payload of an inbound message.
#[derive(Debug, Clone)]
pub enum InboundPayload {
    /// JSON text (from a text frame).
    Json(Box<RawValue>),
    /// A binary broadcast push (kind 3); its `event` is `broadcast`.
    Binary(BinaryPush),
}

/// Why a frame could not be decoded. The connection stays open; the frame is ignored and logged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A v2 text frame that is not an array of at least five elements.
    #[error("expected an array of 5 elements, got {0}")]
    WrongArity(usize),
    /// A v2 text frame that is not an array at all, or a v1 frame that is not an object.
    #[error("expected a JSON {0}")]
    WrongShape(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{0}` has the wrong type")]
    WrongType(&'static str),
    /// A required field is missing.
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    /// A binary frame was sent on a v1 socket, which only speaks text.
    #[error("binary frames are not part of protocol 1.0.0")]
    BinaryOnV1,
    /// A malformed binary frame.
    #[error(transparent)]
    Binary(#[from] BinaryError),
}

/// Decodes a text frame for the socket's protocol version.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Inbound, DecodeError> {
    match vsn {
        Vsn::V1 => decode_v1(text),
        Vsn::V2 => decode_v2(text),
    }
}

/// Decodes a binary frame for the socket's protocol version.
pub fn decode_binary(vsn: Vsn, frame: &Bytes) -> Result<Inbound, DecodeError> {
    if vsn == Vsn::V1 {
        return Err(DecodeError::BinaryOnV1);
    }
    let push = binary::decode_push(frame)?;
    Ok(Inbound {
        join_ref: push.join_ref.clone(),
        ref_: push.ref_.clone(),
        topic: push.topic.clone(),
        event: "broadcast".to_owned(),
        payload: InboundPayload::Binary(push),
    })
}

fn decode_v1(text: &str) -> Result<Inbound, DecodeError> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return if serde_json::from_str::<&RawValue>(text).is_ok() {
            Err(DecodeError::WrongShape("object"))
        } else {
            Err(DecodeError::InvalidJson(json_error(text)))
        };
    }
    let frame: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let topic = frame.get("topic").ok_or(DecodeError::Missing("topic"))?;
    let event = frame.get("event").ok_or(DecodeError::Missing("event"))?;
    Ok(Inbound {
        join_ref: opt_ref(frame.get("join_ref").copied(), "join_ref")?,
        ref_: opt_ref(frame.get("ref").copied(), "ref")?,
        topic: string(topic, "topic")?,
        event: string(event, "event")?,
        payload: InboundPayload::Json(payload_or_empty(frame.get("payload").copied())),
    })
}

fn decode_v2(text: &str) -> Result<Inbound, DecodeError> {
    let parts: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(parts) => parts,
        Err(e) => {
            return if serde_json::from_str::<&RawValue>(text).is_ok() {
                Err(DecodeError::WrongShape("array"))
            } else {
                Err(DecodeError::InvalidJson(e.to_string()))
            };
        }
    };
    if parts.len() < 5 {
        return Err(DecodeError::WrongArity(parts.len()));
    }
    Ok(Inbound {
        join_ref: opt_ref(Some(parts[0]), "join_ref")?,
        ref_: opt_ref(Some(parts[1]), "ref")?,
        topic: string(parts[2], "topic")?,
        event: string(parts[3], "event")?,
        payload: InboundPayload::Json(payload_or_empty(Some(parts[4]))),
    })
}

fn json_error(text: &str) -> String {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(_) => "unexpected JSON".to_owned(),
        Err(e) => e.to_string(),
    }
}

fn string(raw: &RawValue, field: &'static str) -> Result<String, DecodeError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| DecodeError::WrongType(field))
}

/// A reference is opaque: a string, or a number (kept as its text), or null.
fn opt_ref(raw: Option<&RawValue>, field: &'static str) -> Result<Option<String>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if let Ok(s) = serde_json::from_str::<String>(text) {
        return Ok(Some(s));
    }
    if serde_json::from_str::<serde_json::Number>(text).is_ok() {
        return Ok(Some(text.to_owned()));
    }
    Err(DecodeError::WrongType(field))
}

fn payload_or_empty(raw: Option<&RawValue>) -> Box<RawValue> {
    match raw {
        Some(raw) => raw.to_owned(),
        None => empty_object(),
    }
}

/// A raw `{}`.
pub fn empty_object() -> Box<RawValue> {
    // `{}` is valid JSON, so the fallback (`null`) is never taken.
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v2_join() {
        let m = decode_text(
            Vsn::V2,
            r#"["6","6","realtime:room1","phx_join",{"config":{"broadcast":{"self":false}}}]"#,
        )
        .unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("6"));
        assert_eq!(m.ref_.as_deref(), Some("6"));
        assert_eq!(m.topic, "realtime:room1");
        assert_eq!(m.event, "phx_join");
    }

    #[test]
    fn decodes_v2_heartbeat_with_null_join_ref_and_extras() {
        let m = decode_text(Vsn::V2, r#"[null,"9","phoenix","heartbeat",{},"extra"]"#).unwrap();
        assert_eq!(m.join_ref, None);
        assert_eq!(m.ref_.as_deref(), Some("9"));
    }

    #[test]
    fn decodes_v1_object_without_join_ref() {
        let m = decode_text(
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}"#,
        )
        .unwrap();
        assert_eq!(m.ref_, None);
        assert_eq!(m.event, "heartbeat");
    }

    #[test]
    fn numeric_refs_are_kept_as_text() {
        let m = decode_text(Vsn::V2, r#"[1,2,"t","e",{}]"#).unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("1"));
        assert_eq!(m.ref_.as_deref(), Some("2"));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            decode_text(Vsn::V2, "nope"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert_eq!(
            decode_text(Vsn::V2, r#"{"a":1}"#).unwrap_err(),
            DecodeError::WrongShape("array")
        );
        assert_eq!(
            decode_text(Vsn::V2, r#"[1,2,3]"#).unwrap_err(),
            DecodeError::WrongArity(3)
        );
        assert_eq!(
            decode_text(Vsn::V2, r#"[null,null,5,"e",{}]"#).unwrap_err(),
            DecodeError::WrongType("topic")
        );
        assert_eq!(
            decode_text(Vsn::V2, r#"[{},null,"t","e",{}]"#).unwrap_err(),
            DecodeError::WrongType("join_ref")
        );
        assert_eq!(
            decode_text(Vsn::V1, "[]").unwrap_err(),
            DecodeError::WrongShape("object")
        );
        assert_eq!(
            decode_text(Vsn::V1, r#"{"event":"e"}"#).unwrap_err(),
            DecodeError::Missing("topic")
        );
        assert_eq!(
            decode_binary(Vsn::V1, &Bytes::from_static(&[3])).unwrap_err(),
            DecodeError::BinaryOnV1
        );
    }
}
