//! The `pg` scenario: the database side (its table, roles, publication and paced writers), the
//! Postgres Changes subscribers' join and hold, and the server's `herald_pg_changes_total` counter.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herald_protocol::{JoinConfig, PostgresBinding, client};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};
use tokio_tungstenite::tungstenite::Message;

use crate::Context;
use crate::clock::Clock;
use crate::conn::{self, ConnError, Shared, Ws};
use crate::error::ScenarioError;
use crate::fleet::{Reasons, Transport};
use crate::http;
use crate::measure::{
    self, CpuWindow, Interrupt, open_fleet, per_sec, server_cpu, settle, shortfall,
};
use crate::pace::due_at;
use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::report::{Detail, PgDetail, Report, Subscribers};
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
/// The system message that tells a subscriber its bindings are live.
const SUBSCRIBED: &str = "Subscribed to PostgreSQL";
/// Longest wait for deliveries and ingestion after the last insert.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// The wait also ends when neither deliveries nor the server's counter grew for this long.
const WAIT_QUIET: Duration = Duration::from_secs(3);
/// Before the run, the server counts as idle once its change counter stood still this long...
const IDLE_QUIET: Duration = Duration::from_secs(1);
/// ... waiting at most this long.
const IDLE_MAX: Duration = Duration::from_secs(120);
/// How often `/metrics` is read.
const METRICS_EVERY: Duration = Duration::from_millis(50);

/// How a subscriber of the `pg` scenario joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgJoin {
    /// Claims groups: subscriber i belongs to group `i % groups`.
    pub groups: u64,
    /// Each binding filters on `grp=eq.<group>`.
    pub filter: bool,
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
            per_group: self.rls || self.filter,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers.

/// The topic of subscriber `index`.
pub fn topic(index: u64) -> String {
    format!("realtime:{PREFIX}-{index}")
}

/// The token of group `group`: role `authenticated`, `sub` = `bench-g<group>`, `grp` = `group`.
pub fn group_token(secret: &str, group: u64) -> Result<String, token::TokenError> {
    let mut extra = serde_json::Map::new();
    extra.insert("sub".to_owned(), format!("bench-g{group}").into());
    extra.insert("grp".to_owned(), group.into());
    token::mint_with(secret, "authenticated", token::unix_now_secs(), &extra)
}

/// The `phx_join` of a subscriber of `group` on `topic`, carrying its own `access_token`.
pub fn join_frame(topic: &str, group: u64, filter: bool, access_token: &str) -> String {
    let mut binding = serde_json::Map::new();
    binding.insert("event".into(), "INSERT".into());
    binding.insert("schema".into(), "public".into());
    binding.insert("table".into(), TABLE.into());
    if filter {
        binding.insert("filter".into(), format!("grp=eq.{group}").into());
    }
    let config = JoinConfig {
        postgres_changes: vec![PostgresBinding { raw: binding }],
        access_token: Some(access_token.to_owned()),
        ..JoinConfig::default()
    };
    client::join("1", topic, &config)
}

/// What a server frame says about a subscription under way.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The join was accepted.
    Joined,
    /// The join was refused, with the reason.
    Refused(String),
    /// The bindings are live.
    Subscribed,
    /// The bindings could not be set up (a `system` error), with the message.
    Failed(String),
}

/// Reads a frame met while subscribing on `topic` (`None`: not about the subscription).
fn answer(text: &str, topic: &str) -> Option<Answer> {
    let frame = client::decode(text).filter(|f| f.topic == topic)?;
    if let Some(reply) = client::reply_to(&frame, "1") {
        return Some(match reply {
            Ok(_) => Answer::Joined,
            Err(reason) => Answer::Refused(reason),
        });
    }
    if client::system(&frame, "ok").is_some_and(|m| m == SUBSCRIBED) {
        return Some(Answer::Subscribed);
    }
    client::system(&frame, "error").map(Answer::Failed)
}

/// Connects subscriber `index` and subscribes it, each step bounded by [`OPEN_TIMEOUT`]. Its group
/// token is minted from `HERALD_JWT_SECRET` (workers inherit it).
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
    let topic = topic(index);
    let frame = join_frame(&topic, group, join.filter, &access_token);
    let mut ws = conn::within("connect", conn::connect(target, ws_url, source)).await?;
    conn::within(
        "join and subscription to PostgreSQL",
        subscribe(&mut ws, &topic, frame),
    )
    .await?;
    Ok(ws)
}

/// Sends the join and waits for both its reply and the `Subscribed to PostgreSQL` system message.
async fn subscribe(ws: &mut Ws, topic: &str, frame: String) -> Result<(), ConnError> {
    ws.send(Message::text(frame)).await?;
    let (mut joined, mut subscribed) = (false, false);
    conn::await_answer(ws, Protocol::Phoenix, |text| {
        match answer(text, topic)? {
            Answer::Joined => joined = true,
            Answer::Subscribed => subscribed = true,
            Answer::Refused(reason) => return Some(Err(ConnError::JoinRefused(reason))),
            Answer::Failed(message) => {
                let reason = format!("postgres_changes: {message}");
                return Some(Err(ConnError::JoinRefused(reason)));
            }
        }
        (joined && subscribed).then_some(Ok(()))
    })
    .await
}

/// The benchmark columns of an inserted row, as a `postgres_changes` frame carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RowChange {
    /// `id`.
    pub id: i64,
    /// `grp`.
    pub grp: i64,
    /// `sent_us`: wall-clock µs since 1970 just before the commit.
    pub sent_us: u64,
}

/// The row of a `postgres_changes` frame, if `text` is one about the benchmark table.
pub fn parse_change(text: &str) -> Option<RowChange> {
    #[derive(Deserialize)]
    struct Payload {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        table: Option<String>,
        record: RowChange,
    }
    let frame = client::decode(text)?;
    if frame.event != "postgres_changes" {
        return None;
    }
    let herald_protocol::InboundPayload::Json(payload) = &frame.payload else {
        return None;
    };
    let payload: Payload = serde_json::from_str(payload.get()).ok()?;
    match payload.data.table.as_deref() {
        Some(t) if t != TABLE => None,
        _ => Some(payload.data.record),
    }
}

/// `sent_us` (wall-clock µs) as nanoseconds on a clock whose epoch is `epoch_unix_ns`.
pub fn clock_ns(sent_us: u64, epoch_unix_ns: u64) -> u64 {
    sent_us.saturating_mul(1_000).saturating_sub(epoch_unix_ns)
}

/// Wall-clock µs since 1970 on `clock` (its monotonic reading, lined up with the wall clock once).
pub fn clock_unix_us(clock: &Clock) -> u64 {
    clock.epoch_unix_ns().saturating_add(clock.now_ns()) / 1_000
}

/// What a subscriber makes of a change it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A row of this run it may see: timed and counted.
    Own,
    /// A row of another group, which row-level security or the filter should have kept away.
    Foreign,
    /// A row stamped before this run began: an earlier run's, still on its way. Ignored.
    Stale,
}

/// Sorts a change received by a subscriber of `group` in a run whose clock began at
/// `epoch_unix_ns`.
fn classify(row: &RowChange, epoch_unix_ns: u64, group: i64, per_group: bool) -> Seen {
    if row.sent_us.saturating_mul(1_000) < epoch_unix_ns {
        Seen::Stale
    } else if per_group && row.grp != group {
        Seen::Foreign
    } else {
        Seen::Own
    }
}

/// Holds a subscribed connection until `stop`: heartbeats, times every change of its own group's
/// rows (or every change, without `per_group`), and counts changes of other groups' rows as
/// `frames`; rows of earlier runs are skipped. A `system` error (the server dropped the bindings)
/// is counted as a late failure.
pub async fn hold(
    ws: Ws,
    index: u64,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    join: PgJoin,
) {
    let group = i64::try_from(index % join.groups.max(1)).unwrap_or(i64::MAX);
    let epoch = shared.clock.epoch_unix_ns();
    conn::hold_with(
        ws,
        index,
        stop,
        shared,
        Protocol::Phoenix,
        |text, shared| {
            if let Some(row) = parse_change(text) {
                match classify(&row, epoch, group, join.per_group) {
                    Seen::Own => shared.delivered(clock_ns(row.sent_us, epoch)),
                    Seen::Foreign => {
                        shared.counters.frames.fetch_add(1, Relaxed);
                    }
                    Seen::Stale => {}
                }
            } else if let Some(frame) = client::decode(text)
                && let Some(message) = client::system(&frame, "error")
            {
                shared.failed_late(format!("postgres_changes error: {message}"));
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Counting.

/// Adds `count` rows whose groups cycle from `first` (row j in group `(first + j) % groups`) to
/// `per_group`, one entry per group.
pub fn add_rows(per_group: &mut [u64], first: u64, count: u64) {
    let groups = per_group.len() as u64;
    if groups == 0 {
        return;
    }
    let (each, rest) = (count / groups, count % groups);
    for c in per_group.iter_mut() {
        *c += each;
    }
    for j in 0..rest {
        let g = usize::try_from((first + j) % groups).unwrap_or(0);
        if let Some(c) = per_group.get_mut(g) {
            *c += 1;
        }
    }
}

/// Deliveries expected when `joined[g]` subscribers of group g are subscribed and `rows[g]` rows of
/// group g were committed: each subscriber gets its group's rows with `per_group`, else all rows.
pub fn expected_deliveries(joined: &[u64], rows: &[u64], per_group: bool) -> u64 {
    if per_group {
        joined
            .iter()
            .zip(rows)
            .map(|(j, r)| j.saturating_mul(*r))
            .fold(0, u64::saturating_add)
    } else {
        let subscribers = joined.iter().fold(0, |a: u64, b| a.saturating_add(*b));
        let all = rows.iter().fold(0, |a: u64, b| a.saturating_add(*b));
        subscribers.saturating_mul(all)
    }
}

/// The value of counter `name` in a Prometheus text exposition (the sum over its label sets), or
/// `None` when it is not there.
pub fn counter_value(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some('{') => match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            },
            Some(' ') => rest,
            _ => continue,
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        *found.get_or_insert(0) += value as u64;
    }
    found
}

/// The server's change counter on `/metrics` (at the server's root; 0 while it has counted
/// nothing), or why it cannot be read.
async fn read_counter(client: &mut http::Client) -> Result<u64, String> {
    let resp = client.get("/metrics").await.map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("GET /metrics answered HTTP {}", resp.status));
    }
    Ok(counter_value(&String::from_utf8_lossy(&resp.body), METRIC).unwrap_or(0))
}

/// Waits until the server's counter has not moved for [`IDLE_QUIET`] (an earlier run may have left
/// it a backlog, which would count as this run's ingestion), at most [`IDLE_MAX`]. `Err`: no
/// counter to read.
async fn wait_idle(probe: &mut http::Client) -> Result<(), String> {
    let started = Instant::now();
    let mut last = read_counter(probe).await?;
    let mut last_change = Instant::now();
    let mut told = false;
    while last_change.elapsed() < IDLE_QUIET {
        if started.elapsed() >= IDLE_MAX {
            eprintln!(
                "warning: the server is still ingesting changes after {} s; measuring anyway",
                IDLE_MAX.as_secs()
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
    /// The latest reading.
    value: u64,
    /// Clock time the counter last changed, ns.
    changed_ns: u64,
    /// Clock time it first reached the target, ns (0: not yet).
    reached_ns: u64,
}

/// Reads the counter every [`METRICS_EVERY`] until aborted; `target` is the value that means every
/// committed row was ingested (it grows as rows commit).
async fn poll_metrics(
    mut probe: http::Client,
    clock: Clock,
    baseline: u64,
    target: Arc<AtomicU64>,
    loading: Arc<AtomicBool>,
    seen: Arc<Mutex<Ingest>>,
) {
    let mut tick = tokio::time::interval(METRICS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(value) = read_counter(&mut probe).await else {
            continue;
        };
        let now = clock.now_ns();
        let ingested = value.saturating_sub(baseline);
        if let Ok(mut seen) = seen.lock() {
            if value != seen.value {
                seen.value = value;
                seen.changed_ns = now;
            }
            if seen.reached_ns == 0 && !loading.load(Relaxed) && ingested >= target.load(Relaxed) {
                seen.reached_ns = now;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The database side.

/// Parses `--database-url` and refuses hosts other than this machine's loopback (or a Unix socket).
pub fn database_config(url: &str) -> Result<tokio_postgres::Config, ScenarioError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| ScenarioError::DatabaseUrl(e.to_string()))?;
    for host in config.get_hosts() {
        if let Host::Tcp(name) = host {
            let loopback = name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(ScenarioError::DatabaseUrl(format!(
                    "{name} is not a loopback address: the benchmark only talks to this machine"
                )));
            }
        }
    }
    if let Some(ip) = config.get_hostaddrs().iter().find(|ip| !ip.is_loopback()) {
        return Err(ScenarioError::DatabaseUrl(format!(
            "{ip} is not a loopback address: the benchmark only talks to this machine"
        )));
    }
    Ok(config)
}

/// Opens one connection (its driver runs in a task of its own).
async fn connect(config: &tokio_postgres::Config) -> Result<Client, ScenarioError> {
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|source| ScenarioError::Database {
                what: "cannot connect".to_owned(),
                source,
            })?;
    tokio::spawn(async move {
        // Ends with the client; an error surfaces in the client's next statement.
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs `sql`, saying in the error that it was doing `what`.
async fn exec(client: &Client, what: &str, sql: &str) -> Result<(), ScenarioError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|source| ScenarioError::Database {
            what: what.to_owned(),
            source,
        })
}

/// Prepares the table, its grants, its row-level security and its publication, and empties it.
async fn setup(client: &Client, rls: bool) -> Result<(), ScenarioError> {
    let security = if rls {
        format!(
            "alter table {TABLE} enable row level security;
             drop policy if exists herald_bench_grp on {TABLE};
             create policy herald_bench_grp on {TABLE} for select to authenticated
               using (grp = (current_setting('request.jwt.claims', true)::json->>'grp')::int);"
        )
    } else {
        format!("alter table {TABLE} disable row level security;")
    };
    exec(
        client,
        &format!("preparing {TABLE} (table, roles, grants, publication {PUBLICATION})"),
        &format!(
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
        ),
    )
    .await
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

/// Totals of all writers.
#[derive(Debug, Default)]
struct Totals {
    rows: AtomicU64,
    transactions: AtomicU64,
    errors: AtomicU64,
    reasons: Mutex<Reasons>,
    /// Rows committed per group.
    per_group: Mutex<Vec<u64>>,
}

/// Paced transaction `k` of a run of `total` rows in transactions of `per_tx` rows: its first row
/// (global index) and its row count, or `None` past the end. Transaction k is due when its first row
/// is, so transactions spread evenly over the run whatever the number of writers.
fn paced_tx(k: u64, per_tx: u64, total: u64) -> Option<(u64, u64)> {
    let per_tx = per_tx.max(1);
    let first = k.checked_mul(per_tx).filter(|f| *f < total)?;
    Some((first, per_tx.min(total - first)))
}

/// Sleeps until `at`, waking every 100 ms to see whether the run was interrupted.
async fn sleep_until(at: Instant, interrupted: &AtomicBool) {
    while !interrupted.load(Relaxed) {
        let now = Instant::now();
        if now >= at {
            return;
        }
        tokio::time::sleep((at - now).min(Duration::from_millis(100))).await;
    }
}

/// One writer's share of the load.
struct Writer {
    client: Client,
    /// Writer `index` of `writers`.
    index: u64,
    writers: u64,
    /// Rows per second of all writers together, or `None`: each as fast as it can.
    rate: Option<u64>,
    groups: u64,
    per_tx: u64,
    body: Arc<String>,
    start: Instant,
    limit: Duration,
    clock: Clock,
    totals: Arc<Totals>,
    interrupted: Arc<AtomicBool>,
}

impl Writer {
    /// Paced, writer w commits transactions w, w + W, w + 2W, ... of the run's schedule (rows
    /// `rate * seconds` in all, row r in group r % G), each when it is due or, when behind, at once;
    /// then it waits for the end of the run, so that the rate is measured over the whole run.
    /// Unpaced, it commits transactions back to back until the deadline, its rows' groups cycling
    /// from an offset of its own.
    async fn run(self) {
        let statement = match self.client.prepare(INSERT).await {
            Ok(s) => s,
            Err(e) => {
                self.fail(1, &e);
                return;
            }
        };
        let groups = self.groups.max(1);
        let deadline = self.start + self.limit;
        let total = self.rate.map(|r| r.saturating_mul(self.limit.as_secs()));
        let mut next_tx = self.index;
        let mut next_row = self.index * groups / self.writers.max(1);
        while !self.interrupted.load(Relaxed) {
            let (first_row, count) = match (self.rate, total) {
                (Some(rate), Some(total)) => {
                    let Some((first, count)) = paced_tx(next_tx, self.per_tx, total) else {
                        sleep_until(deadline, &self.interrupted).await;
                        break;
                    };
                    next_tx += self.writers.max(1);
                    sleep_until(due_at(self.start, first, rate), &self.interrupted).await;
                    (first, count)
                }
                _ => {
                    let first = next_row;
                    next_row += self.per_tx;
                    (first, self.per_tx.max(1))
                }
            };
            if self.interrupted.load(Relaxed) || Instant::now() >= deadline {
                break;
            }
            let first = first_row % groups;
            let params = (
                i64::try_from(first).unwrap_or(0),
                i64::try_from(groups).unwrap_or(i64::MAX),
                i64::try_from(count).unwrap_or(i64::MAX),
            );
            let sent_us = i64::try_from(clock_unix_us(&self.clock)).unwrap_or(i64::MAX);
            let result = self
                .client
                .execute(
                    &statement,
                    &[
                        &params.0,
                        &params.1,
                        &sent_us,
                        self.body.as_ref(),
                        &params.2,
                    ],
                )
                .await;
            match result {
                Ok(_) => {
                    let t = &self.totals;
                    t.rows.fetch_add(count, Relaxed);
                    t.transactions.fetch_add(1, Relaxed);
                    if let Ok(mut per_group) = t.per_group.lock() {
                        add_rows(&mut per_group, first, count);
                    }
                }
                Err(e) => {
                    self.fail(count, &e);
                    if self.client.is_closed() {
                        break;
                    }
                }
            }
        }
    }

    /// Counts `rows` rows that failed, and why.
    fn fail(&self, rows: u64, e: &tokio_postgres::Error) {
        let reason = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        self.totals.errors.fetch_add(rows.max(1), Relaxed);
        if let Ok(mut reasons) = self.totals.reasons.lock() {
            reasons.add(reason, rows.max(1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: PgOpts) -> Result<Report, ScenarioError> {
    server_cpu(ctx)?;
    let secret = token::secret().ok_or(ScenarioError::NoSecret)?;
    group_token(&secret, 0)?;
    let config = database_config(&opts.database_url)?;
    let join = opts.join();
    let groups = join.groups;

    // The table, before anyone subscribes to it.
    let admin = connect(&config).await?;
    setup(&admin, opts.rls).await?;

    // An earlier run's backlog would slow the subscribers down and count as this run's ingestion.
    let mut probe = http::Client::new(&ctx.target);
    let metrics = wait_idle(&mut probe).await;

    // Subscribers.
    let spec = ctx.fleet_spec(Transport::Pg(join), PREFIX, groups, opts.subscribers, true);
    let (fleet, ready) = open_fleet(ctx, "pg", spec, true).await?;
    let processes = fleet.processes();
    let joined = ready.joined(groups);

    // Writers connect before the clock starts.
    // Paced, no more writers than transactions.
    let writers = match opts.rows_per_sec {
        0 => opts.writers.max(1),
        r => opts.writers.clamp(
            1,
            r.saturating_mul(opts.duration)
                .div_ceil(opts.rows_per_tx.max(1))
                .max(1),
        ),
    };
    let mut clients = Vec::new();
    for _ in 0..writers {
        let client = match connect(&config).await {
            Ok(c) => exec(&c, WRITER_SESSION, WRITER_SESSION).await.map(|()| c),
            Err(e) => Err(e),
        };
        match client {
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
    let target = Arc::new(AtomicU64::new(0));
    let loading = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Ingest::default()));
    let poller = baseline.map(|b| {
        if let Ok(mut s) = seen.lock() {
            s.value = b;
        }
        tokio::spawn(poll_metrics(
            probe,
            ctx.clock,
            b,
            Arc::clone(&target),
            Arc::clone(&loading),
            Arc::clone(&seen),
        ))
    });

    let interrupt = Interrupt::watch();
    let totals = Arc::new(Totals {
        per_group: Mutex::new(vec![0; usize::try_from(groups).unwrap_or(0)]),
        ..Totals::default()
    });
    let body = Arc::new("x".repeat(opts.payload));
    let window = CpuWindow::start(ctx);
    let start = window.start;
    let start_ns = ctx.clock.ns_at(start);
    let limit = Duration::from_secs(opts.duration);
    let mut tasks = JoinSet::new();
    for (w, client) in (0..writers).zip(clients) {
        let writer = Writer {
            client,
            index: w,
            writers,
            rate: (opts.rows_per_sec > 0).then_some(opts.rows_per_sec),
            groups,
            per_tx: opts.rows_per_tx,
            body: Arc::clone(&body),
            start,
            limit,
            clock: ctx.clock,
            totals: Arc::clone(&totals),
            interrupted: interrupt.flag(),
        };
        tasks.spawn(writer.run());
    }
    let progress = {
        let (live, totals, seen) = (fleet.live(), Arc::clone(&totals), Arc::clone(&seen));
        Progress::start(move || {
            let l = live.snapshot();
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            let rows = totals.rows.load(Relaxed);
            let ingested = match (baseline, seen.lock().ok().map(|s| s.value)) {
                (Some(b), Some(v)) => v.saturating_sub(b).to_string(),
                _ => "-".to_owned(),
            };
            format!(
                "pg: inserted {rows} ({:.0}/s), ingested {ingested}, delivered {}, errors {}",
                rows as f64 / secs,
                l.delivered,
                totals.errors.load(Relaxed)
            )
        })
    };
    while tasks.join_next().await.is_some() {}
    let insert_end = Instant::now();
    let rows_inserted = totals.rows.load(Relaxed);
    let per_group = totals
        .per_group
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let expected = expected_deliveries(&joined, &per_group, join.per_group);
    target.store(rows_inserted, Relaxed);
    loading.store(false, Relaxed);

    // Wait for the deliveries and the server's counter.
    let live = fleet.live();
    let ingest_done = || match baseline {
        None => true,
        Some(b) => seen
            .lock()
            .map_or(true, |s| s.reached_ns > 0 || s.value < b),
    };
    let watch = || {
        (
            live.snapshot().delivered,
            seen.lock().map_or(0, |s| s.value),
        )
    };
    let all_in = |now: &(u64, u64)| now.0 >= expected && ingest_done();
    settle(
        (insert_end, WAIT_MAX, WAIT_QUIET),
        &interrupt.flag(),
        watch,
        all_in,
    )
    .await;
    if let Some(poller) = poller {
        poller.abort();
    }
    let cpu = window.end(ctx);
    progress.finish();
    interrupt.finish("stopped inserting early");
    let done = fleet.stop().await;
    drop(admin);

    // Figures.
    let ingest = seen.lock().map(|s| *s).unwrap_or_default();
    let changes_ingested = baseline.map(|b| ingest.value.saturating_sub(b));
    let ingest_end_ns = match ingest.reached_ns {
        0 => ingest.changed_ns,
        t => t,
    };
    let ingest_secs = changes_ingested
        .filter(|n| *n > 0)
        .map(|_| ingest_end_ns.saturating_sub(start_ns) as f64 / 1e9)
        .filter(|s| *s > 0.0);
    let insert_secs = insert_end.duration_since(start).as_secs_f64();
    let insert_end_ns = ctx.clock.ns_at(insert_end);
    let elapsed = done
        .last_delivery_ns
        .max(insert_end_ns)
        .saturating_sub(start_ns) as f64
        / 1e9;
    let delivered = done.delivered;
    let missing = shortfall(expected, delivered);
    let insert_errors = totals.errors.load(Relaxed);
    let mut subscribers = Subscribers::of(opts.subscribers, &ready, &done, processes);
    for (reason, n) in &done.failures.0 {
        *subscribers
            .failure_reasons
            .entry(reason.clone())
            .or_default() += n;
    }
    let detail = PgDetail {
        subscribers,
        groups,
        rls: opts.rls,
        filter: opts.filter,
        writers,
        rows_per_tx: opts.rows_per_tx,
        rate: opts.rows_per_sec,
        duration_secs: opts.duration,
        payload_bytes: opts.payload,
        rows_inserted,
        transactions: totals.transactions.load(Relaxed),
        rows_per_sec: per_sec(rows_inserted, insert_secs),
        insert_errors,
        insert_error_reasons: totals
            .reasons
            .lock()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        changes_ingested,
        changes_ingested_per_sec: changes_ingested
            .zip(ingest_secs)
            .map(|(n, s)| round3(n as f64 / s)),
        ingest_secs: ingest_secs.map(round3),
        expected,
        delivered,
        missing,
        foreign: done.frames,
        insert_secs: round3(insert_secs),
        elapsed_secs: round3(elapsed),
        server_cpu_secs: cpu.secs(),
        cpu_us_per_row: cpu.us_per(rows_inserted),
    };
    Ok(Report {
        connections: ready.established,
        connect_rate: ready.connect_rate().map(round3),
        delivered_per_sec: per_sec(delivered, elapsed).filter(|_| opts.subscribers > 0),
        latency_ms: done.latencies().summary(),
        server_cpu_pct: cpu.pct(),
        cpu_us_per_delivery: cpu.us_per(delivered),
        errors: ready.failed
            + done.disconnects
            + insert_errors
            + done.frames
            + measure::missing(missing),
        ..Report::new("pg", Detail::Pg(detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_frames_carry_the_binding_and_the_token() {
        let v: serde_json::Value =
            serde_json::from_str(&join_frame(&topic(7), 2, true, "tok")).unwrap();
        assert_eq!(v[0], "1");
        assert_eq!(v[2], "realtime:pg-bench-7");
        assert_eq!(v[3], "phx_join");
        let want: serde_json::Value = serde_json::from_str(
            r#"{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[{"event":"INSERT","schema":"public","table":"herald_bench_pg","filter":"grp=eq.2"}],"private":false},"access_token":"tok"}"#,
        )
        .unwrap();
        assert_eq!(v[4], want);
        let v: serde_json::Value =
            serde_json::from_str(&join_frame(&topic(0), 0, false, "t")).unwrap();
        assert!(
            v[4]["config"]["postgres_changes"][0]
                .get("filter")
                .is_none()
        );
    }

    #[test]
    fn reads_subscription_answers() {
        let t = "realtime:pg-bench-3";
        let ok = r#"["1","1","realtime:pg-bench-3","phx_reply",{"status":"ok","response":{"postgres_changes":[{"id":12,"event":"INSERT","schema":"public","table":"herald_bench_pg"}]}}]"#;
        assert_eq!(answer(ok, t), Some(Answer::Joined));
        assert_eq!(answer(ok, "realtime:pg-bench-4"), None);
        let refused = r#"["1","1","realtime:pg-bench-3","phx_reply",{"status":"error","response":{"reason":"InvalidJWTToken: bad"}}]"#;
        assert_eq!(
            answer(refused, t),
            Some(Answer::Refused("InvalidJWTToken: bad".into()))
        );
        let subscribed = r#"["1",null,"realtime:pg-bench-3","system",{"extension":"postgres_changes","status":"ok","message":"Subscribed to PostgreSQL","channel":"pg-bench-3"}]"#;
        assert_eq!(answer(subscribed, t), Some(Answer::Subscribed));
        let failed = r#"["1",null,"realtime:pg-bench-3","system",{"extension":"postgres_changes","status":"error","message":"Unable to subscribe to changes with given parameters","channel":"pg-bench-3"}]"#;
        assert_eq!(
            answer(failed, t),
            Some(Answer::Failed(
                "Unable to subscribe to changes with given parameters".into()
            ))
        );
        let other =
            r#"["1",null,"realtime:pg-bench-3","system",{"status":"ok","message":"Subscribed"}]"#;
        assert_eq!(answer(other, t), None);
        assert_eq!(answer("not json", t), None);
    }

    #[test]
    fn reads_postgres_changes_frames() {
        let frame = r#"[null,null,"realtime:pg-bench-0","postgres_changes",{"ids":[12,40],"data":{"schema":"public","table":"herald_bench_pg","commit_timestamp":"2026-01-01T00:00:00.000Z","type":"INSERT","columns":[{"name":"id","type":"int8"},{"name":"grp","type":"int4"},{"name":"sent_us","type":"int8"},{"name":"body","type":"text"}],"record":{"id":41,"grp":3,"sent_us":1767225600000123,"body":"x\"x"},"errors":null}}]"#;
        assert_eq!(
            parse_change(frame),
            Some(RowChange {
                id: 41,
                grp: 3,
                sent_us: 1_767_225_600_000_123
            })
        );
        let other_table = frame.replace("\"table\":\"herald_bench_pg\"", "\"table\":\"t\"");
        assert_eq!(parse_change(&other_table), None);
        let broadcast = r#"[null,null,"realtime:bench-0","broadcast",{"type":"broadcast","event":"b","payload":{"t":1}}]"#;
        assert_eq!(parse_change(broadcast), None);
        let no_record = r#"[null,null,"realtime:pg-bench-0","postgres_changes",{"ids":[1],"data":{"type":"DELETE","old_record":{"id":1}}}]"#;
        assert_eq!(parse_change(no_record), None);
        assert_eq!(parse_change("[]"), None);
    }

    #[test]
    fn send_times_line_up_with_the_clock() {
        assert_eq!(clock_ns(2_000, 1_000_000), 1_000_000);
        assert_eq!(clock_ns(1, 1_000_000), 0);
        let clock = Clock::start();
        let us = clock_unix_us(&clock);
        let back = clock_ns(us, clock.epoch_unix_ns());
        assert!(back <= clock.now_ns());
        assert!(clock.now_ns() - back < 1_000_000_000);
    }

    #[test]
    fn sorts_received_changes() {
        let epoch = 1_767_225_600_000_000_000;
        let row = |grp, sent_us| RowChange {
            id: 1,
            grp,
            sent_us,
        };
        let now_us = epoch / 1_000 + 5;
        assert_eq!(classify(&row(3, now_us), epoch, 3, true), Seen::Own);
        assert_eq!(classify(&row(2, now_us), epoch, 3, true), Seen::Foreign);
        assert_eq!(classify(&row(2, now_us), epoch, 3, false), Seen::Own);
        assert_eq!(classify(&row(3, now_us - 10), epoch, 3, true), Seen::Stale);
        assert_eq!(classify(&row(2, now_us - 10), epoch, 3, false), Seen::Stale);
    }

    #[test]
    fn rows_cycle_over_the_groups() {
        let mut g = vec![0; 4];
        add_rows(&mut g, 0, 10);
        assert_eq!(g, [3, 3, 2, 2]);
        add_rows(&mut g, 3, 2);
        assert_eq!(g, [4, 3, 2, 3]);
        add_rows(&mut g, 5, 0);
        assert_eq!(g, [4, 3, 2, 3]);
        let mut one = vec![0];
        add_rows(&mut one, 7, 5);
        assert_eq!(one, [5]);
        add_rows(&mut [], 0, 5);
        for (first, count, groups) in [(0u64, 1_000u64, 10usize), (17, 999, 7), (3, 2, 100)] {
            let mut g = vec![0; groups];
            add_rows(&mut g, first, count);
            assert_eq!(g.iter().sum::<u64>(), count);
            let (lo, hi) = (g.iter().min().unwrap(), g.iter().max().unwrap());
            assert!(hi - lo <= 1);
        }
    }

    #[test]
    fn expected_deliveries_follow_visibility() {
        let joined = [5, 5, 4];
        let rows = [10, 10, 9];
        // Everyone sees every row.
        assert_eq!(expected_deliveries(&joined, &rows, false), 14 * 29);
        // Each subscriber sees its own group's rows.
        assert_eq!(expected_deliveries(&joined, &rows, true), 50 + 50 + 36);
        // No subscribers, or no rows.
        assert_eq!(expected_deliveries(&[0, 0, 0], &rows, true), 0);
        assert_eq!(expected_deliveries(&[], &[], false), 0);
        assert_eq!(expected_deliveries(&joined, &[0, 0, 0], false), 0);
        // One matching subscriber in one group.
        assert_eq!(expected_deliveries(&[1], &[5_000], true), 5_000);
    }

    #[test]
    fn reads_the_change_counter() {
        let text = "# TYPE herald_pg_changes_total counter\n\
                    herald_pg_changes_total 1234\n\
                    herald_pg_changes_total_other 5\n\
                    herald_messages_total 9\n";
        assert_eq!(counter_value(text, METRIC), Some(1_234));
        let labelled =
            "herald_pg_changes_total{node=\"a\"} 10\nherald_pg_changes_total{node=\"b\"} 5\n";
        assert_eq!(counter_value(labelled, METRIC), Some(15));
        assert_eq!(
            counter_value("herald_pg_changes_total 1e3\n", METRIC),
            Some(1_000)
        );
        assert_eq!(counter_value("herald_messages_total 9\n", METRIC), None);
        assert_eq!(
            counter_value("herald_pg_changes_total nope\n", METRIC),
            None
        );
    }

    #[test]
    fn paced_transactions_cover_the_rows_once() {
        // 200 rows/s for 2 s in transactions of 100: 4 transactions, due at 0, 0.5, 1 and 1.5 s.
        assert_eq!(paced_tx(0, 100, 400), Some((0, 100)));
        assert_eq!(paced_tx(3, 100, 400), Some((300, 100)));
        assert_eq!(paced_tx(4, 100, 400), None);
        let start = Instant::now();
        assert_eq!(
            due_at(start, 300, 200),
            start + Duration::from_millis(1_500)
        );
        // The last transaction is cut to the total.
        assert_eq!(paced_tx(3, 100, 350), Some((300, 50)));
        assert_eq!(paced_tx(0, 100, 0), None);
        assert_eq!(paced_tx(u64::MAX, 100, 10), None);
        // However many writers share them (writer w takes w, w + W, ...), every row is sent once.
        for (writers, per_tx, total) in [
            (1u64, 100u64, 400u64),
            (4, 100, 400),
            (3, 7, 100),
            (8, 1, 5),
        ] {
            let mut rows = Vec::new();
            for w in 0..writers {
                let mut k = w;
                while let Some((first, count)) = paced_tx(k, per_tx, total) {
                    rows.extend(first..first + count);
                    k += writers;
                }
            }
            rows.sort_unstable();
            assert_eq!(rows, (0..total).collect::<Vec<_>>());
        }
    }

    #[test]
    fn database_urls_must_stay_on_this_machine() {
        assert!(database_config("postgres://postgres@127.0.0.1:5432/postgres").is_ok());
        assert!(database_config("postgresql://u:p@localhost/db").is_ok());
        assert!(database_config("host=/var/run/postgresql user=postgres").is_ok());
        assert!(database_config("postgres://u@[::1]:5432/db").is_ok());
        assert!(matches!(
            database_config("postgres://u@10.0.0.5/db"),
            Err(ScenarioError::DatabaseUrl(_))
        ));
        assert!(matches!(
            database_config("postgres://u@db.example.com/db"),
            Err(ScenarioError::DatabaseUrl(_))
        ));
        assert!(matches!(
            database_config("not a url at all ==="),
            Err(ScenarioError::DatabaseUrl(_))
        ));
    }
}
