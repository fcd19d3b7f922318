//! Channel history: positions (epoch + offset) for every message, retention by count and age per topic
//! pattern, idempotent publish, and the reads recovery needs.
//!
//! Appends come only from the embedded broker's writer (one thread, in groups: one commit per
//! group), so offsets are assigned in one place and the channels' locks are held only to copy or
//! advance a position. Reads (a recovering join, the HTTP history API) copy the position and then
//! read the store without a lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use herald_store::{Append, AppendMany, ChannelMeta, Record, Store, StoreError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::channel::ChannelKey;

const SHARDS: usize = 64;

/// The storage behind history: the embedded store on one node, a shared one in a cluster.
pub trait HistoryBackend: Send + Sync + 'static {
    /// The channel's position, if it has a log.
    fn channel_meta(&self, channel: &[u8]) -> Result<Option<ChannelMeta>, StoreError>;
    /// Creates or updates a channel's position.
    fn set_channel_meta(&self, channel: &[u8], meta: &ChannelMeta) -> Result<(), StoreError>;
    /// Oldest offset kept.
    fn first_offset(&self, channel: &[u8]) -> Result<Option<u64>, StoreError>;
    /// Appends durably.
    fn append(&self, append: &Append<'_>) -> Result<(), StoreError>;
    /// Records after an offset, oldest first.
    fn read_after(
        &self,
        channel: &[u8],
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// The newest records since a time, oldest first.
    fn read_since(
        &self,
        channel: &[u8],
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// Drops records older than a time, scanning from offset `from`; returns how many, and the oldest
    /// offset left.
    fn trim_older_than(
        &self,
        channel: &[u8],
        from: u64,
        cutoff_ms: u64,
    ) -> Result<(usize, Option<u64>), StoreError>;
    /// Every channel with a log.
    fn channels(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The offset a live idempotency key was used at.
    fn idempotent_offset(
        &self,
        channel: &[u8],
        key: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError>;
    /// Forgets expired idempotency keys.
    fn purge_idempotency(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// Makes everything durable on disk.
    fn sync(&self) -> Result<(), StoreError>;
    /// Appends records of several channels and sets a marker, atomically.
    fn append_many(
        &self,
        appends: &[AppendMany<'_>],
        marker: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError>;
    /// A marker set by `append_many`.
    fn marker(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

impl HistoryBackend for Store {
    fn channel_meta(&self, channel: &[u8]) -> Result<Option<ChannelMeta>, StoreError> {
        Store::channel_meta(self, channel)
    }
    fn set_channel_meta(&self, channel: &[u8], meta: &ChannelMeta) -> Result<(), StoreError> {
        Store::set_channel_meta(self, channel, meta)
    }
    fn first_offset(&self, channel: &[u8]) -> Result<Option<u64>, StoreError> {
        Store::first_offset(self, channel)
    }
    fn append(&self, append: &Append<'_>) -> Result<(), StoreError> {
        Store::append(self, append)
    }
    fn read_after(
        &self,
        channel: &[u8],
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Store::read_after(self, channel, after, limit)
    }
    fn read_since(
        &self,
        channel: &[u8],
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Store::read_since(self, channel, since_ms, limit)
    }
    fn trim_older_than(
        &self,
        channel: &[u8],
        from: u64,
        cutoff_ms: u64,
    ) -> Result<(usize, Option<u64>), StoreError> {
        Store::trim_older_than(self, channel, from, cutoff_ms)
    }
    fn channels(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Store::channels(self)
    }
    fn idempotent_offset(
        &self,
        channel: &[u8],
        key: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        Store::idempotent_offset(self, channel, key, now_ms)
    }
    fn purge_idempotency(&self, now_ms: u64) -> Result<usize, StoreError> {
        Store::purge_idempotency(self, now_ms)
    }
    fn sync(&self) -> Result<(), StoreError> {
        Store::sync(self)
    }
    fn append_many(
        &self,
        appends: &[AppendMany<'_>],
        marker: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        Store::append_many(self, appends, marker)
    }
    fn marker(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::marker(self, name)
    }
}

/// History errors.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A retention rule could not be read.
    #[error("invalid history rule: {0}")]
    Rule(String),
}

/// A retention rule for channels whose name matches `topics` (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionRule {
    /// Channel name pattern, e.g. `chat:*`.
    pub topics: String,
    /// Messages kept per channel (0: no history for these channels).
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// How long messages are kept, e.g. `24h`, `90s`, `7d`.
    #[serde(default = "default_max_age")]
    pub max_age: String,
}

fn default_max_messages() -> usize {
    100
}

fn default_max_age() -> String {
    "2m".to_owned()
}

/// Parses `500ms`, `30s`, `2m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, HistoryError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| HistoryError::Rule(format!("bad duration {text:?}")))?;
    let secs = |m: u64| Duration::from_secs(n.saturating_mul(m));
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => return Err(HistoryError::Rule(format!("bad duration unit in {text:?}"))),
    })
}

fn glob(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// How long and how much a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept (0: history off).
    pub max_messages: usize,
    /// Age limit.
    pub max_age: Duration,
}

/// Settings of history.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Retention of channels no rule matches.
    pub default: Retention,
    /// Rules, first match wins.
    pub rules: Vec<(String, Retention)>,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// Largest replay served to one recovering client; further behind means `recovered: false`.
    pub max_replay: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            default: Retention {
                max_messages: 100,
                max_age: Duration::from_secs(120),
            },
            rules: Vec::new(),
            idempotency_window: Duration::from_secs(300),
            max_replay: 10_000,
        }
    }
}

impl HistorySettings {
    /// Builds the rules from their configuration form.
    pub fn with_rules(mut self, rules: &[RetentionRule]) -> Result<HistorySettings, HistoryError> {
        for r in rules {
            let retention = Retention {
                max_messages: r.max_messages,
                max_age: parse_duration(&r.max_age)?,
            };
            self.rules.push((r.topics.clone(), retention));
        }
        Ok(self)
    }

    /// The retention of a channel.
    pub fn retention(&self, name: &str) -> Retention {
        self.rules
            .iter()
            .find(|(p, _)| glob(p, name))
            .map_or(self.default, |(_, r)| *r)
    }
}

/// Milliseconds since the Unix epoch, advancing with tokio's clock (so paused time moves it in tests).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    /// A clock reading the system time once, then tokio's monotonic time.
    pub fn new() -> Clock {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A channel's position as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The epoch.
    pub epoch: Arc<str>,
    /// The offset.
    pub offset: u64,
}

#[derive(Debug)]
struct ChannelLog {
    epoch: Arc<str>,
    /// Oldest offset kept (`top + 1` when nothing is kept).
    first: u64,
    top: u64,
    retention: Retention,
}

/// What a recovering join asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverRequest {
    /// Everything after this position.
    After {
        /// The epoch the client knows.
        epoch: String,
        /// The last offset it saw.
        offset: u64,
    },
    /// The newest `limit` messages since a time (milliseconds since the Unix epoch).
    Since {
        /// Start time.
        since_ms: u64,
        /// At most this many.
        limit: usize,
    },
}

/// The outcome of a recovering join.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// True when every missed message is in `records`.
    pub recovered: bool,
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The channel's top offset at the moment of subscription.
    pub top: u64,
    /// The messages to replay, oldest first.
    pub records: Vec<Record>,
}

/// A message about to be appended.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Message id.
    pub id: &'a str,
    /// User event.
    pub event: &'a str,
    /// 0 text, 1 binary.
    pub origin: u8,
    /// Raw bytes (true) or JSON text.
    pub raw: bool,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Idempotency key, if the publisher gave one.
    pub idempotency_key: Option<&'a str>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this position.
    New(Position),
    /// The idempotency key was already used: nothing stored, nothing to deliver.
    Duplicate(Position),
}

/// The channel key as the store names it.
pub fn store_key(key: &ChannelKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.name.len());
    k.push(u8::from(key.private));
    k.extend_from_slice(key.name.as_bytes());
    k
}

fn key_from_store(k: &[u8]) -> Option<ChannelKey> {
    let (&private, name) = k.split_first()?;
    Some(ChannelKey::new(
        std::str::from_utf8(name).ok()?,
        private == 1,
    ))
}

fn new_epoch() -> Arc<str> {
    Arc::from(&uuid_like()[..8])
}

fn uuid_like() -> String {
    // 16 random hex digits from the standard library's randomly seeded hasher.
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{a:016x}")
}

type LogSlot = Arc<Mutex<Option<ChannelLog>>>;

/// History of every channel on this node.
///
/// A channel costs nothing until something is appended to it: a join (even a recovering one) of a
/// channel without messages writes nothing, and its position is the store's epoch at offset 0
/// until its first message. In memory, a channel's log is kept while someone uses it or while it
/// holds messages; the sweep visits only channels that hold messages and drops the others.
pub struct History {
    backend: Arc<dyn HistoryBackend>,
    settings: HistorySettings,
    logs: Box<[Mutex<HashMap<ChannelKey, LogSlot>>]>,
    hasher: RandomState,
    clock: Clock,
    /// The epoch of channels that have never held a message, the same across restarts (kept in
    /// the store as a marker), read on first use.
    store_epoch: std::sync::OnceLock<Arc<str>>,
    /// Channels that hold messages (and so have age retention to apply), with `true` once listed
    /// from the store at the first sweep.
    retained: Mutex<(bool, std::collections::HashSet<ChannelKey>)>,
}

/// The marker under which the store keeps [`History`]'s epoch of channels without messages.
const STORE_EPOCH_MARKER: &str = "history-epoch";

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl History {
    /// History over a backend.
    pub fn new(
        backend: Arc<dyn HistoryBackend>,
        settings: HistorySettings,
        clock: Clock,
    ) -> History {
        History {
            backend,
            settings,
            logs: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock,
            store_epoch: std::sync::OnceLock::new(),
            retained: Mutex::new((false, std::collections::HashSet::new())),
        }
    }

    /// The epoch of channels without messages: the store's, created (and kept) on first use.
    fn store_epoch(&self) -> Result<Arc<str>, HistoryError> {
        if let Some(e) = self.store_epoch.get() {
            return Ok(e.clone());
        }
        let epoch: Arc<str> = match self.backend.marker(STORE_EPOCH_MARKER)? {
            Some(bytes) => Arc::from(String::from_utf8_lossy(&bytes).as_ref()),
            None => {
                let e = new_epoch();
                self.backend
                    .append_many(&[], Some((STORE_EPOCH_MARKER, e.as_bytes())))?;
                e
            }
        };
        Ok(self.store_epoch.get_or_init(|| epoch).clone())
    }

    /// Channels the store holds a position for (every channel that ever held a message).
    pub fn stored_channels(&self) -> Result<usize, HistoryError> {
        Ok(self.backend.channels()?.len())
    }

    /// Channels whose logs are held in memory.
    pub fn cached_channels(&self) -> usize {
        self.logs.iter().map(|s| s.lock().len()).sum()
    }

    /// Now, by the history clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// True when the channel keeps history.
    pub fn enabled(&self, key: &ChannelKey) -> bool {
        self.settings.retention(&key.name).max_messages > 0
    }

    fn slot(&self, key: &ChannelKey) -> LogSlot {
        let i = (self.hasher.hash_one(key) as usize) % self.logs.len();
        self.logs[i].lock().entry(key.clone()).or_default().clone()
    }

    fn load<'a>(
        &self,
        key: &ChannelKey,
        slot: &'a mut Option<ChannelLog>,
    ) -> Result<&'a mut ChannelLog, HistoryError> {
        if slot.is_none() {
            let sk = store_key(key);
            let retention = self.settings.retention(&key.name);
            let log = match self.backend.channel_meta(&sk)? {
                Some(meta) => {
                    let first = self.backend.first_offset(&sk)?.unwrap_or(meta.top + 1);
                    ChannelLog {
                        epoch: Arc::from(meta.epoch.as_str()),
                        first,
                        top: meta.top,
                        retention,
                    }
                }
                // Nothing was ever appended: nothing is written until something is.
                None => ChannelLog {
                    epoch: self.store_epoch()?,
                    first: 1,
                    top: 0,
                    retention,
                },
            };
            *slot = Some(log);
        }
        slot.as_mut()
            .ok_or(HistoryError::Rule("unreachable: log not loaded".to_owned()))
    }

    /// Appends messages (of one or several channels) and sets a marker, as one atomic write: one
    /// commit (and, with `fsync`, one sync) for the whole group. A message whose idempotency key was
    /// used within the window (before, or earlier in the group) is not stored again: its answer is
    /// [`Appended::Duplicate`] with the original's position. Answers come in the order of `items`;
    /// within a channel, offsets follow that order.
    ///
    /// Only the embedded broker's writer calls this, so one thread assigns every offset: the
    /// channels' locks are never contended by another appender, and readers take them only to copy
    /// a position.
    pub(crate) fn append_group(
        &self,
        items: &[(ChannelKey, NewMessage<'_>)],
        marker: Option<(&str, &[u8])>,
    ) -> Result<Vec<Appended>, HistoryError> {
        let mut keys: Vec<(Vec<u8>, &ChannelKey)> =
            items.iter().map(|(k, _)| (store_key(k), k)).collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        // Locks in one global order (by store key).
        let mut guards: Vec<_> = keys.iter().map(|(_, k)| self.slot(k).lock_arc()).collect();
        for ((_, key), guard) in keys.iter().zip(guards.iter_mut()) {
            self.load(key, guard)?;
        }
        let index = |sk: &[u8]| keys.binary_search_by(|(k, _)| k.as_slice().cmp(sk));
        let now = self.clock.now_ms();
        let expires = now + self.settings.idempotency_window.as_millis() as u64;
        let mut records: Vec<Vec<Record>> = vec![Vec::new(); keys.len()];
        let mut idempotency: Vec<Vec<(&str, u64, u64)>> = vec![Vec::new(); keys.len()];
        let mut answers = Vec::with_capacity(items.len());
        for (key, msg) in items {
            let sk = store_key(key);
            let i = index(&sk).map_err(|_| HistoryError::Rule("unreachable: key".to_owned()))?;
            let log = guards[i]
                .as_ref()
                .ok_or(HistoryError::Rule("unreachable: log not loaded".to_owned()))?;
            let position = |offset| Position {
                epoch: log.epoch.clone(),
                offset,
            };
            if let Some(k) = msg.idempotency_key {
                let earlier = idempotency[i].iter().find(|(used, _, _)| *used == k);
                let used = match earlier {
                    Some((_, _, offset)) => Some(*offset),
                    None => self.backend.idempotent_offset(&sk, k, now)?,
                };
                if let Some(offset) = used {
                    answers.push(Appended::Duplicate(position(offset)));
                    continue;
                }
            }
            let offset = log.top + 1 + records[i].len() as u64;
            records[i].push(Record {
                offset,
                ts_ms: now,
                id: msg.id.to_owned(),
                event: msg.event.to_owned(),
                origin: msg.origin,
                raw: msg.raw,
                payload: msg.payload.to_vec(),
            });
            if let Some(k) = msg.idempotency_key {
                idempotency[i].push((k, expires, offset));
            }
            answers.push(Appended::New(position(offset)));
        }
        let mut plans = Vec::with_capacity(keys.len());
        for (i, guard) in guards.iter().enumerate() {
            let log = guard
                .as_ref()
                .ok_or(HistoryError::Rule("unreachable: log not loaded".to_owned()))?;
            let top = log.top + records[i].len() as u64;
            let keep = log.retention.max_messages.max(1) as u64;
            let first = log.first.max((top + 1).saturating_sub(keep));
            let meta = ChannelMeta {
                epoch: log.epoch.to_string(),
                top,
            };
            plans.push((
                meta,
                (first > log.first).then_some(log.first..first),
                top,
                first,
            ));
        }
        let appends: Vec<AppendMany<'_>> = keys
            .iter()
            .zip(plans.iter())
            .zip(records.iter().zip(idempotency.iter()))
            .filter(|(_, (records, _))| !records.is_empty())
            .map(
                |(((sk, _), (meta, evict, _, _)), (records, idempotency))| AppendMany {
                    channel: sk,
                    meta,
                    records,
                    evict: evict.clone(),
                    idempotency,
                },
            )
            .collect();
        if appends.is_empty() && marker.is_none() {
            return Ok(answers);
        }
        self.backend.append_many(&appends, marker)?;
        let mut retained = self.retained.lock();
        for (i, (guard, (_, _, top, first))) in guards.iter_mut().zip(plans.iter()).enumerate() {
            if records[i].is_empty() {
                continue;
            }
            if let Some(log) = guard.as_mut() {
                log.top = *top;
                log.first = (*first).min(*top);
            }
            retained.1.insert(keys[i].1.clone());
        }
        Ok(answers)
    }

    /// A marker set by [`History::append_batch`].
    pub fn marker(&self, name: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        Ok(self.backend.marker(name)?)
    }

    /// Reads what a client missed, up to the channel's top at the moment of the call. Holds no lock
    /// while it reads the store: the position is copied first, and only records up to it are read.
    /// Messages appended after that reach a recovering subscriber live (the hub holds them until
    /// the replay is out), so the replay and the live messages meet without a gap or a repeat.
    pub fn read_missed(
        &self,
        key: &ChannelKey,
        request: &RecoverRequest,
    ) -> Result<Recovery, HistoryError> {
        let (epoch, first, top) = {
            let slot = self.slot(key);
            let mut guard = slot.lock();
            let log = self.load(key, &mut guard)?;
            (log.epoch.clone(), log.first, log.top)
        };
        let sk = store_key(key);
        let (recovered, records) = match request {
            RecoverRequest::After {
                epoch: known,
                offset,
            } => {
                let behind = top.saturating_sub(*offset);
                let whole = *known == *epoch
                    && *offset <= top
                    && offset.saturating_add(1) >= first
                    && behind as usize <= self.settings.max_replay;
                if whole {
                    let records = self.backend.read_after(&sk, *offset, behind as usize)?;
                    // Never a partial replay: the store must hold every offset in the gap.
                    let complete = records.len() as u64 == behind
                        && records.first().is_none_or(|r| r.offset == offset + 1)
                        && records.last().is_none_or(|r| r.offset == top);
                    if complete {
                        (true, records)
                    } else {
                        (false, Vec::new())
                    }
                } else {
                    (false, Vec::new())
                }
            }
            RecoverRequest::Since { since_ms, limit } => {
                let mut records = self.backend.read_since(
                    &sk,
                    *since_ms,
                    (*limit).min(self.settings.max_replay),
                )?;
                // Appended after the position was copied: those arrive live.
                records.retain(|r| r.offset <= top);
                (true, records)
            }
        };
        Ok(Recovery {
            recovered,
            epoch,
            top,
            records,
        })
    }

    /// The channel's current position (creating its log if needed).
    pub fn position(&self, key: &ChannelKey) -> Result<Position, HistoryError> {
        let slot = self.slot(key);
        let mut guard = slot.lock();
        let log = self.load(key, &mut guard)?;
        Ok(Position {
            epoch: log.epoch.clone(),
            offset: log.top,
        })
    }

    /// Up to `limit` records after `after`, for the HTTP API.
    pub fn read_after(
        &self,
        key: &ChannelKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, HistoryError> {
        Ok(self.backend.read_after(&store_key(key), after, limit)?)
    }

    /// Applies age retention to the channels that hold messages, forgets expired idempotency keys,
    /// and drops from memory the logs nobody uses that hold no messages.
    pub fn sweep(&self) -> Result<usize, HistoryError> {
        let now = self.clock.now_ms();
        let mut removed = 0;
        let channels: Vec<ChannelKey> = {
            let mut r = self.retained.lock();
            if !r.0 {
                // Once, at the first sweep: the channels the store holds from earlier runs.
                let stored = self.backend.channels()?;
                r.1.extend(stored.iter().filter_map(|sk| key_from_store(sk)));
                r.0 = true;
            }
            r.1.iter().cloned().collect()
        };
        for key in channels {
            let sk = store_key(&key);
            let retention = self.settings.retention(&key.name);
            let cutoff = now.saturating_sub(retention.max_age.as_millis() as u64);
            let slot = self.slot(&key);
            let mut guard = slot.lock();
            let log = self.load(&key, &mut guard)?;
            let (n, oldest) = self.backend.trim_older_than(&sk, log.first, cutoff)?;
            if n > 0 {
                removed += n;
                log.first = oldest.unwrap_or(log.top + 1);
            }
            if oldest.is_none() {
                // Empty now: nothing to sweep until the next append.
                self.retained.lock().1.remove(&key);
            }
        }
        self.evict_idle();
        self.backend.purge_idempotency(now)?;
        Ok(removed)
    }

    /// Drops the in-memory logs that no one holds and that hold no messages (they load again, from
    /// the store or empty, when next used), and gives back the room of maps that emptied.
    fn evict_idle(&self) {
        let retained = self.retained.lock();
        for shard in self.logs.iter() {
            let mut map = shard.lock();
            map.retain(|key, slot| Arc::strong_count(slot) > 1 || retained.1.contains(key));
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
    }

    /// Makes everything durable on disk.
    pub fn sync(&self) -> Result<(), HistoryError> {
        Ok(self.backend.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(dir: &std::path::Path, settings: HistorySettings) -> History {
        let store = Store::open(dir, false).unwrap();
        History::new(Arc::new(store), settings, Clock::new())
    }

    fn append(h: &History, key: &ChannelKey, m: &NewMessage<'_>) -> Appended {
        h.append_group(&[(key.clone(), m.clone())], None)
            .unwrap()
            .remove(0)
    }

    fn recover(h: &History, key: &ChannelKey, request: &RecoverRequest) -> Recovery {
        h.read_missed(key, request).unwrap()
    }

    fn msg(id: &str) -> NewMessage<'_> {
        NewMessage {
            id,
            event: "e",
            origin: 0,
            raw: false,
            payload: b"{}",
            idempotency_key: None,
        }
    }

    #[test]
    fn an_empty_channel_writes_nothing_and_keeps_its_position_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let key = ChannelKey::new("never-written", false);
        let first = {
            let h = history(dir.path(), HistorySettings::default());
            let p = h.position(&key).unwrap();
            assert_eq!(p.offset, 0);
            assert_eq!(h.stored_channels().unwrap(), 0);
            p
        };
        let h = history(dir.path(), HistorySettings::default());
        let again = h.position(&key).unwrap();
        assert_eq!(again, first);
        let request = RecoverRequest::After {
            epoch: first.epoch.to_string(),
            offset: 0,
        };
        let recovery = recover(&h, &key, &request);
        assert!(recovery.recovered);
        // Its first message keeps the epoch the channel showed while empty.
        let appended = append(&h, &key, &msg("m1"));
        assert_eq!(
            appended,
            Appended::New(Position {
                epoch: first.epoch.clone(),
                offset: 1
            })
        );
        assert_eq!(h.stored_channels().unwrap(), 1);
        // Nothing uses it, but it holds a message: the sweep keeps its log.
        h.sweep().unwrap();
        assert_eq!(h.cached_channels(), 1);
    }

    #[test]
    fn a_batch_spans_channels_keeps_order_evicts_and_sets_its_marker_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let settings = HistorySettings {
            default: Retention {
                max_messages: 3,
                max_age: Duration::from_secs(60),
            },
            ..HistorySettings::default()
        };
        let h = history(dir.path(), settings.clone());
        let (a, b) = (ChannelKey::new("a", true), ChannelKey::new("b", true));
        append(&h, &a, &msg("a1"));
        let items: Vec<(ChannelKey, NewMessage<'_>)> = ["a2", "b1", "a3", "a4", "a5"]
            .iter()
            .map(|id| {
                (
                    if id.starts_with('a') {
                        a.clone()
                    } else {
                        b.clone()
                    },
                    msg(id),
                )
            })
            .collect();
        let positions = h.append_group(&items, Some(("m", b"42"))).unwrap();
        let offsets: Vec<u64> = positions
            .iter()
            .map(|p| match p {
                Appended::New(p) => p.offset,
                Appended::Duplicate(_) => 0,
            })
            .collect();
        assert_eq!(offsets, vec![2, 1, 3, 4, 5]);
        // Retention of 3: a1 and a2 are gone, a3..a5 kept in order.
        let kept: Vec<String> = h
            .read_after(&a, 0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, vec!["a3", "a4", "a5"]);
        assert_eq!(h.position(&b).unwrap().offset, 1);
        drop(h);
        let h = history(dir.path(), settings);
        assert_eq!(h.marker("m").unwrap().as_deref(), Some(&b"42"[..]));
        assert_eq!(h.position(&a).unwrap().offset, 5);
        let request = RecoverRequest::After {
            epoch: h.position(&a).unwrap().epoch.to_string(),
            offset: 1,
        };
        let r = recover(&h, &a, &request);
        assert!(!r.recovered, "offset 2 was evicted: no partial replay");
    }

    #[test]
    fn durations_and_globs() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("3 weeks").is_err());
        assert!(glob("chat:*", "chat:room") && !glob("chat:*", "news"));
        assert!(
            glob("*:x:*", "a:x:b") && glob("*", "") && glob("a*c", "abc") && !glob("a*c", "abd")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_retention_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let rules = [RetentionRule {
            topics: "short:*".into(),
            max_messages: 3,
            max_age: "10s".into(),
        }];
        let h = history(
            dir.path(),
            HistorySettings::default().with_rules(&rules).unwrap(),
        );
        let k = ChannelKey::new("short:a", false);
        for i in 1..=5 {
            let a = append(&h, &k, &msg(&format!("m{i}")));
            assert!(matches!(a, Appended::New(p) if p.offset == i));
        }
        // Count: only 3..=5 kept.
        let epoch = h.position(&k).unwrap().epoch.to_string();
        let r = recover(
            &h,
            &k,
            &RecoverRequest::After {
                epoch: epoch.clone(),
                offset: 2,
            },
        );
        assert!(r.recovered);
        assert_eq!(
            r.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let r = recover(
            &h,
            &k,
            &RecoverRequest::After {
                epoch: epoch.clone(),
                offset: 1,
            },
        );
        assert!(
            !r.recovered && r.records.is_empty(),
            "a partial replay must not be served"
        );
        // Age: after 11 s everything is gone, and the position is kept.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(h.sweep().unwrap(), 3);
        let r = recover(
            &h,
            &k,
            &RecoverRequest::After {
                epoch: epoch.clone(),
                offset: 5,
            },
        );
        assert!(r.recovered && r.records.is_empty() && r.top == 5);
        let r = recover(&h, &k, &RecoverRequest::After { epoch, offset: 4 });
        assert!(!r.recovered);
        let a = append(&h, &k, &msg("m6"));
        assert!(matches!(a, Appended::New(p) if p.offset == 6));
    }

    #[tokio::test]
    async fn idempotency_and_epoch_change_after_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let k = ChannelKey::new("room", false);
        let epoch = {
            let h = history(dir.path(), HistorySettings::default());
            let m = NewMessage {
                idempotency_key: Some("k"),
                ..msg("a")
            };
            let first = append(&h, &k, &m);
            let again = append(&h, &k, &m);
            // A repeat within one group is a duplicate too.
            let twice = h
                .append_group(&[(k.clone(), m.clone()), (k.clone(), m.clone())], None)
                .unwrap();
            assert!(matches!(
                &twice[..],
                [Appended::Duplicate(_), Appended::Duplicate(_)]
            ));
            let fresh = NewMessage {
                idempotency_key: Some("k2"),
                ..msg("b")
            };
            let pair = h
                .append_group(&[(k.clone(), fresh.clone()), (k.clone(), fresh)], None)
                .unwrap();
            assert!(
                matches!(&pair[..], [Appended::New(a), Appended::Duplicate(b)] if a == b && a.offset == 2)
            );
            let (Appended::New(p1), Appended::Duplicate(p2)) = (first, again) else {
                panic!()
            };
            assert_eq!(p1, p2);
            p1.epoch.to_string()
        };
        // Reopened: same epoch, same offsets.
        {
            let h = history(dir.path(), HistorySettings::default());
            assert_eq!(
                h.position(&k).unwrap(),
                Position {
                    epoch: Arc::from(epoch.as_str()),
                    offset: 2
                }
            );
        }
        // Wiped: a new epoch, and the old position cannot be recovered.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let h = history(dir.path(), HistorySettings::default());
        let p = h.position(&k).unwrap();
        assert_ne!(&*p.epoch, epoch.as_str());
        let r = recover(&h, &k, &RecoverRequest::After { epoch, offset: 1 });
        assert!(!r.recovered);
    }
}
