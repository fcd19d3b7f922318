//! The broadcast message model, and its encodings, made once per wire format and then shared.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Message;
use bytes::Bytes;
use herald_protocol::{PayloadEncoding, Vsn, encode_broadcast_binary, encode_broadcast_text};
use serde_json::value::RawValue;

use crate::channel::ChannelKey;
use crate::history::Position;

/// A broadcast's user payload.
#[derive(Debug, Clone)]
pub enum Body {
    /// JSON (any value), kept as text.
    Json(Box<RawValue>),
    /// Raw bytes (only deliverable to `vsn=2.0.0` sockets).
    Raw(Bytes),
}

impl Body {
    /// The payload size in bytes, as limits count it.
    pub fn len(&self) -> usize {
        match self {
            Body::Json(raw) => raw.get().len(),
            Body::Raw(b) => b.len(),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a broadcast reached Herald, which decides its frame type for `vsn=2.0.0` subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A text push or an HTTP batch: delivered as a text frame.
    Text,
    /// A binary push (kind 3) or an HTTP single message: delivered as binary kind 4.
    Binary,
}

/// One broadcast on its way to subscribers.
#[derive(Debug)]
pub struct Broadcast {
    /// The channel.
    pub channel: ChannelKey,
    /// The user event name.
    pub event: String,
    /// The user payload.
    pub body: Body,
    /// The message id (given by the publisher, or assigned when the channel keeps history).
    pub id: Option<String>,
    /// Its place in the channel's history.
    pub position: Option<Position>,
    /// True when this is a replay of a stored message.
    pub replayed: bool,
    /// The publisher's idempotency key: a repeat within the window is not delivered again.
    pub idempotency_key: Option<String>,
    /// How it arrived.
    pub origin: Origin,
    /// The WebSocket session that sent it, so that `self: false` subscribers can skip it.
    pub sender: Option<Sender>,
    v1: OnceLock<Option<Message>>,
    v2: OnceLock<Option<Message>>,
    sse: OnceLock<Option<Bytes>>,
}

impl Broadcast {
    /// A broadcast ready to publish.
    pub fn new(
        channel: ChannelKey,
        event: String,
        body: Body,
        origin: Origin,
        sender: Option<Sender>,
    ) -> Broadcast {
        Broadcast {
            channel,
            event,
            body,
            id: None,
            position: None,
            replayed: false,
            idempotency_key: None,
            origin,
            sender,
            v1: OnceLock::new(),
            v2: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// A copy without the encodings made so far (for a publish that is tried again).
    pub fn clone_unencoded(&self) -> Broadcast {
        Broadcast {
            channel: self.channel.clone(),
            event: self.event.clone(),
            body: self.body.clone(),
            id: self.id.clone(),
            position: self.position.clone(),
            replayed: self.replayed,
            idempotency_key: self.idempotency_key.clone(),
            origin: self.origin,
            sender: self.sender.clone(),
            v1: OnceLock::new(),
            v2: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// The SSE lines of this message: `event: broadcast` and one `data:` line with
    /// `{"topic","event","payload","meta"}` (raw bytes as base64 with `"encoding":"base64"`).
    pub fn sse_frame(&self) -> Option<&Bytes> {
        self.sse
            .get_or_init(|| {
                let meta = self.meta();
                let payload = match &self.body {
                    Body::Json(raw) => one_line(raw)?,
                    Body::Raw(bytes) => {
                        use base64::Engine;
                        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                        serde_json::value::to_raw_value(&text).ok()?
                    }
                };
                #[derive(serde::Serialize)]
                struct Data<'a> {
                    topic: &'a str,
                    event: &'a str,
                    payload: &'a RawValue,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    encoding: Option<&'static str>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    meta: Option<&'a RawValue>,
                }
                let data = Data {
                    topic: &self.channel.name,
                    event: &self.event,
                    payload: &payload,
                    encoding: matches!(self.body, Body::Raw(_)).then_some("base64"),
                    meta: meta.as_deref(),
                };
                let json = serde_json::to_string(&data).ok()?;
                Some(Bytes::from(format!("event: broadcast\ndata: {json}\n")))
            })
            .as_ref()
    }

    /// A stored message, to be replayed.
    pub fn replay(
        channel: ChannelKey,
        record: herald_store::Record,
        epoch: &std::sync::Arc<str>,
    ) -> Option<Broadcast> {
        let body = if record.raw {
            Body::Raw(Bytes::from(record.payload))
        } else {
            Body::Json(RawValue::from_string(String::from_utf8(record.payload).ok()?).ok()?)
        };
        let origin = if record.origin == 1 {
            Origin::Binary
        } else {
            Origin::Text
        };
        let mut b = Broadcast::new(channel, record.event, body, origin, None);
        b.id = Some(record.id);
        b.position = Some(Position {
            epoch: epoch.clone(),
            offset: record.offset,
        });
        b.replayed = true;
        Some(b)
    }

    /// The frame for a subscriber speaking `vsn`, encoded on first use and shared afterwards.
    /// `None` when the message cannot be shown to that protocol (raw bytes to a v1 socket).
    pub fn frame(&self, vsn: Vsn) -> Option<&Message> {
        let cell = match vsn {
            Vsn::V1 => &self.v1,
            Vsn::V2 => &self.v2,
        };
        cell.get_or_init(|| self.encode(vsn)).as_ref()
    }

    /// The `meta` object delivered with the message: `{id, offset, epoch, replayed}` as far as known.
    pub fn meta(&self) -> Option<Box<RawValue>> {
        #[derive(serde::Serialize)]
        struct Meta<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            offset: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            epoch: Option<&'a str>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            replayed: bool,
        }
        if self.id.is_none() && self.position.is_none() {
            return None;
        }
        let meta = Meta {
            id: self.id.as_deref(),
            offset: self.position.as_ref().map(|p| p.offset),
            epoch: self.position.as_ref().map(|p| &*p.epoch),
            replayed: self.replayed,
        };
        serde_json::value::to_raw_value(&meta).ok()
    }

    fn encode(&self, vsn: Vsn) -> Option<Message> {
        let topic = self.channel.topic();
        let meta = self.meta();
        let meta = meta.as_deref();
        let binary = |encoding: PayloadEncoding, bytes: &[u8]| {
            encode_broadcast_binary(&topic, &self.event, meta, encoding, bytes)
                .ok()
                .map(Message::Binary)
        };
        match (&self.body, vsn, self.origin) {
            (Body::Raw(_), Vsn::V1, _) => None,
            (Body::Raw(bytes), Vsn::V2, _) => binary(PayloadEncoding::Raw, bytes),
            (Body::Json(raw), Vsn::V2, Origin::Binary) => {
                binary(PayloadEncoding::Json, raw.get().as_bytes())
                    // A field too long for the binary header: fall back to a text frame.
                    .or_else(|| text(vsn, &topic, &self.event, raw, meta))
            }
            (Body::Json(raw), _, _) => text(vsn, &topic, &self.event, raw, meta),
        }
    }
}

/// JSON text safe for one SSE `data:` line: raw JSON holding line breaks (between tokens) is
/// re-serialized compactly; JSON strings never contain raw line breaks.
fn one_line(raw: &RawValue) -> Option<Box<RawValue>> {
    let text = raw.get();
    if !text.contains(['\n', '\r']) {
        return Some(raw.to_owned());
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    serde_json::value::to_raw_value(&value).ok()
}

fn text(
    vsn: Vsn,
    topic: &str,
    event: &str,
    raw: &RawValue,
    meta: Option<&RawValue>,
) -> Option<Message> {
    encode_broadcast_text(vsn, topic, event, raw, meta)
        .ok()
        .map(|s| Message::Text(s.into()))
}

/// A shared broadcast.
pub type SharedBroadcast = Arc<Broadcast>;

/// Who sent a message: a connection of a node. Connection ids are unique on their node only, so
/// the node is part of the identity: a `self: false` subscriber on another node whose connection
/// id happens to be the same still receives the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sender {
    /// The node's id (`node_id`, else generated at start).
    pub node: Arc<str>,
    /// The connection's id on that node.
    pub conn: u64,
}

/// Anything the registry can fan out to a channel's subscribers.
pub trait Outgoing {
    /// The channel it goes to.
    fn channel(&self) -> &ChannelKey;
    /// The session that sent it (skipped unless it subscribed with `self`).
    fn sender(&self) -> Option<&Sender>;
    /// Its frame for a protocol version, encoded once; `None` when it cannot be shown there.
    fn frame(&self, vsn: Vsn) -> Option<&Message>;
    /// Its SSE lines, encoded once.
    fn sse_frame(&self) -> Option<&Bytes>;
    /// Its place in history, if any.
    fn position(&self) -> Option<&Position>;
    /// True for presence events (which SSE streams receive only on request).
    fn is_presence(&self) -> bool;
}

impl Outgoing for Broadcast {
    fn channel(&self) -> &ChannelKey {
        &self.channel
    }

    fn sender(&self) -> Option<&Sender> {
        self.sender.as_ref()
    }

    fn frame(&self, vsn: Vsn) -> Option<&Message> {
        Broadcast::frame(self, vsn)
    }

    fn sse_frame(&self) -> Option<&Bytes> {
        Broadcast::sse_frame(self)
    }

    fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    fn is_presence(&self) -> bool {
        false
    }
}

/// A protocol event pushed to every subscriber of a channel (for example `presence_diff`):
/// `[null, null, topic, event, payload]`.
#[derive(Debug)]
pub struct ChannelEvent {
    /// The channel.
    pub channel: ChannelKey,
    /// The protocol event name.
    pub event: &'static str,
    /// The payload.
    pub payload: serde_json::Value,
    v1: OnceLock<Option<Message>>,
    v2: OnceLock<Option<Message>>,
    sse: OnceLock<Option<Bytes>>,
}

impl ChannelEvent {
    /// An event ready to fan out.
    pub fn new(
        channel: ChannelKey,
        event: &'static str,
        payload: serde_json::Value,
    ) -> ChannelEvent {
        ChannelEvent {
            channel,
            event,
            payload,
            v1: OnceLock::new(),
            v2: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }
}

impl Outgoing for ChannelEvent {
    fn channel(&self) -> &ChannelKey {
        &self.channel
    }

    fn sender(&self) -> Option<&Sender> {
        None
    }

    fn sse_frame(&self) -> Option<&Bytes> {
        self.sse
            .get_or_init(|| {
                let data =
                    serde_json::json!({ "topic": &*self.channel.name, "payload": &self.payload });
                Some(Bytes::from(format!(
                    "event: {}\ndata: {data}\n",
                    self.event
                )))
            })
            .as_ref()
    }

    fn position(&self) -> Option<&Position> {
        None
    }

    fn is_presence(&self) -> bool {
        self.event.starts_with("presence")
    }

    fn frame(&self, vsn: Vsn) -> Option<&Message> {
        let cell = match vsn {
            Vsn::V1 => &self.v1,
            Vsn::V2 => &self.v2,
        };
        cell.get_or_init(|| {
            let topic = self.channel.topic();
            let frame = herald_protocol::OutFrame {
                join_ref: None,
                ref_: None,
                topic: &topic,
                event: self.event,
                payload: &self.payload,
            };
            herald_protocol::encode_frame(vsn, &frame)
                .ok()
                .map(|s| Message::Text(s.into()))
        })
        .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Body {
        Body::Json(RawValue::from_string(s.to_owned()).unwrap())
    }

    #[test]
    fn frames_per_format() {
        let key = ChannelKey::new("room", false);
        let b = Broadcast::new(
            key.clone(),
            "evt".into(),
            json(r#"{"a":1}"#),
            Origin::Binary,
            None,
        );
        assert!(matches!(b.frame(Vsn::V2), Some(Message::Binary(_))));
        let Some(Message::Text(t)) = b.frame(Vsn::V1) else {
            panic!()
        };
        assert_eq!(
            t.as_str(),
            r#"{"topic":"realtime:room","event":"broadcast","payload":{"type":"broadcast","event":"evt","payload":{"a":1}},"ref":null}"#
        );
        let raw = Broadcast::new(
            key.clone(),
            "evt".into(),
            Body::Raw(Bytes::from_static(b"\x01")),
            Origin::Binary,
            None,
        );
        assert!(raw.frame(Vsn::V1).is_none());
        let text = Broadcast::new(key, "evt".into(), json("[1]"), Origin::Text, None);
        assert!(matches!(text.frame(Vsn::V2), Some(Message::Text(_))));
    }
}
