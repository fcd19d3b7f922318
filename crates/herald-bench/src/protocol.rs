//! The wire protocols of the clients (`--protocol`): Herald's Phoenix v2 (frames from
//! `herald_protocol::client`) and the peers' of `bench/peers` (plain, Socket.IO, Pusher), as far as
//! the benchmark speaks them: subscribing, answering keep-alive pings, publishing, and reading the
//! send time of a delivery. `bench/peers/README.md` describes the peers' frames.

use futures_util::SinkExt;
use herald_protocol::{JoinConfig, client};
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{ConnError, Ws, await_answer};
use crate::payload::{self, Stamped, channel_name, json_str};
use crate::target::percent_encode;

/// App id of the benchmark's Sockudo configuration (`bench/peers/sockudo/config.json`).
pub const DEFAULT_APP_ID: &str = "herald-bench";
/// App key of that configuration.
pub const DEFAULT_KEY: &str = "herald-bench-key";
/// App secret of that configuration.
pub const DEFAULT_SECRET: &str = "herald-bench-secret";
/// Most events in one Pusher `batch_events` request (the Pusher HTTP API's limit).
pub const PUSHER_MAX_BATCH: u64 = 10;
/// The Pusher client events WebSocket publishers send (HTTP publishes trigger `b`).
const CLIENT_EVENT: &str = "client-b";
const PUSHER_PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// The clients' wire protocol.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Protocol {
    /// Phoenix v2 over `/socket/websocket` (Herald).
    Phoenix,
    /// The naive reference server's JSON frames over `/ws` (`bench/peers/plain`).
    Plain,
    /// Engine.IO v4 / Socket.IO v5 over a WebSocket (`bench/peers/socketio`).
    Socketio,
    /// Pusher Channels protocol 7 (Sockudo, `bench/peers/sockudo`).
    Pusher,
}

/// A scenario was asked to speak a protocol it does not.
#[derive(Debug, thiserror::Error)]
#[error("the {scenario} scenario speaks only phoenix, not {protocol} (--protocol)")]
pub struct ProtocolError {
    pub scenario: &'static str,
    pub protocol: &'static str,
}

/// The credentials of one Pusher app (`--pusher-*`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (id, key) = (&self.id, &self.key);
        write!(f, "App {{ id: {id:?}, key: {key:?}, secret: <redacted> }}")
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

/// The secret cannot key an HMAC (it always can: HMAC takes keys of any length).
pub type SignError = hmac::digest::InvalidLength;

impl App {
    /// The `auth` of socket `socket_id`'s subscription to private `channel`.
    pub fn channel_auth(&self, socket_id: &str, channel: &str) -> Result<String, SignError> {
        let signature = hmac_hex(&self.secret, &format!("{socket_id}:{channel}"))?;
        Ok(format!("{}:{signature}", self.key))
    }

    /// Path and signed query of a `POST` of `body` to `path` at Unix time `timestamp` (seconds).
    pub fn signed_post(
        &self,
        path: &str,
        body: &[u8],
        timestamp: u64,
    ) -> Result<String, SignError> {
        let body_md5 = hex(&Md5::digest(body));
        // Sorted by name; the string to sign is not URL-encoded, the sent query is.
        let params = |key: &str| {
            format!(
                "auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}"
            )
        };
        let signed = format!("POST\n{path}\n{}", params(&self.key));
        let signature = hmac_hex(&self.secret, &signed)?;
        let query = params(&percent_encode(&self.key));
        Ok(format!("{path}?{query}&auth_signature={signature}"))
    }
}

fn hmac_hex(secret: &str, message: &str) -> Result<String, SignError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(message.as_bytes());
    Ok(hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The wire name of channel `name` in `protocol` (Pusher: `private-<name>`).
pub fn wire_channel(protocol: Protocol, name: &str) -> String {
    match protocol {
        Protocol::Pusher => format!("private-{name}"),
        _ => name.to_owned(),
    }
}

/// A JSON text, or a JSON string holding one (Pusher data comes either way).
fn unquote(raw: &RawValue) -> Option<String> {
    let raw = raw.get();
    match raw.starts_with('"') {
        true => serde_json::from_str(raw).ok(),
        false => Some(raw.to_owned()),
    }
}

/// A Pusher frame's event, channel and data.
#[derive(Deserialize)]
struct PusherFrame<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// What a Pusher error frame says: its `message` (or `error`) and `code` (or `status`).
fn pusher_error(text: &str) -> Option<String> {
    let frame: PusherFrame<'_> = serde_json::from_str(text).ok()?;
    if !matches!(
        frame.event.as_ref(),
        "pusher:error" | "pusher:subscription_error"
    ) {
        return None;
    }
    let data = frame.data.and_then(unquote).unwrap_or_default();
    let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
    let message = v["message"].as_str().or(v["error"].as_str());
    let text = message.map_or_else(|| data.chars().take(160).collect(), str::to_owned);
    Some(match v["code"].as_i64().or(v["status"].as_i64()) {
        Some(code) => format!("{text} ({code})"),
        None => text,
    })
}

impl Protocol {
    /// Its `--protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Phoenix => "phoenix",
            Protocol::Plain => "plain",
            Protocol::Socketio => "socketio",
            Protocol::Pusher => "pusher",
        }
    }

    /// Checks that `scenario`, which speaks only Phoenix, can run with this protocol.
    pub fn check(self, scenario: &'static str) -> Result<(), ProtocolError> {
        match self == Protocol::Phoenix {
            true => Ok(()),
            false => Err(ProtocolError {
                scenario,
                protocol: self.name(),
            }),
        }
    }

    /// Path and query of the WebSocket endpoint of a peer, after the URL's path prefix.
    pub fn ws_path(self, app: &App) -> String {
        match self {
            Protocol::Phoenix => "/websocket".to_owned(),
            Protocol::Plain => "/ws".to_owned(),
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket".to_owned(),
            Protocol::Pusher => format!(
                "/app/{}?protocol=7&client=herald-bench&version=1.0",
                percent_encode(&app.key)
            ),
        }
    }

    /// Path of the HTTP publish endpoint, after the URL's path prefix (Pusher: before signing).
    pub fn publish_path(self, app: &App) -> String {
        match self {
            Protocol::Phoenix => "/api/broadcast".to_owned(),
            Protocol::Plain | Protocol::Socketio => "/publish".to_owned(),
            Protocol::Pusher => format!("/apps/{}/batch_events", percent_encode(&app.id)),
        }
    }

    /// The answer to `text` if it is the server's keep-alive ping (Socket.IO `2`, `pusher:ping`).
    pub fn pong_for(self, text: &str) -> Option<&'static str> {
        match self {
            Protocol::Socketio => (text == "2").then_some("3"),
            Protocol::Pusher => (text.contains("pusher:ping")
                && serde_json::from_str::<PusherFrame<'_>>(text)
                    .is_ok_and(|f| f.event == "pusher:ping"))
            .then_some(PUSHER_PONG),
            Protocol::Phoenix | Protocol::Plain => None,
        }
    }

    /// The send time of a benchmark message, if `text` delivers one.
    pub fn send_time(self, text: &str) -> Option<u64> {
        match self {
            Protocol::Phoenix => payload::phoenix_send_time(text),
            Protocol::Plain => {
                #[derive(Deserialize)]
                struct Delivery {
                    #[serde(default)]
                    op: Option<serde::de::IgnoredAny>,
                    data: Stamped,
                }
                let d: Delivery = serde_json::from_str(text).ok()?;
                d.op.is_none().then_some(d.data.t)
            }
            Protocol::Socketio => {
                let (name, stamped): (String, Stamped) =
                    serde_json::from_str(text.strip_prefix("42")?).ok()?;
                (name == "msg").then_some(stamped.t)
            }
            Protocol::Pusher => {
                let frame: PusherFrame<'_> = serde_json::from_str(text).ok()?;
                if frame.event != CLIENT_EVENT && frame.event != "b" {
                    return None;
                }
                let data = unquote(frame.data?)?;
                serde_json::from_str::<Stamped>(&data).ok().map(|s| s.t)
            }
        }
    }

    /// The WebSocket frame of a peer publishing `payload` (JSON) to channel `name` (Phoenix pushes
    /// need refs: `client::broadcast`).
    pub fn publish_frame(self, name: &str, payload: &str) -> String {
        let channel = json_str(&wire_channel(self, name));
        match self {
            Protocol::Socketio => {
                format!("42[\"publish\",{{\"room\":{channel},\"data\":{payload}}}]")
            }
            Protocol::Pusher => {
                format!("{{\"event\":\"{CLIENT_EVENT}\",\"channel\":{channel},\"data\":{payload}}}")
            }
            Protocol::Phoenix | Protocol::Plain => {
                format!("{{\"op\":\"publish\",\"channel\":{channel},\"data\":{payload}}}")
            }
        }
    }

    /// The body of one HTTP publish request for `(channel, payload)` pairs, channel `c` being
    /// `<prefix>-<c>`.
    pub fn http_batch<'a>(
        self,
        prefix: &str,
        messages: impl IntoIterator<Item = (u64, &'a str)>,
    ) -> String {
        let item = |name: &str, payload: &str| {
            let channel = json_str(&wire_channel(self, name));
            match self {
                Protocol::Phoenix => {
                    format!("{{\"topic\":{channel},\"event\":\"b\",\"payload\":{payload}}}")
                }
                Protocol::Plain => format!("{{\"channel\":{channel},\"data\":{payload}}}"),
                Protocol::Socketio => format!("{{\"room\":{channel},\"data\":{payload}}}"),
                Protocol::Pusher => {
                    let data = json_str(payload);
                    format!("{{\"name\":\"b\",\"channel\":{channel},\"data\":{data}}}")
                }
            }
        };
        let ends = match self {
            Protocol::Phoenix => ("{\"messages\":[", "]}"),
            Protocol::Pusher => ("{\"batch\":[", "]}"),
            Protocol::Plain | Protocol::Socketio => ("[", "]"),
        };
        let items: Vec<String> = messages
            .into_iter()
            .map(|(c, payload)| item(&channel_name(prefix, c), payload))
            .collect();
        format!("{}{}{}", ends.0, items.join(","), ends.1)
    }

    /// What a peer's refusal frame says (plain `error`, `pusher:error`), if `text` is one.
    pub fn refusal(self, text: &str) -> Option<String> {
        match self {
            Protocol::Plain => plain_reply(text).and_then(Result::err),
            Protocol::Pusher => pusher_error(text),
            Protocol::Phoenix | Protocol::Socketio => None,
        }
    }
}

/// A plain reply: `Ok(channel)` for `joined`, `Err(reason)` for `error`.
fn plain_reply(text: &str) -> Option<Result<String, String>> {
    let v: Value = serde_json::from_str(text).ok()?;
    let field = |k: &str| v[k].as_str().map(str::to_owned);
    match v["op"].as_str()? {
        "joined" => Some(Ok(field("channel").unwrap_or_default())),
        "error" => Some(Err(field("reason").unwrap_or_else(|| "error".to_owned()))),
        _ => None,
    }
}

fn unexpected(expected: &str, text: &str) -> Option<Result<String, ConnError>> {
    let got: String = text.chars().take(80).collect();
    let said = format!("expected {expected}, got {got}");
    Some(Err(ConnError::Unexpected(said)))
}

/// Opens a peer's session on a fresh connection: Socket.IO connects to the main namespace, Pusher
/// waits for `pusher:connection_established` and returns the socket id.
pub async fn open_session(ws: &mut Ws, protocol: Protocol) -> Result<String, ConnError> {
    match protocol {
        Protocol::Phoenix | Protocol::Plain => Ok(String::new()),
        Protocol::Socketio => {
            await_answer(ws, protocol, |text| match text.starts_with('0') {
                true => Some(Ok(String::new())),
                false => unexpected("the Engine.IO open packet", text),
            })
            .await?;
            ws.send(Message::text("40")).await?;
            await_answer(ws, protocol, |text| {
                let refused = |data: &str| {
                    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    let message = v["message"].as_str().map(str::to_owned);
                    ConnError::JoinRefused(message.unwrap_or_else(|| data.to_owned()))
                };
                match text {
                    t if t.starts_with("40") => Some(Ok(String::new())),
                    t if t.starts_with("44") => Some(Err(refused(&t[2..]))),
                    "1" | "41" => Some(Err(ConnError::ClosedBeforeReply)),
                    _ => None,
                }
            })
            .await
        }
        Protocol::Pusher => {
            await_answer(ws, protocol, |text| {
                if let Some(reason) = pusher_error(text) {
                    return Some(Err(ConnError::JoinRefused(reason)));
                }
                let frame: Option<PusherFrame<'_>> = serde_json::from_str(text).ok();
                let data = frame
                    .filter(|f| f.event == "pusher:connection_established")
                    .and_then(|f| unquote(f.data?));
                let v: Value = serde_json::from_str(&data.unwrap_or_default()).unwrap_or_default();
                match v["socket_id"].as_str() {
                    Some(id) => Some(Ok(id.to_owned())),
                    None => unexpected("pusher:connection_established", text),
                }
            })
            .await
        }
    }
}

/// Joins a peer's channel `name` in the session `socket_id` (Pusher: a signed subscription to
/// `private-<name>`) and waits until the server confirms it.
pub async fn join_peer(
    ws: &mut Ws,
    protocol: Protocol,
    app: &App,
    socket_id: &str,
    name: &str,
) -> Result<(), ConnError> {
    let channel = wire_channel(protocol, name);
    let frame = match protocol {
        Protocol::Phoenix => return Ok(()),
        Protocol::Plain => format!("{{\"op\":\"join\",\"channel\":{}}}", json_str(name)),
        Protocol::Socketio => format!("421[\"join\",{}]", json_str(name)),
        Protocol::Pusher => {
            let auth = app
                .channel_auth(socket_id, &channel)
                .map_err(ConnError::Sign)?;
            let (c, a) = (json_str(&channel), json_str(&auth));
            format!("{{\"event\":\"pusher:subscribe\",\"data\":{{\"channel\":{c},\"auth\":{a}}}}}")
        }
    };
    ws.send(Message::text(frame)).await?;
    await_answer(ws, protocol, |text| match protocol {
        Protocol::Plain => match plain_reply(text)? {
            Ok(c) => (c == channel).then_some(Ok(())),
            Err(reason) => Some(Err(ConnError::JoinRefused(reason))),
        },
        Protocol::Socketio => match text {
            t if t.starts_with("431") => Some(Ok(())),
            "1" | "41" => Some(Err(ConnError::ClosedBeforeReply)),
            _ => None,
        },
        _ => {
            if let Some(reason) = pusher_error(text) {
                return Some(Err(ConnError::JoinRefused(reason)));
            }
            let frame: PusherFrame<'_> = serde_json::from_str(text).ok()?;
            (frame.event == "pusher_internal:subscription_succeeded"
                && frame.channel.as_deref() == Some(channel.as_str()))
            .then_some(Ok(()))
        }
    })
    .await
}

/// Subscribes an open connection to channel `name` the way `protocol` does it (Phoenix: joins
/// `realtime:<name>` with join ref 1).
pub async fn subscribe(
    ws: &mut Ws,
    protocol: Protocol,
    name: &str,
    app: &App,
) -> Result<(), ConnError> {
    if protocol == Protocol::Phoenix {
        let topic = format!("realtime:{name}");
        return crate::conn::join(ws, "1", &topic, &JoinConfig::default()).await;
    }
    let socket_id = open_session(ws, protocol).await?;
    join_peer(ws, protocol, app, &socket_id, name).await
}

/// The Phoenix frame publishing message `n` (push ref `p<n>`) with `payload` to `topic`, joined
/// with `join_ref`; or a peer's publish frame for channel `name`.
pub fn push_frame(protocol: Protocol, join_ref: &str, n: u64, name: &str, payload: &str) -> String {
    match protocol {
        Protocol::Phoenix => {
            let topic = format!("realtime:{name}");
            client::broadcast(join_ref, &format!("p{n}"), &topic, "b", payload)
        }
        peer => peer.publish_frame(name, payload),
    }
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
    fn pusher_signatures_match_the_documented_examples() {
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let signed = docs_app().signed_post("/apps/3/events", body.as_bytes(), 1_353_088_179);
        assert_eq!(
            signed.unwrap(),
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        assert_eq!(
            docs_app()
                .channel_auth("1234.1234", "private-foobar")
                .unwrap(),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn pusher_defaults_match_the_committed_sockudo_config() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bench/peers/sockudo/config.json"
        );
        let config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let app = &config["app_manager"]["array"]["apps"][0];
        assert_eq!(
            (&app["id"], &app["key"]),
            (&DEFAULT_APP_ID.into(), &DEFAULT_KEY.into())
        );
        assert_eq!(app["secret"], DEFAULT_SECRET);
        assert_eq!(app["enable_client_messages"], true);
    }

    #[test]
    fn reads_the_peers_deliveries_and_pings() {
        let event = r#"{"event":"b","channel":"private-bench-0","data":"{\"t\":78}"}"#;
        let client_event = Protocol::Pusher.publish_frame("bench-1", r#"{"t":5}"#);
        let error = r#"{"event":"pusher:error","data":{"code":4009,"message":"unauthorized"}}"#;
        for (protocol, text, t) in [
            (Protocol::Pusher, event, 78),
            (Protocol::Pusher, &client_event, 5),
            (Protocol::Socketio, r#"42["msg",{"t":77}]"#, 77),
            (Protocol::Plain, r#"{"channel":"c","data":{"t":2}}"#, 2),
        ] {
            assert_eq!(protocol.send_time(text), Some(t), "{text}");
        }
        let ping = r#"{"event":"pusher:ping","data":{}}"#;
        assert_eq!(Protocol::Pusher.pong_for(ping), Some(PUSHER_PONG));
        assert_eq!(Protocol::Socketio.pong_for("2"), Some("3"));
        let refusal = Protocol::Pusher.refusal(error);
        assert_eq!(refusal.as_deref(), Some("unauthorized (4009)"));
    }
}
