//! The `pg` scenario: the database side (its table, roles, publication and paced writers), the
//! Postgres Changes subscribers' join and hold, and the server's `herald_pg_changes_total` counter.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herald_protocol::{JoinConfig, client};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};
use tokio_tungstenite::tungstenite::Message;

use crate::Context;
use crate::clock::Clock;
use crate::clock::due_at;
use crate::conn::{self, ConnError, Event, Handled, Shared, Ws};
use crate::error::ScenarioError;
use crate::fleet::{Reasons, Transport};
use crate::http;
use crate::measure::{Phase, missing, open_fleet, per_sec, secs, server_cpu, shortfall};
use crate::protocol::Protocol;
use crate::report::{Fields, Report, subscribers};
use crate::stats::round3;
use crate::target::Target;
use crate::token;

/// The table the scenario writes to and subscribes to.
pub const TABLE: &str = "herald_bench_pg";
/// Channel-name prefix: subscriber i joins `realtime:pg-bench-<i>`.
pub const PREFIX: &str = "pg-bench";
/// The publication Herald streams from.
const PUBLICATION: &str = "supabase_realtime";
/// The server's counter of changes read from the replication stream.
const METRIC: &str = "herald_pg_changes_total";
/// Longest wait for deliveries and ingestion after the last insert; the wait also ends when
/// neither grew for [`WAIT_QUIET`].
const WAIT_MAX: Duration = Duration::from_secs(30);
const WAIT_QUIET: Duration = Duration::from_secs(3);
/// Before the run, the server counts as idle once its change counter stood still for
/// [`IDLE_QUIET`], waiting at most [`IDLE_MAX`].
const IDLE_QUIET: Duration = Duration::from_secs(1);
const IDLE_MAX: Duration = Duration::from_secs(120);
/// How often `/metrics` is read.
const METRICS_EVERY: Duration = Duration::from_millis(50);

/// How a subscriber of the `pg` scenario joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct PgJoin {
    /// Claims groups: subscriber i belongs to group `i % groups`.
    pub groups: u64,
    /// Each binding filters on `grp=eq.<group>`.
    pub filter: bool,
    /// The filter is `grp=gte.<group>,grp=lte.<group>` instead: nothing for the index to look up.
    pub range: bool,
    /// Each subscriber should see only its group's rows (row-level security or filter).
    pub per_group: bool,
}

/// Options of a pg run: its command-line flags.
#[derive(clap::Args, Debug, Clone)]
pub struct PgOpts {
    /// The database the server streams from (loopback or Unix socket only).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Subscribers (subscriber i joins `realtime:pg-bench-<i>` as a member of group i % G); 0
    /// measures ingestion alone.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub subscribers: u64,
    /// Claims groups: group g's token has role `authenticated`, `sub` = `bench-g<g>` and
    /// `grp` = g; rows cycle over the groups.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub groups: u64,
    /// Row-level security on the table, with a policy letting each group see only its rows.
    #[arg(long)]
    pub rls: bool,
    /// Each subscriber's binding filters on its group (`grp=eq.<g>`).
    #[arg(long)]
    pub filter: bool,
    /// With --filter: the filter is `grp=gte.<g>,grp=lte.<g>`, which the index cannot look up, so
    /// each distinct filter is evaluated once per change.
    #[arg(long, requires = "filter")]
    pub range: bool,
    /// Rows per second in total; 0: as fast as the database takes them.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub rows_per_sec: u64,
    /// Rows per transaction (one multi-row INSERT each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rows_per_tx: u64,
    /// Seconds of inserting.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Size of each row's `body` in bytes.
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(65_536))]
    pub payload: usize,
    /// Writer connections sharing the rate (at most one per row per second when paced).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
}

impl PgOpts {
    /// How subscribers join.
    pub fn join(&self) -> PgJoin {
        PgJoin {
            groups: self.groups.max(1),
            filter: self.filter,
            range: self.range,
            per_group: self.rls || self.filter,
        }
    }
}

/// The token of group `group`: role `authenticated`, `sub` = `bench-g<group>`, `grp` = `group`.
fn group_token(secret: &str, group: u64) -> Result<String, token::TokenError> {
    let extra = json!({"sub": format!("bench-g{group}"), "grp": group});
    token::mint(secret, "authenticated", token::unix_now_secs(), extra)
}

/// Connects subscriber `index` and subscribes it with its group's token (minted from
/// `HERALD_JWT_SECRET`, which workers inherit): the join's reply and the `Subscribed to PostgreSQL`
/// system message, each step bounded by [`conn::OPEN_TIMEOUT`].
pub async fn open(
    target: &Target,
    ws_url: &str,
    source: Option<IpAddr>,
    index: u64,
    join: PgJoin,
) -> Result<Ws, ConnError> {
    let group = index % join.groups.max(1);
    let secret = token::secret()
        .ok_or_else(|| ConnError::Token(format!("{} is not set", token::SECRET_ENV)))?;
    let access_token = group_token(&secret, group).map_err(|e| ConnError::Token(e.to_string()))?;
    let filter = match (join.filter, join.range) {
        (false, _) => None,
        (true, false) => Some(format!("grp=eq.{group}")),
        (true, true) => Some(format!("grp=gte.{group},grp=lte.{group}")),
    };
    let config = JoinConfig {
        postgres_changes: vec![client::postgres_binding(
            "INSERT",
            "public",
            TABLE,
            filter.as_deref(),
        )],
        access_token: Some(access_token),
        ..JoinConfig::default()
    };
    let topic = format!("realtime:{PREFIX}-{index}");
    let mut ws = conn::within("connect", conn::connect(target, ws_url, source)).await?;
    let subscribe = async {
        ws.send(Message::text(client::join("1", &topic, &config)))
            .await?;
        let (mut joined, mut subscribed) = (false, false);
        conn::await_answer(&mut ws, Protocol::Phoenix, |text| {
            let frame = client::decode(text).filter(|f| f.topic == topic)?;
            match client::reply_to(&frame, "1") {
                Some(Ok(_)) => joined = true,
                Some(Err(reason)) => return Some(Err(ConnError::JoinRefused(reason))),
                None if client::system(&frame, "ok")
                    .is_some_and(|m| m == client::POSTGRES_SUBSCRIBED) =>
                {
                    subscribed = true;
                }
                None => {
                    let message = client::system(&frame, "error")?;
                    return Some(Err(ConnError::JoinRefused(format!(
                        "postgres_changes: {message}"
                    ))));
                }
            }
            (joined && subscribed).then_some(Ok(()))
        })
        .await
    };
    conn::within("join and subscription to PostgreSQL", subscribe).await?;
    Ok(ws)
}

/// The benchmark columns of an inserted row, as a `postgres_changes` frame carries them.
#[derive(Debug, Clone, Copy, Deserialize)]
struct RowChange {
    grp: i64,
    /// Wall-clock µs since 1970 just before the commit.
    sent_us: u64,
}

/// The row of a `postgres_changes` frame, if `text` is one about the benchmark table.
fn parse_change(text: &str) -> Option<RowChange> {
    let (table, row) = client::postgres_change::<RowChange>(&client::decode(text)?)?;
    table.is_none_or(|t| t == TABLE).then_some(row)
}

/// Wall-clock µs since 1970 on `clock` (its monotonic reading, lined up with the wall clock once).
fn clock_unix_us(clock: &Clock) -> u64 {
    clock.epoch_unix_ns().saturating_add(clock.now_ns()) / 1_000
}

/// Subscriber `index` of a run whose clock began at `epoch_unix_ns`: times every change of its own
/// group's rows (or of every row, without `per_group`), counts changes of other groups' rows as
/// `frames`, and skips rows stamped before the run (an earlier run's, still on their way). A
/// `system` error (the server dropped the bindings) fails it.
pub fn subscriber(
    index: u64,
    join: PgJoin,
    epoch_unix_ns: u64,
) -> impl FnMut(Event<'_>, &Shared) -> Handled {
    let group = i64::try_from(index % join.groups.max(1)).unwrap_or(i64::MAX);
    move |event, shared| {
        let Event::Text(text) = event else {
            return Ok(None);
        };
        if let Some(row) = parse_change(text) {
            let sent_ns = row.sent_us.saturating_mul(1_000);
            let foreign = join.per_group && row.grp != group;
            match sent_ns.checked_sub(epoch_unix_ns) {
                None => {}
                Some(_) if foreign => drop(shared.counters.frames.fetch_add(1, Relaxed)),
                Some(at) => shared.delivered(at),
            }
        } else if let Some(frame) = client::decode(text)
            && let Some(message) = client::system(&frame, "error")
        {
            return Err(format!("postgres_changes error: {message}"));
        }
        Ok(None)
    }
}

/// Adds `count` rows to `per_group`, row j in group `(first + j) % groups`.
fn add_rows(per_group: &mut [u64], first: u64, count: u64) {
    let groups = per_group.len() as u64;
    for (g, c) in (0..).zip(per_group.iter_mut()) {
        // Rows first + j for j < count, in group g: one per full cycle, plus one in the last.
        *c += count / groups + u64::from((g + groups - first % groups) % groups < count % groups);
    }
}

/// Deliveries expected when `joined[g]` subscribers of group g are subscribed and `rows[g]` rows of
/// group g were committed: each subscriber gets its group's rows with `per_group`, else all rows.
fn expected_deliveries(joined: &[u64], rows: &[u64], per_group: bool) -> u64 {
    match per_group {
        true => joined.iter().zip(rows).map(|(j, r)| j * r).sum(),
        false => joined.iter().sum::<u64>() * rows.iter().sum::<u64>(),
    }
}

/// The server's change counter on `/metrics` (0 while it has counted nothing), or why it cannot be
/// read.
async fn read_counter(client: &mut http::Client) -> Result<u64, String> {
    let resp = client.get("/metrics").await.map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("GET /metrics answered HTTP {}", resp.status));
    }
    // Prometheus text: `<name>[{labels}] <value>` lines, summed over label sets.
    let text = String::from_utf8_lossy(&resp.body);
    let values = text.lines().filter_map(|line| {
        let rest = line
            .strip_prefix(METRIC)
            .filter(|r| r.starts_with([' ', '{']))?;
        rest.rsplit(' ').next()?.parse::<f64>().ok()
    });
    Ok(values
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
        .sum())
}

/// Waits until the server's counter has not moved for [`IDLE_QUIET`] (an earlier run may have left
/// it a backlog, which would count as this run's ingestion), at most [`IDLE_MAX`]. `Err`: no
/// counter to read.
async fn wait_idle(probe: &mut http::Client) -> Result<(), String> {
    let started = Instant::now();
    let (mut last, mut last_change) = (read_counter(probe).await?, Instant::now());
    let mut told = false;
    while last_change.elapsed() < IDLE_QUIET {
        if started.elapsed() >= IDLE_MAX {
            let secs = IDLE_MAX.as_secs();
            eprintln!(
                "warning: the server is still ingesting changes after {secs} s; measuring anyway"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let value = read_counter(probe).await?;
        if value != last {
            if !told {
                eprintln!("pg: waiting for the server to finish ingesting earlier changes");
                told = true;
            }
            (last, last_change) = (value, Instant::now());
        }
    }
    Ok(())
}

/// What the metrics poller saw.
#[derive(Debug, Default, Clone, Copy)]
struct Ingest {
    value: u64,
    changed_ns: u64,
    reached_ns: u64,
    target: Option<u64>,
}

/// Parses `--database-url` and refuses hosts other than this machine's loopback (or a Unix socket).
pub(crate) fn database_config(url: &str) -> Result<tokio_postgres::Config, ScenarioError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| ScenarioError::DatabaseUrl(e.to_string()))?;
    let names = config.get_hosts().iter().filter_map(|h| match h {
        Host::Tcp(name) => Some(name.clone()),
        _ => None,
    });
    let addrs = config.get_hostaddrs().iter().map(IpAddr::to_string);
    for name in names.chain(addrs) {
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(ScenarioError::DatabaseUrl(format!(
                "{name} is not a loopback address: the benchmark only talks to this machine"
            )));
        }
    }
    Ok(config)
}

/// Opens one connection (its driver runs in a task of its own) and runs `sql` on it, saying in the
/// error that it was doing `what`.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    what: &str,
    sql: &str,
) -> Result<Client, ScenarioError> {
    let failed = |source| ScenarioError::Database {
        what: what.to_owned(),
        source,
    };
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|source| ScenarioError::Database {
                what: "cannot connect".to_owned(),
                source,
            })?;
    // Ends with the client; an error surfaces in the client's next statement.
    tokio::spawn(async move { drop(connection.await) });
    client.batch_execute(sql).await.map_err(failed)?;
    Ok(client)
}

/// The table, its grants, its row-level security and its publication, emptied.
fn setup_sql(rls: bool) -> String {
    let security = match rls {
        true => format!(
            "alter table {TABLE} enable row level security;
             drop policy if exists herald_bench_grp on {TABLE};
             create policy herald_bench_grp on {TABLE} for select to authenticated
               using (grp = (current_setting('request.jwt.claims', true)::json->>'grp')::int);"
        ),
        false => format!("alter table {TABLE} disable row level security;"),
    };
    format!(
        "create table if not exists {TABLE} (id bigserial primary key, grp int not null,
           sent_us bigint not null, body text);
         do $$ begin
           if not exists (select from pg_roles where rolname = 'authenticated') then
             create role authenticated nologin; end if;
           if not exists (select from pg_roles where rolname = 'anon') then
             create role anon nologin; end if;
           if not exists (select from pg_roles where rolname = 'service_role') then
             create role service_role nologin bypassrls; end if;
           if not exists (select from pg_publication where pubname = '{PUBLICATION}') then
             create publication {PUBLICATION} for table {TABLE};
           elsif not exists (select from pg_publication where pubname = '{PUBLICATION}'
                               and puballtables)
             and not exists (select from pg_publication_tables where pubname = '{PUBLICATION}'
                               and schemaname = 'public' and tablename = '{TABLE}') then
             alter publication {PUBLICATION} add table {TABLE};
           end if;
         end $$;
         grant select, insert on {TABLE} to authenticated, service_role;
         grant usage on sequence {TABLE}_id_seq to authenticated, service_role;
         grant usage on schema public to authenticated, anon, service_role;
         {security}
         truncate {TABLE} restart identity"
    )
}

/// The insert of one transaction: `$5` rows with groups cycling from `$1` modulo `$2`, `sent_us` =
/// `$3`, `body` = `$4`. One statement in autocommit is one transaction, committed on its return.
const INSERT: &str = "insert into herald_bench_pg (grp, sent_us, body) \
     select (($1::bigint + g) % $2::bigint)::int, $3::bigint, $4::text \
     from generate_series(0, $5::bigint - 1) as g";

/// How writer sessions commit: each commit flushed and handed to the replication stream at once,
/// whatever the database's default (with `synchronous_commit = off`, PostgreSQL sends committed
/// WAL only every `wal_writer_delay`, 200 ms by default, which would be measured as latency).
const WRITER_SESSION: &str = "set synchronous_commit = on";

/// What the writers committed, and what failed.
#[derive(Debug, Default)]
struct Tally {
    rows: u64,
    transactions: u64,
    errors: u64,
    reasons: Reasons,
    /// Rows committed per group.
    per_group: Vec<u64>,
}

/// What all writers share: writer w of `writers` commits its transactions of the schedule.
struct Writers {
    writers: u64,
    /// Rows per second of all writers together, or `None`: each as fast as it can.
    rate: Option<u64>,
    groups: u64,
    per_tx: u64,
    body: String,
    start: Instant,
    limit: Duration,
    clock: Clock,
    tally: Mutex<Tally>,
}

impl Writers {
    /// Paced, writer w commits transactions w, w + W, w + 2W, ... of the run's schedule (rows
    /// `rate * seconds` in all, transaction k due when its first row is, so that transactions
    /// spread evenly whatever the number of writers), then waits for the end of the run, so that
    /// the rate is measured over the whole run. Unpaced, it commits back to back until the
    /// deadline, its rows' groups cycling from an offset of its own.
    async fn write(self: Arc<Self>, client: Client, w: u64) {
        let statement = match client.prepare(INSERT).await {
            Ok(s) => s,
            Err(e) => return self.fail(1, &e),
        };
        let (groups, deadline) = (self.groups.max(1), self.start + self.limit);
        let total = self.rate.map(|r| r.saturating_mul(self.limit.as_secs()));
        let (mut next_tx, mut next_row) = (w, w * groups / self.writers.max(1));
        loop {
            let (first_row, count) = match (self.rate, total) {
                (Some(rate), Some(total)) => {
                    let first = next_tx.saturating_mul(self.per_tx);
                    if first >= total {
                        tokio::time::sleep_until(deadline.into()).await;
                        break;
                    }
                    next_tx += self.writers.max(1);
                    tokio::time::sleep_until(due_at(self.start, first, rate).into()).await;
                    (first, self.per_tx.min(total - first))
                }
                _ => {
                    next_row += self.per_tx;
                    (next_row - self.per_tx, self.per_tx)
                }
            };
            if Instant::now() >= deadline {
                break;
            }
            let sent_us = clock_unix_us(&self.clock);
            let [first, groups, sent_us, n] = [first_row % groups, groups, sent_us, count]
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&first, &groups, &sent_us, &self.body, &n];
            match client.execute(&statement, &params).await {
                Ok(_) => {
                    if let Ok(mut t) = self.tally.lock() {
                        (t.rows, t.transactions) = (t.rows + count, t.transactions + 1);
                        add_rows(&mut t.per_group, first_row, count);
                    }
                }
                Err(e) if client.is_closed() => break self.fail(count, &e),
                Err(e) => self.fail(count, &e),
            }
        }
    }

    /// Counts `rows` rows that failed, and why.
    fn fail(&self, rows: u64, e: &tokio_postgres::Error) {
        let reason = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        if let Ok(mut t) = self.tally.lock() {
            t.errors += rows.max(1);
            t.reasons.add(reason, rows.max(1));
        }
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: PgOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("pg")?;
    server_cpu(ctx)?;
    let secret = token::secret().ok_or(ScenarioError::NoSecret)?;
    group_token(&secret, 0)?;
    let config = database_config(&opts.database_url)?;
    let (join, groups) = (opts.join(), opts.groups.max(1));

    // The table, before anyone subscribes to it.
    let what = format!("preparing {TABLE} (table, roles, grants, publication {PUBLICATION})");
    let admin = connect(&config, &what, &setup_sql(opts.rls)).await?;

    // An earlier run's backlog would slow the subscribers down and count as this run's ingestion.
    let mut probe = http::Client::new(&ctx.target);
    let metrics = wait_idle(&mut probe).await;

    let spec = ctx.fleet_spec(Transport::Pg(join), PREFIX, groups, opts.subscribers, true);
    let (fleet, ready) = open_fleet(ctx, "pg", spec, true).await?;
    let processes = fleet.processes();

    // Writers connect before the clock starts; paced, no more writers than transactions.
    let writers = match opts.rows_per_sec {
        0 => opts.writers,
        r => opts
            .writers
            .min((r * opts.duration).div_ceil(opts.rows_per_tx).max(1)),
    };
    let mut clients = Vec::new();
    for _ in 0..writers {
        match connect(&config, WRITER_SESSION, WRITER_SESSION).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                fleet.stop().await;
                return Err(e);
            }
        }
    }

    // The server's counter before the first insert.
    let baseline = match metrics.and(read_counter(&mut probe).await) {
        Ok(v) => Some(v),
        Err(reason) => {
            eprintln!("note: no ingest figures: {reason}");
            None
        }
    };
    let seen = Arc::new(Mutex::new(Ingest {
        value: baseline.unwrap_or(0),
        ..Ingest::default()
    }));
    let poller = baseline.map(|_| {
        let (seen, clock) = (Arc::clone(&seen), ctx.clock);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Ok(value) = read_counter(&mut probe).await else {
                    continue;
                };
                let now = clock.now_ns();
                if let Ok(mut s) = seen.lock() {
                    if value != s.value {
                        (s.value, s.changed_ns) = (value, now);
                    }
                    if s.reached_ns == 0 && s.target.is_some_and(|t| value >= t) {
                        s.reached_ns = now;
                    }
                }
            }
        })
    });

    let (start, start_ns) = (Instant::now(), ctx.clock.now_ns());
    let plan = Arc::new(Writers {
        writers,
        rate: (opts.rows_per_sec > 0).then_some(opts.rows_per_sec),
        groups,
        per_tx: opts.rows_per_tx,
        body: "x".repeat(opts.payload),
        start,
        limit: Duration::from_secs(opts.duration),
        clock: ctx.clock,
        tally: Mutex::new(Tally {
            per_group: vec![0; usize::try_from(groups).unwrap_or(0)],
            ..Tally::default()
        }),
    });
    let phase = {
        let (live, plan, seen) = (fleet.live(), Arc::clone(&plan), Arc::clone(&seen));
        Phase::start(ctx, move || {
            let (l, secs) = (live.snapshot(), start.elapsed().as_secs_f64().max(1e-3));
            let (rows, errors) = plan.tally.lock().map_or((0, 0), |t| (t.rows, t.errors));
            let ingested = match (baseline, seen.lock().ok().map(|s| s.value)) {
                (Some(b), Some(v)) => v.saturating_sub(b).to_string(),
                _ => "-".to_owned(),
            };
            format!(
                "pg: inserted {rows} ({:.0}/s), ingested {ingested}, delivered {}, errors {}",
                rows as f64 / secs,
                l.delivered,
                errors
            )
        })
    };
    let mut tasks = JoinSet::new();
    for (w, client) in (0..writers).zip(clients) {
        tasks.spawn(Arc::clone(&plan).write(client, w));
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    if phase.unless_interrupted(all).await.is_none() {
        tasks.shutdown().await;
    }
    let insert_end = Instant::now();
    let tally = plan
        .tally
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    let (rows_inserted, per_group) = (tally.rows, &tally.per_group);
    let expected = expected_deliveries(&ready.joined(groups), per_group, join.per_group);
    if let (Ok(mut s), Some(b)) = (seen.lock(), baseline) {
        s.target = Some(b + rows_inserted);
        if s.value >= b + rows_inserted {
            s.reached_ns = ctx.clock.now_ns();
        }
    }

    // Wait for the deliveries and the server's counter.
    let live = fleet.live();
    let counted = || seen.lock().map_or(0, |s| s.value);
    let watch = || (live.snapshot().delivered, counted());
    let ingested = || baseline.is_none() || seen.lock().map_or(true, |s| s.reached_ns > 0);
    let all_in = |now: &(u64, u64)| now.0 >= expected && ingested();
    phase.settle((WAIT_MAX, WAIT_QUIET), watch, all_in).await;
    if let Some(poller) = poller {
        poller.abort();
    }
    let cpu = phase.end(ctx, "stopped inserting early");
    let done = fleet.stop().await;
    drop(admin);

    // Figures.
    let ingest = seen.lock().map(|s| *s).unwrap_or_default();
    let changes_ingested = baseline.map(|b| ingest.value.saturating_sub(b));
    let ingest_end_ns = match ingest.reached_ns {
        0 => ingest.changed_ns,
        t => t,
    };
    let ingest_secs = Some(secs(start_ns, ingest_end_ns)).filter(|s| *s > 0.0);
    let ingest_secs = ingest_secs.filter(|_| changes_ingested > Some(0));
    let ingest_rate = changes_ingested
        .zip(ingest_secs)
        .map(|(n, s)| round3(n as f64 / s));
    let insert_secs = insert_end.duration_since(start).as_secs_f64();
    let last_ns = done.last_delivery_ns.max(ctx.clock.ns_at(insert_end));
    let elapsed = secs(start_ns, last_ns);
    let delivered = done.delivered;
    let detail = subscribers(opts.subscribers, &ready, &done, processes).and(Fields(vec![
        ("groups", json!(groups)),
        ("rls", json!(opts.rls)),
        ("filter", json!(opts.filter)),
        ("range_filter", json!(opts.range)),
        ("writers", json!(writers)),
        ("rows_per_tx", json!(opts.rows_per_tx)),
        ("rate", json!(opts.rows_per_sec)),
        ("duration_secs", json!(opts.duration)),
        ("payload_bytes", json!(opts.payload)),
        ("rows_inserted", json!(rows_inserted)),
        ("transactions", json!(tally.transactions)),
        ("rows_per_sec", json!(per_sec(rows_inserted, insert_secs))),
        ("insert_errors", json!(tally.errors)),
        ("insert_error_reasons", json!(tally.reasons)),
        ("changes_ingested", json!(changes_ingested)),
        ("changes_ingested_per_sec", json!(ingest_rate)),
        ("ingest_secs", json!(ingest_secs.map(round3))),
        ("expected", json!(expected)),
        ("delivered", json!(delivered)),
        ("missing", json!(shortfall(expected, delivered))),
        ("foreign", json!(done.frames)),
        ("insert_secs", json!(round3(insert_secs))),
        ("elapsed_secs", json!(round3(elapsed))),
        ("server_cpu_secs", json!(cpu.secs())),
        ("cpu_us_per_row", json!(cpu.us_per(rows_inserted))),
    ]));
    let mut report = Report::deliveries("pg", (&ready, &done), &cpu, elapsed, detail);
    report.delivered_per_sec = report.delivered_per_sec.filter(|_| opts.subscribers > 0);
    report.errors += tally.errors + done.frames + missing(expected, delivered);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_must_stay_on_this_machine() {
        for ok in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgresql://u:p@localhost/db",
            "host=/var/run/postgresql user=postgres",
            "postgres://u@[::1]:5432/db",
        ] {
            assert!(database_config(ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://u@10.0.0.5/db",
            "postgres://u@db.example.com/db",
            "not a url ===",
        ] {
            assert!(
                matches!(database_config(bad), Err(ScenarioError::DatabaseUrl(_))),
                "{bad}"
            );
        }
    }
}
