//! The few Phoenix v2 text frames the benchmark speaks (`vsn=2.0.0`): building the join (with `ack`,
//! `recover` and a presence key), leave, presence `track` and heartbeat frames, and reading replies,
//! recovery positions, broadcasts and presence keys out of server frames without copying their
//! payloads.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Channel-name prefix of the `idle`, `fanout` and `sse` channels (`bench-0`, `bench-1`, ...).
pub const BENCH: &str = "bench";

/// Name (without the `realtime:` prefix) of channel `channel` of the family `prefix`:
/// `<prefix>-<channel>`.
pub fn channel_name(prefix: &str, channel: u64) -> String {
    format!("{prefix}-{channel}")
}

/// Topic of channel `channel` of the family `prefix`: `realtime:<prefix>-<channel>`.
pub fn topic(prefix: &str, channel: u64) -> String {
    format!("realtime:{prefix}-{channel}")
}

/// What a benchmark join asks for beyond the defaults (broadcast `self` off, presence off, public).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JoinOpts {
    /// Ask for an `ack` reply to every broadcast push.
    pub ack: bool,
    /// `config.broadcast.recover`: the `(epoch, offset)` the client saw last.
    pub recover: Option<(String, u64)>,
    /// Turn presence on with this `config.presence.key`.
    pub presence_key: Option<String>,
}

/// A `phx_join` of `topic` for a public channel with broadcast `self` off and presence off (on, with
/// `opts.presence_key`).
pub fn join_frame(join_ref: &str, topic: &str, opts: &JoinOpts) -> String {
    let mut broadcast = serde_json::json!({"self": false, "ack": opts.ack});
    if let Some((epoch, offset)) = &opts.recover {
        broadcast["recover"] = serde_json::json!({"epoch": epoch, "offset": offset});
    }
    let presence = match &opts.presence_key {
        Some(key) => serde_json::json!({"key": key, "enabled": true}),
        None => serde_json::json!({"key": "", "enabled": false}),
    };
    serde_json::json!([
        join_ref,
        join_ref,
        topic,
        "phx_join",
        {"config": {
            "broadcast": broadcast,
            "presence": presence,
            "postgres_changes": [],
            "private": false,
        }}
    ])
    .to_string()
}

/// A `phx_leave` of `topic`.
pub fn leave_frame(join_ref: &str, push_ref: &str, topic: &str) -> String {
    serde_json::json!([join_ref, push_ref, topic, "phx_leave", {}]).to_string()
}

/// A presence `track` of `state` (a JSON object) on `topic`.
pub fn track_frame(join_ref: &str, push_ref: &str, topic: &str, state: &str) -> String {
    format!(
        "[{},{},{},\"presence\",{{\"type\":\"presence\",\"event\":\"track\",\"payload\":{state}}}]",
        json_str(join_ref),
        json_str(push_ref),
        json_str(topic)
    )
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A heartbeat with ref `push_ref`.
pub fn heartbeat_frame(push_ref: u64) -> String {
    format!("[null,\"{push_ref}\",\"phoenix\",\"heartbeat\",{{}}]")
}

/// One server frame, `[join_ref, ref, topic, event, payload, ...]`, borrowing from the text.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The message reference (`null` on pushes).
    pub msg_ref: Option<Cow<'a, str>>,
    /// Topic, for example `realtime:bench-0`.
    pub topic: Cow<'a, str>,
    /// Event, for example `phx_reply` or `broadcast`.
    pub event: Cow<'a, str>,
    /// The payload, not yet parsed.
    pub payload: &'a RawValue,
}

/// Parses a v2 text frame; `None` if it is not one.
pub fn parse_frame(text: &str) -> Option<Frame<'_>> {
    serde_json::from_str(text).ok()
}

/// What a `phx_reply` said.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `status: ok`.
    Ok,
    /// Any other status, with the `response.reason` if there was one.
    Error(String),
}

/// If `frame` is the reply to `push_ref`, what it said.
pub fn reply_to(frame: &Frame<'_>, push_ref: &str) -> Option<Reply> {
    if frame.event != "phx_reply" || frame.msg_ref.as_deref() != Some(push_ref) {
        return None;
    }
    #[derive(Deserialize)]
    struct ReplyPayload<'a> {
        #[serde(borrow)]
        status: Cow<'a, str>,
        #[serde(default, borrow)]
        response: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Reason<'a> {
        #[serde(borrow)]
        reason: Cow<'a, str>,
    }
    let Ok(reply) = serde_json::from_str::<ReplyPayload<'_>>(frame.payload.get()) else {
        return Some(Reply::Error(format!(
            "unreadable reply {}",
            frame.payload.get()
        )));
    };
    if reply.status == "ok" {
        return Some(Reply::Ok);
    }
    let reason = reply
        .response
        .and_then(|r| serde_json::from_str::<Reason<'_>>(r.get()).ok())
        .map(|r| r.reason.into_owned())
        .unwrap_or_else(|| format!("status {}", reply.status));
    Some(Reply::Error(reason))
}

/// If `frame` is a `system` message with status `error` (the server is about to close the
/// channel), its message.
pub fn system_error(frame: &Frame<'_>) -> Option<String> {
    #[derive(Deserialize)]
    struct System<'a> {
        #[serde(borrow)]
        status: Cow<'a, str>,
        #[serde(default, borrow)]
        message: Option<Cow<'a, str>>,
    }
    if frame.event != "system" {
        return None;
    }
    let system: System<'_> = serde_json::from_str(frame.payload.get()).ok()?;
    (system.status == "error").then(|| system.message.unwrap_or_default().into_owned())
}

/// The `recovery` object of a join reply (`config.broadcast.recover`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Whether the missed messages follow.
    pub recovered: bool,
    /// The channel's epoch; `None` when the server keeps no history for the channel.
    pub epoch: Option<String>,
    /// The channel's position (latest offset) at the moment of the join.
    pub offset: u64,
}

/// The `response.recovery` of an ok `phx_reply`, if it carries one.
pub fn recovery(frame: &Frame<'_>) -> Option<Recovery> {
    #[derive(Deserialize)]
    struct ReplyPayload {
        response: Response,
    }
    #[derive(Deserialize)]
    struct Response {
        recovery: Wire,
    }
    #[derive(Deserialize)]
    struct Wire {
        recovered: bool,
        #[serde(default)]
        epoch: Option<String>,
        #[serde(default)]
        offset: u64,
    }
    if frame.event != "phx_reply" {
        return None;
    }
    let r = serde_json::from_str::<ReplyPayload>(frame.payload.get())
        .ok()?
        .response
        .recovery;
    Some(Recovery {
        recovered: r.recovered,
        epoch: r.epoch,
        offset: r.offset,
    })
}

/// Where a broadcast sits in its channel's history, as its `meta` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// `meta.offset`, if the channel keeps history.
    pub offset: Option<u64>,
    /// `meta.replayed`: sent because a joining client asked to recover.
    pub replayed: bool,
}

/// If `frame` is a broadcast, its `meta` (all defaults when it has none).
pub fn broadcast_meta(frame: &Frame<'_>) -> Option<Meta> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        meta: Option<Wire>,
    }
    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        offset: Option<u64>,
        #[serde(default)]
        replayed: bool,
    }
    if frame.event != "broadcast" {
        return None;
    }
    let envelope: Envelope = serde_json::from_str(frame.payload.get()).ok()?;
    Some(envelope.meta.map_or_else(Meta::default, |m| Meta {
        offset: m.offset,
        replayed: m.replayed,
    }))
}

/// The send time `t` of a benchmark broadcast (event `b`), if `text` is one.
pub fn broadcast_send_time(text: &str) -> Option<u64> {
    let frame = parse_frame(text)?;
    if frame.event != "broadcast" {
        return None;
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        event: Cow<'a, str>,
        payload: BenchPayload,
    }
    #[derive(Deserialize)]
    struct BenchPayload {
        t: u64,
    }
    let envelope: Envelope<'_> = serde_json::from_str(frame.payload.get()).ok()?;
    (envelope.event == "b").then_some(envelope.payload.t)
}

/// The presence keys a server frame announces.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceKeys<'a> {
    /// `presence_state`: every key present when the member joined.
    State(Vec<Cow<'a, str>>),
    /// `presence_diff`: keys that joined and keys that left.
    Diff {
        /// Keys in `joins`.
        joins: Vec<Cow<'a, str>>,
        /// Keys in `leaves`.
        leaves: Vec<Cow<'a, str>>,
    },
}

/// If `frame` is a `presence_state` or `presence_diff`, the keys it names (metas are skipped).
pub fn presence_keys<'a>(frame: &Frame<'a>) -> Option<PresenceKeys<'a>> {
    #[derive(Deserialize)]
    struct Diff<'a> {
        #[serde(borrow, default)]
        joins: Keys<'a>,
        #[serde(borrow, default)]
        leaves: Keys<'a>,
    }
    match frame.event.as_ref() {
        "presence_state" => {
            let keys: Keys<'a> = serde_json::from_str(frame.payload.get()).ok()?;
            Some(PresenceKeys::State(keys.0))
        }
        "presence_diff" => {
            let diff: Diff<'a> = serde_json::from_str(frame.payload.get()).ok()?;
            Some(PresenceKeys::Diff {
                joins: diff.joins.0,
                leaves: diff.leaves.0,
            })
        }
        _ => None,
    }
}

/// The keys of a JSON object, values skipped.
#[derive(Debug, Default)]
struct Keys<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Keys<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key.0);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Frame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Frame<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Phoenix v2 frame [join_ref, ref, topic, event, payload]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = |i| de::Error::invalid_length(i, &"5 elements");
                // The join ref is not needed by these clients.
                seq.next_element::<IgnoredAny>()?
                    .ok_or_else(|| missing(0))?;
                let msg_ref: Option<Str<'de>> = seq.next_element()?.ok_or_else(|| missing(1))?;
                let topic: Str<'de> = seq.next_element()?.ok_or_else(|| missing(2))?;
                let event: Str<'de> = seq.next_element()?.ok_or_else(|| missing(3))?;
                let payload: &'de RawValue = seq.next_element()?.ok_or_else(|| missing(4))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Frame {
                    msg_ref: msg_ref.map(|s| s.0),
                    topic: topic.0,
                    event: event.0,
                    payload,
                })
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_frame_matches_the_protocol() {
        let v: serde_json::Value =
            serde_json::from_str(&join_frame("1", &topic(BENCH, 0), &JoinOpts::default())).unwrap();
        let want: serde_json::Value = serde_json::from_str(
            r#"["1","1","realtime:bench-0","phx_join",{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false}}]"#,
        )
        .unwrap();
        assert_eq!(v, want);
        assert_eq!(heartbeat_frame(7), r#"[null,"7","phoenix","heartbeat",{}]"#);

        let opts = JoinOpts {
            ack: true,
            recover: Some(("5f\"3a".to_owned(), 42)),
            presence_key: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&join_frame("2", "realtime:bench-pub-3", &opts)).unwrap();
        assert_eq!(v[2], "realtime:bench-pub-3");
        assert_eq!(v[4]["config"]["broadcast"]["ack"], true);
        assert_eq!(v[4]["config"]["broadcast"]["recover"]["epoch"], "5f\"3a");
        assert_eq!(v[4]["config"]["broadcast"]["recover"]["offset"], 42);
        assert_eq!(channel_name("bench-pub", 7), "bench-pub-7");

        let opts = JoinOpts {
            presence_key: Some("m3".to_owned()),
            ..JoinOpts::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&join_frame("1", "realtime:p", &opts)).unwrap();
        assert_eq!(v[4]["config"]["presence"]["key"], "m3");
        assert_eq!(v[4]["config"]["presence"]["enabled"], true);
        let v: serde_json::Value =
            serde_json::from_str(&track_frame("1", "2", "realtime:p", r#"{"i":3}"#)).unwrap();
        assert_eq!(v[3], "presence");
        assert_eq!(v[4]["event"], "track");
        assert_eq!(v[4]["payload"]["i"], 3);
        let v: serde_json::Value =
            serde_json::from_str(&leave_frame("1", "3", "realtime:p")).unwrap();
        assert_eq!(
            (v[1].as_str(), v[3].as_str()),
            (Some("3"), Some("phx_leave"))
        );
    }

    #[test]
    fn reads_presence_keys() {
        let state = r#"["1",null,"realtime:p","presence_state",{"m1":{"metas":[{"phx_ref":"a","i":1}]},"m\u0032":{"metas":[]}}]"#;
        let f = parse_frame(state).unwrap();
        assert_eq!(
            presence_keys(&f),
            Some(PresenceKeys::State(vec!["m1".into(), "m2".into()]))
        );
        let diff = r#"["1",null,"realtime:p","presence_diff",{"joins":{"m3":{"metas":[{"phx_ref":"b"}]}},"leaves":{"m1":{"metas":[]}}}]"#;
        let f = parse_frame(diff).unwrap();
        assert_eq!(
            presence_keys(&f),
            Some(PresenceKeys::Diff {
                joins: vec!["m3".into()],
                leaves: vec!["m1".into()]
            })
        );
        let empty = r#"["1",null,"realtime:p","presence_state",{}]"#;
        assert_eq!(
            presence_keys(&parse_frame(empty).unwrap()),
            Some(PresenceKeys::State(vec![]))
        );
        let other =
            r#"[null,null,"realtime:p","broadcast",{"type":"broadcast","event":"b","payload":{}}]"#;
        assert_eq!(presence_keys(&parse_frame(other).unwrap()), None);
    }

    #[test]
    fn reads_recovery_replies_and_broadcast_meta() {
        let reply = r#"["1","1","realtime:r","phx_reply",{"status":"ok","response":{"postgres_changes":[],"recovery":{"recovered":false,"epoch":"58abb372","offset":45}}}]"#;
        let f = parse_frame(reply).unwrap();
        assert_eq!(reply_to(&f, "1"), Some(Reply::Ok));
        assert_eq!(
            recovery(&f),
            Some(Recovery {
                recovered: false,
                epoch: Some("58abb372".into()),
                offset: 45
            })
        );
        let no_history = r#"["1","1","realtime:r","phx_reply",{"status":"ok","response":{"postgres_changes":[],"recovery":{"recovered":false,"epoch":null,"offset":0}}}]"#;
        assert_eq!(
            recovery(&parse_frame(no_history).unwrap()).unwrap().epoch,
            None
        );
        let plain = r#"["1","1","realtime:r","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#;
        assert_eq!(recovery(&parse_frame(plain).unwrap()), None);

        let replayed = r#"[null,null,"realtime:r","broadcast",{"type":"broadcast","event":"b","payload":{"t":1},"meta":{"id":"x","offset":43,"epoch":"58abb372","replayed":true}}]"#;
        assert_eq!(
            broadcast_meta(&parse_frame(replayed).unwrap()),
            Some(Meta {
                offset: Some(43),
                replayed: true
            })
        );
        let live = r#"[null,null,"realtime:r","broadcast",{"type":"broadcast","event":"b","payload":{"t":1},"meta":{"offset":46,"epoch":"e"}}]"#;
        assert_eq!(
            broadcast_meta(&parse_frame(live).unwrap()),
            Some(Meta {
                offset: Some(46),
                replayed: false
            })
        );
        let bare =
            r#"[null,null,"realtime:r","broadcast",{"type":"broadcast","event":"b","payload":{}}]"#;
        assert_eq!(
            broadcast_meta(&parse_frame(bare).unwrap()),
            Some(Meta::default())
        );
        assert_eq!(broadcast_meta(&parse_frame(reply).unwrap()), None);
    }

    #[test]
    fn reads_replies() {
        let ok = r#"["1","1","realtime:bench-0","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#;
        let f = parse_frame(ok).unwrap();
        assert_eq!(f.topic, "realtime:bench-0");
        assert_eq!(reply_to(&f, "1"), Some(Reply::Ok));
        assert_eq!(reply_to(&f, "2"), None);

        let err = r#"["1","1","realtime:bench-0","phx_reply",{"status":"error","response":{"reason":"ChannelRateLimitReached: Too many channels"}},"extra"]"#;
        let f = parse_frame(err).unwrap();
        assert_eq!(
            reply_to(&f, "1"),
            Some(Reply::Error(
                "ChannelRateLimitReached: Too many channels".into()
            ))
        );
        assert!(parse_frame("[1,2]").is_none());
        assert!(parse_frame("{}").is_none());
        assert!(parse_frame("not json").is_none());
    }

    #[test]
    fn reads_system_errors() {
        let sys = r#"["3",null,"realtime:bench-1","system",{"extension":"system","status":"error","message":"Too many messages per second","channel":"bench-1"}]"#;
        let f = parse_frame(sys).unwrap();
        assert_eq!(
            system_error(&f).as_deref(),
            Some("Too many messages per second")
        );
        let ok = r#"["3",null,"realtime:bench-1","system",{"status":"ok","message":"Subscribed"}]"#;
        assert_eq!(system_error(&parse_frame(ok).unwrap()), None);
    }

    #[test]
    fn reads_broadcast_send_times() {
        let b = r#"[null,null,"realtime:bench-0","broadcast",{"type":"broadcast","event":"b","payload":{"t":123456,"pad":"xx\"x"},"meta":{"offset":1}}]"#;
        assert_eq!(broadcast_send_time(b), Some(123_456));
        let other = r#"[null,null,"realtime:bench-0","broadcast",{"type":"broadcast","event":"c","payload":{"t":1}}]"#;
        assert_eq!(broadcast_send_time(other), None);
        let escaped = r#"[null,null,"realtime:bench\u002d0","broadcast",{"type":"broadcast","event":"b","payload":{"t":5}}]"#;
        assert_eq!(broadcast_send_time(escaped), Some(5));
        assert_eq!(
            broadcast_send_time(
                r#"[null,"3","phoenix","phx_reply",{"status":"ok","response":{}}]"#
            ),
            None
        );
    }
}
