//! The result of a run: the machine-readable JSON object (`--json`, always the last stdout line) and
//! the human-readable table printed by default.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::LatencySummary;

/// One run's figures. Fields that do not apply to a scenario (or were not measured) are `null`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `idle` or `fanout`.
    pub scenario: &'static str,
    /// Connections established (idle) or subscribers joined (fanout).
    pub connections: u64,
    /// Growth of the server's RSS per connection, KiB (idle, with `--server-pid`).
    pub rss_per_connection_kib: Option<f64>,
    /// Growth of kernel TCP buffer memory per connection, KiB (idle).
    pub kernel_per_connection_kib: Option<f64>,
    /// Joined connections per second while opening.
    pub connect_rate: Option<f64>,
    /// Deliveries per second (fanout).
    pub delivered_per_sec: Option<f64>,
    /// End-to-end latency percentiles (fanout).
    pub latency_ms: Option<LatencySummary>,
    /// Server CPU over the publishing window, percent of one core (fanout, with `--server-pid`).
    pub server_cpu_pct: Option<f64>,
    /// Server CPU time per delivery, µs (fanout, with `--server-pid`).
    pub cpu_us_per_delivery: Option<f64>,
    /// Failed connections, disconnects, publish errors and drops.
    pub errors: u64,
    /// Scenario-specific counts.
    pub detail: Detail,
}

/// Scenario-specific counts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// `idle`.
    Idle(IdleDetail),
    /// `fanout`.
    Fanout(FanoutDetail),
}

/// Counts of an idle run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleDetail {
    /// Connections asked for.
    pub requested: u64,
    /// Channels they were spread over.
    pub channels: u64,
    /// Connections that failed to open or join.
    pub failed: u64,
    /// Why, with counts.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Joined connections that dropped during the hold.
    pub disconnects: u64,
    /// Client processes used.
    pub processes: usize,
    /// Seconds spent opening.
    pub connect_secs: f64,
    /// Seconds held after all were joined.
    pub hold_secs: f64,
    /// Server RSS before opening, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS once all were joined, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// Server RSS at the end of the hold, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// Kernel TCP buffer memory before opening, KiB (machine-wide, both ends of loopback).
    pub tcp_mem_before_kib: Option<u64>,
    /// Kernel TCP buffer memory once all were joined, KiB.
    pub tcp_mem_after_kib: Option<u64>,
}

/// Counts of a fanout run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanoutDetail {
    /// Subscribers asked for.
    pub subscribers_requested: u64,
    /// Subscribers that failed to open or join.
    pub subscriber_failures: u64,
    /// Why, with counts.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Channels.
    pub channels: u64,
    /// `ws` or `http`.
    pub publisher: &'static str,
    /// Publisher connections.
    pub publishers: u64,
    /// Target publish rate, messages per second.
    pub rate: u64,
    /// Seconds of publishing asked for.
    pub duration_secs: u64,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Messages published successfully.
    pub sent: u64,
    /// Achieved publish rate.
    pub sent_per_sec: f64,
    /// Messages that could not be published (refused or failed).
    pub publish_errors: u64,
    /// Why, with counts.
    pub publish_error_reasons: BTreeMap<String, u64>,
    /// Deliveries expected: each sent message times the subscribers joined to its channel.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// `expected - delivered` (negative would mean duplicates).
    pub drops: i64,
    /// Subscribers that dropped during the run.
    pub disconnects: u64,
    /// Client processes holding subscribers.
    pub processes: usize,
    /// Seconds from the first send to the last delivery.
    pub elapsed_secs: f64,
    /// Server CPU seconds over that window.
    pub server_cpu_secs: Option<f64>,
}

impl Report {
    /// The JSON object, on one line.
    pub fn to_json_line(&self) -> String {
        // Serializing plain structs with string keys cannot fail; fall back to a stub just in case.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = Vec::new();
        match &self.detail {
            Detail::Idle(d) => {
                rows.push(("connections requested", int(d.requested)));
                rows.push(("channels", int(d.channels)));
                rows.push(("client processes", int(d.processes as u64)));
                rows.push(("established", int(self.connections)));
                rows.push(("failed", int(d.failed)));
                rows.push(("connect time", format!("{:.2} s", d.connect_secs)));
                rows.push(("connect rate", opt(self.connect_rate, 1, "conn/s")));
                rows.push(("held for", format!("{:.1} s", d.hold_secs)));
                rows.push(("disconnects during hold", int(d.disconnects)));
                rows.push(("server RSS before", opt_kib(d.server_rss_before_kib)));
                rows.push(("server RSS all joined", opt_kib(d.server_rss_after_kib)));
                rows.push(("server RSS end of hold", opt_kib(d.server_rss_end_kib)));
                rows.push((
                    "server RSS / connection",
                    opt(self.rss_per_connection_kib, 2, "KiB"),
                ));
                rows.push(("kernel TCP mem before", opt_kib(d.tcp_mem_before_kib)));
                rows.push(("kernel TCP mem all joined", opt_kib(d.tcp_mem_after_kib)));
                rows.push((
                    "kernel TCP mem / connection",
                    opt(self.kernel_per_connection_kib, 2, "KiB"),
                ));
                reason_rows(&mut rows, "failure", &d.failure_reasons);
                rows.push((
                    "note",
                    "kernel TCP mem is machine-wide socket buffer memory (/proc/net/sockstat), both ends \
                     of every loopback connection; it is not part of the server's RSS"
                        .to_owned(),
                ));
            }
            Detail::Fanout(d) => {
                rows.push(("subscribers requested", int(d.subscribers_requested)));
                rows.push(("subscribers joined", int(self.connections)));
                rows.push(("subscriber failures", int(d.subscriber_failures)));
                rows.push(("channels", int(d.channels)));
                rows.push(("client processes", int(d.processes as u64)));
                rows.push(("connect rate", opt(self.connect_rate, 1, "conn/s")));
                rows.push(("publisher", format!("{} x{}", d.publisher, d.publishers)));
                rows.push(("payload", format!("{} B", int(d.payload_bytes as u64))));
                rows.push((
                    "target rate",
                    format!("{} msg/s for {} s", int(d.rate), d.duration_secs),
                ));
                rows.push((
                    "sent",
                    format!("{} ({:.1} msg/s)", int(d.sent), d.sent_per_sec),
                ));
                rows.push(("publish errors", int(d.publish_errors)));
                rows.push(("expected deliveries", int(d.expected)));
                rows.push(("delivered", int(d.delivered)));
                rows.push(("drops", d.drops.to_string()));
                rows.push(("disconnects", int(d.disconnects)));
                rows.push(("elapsed", format!("{:.2} s", d.elapsed_secs)));
                rows.push(("delivered / s", opt(self.delivered_per_sec, 1, "msg/s")));
                match &self.latency_ms {
                    Some(l) => {
                        rows.push(("latency p50", format!("{:.3} ms", l.p50)));
                        rows.push(("latency p90", format!("{:.3} ms", l.p90)));
                        rows.push(("latency p99", format!("{:.3} ms", l.p99)));
                        rows.push(("latency p99.9", format!("{:.3} ms", l.p999)));
                        rows.push(("latency max", format!("{:.3} ms", l.max)));
                    }
                    None => rows.push(("latency", "-".to_owned())),
                }
                rows.push(("server CPU", opt(self.server_cpu_pct, 1, "%")));
                rows.push((
                    "server CPU / delivery",
                    opt(self.cpu_us_per_delivery, 2, "µs"),
                ));
                reason_rows(&mut rows, "failure", &d.failure_reasons);
                reason_rows(&mut rows, "publish error", &d.publish_error_reasons);
            }
        }
        rows.push(("errors", int(self.errors)));
        render(&format!("herald bench {}", self.scenario), &rows)
    }
}

fn reason_rows<'a>(
    rows: &mut Vec<(&'a str, String)>,
    label: &'a str,
    reasons: &BTreeMap<String, u64>,
) {
    for (reason, n) in reasons {
        rows.push((label, format!("{} x {reason}", int(*n))));
    }
}

/// Renders a title and aligned `label  value` rows.
pub fn render(title: &str, rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{title}\n");
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<width$}  {value}");
    }
    out
}

/// An integer with thousands separators.
pub fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt(value: Option<f64>, decimals: usize, unit: &str) -> String {
    match value {
        Some(v) => format!("{v:.decimals$} {unit}"),
        None => "-".to_owned(),
    }
}

fn opt_kib(value: Option<u64>) -> String {
    match value {
        Some(v) => format!("{} KiB", int(v)),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout_report() -> Report {
        Report {
            scenario: "fanout",
            connections: 100,
            rss_per_connection_kib: None,
            kernel_per_connection_kib: None,
            connect_rate: Some(512.25),
            delivered_per_sec: Some(9_900.5),
            latency_ms: Some(LatencySummary {
                p50: 0.25,
                p90: 0.5,
                p99: 1.5,
                p999: 3.0,
                max: 4.125,
            }),
            server_cpu_pct: None,
            cpu_us_per_delivery: None,
            errors: 0,
            detail: Detail::Fanout(FanoutDetail {
                subscribers_requested: 100,
                publisher: "ws",
                sent: 300,
                expected: 30_000,
                delivered: 30_000,
                ..FanoutDetail::default()
            }),
        }
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v: serde_json::Value = serde_json::from_str(&fanout_report().to_json_line()).unwrap();
        for key in [
            "scenario",
            "connections",
            "rss_per_connection_kib",
            "kernel_per_connection_kib",
            "connect_rate",
            "delivered_per_sec",
            "latency_ms",
            "server_cpu_pct",
            "cpu_us_per_delivery",
            "errors",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["scenario"], "fanout");
        assert!(v["rss_per_connection_kib"].is_null());
        assert_eq!(v["latency_ms"]["p999"], 3.0);
        assert_eq!(v["detail"]["delivered"], 30_000);
    }

    #[test]
    fn table_is_aligned_and_readable() {
        let t = fanout_report().table();
        assert!(t.starts_with("herald bench fanout\n"));
        assert!(t.contains("  delivered / s          9900.5 msg/s\n"), "{t}");
        assert!(t.contains("  latency p99.9          3.000 ms\n"), "{t}");
        assert!(t.contains("  server CPU             -\n"), "{t}");
        assert!(t.contains("  expected deliveries    30,000\n"), "{t}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
    }
}
