//! The `authz` scenario: joins of private channels, each decided by a row-level security policy on
//! `realtime.messages` (Realtime Authorization). Connections join and leave channels of their own
//! user's room as fast as the answers come; joins per second, join latency, and the CPU the server
//! and the database spend per join.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use herald_protocol::{JoinConfig, client};
use serde_json::json;
use tokio::task::JoinSet;

use crate::Context;
use crate::conn::{self, ConnError};
use crate::error::ScenarioError;
use crate::fleet::Reasons;
use crate::http;
use crate::measure::{Phase, per_sec, server_cpu};
use crate::pg::{connect, database_config};
use crate::procfs;
use crate::report::{Fields, Report};
use crate::stats::{Latencies, round3};
use crate::token;

/// Topic prefix: connection i joins `realtime:bench-authz:u<i>:<k>` for k = 0, 1, 2, ...
pub const PREFIX: &str = "bench-authz";
/// How long the server may take to report its database objects installed.
const READY_MAX: Duration = Duration::from_secs(60);

/// The policy the joins run: a user reads the channels of their own room, as Supabase's docs write
/// a per-user rule. The role and its grants are made first (a role created after Herald made
/// `realtime.messages` has no grant on it).
const POLICY: &str = "do $$ begin
      if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin; end if;
    end $$;
    grant usage on schema realtime to authenticated;
    grant select, insert on realtime.messages to authenticated;
    drop policy if exists herald_bench_authz on realtime.messages;
    create policy herald_bench_authz on realtime.messages for select to authenticated
      using ((select realtime.topic()) like 'bench-authz:' || (select auth.jwt() ->> 'sub') || ':%');";

/// Options of an authz run: its command-line flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthzOpts {
    /// The database the server checks its policies in (loopback or Unix socket only).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Connections joining at once, each as its own user (`sub` = `u<i>`).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections: u64,
    /// Seconds of joining.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
}

/// Joins that succeeded, and their times.
#[derive(Default)]
struct Live {
    joins: AtomicU64,
    refused: AtomicU64,
}

/// CPU ticks of every database backend (the server's pooled connections, the WAL sender, ...),
/// by process id, read from `/proc` (the database runs on this machine).
async fn backend_ticks(db: &tokio_postgres::Client) -> Result<Vec<(u32, u64)>, ScenarioError> {
    let rows = db
        .query(
            "select pid from pg_stat_activity where pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|source| ScenarioError::Database {
            what: "reading pg_stat_activity".to_owned(),
            source,
        })?;
    Ok(rows
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
        .filter_map(|pid| procfs::cpu_ticks(pid).ok().map(|t| (pid, t)))
        .collect())
}

/// Ticks spent between two readings (a backend that started in between counts from zero).
fn ticks_between(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    after
        .iter()
        .map(|(pid, t)| {
            let was = before.iter().find(|(p, _)| p == pid).map_or(0, |(_, t)| *t);
            t.saturating_sub(was)
        })
        .sum()
}

/// Waits for the server's `/healthz` to say its database objects are installed.
async fn wait_ready(ctx: &Context) -> Result<(), ScenarioError> {
    let mut probe = http::Client::new(&ctx.target);
    let started = Instant::now();
    loop {
        if let Ok(resp) = probe.get("/healthz").await
            && let Ok(health) = serde_json::from_slice::<serde_json::Value>(&resp.body)
            && health.pointer("/postgres/ready") == Some(&json!(true))
        {
            return Ok(());
        }
        if started.elapsed() > READY_MAX {
            return Err(ScenarioError::Setup(
                "the server did not report postgres.ready on /healthz: start it with a database (--database-url)".to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One connection's loop: join `bench-authz:u<i>:<k>` privately with its user's token, leave it,
/// the next k, until `until`.
async fn joiner(
    ctx: Arc<Context>,
    index: u64,
    secret: Arc<str>,
    until: Instant,
    live: Arc<Live>,
) -> Result<Latencies, ConnError> {
    let access_token = token::mint(
        &secret,
        "authenticated",
        token::unix_now_secs(),
        json!({"sub": format!("u{index}")}),
    )
    .map_err(|e| ConnError::Token(e.to_string()))?;
    let source = ctx.target.source_for(index, ctx.per_address);
    let mut ws = conn::within("connect", conn::connect(&ctx.target, &ctx.ws_url, source)).await?;
    let config = JoinConfig {
        private: true,
        access_token: Some(access_token),
        ..JoinConfig::default()
    };
    let mut times = Latencies::new();
    let mut k = 0u64;
    while Instant::now() < until {
        let topic = format!("realtime:{PREFIX}:u{index}:{k}");
        let (join_ref, leave_ref) = ((2 * k + 1).to_string(), (2 * k + 2).to_string());
        let began = Instant::now();
        match conn::within("join", conn::join(&mut ws, &join_ref, &topic, &config)).await {
            Ok(()) => {
                times.record_us(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
                live.joins.fetch_add(1, Relaxed);
            }
            Err(ConnError::JoinRefused(reason)) => {
                live.refused.fetch_add(1, Relaxed);
                return Err(ConnError::JoinRefused(reason));
            }
            Err(e) => return Err(e),
        }
        let leave = client::leave(&join_ref, &leave_ref, &topic);
        conn::within("leave", conn::request(&mut ws, leave, &topic, &leave_ref)).await?;
        k += 1;
    }
    conn::close(ws).await?;
    Ok(times)
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: AuthzOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("authz")?;
    let secret: Arc<str> = token::secret().ok_or(ScenarioError::NoSecret)?.into();
    wait_ready(ctx).await?;
    let db = connect(
        &database_config(&opts.database_url)?,
        "creating the policy",
        POLICY,
    )
    .await?;
    let ctx = Arc::new(ctx.clone());
    let live = Arc::new(Live::default());
    let phase = {
        let live = Arc::clone(&live);
        Phase::start(&ctx, move || {
            format!("authz: {} joins", live.joins.load(Relaxed))
        })
    };
    server_cpu(&ctx)?;
    let db_before = backend_ticks(&db).await?;
    let start = Instant::now();
    let until = start + Duration::from_secs(opts.duration);
    let mut tasks = JoinSet::new();
    for i in 0..opts.connections {
        let (ctx, secret, live) = (Arc::clone(&ctx), Arc::clone(&secret), Arc::clone(&live));
        tasks.spawn(joiner(ctx, i, secret, until, live));
    }
    let mut times = Latencies::new();
    let mut reasons = Reasons::default();
    let mut failed = 0u64;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(t)) => times.add_pairs(&t.to_pairs()),
            Ok(Err(e)) => {
                failed += 1;
                reasons.add(e.to_string(), 1);
            }
            Err(e) => {
                failed += 1;
                reasons.add(format!("joiner task failed: {e}"), 1);
            }
        }
    }
    let run_secs = start.elapsed().as_secs_f64();
    let cpu = phase.end(&ctx, "stopped joining early");
    let db_ticks = ticks_between(&db_before, &backend_ticks(&db).await?);
    let joins = live.joins.load(Relaxed);
    let (_, ticks_per_sec) = procfs::page_size_and_clock_ticks();
    let db_cpu_secs = db_ticks as f64 / ticks_per_sec.max(1) as f64;
    let db_us_per_join = (joins > 0).then(|| round3(db_cpu_secs * 1e6 / joins as f64));
    let detail = Fields(vec![
        ("connections", json!(opts.connections)),
        ("duration_secs", json!(opts.duration)),
        ("joins", json!(joins)),
        ("refused", json!(live.refused.load(Relaxed))),
        ("failed_connections", json!(failed)),
        ("failure_reasons", json!(reasons)),
        ("joins_per_sec", json!(per_sec(joins, run_secs))),
        ("run_secs", json!(round3(run_secs))),
        ("server_cpu_secs", json!(cpu.secs())),
        ("cpu_us_per_join", json!(cpu.us_per(joins))),
        ("db_cpu_secs", json!(round3(db_cpu_secs))),
        ("db_cpu_us_per_join", json!(db_us_per_join)),
    ]);
    Ok(Report {
        connections: opts.connections,
        latency_ms: times.summary(),
        server_cpu_pct: cpu.pct(),
        errors: failed,
        ..Report::new("authz", detail)
    })
}
