//! Load generator behind `herald bench`: many clients (Phoenix v2 WebSockets, SSE streams; with
//! `--protocol`, those of the peers in `bench/peers/`) against a server on this machine, measured.
//! Traffic goes to loopback only, every count and duration is bounded, and fleets larger than one
//! process can hold are spread over worker processes. This file owns the command line (each
//! scenario's help says what it measures) and the dispatch to the scenarios.

mod authz;
mod churn;
mod clock;
mod conn;
mod error;
mod fanout;
mod fleet;
mod http;
mod idle;
mod measure;
mod payload;
mod pg;
mod presence;
mod procfs;
mod protocol;
mod publish;
mod publisher;
mod recover;
mod report;
mod sse;
mod stats;
mod target;
mod token;
mod worker;

#[cfg(test)]
mod e2e;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::error::ScenarioError;
use crate::fleet::{FleetSpec, Transport};
pub use crate::protocol::Protocol;
use crate::protocol::{App, DEFAULT_APP_ID, DEFAULT_KEY, DEFAULT_SECRET};
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
    #[arg(long, default_value = DEFAULT_APP_ID, global = true)]
    pub pusher_app_id: String,
    /// Pusher app key (--protocol pusher): clients connect to /app/<key>.
    #[arg(long, default_value = DEFAULT_KEY, global = true)]
    pub pusher_key: String,
    /// Pusher app secret (--protocol pusher): clients sign their private-channel subscriptions and
    /// HTTP publishes with it.
    #[arg(long, default_value = DEFAULT_SECRET, global = true)]
    pub pusher_secret: String,
}

/// What to measure.
#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// Open many connections, join them to channels and hold them idle: connect rate and memory per
    /// connection.
    Idle {
        #[command(flatten)]
        opts: idle::IdleOpts,
        /// How clients are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Publish at a fixed rate to channels with many subscribers: throughput, drops, end-to-end
    /// latency and server CPU per delivery.
    Fanout {
        #[command(flatten)]
        opts: fanout::FanoutOpts,
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
        #[command(flatten)]
        opts: sse::SseOpts,
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
        #[command(flatten)]
        opts: recover::RecoverOpts,
    },
    /// Publish throughput with history on: accepted and delivered messages per second and server
    /// CPU.
    ///
    /// The server limits HTTP publishing to max_http_messages_per_second (10,000 per node by
    /// default; start it with HERALD_MAX_HTTP_MESSAGES_PER_SECOND=1000000 to measure past that) and
    /// each WebSocket connection to max_messages_per_second (1,000 by default; going over closes
    /// the channel). Refusals are counted as errors.
    Publish {
        #[command(flatten)]
        opts: publish::PublishOpts,
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
        #[command(flatten)]
        opts: presence::PresenceOpts,
        /// How members are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
    /// Connection churn: connect → join → leave → close cycles at a fixed rate; completed cycles
    /// per second, failures, and server RSS before, during and after (with --server-pid).
    Churn {
        #[command(flatten)]
        opts: churn::ChurnOpts,
        /// Most cycles under way at once; when all are busy, the next cycle waits.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        concurrency: u64,
        /// Cycles per loopback source address (127.0.0.2, 127.0.0.3, ...), so that closed
        /// connections waiting in TIME_WAIT do not use up one address's ports.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=28_000))]
        per_address: u64,
    },
    /// Realtime Authorization: connections join and leave private channels of their own user's room
    /// (`bench-authz:u<i>:<k>`), each join decided by a select policy on `realtime.messages` that
    /// the benchmark creates; joins per second, join latency, and server and database CPU per join.
    ///
    /// The server must run with a database and HERALD_MAX_JOINS_PER_SECOND above the rate one
    /// connection reaches; HERALD_JWT_SECRET must hold its secret (each user's token is minted).
    Authz {
        #[command(flatten)]
        opts: authz::AuthzOpts,
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
        #[command(flatten)]
        opts: pg::PgOpts,
        /// How subscribers are opened.
        #[command(flatten)]
        clients: ClientOpts,
    },
}

/// Parses a byte count from 0 to `max`.
fn bytes_up_to(max: u64) -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser as _;
    clap::value_parser!(u64)
        .range(0..=max)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
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

impl PublisherKind {
    /// `ws` or `http`.
    pub fn name(self) -> &'static str {
        match self {
            PublisherKind::Ws => "ws",
            PublisherKind::Http => "http",
        }
    }
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
}

impl Scenario {
    /// How the scenario opens connections: at once, per process (`None`: the default) and per
    /// source address.
    fn opening(&self) -> (u64, Option<u64>, u64) {
        match self {
            Scenario::Idle { clients: c, .. }
            | Scenario::Fanout { clients: c, .. }
            | Scenario::Sse { clients: c, .. }
            | Scenario::Publish { clients: c, .. }
            | Scenario::Presence { clients: c, .. }
            | Scenario::Pg { clients: c, .. } => (c.concurrency, c.per_process, c.per_address),
            Scenario::Churn {
                concurrency,
                per_address,
                ..
            } => (*concurrency, None, *per_address),
            Scenario::Recover { .. } | Scenario::Authz { .. } => (1, None, 20_000),
        }
    }
}

/// What every scenario needs to know about the run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Context {
    pub target: Target,
    pub protocol: Protocol,
    pub pusher: App,
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
            ctx: self.clone(),
            transport,
            prefix: prefix.to_owned(),
            channels,
            base: 0,
            count,
            record_latency,
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

/// Runs `scenario` in this process.
async fn measure(ctx: &Context, scenario: Scenario) -> Result<report::Report, ScenarioError> {
    match scenario {
        Scenario::Idle { opts, .. } => idle::run(ctx, opts).await,
        Scenario::Fanout { opts, .. } => fanout::run(ctx, opts).await,
        Scenario::Sse { opts, .. } => sse::run(ctx, opts).await,
        Scenario::Recover { opts } => recover::run(ctx, opts).await,
        Scenario::Publish { opts, .. } => publish::run(ctx, opts).await,
        Scenario::Presence { opts, .. } => presence::run(ctx, opts).await,
        Scenario::Churn { opts, .. } => churn::run(ctx, opts).await,
        Scenario::Pg { opts, .. } => pg::run(ctx, opts).await,
        Scenario::Authz { opts } => authz::run(ctx, opts).await,
    }
}

/// Runs the chosen scenario and prints its report (a table, and with `--json` a JSON line last).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(spec) = worker::assigned()? {
        return worker::serve(spec).await.context("worker output");
    }
    let target = Target::parse(&args.url)?;
    let protocol = args.protocol;
    // The peers take anyone: they need no key, and none is sent to them.
    let token = match protocol {
        Protocol::Phoenix => token::resolve(args.token.as_deref())?,
        _ => String::new(),
    };
    let app = App {
        id: args.pusher_app_id,
        key: args.pusher_key,
        secret: args.pusher_secret,
    };
    let (concurrency, per_process, per_address) = args.scenario.opening();
    let ctx = Context {
        ws_url: target.ws_url_for(protocol, &token, &app),
        target,
        protocol,
        pusher: app,
        token,
        server_pid: args.server_pid,
        clock: Clock::start(),
        per_process: per_process.unwrap_or_else(default_per_process),
        concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
        per_address,
    };
    let report = measure(&ctx, args.scenario).await?;
    print!("{}", report.table());
    if args.json {
        println!("{}", report.to_json_line());
    }
    Ok(())
}

/// Reads `herald bench <args>` as the binary does.
#[cfg(test)]
fn parse(args: &str) -> Result<BenchArgs, clap::Error> {
    use clap::Parser;
    #[derive(clap::Parser, Debug)]
    enum Cli {
        Bench(BenchArgs),
    }
    let Cli::Bench(b) = Cli::try_parse_from(format!("herald bench {args}").split_whitespace())?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_command_lines_parse_and_bad_counts_do_not() {
        let mut commands = Vec::new();
        for script in ["bench", "bench-peers", "bench-smoke"] {
            let path = format!("{}/../../scripts/{script}", env!("CARGO_MANIFEST_DIR"));
            for line in std::fs::read_to_string(path).unwrap().lines() {
                // `smoke ARGS`, `... && run NAME "ENV" ARGS` or `... && run NAME ARGS`.
                let args = match (line.strip_prefix("smoke "), line.split_once("&& run ")) {
                    (Some(args), _) => args,
                    (None, Some((_, run))) => {
                        let run = run.split_once(' ').map_or("", |(_, r)| r);
                        run.rsplit_once("\" ").map_or(run, |(_, r)| r)
                    }
                    _ => continue,
                };
                commands.push(
                    match args.starts_with("pg ") || args.starts_with("authz ") {
                        true => format!("{args} --database-url postgres://127.0.0.1/x"),
                        false => args.to_owned(),
                    },
                );
            }
        }
        assert!(commands.len() > 20, "{commands:?}");
        for command in commands {
            assert!(parse(&command).is_ok(), "{command}");
        }
        for bad in [
            "idle --connections 0",
            "fanout --rate 0",
            "recover --batch 1001",
            "idle --protocol mqtt",
            "pg --database-url postgres://127.0.0.1/x --rows-per-tx 10001",
            "authz --database-url postgres://127.0.0.1/x --connections 0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn refuses_protocols_a_scenario_does_not_speak() {
        for args in [
            "--protocol pusher churn",
            "--protocol plain pg --database-url postgres://127.0.0.1/x",
        ] {
            let e = run(parse(args).unwrap()).await.unwrap_err();
            assert!(
                format!("{e:#}").contains("scenario speaks only phoenix"),
                "{e:#}"
            );
        }
    }
}
