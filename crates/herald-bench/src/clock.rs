//! The benchmark's time base: nanoseconds on the monotonic clock since an epoch shared by the parent
//! process and its workers, so that a send time stamped by one process can be compared with a receive
//! time read by another; and pacing: when the messages of a run at R messages per second fall due
//! (message k at k / R seconds after the start, so sends spread evenly over each second instead of
//! bursting at its start), and how a total is shared among several senders.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic nanoseconds since a shared epoch; handed to workers as the epoch's wall-clock time.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(from = "u64", into = "u64")]
pub struct Clock {
    epoch: Instant,
    epoch_unix_ns: u64,
}

impl Clock {
    /// Starts a new epoch now (the parent process does this once).
    pub fn start() -> Self {
        Self {
            epoch: Instant::now(),
            epoch_unix_ns: unix_now_ns(),
        }
    }

    /// Joins the epoch a parent started at wall-clock time `epoch_unix_ns`.
    ///
    /// The wall clock is read only here, once, to line the two monotonic clocks up; after that all
    /// readings are monotonic, so a later wall-clock step does not disturb the measurement.
    pub fn join(epoch_unix_ns: u64) -> Self {
        let now = Instant::now();
        let since = Duration::from_nanos(unix_now_ns().saturating_sub(epoch_unix_ns));
        Self {
            epoch: now.checked_sub(since).unwrap_or(now),
            epoch_unix_ns,
        }
    }

    /// The wall-clock time of the epoch, to hand to workers.
    pub fn epoch_unix_ns(&self) -> u64 {
        self.epoch_unix_ns
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// Nanoseconds from the epoch to `at` (zero if `at` is earlier).
    pub fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl From<u64> for Clock {
    fn from(epoch_unix_ns: u64) -> Self {
        Clock::join(epoch_unix_ns)
    }
}

impl From<Clock> for u64 {
    fn from(clock: Clock) -> u64 {
        clock.epoch_unix_ns
    }
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Number of messages due `elapsed` after the start at `rate` per second, at most `total` (message k
/// is due at k / rate; message 0 at once).
pub fn due_by(elapsed: Duration, rate: u64, total: u64) -> u64 {
    let due = elapsed.as_nanos() * u128::from(rate) / 1_000_000_000 + 1;
    u64::try_from(due).unwrap_or(u64::MAX).min(total)
}

/// When message `k` is due.
pub fn due_at(start: Instant, k: u64, rate: u64) -> Instant {
    let ns = u128::from(k) * 1_000_000_000 / u128::from(rate.max(1));
    start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Sender `index`'s share of `total` split over `senders` as evenly as possible (the first
/// `total % senders` senders get one more).
pub fn share(total: u64, senders: u64, index: u64) -> u64 {
    let senders = senders.max(1);
    total / senders + u64::from(index < total % senders)
}
