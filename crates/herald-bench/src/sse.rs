//! The `sse` scenario: open N Server-Sent Events streams over T topics (stream i follows
//! `bench-<i % T>`), wait until every one has sent its first `id:` line, hold them (the server sends a
//! ping comment every 15 s), and report the open rate and the memory the server (RSS) and the kernel
//! (TCP buffer pages) spent per stream. With `--publish-rate` the hold also publishes over HTTP at
//! that rate and measures delivery to the streams, as `fanout` does for WebSocket subscribers.

use std::time::{Duration, Instant};

use crate::Context;
use crate::error::ScenarioError;
use crate::fanout::{self, HttpPublisher, Publisher, Schedule};
use crate::fleet::{Fleet, Transport};
use crate::idle::{per_connection, server_rss, tcp_mem_kib};
use crate::payload::BENCH;
use crate::payload::PayloadBuilder;
use crate::procfs;
use crate::progress::Progress;
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

    let mut fleet = Fleet::start(
        ctx.fleet_spec(
            Transport::Sse,
            BENCH,
            opts.topics,
            opts.streams,
            opts.publish_rate.is_some(),
        ),
        ctx.per_process,
        &ctx.token,
    )?;
    let processes = fleet.processes();
    let started = Instant::now();
    let total = opts.streams;
    let ready = fleet
        .wait_ready_showing(move |l| {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            format!(
                "sse: {}/{total} streams open, {} failed, {:.0} streams/s",
                l.established,
                l.failed,
                l.established as f64 / secs
            )
        })
        .await;
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
            Some(
                fanout::publish_and_drain(
                    ctx,
                    &mut publisher,
                    schedule,
                    &builder,
                    &joined,
                    fleet.live(),
                    "sse",
                )
                .await,
            )
        }
        _ => {
            let live = fleet.live();
            let hold = Duration::from_secs(opts.hold);
            let progress = Progress::start(move || {
                let l = live.snapshot();
                let left = hold.saturating_sub(hold_start.elapsed()).as_secs();
                format!(
                    "sse: holding {established} streams, {} dropped, {left} s left",
                    l.disconnects
                )
            });
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping early"),
            }
            progress.finish();
            None
        }
    };
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let rss_end = server_rss(ctx).unwrap_or(None);
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
        let start_ns = ctx.clock.ns_at(phase.start);
        let end_ns = done
            .last_delivery_ns
            .max(ctx.clock.ns_at(phase.publish_end));
        let elapsed = end_ns.saturating_sub(start_ns) as f64 / 1e9;
        let drops = i64::try_from(tally.expected).unwrap_or(i64::MAX)
            - i64::try_from(delivered).unwrap_or(i64::MAX);
        detail.publish_rate = opts.publish_rate;
        detail.payload_bytes = Some(opts.payload);
        detail.sent = tally.sent;
        detail.publish_errors = tally.errors;
        detail.publish_error_reasons = tally.reasons.0.clone();
        detail.expected = tally.expected;
        detail.delivered = delivered;
        detail.drops = drops;
        detail.server_cpu_secs = phase.cpu_secs.map(round3);
        report.delivered_per_sec = (elapsed > 0.0).then(|| round3(delivered as f64 / elapsed));
        report.latency_ms = done.latencies().summary();
        report.server_cpu_pct = phase.cpu_pct();
        report.cpu_us_per_delivery = phase
            .cpu_secs
            .filter(|_| delivered > 0)
            .map(|c| round3(c * 1e6 / delivered as f64));
        report.errors += tally.errors + u64::try_from(drops.max(0)).unwrap_or(0);
    }
    report.detail = Detail::Sse(detail);
    Ok(report)
}
