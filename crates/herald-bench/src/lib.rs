//! Load generator behind `herald bench`: opens many Phoenix v2 WebSocket clients against a Herald (or
//! any Supabase-Realtime-compatible) server on this machine and measures it. With `--protocol plain`,
//! `--protocol socketio` or `--protocol pusher`, `idle` and `fanout` measure the peer servers of
//! `bench/peers/` (the naive Rust server, Socket.IO v4, Sockudo) with the same clients and figures.
//!
//! Scenarios:
//! - `idle`: N connections joined over C channels and held with heartbeats; reports connect rate and,
//!   with `--server-pid`, the server's RSS per connection, plus the kernel's TCP buffer memory per
//!   connection, separately.
//! - `fanout`: N subscribers over C channels, publishers (WebSocket or HTTP) sending R msgs/s for S
//!   seconds; reports deliveries, drops, end-to-end latency percentiles and server CPU per delivery.
//! - `sse`: N Server-Sent Events streams over T topics, held open; reports the open rate and the
//!   server's and the kernel's memory per stream (optionally delivery, with `--publish-rate`).
//! - `recover`: a client away while M messages are published comes back with `recover`; reports the
//!   replay time and rate, and checks that the replay has no gap and no duplicate.
//! - `publish`: publishers (HTTP batches or WebSocket pushes with ack) sending for S seconds at R
//!   msgs/s or as fast as the server accepts, with N subscribers; reports accepted and delivered
//!   messages per second and server CPU.
//! - `presence`: N members over C channels join with presence on and track at once; reports the time
//!   until every member has seen every key of its channel, and the presence frames received.
//! - `churn`: connect → join → leave → close cycles at R per second for S seconds; reports completed
//!   cycles per second, failures, and the server's RSS before, during and after.
//! - `pg`: Postgres Changes of a server started with a database: N subscribers in G claims groups
//!   (optionally with row-level security or a filter per group) while writers insert rows into a
//!   table of the benchmark's own at R rows/s in transactions of T rows for S seconds; reports rows
//!   inserted, changes ingested per second (the server's counter), deliveries against expectations,
//!   commit-to-client latency and server CPU.
//!
//! Traffic (the `pg` scenario's database connections included) goes to loopback addresses only, every count and duration is bounded, and every run stops
//! by itself. Fleets larger than one process can hold are spread over worker processes (module
//! `worker`).
//!
//! This file owns the command-line surface and the dispatch to the scenarios.

mod churn;
mod clock;
mod conn;
mod error;
mod fanout;
mod fleet;
mod http;
mod idle;
mod pace;
mod payload;
mod pg;
mod plain;
mod presence;
mod procfs;
mod progress;
mod protocol;
mod publish;
mod pusher;
mod recover;
mod report;
mod socketio;
mod sse;
mod sse_client;
mod stats;
mod target;
mod token;
mod worker;

#[cfg(test)]
mod e2e;

use std::sync::Arc;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::error::ScenarioError;
use crate::fleet::{FleetSpec, Transport};
use crate::payload::BENCH;
pub use crate::protocol::Protocol;
use crate::target::Target;

/// `herald bench`: measure a server on this machine.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Server base URL; loopback addresses only (127.0.0.0/8, ::1, localhost).
    #[arg(long, default_value = "http://127.0.0.1:4000", global = true)]
    pub url: String,
    /// API key (JWT). Default: env HERALD_BENCH_TOKEN, else a service_role token minted from env
    /// HERALD_JWT_SECRET. Not used with --protocol plain or socketio.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Also print the results as one JSON object, the last line on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// PID of the server process, to measure its memory (idle, sse, churn) or CPU (fanout, publish,
    /// presence, churn, sse with --publish-rate) from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Wire protocol of the clients: phoenix (Herald), plain (bench/peers/plain), socketio
    /// (bench/peers/socketio) or pusher (Sockudo, bench/peers/sockudo), for idle and fanout; the
    /// other scenarios speak phoenix only.
    #[arg(long, value_enum, default_value_t = Protocol::Phoenix, global = true)]
    pub protocol: Protocol,
    /// Pusher app id (--protocol pusher): the HTTP publisher posts to /apps/<id>/batch_events.
    #[arg(long, default_value = pusher::DEFAULT_APP_ID, global = true)]
    pub pusher_app_id: String,
    /// Pusher app key (--protocol pusher): clients connect to /app/<key>.
    #[arg(long, default_value = pusher::DEFAULT_KEY, global = true)]
    pub pusher_key: String,
    /// Pusher app secret (--protocol pusher): clients sign their private-channel subscriptions and
    /// HTTP publishes with it.
    #[arg(long, default_value = pusher::DEFAULT_SECRET, global = true)]
    pub pusher_secret: String,
}

/// What to measure.
#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// Open many connections, join them to channels and hold them idle: connect rate and memory per
    /// connection.
    Idle {
        /// Connections to open.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        connections: u64,
        /// Channels to spread them over (connection i joins `realtime:bench-<i % C>`).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        channels: u64,
        /// Seconds to hold the connections once all are joined.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        hold: u64,
        /// How clients are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Publish at a fixed rate to channels with many subscribers: throughput, drops, end-to-end
    /// latency and server CPU per delivery.
    Fanout {
        /// Subscribers to open.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        subscribers: u64,
        /// Channels (subscriber i joins `realtime:bench-<i % C>`; message k goes to channel k % C).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        channels: u64,
        /// Messages per second published, in total over all channels.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rate: u64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        duration: u64,
        /// Size of each message payload in bytes (`{"t":...,"pad":"xxx"}`; at least about 25).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
        payload: u64,
        /// How messages are published.
        #[arg(long, value_enum, default_value_t = PublisherKind::Ws)]
        publisher: PublisherKind,
        /// Most messages per second one WebSocket publisher connection sends: more publisher
        /// connections are opened, up to one per channel, to reach --rate. Keep it under the
        /// server's per-connection message limit (Herald: 1,000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        publisher_rate: u64,
        /// How clients are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Open many Server-Sent Events streams (`GET /sse`) and hold them: open rate and memory per
    /// stream; optionally delivery to them.
    ///
    /// Streams count against the server's max_connections (Herald: 10,000 by default; raise it with
    /// HERALD_MAX_CONNECTIONS). `/sse` is requested at the server's root, whatever the --url path.
    Sse {
        /// Streams to open.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        streams: u64,
        /// Topics to spread them over (stream i follows `bench-<i % T>`).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        topics: u64,
        /// Seconds to hold the streams once all are open.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        hold: u64,
        /// Also publish this many messages per second (in total, over HTTP, message k to topic
        /// k % T) during the hold (at least 1 s), and measure delivery to the streams.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        publish_rate: Option<u64>,
        /// Size of each published payload in bytes (with --publish-rate).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
        payload: u64,
        /// How streams are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Replay what a client missed: time from its recovering join to the last replayed message.
    ///
    /// The server must keep at least --missed messages per channel: its default retention is 100
    /// messages for 2 minutes, so start it with e.g. HERALD_HISTORY_MAX_MESSAGES=20000
    /// HERALD_HISTORY_MAX_AGE=10m (and, above 10,000 missed, HERALD_MAX_REPLAY_MESSAGES).
    Recover {
        /// Messages published while the client is away, replayed when it comes back.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        missed: u64,
        /// Size of each message payload in bytes.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
        payload: u64,
        /// Runs, each on a new channel `bench-recover-<id>-<run>`.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Messages per HTTP request while publishing what is missed (the server takes at most
        /// max_http_batch, 1,000 by default).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        batch: u64,
        /// Most messages per second published while the client is away; keep it under the
        /// server's max_http_messages_per_second (10,000 by default). A batch refused with 429 is
        /// sent again.
        #[arg(long, default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        publish_rate: u64,
    },
    /// Publish throughput with history on: accepted and delivered messages per second and server
    /// CPU.
    ///
    /// The server limits HTTP publishing to max_http_messages_per_second (10,000 per node by
    /// default; start it with HERALD_MAX_HTTP_MESSAGES_PER_SECOND=1000000 to measure past that) and
    /// each WebSocket connection to max_messages_per_second (1,000 by default; going over closes
    /// the channel). Refusals are counted as errors.
    Publish {
        /// Messages per second in total; 0: as fast as the server accepts them (HTTP: each
        /// connection sends its next batch as soon as the previous one is answered; WebSocket:
        /// each connection at --publisher-rate).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
        rate: u64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        duration: u64,
        /// Size of each message payload in bytes (`{"t":...,"pad":"xxx"}`; at least about 25).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
        payload: u64,
        /// WebSocket subscribers counting deliveries (subscriber i joins
        /// `realtime:bench-pub-<i % C>`); 0 measures publishing alone.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        subscribers: u64,
        /// Channels `bench-pub-<c>`; publisher j sends to the channels c with c % connections == j
        /// in turn.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        channels: u64,
        /// How messages are published.
        #[arg(long, value_enum, default_value_t = PublisherKind::Http)]
        publisher: PublisherKind,
        /// Concurrent publisher connections (HTTP/1.1 keep-alive or WebSocket).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        connections: u64,
        /// Messages per HTTP request: with --rate 0 every request carries this many; when paced, a
        /// request carries the messages due, up to this many (the server takes at most
        /// max_http_batch, 1,000 by default).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        batch: u64,
        /// Most messages per second one WebSocket publisher connection sends; keep it under the
        /// server's max_messages_per_second (1,000 by default).
        #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        publisher_rate: u64,
        /// How subscribers are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Presence storm: members join with presence on and track at once; time until every member
    /// has seen every key of its channel, and presence frames received.
    ///
    /// Members first open their WebSockets (counting against the server's max_connections); then
    /// all join `bench-presence-<run>-<i % C>` with presence key `m<i>` and track together.
    Presence {
        /// Members (member i has key `m<i>`); at most 20,000 per channel.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=200_000))]
        members: u64,
        /// Channels to spread them over (member i joins channel i % C).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        channels: u64,
        /// Longest wait, in seconds, for every member to see every key (the wait also ends when
        /// nothing arrived for 5 s).
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        timeout: u64,
        /// How members are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Connection churn: connect → join → leave → close cycles at a fixed rate; completed cycles
    /// per second, failures, and server RSS before, during and after (with --server-pid).
    Churn {
        /// Cycles started per second.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        rate: u64,
        /// Seconds of starting cycles.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        duration: u64,
        /// Channels the cycles join in turn (cycle k joins `realtime:bench-churn-<k % C>`).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        channels: u64,
        /// Most cycles under way at once; when all are busy, the next cycle waits.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        concurrency: u64,
        /// Cycles per loopback source address (127.0.0.2, 127.0.0.3, ...), so that closed
        /// connections waiting in TIME_WAIT do not use up one address's ports.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=28_000))]
        per_address: u64,
    },
    /// Postgres Changes: rows inserted into `herald_bench_pg` reach subscribers in claims groups;
    /// rows and changes ingested per second, deliveries, commit-to-client latency and server CPU.
    ///
    /// The server must run with a database (`herald serve --database-url ...`), and
    /// HERALD_JWT_SECRET must hold its secret: each group's token is minted from it. The benchmark
    /// creates the table, the roles `authenticated`, `anon` and `service_role` when missing, adds
    /// the table to publication `supabase_realtime`, and empties it before the run. Writers commit
    /// with synchronous_commit on, so that each commit reaches the replication stream at once.
    Pg {
        /// The database the server streams from (loopback or Unix socket only).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Subscribers (subscriber i joins `realtime:pg-bench-<i>` as a member of group i % G); 0
        /// measures ingestion alone.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        subscribers: u64,
        /// Claims groups: group g's token has role `authenticated`, `sub` = `bench-g<g>` and
        /// `grp` = g; rows cycle over the groups.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        groups: u64,
        /// Row-level security on the table, with a policy letting each group see only its rows.
        #[arg(long)]
        rls: bool,
        /// Each subscriber's binding filters on its group (`grp=eq.<g>`).
        #[arg(long)]
        filter: bool,
        /// Rows per second in total; 0: as fast as the database takes them.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
        rows_per_sec: u64,
        /// Rows per transaction (one multi-row INSERT each).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        rows_per_tx: u64,
        /// Seconds of inserting.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        duration: u64,
        /// Size of each row's `body` in bytes.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=65_536))]
        payload: u64,
        /// Writer connections sharing the rate (at most one per row per second when paced).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
        writers: u64,
        /// How subscribers are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
}

/// How messages are published in `fanout` and `publish`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherKind {
    /// v2 text broadcast pushes over WebSocket connections joined to the channels (the peers'
    /// protocols: their publish frames).
    Ws,
    /// `POST /api/broadcast` batches over HTTP/1.1 keep-alive connections (the peers:
    /// `POST /publish`).
    Http,
}

/// How the benchmark's clients are opened.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Connections being opened at the same time (in total, when split over worker processes).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Connections per client process; larger fleets are split over worker processes. Default: the
    /// open-file limit minus 1,000 (19,000 with the usual 20,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub per_process: Option<u64>,
    /// Connections per loopback source address (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=28_000))]
    pub per_address: u64,
    /// Run as a worker of a parent benchmark process.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Worker: global index of its first connection.
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_base: u64,
    /// Worker: number of connections it opens.
    #[arg(long, hide = true)]
    pub worker_count: Option<u64>,
    /// Worker: the parent's clock epoch, wall-clock ns since 1970.
    #[arg(long, hide = true)]
    pub worker_epoch_ns: Option<u64>,
}

impl Scenario {
    /// How the scenario's fleet is opened; `None` for a scenario without one.
    fn clients(&self) -> Option<&ClientOpts> {
        match self {
            Scenario::Idle { clients, .. }
            | Scenario::Fanout { clients, .. }
            | Scenario::Sse { clients, .. }
            | Scenario::Publish { clients, .. }
            | Scenario::Presence { clients, .. }
            | Scenario::Pg { clients, .. } => Some(clients),
            Scenario::Recover { .. } | Scenario::Churn { .. } => None,
        }
    }

    /// The scenario's name.
    fn name(&self) -> &'static str {
        match self {
            Scenario::Idle { .. } => "idle",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Sse { .. } => "sse",
            Scenario::Recover { .. } => "recover",
            Scenario::Publish { .. } => "publish",
            Scenario::Presence { .. } => "presence",
            Scenario::Churn { .. } => "churn",
            Scenario::Pg { .. } => "pg",
        }
    }

    /// Whether the scenario runs with the peers' protocols (plain, socketio) too.
    fn runs_on_peers(&self) -> bool {
        matches!(self, Scenario::Idle { .. } | Scenario::Fanout { .. })
    }

    /// The fleet a worker process opens a share of (its channel prefix may depend on the run's
    /// clock).
    fn fleet(&self, clock: &Clock) -> Option<Shape> {
        let shape = |transport, prefix: &str, channels: &u64, count: &u64, record_latency| Shape {
            transport,
            prefix: prefix.to_owned(),
            channels: *channels,
            count: *count,
            record_latency,
        };
        match self {
            Scenario::Idle {
                connections,
                channels,
                ..
            } => Some(shape(Transport::Ws, BENCH, channels, connections, false)),
            Scenario::Fanout {
                subscribers,
                channels,
                ..
            } => Some(shape(Transport::Ws, BENCH, channels, subscribers, true)),
            Scenario::Sse {
                streams,
                topics,
                publish_rate,
                ..
            } => Some(shape(
                Transport::Sse,
                BENCH,
                topics,
                streams,
                publish_rate.is_some(),
            )),
            Scenario::Publish {
                subscribers,
                channels,
                ..
            } => Some(shape(
                Transport::Ws,
                publish::PREFIX,
                channels,
                subscribers,
                true,
            )),
            Scenario::Presence {
                members, channels, ..
            } => Some(shape(
                Transport::Presence { members: *members },
                &presence::prefix(clock),
                channels,
                members,
                true,
            )),
            Scenario::Pg {
                subscribers,
                groups,
                rls,
                filter,
                ..
            } => Some(shape(
                Transport::Pg(pg::PgJoin {
                    groups: *groups,
                    filter: *filter,
                    per_group: *rls || *filter,
                }),
                pg::PREFIX,
                groups,
                subscribers,
                true,
            )),
            Scenario::Recover { .. } | Scenario::Churn { .. } => None,
        }
    }
}

/// What a scenario's fleet is: transport, channel prefix, channels, connections in all processes,
/// and whether deliveries are timed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    transport: Transport,
    prefix: String,
    channels: u64,
    count: u64,
    record_latency: bool,
}

/// What every scenario needs to know about the run.
#[derive(Debug)]
pub(crate) struct Context {
    pub target: Target,
    pub protocol: Protocol,
    pub pusher: pusher::App,
    pub token: String,
    pub ws_url: String,
    pub server_pid: Option<u32>,
    pub clock: Clock,
    pub per_process: u64,
    pub concurrency: usize,
    pub per_address: u64,
}

impl Context {
    /// A fleet of `count` connections over the channels `<prefix>-<0..channels>`, starting at index 0.
    pub fn fleet_spec(
        &self,
        transport: Transport,
        prefix: &str,
        channels: u64,
        count: u64,
        record_latency: bool,
    ) -> FleetSpec {
        FleetSpec {
            target: self.target.clone(),
            token: self.token.clone(),
            transport,
            protocol: self.protocol,
            pusher: self.pusher.clone(),
            prefix: prefix.to_owned(),
            channels,
            base: 0,
            count,
            concurrency: self.concurrency,
            per_address: self.per_address,
            record_latency,
            clock: self.clock,
        }
    }
}

/// The default connections per process: the open-file limit minus room for everything else.
fn default_per_process() -> u64 {
    procfs::open_files_limit()
        .map(|limit| limit.saturating_sub(1_000))
        .unwrap_or(19_000)
        .max(100)
}

/// A worker's share of `--concurrency`, so that all workers together open about as many
/// connections at once as one process would.
fn worker_concurrency(total_concurrency: usize, count: u64, total: u64) -> usize {
    let share = (total_concurrency as u128 * u128::from(count)).div_ceil(u128::from(total.max(1)));
    usize::try_from(share)
        .unwrap_or(total_concurrency)
        .clamp(1, total_concurrency.max(1))
}

/// Runs the chosen scenario and prints its report (a table, and with `--json` a JSON line last).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let protocol = args.protocol;
    protocol
        .check(args.scenario.name(), args.scenario.runs_on_peers())
        .map_err(ScenarioError::from)?;
    // The peers take anyone: they need no key, and none is sent to them.
    let token = if protocol.needs_token() {
        token::resolve(args.token.as_deref())?
    } else {
        String::new()
    };
    let app = pusher::App {
        id: args.pusher_app_id,
        key: args.pusher_key,
        secret: args.pusher_secret,
    };
    let clients = args.scenario.clients().cloned();
    let ws_url = target.ws_url_for(protocol, &token, &app);
    let (concurrency, per_address) = match &args.scenario {
        Scenario::Churn {
            concurrency,
            per_address,
            ..
        } => (*concurrency, *per_address),
        _ => clients
            .as_ref()
            .map_or((1, 20_000), |c| (c.concurrency, c.per_address)),
    };
    let concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);

    if let Some(clients) = clients.as_ref().filter(|c| c.worker) {
        let clock = clients
            .worker_epoch_ns
            .map_or_else(Clock::start, Clock::join);
        if let Some(shape) = args.scenario.fleet(&clock) {
            let count = clients.worker_count.unwrap_or(shape.count);
            let spec = FleetSpec {
                target,
                token,
                transport: shape.transport,
                protocol,
                pusher: app,
                prefix: shape.prefix,
                channels: shape.channels,
                base: clients.worker_base,
                count,
                concurrency: worker_concurrency(concurrency, count, shape.count),
                per_address,
                record_latency: shape.record_latency,
                clock,
            };
            return worker::serve(spec).await.context("worker output");
        }
    }

    let ctx = Context {
        target,
        protocol,
        pusher: app,
        token,
        ws_url,
        server_pid: args.server_pid,
        clock: Clock::start(),
        per_process: clients
            .as_ref()
            .and_then(|c| c.per_process)
            .unwrap_or_else(default_per_process),
        concurrency,
        per_address,
    };
    let report = match args.scenario {
        Scenario::Idle {
            connections,
            channels,
            hold,
            ..
        } => {
            idle::run(
                &ctx,
                idle::IdleOpts {
                    connections,
                    channels,
                    hold,
                },
            )
            .await?
        }
        Scenario::Fanout {
            subscribers,
            channels,
            rate,
            duration,
            payload,
            publisher,
            publisher_rate,
            ..
        } => {
            let opts = fanout::FanoutOpts {
                subscribers,
                channels,
                rate,
                duration,
                payload: usize::try_from(payload).unwrap_or(usize::MAX),
                publisher,
                publisher_rate,
            };
            fanout::run(&ctx, opts).await?
        }
        Scenario::Sse {
            streams,
            topics,
            hold,
            publish_rate,
            payload,
            ..
        } => {
            let opts = sse::SseOpts {
                streams,
                topics,
                hold,
                publish_rate,
                payload: usize::try_from(payload).unwrap_or(usize::MAX),
            };
            sse::run(&ctx, opts).await?
        }
        Scenario::Recover {
            missed,
            payload,
            runs,
            batch,
            publish_rate,
        } => {
            let opts = recover::RecoverOpts {
                missed,
                payload: usize::try_from(payload).unwrap_or(usize::MAX),
                runs,
                batch,
                publish_rate,
            };
            recover::run(&ctx, opts).await?
        }
        Scenario::Publish {
            rate,
            duration,
            payload,
            subscribers,
            channels,
            publisher,
            connections,
            batch,
            publisher_rate,
            ..
        } => {
            let opts = publish::PublishOpts {
                rate,
                duration,
                payload: usize::try_from(payload).unwrap_or(usize::MAX),
                subscribers,
                channels,
                publisher,
                connections,
                batch,
                publisher_rate,
            };
            publish::run(Arc::new(ctx), opts).await?
        }
        Scenario::Presence {
            members,
            channels,
            timeout,
            ..
        } => {
            let opts = presence::PresenceOpts {
                members,
                channels,
                timeout,
            };
            presence::run(&ctx, opts).await?
        }
        Scenario::Churn {
            rate,
            duration,
            channels,
            ..
        } => {
            let opts = churn::ChurnOpts {
                rate,
                duration,
                channels,
            };
            churn::run(Arc::new(ctx), opts).await?
        }
        Scenario::Pg {
            database_url,
            subscribers,
            groups,
            rls,
            filter,
            rows_per_sec,
            rows_per_tx,
            duration,
            payload,
            writers,
            ..
        } => {
            let opts = pg::PgOpts {
                database_url,
                subscribers,
                groups,
                rls,
                filter,
                rows_per_sec,
                rows_per_tx,
                duration,
                payload: usize::try_from(payload).unwrap_or(usize::MAX),
                writers,
            };
            pg::run(&ctx, opts).await?
        }
    };
    print!("{}", report.table());
    if args.json {
        println!("{}", report.to_json_line());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Cmd {
        Bench(BenchArgs),
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let Cli { cmd: Cmd::Bench(b) } = Cli::try_parse_from(args)?;
        Ok(b)
    }

    #[test]
    fn parses_the_documented_command_lines() {
        let b = parse(&[
            "herald",
            "bench",
            "idle",
            "--connections",
            "200",
            "--channels",
            "10",
            "--hold",
            "3",
            "--json",
        ])
        .unwrap();
        assert!(b.json);
        assert!(matches!(
            b.scenario,
            Scenario::Idle {
                connections: 200,
                channels: 10,
                hold: 3,
                ..
            }
        ));
        assert_eq!(b.url, "http://127.0.0.1:4000");

        let b = parse(&[
            "herald",
            "bench",
            "--server-pid",
            "42",
            "fanout",
            "--subscribers",
            "100",
            "--channels",
            "4",
            "--rate",
            "100",
            "--duration",
            "3",
            "--payload",
            "256",
            "--publisher",
            "http",
            "--url",
            "http://127.0.0.1:5000",
        ])
        .unwrap();
        assert_eq!(b.server_pid, Some(42));
        assert_eq!(b.url, "http://127.0.0.1:5000");
        assert!(matches!(
            b.scenario,
            Scenario::Fanout {
                subscribers: 100,
                rate: 100,
                payload: 256,
                publisher: PublisherKind::Http,
                ..
            }
        ));
    }

    #[test]
    fn worker_flags_can_follow_the_original_command_line() {
        let b = parse(&[
            "herald",
            "bench",
            "--json",
            "idle",
            "--connections",
            "50000",
            "--server-pid",
            "7",
            "--worker",
            "--worker-base",
            "19000",
            "--worker-count",
            "19000",
            "--worker-epoch-ns",
            "123",
        ])
        .unwrap();
        let c = b.scenario.clients().unwrap();
        assert!(c.worker);
        assert_eq!(
            (c.worker_base, c.worker_count, c.worker_epoch_ns),
            (19_000, Some(19_000), Some(123))
        );
    }

    #[test]
    fn workers_share_the_concurrency() {
        assert_eq!(worker_concurrency(200, 19_000, 19_000), 200);
        assert_eq!(worker_concurrency(200, 10_000, 30_000), 67);
        assert_eq!(worker_concurrency(200, 1, 1_000_000), 1);
        assert_eq!(worker_concurrency(1, 5, 10), 1);
    }

    #[test]
    fn parses_the_new_scenarios() {
        let b = parse(&[
            "herald",
            "bench",
            "sse",
            "--streams",
            "200",
            "--topics",
            "10",
            "--hold",
            "5",
            "--server-pid",
            "9",
        ])
        .unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Sse {
                streams: 200,
                topics: 10,
                hold: 5,
                publish_rate: None,
                ..
            }
        ));
        assert_eq!(b.server_pid, Some(9));
        let clock = Clock::start();
        assert_eq!(
            b.scenario.fleet(&clock),
            Some(Shape {
                transport: Transport::Sse,
                prefix: BENCH.to_owned(),
                channels: 10,
                count: 200,
                record_latency: false
            })
        );

        let b = parse(&[
            "herald", "bench", "recover", "--missed", "1000", "--runs", "2",
        ])
        .unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Recover {
                missed: 1_000,
                runs: 2,
                payload: 100,
                batch: 500,
                ..
            }
        ));
        assert!(b.scenario.clients().is_none() && b.scenario.fleet(&clock).is_none());
        let b = parse(&["herald", "bench", "recover"]).unwrap();
        assert!(matches!(b.scenario, Scenario::Recover { runs: 5, .. }));

        let b = parse(&[
            "herald",
            "bench",
            "publish",
            "--rate",
            "1000",
            "--duration",
            "3",
            "--payload",
            "100",
            "--subscribers",
            "10",
            "--publisher",
            "ws",
            "--connections",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Publish {
                rate: 1_000,
                duration: 3,
                subscribers: 10,
                publisher: PublisherKind::Ws,
                connections: 2,
                batch: 1,
                ..
            }
        ));
        assert_eq!(
            b.scenario.fleet(&clock),
            Some(Shape {
                transport: Transport::Ws,
                prefix: "bench-pub".to_owned(),
                channels: 10,
                count: 10,
                record_latency: true
            })
        );
        let b = parse(&["herald", "bench", "publish"]).unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Publish {
                rate: 0,
                publisher: PublisherKind::Http,
                ..
            }
        ));
    }

    #[test]
    fn counts_are_bounded() {
        assert!(parse(&["herald", "bench", "idle", "--connections", "0"]).is_err());
        assert!(parse(&["herald", "bench", "idle", "--connections", "2000000"]).is_err());
        assert!(parse(&["herald", "bench", "fanout", "--duration", "100000"]).is_err());
        assert!(parse(&["herald", "bench", "fanout", "--rate", "0"]).is_err());
        assert!(parse(&["herald", "bench", "sse", "--streams", "0"]).is_err());
        assert!(parse(&["herald", "bench", "sse", "--publish-rate", "0"]).is_err());
        assert!(parse(&["herald", "bench", "recover", "--runs", "0"]).is_err());
        assert!(parse(&["herald", "bench", "recover", "--batch", "1001"]).is_err());
        assert!(parse(&["herald", "bench", "recover", "--concurrency", "5"]).is_err());
        assert!(parse(&["herald", "bench", "publish", "--batch", "1001"]).is_err());
        assert!(parse(&["herald", "bench", "publish", "--duration", "0"]).is_err());
        assert!(parse(&["herald", "bench", "publish", "--connections", "0"]).is_err());
        assert!(parse(&["herald", "bench", "presence", "--members", "0"]).is_err());
        assert!(parse(&["herald", "bench", "presence", "--timeout", "0"]).is_err());
        assert!(parse(&["herald", "bench", "churn", "--rate", "0"]).is_err());
        assert!(parse(&["herald", "bench", "churn", "--rate", "20000"]).is_err());
        assert!(parse(&["herald", "bench", "churn", "--duration", "0"]).is_err());
        assert!(parse(&["herald", "bench", "churn", "--worker"]).is_err());
        assert!(parse(&["herald", "bench", "idle", "--protocol", "mqtt"]).is_err());
    }

    #[test]
    fn parses_protocols_and_the_presence_and_churn_scenarios() {
        let b = parse(&["herald", "bench", "idle"]).unwrap();
        assert_eq!(b.protocol, Protocol::Phoenix);
        for (flag, protocol) in [
            ("plain", Protocol::Plain),
            ("socketio", Protocol::Socketio),
            ("pusher", Protocol::Pusher),
            ("phoenix", Protocol::Phoenix),
        ] {
            let b = parse(&["herald", "bench", "fanout", "--protocol", flag]).unwrap();
            assert_eq!(b.protocol, protocol);
        }
        let b = parse(&["herald", "bench", "--protocol", "plain", "idle"]).unwrap();
        assert_eq!(b.protocol, Protocol::Plain);
        assert!(b.scenario.runs_on_peers());

        // The Pusher app defaults to the one in bench/peers/sockudo/config.json.
        let b = parse(&["herald", "bench", "--protocol", "pusher", "idle"]).unwrap();
        assert_eq!(
            (
                b.pusher_app_id.as_str(),
                b.pusher_key.as_str(),
                b.pusher_secret.as_str()
            ),
            (
                pusher::DEFAULT_APP_ID,
                pusher::DEFAULT_KEY,
                pusher::DEFAULT_SECRET
            )
        );
        let b = parse(&[
            "herald",
            "bench",
            "fanout",
            "--protocol",
            "pusher",
            "--pusher-app-id",
            "7",
            "--pusher-key",
            "k",
            "--pusher-secret",
            "s",
        ])
        .unwrap();
        assert_eq!(
            (
                b.pusher_app_id.as_str(),
                b.pusher_key.as_str(),
                b.pusher_secret.as_str()
            ),
            ("7", "k", "s")
        );

        let b = parse(&[
            "herald",
            "bench",
            "presence",
            "--members",
            "500",
            "--channels",
            "5",
            "--concurrency",
            "50",
        ])
        .unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Presence {
                members: 500,
                channels: 5,
                timeout: 120,
                ..
            }
        ));
        assert!(!b.scenario.runs_on_peers());
        let clock = Clock::start();
        let shape = b.scenario.fleet(&clock).unwrap();
        assert_eq!(shape.transport, Transport::Presence { members: 500 });
        assert_eq!(shape.prefix, presence::prefix(&clock));
        assert_eq!((shape.channels, shape.count), (5, 500));
        // A worker joins the parent's epoch, so it finds the same channels.
        let worker_clock = Clock::join(clock.epoch_unix_ns());
        assert_eq!(
            b.scenario.fleet(&worker_clock).unwrap().prefix,
            shape.prefix
        );

        let b = parse(&[
            "herald",
            "bench",
            "churn",
            "--rate",
            "50",
            "--duration",
            "3",
            "--server-pid",
            "4",
        ])
        .unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Churn {
                rate: 50,
                duration: 3,
                channels: 100,
                concurrency: 200,
                per_address: 20_000,
            }
        ));
        assert_eq!(b.scenario.name(), "churn");
        assert!(b.scenario.clients().is_none() && b.scenario.fleet(&clock).is_none());
    }

    #[test]
    fn parses_the_pg_scenario() {
        let b = parse(&[
            "herald",
            "bench",
            "pg",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "--subscribers",
            "50",
            "--groups",
            "5",
            "--rls",
            "--rows-per-sec",
            "200",
            "--duration",
            "2",
            "--server-pid",
            "3",
        ])
        .unwrap();
        assert!(matches!(
            &b.scenario,
            Scenario::Pg {
                subscribers: 50,
                groups: 5,
                rls: true,
                filter: false,
                rows_per_sec: 200,
                rows_per_tx: 100,
                duration: 2,
                payload: 100,
                writers: 4,
                database_url,
                ..
            } if database_url == "postgres://postgres@127.0.0.1:5432/postgres"
        ));
        assert_eq!(b.server_pid, Some(3));
        assert_eq!(b.scenario.name(), "pg");
        assert!(!b.scenario.runs_on_peers());
        let clock = Clock::start();
        assert_eq!(
            b.scenario.fleet(&clock),
            Some(Shape {
                transport: Transport::Pg(pg::PgJoin {
                    groups: 5,
                    filter: false,
                    per_group: true
                }),
                prefix: pg::PREFIX.to_owned(),
                channels: 5,
                count: 50,
                record_latency: true
            })
        );
        let url = ["--database-url", "postgres://127.0.0.1/x"];
        let b = parse(
            &[
                &["herald", "bench", "pg", "--subscribers", "0", "--filter"][..],
                &url[..],
            ]
            .concat(),
        )
        .unwrap();
        assert!(matches!(
            b.scenario,
            Scenario::Pg {
                subscribers: 0,
                filter: true,
                rows_per_sec: 0,
                ..
            }
        ));
        for bad in [
            &["--groups", "0"][..],
            &["--rows-per-tx", "0"],
            &["--rows-per-tx", "10001"],
            &["--duration", "0"],
            &["--payload", "70000"],
            &["--writers", "0"],
        ] {
            let args = [&["herald", "bench", "pg"][..], &url[..], bad].concat();
            assert!(parse(&args).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn refuses_protocols_a_scenario_does_not_speak() {
        for (args, want) in [
            (
                &["herald", "bench", "--protocol", "pusher", "churn"][..],
                "churn scenario speaks only phoenix",
            ),
            (
                &["herald", "bench", "--protocol", "plain", "recover"][..],
                "recover scenario speaks only phoenix",
            ),
            (
                &["herald", "bench", "--protocol", "socketio", "presence"][..],
                "presence scenario speaks only phoenix",
            ),
            (
                &[
                    "herald",
                    "bench",
                    "--protocol",
                    "plain",
                    "pg",
                    "--database-url",
                    "postgres://127.0.0.1/x",
                ][..],
                "pg scenario speaks only phoenix",
            ),
        ] {
            let e = run(parse(args).unwrap()).await.unwrap_err();
            assert!(format!("{e:#}").contains(want), "{e:#}");
        }
    }
}
