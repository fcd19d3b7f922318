//! The processor: the one task that turns replicated transactions into deliveries. In commit order
//! it gives each change its place in its table's log, matches it against the subscription index,
//! checks row-level security per (role, claims) group in one query per table per batch, renders the
//! compatible payload once per variant and queues the frames. It also serves subscriptions and
//! recovering joins between batches, so a replay and the live stream never overlap or leave a gap.
//! Large streamed transactions are spilled to disk until they commit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use deadpool_postgres::Pool;
use herald_core::history::{Position, RecoverRequest};
use herald_core::{Body, Broadcast, ChannelKey, Hub, Origin, SessionHandle};
use herald_protocol::Vsn;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::{Catalog, Table};
use crate::change::{Change, Kind, format_commit_time, row_from_pairs};
use crate::filter::{self, Filter};
use crate::index::{BindingSpec, ChanId, Group, GroupId, Hits, Index};
use crate::replication::{Feedback, RowChange, WalEvent};
use crate::rls::{Roles, Visible, visible_rows};
use crate::values::write_json_string;
use crate::{Settings, install};

/// Changes handled together (one RLS query per group and table per batch).
const BATCH: usize = 512;
/// The history marker holding the last logged change.
const PROGRESS: &str = "pg-progress";

/// A channel's request to receive changes.
#[derive(Debug)]
pub struct SubscribeRequest {
    /// The connection.
    pub session: Arc<SessionHandle>,
    /// Full topic.
    pub topic: String,
    /// Channel name (the topic without `realtime:`).
    pub channel: String,
    /// Join reference.
    pub join_ref: Option<String>,
    /// The bindings, as the client sent them, with the ids the join reply gave them.
    pub bindings: Vec<(Value, u32)>,
    /// Role and claims of the channel's token.
    pub group: Group,
    /// `postgres_changes_options.recover`: log name -> (epoch, offset). `None`: no recovery asked.
    pub recover: Option<HashMap<String, (String, u64)>>,
}

/// Work for the processor from sessions.
#[derive(Debug)]
pub enum Command {
    /// Subscribe a channel.
    Subscribe(Box<SubscribeRequest>),
    /// Drop a channel's subscription.
    Unsubscribe {
        /// Connection id.
        session: u64,
        /// Full topic.
        topic: String,
    },
    /// New role and claims for a channel (token refresh).
    Claims {
        /// Connection id.
        session: u64,
        /// Full topic.
        topic: String,
        /// The new identity.
        group: Group,
    },
}

/// A row of `herald.messages` or `realtime.messages`: a broadcast sent from SQL.
#[derive(Debug)]
struct Sent {
    topic: String,
    event: String,
    body: SentBody,
    private: bool,
    id: Option<String>,
}

/// The payload of a sent row.
#[derive(Debug)]
enum SentBody {
    /// `payload` (jsonb), as text.
    Json(String),
    /// `binary_payload` (bytea), as PostgreSQL's hex text (`\x0102`).
    Bytea(String),
}

/// Decodes PostgreSQL's hex output of a `bytea` (`\x` then two hex digits per byte).
fn bytea_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

enum Item {
    Change(Change),
    Sent(Sent),
}

#[derive(Serialize, Deserialize)]
struct SpillLine {
    sub: u32,
    row: RowChange,
}

struct Spill {
    path: PathBuf,
    file: BufWriter<File>,
    aborted: HashSet<u32>,
}

/// What one (role, claims) group may see of one table, for one batch.
struct Access {
    group: Arc<Group>,
    table: Arc<Table>,
    bypass: bool,
    columns: Visible,
    /// Primary keys to check.
    pending: Vec<Vec<String>>,
    /// The staged change whose key was last added to `pending`.
    last: Option<usize>,
    /// Primary keys the group can see.
    seen: HashSet<Vec<String>>,
}

struct Txn {
    commit_lsn: u64,
    /// The transaction id: row-level security checks wait until it is visible.
    xid: u32,
    timestamp: Arc<str>,
    seq: u64,
    skip: bool,
}

/// The processor's state.
pub struct Processor {
    settings: Arc<Settings>,
    pool: Pool,
    hub: Arc<Hub>,
    catalog: Arc<Catalog>,
    index: Index,
    roles: Roles,
    feedback: Arc<Feedback>,
    txn: Option<Txn>,
    batch: Vec<(Item, u64)>,
    spills: HashMap<u32, Spill>,
    last_done: u64,
    /// Shutdown, as a hand-off that keeps failing sees it.
    stop: CancellationToken,
    /// True once a hand-off was abandoned at shutdown: nothing more is acknowledged.
    halted: bool,
    /// The last change logged (commit position, number in its transaction), kept with the log.
    progress: (u64, u64),
    /// The slot exists and streams (since the first start).
    streaming: bool,
    /// Subscriptions waiting for the stream to start (a standby node, or PostgreSQL not yet up).
    parked: Vec<SubscribeRequest>,
}

/// The history log of a table.
pub fn log_key(log: &str) -> ChannelKey {
    ChannelKey::new(&format!("{}{log}", crate::LOG_PREFIX), true)
}

/// A server push to a channel, as text for the connection's protocol version.
fn push_frame<P: serde::Serialize + ?Sized>(
    vsn: Vsn,
    join_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &P,
) -> Option<Message> {
    let frame = herald_protocol::OutFrame {
        join_ref,
        ref_: None,
        topic,
        event,
        payload,
    };
    herald_protocol::encode_frame(vsn, &frame)
        .ok()
        .map(|s| Message::Text(s.into()))
}

/// Column names of a binding's `select`: a comma-separated string or an array of strings; `None`
/// (every column) when absent, empty or `*`.
fn select_names(value: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    let bad = || {
        "Error parsing `select` params: write column names, as `\"id,title\"` or `[\"id\", \"title\"]`"
            .to_owned()
    };
    let names: Vec<String> = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.split(',').map(|n| n.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(|n| n.trim().to_owned()).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if names.iter().all(String::is_empty) || names == ["*"] {
        return Ok(None);
    }
    if names.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(Some(names))
}

/// The columns of `table` a `select` keeps; a name the table does not have refuses the join.
fn select_mask(names: &[String], table: &Table) -> Result<Arc<[bool]>, String> {
    let mut mask = vec![false; table.columns.len()];
    for name in names {
        match table.columns.iter().position(|c| &*c.name == name.as_str()) {
            Some(i) => mask[i] = true,
            None => {
                return Err(format!(
                    "Error parsing `select` params: column `{name}` does not exist in {}",
                    table.log_name()
                ));
            }
        }
    }
    Ok(Arc::from(mask))
}

/// The payload of a `postgres_changes` push: `{"ids":[...],"data":...}`.
fn change_payload(ids: &[u32], data: &str) -> Option<Box<RawValue>> {
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    RawValue::from_string(format!("{{\"ids\":[{}],\"data\":{data}}}", ids.join(","))).ok()
}

fn position_extra(log: &str, position: Option<&Position>, replayed: bool) -> String {
    let mut s = String::new();
    if let Some(p) = position {
        s.push_str(",\"position\":{\"log\":");
        write_json_string(&mut s, log);
        s.push_str(",\"epoch\":");
        write_json_string(&mut s, &p.epoch);
        s.push_str(&format!(",\"offset\":{}}}", p.offset));
    }
    if replayed {
        s.push_str(",\"replayed\":true");
    }
    s
}

impl Processor {
    /// A processor over a pool and a hub.
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        hub: Arc<Hub>,
        feedback: Arc<Feedback>,
    ) -> Processor {
        Processor {
            settings,
            pool,
            hub,
            catalog: Arc::new(Catalog::default()),
            index: Index::default(),
            roles: Roles::default(),
            feedback,
            txn: None,
            batch: Vec::new(),
            spills: HashMap::new(),
            last_done: 0,
            stop: CancellationToken::new(),
            halted: false,
            progress: (0, 0),
            streaming: false,
            parked: Vec::new(),
        }
    }

    /// Installs the schema and reads the catalog, retrying until the database answers.
    async fn prepare(&mut self, shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.try_prepare().await {
                Ok(()) => return true,
                Err(e) => {
                    warn!(error = %e, "PostgreSQL is not ready; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn try_prepare(&mut self) -> Result<(), crate::PgError> {
        let (mut client, connection) =
            tokio_postgres::connect(&self.settings.database_url, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        let installed = install::install(&mut client, &self.settings.publication).await;
        drop(client);
        let _ = task.await;
        installed?;
        self.reload_catalog().await?;
        if let Some(history) = self.hub.history()
            && let Some(m) = history.marker(PROGRESS)?
            && m.len() == 16
        {
            let mut lsn = [0u8; 8];
            let mut seq = [0u8; 8];
            lsn.copy_from_slice(&m[..8]);
            seq.copy_from_slice(&m[8..]);
            self.progress = (u64::from_be_bytes(lsn), u64::from_be_bytes(seq));
        }
        info!(tables = self.catalog.len(), publication = %self.settings.publication, "Postgres Changes ready");
        Ok(())
    }

    async fn reload_catalog(&mut self) -> Result<(), crate::PgError> {
        let client = self.pool.get().await?;
        self.catalog = Arc::new(Catalog::load(&**client, &self.settings.publication).await?);
        self.roles.clear();
        Ok(())
    }

    /// Runs until shutdown or until both inputs end.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<WalEvent>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        self.stop = shutdown.clone();
        if !self.prepare(&shutdown).await {
            return;
        }
        self.feedback
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                ev = events.recv() => match ev {
                    Some(ev) => {
                        if let Err(e) = self.on_event(ev).await {
                            warn!(error = %e, "could not handle a replicated change");
                            herald_core::stats::error("pg_process");
                        }
                    }
                    None => break,
                },
                _ = sweep.tick() => {
                    self.parked.retain(|r| !r.session.is_closing());
                    let n = self.index.remove_closed();
                    if n > 0 {
                        debug!(removed = n, "dropped subscriptions of closed connections");
                    }
                }
            }
        }
        for (_, spill) in self.spills.drain() {
            let _ = std::fs::remove_file(&spill.path);
        }
    }

    async fn on_event(&mut self, ev: WalEvent) -> Result<(), crate::PgError> {
        match ev {
            WalEvent::Reset => {
                self.streaming = true;
                self.txn = None;
                self.batch.clear();
                for (_, spill) in self.spills.drain() {
                    let _ = std::fs::remove_file(&spill.path);
                }
                for req in std::mem::take(&mut self.parked) {
                    self.subscribe(req).await;
                }
            }
            WalEvent::Relation => {
                self.reload_catalog().await?;
            }
            WalEvent::Begin {
                commit_lsn,
                timestamp,
                xid,
            } => {
                self.txn = Some(Txn {
                    commit_lsn,
                    xid,
                    timestamp: format_commit_time(timestamp),
                    seq: 0,
                    skip: commit_lsn <= self.last_done,
                });
            }
            WalEvent::Row(row) => {
                let Some(txn) = self.txn.as_mut() else {
                    return Ok(());
                };
                if txn.skip {
                    return Ok(());
                }
                txn.seq += 1;
                let seq = txn.seq;
                let ts = txn.timestamp.clone();
                if let Some(item) = self.item(row, &ts).await {
                    self.batch.push((item, seq));
                }
                if self.batch.len() >= BATCH {
                    self.flush().await;
                }
            }
            WalEvent::Commit {
                commit_lsn,
                end_lsn,
            } => {
                let skip = self.txn.as_ref().is_none_or(|t| t.skip);
                if !skip {
                    self.flush().await;
                }
                self.txn = None;
                self.finish(commit_lsn, end_lsn);
            }
            WalEvent::StreamRow { xid, subxid, row } => {
                let spill = match self.spills.get_mut(&xid) {
                    Some(s) => s,
                    None => {
                        std::fs::create_dir_all(&self.settings.spill_dir)?;
                        let path = self.settings.spill_dir.join(format!("xid-{xid}.jsonl"));
                        let file = BufWriter::with_capacity(64 * 1024, File::create(&path)?);
                        self.spills.entry(xid).or_insert(Spill {
                            path,
                            file,
                            aborted: HashSet::new(),
                        })
                    }
                };
                let line = serde_json::to_string(&SpillLine { sub: subxid, row })?;
                spill.file.write_all(line.as_bytes())?;
                spill.file.write_all(b"\n")?;
            }
            WalEvent::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    if let Some(spill) = self.spills.remove(&xid) {
                        let _ = std::fs::remove_file(&spill.path);
                    }
                } else if let Some(spill) = self.spills.get_mut(&xid) {
                    spill.aborted.insert(subxid);
                }
            }
            WalEvent::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                timestamp,
            } => {
                let Some(mut spill) = self.spills.remove(&xid) else {
                    self.finish(commit_lsn, end_lsn);
                    return Ok(());
                };
                if commit_lsn > self.last_done {
                    spill.file.flush()?;
                    let ts = format_commit_time(timestamp);
                    self.txn = Some(Txn {
                        commit_lsn,
                        xid,
                        timestamp: ts.clone(),
                        seq: 0,
                        skip: false,
                    });
                    let reader = BufReader::with_capacity(64 * 1024, File::open(&spill.path)?);
                    let mut seq = 0u64;
                    for line in reader.lines() {
                        let line = line?;
                        let Ok(SpillLine { sub, row }) = serde_json::from_str::<SpillLine>(&line)
                        else {
                            continue;
                        };
                        if spill.aborted.contains(&sub) {
                            continue;
                        }
                        seq += 1;
                        if let Some(item) = self.item(row, &ts).await {
                            self.batch.push((item, seq));
                        }
                        if self.batch.len() >= BATCH {
                            self.flush().await;
                        }
                    }
                    self.flush().await;
                    self.txn = None;
                }
                let _ = std::fs::remove_file(&spill.path);
                self.finish(commit_lsn, end_lsn);
            }
        }
        Ok(())
    }

    fn finish(&mut self, commit_lsn: u64, end_lsn: u64) {
        if self.halted {
            return;
        }
        self.last_done = self.last_done.max(commit_lsn);
        self.feedback.done(end_lsn);
        metrics::counter!("herald_pg_transactions_total").increment(1);
    }

    /// Turns a replicated row into work: a change of a published table, or a sent broadcast.
    async fn item(&mut self, row: RowChange, ts: &Arc<str>) -> Option<Item> {
        let herald_messages = &*row.schema == install::SCHEMA && &*row.table == install::MESSAGES;
        let realtime_messages = install::is_realtime_messages(&row.schema, &row.table);
        if herald_messages || realtime_messages {
            if row.kind != Kind::Insert {
                return None;
            }
            let get = |name: &str| {
                row.new
                    .as_ref()?
                    .iter()
                    .find(|(n, _)| &**n == name)
                    .and_then(|(_, v)| v.clone())
            };
            if realtime_messages && get("extension").as_deref() != Some("broadcast") {
                return None;
            }
            let body = match (get("payload"), get("binary_payload")) {
                (Some(json), _) => SentBody::Json(json),
                (None, Some(hex)) if realtime_messages => SentBody::Bytea(hex),
                _ => {
                    debug!(schema = %row.schema, table = %row.table, "a message row without payload: nothing to send");
                    return None;
                }
            };
            return Some(Item::Sent(Sent {
                topic: get("topic")?,
                event: get("event")?,
                body,
                private: get("private").is_some_and(|p| p == "t"),
                id: get("id"),
            }));
        }
        if &*row.schema == install::SCHEMA {
            // The heartbeat, or clean-up of sent rows: nothing to deliver.
            return None;
        }
        let mut table = self.catalog.table(&row.schema, &row.table).cloned();
        if table.as_ref().is_none_or(|t| !covers(t, &row)) {
            if let Err(e) = self.reload_catalog().await {
                warn!(error = %e, "could not reload the catalog");
            }
            table = self.catalog.table(&row.schema, &row.table).cloned();
        }
        let Some(table) = table else {
            debug!(schema = %row.schema, table = %row.table, "change of a table outside the catalog");
            return None;
        };
        let to_row = |r: &Option<crate::replication::RawRow>| {
            r.as_ref()
                .map(|r| row_from_pairs(&table, r.iter().map(|(n, v)| (&**n, v.as_deref()))))
        };
        let mut old = to_row(&row.old);
        if row.kind == Kind::Update && old.is_none() {
            // The key did not change, so PostgreSQL sent no old tuple: the old key is the new one.
            old = to_row(&row.new).map(|r| {
                r.into_iter()
                    .zip(table.columns.iter())
                    .map(|(c, col)| {
                        if col.primary_key {
                            c
                        } else {
                            crate::change::Cell::Absent
                        }
                    })
                    .collect()
            });
        }
        let mut change = Change {
            kind: row.kind,
            new: to_row(&row.new),
            old,
            commit_timestamp: ts.clone(),
            unchanged_toast: Vec::new(),
            table: table.clone(),
        };
        change.fill_unchanged();
        Some(Item::Change(change))
    }

    /// Logs, matches, checks and delivers the pending batch, in order.
    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch);
        let commit_lsn = self.txn.as_ref().map_or(0, |t| t.commit_lsn);
        let mut changes: Vec<(Change, u64)> = Vec::new();
        for (item, seq) in items {
            // Already logged and delivered before a crash (the marker is written with the log).
            if (commit_lsn, seq) <= self.progress {
                continue;
            }
            match item {
                Item::Change(change) => changes.push((change, seq)),
                Item::Sent(sent) => {
                    // What came before it goes first, to keep commit order.
                    self.log_and_deliver(std::mem::take(&mut changes), commit_lsn)
                        .await;
                    self.publish_sent(sent, format!("pg/{commit_lsn:x}/{seq}"))
                        .await;
                }
            }
        }
        self.log_and_deliver(changes, commit_lsn).await;
    }

    /// Gives changes their positions in their tables' logs (one atomic write, with the progress
    /// marker), then matches and delivers them.
    async fn log_and_deliver(&mut self, changes: Vec<(Change, u64)>, commit_lsn: u64) {
        let Some(&(_, last_seq)) = changes.last() else {
            return;
        };
        metrics::counter!("herald_pg_changes_total").increment(changes.len() as u64);
        // The slot's position moves only past changes the broker took: until it takes them, they
        // are offered again (PostgreSQL keeps the rest of the stream meanwhile).
        let mut delay = Duration::from_millis(100);
        let positions = loop {
            match self.log(&changes, commit_lsn, last_seq).await {
                Ok(p) => break p,
                Err(e) => {
                    warn!(error = %e, retry_ms = delay.as_millis() as u64, "the broker did not take the changes; retrying");
                    herald_core::stats::error("pg_history");
                    tokio::select! {
                        () = self.stop.cancelled() => {
                            // Shutting down: nothing past these changes is acknowledged.
                            self.halted = true;
                            return;
                        }
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mut staged: Vec<(Change, Option<Position>, Hits)> = Vec::new();
        for ((change, _), position) in changes.into_iter().zip(positions) {
            let hits = self.index.lookup(&change, None);
            if !hits.is_empty() {
                staged.push((change, position, hits));
            }
        }
        let xid = self.txn.as_ref().map(|t| t.xid);
        self.deliver(staged, None, xid).await;
    }

    /// Publishes the changes to their tables' logs through the broker, with the progress marker,
    /// as one atomic step; returns each change's position (`None` where the log is off).
    async fn log(
        &mut self,
        changes: &[(Change, u64)],
        commit_lsn: u64,
        last_seq: u64,
    ) -> Result<Vec<Option<Position>>, herald_core::PublishError> {
        let broker = self.hub.broker().clone();
        let msgs: Vec<Broadcast> = changes
            .iter()
            .map(|(c, seq)| {
                let key = log_key(&c.table.log_name());
                let stored = if broker.keeps_history(&key) {
                    c.to_stored()
                } else {
                    Vec::new()
                };
                let mut msg = Broadcast::new(
                    key,
                    c.kind.as_str().to_owned(),
                    Body::Raw(bytes::Bytes::from(stored)),
                    Origin::Text,
                    None,
                );
                msg.id = Some(format!("{commit_lsn:x}/{seq}"));
                msg
            })
            .collect();
        let mut marker = [0u8; 16];
        marker[..8].copy_from_slice(&commit_lsn.to_be_bytes());
        marker[8..].copy_from_slice(&last_seq.to_be_bytes());
        fail::fail_point!("pg-before-handoff", |_| Err(
            herald_core::PublishError::Unavailable("failpoint pg-before-handoff".to_owned())
        ));
        let published = broker
            .publish_group(msgs, Some((PROGRESS.to_owned(), marker.to_vec())))
            .await?;
        self.progress = (commit_lsn, last_seq);
        Ok(published.iter().map(|p| p.position().cloned()).collect())
    }

    async fn publish_sent(&mut self, sent: Sent, key: String) {
        let (body, origin) = match sent.body {
            SentBody::Json(text) => match serde_json::value::RawValue::from_string(text) {
                Ok(raw) => (Body::Json(raw), Origin::Text),
                Err(e) => {
                    warn!(topic = %sent.topic, error = %e, "a payload sent from SQL is not JSON");
                    return;
                }
            },
            SentBody::Bytea(hex) => match bytea_hex(&hex) {
                Some(bytes) => (Body::Raw(bytes::Bytes::from(bytes)), Origin::Binary),
                None => {
                    warn!(topic = %sent.topic, "a binary_payload sent from SQL could not be read");
                    return;
                }
            },
        };
        let mut msg = Broadcast::new(
            ChannelKey::new(&sent.topic, sent.private),
            sent.event,
            body,
            origin,
            None,
        );
        msg.id = sent.id;
        msg.idempotency_key = Some(key);
        // Retried (under the same idempotency key) until the broker takes it; a message no retry
        // can help (a name over its limit) is dropped with a warning.
        let mut delay = Duration::from_millis(100);
        loop {
            match self.hub.publish(msg.clone_unencoded()).await {
                Ok(_) => {
                    metrics::counter!("herald_pg_sent_total").increment(1);
                    return;
                }
                Err(e @ herald_core::PublishError::Invalid(_)) => {
                    warn!(topic = %sent.topic, error = %e, "a message sent from SQL was refused");
                    return;
                }
                Err(e) => {
                    warn!(topic = %sent.topic, error = %e, "could not publish a message sent from SQL; retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => {
                            self.halted = true;
                            return;
                        }
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Checks row-level security and column privileges for the staged changes and queues the frames.
    /// `xid` is the live transaction the changes come from (`None` for a replay of logged ones).
    async fn deliver(
        &mut self,
        staged: Vec<(Change, Option<Position>, Hits)>,
        replay: Option<ChanId>,
        xid: Option<u32>,
    ) {
        if staged.is_empty() {
            return;
        }
        // What each (group, table) pair may see: whether it bypasses RLS, its columns, and the rows
        // to check. Keyed by the group's number, so a hit costs a cheap lookup.
        let mut access: HashMap<(GroupId, u32), Access> = HashMap::new();
        for (n, (change, _, hits)) in staged.iter().enumerate() {
            for (chan_id, _) in hits {
                let Some(chan) = self.index.chan(*chan_id) else {
                    continue;
                };
                let key = (chan.group_id, change.table.oid);
                if let std::collections::hash_map::Entry::Vacant(slot) = access.entry(key) {
                    let group = chan.group.clone();
                    let bypass = self.roles.bypasses(&self.pool, &group.role).await;
                    let columns = self
                        .roles
                        .columns(&self.pool, &group.role, &change.table)
                        .await;
                    slot.insert(Access {
                        group,
                        table: change.table.clone(),
                        bypass,
                        columns,
                        pending: Vec::new(),
                        last: None,
                        seen: HashSet::new(),
                    });
                }
                // Once per change and group, however many of the group's channels it matches.
                if let Some(a) = access.get_mut(&key)
                    && a.last != Some(n)
                    && change.table.rls
                    && change.kind != Kind::Delete
                    && !a.bypass
                    && let Some(pk) = change.primary_key()
                {
                    a.last = Some(n);
                    a.pending.push(pk.iter().map(|s| s.to_string()).collect());
                }
            }
        }
        // The groups' checks run side by side on the pool.
        let pool = &self.pool;
        let checks = access.values_mut().filter(|a| !a.pending.is_empty()).map(|a| async move {
            let mut keys = std::mem::take(&mut a.pending);
            keys.sort();
            keys.dedup();
            metrics::counter!("herald_pg_rls_queries_total").increment(1);
            a.seen = match visible_rows(pool, &a.group, &a.table, &keys, xid).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(role = %a.group.role, table = %a.table.log_name(), error = %e, "row-level security check failed; rows withheld");
                    HashSet::new()
                }
            };
        });
        futures_util::future::join_all(checks).await;
        let mut delivered = 0u64;
        for (change, position, hits) in staged {
            let log = change.table.log_name();
            let extra = position_extra(&log, position.as_ref(), replay.is_some());
            let mut variants: Vec<(Visible, bool, String)> = Vec::new();
            // Frames by (variant, topic, protocol, ids); topics are shared `Arc`s, compared by address.
            let mut frames: HashMap<(usize, usize, Vsn, Vec<u32>), Message> = HashMap::new();
            // Payloads by (variant, ids), shared by the frames of every topic and protocol version.
            let mut payloads: HashMap<(usize, Vec<u32>), Option<Box<RawValue>>> = HashMap::new();
            let pk: Option<Vec<String>> = change
                .primary_key()
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            for (chan_id, ids) in hits {
                let Some(chan) = self.index.chan(chan_id) else {
                    continue;
                };
                let Some(a) = access.get(&(chan.group_id, change.table.oid)) else {
                    continue;
                };
                if change.table.rls
                    && change.kind != Kind::Delete
                    && !a.bypass
                    && !pk.as_ref().is_some_and(|k| a.seen.contains(k))
                {
                    continue;
                }
                if a.columns.as_ref().is_some_and(|v| !v.iter().any(|b| *b)) {
                    continue;
                }
                // The role's visible columns, narrowed to what the bindings selected.
                let columns = match (chan.selection(change.table.oid, &ids), &a.columns) {
                    (None, role) => role.clone(),
                    (Some(sel), None) => Some(sel),
                    (Some(sel), Some(role)) => {
                        Some(sel.iter().zip(role.iter()).map(|(s, r)| *s && *r).collect())
                    }
                };
                let key_only = change.table.rls && !a.bypass;
                let variant = match variants
                    .iter()
                    .position(|(v, k, _)| *v == columns && *k == key_only)
                {
                    Some(i) => i,
                    None => {
                        let data = change.render(columns.as_deref(), key_only, &extra);
                        variants.push((columns, key_only, data));
                        variants.len() - 1
                    }
                };
                let vsn = chan.session.vsn;
                let topic = Arc::as_ptr(&chan.topic).cast::<u8>() as usize;
                let fkey = (variant, topic, vsn, ids);
                let frame = match frames.get(&fkey) {
                    Some(f) => f.clone(),
                    None => {
                        let payload = payloads
                            .entry((variant, fkey.3.clone()))
                            .or_insert_with(|| change_payload(&fkey.3, &variants[variant].2));
                        let Some(f) = payload.as_deref().and_then(|p| {
                            push_frame(vsn, None, &chan.topic, "postgres_changes", p)
                        }) else {
                            warn!(table = %log, "a change could not be encoded");
                            continue;
                        };
                        frames.insert(fkey, f.clone());
                        f
                    }
                };
                if chan.session.push(frame) == herald_core::Delivery::Queued {
                    delivered += 1;
                }
            }
        }
        metrics::counter!("herald_pg_deliveries_total").increment(delivered);
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Unsubscribe { session, topic } => {
                self.parked
                    .retain(|r| !(r.session.id == session && r.topic == topic));
                self.index.remove(session, &Arc::from(topic));
            }
            Command::Claims {
                session,
                topic,
                group,
            } => {
                if let Some(r) = self
                    .parked
                    .iter_mut()
                    .find(|r| r.session.id == session && r.topic == topic)
                {
                    r.group = group.clone();
                }
                if let Some(id) = self.index.chan_of(session, &Arc::from(topic)) {
                    self.index.set_group(id, Arc::new(group));
                }
            }
            // Confirmed only once the slot streams, so that every change committed after the
            // confirmation is delivered.
            Command::Subscribe(req) if !self.streaming => {
                self.parked
                    .retain(|r| !(r.session.id == req.session.id && r.topic == req.topic));
                self.parked.push(*req);
            }
            Command::Subscribe(req) => self.subscribe(*req).await,
        }
    }

    fn push_system(
        &self,
        req: &SubscribeRequest,
        status: &str,
        message: &str,
        recovery: Option<Value>,
    ) {
        let mut payload = json!({
            "extension": "postgres_changes",
            "status": status,
            "message": message,
            "channel": req.channel,
        });
        if let Some(r) = recovery {
            payload["recovery"] = r;
        }
        if let Some(frame) = push_frame(
            req.session.vsn,
            req.join_ref.as_deref(),
            &req.topic,
            "system",
            &payload,
        ) {
            req.session.push(frame);
        }
    }

    /// Resolves a channel's bindings to tables and filters; the error text goes to the client.
    fn resolve(&self, req: &SubscribeRequest) -> Result<Vec<(BindingSpec, Arc<Table>)>, String> {
        let mut specs = Vec::new();
        for (binding, id) in &req.bindings {
            let text = |k: &str| binding.get(k).and_then(Value::as_str);
            let event = text("event").unwrap_or("*");
            let kinds = match event.to_ascii_uppercase().as_str() {
                "*" => vec![Kind::Insert, Kind::Update, Kind::Delete],
                "INSERT" => vec![Kind::Insert],
                "UPDATE" => vec![Kind::Update],
                "DELETE" => vec![Kind::Delete],
                _ => {
                    return Err(format!(
                        "Error parsing `event` params: unknown event `{event}` (use INSERT, UPDATE, DELETE or *)"
                    ));
                }
            };
            let schema = text("schema").unwrap_or("public");
            let table = text("table");
            let filter_text = text("filter").filter(|f| !f.is_empty());
            let tables = self.catalog.matching(schema, table);
            if tables.is_empty() {
                return Err(format!(
                    "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [event: {event}, schema: {schema}, table: {}, filters: [{}]] (no such table in publication {})",
                    table.unwrap_or("*"),
                    filter_text.unwrap_or(""),
                    self.settings.publication
                ));
            }
            let parsed = match filter_text {
                Some(f) => Some(filter::parse(f).map_err(|e| e.to_string())?),
                None => None,
            };
            let selected = select_names(binding.get("select"))?;
            for t in tables {
                if &*t.schema == install::SCHEMA
                    || install::is_realtime_messages(&t.schema, &t.name)
                {
                    continue;
                }
                let filter = match &parsed {
                    Some(p) => Some(Filter::bind(p, &t).map_err(|e| e.to_string())?),
                    None => None,
                };
                let select = match &selected {
                    Some(names) => Some(select_mask(names, &t)?),
                    None => None,
                };
                specs.push((
                    BindingSpec {
                        table: t.oid,
                        kinds: kinds.clone(),
                        binding: *id,
                        filter,
                        select,
                    },
                    t,
                ));
            }
        }
        Ok(specs)
    }

    async fn subscribe(&mut self, req: SubscribeRequest) {
        if req.session.is_closing() {
            return;
        }
        let mut specs = self.resolve(&req);
        if specs.is_err() {
            // The table may have been added to the publication since the catalog was read.
            if let Err(e) = self.reload_catalog().await {
                warn!(error = %e, "could not reload the catalog");
            }
            specs = self.resolve(&req);
        }
        let specs = match specs {
            Ok(s) => s,
            Err(message) => {
                info!(conn = req.session.id, topic = %req.topic, reason = %message, "postgres_changes subscription refused");
                herald_core::stats::error("pg_subscribe");
                self.push_system(&req, "error", &message, None);
                return;
            }
        };
        let topic: Arc<str> = Arc::from(req.topic.as_str());
        let group = Arc::new(req.group.clone());
        let tables: Vec<Arc<Table>> = {
            let mut seen = HashSet::new();
            specs
                .iter()
                .filter(|(_, t)| seen.insert(t.oid))
                .map(|(_, t)| t.clone())
                .collect()
        };
        let chan = self.index.add(
            req.session.clone(),
            topic.clone(),
            req.join_ref.as_deref().map(Arc::from),
            group,
            specs.into_iter().map(|(s, _)| s).collect(),
        );
        // Recovery: what each requested table's log holds after the client's position. Nothing is
        // appended meanwhile (this task is the only writer), so replay and live meet exactly.
        let mut replay: Vec<(Change, Option<Position>, Hits)> = Vec::new();
        let recovery = match (&req.recover, self.hub.history()) {
            (None, _) => None,
            (Some(_), None) => Some(json!({})),
            (Some(wanted), Some(history)) => {
                let mut report = serde_json::Map::new();
                for table in &tables {
                    let log = table.log_name();
                    let key = log_key(&log);
                    if !history.enabled(&key) {
                        continue;
                    }
                    let request = wanted
                        .get(&log)
                        .map(|(epoch, offset)| RecoverRequest::After {
                            epoch: epoch.clone(),
                            offset: *offset,
                        });
                    let broker = self.hub.broker();
                    let result = match request {
                        Some(r) => broker
                            .recover(key, r)
                            .await
                            .map(|rec| (rec.recovered, rec.epoch, rec.top, rec.records)),
                        None => broker
                            .position(key)
                            .await
                            .map(|p| (true, p.epoch, p.offset, Vec::new())),
                    };
                    match result {
                        Ok((recovered, epoch, top, records)) => {
                            report.insert(
                                log.clone(),
                                json!({"recovered": recovered, "epoch": &*epoch, "offset": top}),
                            );
                            for r in records {
                                let Some(change) = Change::from_stored(table.clone(), &r.payload)
                                else {
                                    continue;
                                };
                                let hits = self.index.lookup(&change, Some(chan));
                                if hits.is_empty() {
                                    continue;
                                }
                                let position = Position {
                                    epoch: epoch.clone(),
                                    offset: r.offset,
                                };
                                replay.push((change, Some(position), hits));
                            }
                        }
                        Err(e) => {
                            warn!(table = %log, error = %e, "history read failed");
                            report.insert(
                                log.clone(),
                                json!({"recovered": false, "epoch": null, "offset": 0}),
                            );
                        }
                    }
                }
                Some(Value::Object(report))
            }
        };
        info!(conn = req.session.id, topic = %req.topic, tables = tables.len(), replayed = replay.len(), "postgres_changes subscribed");
        self.push_system(&req, "ok", "Subscribed to PostgreSQL", recovery);
        // Replays are ordered by table log; each is checked like a live change.
        self.deliver(replay, Some(chan), None).await;
    }
}

/// True when the catalog's table has every column the row names.
fn covers(table: &Table, row: &RowChange) -> bool {
    let names = row.new.iter().chain(row.old.iter()).flatten();
    names.into_iter().all(|(n, _)| table.column(n).is_some())
}

#[cfg(test)]
mod tests {
    use super::bytea_hex;

    #[test]
    fn bytea_hex_output_is_decoded() {
        assert_eq!(bytea_hex("\\x0aff10"), Some(vec![0x0a, 0xff, 0x10]));
        assert_eq!(bytea_hex("\\x"), Some(Vec::new()));
        assert_eq!(bytea_hex("\\x0"), None);
        assert_eq!(bytea_hex("\\xzz"), None);
        assert_eq!(bytea_hex("0aff"), None);
    }
}
