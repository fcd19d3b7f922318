//! The `idle` scenario, and the opening and holding of a fleet with the server's and the kernel's
//! memory read around it, which `sse` shares.

use std::time::Instant;

use serde_json::json;

use crate::Context;
use crate::error::ScenarioError;
use crate::fleet::{DoneStats, FleetSpec, ReadyStats, Transport};
use crate::measure::{self, open_fleet, server_rss};
use crate::payload::BENCH;
use crate::procfs;
use crate::report::{Fields, Report};
use crate::stats::round3;
use crate::worker::Fleet;

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
fn tcp_mem_kib() -> Option<u64> {
    let (page, _) = procfs::page_size_and_clock_ticks();
    Some(procfs::tcp_mem_pages().ok()? * page / 1024)
}

/// Growth per connection in KiB.
fn per_connection(before: Option<u64>, after: Option<u64>, connections: u64) -> Option<f64> {
    let (before, after) = (before?, after?);
    (connections > 0).then(|| round3((after as f64 - before as f64) / connections as f64))
}

/// A fleet opened for idle or sse, with the memory figures taken around the opening.
pub struct Opened {
    /// The fleet.
    pub fleet: Fleet,
    /// How its opening went.
    pub ready: ReadyStats,
    rss: [Option<u64>; 2],
    tcp: [Option<u64>; 2],
    hold_start: Instant,
}

/// Opens `spec`, reading the server's and the kernel's memory before and after.
pub async fn open(
    ctx: &Context,
    name: &'static str,
    spec: FleetSpec,
) -> Result<Opened, ScenarioError> {
    let (rss_before, tcp_before) = (server_rss(ctx)?, tcp_mem_kib());
    let (fleet, ready) = open_fleet(ctx, name, spec, false).await?;
    // The PID was checked above; if the server has gone since, report without its memory.
    Ok(Opened {
        fleet,
        ready,
        rss: [rss_before, server_rss(ctx).unwrap_or(None)],
        tcp: [tcp_before, tcp_mem_kib()],
        hold_start: Instant::now(),
    })
}

impl Opened {
    /// Stops the fleet after its hold: the report of `scenario` (its detail still to fill in), the
    /// hold's figures and the fleet's results.
    pub async fn finish(
        self,
        ctx: &Context,
        scenario: &'static str,
        requested: u64,
    ) -> (Report, Fields, DoneStats) {
        let hold_secs = self.hold_start.elapsed().as_secs_f64();
        let rss_end = server_rss(ctx).unwrap_or(None);
        let processes = self.fleet.processes();
        let done = self.fleet.stop().await;
        let (ready, [rss_before, rss_after], [tcp_before, tcp_after]) =
            (self.ready, self.rss, self.tcp);
        let established = ready.established;
        let report = Report {
            connections: established,
            rss_per_connection_kib: per_connection(rss_before, rss_after, established),
            kernel_per_connection_kib: per_connection(tcp_before, tcp_after, established),
            connect_rate: ready.connect_rate().map(round3),
            errors: ready.failed + done.disconnects,
            ..Report::new(scenario, Fields::default())
        };
        let hold = Fields(vec![
            ("requested", json!(requested)),
            ("failed", json!(ready.failed)),
            ("failure_reasons", json!(ready.reasons)),
            ("disconnects", json!(done.disconnects)),
            ("processes", json!(processes)),
            ("connect_secs", json!(round3(ready.connect_secs()))),
            ("hold_secs", json!(round3(hold_secs))),
            ("server_rss_before_kib", json!(rss_before)),
            ("server_rss_after_kib", json!(rss_after)),
            ("server_rss_end_kib", json!(rss_end)),
            ("tcp_mem_before_kib", json!(tcp_before)),
            ("tcp_mem_after_kib", json!(tcp_after)),
        ]);
        (report, hold, done)
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: IdleOpts) -> Result<Report, ScenarioError> {
    let spec = ctx.fleet_spec(Transport::Ws, BENCH, opts.channels, opts.connections, false);
    let opened = open(ctx, "idle", spec).await?;
    let live = opened.fleet.live();
    measure::hold(ctx, "idle", live, opened.ready.established, opts.hold).await;
    let (report, hold, _) = opened.finish(ctx, "idle", opts.connections).await;
    let detail = Fields(vec![
        ("protocol", json!(ctx.protocol.name())),
        ("channels", json!(opts.channels)),
    ]);
    Ok(Report {
        detail: detail.and(hold),
        ..report
    })
}
