//! Which wire protocol the benchmark's clients speak (`--protocol`), so that peers are measured by the
//! same generator in the same run: Phoenix v2 (Herald, Supabase Realtime), Socket.IO v4 (module
//! `socketio`), Pusher Channels (Sockudo, module `pusher`) and the naive reference server's "plain"
//! JSON protocol (module `plain`).
//!
//! This module holds what differs between them at the level of a scenario: which scenarios a
//! protocol supports, whether it needs an API key, heartbeats and answers to server pings,
//! recognising a benchmark delivery, and the publish frames and HTTP bodies. The per-protocol
//! subscribe exchanges live in `conn`.

use crate::{payload, plain, pusher, socketio};

/// A wire protocol.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Phoenix v2 (`vsn=2.0.0`): Herald and other Supabase-Realtime-compatible servers.
    #[default]
    Phoenix,
    /// Pusher Channels (protocol 7) on private channels: Sockudo, `bench/peers/sockudo`.
    Pusher,
    /// Socket.IO v4 (Engine.IO v4 over WebSocket): `bench/peers/socketio`.
    Socketio,
    /// The naive reference server's JSON protocol: `bench/peers/plain`.
    Plain,
}

/// A protocol that cannot run the chosen scenario.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The scenario is written for another protocol.
    #[error(
        "the {scenario} scenario speaks only {supported}, not --protocol {protocol} (peers are \
         compared with idle and fanout)"
    )]
    Unsupported {
        /// The scenario.
        scenario: &'static str,
        /// The protocol asked for.
        protocol: &'static str,
        /// What it supports.
        supported: &'static str,
    },
}

impl Protocol {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Phoenix => "phoenix",
            Protocol::Pusher => "pusher",
            Protocol::Socketio => "socketio",
            Protocol::Plain => "plain",
        }
    }

    /// Checks that `scenario` can run with this protocol: `peers` says whether it supports the
    /// peers' protocols (plain, socketio, pusher) besides phoenix.
    pub fn check(self, scenario: &'static str, peers: bool) -> Result<(), ProtocolError> {
        match self {
            Protocol::Phoenix => Ok(()),
            Protocol::Plain | Protocol::Socketio | Protocol::Pusher if peers => Ok(()),
            Protocol::Plain | Protocol::Socketio | Protocol::Pusher => {
                Err(ProtocolError::Unsupported {
                    scenario,
                    protocol: self.name(),
                    supported: "phoenix",
                })
            }
        }
    }

    /// Whether the server wants an API key (the peers take anyone; Pusher clients sign with the
    /// app's credentials instead).
    pub fn needs_token(self) -> bool {
        self == Protocol::Phoenix
    }

    /// Whether clients send heartbeats of their own (Phoenix); Socket.IO and Pusher clients answer
    /// the server's pings instead, and plain connections need neither.
    pub fn client_heartbeats(self) -> bool {
        self == Protocol::Phoenix
    }

    /// The answer to `text` if it is the server's keep-alive ping (Socket.IO `2`, `pusher:ping`).
    pub fn pong_for(self, text: &str) -> Option<&'static str> {
        match self {
            Protocol::Socketio => (text == socketio::PING).then_some(socketio::PONG),
            Protocol::Pusher => pusher::is_ping(text).then_some(pusher::PONG),
            Protocol::Phoenix | Protocol::Plain => None,
        }
    }

    /// The send time of a benchmark message, if `text` delivers one.
    pub fn send_time(self, text: &str) -> Option<u64> {
        match self {
            Protocol::Phoenix => payload::phoenix_send_time(text),
            Protocol::Plain => plain::send_time(text),
            Protocol::Socketio => socketio::send_time(text),
            Protocol::Pusher => pusher::send_time(text),
        }
    }

    /// The WebSocket frame publishing `payload` (JSON) to channel `name`, for the peers' protocols
    /// (Phoenix pushes need a join ref and a push ref: `payload::ws_push`; Pusher sends a client
    /// event to `private-<name>`).
    pub fn publish_frame(self, name: &str, payload: &str) -> String {
        match self {
            Protocol::Socketio => socketio::publish_frame(name, payload),
            Protocol::Pusher => pusher::client_event_frame(&pusher::channel(name), payload),
            Protocol::Phoenix | Protocol::Plain => plain::publish_frame(name, payload),
        }
    }

    /// The body of one HTTP publish request for `(channel, payload)` pairs, channel `c` being
    /// `<prefix>-<c>`.
    pub fn http_batch<'a>(
        self,
        prefix: &str,
        messages: impl IntoIterator<Item = (u64, &'a str)>,
    ) -> String {
        match self {
            Protocol::Plain => plain::http_batch(prefix, messages),
            Protocol::Socketio => socketio::http_batch(prefix, messages),
            Protocol::Pusher => pusher::batch_body(prefix, messages),
            Protocol::Phoenix => payload::http_batch(prefix, messages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_servers_pings_and_reads_every_protocols_deliveries() {
        assert_eq!(Protocol::Socketio.pong_for("2"), Some("3"));
        assert_eq!(Protocol::Pusher.pong_for(pusher::PING), Some(pusher::PONG));
        assert_eq!(Protocol::Phoenix.pong_for("2"), None);
        assert_eq!(Protocol::Plain.pong_for(pusher::PING), None);
        let phoenix = r#"[null,null,"realtime:bench-0","broadcast",{"type":"broadcast","event":"b","payload":{"t":1}}]"#;
        let plain = r#"{"channel":"bench-0","data":{"t":2}}"#;
        assert_eq!(Protocol::Phoenix.send_time(phoenix), Some(1));
        assert_eq!(Protocol::Plain.send_time(plain), Some(2));
        assert_eq!(Protocol::Pusher.send_time(plain), None);
        assert!(!Protocol::Pusher.needs_token() && !Protocol::Pusher.client_heartbeats());
    }
}
