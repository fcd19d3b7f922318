//! Why a scenario could not run to the end (as opposed to what it measured: failed connections,
//! drops, gaps and refusals are results, reported in the table, not errors).

use crate::conn::ConnError;
use crate::procfs::ProcError;
use crate::protocol::ProtocolError;
use crate::token::TokenError;
use crate::worker::WorkerError;

/// A run that had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `--server-pid` names a process whose `/proc` files cannot be read.
    #[error("cannot measure the server process (--server-pid)")]
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
    PresenceTooLarge {
        /// Members in the largest channel.
        per_channel: u64,
        /// The most allowed.
        max: u64,
    },
    /// A WebSocket publisher could not connect or join its channels.
    #[error("publisher connection {index} failed")]
    Publisher {
        /// Which publisher connection.
        index: u64,
        /// What went wrong.
        #[source]
        source: ConnError,
    },
    /// Every subscriber failed, so there is nothing to measure.
    #[error("no subscriber could join (failures: {0})")]
    NoSubscribers(String),
    /// A benchmark client could not connect or join.
    #[error("{what} failed")]
    Client {
        /// Which client, doing what.
        what: String,
        /// What went wrong.
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
        /// The channel.
        channel: String,
        /// Messages missed.
        missed: u64,
        /// A retention that would do.
        retention: u64,
        /// The replay-limit setting to add, if needed.
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
        /// Channels asked for.
        channels: u64,
        /// Publisher connections asked for.
        connections: u64,
        /// Most channels per connection.
        max: u64,
    },
    /// The `pg` scenario mints a token per group and has no secret to sign them with.
    #[error(
        "the pg scenario mints a token per group: set {} to the server's JWT secret",
        crate::token::SECRET_ENV
    )]
    NoSecret,
    /// A token could not be minted.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `--database-url` cannot be used.
    #[error("--database-url: {0}")]
    DatabaseUrl(String),
    /// A statement of the `pg` scenario's setup (or its connection) failed.
    #[error("database: {what}")]
    Database {
        /// What was being done.
        what: String,
        /// What PostgreSQL (or the connection) said.
        #[source]
        source: tokio_postgres::Error,
    },
}
