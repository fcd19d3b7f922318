//! Worker processes. One process may hold only about 19,000 sockets (the open-file limit), so larger
//! fleets re-execute this binary with the same command line and, in the environment variable
//! `HERALD_BENCH_WORKER`, the share of the fleet to open (its `FleetSpec` as JSON, API key
//! included). A worker opens its share and speaks one JSON object per stdout line:
//! `progress` lines while it runs, `ready` once every connection was tried, `done` after the parent
//! writes `stop` to its stdin (or closes it). The parent may write `go <ns>` before that to start
//! the presence members (`Fleet::go`). This module owns both ends of that exchange.

use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

use crate::fleet::{
    Counters, DoneStats, FleetSpec, Live, LiveHandle, LocalFleet, ReadyStats, Reasons, shares,
};

/// The environment variable that makes this process a worker.
const WORKER_ENV: &str = "HERALD_BENCH_WORKER";

/// How often a worker reports its counts.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long the parent waits for a worker's `done` line after `stop`.
const DONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the parent waits for a worker to exit after its `done` line.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The path of the running executable is unknown.
    #[error("cannot find this executable to start workers: {0}")]
    CurrentExe(io::Error),
    /// Spawning failed.
    #[error("cannot start a worker process: {}", crate::error::io_with_remedy(.0))]
    Spawn(io::Error),
    /// The child had no stdout pipe.
    #[error("worker process has no stdout pipe")]
    NoPipe,
    /// The share handed to the worker could not be written or read.
    #[error("the worker's share of the fleet ({WORKER_ENV}): {0}")]
    Spec(#[from] serde_json::Error),
}

/// The share of a fleet this process opens as a worker, if it is one.
pub fn assigned() -> Result<Option<FleetSpec>, WorkerError> {
    let spec = std::env::var(WORKER_ENV).ok();
    Ok(spec.map(|s| serde_json::from_str(&s)).transpose()?)
}

/// One line of the worker protocol.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Line {
    Progress(Live),
    Ready(ReadyStats),
    Done(DoneStats),
}

/// Worker processes holding a fleet's connections, seen from the parent.
#[derive(Debug)]
pub struct WorkerFleet {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    counters: Arc<Counters>,
    count: u64,
    ready_rx: Option<oneshot::Receiver<ReadyStats>>,
    ready: Option<ReadyStats>,
    done_rx: oneshot::Receiver<DoneStats>,
}

impl WorkerFleet {
    /// Starts one worker per share of at most `per_process` connections.
    pub fn spawn(spec: &FleetSpec, per_process: u64) -> Result<Self, WorkerError> {
        let exe = std::env::current_exe().map_err(WorkerError::CurrentExe)?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let mut workers = Vec::new();
        for (base, count) in shares(spec.base, spec.count, per_process) {
            // Its share of the concurrency, so that all together open about as many at once.
            let share =
                u128::from(count) * spec.concurrency as u128 / u128::from(spec.count.max(1));
            let concurrency = usize::try_from(share).unwrap_or(1).max(1);
            let share = FleetSpec {
                base,
                count,
                concurrency,
                ..spec.clone()
            };
            let mut child = Command::new(&exe)
                .args(&args)
                .env(WORKER_ENV, serde_json::to_string(&share)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(WorkerError::Spawn)?;
            let stdout = child.stdout.take().ok_or(WorkerError::NoPipe)?;
            let counters = Arc::new(Counters::default());
            let (ready_tx, ready_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            tokio::spawn(read_lines(stdout, Arc::clone(&counters), ready_tx, done_tx));
            workers.push(Worker {
                stdin: child.stdin.take(),
                child,
                counters,
                count,
                ready_rx: Some(ready_rx),
                ready: None,
                done_rx,
            });
        }
        Ok(Self { workers })
    }

    /// Number of worker processes.
    pub fn processes(&self) -> usize {
        self.workers.len()
    }

    /// A handle on the summed live counts.
    pub fn live(&self) -> LiveHandle {
        LiveHandle(
            self.workers
                .iter()
                .map(|w| Arc::clone(&w.counters))
                .collect(),
        )
    }

    /// Waits for every worker's `ready` line; a worker that exits first counts its whole share as
    /// failed.
    pub async fn wait_ready(&mut self) -> ReadyStats {
        for w in &mut self.workers {
            if let Some(rx) = w.ready_rx.take() {
                let ready = rx.await.unwrap_or_else(|_| {
                    let mut reasons = Reasons::default();
                    reasons.add("worker process ended before reporting".to_owned(), w.count);
                    ReadyStats {
                        failed: w.count,
                        reasons,
                        ..ReadyStats::default()
                    }
                });
                w.ready = Some(ready);
            }
        }
        ReadyStats::combine(self.workers.iter().filter_map(|w| w.ready.clone()))
    }

    /// Tells every worker's presence members to join and track now (a worker whose stdin is closed
    /// has exited; its members are already counted as lost).
    pub async fn go(&mut self, at_ns: u64) {
        let line = format!("go {at_ns}\n");
        for w in &mut self.workers {
            if let Some(stdin) = w.stdin.as_mut() {
                let _ = stdin.write_all(line.as_bytes()).await;
                let _ = stdin.flush().await;
            }
        }
    }

    /// Tells every worker to stop and collects their results.
    pub async fn stop(mut self) -> DoneStats {
        for w in &mut self.workers {
            if let Some(mut stdin) = w.stdin.take() {
                // A worker that already exited has closed its end; nothing more to tell it.
                let _ = stdin.write_all(b"stop\n").await;
                let _ = stdin.flush().await;
            }
        }
        // One deadline for all: workers stop in parallel, so a stuck one costs the timeout once.
        let done_by = tokio::time::Instant::now() + DONE_TIMEOUT;
        let mut all = DoneStats::default();
        for mut w in self.workers {
            match tokio::time::timeout_at(done_by, w.done_rx).await {
                Ok(Ok(done)) => all.merge(done),
                _ => {
                    let held = w.ready.as_ref().map_or(0, |r| r.established);
                    eprintln!(
                        "herald bench: a worker gave no result; counting its {held} connections as lost"
                    );
                    all.disconnects += held;
                }
            }
            if tokio::time::timeout(EXIT_TIMEOUT, w.child.wait())
                .await
                .is_err()
            {
                // `kill` also reaps the child.
                let _ = w.child.kill().await;
            }
        }
        all
    }
}

async fn read_lines(
    stdout: ChildStdout,
    counters: Arc<Counters>,
    ready_tx: oneshot::Sender<ReadyStats>,
    done_tx: oneshot::Sender<DoneStats>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let (mut ready_tx, mut done_tx) = (Some(ready_tx), Some(done_tx));
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Progress(live)) => counters.store(live),
            Ok(Line::Ready(ready)) => {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(ready);
                }
            }
            Ok(Line::Done(done)) => {
                if let Some(tx) = done_tx.take() {
                    let _ = tx.send(done);
                }
            }
            // Anything else the binary printed (a log line, say) is passed on for the operator.
            Err(_) => eprintln!("{line}"),
        }
    }
}

/// Runs this process as a worker: opens `spec`, reports on stdout, stops on `stop` or end of stdin.
pub async fn serve(spec: FleetSpec) -> io::Result<()> {
    // Ctrl-C reaches the whole process group; a worker keeps its connections until the parent, which
    // handles Ctrl-C, tells it to stop (or dies, which closes the worker's stdin).
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let mut fleet = LocalFleet::start(spec);
    let counters = fleet.counters();
    let mut out = tokio::io::stdout();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut ready_sent = false;
    // A write error means the parent is gone: stop, and say nothing more.
    let mut parent_gone = false;
    while !parent_gone {
        tokio::select! {
            _ = tick.tick() => {
                parent_gone = emit(&mut out, &Line::Progress(counters.snapshot())).await.is_err();
            }
            ready = fleet.wait_ready(), if !ready_sent => {
                parent_gone = emit(&mut out, &Line::Progress(counters.snapshot())).await.is_err()
                    || emit(&mut out, &Line::Ready(ready)).await.is_err();
                ready_sent = true;
            }
            line = stdin.next_line() => match line {
                Ok(Some(l)) if l.trim() != "stop" => {
                    if let Some(at_ns) = l.trim().strip_prefix("go ").and_then(|n| n.parse().ok()) {
                        fleet.go(at_ns);
                    }
                }
                // `stop`, or end of input because the parent exited.
                _ => break,
            },
        }
    }
    let done = fleet.stop().await;
    if parent_gone {
        return Ok(());
    }
    match emit(&mut out, &Line::Done(done)).await {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

async fn emit(out: &mut tokio::io::Stdout, line: &Line) -> io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
    text.push('\n');
    out.write_all(text.as_bytes()).await?;
    out.flush().await
}
