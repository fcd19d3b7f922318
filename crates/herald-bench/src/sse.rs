//! The `sse` scenario: Server-Sent Events streams held open, optionally with HTTP publishing to them
//! (`--publish-rate`) measured as `fanout` measures WebSocket subscribers.

use crate::Context;
use crate::error::ScenarioError;
use crate::fanout::{self, HttpPublisher, Publisher, Schedule};
use crate::fleet::Transport;
use crate::idle;
use crate::measure::{self, missing, per_sec};
use crate::payload::{BENCH, PayloadBuilder};
use crate::report::{Detail, Published, Report, SseDetail};

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
    let timed = opts.publish_rate.is_some();
    let spec = ctx.fleet_spec(Transport::Sse, BENCH, opts.topics, opts.streams, timed);
    let opened = idle::open(ctx, "sse", spec).await?;
    let (live, established) = (opened.fleet.live(), opened.ready.established);
    let phase = match opts.publish_rate {
        Some(rate) if established > 0 => {
            let joined = opened.ready.joined(opts.topics);
            let mut publisher = Publisher::Http(Box::new(HttpPublisher::new(ctx, BENCH)));
            let schedule = Schedule {
                channels: opts.topics,
                rate,
                duration: opts.hold.max(1),
            };
            let builder = PayloadBuilder::new(opts.payload);
            let publishing = fanout::publish_and_drain(
                ctx,
                &mut publisher,
                schedule,
                &builder,
                &joined,
                live,
                "sse",
            );
            Some(publishing.await)
        }
        _ => {
            measure::hold("sse", live, established, opts.hold).await;
            None
        }
    };
    let (mut report, hold, done) = opened.finish(ctx, "sse", opts.streams).await;
    let mut detail = SseDetail {
        topics: opts.topics,
        hold,
        ..SseDetail::default()
    };
    if let Some(phase) = &phase {
        let (tally, delivered) = (&phase.tally, done.delivered);
        let published = Published::of(
            tally.sent,
            tally.errors,
            &tally.reasons,
            tally.expected,
            delivered,
            &phase.cpu,
        );
        detail.publish_rate = opts.publish_rate;
        detail.payload_bytes = Some(opts.payload);
        report.delivered_per_sec = per_sec(delivered, phase.elapsed_secs(ctx, &done));
        report.latency_ms = done.latencies().summary();
        report.server_cpu_pct = phase.cpu.pct();
        report.cpu_us_per_delivery = phase.cpu.us_per(delivered);
        report.errors += tally.errors + missing(published.drops);
        detail.published = published;
    }
    report.detail = Detail::Sse(detail);
    Ok(report)
}
