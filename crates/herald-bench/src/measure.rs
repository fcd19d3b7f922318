//! What the scenarios measure the same way: opening their fleet and waiting for it, holding it
//! idle, the server's CPU over a window and its RSS (from /proc, with `--server-pid`), Ctrl-C, the
//! progress line on stderr (redrawn in place on a terminal, one plain line every few seconds
//! otherwise, so that logs stay readable), and the arithmetic of the figures.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Context;
use crate::error::ScenarioError;
use crate::fleet::{FleetSpec, LiveHandle, ReadyStats};
use crate::procfs;
use crate::stats::round3;
use crate::worker::Fleet;

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

/// The server's CPU over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// CPU seconds (with `--server-pid`).
    pub secs: Option<f64>,
    /// Length of the window, seconds.
    pub window: f64,
}

impl Cpu {
    /// CPU seconds, rounded.
    pub fn secs(&self) -> Option<f64> {
        self.secs.map(round3)
    }

    /// Percent of one core over the window.
    pub fn pct(&self) -> Option<f64> {
        let secs = self.secs.filter(|_| self.window > 0.0);
        secs.map(|c| round3(c / self.window * 100.0))
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

/// Seconds from clock time `from_ns` to `to_ns` (0 if earlier).
pub fn secs(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

/// `expected - got` (negative would mean duplicates).
pub fn shortfall(expected: u64, got: u64) -> i64 {
    i64::try_from(expected).unwrap_or(i64::MAX) - i64::try_from(got).unwrap_or(i64::MAX)
}

/// What is missing of `expected` when `got` arrived: what is counted as errors.
pub fn missing(expected: u64, got: u64) -> u64 {
    expected.saturating_sub(got)
}

/// A measured phase of a run: the server's CPU from its start to its end, a progress line, and
/// Ctrl-C, which cuts it short.
#[derive(Debug)]
pub struct Phase {
    /// When it started.
    pub start: Instant,
    ticks: Option<u64>,
    progress: Progress,
    interrupted: watch::Receiver<bool>,
    watcher: JoinHandle<()>,
}

impl Phase {
    /// Starts now, showing `line()` as progress. From here on a server that went away costs the
    /// CPU figures, not the report.
    pub fn start(ctx: &Context, line: impl Fn() -> String + Send + 'static) -> Self {
        let (set, interrupted) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = set.send(true);
            }
        });
        Self {
            start: Instant::now(),
            ticks: server_cpu(ctx).unwrap_or(None),
            progress: Progress::start(line),
            interrupted,
            watcher,
        }
    }

    /// Whether Ctrl-C was pressed.
    pub fn interrupted(&self) -> bool {
        *self.interrupted.borrow()
    }

    /// Runs `step` unless, or until, Ctrl-C is pressed (then `None`).
    pub async fn unless_interrupted<T>(&self, step: impl Future<Output = T>) -> Option<T> {
        let mut interrupted = self.interrupted.clone();
        tokio::select! {
            done = step => Some(done),
            _ = interrupted.wait_for(|i| *i) => None,
        }
    }

    /// Waits until `done` holds for what `watch` reads, what it reads has not changed for `quiet`,
    /// `max` has passed, or Ctrl-C was pressed.
    pub async fn settle<T: PartialEq>(
        &self,
        (max, quiet): (Duration, Duration),
        mut watch: impl FnMut() -> T,
        mut done: impl FnMut(&T) -> bool,
    ) {
        let since = Instant::now();
        let (mut last, mut last_change) = (watch(), since);
        while !self.interrupted() && since.elapsed() < max {
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

    /// Ends the phase: the server's CPU over it; says what was cut short if Ctrl-C was pressed.
    pub fn end(self, ctx: &Context, cut_short: &str) -> Cpu {
        let (_, clock_ticks) = procfs::page_size_and_clock_ticks();
        let secs = match (self.ticks, server_cpu(ctx).unwrap_or(None)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clock_ticks.max(1) as f64),
            _ => None,
        };
        let interrupted = self.interrupted();
        self.progress.finish();
        self.watcher.abort();
        if interrupted {
            eprintln!("interrupted: {cut_short}");
        }
        Cpu {
            secs,
            window: self.start.elapsed().as_secs_f64(),
        }
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
pub async fn hold(ctx: &Context, name: &'static str, live: LiveHandle, held: u64, secs: u64) {
    let (hold, start) = (Duration::from_secs(secs), Instant::now());
    let phase = Phase::start(ctx, move || {
        let left = hold.saturating_sub(start.elapsed()).as_secs();
        let dropped = live.snapshot().disconnects;
        format!("{name}: holding {held}, {dropped} dropped, {left} s left")
    });
    phase.unless_interrupted(tokio::time::sleep(hold)).await;
    phase.end(ctx, "stopping early");
}

/// A running progress printer; stops when finished or dropped.
#[derive(Debug)]
pub struct Progress {
    task: JoinHandle<()>,
    tty: bool,
}

impl Progress {
    /// Prints `line()` periodically until [`Progress::finish`].
    pub fn start(line: impl Fn() -> String + Send + 'static) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let text = line();
                let mut err = std::io::stderr().lock();
                // Progress is best effort: a closed stderr must not stop the benchmark.
                let _ = if tty {
                    write!(err, "\r{text}\x1b[K")
                } else {
                    writeln!(err, "{text}")
                };
                let _ = err.flush();
            }
        });
        Self { task, tty }
    }

    /// Stops printing and clears the line.
    pub fn finish(self) {
        self.task.abort();
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
