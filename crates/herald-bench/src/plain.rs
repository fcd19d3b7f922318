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

use crate::payload::{batch, json_str};

/// Path of the WebSocket endpoint, after the URL's path prefix.
pub const WS_PATH: &str = "/ws";
/// Path of the HTTP publish endpoint, after the URL's path prefix.
pub const PUBLISH_PATH: &str = "/publish";

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
    batch(prefix, messages, ("[", "]"), |name, payload| {
        format!("{{\"channel\":{},\"data\":{payload}}}", json_str(name))
    })
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
