//! The `churn` scenario (Phoenix only): connect → join → leave → close cycles at a fixed rate, their
//! times and failures, and the server's RSS sampled before, during and after.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_protocol::client;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Context;
use crate::clock::due_at;
use crate::conn::{self, ConnError};
use crate::error::ScenarioError;
use crate::fleet::Reasons;
use crate::measure::{Phase, per_sec, server_cpu, server_rss, shortfall};
use crate::payload;
use crate::report::{Fields, Report};
use crate::stats::{Latencies, round3};

/// Channel-name prefix of this scenario: `bench-churn-0`, `bench-churn-1`, ...
pub const PREFIX: &str = "bench-churn";
/// Longest one cycle may take, all steps together.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after the last cycle before the final RSS reading, so the server can let go of what the
/// last connections held.
const SETTLE: Duration = Duration::from_secs(2);
/// Interval between RSS samples during the run.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Options of a churn run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ChurnOpts {
    /// Cycles started per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rate: u64,
    /// Seconds of starting cycles.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Channels the cycles join in turn (cycle k joins `realtime:bench-churn-<k % C>`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
}

/// Cycles started, completed and failed, as they happen.
#[derive(Debug, Default)]
struct Live {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// One cycle: connect from `source`, join `topic`, leave it, close.
async fn cycle(
    ctx: &Context,
    source: Option<std::net::IpAddr>,
    topic: &str,
) -> Result<(), ConnError> {
    let mut ws = conn::within("connect", conn::connect(&ctx.target, &ctx.ws_url, source)).await?;
    let config = herald_protocol::JoinConfig::default();
    let join = conn::join(&mut ws, "1", topic, &config);
    conn::within("join", join).await?;
    let leave = conn::request(&mut ws, client::leave("1", "2", topic), topic, "2");
    conn::within("leave", leave).await.map_err(|e| match e {
        ConnError::JoinRefused(reason) => ConnError::Unexpected(format!("leave refused: {reason}")),
        e => e,
    })?;
    conn::close(ws).await
}

/// Samples the server's RSS once a second until aborted.
fn sample_rss(ctx: &Arc<Context>, samples: Arc<Mutex<Vec<u64>>>) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            if let Ok(Some(kib)) = server_rss(&ctx)
                && let Ok(mut s) = samples.lock()
            {
                s.push(kib);
            }
        }
    })
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: ChurnOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("churn")?;
    let ctx = Arc::new(ctx.clone());
    let rss_before = server_rss(&ctx)?;
    server_cpu(&ctx)?;
    let total = opts.rate * opts.duration;
    let live = Arc::new(Live::default());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = sample_rss(&ctx, Arc::clone(&samples));
    let phase = {
        let live = Arc::clone(&live);
        Phase::start(&ctx, move || {
            let started = live.started.load(Relaxed);
            let (completed, failed) = (live.completed.load(Relaxed), live.failed.load(Relaxed));
            format!(
                "churn: started {started}/{total}, completed {completed}, failed {failed}, {} in flight",
                started.saturating_sub(completed + failed)
            )
        })
    };

    let permits = Arc::new(Semaphore::new(ctx.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut times = Latencies::new();
    let mut reasons = Reasons::default();
    let mut account =
        |result: Result<Result<Duration, String>, tokio::task::JoinError>| match result
            .unwrap_or_else(|e| Err(format!("cycle task failed: {e}")))
        {
            Ok(took) => {
                live.completed.fetch_add(1, Relaxed);
                times.record_us(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
            }
            Err(reason) => {
                live.failed.fetch_add(1, Relaxed);
                reasons.add(reason, 1);
            }
        };
    let start = Instant::now();
    for k in 0..total {
        if phase.interrupted() {
            break;
        }
        tokio::time::sleep_until(due_at(start, k, opts.rate).into()).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let ctx = Arc::clone(&ctx);
        let source = ctx.target.source_for(k, ctx.per_address);
        let topic = format!(
            "realtime:{}",
            payload::channel_name(PREFIX, k % opts.channels.max(1))
        );
        tasks.spawn(async move {
            let _permit = permit;
            let began = Instant::now();
            match tokio::time::timeout(CYCLE_TIMEOUT, cycle(&ctx, source, &topic)).await {
                Ok(Ok(())) => Ok(began.elapsed()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("cycle timed out".to_owned()),
            }
        });
        live.started.fetch_add(1, Relaxed);
        while let Some(result) = tasks.try_join_next() {
            account(result);
        }
    }
    let started_all = start.elapsed().as_secs_f64();
    while let Some(result) = tasks.join_next().await {
        account(result);
    }
    let run_secs = start.elapsed().as_secs_f64();
    let cpu = phase.end(&ctx, "stopped starting cycles early");
    tokio::time::sleep(SETTLE).await;
    sampler.abort();
    let rss_after = server_rss(&ctx).unwrap_or(None);
    let rss_samples: Vec<u64> = samples.lock().map(|s| s.clone()).unwrap_or_default();

    let started = live.started.load(Relaxed);
    let completed = live.completed.load(Relaxed);
    let failed = live.failed.load(Relaxed);
    let ends = [rss_before, rss_after];
    let rss_peak = rss_samples
        .iter()
        .copied()
        .chain(ends.into_iter().flatten())
        .max();
    let growth = rss_after.zip(rss_before).map(|(a, b)| shortfall(a, b));
    let cycles_per_sec = per_sec(completed, run_secs).unwrap_or(0.0);
    let detail = Fields(vec![
        ("rate", json!(opts.rate)),
        ("duration_secs", json!(opts.duration)),
        ("channels", json!(opts.channels)),
        ("concurrency", json!(ctx.concurrency)),
        ("started", json!(started)),
        ("completed", json!(completed)),
        ("failed", json!(failed)),
        ("failure_reasons", json!(reasons)),
        ("cycles_per_sec", json!(cycles_per_sec)),
        ("start_secs", json!(round3(started_all))),
        ("run_secs", json!(round3(run_secs))),
        ("server_rss_before_kib", json!(rss_before)),
        ("server_rss_peak_kib", json!(rss_peak)),
        ("server_rss_after_kib", json!(rss_after)),
        ("rss_growth_kib", json!(growth)),
        ("rss_samples_kib", json!(rss_samples)),
        ("server_cpu_secs", json!(cpu.secs())),
        ("cpu_us_per_cycle", json!(cpu.us_per(completed))),
    ]);
    Ok(Report {
        connections: completed,
        latency_ms: times.summary(),
        server_cpu_pct: cpu.pct(),
        errors: failed,
        ..Report::new("churn", detail)
    })
}
