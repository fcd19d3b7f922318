//! The `publish` scenario: HTTP batch publishers or WebSocket publishers pushing with `ack`, paced
//! or as fast as the server accepts, counting accepted and refused messages.

use serde_json::json;

use crate::error::ScenarioError;
use crate::fleet::Transport;
use crate::measure::{missing, open_fleet, per_sec, server_cpu};
use crate::payload;
use crate::publisher::{self, CHANNELS_PER_CONNECTION, Pace, Plan};
use crate::report::{Fields, RATE_LIMIT_NOTE, Report, subscribers};
use crate::stats::round3;
use crate::{Context, PublisherKind};

/// Channel-name prefix of this scenario: `bench-pub-0`, `bench-pub-1`, ...
pub const PREFIX: &str = "bench-pub";

/// Options of a publish run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PublishOpts {
    /// Messages per second in total; 0: as fast as the server accepts them (HTTP: each
    /// connection sends its next batch as soon as the previous one is answered; WebSocket:
    /// each connection at --publisher-rate).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Size of each message payload in bytes (`{"t":...,"pad":"xxx"}`; at least about 25).
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(1_048_576))]
    pub payload: usize,
    /// WebSocket subscribers counting deliveries (subscriber i joins
    /// `realtime:bench-pub-<i % C>`); 0 measures publishing alone.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub subscribers: u64,
    /// Channels `bench-pub-<c>`; publisher j sends to the channels c with c % connections == j
    /// in turn.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// How messages are published.
    #[arg(long, value_enum, default_value_t = PublisherKind::Http)]
    pub publisher: PublisherKind,
    /// Concurrent publisher connections (HTTP/1.1 keep-alive or WebSocket).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub connections: u64,
    /// Messages per HTTP request: with --rate 0 every request carries this many; when paced, a
    /// request carries the messages due, up to this many (the server takes at most
    /// max_http_batch, 1,000 by default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub batch: u64,
    /// Most messages per second one WebSocket publisher connection sends; keep it under the
    /// server's max_messages_per_second (1,000 by default).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub publisher_rate: u64,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: PublishOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("publish")?;
    server_cpu(ctx)?;
    let ws = opts.publisher == PublisherKind::Ws;
    if ws && opts.channels.div_ceil(opts.connections) > CHANNELS_PER_CONNECTION {
        return Err(ScenarioError::PublisherChannels {
            channels: opts.channels,
            connections: opts.connections,
            max: CHANNELS_PER_CONNECTION,
        });
    }
    let per = match opts.rate {
        0 => opts.publisher_rate,
        r => r.div_ceil(opts.connections),
    };
    if ws && per > opts.publisher_rate {
        eprintln!(
            "warning: {per} msg/s per WebSocket publisher is more than --publisher-rate {}; the \
             server closes channels that send more than its max_messages_per_second (default \
             1,000): use more --connections",
            opts.publisher_rate
        );
    }
    let batch = match opts.publisher {
        PublisherKind::Http => payload::batch_for(opts.batch, opts.payload),
        PublisherKind::Ws => 1,
    };
    if batch < opts.batch && !ws {
        eprintln!(
            "note: {batch} messages per request: {} would make too large a body",
            opts.batch
        );
    }
    let spec = ctx.fleet_spec(Transport::Ws, PREFIX, opts.channels, opts.subscribers, true);
    let (fleet, ready) = open_fleet(ctx, "publish", spec, true).await?;
    let pace = match (opts.publisher, opts.rate) {
        (PublisherKind::Http, 0) => Pace::Unpaced,
        (PublisherKind::Ws, 0) => Pace::Split(opts.publisher_rate * opts.connections),
        (_, rate) => Pace::Split(rate),
    };
    let plan = Plan {
        kind: opts.publisher,
        prefix: PREFIX.to_owned(),
        channels: opts.channels,
        offset: 0,
        connections: opts.connections,
        pace,
        duration: opts.duration,
        batch,
        ack: true,
        payload: opts.payload,
    };
    let joined = ready.joined(opts.channels);
    let out = publisher::publish(ctx, plan, joined, fleet.live(), ("publish", false)).await;
    let processes = fleet.processes();
    let done = fleet.stop().await;
    let out = out?;
    if out.tally.rate_limited > 0 {
        eprintln!("note: {RATE_LIMIT_NOTE}");
    }
    let (publish_secs, elapsed) = (out.publish_secs(), out.elapsed_secs(&done));
    let cpu_us_per_message = out.cpu.us_per(out.tally.accepted);
    let detail = subscribers(opts.subscribers, &ready, &done, processes)
        .and(Fields(vec![
            ("channels", json!(opts.channels)),
            ("publisher", json!(opts.publisher.name())),
            ("publisher_connections", json!(opts.connections)),
            ("batch", json!(batch)),
            ("rate", json!(opts.rate)),
            ("duration_secs", json!(opts.duration)),
            ("payload_bytes", json!(opts.payload)),
            ("accepted", json!(out.tally.accepted)),
            ("rate_limited", json!(out.tally.rate_limited)),
        ]))
        .and(out.figures(out.tally.sent, done.delivered))
        .and(Fields(vec![
            ("publish_secs", json!(round3(publish_secs))),
            ("elapsed_secs", json!(round3(elapsed))),
            ("cpu_us_per_message", json!(cpu_us_per_message)),
        ]));
    let mut report = Report::deliveries("publish", (&ready, &done), &out.cpu, elapsed, detail);
    report.accepted_per_sec = per_sec(out.tally.accepted, publish_secs);
    report.delivered_per_sec = report.delivered_per_sec.filter(|_| opts.subscribers > 0);
    report.errors += out.tally.errors + missing(out.tally.expected, done.delivered);
    Ok(report)
}
