//! The `idle` scenario: open N connections over C channels (in any `--protocol`), wait until every
//! one has joined, hold them with heartbeats (or answers to Socket.IO and Pusher pings), and report
//! the connect rate and the memory the server (RSS) and the kernel (TCP buffer pages) spent per
//! connection.

use std::time::Instant;

use crate::Context;
use crate::error::ScenarioError;
use crate::fleet::Transport;
use crate::measure::{self, open_fleet, server_rss};
use crate::payload::BENCH;
use crate::procfs;
use crate::report::{Detail, IdleDetail, Report};
use crate::stats::round3;

/// Options of an idle run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct IdleOpts {
    /// Connections to open.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Channels to spread them over (connection i joins `realtime:bench-<i % C>`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// Seconds to hold the connections once all are joined.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub hold: u64,
}

/// Kernel TCP buffer memory in KiB (machine-wide), if readable.
pub(crate) fn tcp_mem_kib(page: u64) -> Option<u64> {
    procfs::tcp_mem_pages()
        .ok()
        .map(|pages| pages * page / 1024)
}

/// Growth per connection in KiB.
pub(crate) fn per_connection(
    before: Option<u64>,
    after: Option<u64>,
    connections: u64,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    (connections > 0).then(|| round3((after as f64 - before as f64) / connections as f64))
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: IdleOpts) -> Result<Report, ScenarioError> {
    let (page, _) = procfs::page_size_and_clock_ticks();
    let rss_before = server_rss(ctx)?;
    let tcp_before = tcp_mem_kib(page);
    let spec = ctx.fleet_spec(Transport::Ws, BENCH, opts.channels, opts.connections, false);
    let started = Instant::now();
    let (fleet, ready) = open_fleet(ctx, "idle", spec, false).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // The PID was checked above; if the server has gone since, report without its memory.
    let rss_after = server_rss(ctx).unwrap_or(None);
    let tcp_after = tcp_mem_kib(page);
    let hold_start = Instant::now();
    measure::hold("idle", fleet.live(), ready.established, opts.hold).await;
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let rss_end = server_rss(ctx).unwrap_or(None);
    let processes = fleet.processes();
    let done = fleet.stop().await;

    let detail = IdleDetail {
        protocol: ctx.protocol.name(),
        requested: opts.connections,
        channels: opts.channels,
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
    };
    Ok(Report {
        connections: ready.established,
        rss_per_connection_kib: per_connection(rss_before, rss_after, ready.established),
        kernel_per_connection_kib: per_connection(tcp_before, tcp_after, ready.established),
        connect_rate: ready.connect_rate().map(round3),
        errors: ready.failed + done.disconnects,
        ..Report::new("idle", Detail::Idle(detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_per_connection() {
        assert_eq!(per_connection(Some(1_000), Some(21_000), 1_000), Some(20.0));
        assert_eq!(per_connection(Some(1_000), Some(900), 100), Some(-1.0));
        assert_eq!(per_connection(None, Some(900), 100), None);
        assert_eq!(per_connection(Some(1), Some(2), 0), None);
    }
}
