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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spreads_messages_over_the_second() {
        let s = Duration::from_secs;
        assert_eq!(due_by(Duration::ZERO, 100, 300), 1);
        assert_eq!(due_by(Duration::from_millis(9), 100, 300), 1);
        assert_eq!(due_by(Duration::from_millis(10), 100, 300), 2);
        assert_eq!(due_by(s(1), 100, 300), 101);
        assert_eq!(due_by(s(10), 100, 300), 300);
        assert_eq!(due_by(s(3_600), 1_000_000, u64::MAX), 3_600_000_001);
        assert_eq!(due_by(s(5), 0, 10), 1);
        let start = Instant::now();
        assert_eq!(due_at(start, 0, 100), start);
        assert_eq!(
            due_at(start, 150, 100),
            start + Duration::from_millis(1_500)
        );
    }

    #[test]
    fn shares_add_up_to_the_total() {
        assert_eq!(share(1_000, 4, 0), 250);
        assert_eq!(
            (0..3).map(|i| share(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(share(2, 5, 4), 0);
        assert_eq!(share(7, 0, 0), 7);
        for (total, n) in [(1u64, 1u64), (999, 7), (1_000_000, 64), (5, 9)] {
            assert_eq!((0..n).map(|i| share(total, n, i)).sum::<u64>(), total);
        }
    }
}
