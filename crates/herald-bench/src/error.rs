//! What went wrong, said so that a person can act on it: why a scenario could not run to the end
//! (as opposed to what it measured: failed connections, drops, gaps and refusals are results,
//! reported in the table, not errors), the server's HTTP refusals, and the remedies for refusals
//! and for local socket errors (open files, ports), appended to the chains of causes.

use crate::conn::ConnError;
use crate::procfs::ProcError;
use crate::protocol::ProtocolError;
use crate::token::TokenError;
use crate::worker::WorkerError;

/// A run that had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `--server-pid` names a process whose `/proc` files cannot be read.
    #[error(
        "cannot measure the server process (--server-pid): is that the server's PID, and is it running?"
    )]
    Server(#[source] ProcError),
    /// Worker processes could not be started.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The scenario does not run with the chosen `--protocol`.
    #[error(transparent)]
    WrongProtocol(#[from] ProtocolError),
    /// More presence members per channel than the benchmark tracks.
    #[error(
        "{per_channel} members in one channel is more than {max}: every member learns every key \
         (n² key deliveries); use more --channels or fewer --members"
    )]
    PresenceTooLarge { per_channel: u64, max: u64 },
    /// A WebSocket publisher could not connect or join its channels.
    #[error("publisher connection {index} failed, with {subscribers} subscribers connected")]
    Publisher {
        index: u64,
        subscribers: u64,
        #[source]
        source: ConnError,
    },
    /// Every subscriber failed, so there is nothing to measure.
    #[error("no subscriber could join (failures: {0})")]
    NoSubscribers(String),
    /// A benchmark client could not connect or join.
    #[error("{what} failed")]
    Client {
        what: String,
        #[source]
        source: ConnError,
    },
    /// The server said nothing usable where the protocol promises an answer.
    #[error("{0}")]
    Protocol(String),
    /// The join reply carried no channel position: the server keeps no history for the channel.
    #[error(
        "the server keeps no history for channel {0}: recover needs history enabled \
         (HERALD_HISTORY_ENABLED is not false) and a retention of at least --missed messages"
    )]
    NoHistory(String),
    /// The server could not replay what was missed.
    #[error(
        "the server answered recovered:false for {missed} missed messages on {channel}: it must \
         keep at least that many messages per channel for long enough; restart it with \
         HERALD_HISTORY_MAX_MESSAGES={retention} HERALD_HISTORY_MAX_AGE=10m{replay} (its default \
         retention is 100 messages for 2 minutes)"
    )]
    NotRecovered {
        channel: String,
        missed: u64,
        retention: u64,
        replay: String,
    },
    /// Publishing over HTTP failed outright.
    #[error("publishing over HTTP failed: {0}")]
    Publish(String),
    /// WebSocket publishers would have to join more channels than a connection may.
    #[error(
        "{channels} channels over {connections} WebSocket publisher connections is more than \
         {max} channels per connection: use more --connections or fewer --channels"
    )]
    PublisherChannels {
        channels: u64,
        connections: u64,
        max: u64,
    },
    /// The `pg` and `authz` scenarios mint tokens (per group, per user) and have no secret to sign
    /// them with.
    #[error(
        "the pg and authz scenarios mint their tokens: set {} to the server's JWT secret",
        crate::token::SECRET_ENV
    )]
    NoSecret,
    /// A token could not be minted.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The server is not ready for the scenario.
    #[error("{0}")]
    Setup(String),
    /// `--database-url` cannot be used.
    #[error("--database-url: {0}")]
    DatabaseUrl(String),
    /// A statement of the `pg` scenario's setup (or its connection) failed.
    #[error("database: {what}")]
    Database {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// `e` and every error under it, `: `-separated (the way `anyhow` prints `{:#}`), followed by what
/// to do about the I/O error among them, when known.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut remedy = None;
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        remedy = remedy.or_else(|| cause.downcast_ref::<std::io::Error>().and_then(io_remedy));
        source = cause.source();
    }
    if let Some(remedy) = remedy {
        out.push_str(&format!(" ({remedy})"));
    }
    out
}

/// The server refused a WebSocket upgrade, an SSE stream or a request with an HTTP status: what it
/// said, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server refused: HTTP {status} {message}{}", self.remedy().map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct Refusal {
    /// The status.
    pub status: u16,
    /// Herald's `{"error": ..}` (or `message`), else the start of the body.
    pub message: String,
}

impl Refusal {
    /// The refusal of `status` with response body `body`.
    pub fn new(status: u16, body: &str) -> Self {
        #[derive(serde::Deserialize)]
        struct Said {
            #[serde(alias = "message")]
            error: String,
        }
        let message = match serde_json::from_str::<Said>(body) {
            Ok(said) => said.error,
            Err(_) => body.trim().chars().take(160).collect(),
        };
        Self { status, message }
    }

    /// What to do about it, when the status says.
    pub fn remedy(&self) -> Option<&'static str> {
        Some(match self.status {
            429 if self.message.contains("connected users") => {
                "the server is at its max_connections (HERALD_MAX_CONNECTIONS, 10,000 by default): \
                 start it with a larger one, or open fewer connections"
            }
            429 => {
                "a limit of the server: lower the rate (see `herald bench publish --help`) or the \
                 connections per source address (--per-address; HERALD_MAX_CONNECTIONS_PER_IP)"
            }
            401 | 403 => {
                "the API key was refused: pass the server's key with --token or \
                 HERALD_BENCH_TOKEN, or set HERALD_JWT_SECRET to the server's JWT secret"
            }
            404 => "nothing there: check the path of --url, and that the server speaks --protocol",
            503 => "the server is shutting down or overloaded: try again once it is ready",
            _ => return None,
        })
    }
}

/// What to do about a failed local socket or TCP connection, when its error kind says.
pub fn io_remedy(e: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    match e.raw_os_error() {
        // EMFILE, ENFILE.
        Some(24 | 23) => {
            return Some(
                "the open-file limit is reached: raise it (ulimit -n) or lower --per-process, \
                 so that worker processes share the connections",
            );
        }
        // EADDRINUSE, EADDRNOTAVAIL: no free local port on the source address.
        Some(98 | 99) => {
            return Some(
                "no local port is left on the source address: lower --per-address (more \
                 loopback source addresses), or wait for closed connections to leave TIME_WAIT",
            );
        }
        _ => {}
    }
    Some(match e.kind() {
        ErrorKind::ConnectionRefused => "nothing listens there: start the server, or check --url",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "the server dropped the connection: did it stop or crash?"
        }
        _ => return None,
    })
}

/// `e`, followed by what to do about it when known.
pub fn io_with_remedy(e: &std::io::Error) -> String {
    match io_remedy(e) {
        Some(remedy) => format!("{e} ({remedy})"),
        None => e.to_string(),
    }
}
