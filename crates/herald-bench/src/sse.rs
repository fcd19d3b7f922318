//! The `sse` scenario: open N Server-Sent Events streams over T topics (stream i follows
//! `bench-<i % T>`), wait until every one has sent its first `id:` line, hold them (the server sends a
//! ping comment every 15 s), and report the open rate and the memory the server (RSS) and the kernel
//! (TCP buffer pages) spent per stream. With `--publish-rate` the hold also publishes over HTTP at
//! that rate and measures delivery to the streams, as `fanout` does for WebSocket subscribers.

use std::time::Instant;

use crate::Context;
use crate::error::ScenarioError;
use crate::fanout::{self, HttpPublisher, Publisher, Schedule};
use crate::fleet::Transport;
use crate::idle::{per_connection, tcp_mem_kib};
use crate::measure::{self, missing, open_fleet, per_sec, server_rss, shortfall};
use crate::payload::{BENCH, PayloadBuilder};
use crate::procfs;
use crate::report::{Detail, Report, SseDetail};
use crate::stats::round3;

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
    let (page, _) = procfs::page_size_and_clock_ticks();
    let rss_before = server_rss(ctx)?;
    let tcp_before = tcp_mem_kib(page);
    let timed = opts.publish_rate.is_some();
    let spec = ctx.fleet_spec(Transport::Sse, BENCH, opts.topics, opts.streams, timed);
    let started = Instant::now();
    let (fleet, ready) = open_fleet(ctx, "sse", spec, false).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // The PID was checked above; if the server has gone since, report without its memory.
    let rss_after = server_rss(ctx).unwrap_or(None);
    let tcp_after = tcp_mem_kib(page);
    let established = ready.established;

    let hold_start = Instant::now();
    let phase = match opts.publish_rate {
        Some(rate) if established > 0 => {
            let joined = ready.joined(opts.topics);
            let mut publisher = Publisher::Http(Box::new(HttpPublisher::new(ctx, BENCH)));
            let schedule = Schedule {
                channels: opts.topics,
                rate,
                duration: opts.hold.max(1),
            };
            let builder = PayloadBuilder::new(opts.payload);
            let live = fleet.live();
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
            measure::hold("sse", fleet.live(), established, opts.hold).await;
            None
        }
    };
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let rss_end = server_rss(ctx).unwrap_or(None);
    let processes = fleet.processes();
    let done = fleet.stop().await;

    let mut detail = SseDetail {
        requested: opts.streams,
        topics: opts.topics,
        failed: ready.failed,
        failure_reasons: ready.reasons.0.clone(),
        disconnects: done.disconnects,
        processes,
        connect_secs: round3(connect_secs),
        hold_secs: round3(hold_secs),
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        server_rss_end_kib: rss_end,
        tcp_mem_before_kib: tcp_before,
        tcp_mem_after_kib: tcp_after,
        ..SseDetail::default()
    };
    let mut report = Report {
        connections: established,
        rss_per_connection_kib: per_connection(rss_before, rss_after, established),
        kernel_per_connection_kib: per_connection(tcp_before, tcp_after, established),
        connect_rate: ready.connect_rate().map(round3),
        errors: ready.failed + done.disconnects,
        ..Report::new("sse", Detail::Sse(SseDetail::default()))
    };
    if let Some(phase) = &phase {
        let tally = &phase.tally;
        let delivered = done.delivered;
        let drops = shortfall(tally.expected, delivered);
        detail.publish_rate = opts.publish_rate;
        detail.payload_bytes = Some(opts.payload);
        detail.sent = tally.sent;
        detail.publish_errors = tally.errors;
        detail.publish_error_reasons = tally.reasons.0.clone();
        detail.expected = tally.expected;
        detail.delivered = delivered;
        detail.drops = drops;
        detail.server_cpu_secs = phase.cpu.secs();
        report.delivered_per_sec = per_sec(delivered, phase.elapsed_secs(ctx, &done));
        report.latency_ms = done.latencies().summary();
        report.server_cpu_pct = phase.cpu.pct();
        report.cpu_us_per_delivery = phase.cpu.us_per(delivered);
        report.errors += tally.errors + missing(drops);
    }
    report.detail = Detail::Sse(detail);
    Ok(report)
}
