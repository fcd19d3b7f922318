//! Herald's embedded history store: per channel, an append-only log of records keyed by offset, the
//! channel's epoch and top offset, and the idempotency keys of recent publishes.
//!
//! Built on fjall (an LSM-tree): appends are sequential writes to its journal, reads of recent records
//! come from memory, and trimming old records is cheap. Every append is one atomic batch (record,
//! channel position, idempotency key, evictions) written through to the operating system before
//! `append` returns, so a process crash (even `kill -9`) loses nothing that was appended. With
//! `fsync`, each batch is also synced to the disk, which survives power loss at a cost in throughput.
//!
//! Keys: `len(channel) as u16 BE | channel | offset as u64 BE` (log) and `len | channel | key` (idempotency),
//! so each channel's records are one contiguous, ordered range.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use thiserror::Error;

/// Errors of the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The storage engine failed.
    #[error("history store: {0}")]
    Engine(#[from] fjall::Error),
    /// A stored value could not be read back.
    #[error("history store: corrupt {0}")]
    Corrupt(&'static str),
    /// A channel name longer than `MAX_NAME_BYTES`.
    #[error("history store: channel name too long")]
    ChannelTooLong,
    /// An idempotency key longer than `MAX_NAME_BYTES`.
    #[error("history store: idempotency key too long")]
    KeyTooLong,
}

/// The longest channel name and idempotency key the store takes: far below the engine's key limit
/// (64 KiB), which it would enforce by panicking. Callers check shorter limits first.
pub const MAX_NAME_BYTES: usize = 1024;

/// Result type of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A channel's position: its epoch and the offset of its newest record (0 before the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMeta {
    /// Changes whenever the channel's log is lost.
    pub epoch: String,
    /// Offset of the newest record ever appended in this epoch.
    pub top: u64,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the channel (1, 2, ...).
    pub offset: u64,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The message id.
    pub id: String,
    /// The user event name.
    pub event: String,
    /// How the message arrived (0 text, 1 binary).
    pub origin: u8,
    /// True for raw bytes, false for JSON text.
    pub raw: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

const RECORD_VERSION: u8 = 1;

impl Record {
    fn encode(&self) -> Result<Vec<u8>> {
        let id_len = u8::try_from(self.id.len())
            .map_err(|_| StoreError::Corrupt("message id longer than 255 bytes"))?;
        let ev_len = u16::try_from(self.event.len())
            .map_err(|_| StoreError::Corrupt("event longer than 65535 bytes"))?;
        let mut v = Vec::with_capacity(16 + self.id.len() + self.event.len() + self.payload.len());
        v.push(RECORD_VERSION);
        v.extend_from_slice(&self.ts_ms.to_be_bytes());
        v.push(self.origin);
        v.push(u8::from(self.raw));
        v.push(id_len);
        v.extend_from_slice(self.id.as_bytes());
        v.extend_from_slice(&ev_len.to_be_bytes());
        v.extend_from_slice(self.event.as_bytes());
        v.extend_from_slice(&self.payload);
        Ok(v)
    }

    fn decode(offset: u64, v: &[u8]) -> Result<Record> {
        let bad = || StoreError::Corrupt("record");
        let (&version, rest) = v.split_first().ok_or_else(bad)?;
        if version != RECORD_VERSION {
            return Err(bad());
        }
        let (ts, rest) = rest.split_at_checked(8).ok_or_else(bad)?;
        let ts_ms = u64::from_be_bytes(ts.try_into().map_err(|_| bad())?);
        let (&origin, rest) = rest.split_first().ok_or_else(bad)?;
        let (&raw, rest) = rest.split_first().ok_or_else(bad)?;
        let (&id_len, rest) = rest.split_first().ok_or_else(bad)?;
        let (id, rest) = rest.split_at_checked(usize::from(id_len)).ok_or_else(bad)?;
        let (ev_len, rest) = rest.split_at_checked(2).ok_or_else(bad)?;
        let ev_len = usize::from(u16::from_be_bytes(ev_len.try_into().map_err(|_| bad())?));
        let (event, payload) = rest.split_at_checked(ev_len).ok_or_else(bad)?;
        Ok(Record {
            offset,
            ts_ms,
            id: String::from_utf8(id.to_vec()).map_err(|_| bad())?,
            event: String::from_utf8(event.to_vec()).map_err(|_| bad())?,
            origin,
            raw: raw != 0,
            payload: payload.to_vec(),
        })
    }
}

/// An append: the record, the channel's new position, what to evict, and an idempotency key to remember.
#[derive(Debug)]
pub struct Append<'a> {
    /// The channel.
    pub channel: &'a [u8],
    /// The channel's position after this append (its `top` is the record's offset).
    pub meta: &'a ChannelMeta,
    /// The record.
    pub record: &'a Record,
    /// Remove records with offsets in this range (retention by count).
    pub evict: Option<std::ops::Range<u64>>,
    /// Remember `(key, expires_ms)` for deduplication.
    pub idempotency: Option<(&'a str, u64)>,
}

/// Several records of one channel, appended together.
#[derive(Debug)]
pub struct AppendMany<'a> {
    /// The channel.
    pub channel: &'a [u8],
    /// The channel's position after the append.
    pub meta: &'a ChannelMeta,
    /// The records, oldest first.
    pub records: &'a [Record],
    /// Remove records with offsets in this range (retention by count).
    pub evict: Option<std::ops::Range<u64>>,
    /// Idempotency keys to remember: `(key, expires_ms, offset)`.
    pub idempotency: &'a [(&'a str, u64, u64)],
}

/// The store.
pub struct Store {
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    idem: Keyspace,
    markers: Keyspace,
    durability: PersistMode,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn prefix(channel: &[u8]) -> Result<Vec<u8>> {
    if channel.len() > MAX_NAME_BYTES {
        return Err(StoreError::ChannelTooLong);
    }
    let len = u16::try_from(channel.len()).map_err(|_| StoreError::ChannelTooLong)?;
    let mut k = Vec::with_capacity(2 + channel.len() + 8);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(channel);
    Ok(k)
}

fn idempotency_key(channel: &[u8], key: &str) -> Result<Vec<u8>> {
    if key.len() > MAX_NAME_BYTES {
        return Err(StoreError::KeyTooLong);
    }
    let mut k = prefix(channel)?;
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

fn log_key(channel: &[u8], offset: u64) -> Result<Vec<u8>> {
    let mut k = prefix(channel)?;
    k.extend_from_slice(&offset.to_be_bytes());
    Ok(k)
}

fn offset_of(key: &[u8]) -> Result<u64> {
    let tail = key
        .get(key.len().saturating_sub(8)..)
        .ok_or(StoreError::Corrupt("key"))?;
    Ok(u64::from_be_bytes(
        tail.try_into().map_err(|_| StoreError::Corrupt("key"))?,
    ))
}

/// Largest in-memory write buffer of one keyspace before it is flushed.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// Block cache of the whole store.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store in `dir`. With `fsync`, every append is synced to disk.
    pub fn open(dir: &Path, fsync: bool) -> Result<Store> {
        // Small memtables and cache: a burst of appends (a large database transaction, a publish
        // flood) is flushed to disk in small steps instead of growing the process by hundreds of MiB.
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .cache_size(CACHE_BYTES)
            .open()?;
        let small = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let log = db.keyspace("log", small)?;
        let meta = db.keyspace("meta", small)?;
        let idem = db.keyspace("idempotency", small)?;
        let markers = db.keyspace("markers", small)?;
        Ok(Store {
            db,
            log,
            meta,
            idem,
            markers,
            durability: if fsync {
                PersistMode::SyncData
            } else {
                PersistMode::Buffer
            },
        })
    }

    /// The channel's position, if it has a log.
    pub fn channel_meta(&self, channel: &[u8]) -> Result<Option<ChannelMeta>> {
        let Some(v) = self.meta.get(prefix(channel)?)? else {
            return Ok(None);
        };
        let bad = || StoreError::Corrupt("channel meta");
        let (top, epoch) = v.split_at_checked(8).ok_or_else(bad)?;
        Ok(Some(ChannelMeta {
            top: u64::from_be_bytes(top.try_into().map_err(|_| bad())?),
            epoch: String::from_utf8(epoch.to_vec()).map_err(|_| bad())?,
        }))
    }

    fn meta_value(meta: &ChannelMeta) -> Vec<u8> {
        let mut v = meta.top.to_be_bytes().to_vec();
        v.extend_from_slice(meta.epoch.as_bytes());
        v
    }

    /// Records the position of a channel (creates its log).
    pub fn set_channel_meta(&self, channel: &[u8], meta: &ChannelMeta) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(self.durability));
        batch.insert(&self.meta, prefix(channel)?, Self::meta_value(meta));
        batch.commit()?;
        Ok(())
    }

    /// Offset of the oldest record still kept, if any.
    pub fn first_offset(&self, channel: &[u8]) -> Result<Option<u64>> {
        match self.log.prefix(prefix(channel)?).next() {
            None => Ok(None),
            Some(guard) => Ok(Some(offset_of(&guard.key()?)?)),
        }
    }

    /// Appends atomically; returns once the batch is in the operating system's hands (or on disk with fsync).
    pub fn append(&self, a: &Append<'_>) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(self.durability));
        batch.insert(
            &self.log,
            log_key(a.channel, a.record.offset)?,
            a.record.encode()?,
        );
        batch.insert(&self.meta, prefix(a.channel)?, Self::meta_value(a.meta));
        if let Some(range) = a.evict.clone() {
            for offset in range {
                batch.remove(&self.log, log_key(a.channel, offset)?);
            }
        }
        if let Some((key, expires_ms)) = a.idempotency {
            let k = idempotency_key(a.channel, key)?;
            let mut v = expires_ms.to_be_bytes().to_vec();
            v.extend_from_slice(&a.record.offset.to_be_bytes());
            batch.insert(&self.idem, k, v);
        }
        batch.commit()?;
        Ok(())
    }

    /// Appends records of several channels and sets a marker, as one atomic write: after a crash
    /// either all of it is there or none.
    pub fn append_many(
        &self,
        appends: &[AppendMany<'_>],
        marker: Option<(&str, &[u8])>,
    ) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(self.durability));
        for a in appends {
            let evict = a.evict.clone().unwrap_or(0..0);
            for record in a.records {
                if !evict.contains(&record.offset) {
                    batch.insert(
                        &self.log,
                        log_key(a.channel, record.offset)?,
                        record.encode()?,
                    );
                }
            }
            batch.insert(&self.meta, prefix(a.channel)?, Self::meta_value(a.meta));
            let newest = a.records.first().map_or(u64::MAX, |r| r.offset);
            for offset in evict.filter(|o| *o < newest) {
                batch.remove(&self.log, log_key(a.channel, offset)?);
            }
            for (key, expires_ms, offset) in a.idempotency {
                let mut v = expires_ms.to_be_bytes().to_vec();
                v.extend_from_slice(&offset.to_be_bytes());
                batch.insert(&self.idem, idempotency_key(a.channel, key)?, v);
            }
        }
        if let Some((name, value)) = marker {
            batch.insert(&self.markers, name.as_bytes(), value);
        }
        batch.commit()?;
        Ok(())
    }

    /// A marker set by [`Store::append_many`].
    pub fn marker(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.markers.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Up to `limit` records with offsets above `after`, oldest first.
    pub fn read_after(&self, channel: &[u8], after: u64, limit: usize) -> Result<Vec<Record>> {
        let start = log_key(channel, after.saturating_add(1))?;
        let end = log_key(channel, u64::MAX)?;
        let mut out = Vec::new();
        for guard in self.log.range(start..=end).take(limit) {
            let (k, v) = guard.into_inner()?;
            out.push(Record::decode(offset_of(&k)?, &v)?);
        }
        Ok(out)
    }

    /// The newest `limit` records accepted at or after `since_ms`, oldest first.
    pub fn read_since(&self, channel: &[u8], since_ms: u64, limit: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for guard in self.log.prefix(prefix(channel)?).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            let r = Record::decode(offset_of(&k)?, &v)?;
            if r.ts_ms < since_ms {
                break;
            }
            out.push(r);
        }
        out.reverse();
        Ok(out)
    }

    /// Removes records accepted before `cutoff_ms`.
    ///
    /// The scan starts at offset `from` (the oldest offset known to be kept), so the tombstones of
    /// records evicted earlier are not walked over again. Returns how many were removed and the
    /// offset of the oldest record left, if any.
    pub fn trim_older_than(
        &self,
        channel: &[u8],
        from: u64,
        cutoff_ms: u64,
    ) -> Result<(usize, Option<u64>)> {
        let mut batch = self.db.batch().durability(Some(self.durability));
        let mut removed = 0;
        let mut oldest = None;
        let start = log_key(channel, from)?;
        let end = log_key(channel, u64::MAX)?;
        for guard in self.log.range(start..=end) {
            let (k, v) = guard.into_inner()?;
            let ts = v.get(1..9).ok_or(StoreError::Corrupt("record"))?;
            let ts = u64::from_be_bytes(ts.try_into().map_err(|_| StoreError::Corrupt("record"))?);
            if ts >= cutoff_ms {
                oldest = Some(offset_of(&k)?);
                break;
            }
            batch.remove(&self.log, k);
            removed += 1;
        }
        if removed > 0 {
            batch.commit()?;
        }
        Ok((removed, oldest))
    }

    /// Every channel with a log.
    pub fn channels(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for guard in self.meta.iter() {
            let k = guard.key()?;
            out.push(
                k.get(2..)
                    .ok_or(StoreError::Corrupt("channel key"))?
                    .to_vec(),
            );
        }
        Ok(out)
    }

    /// The offset a still-valid idempotency key was published at.
    pub fn idempotent_offset(&self, channel: &[u8], key: &str, now_ms: u64) -> Result<Option<u64>> {
        let k = idempotency_key(channel, key)?;
        let Some(v) = self.idem.get(k)? else {
            return Ok(None);
        };
        let bad = || StoreError::Corrupt("idempotency entry");
        let (exp, offset) = v.split_at_checked(8).ok_or_else(bad)?;
        let exp = u64::from_be_bytes(exp.try_into().map_err(|_| bad())?);
        let offset = u64::from_be_bytes(offset.try_into().map_err(|_| bad())?);
        Ok((exp > now_ms).then_some(offset))
    }

    /// Forgets idempotency keys that expired before `now_ms`; returns how many.
    pub fn purge_idempotency(&self, now_ms: u64) -> Result<usize> {
        let mut batch = self.db.batch().durability(Some(self.durability));
        let mut removed = 0;
        for guard in self.idem.iter() {
            let (k, v) = guard.into_inner()?;
            let exp = v.get(..8).ok_or(StoreError::Corrupt("idempotency entry"))?;
            if u64::from_be_bytes(
                exp.try_into()
                    .map_err(|_| StoreError::Corrupt("idempotency entry"))?,
            ) <= now_ms
            {
                batch.remove(&self.idem, k);
                removed += 1;
            }
        }
        batch.commit()?;
        Ok(removed)
    }

    /// Syncs everything to disk (used at shutdown).
    pub fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, ts_ms: u64) -> Record {
        Record {
            offset,
            ts_ms,
            id: format!("id-{offset}"),
            event: "e".into(),
            origin: 0,
            raw: false,
            payload: format!("{{\"n\":{offset}}}").into_bytes(),
        }
    }

    fn append(store: &Store, channel: &[u8], r: &Record, evict: Option<std::ops::Range<u64>>) {
        let meta = ChannelMeta {
            epoch: "e1".into(),
            top: r.offset,
        };
        store
            .append(&Append {
                channel,
                meta: &meta,
                record: r,
                evict,
                idempotency: None,
            })
            .unwrap();
    }

    #[test]
    fn round_trip_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        for i in 1..=10 {
            append(&store, b"\0room", &record(i, 1000 + i), None);
        }
        // A channel whose name extends another's is a separate log.
        append(&store, b"\0room2", &record(1, 5), None);
        let all = store.read_after(b"\0room", 0, 100).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[3], record(4, 1004));
        assert_eq!(
            store
                .read_after(b"\0room", 7, 100)
                .unwrap()
                .iter()
                .map(|r| r.offset)
                .collect::<Vec<_>>(),
            [8, 9, 10]
        );
        assert_eq!(store.read_after(b"\0room", 2, 2).unwrap().len(), 2);
        assert_eq!(store.read_since(b"\0room", 1008, 100).unwrap().len(), 3);
        assert_eq!(
            store
                .read_since(b"\0room", 0, 2)
                .unwrap()
                .iter()
                .map(|r| r.offset)
                .collect::<Vec<_>>(),
            [9, 10]
        );
        assert_eq!(
            store.channel_meta(b"\0room").unwrap(),
            Some(ChannelMeta {
                epoch: "e1".into(),
                top: 10
            })
        );
        assert_eq!(store.first_offset(b"\0room").unwrap(), Some(1));
        assert_eq!(store.trim_older_than(b"\0room", 0, 1004).unwrap().0, 3);
        assert_eq!(store.first_offset(b"\0room").unwrap(), Some(4));
        append(&store, b"\0room", &record(11, 2000), Some(4..6));
        assert_eq!(store.first_offset(b"\0room").unwrap(), Some(6));
        let mut channels = store.channels().unwrap();
        channels.sort();
        assert_eq!(channels, vec![b"\0room".to_vec(), b"\0room2".to_vec()]);
    }

    #[test]
    fn names_and_keys_past_the_limit_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let long = "k".repeat(70_000);
        assert!(matches!(
            store.idempotent_offset(b"c", &long, 0),
            Err(StoreError::KeyTooLong)
        ));
        let channel = vec![b'c'; 65_530];
        assert!(matches!(
            store.read_after(&channel, 0, 1),
            Err(StoreError::ChannelTooLong)
        ));
        assert!(matches!(
            store.channel_meta(&channel),
            Err(StoreError::ChannelTooLong)
        ));
    }

    #[test]
    fn survives_reopen_and_remembers_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false).unwrap();
            let meta = ChannelMeta {
                epoch: "ep".into(),
                top: 1,
            };
            let r = record(1, 10);
            store
                .append(&Append {
                    channel: b"c",
                    meta: &meta,
                    record: &r,
                    evict: None,
                    idempotency: Some(("k1", 500)),
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), false).unwrap();
        assert_eq!(store.read_after(b"c", 0, 10).unwrap().len(), 1);
        assert_eq!(store.idempotent_offset(b"c", "k1", 100).unwrap(), Some(1));
        assert_eq!(store.idempotent_offset(b"c", "k1", 600).unwrap(), None);
        assert_eq!(store.purge_idempotency(600).unwrap(), 1);
        assert_eq!(store.idempotent_offset(b"c", "k1", 100).unwrap(), None);
    }
}
