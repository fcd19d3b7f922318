//! Limits a node enforces, and the token bucket that enforces the per-second ones. Also the lengths
//! of names and keys (topic, event, message id, idempotency key), fixed by the wire format and checked
//! by every transport before anything reaches the store.
//!
//! Time comes from `tokio::time::Instant`, so tests can pause and advance it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Every limit, with its default. Each one has a configuration key of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest broadcast payload, in bytes.
    pub max_payload_bytes: usize,
    /// Channels one connection may have joined at once.
    pub max_channels_per_connection: usize,
    /// Joins per second one connection may make (bursts up to the same number).
    pub max_joins_per_second: u32,
    /// Concurrent connections per node.
    pub max_connections: usize,
    /// Concurrent connections (WebSocket and SSE) from one client address (0: no cap). Behind a
    /// trusted proxy the address is the one it forwards.
    pub max_connections_per_ip: usize,
    /// Distinct channels with subscribers on this node (0: no cap). A join that would open one
    /// more is refused; joins of channels already open still succeed.
    pub max_channels: usize,
    /// Messages per second one connection may send (bursts up to the same number).
    pub max_messages_per_second: u32,
    /// Messages per second the HTTP API accepts from one caller (its token's role and subject).
    pub max_http_messages_per_second: u32,
    /// Messages in one HTTP batch.
    pub max_http_batch: usize,
    /// Frames that may wait for one slow connection before it is closed.
    pub outbound_queue_frames: usize,
    /// Seconds without any frame from a client before its socket is closed.
    pub idle_timeout_secs: u64,
    /// Presence changes within this many milliseconds go out as one diff (0: one diff per change).
    pub presence_batch_ms: u64,
    /// Presence metas per channel (0: unlimited).
    pub max_presence_members: usize,
    /// Largest presence state a client may track, in bytes (as JSON).
    pub max_presence_payload_bytes: usize,
    /// Presence calls (track, untrack) one connection may make per window.
    pub presence_calls_per_window: u32,
    /// The window of `presence_calls_per_window`, in seconds.
    pub presence_window_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1024 * 1024,
            max_payload_bytes: 256 * 1024,
            max_channels_per_connection: 100,
            max_joins_per_second: 100,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_channels: 100_000,
            max_messages_per_second: 1_000,
            max_http_messages_per_second: 10_000,
            max_http_batch: 1_000,
            outbound_queue_frames: 1_024,
            idle_timeout_secs: 60,
            presence_batch_ms: 50,
            max_presence_members: 0,
            max_presence_payload_bytes: 16 * 1024,
            presence_calls_per_window: 50,
            presence_window_secs: 10,
        }
    }
}

/// Token buckets of one rate, one per key (the token's role and subject), so that one caller's
/// flood never empties another's bucket: anonymous traffic cannot starve `service_role`
/// publishes, and one user cannot starve another. At most `MAX_KEYED_BUCKETS` keys have a bucket
/// of their own; when a new key finds no room, buckets that have refilled (and so hold nothing a
/// new bucket would not) are dropped, and if there is still no room the key shares one bucket with
/// the other latecomers.
#[derive(Debug)]
pub struct RateBuckets {
    per_second: u32,
    keyed: std::collections::HashMap<String, RateLimiter>,
    shared: RateLimiter,
}

/// How many keys get a bucket of their own.
pub const MAX_KEYED_BUCKETS: usize = 10_000;

impl RateBuckets {
    /// Buckets of `per_second` tokens each, refilled at `per_second`.
    pub fn new(per_second: u32) -> RateBuckets {
        RateBuckets {
            per_second,
            keyed: std::collections::HashMap::new(),
            shared: RateLimiter::new(per_second),
        }
    }

    /// The key of a caller: its role and, when its token names one, its subject.
    pub fn key(role: &str, sub: Option<&str>) -> String {
        match sub {
            Some(sub) => format!("{role}\u{0}{sub}"),
            None => role.to_owned(),
        }
    }

    /// Takes `n` tokens from `key`'s bucket if they are there.
    pub fn try_take(&mut self, key: &str, n: u32) -> bool {
        if let Some(bucket) = self.keyed.get_mut(key) {
            return bucket.try_take(n);
        }
        if self.keyed.len() >= MAX_KEYED_BUCKETS {
            self.keyed.retain(|_, b| !b.is_full());
            if self.keyed.len() >= MAX_KEYED_BUCKETS {
                return self.shared.try_take(n);
            }
        }
        let mut bucket = RateLimiter::new(self.per_second);
        let taken = bucket.try_take(n);
        self.keyed.insert(key.to_owned(), bucket);
        taken
    }

    /// Keys with a bucket of their own.
    pub fn keyed(&self) -> usize {
        self.keyed.len()
    }
}

/// Longest topic on the wire (`realtime:<name>`): Phoenix v2 binary frames carry its length in a byte.
pub const MAX_TOPIC_BYTES: usize = 255;
/// Longest channel name: the topic without its `realtime:` prefix.
pub const MAX_CHANNEL_NAME_BYTES: usize = MAX_TOPIC_BYTES - crate::channel::TOPIC_PREFIX.len();
/// Longest event name (a byte of length in binary frames, too).
pub const MAX_EVENT_BYTES: usize = 255;
/// Longest message id given by a publisher.
pub const MAX_MESSAGE_ID_BYTES: usize = 255;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// A name or key over its length limit. The text names the limit, and it is the same on every
/// transport; no retry can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LengthError {
    /// The channel name.
    #[error("topic is {0} bytes long; the limit is {MAX_CHANNEL_NAME_BYTES} bytes")]
    Topic(usize),
    /// The event name.
    #[error("event is {0} bytes long; the limit is {MAX_EVENT_BYTES} bytes")]
    Event(usize),
    /// The message id.
    #[error("id is {0} bytes long; the limit is {MAX_MESSAGE_ID_BYTES} bytes")]
    Id(usize),
    /// The idempotency key.
    #[error("idempotency_key is {0} bytes long; the limit is {MAX_IDEMPOTENCY_KEY_BYTES} bytes")]
    IdempotencyKey(usize),
}

impl LengthError {
    /// The field it is about, as the HTTP API names it.
    pub fn field(&self) -> &'static str {
        match self {
            LengthError::Topic(_) => "topic",
            LengthError::Event(_) => "event",
            LengthError::Id(_) => "id",
            LengthError::IdempotencyKey(_) => "idempotency_key",
        }
    }
}

/// Checks a channel name (without `realtime:`).
pub fn check_channel_name(name: &str) -> Result<(), LengthError> {
    if name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(LengthError::Topic(name.len()));
    }
    Ok(())
}

/// Checks what names a broadcast: its channel, event, id and idempotency key.
pub fn check_broadcast(
    channel: &str,
    event: &str,
    id: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<(), LengthError> {
    check_channel_name(channel)?;
    if event.len() > MAX_EVENT_BYTES {
        return Err(LengthError::Event(event.len()));
    }
    if let Some(id) = id.filter(|id| id.len() > MAX_MESSAGE_ID_BYTES) {
        return Err(LengthError::Id(id.len()));
    }
    if let Some(key) = idempotency_key.filter(|k| k.len() > MAX_IDEMPOTENCY_KEY_BYTES) {
        return Err(LengthError::IdempotencyKey(key.len()));
    }
    Ok(())
}

impl Limits {
    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}

/// A token bucket: `capacity` tokens, refilled at `rate` tokens per second.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket of `per_second` tokens refilled at `per_second` (a burst of one second).
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter::per_window(per_second, Duration::from_secs(1))
    }

    /// A full bucket of `n` tokens refilled at `n` per `window`.
    pub fn per_window(n: u32, window: Duration) -> RateLimiter {
        let capacity = f64::from(n.max(1));
        RateLimiter {
            rate: capacity / window.as_secs_f64().max(0.001),
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Whether the bucket has refilled completely.
    pub fn is_full(&self) -> bool {
        let elapsed = Instant::now()
            .saturating_duration_since(self.last)
            .as_secs_f64();
        self.tokens + elapsed * self.rate >= self.capacity
    }

    /// Takes `n` tokens if they are there; false means the limit is exceeded.
    pub fn try_take(&mut self, n: u32) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_with_time() {
        let mut r = RateLimiter::new(3);
        assert!(r.try_take(1) && r.try_take(1) && r.try_take(1));
        assert!(!r.try_take(1));
        tokio::time::advance(Duration::from_millis(340)).await;
        assert!(r.try_take(1));
        assert!(!r.try_take(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(r.try_take(3));
        assert!(!r.try_take(1));
    }

    #[tokio::test(start_paused = true)]
    async fn each_caller_has_its_own_bucket_and_refilled_ones_make_room() {
        let mut b = RateBuckets::new(2);
        let (anon, alice, bob) = (
            RateBuckets::key("anon", None),
            RateBuckets::key("authenticated", Some("alice")),
            RateBuckets::key("authenticated", Some("bob")),
        );
        assert!(b.try_take(&anon, 2) && !b.try_take(&anon, 1));
        assert!(b.try_take(&alice, 2) && !b.try_take(&alice, 1));
        // Alice's flood leaves Bob's bucket whole.
        assert!(b.try_take(&bob, 2));
        for i in 3..MAX_KEYED_BUCKETS {
            assert!(b.try_take(&format!("k{i}"), 1));
        }
        assert_eq!(b.keyed(), MAX_KEYED_BUCKETS);
        // No room and nothing refilled: latecomers share one bucket.
        assert!(b.try_take("late-1", 2));
        assert!(!b.try_take("late-2", 1));
        // Once the buckets have refilled, a new key gets its own again.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.try_take("late-3", 2));
        assert!(b.keyed() < MAX_KEYED_BUCKETS);
        assert!(!b.try_take("late-3", 1));
    }
}
