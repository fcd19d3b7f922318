//! Pacing: when the messages of a run at R messages per second fall due (message k at k / R seconds
//! after the start, so sends spread evenly over each second instead of bursting at its start), and how
//! a total rate is shared among several senders.

use std::time::{Duration, Instant};

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
