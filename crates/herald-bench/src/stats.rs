//! End-to-end latency accounting: an HDR histogram of microseconds, its percentiles in milliseconds,
//! and the compact `(value, count)` form in which workers hand their histograms to the parent.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Latencies {
    /// An empty histogram (3 significant figures, grows as needed).
    // The only error `Histogram::new` can return is for a precision above 5; 3 is a constant.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        Self {
            hist: Histogram::new(3).expect("3 significant figures is a valid precision"),
        }
    }

    /// Records one latency.
    pub fn record_us(&mut self, us: u64) {
        // An auto-resizing histogram only refuses values it cannot represent at all.
        let _ = self.hist.record(us);
    }

    /// The recorded values as `(value, count)` pairs, for a worker's result line.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// Adds `(value, count)` pairs from a worker.
    pub fn add_pairs(&mut self, pairs: &[(u64, u64)]) {
        for &(value, count) in pairs {
            let _ = self.hist.record_n(value, count);
        }
    }

    /// Percentiles in milliseconds, or `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Some(LatencySummary {
            p50: ms(self.hist.value_at_quantile(0.5)),
            p90: ms(self.hist.value_at_quantile(0.9)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            max: ms(self.hist.max()),
        })
    }
}

/// The smallest, median and largest of a few measurements, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (rounded to three decimals), or `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Spread {
            min: round3(v[0]),
            median: round3(median),
            max: round3(v[v.len() - 1]),
        })
    }
}

/// Rounds to three decimals (for reports).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
