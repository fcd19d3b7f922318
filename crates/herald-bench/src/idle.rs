//! The `idle` scenario: open N connections over C channels (in any `--protocol`), wait until every
//! one has joined, hold them with heartbeats (or answers to Socket.IO and Pusher pings), and report
//! the connect rate and the memory the server (RSS) and the kernel (TCP buffer pages) spent per
//! connection.

use std::time::{Duration, Instant};

use crate::Context;
use crate::error::ScenarioError;
use crate::fleet::{Fleet, Transport};
use crate::payload::BENCH;
use crate::procfs;
use crate::progress::Progress;
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

/// Server RSS in KiB, if a server PID was given.
pub(crate) fn server_rss(ctx: &Context) -> Result<Option<u64>, ScenarioError> {
    ctx.server_pid
        .map(procfs::vm_rss_kib)
        .transpose()
        .map_err(ScenarioError::Server)
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

    let mut fleet = Fleet::start(
        ctx.fleet_spec(Transport::Ws, BENCH, opts.channels, opts.connections, false),
        ctx.per_process,
        &ctx.token,
    )?;
    let processes = fleet.processes();
    let started = Instant::now();
    let total = opts.connections;
    let ready = fleet
        .wait_ready_showing(move |l| {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            format!(
                "idle: {}/{total} joined, {} failed, {:.0} conn/s",
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

    let live = fleet.live();
    let hold = Duration::from_secs(opts.hold);
    let hold_start = Instant::now();
    let established = ready.established;
    let progress = Progress::start(move || {
        let l = live.snapshot();
        let left = hold.saturating_sub(hold_start.elapsed()).as_secs();
        format!(
            "idle: holding {established} connections, {} dropped, {left} s left",
            l.disconnects
        )
    });
    tokio::select! {
        _ = tokio::time::sleep(hold) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping early"),
    }
    progress.finish();
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let rss_end = server_rss(ctx).unwrap_or(None);
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
        connections: established,
        rss_per_connection_kib: per_connection(rss_before, rss_after, established),
        kernel_per_connection_kib: per_connection(tcp_before, tcp_after, established),
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
