//! Which wire protocol the benchmark's clients speak (`--protocol`), so that peers are measured by the
//! same generator in the same run: Phoenix v2 (Herald, Supabase Realtime), Socket.IO v4 (module
//! `socketio`) and the naive reference server's "plain" JSON protocol (module `plain`). Pusher
//! (Sockudo) is accepted on the command line but not spoken yet.
//!
//! This module holds what differs between them at the level of a scenario: which scenarios a
//! protocol supports, whether it needs an API key, heartbeats, recognising a benchmark delivery, and
//! the publish frames and HTTP bodies. The per-protocol subscribe exchanges live in `conn`.

use crate::{payload, phoenix, plain, socketio};

/// A wire protocol.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Phoenix v2 (`vsn=2.0.0`): Herald and other Supabase-Realtime-compatible servers.
    #[default]
    Phoenix,
    /// Pusher Channels, for Sockudo: not available yet.
    Pusher,
    /// Socket.IO v4 (Engine.IO v4 over WebSocket): `bench/peers/socketio`.
    Socketio,
    /// The naive reference server's JSON protocol: `bench/peers/plain`.
    Plain,
}

/// A protocol that cannot run the chosen scenario.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The protocol is accepted on the command line but not implemented.
    #[error(
        "--protocol {0} is not available yet: the benchmark has no client for it (use phoenix, \
         plain or socketio)"
    )]
    NotAvailable(&'static str),
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
    /// peers' protocols (plain, socketio) besides phoenix.
    pub fn check(self, scenario: &'static str, peers: bool) -> Result<(), ProtocolError> {
        match self {
            Protocol::Phoenix => Ok(()),
            Protocol::Pusher => Err(ProtocolError::NotAvailable(self.name())),
            Protocol::Plain | Protocol::Socketio if peers => Ok(()),
            Protocol::Plain | Protocol::Socketio => Err(ProtocolError::Unsupported {
                scenario,
                protocol: self.name(),
                supported: "phoenix",
            }),
        }
    }

    /// Whether the server wants an API key (the peers take anyone).
    pub fn needs_token(self) -> bool {
        matches!(self, Protocol::Phoenix | Protocol::Pusher)
    }

    /// Whether clients send heartbeats of their own (Phoenix); Socket.IO clients answer the server's
    /// pings instead, and plain connections need neither.
    pub fn client_heartbeats(self) -> bool {
        self == Protocol::Phoenix
    }

    /// The send time of a benchmark message, if `text` delivers one.
    pub fn send_time(self, text: &str) -> Option<u64> {
        match self {
            Protocol::Phoenix => phoenix::broadcast_send_time(text),
            Protocol::Plain => plain::send_time(text),
            Protocol::Socketio => socketio::send_time(text),
            Protocol::Pusher => None,
        }
    }

    /// The WebSocket frame publishing `payload` (JSON) to channel `name`, for the peers' protocols
    /// (Phoenix pushes need a join ref and a push ref: `payload::ws_push`).
    pub fn publish_frame(self, name: &str, payload: &str) -> String {
        match self {
            Protocol::Socketio => socketio::publish_frame(name, payload),
            _ => plain::publish_frame(name, payload),
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
            Protocol::Phoenix | Protocol::Pusher => payload::http_batch(prefix, messages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_check_their_protocols() {
        assert!(Protocol::Phoenix.check("recover", false).is_ok());
        assert!(Protocol::Plain.check("fanout", true).is_ok());
        assert!(Protocol::Socketio.check("idle", true).is_ok());
        let e = Protocol::Plain.check("presence", false).unwrap_err();
        assert!(
            e.to_string()
                .contains("presence scenario speaks only phoenix"),
            "{e}"
        );
        let e = Protocol::Pusher.check("idle", true).unwrap_err();
        assert!(e.to_string().contains("not available yet"), "{e}");
        assert!(Protocol::Phoenix.needs_token() && !Protocol::Plain.needs_token());
    }

    #[test]
    fn recognises_deliveries_of_each_protocol() {
        let phoenix = r#"[null,null,"realtime:bench-0","broadcast",{"type":"broadcast","event":"b","payload":{"t":1}}]"#;
        let plain = r#"{"channel":"bench-0","data":{"t":2}}"#;
        let sio = r#"42["msg",{"t":3}]"#;
        assert_eq!(Protocol::Phoenix.send_time(phoenix), Some(1));
        assert_eq!(Protocol::Plain.send_time(plain), Some(2));
        assert_eq!(Protocol::Socketio.send_time(sio), Some(3));
        assert_eq!(Protocol::Plain.send_time(sio), None);
        assert_eq!(Protocol::Socketio.send_time(plain), None);
        assert!(
            Protocol::Socketio
                .publish_frame("r", "{}")
                .starts_with("42[")
        );
        assert!(
            Protocol::Plain
                .http_batch("bench", [(0, "{}")])
                .starts_with("[{\"channel\"")
        );
        assert!(
            Protocol::Phoenix
                .http_batch("bench", [(0, "{}")])
                .starts_with("{\"messages\"")
        );
    }
}
