//! The replication consumer: holds the cluster's leader lock, reads `pgoutput` (protocol v2, large
//! transactions streamed) from the permanent slot, turns each message into Herald's [`WalEvent`],
//! and reconnects with backoff when PostgreSQL goes away. The slot's position only moves when the
//! processor reports a transaction handed over ([`Feedback::done`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pg_walstream::{
    LogicalReplicationMessage, LogicalReplicationParser, LogicalReplicationStream,
    ReplicationStreamConfig, RetryConfig, SharedLsnFeedback, StreamingMode, TupleData,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Settings;
use crate::change::Kind;

/// Column values of a row as sent: (name, text or NULL). Unsent columns are missing.
pub type RawRow = Vec<(Arc<str>, Option<String>)>;

/// One row change as read from the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowChange {
    /// Schema.
    pub schema: Arc<str>,
    /// Table.
    pub table: Arc<str>,
    /// What happened.
    pub kind: Kind,
    /// New row.
    pub new: Option<RawRow>,
    /// Old row (replica identity).
    pub old: Option<RawRow>,
}

/// What the consumer hands the processor, in stream order.
#[derive(Debug)]
pub enum WalEvent {
    /// A (re)connection: anything partial from before is void; PostgreSQL sends it again.
    Reset,
    /// A transaction begins (sent after its commit, so its changes may be handled at once).
    Begin {
        /// Its commit position.
        commit_lsn: u64,
        /// Commit time.
        timestamp: chrono::DateTime<chrono::Utc>,
        /// Its transaction id (32 bits, as the stream carries it).
        xid: u32,
    },
    /// A change inside the current transaction.
    Row(RowChange),
    /// The transaction committed.
    Commit {
        /// Commit position.
        commit_lsn: u64,
        /// End of the commit record: what the slot may be advanced to.
        end_lsn: u64,
    },
    /// A chunk of a large, still running transaction.
    StreamRow {
        /// The top-level transaction.
        xid: u32,
        /// The (sub)transaction the change belongs to.
        subxid: u32,
        /// The change.
        row: RowChange,
    },
    /// A streamed transaction committed.
    StreamCommit {
        /// Its xid.
        xid: u32,
        /// Commit position.
        commit_lsn: u64,
        /// End of the commit record.
        end_lsn: u64,
        /// Commit time.
        timestamp: chrono::DateTime<chrono::Utc>,
    },
    /// A streamed transaction (or one of its subtransactions) rolled back.
    StreamAbort {
        /// The top-level transaction.
        xid: u32,
        /// The subtransaction rolled back (equal to `xid`: all of it).
        subxid: u32,
    },
    /// A table's shape was (re)announced: the catalog may have changed.
    Relation,
}

/// The link between the processor's progress and the slot's acknowledged position.
#[derive(Debug, Default)]
pub struct Feedback {
    current: Mutex<Option<Arc<SharedLsnFeedback>>>,
    done: AtomicU64,
    /// True while a replication stream is running.
    pub streaming: AtomicBool,
    /// True while this node holds the leader lock.
    pub leader: AtomicBool,
    /// True once the schema is installed and the catalog read.
    pub ready: AtomicBool,
    /// True while another node holds the leader lock and this one waits.
    pub standby: AtomicBool,
}

impl Feedback {
    /// Everything up to `lsn` is handed to the hub (and history): the slot may move there.
    pub fn done(&self, lsn: u64) {
        self.done.fetch_max(lsn, Ordering::AcqRel);
        if let Some(f) = self.current.lock().as_ref() {
            f.update_flushed_lsn(lsn);
            f.update_applied_lsn(lsn);
        }
    }

    /// The last position handed over.
    pub fn done_lsn(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    fn attach(&self, f: Arc<SharedLsnFeedback>) {
        let done = self.done_lsn();
        if done > 0 {
            f.update_flushed_lsn(done);
            f.update_applied_lsn(done);
        }
        *self.current.lock() = Some(f);
    }
}

/// `url` with `replication=database` added.
pub fn replication_url(url: &str) -> String {
    if url.contains("replication=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}replication=database")
}

/// A table as the stream announced it: names of its columns, in order.
struct Relation {
    schema: Arc<str>,
    table: Arc<str>,
    columns: Vec<Arc<str>>,
    /// Which columns belong to the replica identity key.
    key: Vec<bool>,
}

/// The columns of a tuple; with `key_only` (an old tuple of type `K`), only the identity columns,
/// since PostgreSQL sends the others as NULL.
fn raw_row(rel: &Relation, tuple: &TupleData, key_only: bool) -> RawRow {
    tuple
        .columns
        .iter()
        .zip(rel.columns.iter())
        .zip(rel.key.iter())
        .filter(|((c, _), is_key)| !c.is_unchanged() && (!key_only || **is_key))
        .map(|((c, name), _)| {
            let text = if c.is_null() {
                None
            } else {
                Some(String::from_utf8_lossy(c.as_bytes()).into_owned())
            };
            (name.clone(), text)
        })
        .collect()
}

fn timestamp(ts: i64) -> chrono::DateTime<chrono::Utc> {
    pg_walstream::postgres_timestamp_to_chrono(ts)
}

/// Why one streaming attempt ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("{0}")]
    Replication(#[from] pg_walstream::ReplicationError),
    #[error("the processor stopped")]
    ProcessorGone,
    #[error("the leader lock connection was lost")]
    LockLost,
    #[error("shutting down")]
    Shutdown,
}

/// Runs the consumer until shutdown: waits for the leader lock, streams, reconnects.
pub async fn run(
    settings: Arc<Settings>,
    events: mpsc::Sender<WalEvent>,
    feedback: Arc<Feedback>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        // The leader lock lives on its own connection for as long as this node streams.
        let lock = match take_lock(&settings, &feedback, &shutdown).await {
            Some(lock) => lock,
            None => {
                if shutdown.is_cancelled() {
                    return;
                }
                backoff.wait(&shutdown).await;
                continue;
            }
        };
        feedback.leader.store(true, Ordering::Release);
        let cancel = shutdown.child_token();
        let watcher = {
            let cancel = cancel.clone();
            let lost = lock.lost.clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                cancel.cancel();
            })
        };
        let result = stream_once(&settings, &events, &feedback, &cancel, &mut backoff).await;
        watcher.abort();
        feedback.streaming.store(false, Ordering::Release);
        let lock_lost = lock.lost.is_cancelled();
        drop(lock);
        feedback.leader.store(false, Ordering::Release);
        match result {
            Err(StreamEnd::ProcessorGone) => return,
            _ if shutdown.is_cancelled() => return,
            Err(e) => {
                let e = if lock_lost { StreamEnd::LockLost } else { e };
                warn!(error = %e, "replication stopped; reconnecting");
                herald_core::stats::error("pg_replication");
            }
            Ok(()) => {}
        }
        backoff.wait(&shutdown).await;
    }
}

async fn stream_once(
    settings: &Settings,
    events: &mpsc::Sender<WalEvent>,
    feedback: &Feedback,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), StreamEnd> {
    let config =
        ReplicationStreamConfig::builder(settings.slot.clone(), settings.publication.clone())
            .with_protocol_version(2)
            .with_streaming_mode(StreamingMode::On)
            .with_feedback_interval(Duration::from_millis(500))
            .with_connection_timeout(Duration::from_secs(10))
            .with_health_check_interval(Duration::from_secs(30))
            .with_retry_config(RetryConfig {
                max_attempts: 1,
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                multiplier: 2.0,
                max_duration: Duration::from_secs(5),
                jitter: true,
            });
    let url = replication_url(&settings.database_url);
    let mut stream = LogicalReplicationStream::new(&url, config).await?;
    feedback.attach(stream.shared_lsn_feedback.clone());
    stream.start(None).await?;
    info!(slot = %settings.slot, publication = %settings.publication, "replication streaming");
    feedback.streaming.store(true, Ordering::Release);
    events
        .send(WalEvent::Reset)
        .await
        .map_err(|_| StreamEnd::ProcessorGone)?;
    let mut parser = LogicalReplicationParser::with_protocol_version(2);
    let mut relations: HashMap<u32, Relation> = HashMap::new();
    let mut streaming_xid: Option<u32> = None;
    let mut got_any = false;
    loop {
        if cancel.is_cancelled() {
            return Err(StreamEnd::Shutdown);
        }
        let raw = stream.next_raw_event(cancel).await?;
        if raw.data.is_empty() {
            continue;
        }
        if !got_any {
            got_any = true;
            backoff.reset();
        }
        let tag = raw.data[0];
        // Inside a streamed chunk, a change carries the xid of its (sub)transaction first.
        let subxid = match (streaming_xid, tag) {
            (Some(_), b'I' | b'U' | b'D') if raw.data.len() >= 5 => Some(u32::from_be_bytes([
                raw.data[1],
                raw.data[2],
                raw.data[3],
                raw.data[4],
            ])),
            _ => None,
        };
        let parsed = parser.parse_wal_message_bytes(raw.data.clone())?;
        let change = |rel_id: u32,
                      kind: Kind,
                      new: Option<&TupleData>,
                      old: Option<(&TupleData, bool)>,
                      relations: &HashMap<u32, Relation>| {
            let rel = relations.get(&rel_id)?;
            Some(RowChange {
                schema: rel.schema.clone(),
                table: rel.table.clone(),
                kind,
                new: new.map(|t| raw_row(rel, t, false)),
                old: old.map(|(t, key_only)| raw_row(rel, t, key_only)),
            })
        };
        let row = match &parsed.message {
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                change(*relation_id, Kind::Insert, Some(tuple), None, &relations)
            }
            LogicalReplicationMessage::Update {
                relation_id,
                old_tuple,
                new_tuple,
                key_type,
            } => change(
                *relation_id,
                Kind::Update,
                Some(new_tuple),
                old_tuple.as_ref().map(|t| (t, *key_type == Some('K'))),
                &relations,
            ),
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                key_type,
            } => change(
                *relation_id,
                Kind::Delete,
                None,
                Some((old_tuple, *key_type == 'K')),
                &relations,
            ),
            _ => None,
        };
        let out = match parsed.message {
            LogicalReplicationMessage::Begin {
                final_lsn,
                timestamp: ts,
                xid,
            } => Some(WalEvent::Begin {
                commit_lsn: final_lsn,
                timestamp: timestamp(ts),
                xid,
            }),
            LogicalReplicationMessage::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => Some(WalEvent::Commit {
                commit_lsn,
                end_lsn,
            }),
            LogicalReplicationMessage::StreamStart { xid, .. } => {
                streaming_xid = Some(xid);
                None
            }
            LogicalReplicationMessage::StreamStop => {
                streaming_xid = None;
                None
            }
            LogicalReplicationMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                timestamp: ts,
                ..
            } => Some(WalEvent::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                timestamp: timestamp(ts),
            }),
            LogicalReplicationMessage::StreamAbort {
                xid,
                subtransaction_xid,
                ..
            } => Some(WalEvent::StreamAbort {
                xid,
                subxid: subtransaction_xid,
            }),
            LogicalReplicationMessage::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                relations.insert(
                    relation_id,
                    Relation {
                        schema: namespace,
                        table: relation_name,
                        key: columns.iter().map(|c| c.flags & 1 == 1).collect(),
                        columns: columns.into_iter().map(|c| c.name).collect(),
                    },
                );
                Some(WalEvent::Relation)
            }
            LogicalReplicationMessage::Truncate { relation_ids, .. } => {
                info!(relations = ?relation_ids, "TRUNCATE is not delivered as a change");
                None
            }
            _ => row.map(|row| match streaming_xid {
                Some(xid) => WalEvent::StreamRow {
                    xid,
                    subxid: subxid.unwrap_or(xid),
                    row,
                },
                None => WalEvent::Row(row),
            }),
        };
        if let Some(out) = out {
            events
                .send(out)
                .await
                .map_err(|_| StreamEnd::ProcessorGone)?;
        }
    }
}

/// The leader lock: a session advisory lock held on its own connection.
struct LeaderLock {
    lost: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    client: tokio_postgres::Client,
}

impl Drop for LeaderLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until this node holds the lock (standby meanwhile); `None` when the database cannot be
/// reached or on shutdown.
async fn take_lock(
    settings: &Settings,
    feedback: &Feedback,
    shutdown: &CancellationToken,
) -> Option<LeaderLock> {
    let (client, connection) = match tokio_postgres::connect(&settings.database_url, NoTls).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot connect to PostgreSQL");
            return None;
        }
    };
    let lost = CancellationToken::new();
    let task = {
        let lost = lost.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "leader lock connection lost");
            }
            lost.cancel();
        })
    };
    let lock = LeaderLock { lost, task, client };
    let key = format!("herald:{}", settings.slot);
    let mut said_standby = false;
    loop {
        let got = lock
            .client
            .query_one("select pg_try_advisory_lock(hashtext($1))", &[&key])
            .await;
        match got {
            Ok(row) if row.get::<_, bool>(0) => {
                feedback.standby.store(false, Ordering::Release);
                info!(slot = %settings.slot, "leader: this node consumes the replication slot");
                return Some(lock);
            }
            Ok(_) => {
                feedback.standby.store(true, Ordering::Release);
                if !said_standby {
                    info!(slot = %settings.slot, "standby: another node consumes the replication slot");
                    said_standby = true;
                }
            }
            Err(e) => {
                warn!(error = %e, "leader lock query failed");
                return None;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = lock.lost.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Exponential backoff with full jitter, 250 ms to 10 s.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { attempt: 0 }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    async fn wait(&mut self, shutdown: &CancellationToken) {
        let cap = (250u64 << self.attempt.min(6)).min(10_000);
        self.attempt += 1;
        let jitter = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(self.attempt) % (cap / 2 + 1)
        };
        let delay = Duration::from_millis(cap / 2 + jitter);
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}
