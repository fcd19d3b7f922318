//! The Pusher Channels protocol (version 7) as the benchmark speaks it against Sockudo
//! (`bench/peers/sockudo`): JSON text frames over a WebSocket at
//! `GET /app/<key>?protocol=7&client=herald-bench&version=1.0`, and the signed HTTP API.
//!
//! - The server opens with `{"event":"pusher:connection_established","data":"{\"socket_id\":…}"}`
//!   (`data` is a JSON-encoded string).
//! - The benchmark's channels are private, `private-bench-<c>`, because only private channels carry
//!   client events. A client signs its own subscription with the app secret:
//!   `{"event":"pusher:subscribe","data":{"channel":…,"auth":"<key>:<hex HMAC-SHA256 of
//!   \"<socket_id>:<channel>\">"}}`, answered by `pusher_internal:subscription_succeeded` (or
//!   `pusher:error`, `pusher:subscription_error`).
//! - WebSocket publishers send client events `{"event":"client-b","channel":…,"data":<payload>}`,
//!   which reach every other subscriber of the channel (never the sender).
//! - The HTTP publisher posts `POST /apps/<id>/batch_events` with at most [`MAX_BATCH`] events
//!   `{"name":"b","channel":…,"data":"<payload as a JSON string>"}`, authenticated by the query
//!   parameters `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` and `auth_signature`
//!   (hex HMAC-SHA256 of `"POST\n<path>\n<the other parameters, sorted>"`).
//! - Keep-alive: a side that has heard nothing for `activity_timeout` sends `pusher:ping`, answered
//!   by `pusher:pong`.

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::payload::{batch, json_str};
use crate::target::percent_encode;

/// App id of the benchmark's Sockudo configuration (`bench/peers/sockudo/config.json`).
pub const DEFAULT_APP_ID: &str = "herald-bench";
/// App key of the benchmark's Sockudo configuration.
pub const DEFAULT_KEY: &str = "herald-bench-key";
/// App secret of the benchmark's Sockudo configuration.
pub const DEFAULT_SECRET: &str = "herald-bench-secret";
/// Query of the WebSocket URL: protocol version and client name.
pub const WS_QUERY: &str = "protocol=7&client=herald-bench&version=1.0";
/// Name of the client events WebSocket publishers send.
pub const CLIENT_EVENT: &str = "client-b";
/// Name of the events the HTTP publisher triggers.
pub const SERVER_EVENT: &str = "b";
/// Most events in one `batch_events` request (the Pusher HTTP API's limit).
pub const MAX_BATCH: usize = 10;
/// A keep-alive ping (the server's; the benchmark's clients only answer).
#[cfg(test)]
pub const PING: &str = r#"{"event":"pusher:ping","data":{}}"#;
/// The answer to a ping.
pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// A signature that could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PusherError {
    /// The app secret is not usable as an HMAC key.
    #[error("the app secret cannot key an HMAC-SHA256")]
    Key,
}

/// The credentials of one Pusher app.
#[derive(Clone, PartialEq, Eq)]
pub struct App {
    /// App id, in HTTP API paths.
    pub id: String,
    /// App key, in the WebSocket path and in signatures.
    pub key: String,
    /// App secret, keying every signature.
    pub secret: String,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Default for App {
    fn default() -> Self {
        Self {
            id: DEFAULT_APP_ID.to_owned(),
            key: DEFAULT_KEY.to_owned(),
            secret: DEFAULT_SECRET.to_owned(),
        }
    }
}

impl App {
    /// Path and query of the WebSocket endpoint, after the URL's path prefix.
    pub fn ws_path(&self) -> String {
        format!("/app/{}?{WS_QUERY}", percent_encode(&self.key))
    }

    /// Path of the batch publish endpoint under the URL's path prefix `base`.
    pub fn batch_events_path(&self, base: &str) -> String {
        format!("{base}/apps/{}/batch_events", percent_encode(&self.id))
    }

    /// The `auth` of socket `socket_id`'s subscription to private `channel`.
    pub fn channel_auth(&self, socket_id: &str, channel: &str) -> Result<String, PusherError> {
        let signature = hmac_hex(&self.secret, &format!("{socket_id}:{channel}"))?;
        Ok(format!("{}:{signature}", self.key))
    }

    /// Path and signed query of a `POST` of `body` to `path` at Unix time `timestamp` (seconds).
    pub fn signed_post(
        &self,
        path: &str,
        body: &[u8],
        timestamp: u64,
    ) -> Result<String, PusherError> {
        let body_md5 = hex(&Md5::digest(body));
        // Sorted by name; the string to sign is not URL-encoded, the sent query is.
        let params = |key: &str| {
            format!(
                "auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}"
            )
        };
        let signature = hmac_hex(
            &self.secret,
            &format!("POST\n{path}\n{}", params(&self.key)),
        )?;
        Ok(format!(
            "{path}?{}&auth_signature={signature}",
            params(&percent_encode(&self.key))
        ))
    }
}

/// Hex HMAC-SHA256 of `message` keyed by `secret`.
fn hmac_hex(secret: &str, message: &str) -> Result<String, PusherError> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| PusherError::Key)?;
    mac.update(message.as_bytes());
    Ok(hex(&mac.finalize().into_bytes()))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The wire name of the benchmark channel `name`: `private-<name>`.
pub fn channel(name: &str) -> String {
    format!("private-{name}")
}

/// `pusher:subscribe` to `channel` with its `auth`.
pub fn subscribe_frame(channel: &str, auth: &str) -> String {
    format!(
        "{{\"event\":\"pusher:subscribe\",\"data\":{{\"channel\":{},\"auth\":{}}}}}",
        json_str(channel),
        json_str(auth)
    )
}

/// The client event publishing `payload` (JSON) to the wire channel `channel`.
pub fn client_event_frame(channel: &str, payload: &str) -> String {
    format!(
        "{{\"event\":\"{CLIENT_EVENT}\",\"channel\":{},\"data\":{payload}}}",
        json_str(channel)
    )
}

/// The body of `POST /apps/<id>/batch_events` for `(channel, payload)` pairs, channel `c` being
/// `private-<prefix>-<c>` and each payload sent as a JSON string.
pub fn batch_body<'a>(prefix: &str, messages: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    batch(prefix, messages, ("{\"batch\":[", "]}"), |name, payload| {
        let (channel, data) = (json_str(&channel(name)), json_str(payload));
        format!("{{\"name\":\"{SERVER_EVENT}\",\"channel\":{channel},\"data\":{data}}}")
    })
}

/// One server frame, as far as the benchmark cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `pusher:connection_established`, with the socket id.
    ConnectionEstablished(String),
    /// `pusher_internal:subscription_succeeded` for this channel.
    SubscriptionSucceeded(Cow<'a, str>),
    /// `pusher:error` or `pusher:subscription_error`, with what it says.
    Error(String),
    /// `pusher:ping`.
    Ping,
    /// `pusher:pong`.
    Pong,
    /// Any other event.
    Event {
        /// Its name.
        event: Cow<'a, str>,
        /// Its channel, if any.
        channel: Option<Cow<'a, str>>,
    },
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The JSON text of a frame's `data`: decoded once more when it is a JSON string.
fn data_json(data: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let raw = data?.get();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(raw))
    }
}

/// What an error frame's data says: `{"message":…,"code":…}` (or `error`, `type`, `status`, as
/// subscription errors put it), else the data itself.
fn error_text(data: Option<&RawValue>) -> String {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Wire {
        message: Option<String>,
        error: Option<String>,
        code: Option<i64>,
        status: Option<i64>,
    }
    let Some(json) = data_json(data) else {
        return "error".to_owned();
    };
    let Ok(w) = serde_json::from_str::<Wire>(&json) else {
        return json.chars().take(160).collect();
    };
    let text = w
        .message
        .or(w.error)
        .unwrap_or_else(|| json.chars().take(160).collect());
    match w.code.or(w.status) {
        Some(code) => format!("{text} ({code})"),
        None => text,
    }
}

/// Reads one frame; `None` if `text` is not a Pusher event.
pub fn parse(text: &str) -> Option<Frame<'_>> {
    #[derive(Deserialize)]
    struct Established {
        socket_id: String,
    }
    let w: Wire<'_> = serde_json::from_str(text).ok()?;
    Some(match w.event.as_ref() {
        "pusher:connection_established" => {
            let data = data_json(w.data)?;
            let e: Established = serde_json::from_str(&data).ok()?;
            Frame::ConnectionEstablished(e.socket_id)
        }
        "pusher_internal:subscription_succeeded" => {
            Frame::SubscriptionSucceeded(w.channel.unwrap_or_default())
        }
        "pusher:error" | "pusher:subscription_error" => Frame::Error(error_text(w.data)),
        "pusher:ping" => Frame::Ping,
        "pusher:pong" => Frame::Pong,
        _ => Frame::Event {
            event: w.event,
            channel: w.channel,
        },
    })
}

/// Whether `text` is a `pusher:ping` (cheap for the benchmark's deliveries, which are not).
pub fn is_ping(text: &str) -> bool {
    text.contains("pusher:ping") && parse(text) == Some(Frame::Ping)
}

/// The send time `t` of a benchmark delivery (a `client-b` or `b` event whose data, an object or a
/// JSON string, holds `{"t":…}`), if `text` is one.
pub fn send_time(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct BenchPayload {
        t: u64,
    }
    let w: Wire<'_> = serde_json::from_str(text).ok()?;
    if w.event != CLIENT_EVENT && w.event != SERVER_EVENT {
        return None;
    }
    let data = data_json(w.data)?;
    serde_json::from_str::<BenchPayload>(&data)
        .ok()
        .map(|p| p.t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of the worked examples in Pusher's documentation.
    fn docs_app() -> App {
        App {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        }
    }

    #[test]
    fn signs_http_requests_like_the_documented_example() {
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let signed = docs_app()
            .signed_post("/apps/3/events", body.as_bytes(), 1_353_088_179)
            .unwrap();
        assert_eq!(
            signed,
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn signs_private_subscriptions_like_the_documented_example() {
        assert_eq!(
            docs_app()
                .channel_auth("1234.1234", "private-foobar")
                .unwrap(),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn defaults_match_the_committed_sockudo_config() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bench/peers/sockudo/config.json"
        );
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let app = &config["app_manager"]["array"]["apps"][0];
        assert_eq!(app["id"], DEFAULT_APP_ID);
        assert_eq!(app["key"], DEFAULT_KEY);
        assert_eq!(app["secret"], DEFAULT_SECRET);
        assert_eq!(app["enable_client_messages"], true);
    }

    #[test]
    fn builds_paths_and_frames() {
        let app = App::default();
        assert_eq!(
            app.ws_path(),
            "/app/herald-bench-key?protocol=7&client=herald-bench&version=1.0"
        );
        assert_eq!(
            app.batch_events_path("/x"),
            "/x/apps/herald-bench/batch_events"
        );
        assert!(!format!("{app:?}").contains(DEFAULT_SECRET));
        assert_eq!(channel("bench-3"), "private-bench-3");

        let v: serde_json::Value =
            serde_json::from_str(&subscribe_frame("private-bench-0", "k:s")).unwrap();
        assert_eq!(v["event"], "pusher:subscribe");
        assert_eq!(v["data"]["channel"], "private-bench-0");
        assert_eq!(v["data"]["auth"], "k:s");

        let f = client_event_frame("private-bench-1", r#"{"t":5,"pad":"x"}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            (
                v["event"].as_str(),
                v["channel"].as_str(),
                v["data"]["t"].as_u64()
            ),
            (Some("client-b"), Some("private-bench-1"), Some(5))
        );

        let v: serde_json::Value =
            serde_json::from_str(&batch_body("bench", [(0, "{\"t\":1}"), (7, "{\"t\":2}")]))
                .unwrap();
        assert_eq!(v["batch"][1]["channel"], "private-bench-7");
        assert_eq!(v["batch"][1]["name"], "b");
        assert_eq!(v["batch"][0]["data"], "{\"t\":1}");
        assert_eq!(batch_body("bench", std::iter::empty()), "{\"batch\":[]}");
    }

    #[test]
    fn reads_server_frames() {
        let established = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#;
        assert_eq!(
            parse(established),
            Some(Frame::ConnectionEstablished("123.456".into()))
        );
        // Some servers send the data as an object.
        assert_eq!(
            parse(r#"{"event":"pusher:connection_established","data":{"socket_id":"1.2"}}"#),
            Some(Frame::ConnectionEstablished("1.2".into()))
        );
        assert_eq!(
            parse(
                r#"{"event":"pusher_internal:subscription_succeeded","channel":"private-bench-0","data":"{}"}"#
            ),
            Some(Frame::SubscriptionSucceeded("private-bench-0".into()))
        );
        assert_eq!(
            parse(
                r#"{"event":"pusher:error","data":{"code":4009,"message":"Connection is unauthorized"}}"#
            ),
            Some(Frame::Error("Connection is unauthorized (4009)".into()))
        );
        assert_eq!(
            parse(
                r#"{"event":"pusher:subscription_error","channel":"private-x","data":{"type":"AuthError","error":"bad auth","status":401}}"#
            ),
            Some(Frame::Error("bad auth (401)".into()))
        );
        assert_eq!(
            parse(r#"{"event":"pusher:error","data":"oops"}"#),
            Some(Frame::Error("oops".into()))
        );
        assert_eq!(parse(PING), Some(Frame::Ping));
        assert_eq!(parse(PONG), Some(Frame::Pong));
        assert!(is_ping(r#"{"event":"pusher:ping","data":"{}"}"#));
        assert!(!is_ping(
            r#"{"event":"client-b","channel":"c","data":{"t":1,"pad":"pusher:ping"}}"#
        ));
        assert!(matches!(
            parse(r#"{"event":"client-b","channel":"c","data":{}}"#),
            Some(Frame::Event { event, channel: Some(c) }) if event == "client-b" && c == "c"
        ));
        assert_eq!(parse("not json"), None);
        assert_eq!(parse(r#"{"data":1}"#), None);
    }

    #[test]
    fn reads_delivery_send_times() {
        // A client event carries its data as sent; an HTTP-triggered event as a JSON string.
        assert_eq!(
            send_time(
                r#"{"event":"client-b","channel":"private-bench-0","data":{"t":77,"pad":"x"}}"#
            ),
            Some(77)
        );
        assert_eq!(
            send_time(
                r#"{"event":"b","channel":"private-bench-0","data":"{\"t\":78,\"pad\":\"x\"}"}"#
            ),
            Some(78)
        );
        assert_eq!(
            send_time(r#"{"event":"other","channel":"c","data":{"t":1}}"#),
            None
        );
        assert_eq!(
            send_time(r#"{"event":"b","channel":"c","data":"{}"}"#),
            None
        );
        assert_eq!(send_time(PING), None);
        assert_eq!(send_time("2"), None);
    }
}
