//! The `sse` scenario: Server-Sent Events streams held open, optionally with HTTP publishing to them
//! (`--publish-rate`) measured as `fanout` measures WebSocket subscribers.

use serde_json::json;

use crate::error::ScenarioError;
use crate::fleet::Transport;
use crate::measure::{self, missing, per_sec};
use crate::payload::BENCH;
use crate::publisher::{self, Pace, Plan};
use crate::report::{Fields, Report, published};
use crate::{Context, PublisherKind, idle};

/// Options of an sse run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct SseOpts {
    /// Streams to open.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub streams: u64,
    /// Topics to spread them over (stream i follows `bench-<i % T>`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub topics: u64,
    /// Seconds to hold the streams once all are open.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub hold: u64,
    /// Also publish this many messages per second (in total, over HTTP, message k to topic
    /// k % T) during the hold (at least 1 s), and measure delivery to the streams.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub publish_rate: Option<u64>,
    /// Size of each published payload in bytes (with --publish-rate).
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(1_048_576))]
    pub payload: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: SseOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("sse")?;
    let timed = opts.publish_rate.is_some();
    let spec = ctx.fleet_spec(Transport::Sse, BENCH, opts.topics, opts.streams, timed);
    let opened = idle::open(ctx, "sse", spec).await?;
    let (live, established) = (opened.fleet.live(), opened.ready.established);
    let outcome = match opts.publish_rate {
        Some(rate) if established > 0 => {
            let plan = Plan {
                kind: PublisherKind::Http,
                prefix: BENCH.to_owned(),
                channels: opts.topics,
                offset: 0,
                connections: 1,
                pace: Pace::Shared(rate),
                duration: opts.hold.max(1),
                batch: 100,
                ack: false,
                payload: opts.payload,
            };
            let joined = opened.ready.joined(opts.topics);
            Some(publisher::publish(ctx, plan, joined, live, ("sse", false)).await?)
        }
        _ => {
            measure::hold(ctx, "sse", live, established, opts.hold).await;
            None
        }
    };
    let (mut report, hold, done) = opened.finish(ctx, "sse", opts.streams).await;
    let publishing = match &outcome {
        Some(out) => {
            let elapsed = out.elapsed_secs(&done);
            report.delivered_per_sec = per_sec(done.delivered, elapsed);
            report.latency_ms = done.latencies().summary();
            report.server_cpu_pct = out.cpu.pct();
            report.cpu_us_per_delivery = out.cpu.us_per(done.delivered);
            report.errors += out.tally.errors + missing(out.tally.expected, done.delivered);
            out.figures(out.tally.accepted, done.delivered)
        }
        None => published((0, 0, &Default::default()), 0, 0, None),
    };
    let publish_rate = opts.publish_rate.filter(|_| outcome.is_some());
    let payload_bytes = outcome.as_ref().map(|_| opts.payload);
    let rate = Fields(vec![
        ("publish_rate", json!(publish_rate)),
        ("payload_bytes", json!(payload_bytes)),
    ]);
    let topics = Fields(vec![("topics", json!(opts.topics))]);
    report.detail = topics.and(hold).and(rate).and(publishing);
    Ok(report)
}
