//! The `idle` scenario, and the opening and holding of a fleet with the server's and the kernel's
//! memory read around it, which `sse` shares.

use std::time::Instant;

use crate::Context;
use crate::error::ScenarioError;
use crate::fleet::{DoneStats, Fleet, FleetSpec, ReadyStats, Transport};
use crate::measure::{self, open_fleet, server_rss};
use crate::payload::BENCH;
use crate::procfs;
use crate::report::{Detail, Hold, IdleDetail, Report};
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

/// A fleet opened for idle or sse, with the memory figures taken around the opening.
pub(crate) struct Opened {
    /// The fleet.
    pub fleet: Fleet,
    /// How its opening went.
    pub ready: ReadyStats,
    connect_secs: f64,
    rss: [Option<u64>; 2],
    tcp: [Option<u64>; 2],
    hold_start: Instant,
}

/// Opens `spec`, reading the server's and the kernel's memory before and after.
pub(crate) async fn open(
    ctx: &Context,
    name: &'static str,
    spec: FleetSpec,
) -> Result<Opened, ScenarioError> {
    let (page, _) = procfs::page_size_and_clock_ticks();
    let rss_before = server_rss(ctx)?;
    let tcp_before = tcp_mem_kib(page);
    let started = Instant::now();
    let (fleet, ready) = open_fleet(ctx, name, spec, false).await?;
    // The PID was checked above; if the server has gone since, report without its memory.
    Ok(Opened {
        fleet,
        ready,
        connect_secs: started.elapsed().as_secs_f64(),
        rss: [rss_before, server_rss(ctx).unwrap_or(None)],
        tcp: [tcp_before, tcp_mem_kib(page)],
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
    ) -> (Report, Hold, DoneStats) {
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
            ..Report::new(scenario, Detail::Idle(IdleDetail::default()))
        };
        let hold = Hold {
            requested,
            failed: ready.failed,
            failure_reasons: ready.reasons.0,
            disconnects: done.disconnects,
            processes,
            connect_secs: round3(self.connect_secs),
            hold_secs: round3(hold_secs),
            server_rss_before_kib: rss_before,
            server_rss_after_kib: rss_after,
            server_rss_end_kib: rss_end,
            tcp_mem_before_kib: tcp_before,
            tcp_mem_after_kib: tcp_after,
        };
        (report, hold, done)
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: IdleOpts) -> Result<Report, ScenarioError> {
    let spec = ctx.fleet_spec(Transport::Ws, BENCH, opts.channels, opts.connections, false);
    let opened = open(ctx, "idle", spec).await?;
    let live = opened.fleet.live();
    measure::hold("idle", live, opened.ready.established, opts.hold).await;
    let (report, hold, _) = opened.finish(ctx, "idle", opts.connections).await;
    let detail = IdleDetail {
        protocol: ctx.protocol.name(),
        channels: opts.channels,
        hold,
    };
    Ok(Report {
        detail: Detail::Idle(detail),
        ..report
    })
}
