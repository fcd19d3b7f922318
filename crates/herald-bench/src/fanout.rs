//! The `fanout` scenario: publishing at a fixed rate to channels with many subscribers, message k
//! to channel k % C, stamped with its send time, then a drain.

use serde_json::json;

use crate::error::ScenarioError;
use crate::fleet::Transport;
use crate::measure::{missing, open_fleet, per_sec, server_cpu};
use crate::payload::BENCH;
use crate::publisher::{self, CHANNELS_PER_CONNECTION, Pace, Plan};
use crate::report::{Fields, Report, subscribers};
use crate::stats::round3;
use crate::{Context, PublisherKind};

/// Most messages in one HTTP request.
const HTTP_BATCH: u64 = 100;

/// Options of a fanout run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct FanoutOpts {
    /// Subscribers to open.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub subscribers: u64,
    /// Channels (subscriber i joins `realtime:bench-<i % C>`; message k goes to channel k % C).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// Messages per second published, in total over all channels.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Size of each message payload in bytes (`{"t":...,"pad":"xxx"}`; at least about 25).
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(1_048_576))]
    pub payload: usize,
    /// How messages are published.
    #[arg(long, value_enum, default_value_t = PublisherKind::Ws)]
    pub publisher: PublisherKind,
    /// Most messages per second one WebSocket publisher connection sends: more publisher
    /// connections are opened, up to one per channel, to reach --rate. Keep it under the
    /// server's per-connection message limit (Herald: 1,000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub publisher_rate: u64,
}

/// Number of WebSocket publisher connections: enough that none joins more than
/// [`CHANNELS_PER_CONNECTION`] channels and, as far as channels allow, none sends more than
/// `per_connection` messages per second.
fn publisher_connections(channels: u64, rate: u64, per_connection: u64) -> u64 {
    let for_channels = channels.div_ceil(CHANNELS_PER_CONNECTION);
    let for_rate = rate.div_ceil(per_connection.max(1)).min(channels);
    for_channels.max(for_rate).max(1)
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: FanoutOpts) -> Result<Report, ScenarioError> {
    server_cpu(ctx)?;
    let spec = ctx.fleet_spec(Transport::Ws, BENCH, opts.channels, opts.subscribers, true);
    let (fleet, ready) = open_fleet(ctx, "fanout", spec, true).await?;
    let connections = match opts.publisher {
        PublisherKind::Ws => publisher_connections(opts.channels, opts.rate, opts.publisher_rate),
        PublisherKind::Http => 1,
    };
    if opts.publisher == PublisherKind::Ws && opts.rate.div_ceil(connections) > opts.publisher_rate
    {
        eprintln!(
            "warning: {} msg/s over {} channels is more than --publisher-rate {} per publisher \
             connection; the server may refuse some (use more channels or --publisher http)",
            opts.rate, opts.channels, opts.publisher_rate
        );
    }
    let plan = Plan {
        kind: opts.publisher,
        prefix: BENCH.to_owned(),
        channels: opts.channels,
        offset: 0,
        connections,
        pace: Pace::Shared(opts.rate),
        duration: opts.duration,
        batch: HTTP_BATCH,
        ack: false,
        payload: opts.payload,
    };
    let joined = ready.joined(opts.channels);
    let out = publisher::publish(ctx, plan, joined, fleet.live(), ("fanout", false)).await;
    let processes = fleet.processes();
    let done = fleet.stop().await;
    let out = out?;
    let elapsed = out.elapsed_secs(&done);
    let sent_per_sec = per_sec(out.tally.accepted, out.publish_secs()).unwrap_or(0.0);
    let detail = Fields(vec![("protocol", json!(ctx.protocol.name()))])
        .and(subscribers(opts.subscribers, &ready, &done, processes))
        .and(Fields(vec![
            ("channels", json!(opts.channels)),
            ("publisher", json!(opts.publisher.name())),
            ("publishers", json!(connections)),
            ("rate", json!(opts.rate)),
            ("duration_secs", json!(opts.duration)),
            ("payload_bytes", json!(opts.payload)),
            ("sent_per_sec", json!(sent_per_sec)),
        ]))
        .and(out.figures(out.tally.accepted, done.delivered))
        .and(Fields(vec![("elapsed_secs", json!(round3(elapsed)))]));
    let mut report = Report::deliveries("fanout", (&ready, &done), &out.cpu, elapsed, detail);
    report.errors += out.tally.errors + missing(out.tally.expected, done.delivered);
    Ok(report)
}
