//! What the scenarios measure the same way: opening their fleet and waiting for it, holding it
//! idle, the server's CPU over a window and its RSS (from /proc, with `--server-pid`), Ctrl-C, and
//! the arithmetic of the figures (rates, shortfalls, per-item costs).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::Context;
use crate::error::ScenarioError;
use crate::fleet::{Fleet, FleetSpec, LiveHandle, ReadyStats};
use crate::procfs;
use crate::progress::Progress;
use crate::stats::round3;

/// Server CPU ticks, if a server PID was given.
pub fn server_cpu(ctx: &Context) -> Result<Option<u64>, ScenarioError> {
    ctx.server_pid
        .map(procfs::cpu_ticks)
        .transpose()
        .map_err(ScenarioError::Server)
}

/// Server RSS in KiB, if a server PID was given.
pub fn server_rss(ctx: &Context) -> Result<Option<u64>, ScenarioError> {
    ctx.server_pid
        .map(procfs::vm_rss_kib)
        .transpose()
        .map_err(ScenarioError::Server)
}

/// A window of the server's CPU time, from [`CpuWindow::start`] to [`CpuWindow::end`].
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    pub start: Instant,
    ticks: Option<u64>,
}

/// The server's CPU over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub secs: Option<f64>,
    pub window: f64,
}

impl CpuWindow {
    /// Starts now. From here on a server that went away costs the CPU figures, not the report.
    pub fn start(ctx: &Context) -> Self {
        let ticks = server_cpu(ctx).unwrap_or(None);
        Self {
            start: Instant::now(),
            ticks,
        }
    }

    /// The CPU spent since the start.
    pub fn end(&self, ctx: &Context) -> Cpu {
        let (_, clock_ticks) = procfs::page_size_and_clock_ticks();
        let secs = match (self.ticks, server_cpu(ctx).unwrap_or(None)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clock_ticks.max(1) as f64),
            _ => None,
        };
        Cpu {
            secs,
            window: self.start.elapsed().as_secs_f64(),
        }
    }
}

impl Cpu {
    /// CPU seconds, rounded.
    pub fn secs(&self) -> Option<f64> {
        self.secs.map(round3)
    }

    /// Percent of one core over the window.
    pub fn pct(&self) -> Option<f64> {
        self.secs
            .filter(|_| self.window > 0.0)
            .map(|c| round3(c / self.window * 100.0))
    }

    /// µs of CPU per one of `n` things (none: `None`).
    pub fn us_per(&self, n: u64) -> Option<f64> {
        self.secs
            .filter(|_| n > 0)
            .map(|c| round3(c * 1e6 / n as f64))
    }
}

/// `n` per second over `secs` (rounded), or `None` for an empty window.
pub fn per_sec(n: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| round3(n as f64 / secs))
}

/// `expected - got` (negative would mean duplicates).
pub fn shortfall(expected: u64, got: u64) -> i64 {
    i64::try_from(expected).unwrap_or(i64::MAX) - i64::try_from(got).unwrap_or(i64::MAX)
}

/// What is missing of `expected` when `got` arrived: what is counted as errors.
pub fn missing(expected: u64, got: u64) -> u64 {
    expected.saturating_sub(got)
}

/// Turns true on Ctrl-C, until finished.
#[derive(Debug)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    watcher: JoinHandle<()>,
}

impl Interrupt {
    /// Starts watching for Ctrl-C.
    pub fn watch() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                set.store(true, Relaxed);
            }
        });
        Self { flag, watcher }
    }

    /// Whether Ctrl-C was pressed.
    pub fn is_set(&self) -> bool {
        self.flag.load(Relaxed)
    }

    /// The flag, for tasks of their own.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Stops watching; says what was cut short if Ctrl-C was pressed.
    pub fn finish(self, cut_short: &str) {
        self.watcher.abort();
        if self.is_set() {
            eprintln!("interrupted: {cut_short}");
        }
    }
}

/// Waits until `done` holds for what `watch` reads, what it reads has not changed for `quiet`,
/// `max` has passed since `since`, or `interrupted` turned true.
pub async fn settle<T: PartialEq>(
    (since, max, quiet): (Instant, Duration, Duration),
    interrupted: &AtomicBool,
    mut watch: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) {
    let mut last = watch();
    let mut last_change = Instant::now();
    while !interrupted.load(Relaxed) && since.elapsed() < max {
        let now = watch();
        if done(&now) {
            break;
        }
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last_change.elapsed() >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `spec` (in worker processes if it is larger than one process holds) and waits until every
/// connection was tried, showing progress as `<name>: joined/count`. With `needed`, a fleet that
/// could open none is an error saying why.
pub async fn open_fleet(
    ctx: &Context,
    name: &'static str,
    spec: FleetSpec,
    needed: bool,
) -> Result<(Fleet, ReadyStats), ScenarioError> {
    let total = spec.count;
    let mut fleet = Fleet::start(spec, ctx.per_process)?;
    let started = Instant::now();
    let live = fleet.live();
    let progress = Progress::start(move || {
        let (l, secs) = (live.snapshot(), started.elapsed().as_secs_f64().max(1e-3));
        let rate = l.established as f64 / secs;
        format!(
            "{name}: {}/{total} joined, {} failed, {rate:.0}/s",
            l.established, l.failed
        )
    });
    let ready = fleet.wait_ready().await;
    progress.finish();
    if needed && total > 0 && ready.established == 0 {
        fleet.stop().await;
        return Err(ScenarioError::NoSubscribers(ready.reasons.summary()));
    }
    Ok((fleet, ready))
}

/// Holds an opened fleet for `secs` seconds (Ctrl-C ends it early), showing how many dropped.
pub async fn hold(name: &'static str, live: LiveHandle, held: u64, secs: u64) {
    let hold = Duration::from_secs(secs);
    let start = Instant::now();
    let progress = Progress::start(move || {
        let left = hold.saturating_sub(start.elapsed()).as_secs();
        let dropped = live.snapshot().disconnects;
        format!("{name}: holding {held}, {dropped} dropped, {left} s left")
    });
    tokio::select! {
        _ = tokio::time::sleep(hold) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping early"),
    }
    progress.finish();
}
