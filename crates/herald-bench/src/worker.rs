//! The fleet's processes. One process may hold only about 19,000 sockets (the open-file limit), so
//! larger fleets re-execute this binary with the same command line and, in the environment variable
//! `HERALD_BENCH_WORKER`, the share of the fleet to open (its `FleetSpec` as JSON, API key
//! included); a fleet one process holds is served by a task of this process over an in-memory pipe,
//! the same way. A share is opened by [`serve`], which speaks one JSON object per output line:
//! `progress` lines while it runs, `ready` once every connection was tried, `done` after the parent
//! writes `stop` to its input (or closes it). The parent may write `go <ns>` before that to start
//! the presence members. This module owns both ends of that exchange.

use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::conn::Shared;
use crate::fleet::{
    Counters, DoneStats, FleetSpec, Live, LiveHandle, ReadyStats, Reasons, connect_all, shares,
};

/// The environment variable that makes this process a worker.
const WORKER_ENV: &str = "HERALD_BENCH_WORKER";
/// How often a share reports its counts.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);
/// How long the parent waits for a share's `done` line after `stop`.
const DONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopped connections get to close before they are dropped.
const STOP_GRACE: Duration = Duration::from_secs(10);
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
    /// The child had no stdin or stdout pipe.
    #[error("worker process has no stdin or stdout pipe")]
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

/// One line of the exchange.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Line {
    Progress(Live),
    Ready(ReadyStats),
    Done(DoneStats),
}

/// The connections of a fleet, in this process or spread over worker processes.
pub struct Fleet {
    parts: Vec<Part>,
}

/// One share of a fleet, seen from the parent.
struct Part {
    /// The worker process; `None` for the share this process serves.
    child: Option<Child>,
    input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    counters: Arc<Counters>,
    count: u64,
    ready_rx: Option<oneshot::Receiver<ReadyStats>>,
    ready: Option<ReadyStats>,
    done_rx: oneshot::Receiver<DoneStats>,
}

impl Part {
    /// A share of `count` connections that reads commands from `input` and reports on `output`.
    fn new(
        child: Option<Child>,
        input: impl AsyncWrite + Send + Unpin + 'static,
        output: impl AsyncRead + Send + Unpin + 'static,
        count: u64,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(read_lines(output, Arc::clone(&counters), ready_tx, done_tx));
        Self {
            child,
            input: Some(Box::new(input)),
            counters,
            count,
            ready_rx: Some(ready_rx),
            ready: None,
            done_rx,
        }
    }

    /// Writes `line` to the share (one that has ended has closed its end: nothing more to say).
    async fn tell(&mut self, line: &str) {
        if let Some(input) = self.input.as_mut() {
            let _ = input.write_all(line.as_bytes()).await;
            let _ = input.flush().await;
        }
    }
}

impl Fleet {
    /// Starts opening `spec`: in this process when `spec.count <= per_process`, else in
    /// `ceil(count / per_process)` workers.
    pub fn start(spec: FleetSpec, per_process: u64) -> Result<Self, WorkerError> {
        if spec.count <= per_process {
            let count = spec.count;
            let (ours, theirs) = tokio::io::duplex(1 << 16);
            let (their_input, their_output) = tokio::io::split(theirs);
            tokio::spawn(serve_on(spec, BufReader::new(their_input), their_output));
            let (output, input) = tokio::io::split(ours);
            let parts = vec![Part::new(None, input, output, count)];
            return Ok(Self { parts });
        }
        let exe = std::env::current_exe().map_err(WorkerError::CurrentExe)?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let mut parts = Vec::new();
        for (base, count) in shares(spec.base, spec.count, per_process) {
            // Its share of the concurrency, so that all together open about as many at once.
            let concurrency =
                u128::from(count) * spec.ctx.concurrency as u128 / u128::from(spec.count.max(1));
            let mut share = FleetSpec {
                base,
                count,
                ..spec.clone()
            };
            share.ctx.concurrency = usize::try_from(concurrency).unwrap_or(1).max(1);
            let mut child = Command::new(&exe)
                .args(&args)
                .env(WORKER_ENV, serde_json::to_string(&share)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(WorkerError::Spawn)?;
            let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
            let (stdin, stdout) = stdin.zip(stdout).ok_or(WorkerError::NoPipe)?;
            parts.push(Part::new(Some(child), stdin, stdout, count));
        }
        Ok(Self { parts })
    }

    /// Number of client processes holding connections.
    pub fn processes(&self) -> usize {
        self.parts.len()
    }

    /// A handle on the summed live counts.
    pub fn live(&self) -> LiveHandle {
        LiveHandle(self.parts.iter().map(|p| Arc::clone(&p.counters)).collect())
    }

    /// Waits until every connection has been tried; a share that ends first counts all its
    /// connections as failed.
    pub async fn wait_ready(&mut self) -> ReadyStats {
        for p in &mut self.parts {
            if let Some(rx) = p.ready_rx.take() {
                let ready = rx.await.unwrap_or_else(|_| {
                    let mut reasons = Reasons::default();
                    reasons.add("worker process ended before reporting".to_owned(), p.count);
                    ReadyStats {
                        failed: p.count,
                        reasons,
                        ..ReadyStats::default()
                    }
                });
                p.ready = Some(ready);
            }
        }
        ReadyStats::combine(self.parts.iter().filter_map(|p| p.ready.clone()))
    }

    /// Tells presence members to join and track now; `at_ns` is the clock time their completion is
    /// measured from.
    pub async fn go(&mut self, at_ns: u64) {
        for p in &mut self.parts {
            p.tell(&format!("go {at_ns}\n")).await;
        }
    }

    /// Stops every connection and collects the results.
    pub async fn stop(mut self) -> DoneStats {
        for p in &mut self.parts {
            p.tell("stop\n").await;
            p.input = None;
        }
        // One deadline for all: shares stop in parallel, so a stuck one costs the timeout once.
        let done_by = tokio::time::Instant::now() + DONE_TIMEOUT;
        let mut all = DoneStats::default();
        for p in self.parts {
            match tokio::time::timeout_at(done_by, p.done_rx).await {
                Ok(Ok(done)) => all.merge(done),
                _ => {
                    let held = p.ready.as_ref().map_or(0, |r| r.established);
                    eprintln!(
                        "herald bench: a worker gave no result; counting its {held} connections as lost"
                    );
                    all.disconnects += held;
                }
            }
            if let Some(mut child) = p.child
                && tokio::time::timeout(EXIT_TIMEOUT, child.wait())
                    .await
                    .is_err()
            {
                // `kill` also reaps the child.
                let _ = child.kill().await;
            }
        }
        all
    }
}

async fn read_lines(
    output: impl AsyncRead + Unpin,
    counters: Arc<Counters>,
    ready_tx: oneshot::Sender<ReadyStats>,
    done_tx: oneshot::Sender<DoneStats>,
) {
    let mut lines = BufReader::new(output).lines();
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
    let stdin = BufReader::new(tokio::io::stdin());
    match serve_on(spec, stdin, tokio::io::stdout()).await {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Opens `spec`, reads commands from `input` and reports on `out`; on `stop` (or the end of
/// `input`) stops every connection, the opening too if still under way.
async fn serve_on(
    spec: FleetSpec,
    input: impl AsyncBufRead + Unpin,
    mut out: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let shared = Arc::new(Shared::new(spec.record_latency, spec.ctx.clock));
    let (stop, stop_rx) = watch::channel(false);
    let (go, go_rx) = watch::channel(None);
    let mut connector = tokio::spawn(connect_all(spec, Arc::clone(&shared), stop_rx, go_rx));
    let (mut holders, mut input) = (None, input.lines());
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    // A write error means the parent is gone: stop, and say nothing more.
    let mut parent_gone = false;
    while !parent_gone {
        let progress = Line::Progress(shared.counters.snapshot());
        tokio::select! {
            _ = tick.tick() => parent_gone = emit(&mut out, &progress).await.is_err(),
            opened = &mut connector, if holders.is_none() => {
                let (ready, set) = opened.unwrap_or_else(|e| connector_failed(&shared, &e));
                holders = Some(set);
                parent_gone = emit(&mut out, &progress).await.is_err()
                    || emit(&mut out, &Line::Ready(ready)).await.is_err();
            }
            line = input.next_line() => match line {
                Ok(Some(l)) if l.trim() != "stop" => {
                    if let Some(at_ns) = l.trim().strip_prefix("go ").and_then(|n| n.parse().ok()) {
                        let _ = go.send(Some(at_ns));
                    }
                }
                // `stop`, or end of input because the parent exited.
                _ => break,
            },
        }
    }
    let _ = stop.send(true);
    let mut holders = match holders {
        Some(set) => set,
        None => connector
            .await
            .map_or_else(|_| JoinSet::new(), |(_, set)| set),
    };
    let drain = async { while holders.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(STOP_GRACE, drain).await;
    match parent_gone {
        true => Ok(()),
        false => emit(&mut out, &Line::Done(DoneStats::of(&shared))).await,
    }
}

/// The connector only ends abnormally if it panicked: what the counters saw.
fn connector_failed(shared: &Shared, e: &tokio::task::JoinError) -> (ReadyStats, JoinSet<()>) {
    let live = shared.counters.snapshot();
    let mut reasons = Reasons::default();
    reasons.add(format!("connector task failed: {e}"), 1);
    let (established, failed) = (live.established, live.failed);
    let ready = ReadyStats {
        established,
        failed,
        reasons,
        ..ReadyStats::default()
    };
    (ready, JoinSet::new())
}

async fn emit(out: &mut (impl AsyncWrite + Unpin), line: &Line) -> io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
    text.push('\n');
    out.write_all(text.as_bytes()).await?;
    out.flush().await
}
