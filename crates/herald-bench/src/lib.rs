//! Load generator behind `herald bench`: opens many Phoenix v2 WebSocket clients against a Herald (or
//! any Supabase-Realtime-compatible) server on this machine and measures it.
//!
//! Scenarios:
//! - `idle`: N connections joined over C channels and held with heartbeats; reports connect rate and,
//!   with `--server-pid`, the server's RSS per connection, plus the kernel's TCP buffer memory per
//!   connection, separately.
//! - `fanout`: N subscribers over C channels, publishers (WebSocket or HTTP) sending R msgs/s for S
//!   seconds; reports deliveries, drops, end-to-end latency percentiles and server CPU per delivery.
//!
//! Traffic goes to loopback addresses only, every count and duration is bounded, and every run stops
//! by itself. Fleets larger than one process can hold are spread over worker processes (module
//! `worker`).
//!
//! This file owns the command-line surface and the dispatch to the scenarios.

mod clock;
mod conn;
mod error;
mod fanout;
mod fleet;
mod http;
mod idle;
mod payload;
mod phoenix;
mod procfs;
mod progress;
mod report;
mod stats;
mod target;
mod token;
mod worker;

#[cfg(test)]
mod mock;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::fleet::FleetSpec;
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
    /// HERALD_JWT_SECRET.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Also print the results as one JSON object, the last line on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// PID of the server process, to measure its memory (idle) or CPU (fanout) from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
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
}

/// How messages are published in `fanout`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherKind {
    /// v2 text broadcast pushes over WebSocket connections joined to the channels.
    Ws,
    /// `POST /api/broadcast` batches over one HTTP/1.1 keep-alive connection.
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
    fn clients(&self) -> &ClientOpts {
        match self {
            Scenario::Idle { clients, .. } | Scenario::Fanout { clients, .. } => clients,
        }
    }
}

/// What every scenario needs to know about the run.
#[derive(Debug)]
pub(crate) struct Context {
    pub target: Target,
    pub token: String,
    pub ws_url: String,
    pub server_pid: Option<u32>,
    pub clock: Clock,
    pub per_process: u64,
    pub concurrency: usize,
    pub per_address: u64,
}

impl Context {
    /// A fleet of `count` connections over `channels` channels, starting at index 0.
    pub fn fleet_spec(&self, channels: u64, count: u64, record_latency: bool) -> FleetSpec {
        FleetSpec {
            target: self.target.clone(),
            ws_url: self.ws_url.clone(),
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
    let token = token::resolve(args.token.as_deref())?;
    let clients = args.scenario.clients().clone();
    let ws_url = target.ws_url(&token);
    let concurrency = usize::try_from(clients.concurrency).unwrap_or(usize::MAX);

    if clients.worker {
        let (channels, total, record_latency) = match &args.scenario {
            Scenario::Idle {
                connections,
                channels,
                ..
            } => (*channels, *connections, false),
            Scenario::Fanout {
                subscribers,
                channels,
                ..
            } => (*channels, *subscribers, true),
        };
        let count = clients.worker_count.unwrap_or(total);
        let spec = FleetSpec {
            target,
            ws_url,
            channels,
            base: clients.worker_base,
            count,
            concurrency: worker_concurrency(concurrency, count, total),
            per_address: clients.per_address,
            record_latency,
            clock: clients
                .worker_epoch_ns
                .map_or_else(Clock::start, Clock::join),
        };
        return worker::serve(spec).await.context("worker output");
    }

    let ctx = Context {
        target,
        token,
        ws_url,
        server_pid: args.server_pid,
        clock: Clock::start(),
        per_process: clients.per_process.unwrap_or_else(default_per_process),
        concurrency,
        per_address: clients.per_address,
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
        let c = b.scenario.clients();
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
    fn counts_are_bounded() {
        assert!(parse(&["herald", "bench", "idle", "--connections", "0"]).is_err());
        assert!(parse(&["herald", "bench", "idle", "--connections", "2000000"]).is_err());
        assert!(parse(&["herald", "bench", "fanout", "--duration", "100000"]).is_err());
        assert!(parse(&["herald", "bench", "fanout", "--rate", "0"]).is_err());
    }
}
