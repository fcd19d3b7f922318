//! The client's side of the v2 protocol: the pushes a client sends (join, leave, presence track,
//! heartbeat, broadcast) and what it reads out of the server's frames (replies, `system` errors,
//! recovery positions, broadcast `meta`, presence keys). Server frames are decoded with
//! [`decode_text`](crate::decode_text), as they have the same shape as client frames.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::decode::{Inbound, InboundPayload, decode_text};
use crate::join::{JoinConfig, PostgresBinding};
use crate::{OutFrame, Vsn, encode_frame};

/// A v2 text frame `[join_ref, ref, topic, event, payload]`.
pub fn push(
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    event: &str,
    payload: &Value,
) -> String {
    let frame = OutFrame {
        join_ref,
        ref_,
        topic,
        event,
        payload,
    };
    // A `Value` always serializes.
    encode_frame(Vsn::V2, &frame).unwrap_or_default()
}

/// A `phx_join` of `topic` asking for `config` (the inverse of [`JoinConfig::parse`]; `replay` and
/// `warnings` are not sent).
pub fn join(join_ref: &str, topic: &str, config: &JoinConfig) -> String {
    let mut broadcast = json!({"self": config.broadcast_self, "ack": config.broadcast_ack});
    if let Some((epoch, offset)) = &config.recover {
        broadcast["recover"] = json!({"epoch": epoch, "offset": offset});
    }
    let bindings: Vec<Value> = config
        .postgres_changes
        .iter()
        .map(|b| Value::Object(b.raw.clone()))
        .collect();
    let mut payload = json!({"config": {
        "broadcast": broadcast,
        "presence": {"key": config.presence_key, "enabled": config.presence_enabled},
        "postgres_changes": bindings,
        "private": config.private,
    }});
    if let Some(token) = &config.access_token {
        payload["access_token"] = token.as_str().into();
    }
    push(Some(join_ref), Some(join_ref), topic, "phx_join", &payload)
}

/// A `phx_leave` of `topic`.
pub fn leave(join_ref: &str, ref_: &str, topic: &str) -> String {
    push(Some(join_ref), Some(ref_), topic, "phx_leave", &json!({}))
}

/// A presence `track` of `state` on `topic`.
pub fn track(join_ref: &str, ref_: &str, topic: &str, state: &Value) -> String {
    let payload = json!({"type": "presence", "event": "track", "payload": state});
    push(Some(join_ref), Some(ref_), topic, "presence", &payload)
}

/// A heartbeat with ref `ref_`.
pub fn heartbeat(ref_: u64) -> String {
    push(
        None,
        Some(&ref_.to_string()),
        "phoenix",
        "heartbeat",
        &json!({}),
    )
}

/// A broadcast push of event `event` with the JSON text `payload` (inserted verbatim) on `topic`.
pub fn broadcast(join_ref: &str, ref_: &str, topic: &str, event: &str, payload: &str) -> String {
    let quote = |s: &str| Value::from(s).to_string();
    format!(
        "[{},{},{},\"broadcast\",{{\"type\":\"broadcast\",\"event\":{},\"payload\":{payload}}}]",
        quote(join_ref),
        quote(ref_),
        quote(topic),
        quote(event)
    )
}

/// Decodes a server's v2 text frame; `None` if it is not one.
pub fn decode(text: &str) -> Option<Inbound> {
    decode_text(Vsn::V2, text).ok()
}

fn json_payload(frame: &Inbound) -> Option<&str> {
    match &frame.payload {
        InboundPayload::Json(raw) => Some(raw.get()),
        InboundPayload::Binary(_) => None,
    }
}

/// If `frame` is the `phx_reply` to `ref_`: `Ok` with its `response`, or the error's `reason`
/// (`status <s>` when it gives none).
pub fn reply_to(frame: &Inbound, ref_: &str) -> Option<Result<Box<RawValue>, String>> {
    #[derive(Deserialize)]
    struct Reply {
        status: String,
        #[serde(default)]
        response: Option<Box<RawValue>>,
    }
    #[derive(Deserialize)]
    struct Reason {
        reason: String,
    }
    if frame.event != "phx_reply" || frame.ref_.as_deref() != Some(ref_) {
        return None;
    }
    let text = json_payload(frame)?;
    let Ok(reply) = serde_json::from_str::<Reply>(text) else {
        return Some(Err(format!("unreadable reply {text}")));
    };
    let response = reply.response.unwrap_or_else(crate::decode::empty_object);
    if reply.status == "ok" {
        return Some(Ok(response));
    }
    Some(Err(serde_json::from_str::<Reason>(response.get())
        .map(|r| r.reason)
        .unwrap_or_else(|_| format!("status {}", reply.status))))
}

/// If `frame` is a `system` message with status `status`, its message.
pub fn system(frame: &Inbound, status: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct System {
        status: String,
        #[serde(default)]
        message: String,
    }
    if frame.event != "system" {
        return None;
    }
    let system: System = serde_json::from_str(json_payload(frame)?).ok()?;
    (system.status == status).then_some(system.message)
}

/// The `recovery` of a join reply's response (`config.broadcast.recover`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Recovery {
    /// Whether the missed messages follow.
    pub recovered: bool,
    /// The channel's epoch; `None` when the server keeps no history for the channel.
    #[serde(default)]
    pub epoch: Option<String>,
    /// The channel's position (latest offset) at the moment of the join.
    #[serde(default)]
    pub offset: u64,
}

/// The `recovery` in a join reply's `response`, if there is one.
pub fn recovery(response: &RawValue) -> Option<Recovery> {
    #[derive(Deserialize)]
    struct Response {
        recovery: Recovery,
    }
    serde_json::from_str::<Response>(response.get())
        .ok()
        .map(|r| r.recovery)
}

/// A broadcast as a client receives it.
#[derive(Debug, Deserialize)]
pub struct Broadcast {
    /// The user event.
    pub event: String,
    /// The user payload, unparsed.
    pub payload: Box<RawValue>,
    /// Where it sits in the channel's history (all defaults without history).
    #[serde(default)]
    pub meta: Meta,
}

/// A broadcast's `meta`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Meta {
    /// `meta.offset`, if the channel keeps history.
    #[serde(default)]
    pub offset: Option<u64>,
    /// `meta.replayed`: sent because a joining client asked to recover.
    #[serde(default)]
    pub replayed: bool,
}

/// If `frame` is a broadcast, its event, payload and meta.
pub fn broadcast_of(frame: &Inbound) -> Option<Broadcast> {
    if frame.event != "broadcast" {
        return None;
    }
    serde_json::from_str(json_payload(frame)?).ok()
}

/// The presence keys a `presence_state` (every key present) or `presence_diff` (the keys that
/// joined) names; `None` for any other frame.
pub fn presence_joins(frame: &Inbound) -> Option<Vec<String>> {
    type Keys = BTreeMap<String, IgnoredAny>;
    #[derive(Deserialize)]
    struct Diff {
        #[serde(default)]
        joins: Keys,
    }
    let text = json_payload(frame)?;
    let keys = match frame.event.as_str() {
        "presence_state" => serde_json::from_str::<Keys>(text).ok()?,
        "presence_diff" => serde_json::from_str::<Diff>(text).ok()?.joins,
        _ => return None,
    };
    Some(keys.into_keys().collect())
}

/// The `system` message that tells a client its `postgres_changes` bindings are live.
pub const POSTGRES_SUBSCRIBED: &str = "Subscribed to PostgreSQL";

/// A `postgres_changes` binding asking for `event` on `schema.table`, only rows matching `filter`
/// (for example `grp=eq.3`) when given.
pub fn postgres_binding(
    event: &str,
    schema: &str,
    table: &str,
    filter: Option<&str>,
) -> PostgresBinding {
    let fields = [("event", event), ("schema", schema), ("table", table)];
    let fields = fields.into_iter().chain(filter.map(|f| ("filter", f)));
    let raw = fields
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    PostgresBinding { raw }
}

/// If `frame` is a `postgres_changes` event with a `record` that reads as `T`: the table it names
/// (if it does) and the record.
pub fn postgres_change<T: DeserializeOwned>(frame: &Inbound) -> Option<(Option<String>, T)> {
    #[derive(Deserialize)]
    struct Change<T> {
        data: Data<T>,
    }
    #[derive(Deserialize)]
    struct Data<T> {
        #[serde(default)]
        table: Option<String>,
        record: T,
    }
    if frame.event != "postgres_changes" {
        return None;
    }
    let change: Change<T> = serde_json::from_str(json_payload(frame)?).ok()?;
    Some((change.data.table, change.data.record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_reads_back_as_its_config() {
        let mut config = JoinConfig {
            broadcast_ack: true,
            presence_enabled: true,
            presence_key: "m3".into(),
            recover: Some(("5f\"3a".into(), 42)),
            access_token: Some("tok".into()),
            ..JoinConfig::default()
        };
        let frame = decode_text(Vsn::V2, &join("1", "realtime:a", &config)).unwrap();
        assert_eq!(
            (frame.topic.as_str(), frame.event.as_str()),
            ("realtime:a", "phx_join")
        );
        assert_eq!(frame.join_ref.as_deref(), Some("1"));
        let payload: Value = serde_json::from_str(json_payload(&frame).unwrap()).unwrap();
        config.warnings.clear();
        assert_eq!(JoinConfig::parse(&payload), config);
        assert_eq!(heartbeat(7), r#"[null,"7","phoenix","heartbeat",{}]"#);
        let leave = decode_text(Vsn::V2, &leave("1", "3", "realtime:a")).unwrap();
        assert_eq!(
            (leave.ref_.as_deref(), leave.event.as_str()),
            (Some("3"), "phx_leave")
        );
        let track = decode(&track("1", "2", "realtime:a", &json!({"i": 3}))).unwrap();
        assert_eq!(
            json_payload(&track),
            Some(r#"{"event":"track","payload":{"i":3},"type":"presence"}"#)
        );
        let b = decode(&broadcast("1", "p9", "realtime:a", "b", r#"{"t":1}"#)).unwrap();
        assert_eq!(broadcast_of(&b).unwrap().payload.get(), r#"{"t":1}"#);
    }

    #[test]
    fn reads_replies_and_system_messages() {
        let ok = decode(r#"["1","1","realtime:a","phx_reply",{"status":"ok","response":{"recovery":{"recovered":true,"epoch":"e","offset":5}}}]"#).unwrap();
        assert!(reply_to(&ok, "2").is_none());
        let response = reply_to(&ok, "1").unwrap().unwrap();
        let want = Recovery {
            recovered: true,
            epoch: Some("e".into()),
            offset: 5,
        };
        assert_eq!(recovery(&response), Some(want));
        let err = decode(r#"["1","1","realtime:a","phx_reply",{"status":"error","response":{"reason":"Unauthorized"}}]"#).unwrap();
        assert_eq!(reply_to(&err, "1").unwrap().unwrap_err(), "Unauthorized");
        let bare = decode(r#"[null,"1","t","phx_reply",{"status":"error"}]"#).unwrap();
        assert_eq!(reply_to(&bare, "1").unwrap().unwrap_err(), "status error");
        let sys = decode(
            r#"[null,null,"realtime:a","system",{"status":"error","message":"Too many messages"}]"#,
        )
        .unwrap();
        assert_eq!(system(&sys, "error").as_deref(), Some("Too many messages"));
        assert_eq!(system(&sys, "ok"), None);
    }

    #[test]
    fn reads_broadcasts_and_presence() {
        let b = decode(r#"[null,null,"realtime:a","broadcast",{"type":"broadcast","event":"b","payload":{"t":1},"meta":{"offset":3,"replayed":true}}]"#).unwrap();
        let b = broadcast_of(&b).unwrap();
        assert_eq!((b.event.as_str(), b.payload.get()), ("b", r#"{"t":1}"#));
        assert_eq!(
            b.meta,
            Meta {
                offset: Some(3),
                replayed: true
            }
        );
        let state = decode(r#"["1",null,"realtime:p","presence_state",{"m1":{"metas":[]},"m\u0032":{"metas":[]}}]"#).unwrap();
        assert_eq!(presence_joins(&state).unwrap(), ["m1", "m2"]);
        let diff = decode(r#"["1",null,"realtime:p","presence_diff",{"joins":{"m3":{"metas":[]}},"leaves":{"m1":{}}}]"#).unwrap();
        assert_eq!(presence_joins(&diff).unwrap(), ["m3"]);
        assert!(presence_joins(&decode(r#"[null,null,"t","broadcast",{}]"#).unwrap()).is_none());
    }

    #[test]
    fn reads_postgres_changes() {
        let binding = postgres_binding("INSERT", "public", "t", Some("grp=eq.2"));
        let want =
            json!({"event": "INSERT", "schema": "public", "table": "t", "filter": "grp=eq.2"});
        assert_eq!(Value::Object(binding.raw), want);
        let change = decode(r#"[null,null,"realtime:a","postgres_changes",{"ids":[1],"data":{"table":"t","type":"INSERT","record":{"id":7}}}]"#).unwrap();
        let (table, record): (Option<String>, Value) = postgres_change(&change).unwrap();
        assert_eq!((table.as_deref(), record), (Some("t"), json!({"id": 7})));
        let delete = decode(r#"[null,null,"realtime:a","postgres_changes",{"data":{"type":"DELETE","old_record":{"id":1}}}]"#).unwrap();
        assert!(postgres_change::<Value>(&delete).is_none());
    }
}
