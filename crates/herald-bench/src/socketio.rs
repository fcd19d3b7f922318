//! The Engine.IO v4 / Socket.IO v5 packets the benchmark speaks, straight over a WebSocket
//! (`GET /socket.io/?EIO=4&transport=websocket`, no long-polling first), against the Socket.IO
//! reference server in `bench/peers/socketio`:
//!
//! - the server opens with `0{"sid":…,"pingInterval":…,"pingTimeout":…}`; the client connects to the
//!   main namespace with `40` and the server answers `40{"sid":…}` (or `44{…}` to refuse);
//! - events are `42["name",args…]`, with an ack id `421["join","bench-0"]`, acknowledged by
//!   `431[…]`;
//! - the server pings with `2` every `pingInterval` and closes a client that does not answer `3`
//!   within `pingTimeout`.
//!
//! The reference server's events: `join` (room name, acked), `publish` (`{room, data}`), and `msg`
//! (the published data) to every member of the room; `POST /publish` with `[{room, data}, …]`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::payload::{batch, json_str};

/// Path and query of the WebSocket endpoint, after the URL's path prefix.
pub const WS_PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// Path of the reference server's HTTP publish endpoint.
pub const PUBLISH_PATH: &str = "/publish";
/// Engine.IO ping, sent by the server.
pub const PING: &str = "2";
/// Engine.IO pong, the client's answer.
pub const PONG: &str = "3";
/// Socket.IO CONNECT to the main namespace.
pub const CONNECT: &str = "40";

/// One packet, borrowing from the frame's text.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO open, with its JSON handshake data.
    Open(&'a str),
    /// Engine.IO close.
    Close,
    /// Engine.IO ping.
    Ping,
    /// Engine.IO pong.
    Pong,
    /// Socket.IO CONNECT accepted, with its JSON data.
    Connect(&'a str),
    /// Socket.IO DISCONNECT.
    Disconnect,
    /// Socket.IO EVENT: ack id if one was asked for, and the JSON array of name and arguments.
    Event {
        /// The ack id.
        ack: Option<u64>,
        /// `["name", args…]`.
        data: &'a str,
    },
    /// Socket.IO ACK of the event with this id, with the JSON array of the ack's arguments.
    Ack {
        /// The id of the acknowledged event.
        id: u64,
        /// `[args…]`.
        data: &'a str,
    },
    /// Socket.IO CONNECT_ERROR, with its JSON data.
    ConnectError(&'a str),
    /// Anything else (upgrade, noop, binary packets).
    Other,
}

/// Reads one packet (one WebSocket text frame).
pub fn parse(text: &str) -> Packet<'_> {
    let Some(kind) = text.bytes().next() else {
        return Packet::Other;
    };
    let rest = text.get(1..).unwrap_or_default();
    match kind {
        b'0' => Packet::Open(rest),
        b'1' => Packet::Close,
        b'2' => Packet::Ping,
        b'3' => Packet::Pong,
        b'4' => parse_socket(rest),
        _ => Packet::Other,
    }
}

/// A Socket.IO packet: type digit, optional `/namespace,`, optional ack id, JSON data.
fn parse_socket(text: &str) -> Packet<'_> {
    let Some(kind) = text.bytes().next() else {
        return Packet::Other;
    };
    let mut rest = text.get(1..).unwrap_or_default();
    if rest.starts_with('/') {
        rest = rest.split_once(',').map_or("", |(_, after)| after);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest.get(..digits).and_then(|d| d.parse::<u64>().ok());
    let data = rest.get(digits..).unwrap_or_default();
    match kind {
        b'0' => Packet::Connect(data),
        b'1' => Packet::Disconnect,
        b'2' => Packet::Event { ack: id, data },
        b'3' => match id {
            Some(id) => Packet::Ack { id, data },
            None => Packet::Other,
        },
        b'4' => Packet::ConnectError(data),
        _ => Packet::Other,
    }
}

/// The `message` of a CONNECT_ERROR's data (`{"message":…}`), or the data itself.
pub fn connect_error_message(data: &str) -> String {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        message: Cow<'a, str>,
    }
    serde_json::from_str::<Wire<'_>>(data)
        .map(|w| w.message.into_owned())
        .unwrap_or_else(|_| data.chars().take(160).collect())
}

/// `42<ack>["join","<room>"]`: join a room, asking for an ack with id `ack`.
pub fn join_frame(ack: u64, room: &str) -> String {
    format!("42{ack}[\"join\",{}]", json_str(room))
}

/// `42["publish",{"room":…,"data":<payload>}]`; `payload` is JSON.
pub fn publish_frame(room: &str, payload: &str) -> String {
    format!(
        "42[\"publish\",{{\"room\":{},\"data\":{payload}}}]",
        json_str(room)
    )
}

/// The body of `POST /publish` for `(channel, payload)` pairs, room `c` being `<prefix>-<c>`.
pub fn http_batch<'a>(prefix: &str, messages: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    batch(prefix, messages, ("[", "]"), |name, payload| {
        format!("{{\"room\":{},\"data\":{payload}}}", json_str(name))
    })
}

/// The send time `t` of a benchmark delivery `42["msg",{"t":…}]`, if `text` is one.
pub fn send_time(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct BenchPayload {
        t: u64,
    }
    let Packet::Event { data, .. } = parse(text) else {
        return None;
    };
    let (name, payload): (Cow<'_, str>, BenchPayload) = serde_json::from_str(data).ok()?;
    (name == "msg").then_some(payload.t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_and_socket_packets() {
        let open = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert!(matches!(parse(open), Packet::Open(d) if d.starts_with("{\"sid\"")));
        assert_eq!(parse("2"), Packet::Ping);
        assert_eq!(parse("3"), Packet::Pong);
        assert_eq!(parse("1"), Packet::Close);
        assert_eq!(
            parse("40{\"sid\":\"x\"}"),
            Packet::Connect("{\"sid\":\"x\"}")
        );
        assert_eq!(parse("41"), Packet::Disconnect);
        assert_eq!(
            parse("431[\"ok\"]"),
            Packet::Ack {
                id: 1,
                data: "[\"ok\"]"
            }
        );
        assert_eq!(
            parse("42[\"msg\",{\"t\":1}]"),
            Packet::Event {
                ack: None,
                data: "[\"msg\",{\"t\":1}]"
            }
        );
        assert_eq!(
            parse("42/admin,7[\"x\"]"),
            Packet::Event {
                ack: Some(7),
                data: "[\"x\"]"
            }
        );
        assert_eq!(
            parse("44{\"message\":\"Invalid namespace\"}"),
            Packet::ConnectError("{\"message\":\"Invalid namespace\"}")
        );
        assert_eq!(
            connect_error_message("{\"message\":\"Invalid namespace\"}"),
            "Invalid namespace"
        );
        assert_eq!(parse(""), Packet::Other);
        assert_eq!(parse("6"), Packet::Other);
        assert_eq!(parse("43[]"), Packet::Other);
    }

    #[test]
    fn builds_frames() {
        assert_eq!(join_frame(1, "bench-0"), r#"421["join","bench-0"]"#);
        let f = publish_frame("bench-2", r#"{"t":9,"pad":""}"#);
        let Packet::Event { ack: None, data } = parse(&f) else {
            panic!("{f}")
        };
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v[0], "publish");
        assert_eq!(v[1]["room"], "bench-2");
        assert_eq!(v[1]["data"]["t"], 9);
        let v: serde_json::Value =
            serde_json::from_str(&http_batch("bench", [(3, "{\"t\":1}")])).unwrap();
        assert_eq!(v[0]["room"], "bench-3");
    }

    #[test]
    fn reads_delivery_send_times() {
        assert_eq!(send_time(r#"42["msg",{"t":77,"pad":"x"}]"#), Some(77));
        assert_eq!(send_time(r#"42["other",{"t":77}]"#), None);
        assert_eq!(send_time(r#"431["ok"]"#), None);
        assert_eq!(send_time("2"), None);
    }
}
