//! The "plain" protocol of the naive reference server (`bench/peers/plain`, documented in
//! `bench/peers/README.md`) as the benchmark speaks it: JSON text frames on `GET /ws`.
//!
//! - `{"op":"join","channel":"c"}` → `{"op":"joined","channel":"c"}`
//! - `{"op":"publish","channel":"c","data":…}` → every member of `c` gets `{"channel":"c","data":…}`
//! - a frame the server cannot use → `{"op":"error","reason":"…"}`
//! - `POST /publish` with `[{"channel":"c","data":…}, …]` publishes over HTTP (202).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// Path of the WebSocket endpoint, after the URL's path prefix.
pub const WS_PATH: &str = "/ws";
/// Path of the HTTP publish endpoint, after the URL's path prefix.
pub const PUBLISH_PATH: &str = "/publish";

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// `{"op":"join","channel":…}`.
pub fn join_frame(channel: &str) -> String {
    format!("{{\"op\":\"join\",\"channel\":{}}}", json_str(channel))
}

/// `{"op":"publish","channel":…,"data":<payload>}`; `payload` is JSON.
pub fn publish_frame(channel: &str, payload: &str) -> String {
    format!(
        "{{\"op\":\"publish\",\"channel\":{},\"data\":{payload}}}",
        json_str(channel)
    )
}

/// The body of `POST /publish` for `(channel, payload)` pairs, channel `c` being `<prefix>-<c>`.
pub fn http_batch<'a>(prefix: &str, messages: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    let mut body = String::from("[");
    for (i, (channel, payload)) in messages.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"channel\":{},\"data\":{payload}}}",
            json_str(&crate::payload::channel_name(prefix, channel))
        ));
    }
    body.push(']');
    body
}

/// What a server frame with an `op` says.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `joined` this channel.
    Joined(String),
    /// `error`, with its reason.
    Error(String),
}

/// If `text` is a reply frame (`joined` or `error`), what it says.
pub fn reply(text: &str) -> Option<Reply> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        op: Cow<'a, str>,
        #[serde(default, borrow)]
        channel: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        reason: Option<Cow<'a, str>>,
    }
    let w: Wire<'_> = serde_json::from_str(text).ok()?;
    match w.op.as_ref() {
        "joined" => Some(Reply::Joined(w.channel.unwrap_or_default().into_owned())),
        "error" => Some(Reply::Error(
            w.reason.map_or_else(|| "error".to_owned(), Cow::into_owned),
        )),
        _ => None,
    }
}

/// The send time `t` of a benchmark delivery `{"channel":…,"data":{"t":…}}`, if `text` is one.
pub fn send_time(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Delivery {
        #[serde(default)]
        op: Option<IgnoredAny>,
        data: BenchPayload,
    }
    #[derive(Deserialize)]
    struct BenchPayload {
        t: u64,
    }
    let d: Delivery = serde_json::from_str(text).ok()?;
    d.op.is_none().then_some(d.data.t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid_json() {
        let v: serde_json::Value = serde_json::from_str(&join_frame("bench-\"3")).unwrap();
        assert_eq!(v["op"], "join");
        assert_eq!(v["channel"], "bench-\"3");
        let v: serde_json::Value =
            serde_json::from_str(&publish_frame("bench-1", r#"{"t":5,"pad":"x"}"#)).unwrap();
        assert_eq!(
            (v["op"].as_str(), v["data"]["t"].as_u64()),
            (Some("publish"), Some(5))
        );
        let v: serde_json::Value =
            serde_json::from_str(&http_batch("bench", [(0, "{\"t\":1}"), (7, "{\"t\":2}")]))
                .unwrap();
        assert_eq!(v[1]["channel"], "bench-7");
        assert_eq!(v[0]["data"]["t"], 1);
        assert_eq!(http_batch("bench", std::iter::empty()), "[]");
    }

    #[test]
    fn reads_replies_and_deliveries() {
        assert_eq!(
            reply(r#"{"op":"joined","channel":"bench-0"}"#),
            Some(Reply::Joined("bench-0".into()))
        );
        assert_eq!(
            reply(r#"{"op":"error","reason":"bad frame"}"#),
            Some(Reply::Error("bad frame".into()))
        );
        assert_eq!(reply(r#"{"channel":"c","data":{"t":1}}"#), None);
        assert_eq!(reply("not json"), None);

        assert_eq!(
            send_time(r#"{"channel":"bench-0","data":{"t":123,"pad":"xx"}}"#),
            Some(123)
        );
        assert_eq!(send_time(r#"{"op":"joined","channel":"bench-0"}"#), None);
        assert_eq!(send_time(r#"{"channel":"c","data":{"other":1}}"#), None);
    }
}
