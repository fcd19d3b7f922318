//! The result of a run: the machine-readable JSON object (`--json`, always the last stdout line) and
//! the human-readable table printed by default. Every scenario has the same top-level keys (`null`
//! where a figure does not apply) and its own `detail` object.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::fleet::{DoneStats, ReadyStats, Reasons};
use crate::measure::{Cpu, shortfall};
use crate::stats::{LatencySummary, Spread};

/// One run's figures. Fields that do not apply to a scenario (or were not measured) are `null`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `idle`, `fanout`, `sse`, `recover`, `publish`, `presence`, `churn` or `pg`.
    pub scenario: &'static str,
    /// Connections established (idle), SSE streams open (sse), subscribers joined (fanout, publish),
    /// clients connected at once (recover), members connected (presence), cycles completed (churn).
    pub connections: u64,
    /// Growth of the server's RSS per connection or stream, KiB (idle, sse; with `--server-pid`).
    pub rss_per_connection_kib: Option<f64>,
    /// Growth of kernel TCP buffer memory per connection or stream, KiB (idle, sse).
    pub kernel_per_connection_kib: Option<f64>,
    /// Joined connections (or open streams) per second while opening.
    pub connect_rate: Option<f64>,
    /// Deliveries per second (fanout, publish, sse with `--publish-rate`, pg).
    pub delivered_per_sec: Option<f64>,
    /// End-to-end latency percentiles (fanout, publish, sse with `--publish-rate`; pg: from just
    /// before the commit to the client); time from the go
    /// until a member has seen every key (presence); time of one cycle (churn).
    pub latency_ms: Option<LatencySummary>,
    /// Server CPU over the publishing window, percent of one core (with `--server-pid`).
    pub server_cpu_pct: Option<f64>,
    /// Server CPU time per delivery, µs (with `--server-pid`).
    pub cpu_us_per_delivery: Option<f64>,
    /// Messages the server accepted per second (publish: HTTP 202s or WebSocket acks).
    pub accepted_per_sec: Option<f64>,
    /// Time from the recovering join to the last replayed message, over the runs (recover).
    pub replay_ms: Option<Spread>,
    /// Replayed messages per second at the median replay time (recover).
    pub replay_msgs_per_sec: Option<f64>,
    /// Failed connections, disconnects, publish errors, drops, gaps and duplicates.
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
    /// `sse`.
    Sse(SseDetail),
    /// `recover`.
    Recover(RecoverDetail),
    /// `publish`.
    Publish(PublishDetail),
    /// `presence`.
    Presence(PresenceDetail),
    /// `churn`.
    Churn(ChurnDetail),
    /// `pg`.
    Pg(PgDetail),
}

impl Default for Detail {
    fn default() -> Self {
        Detail::Idle(IdleDetail::default())
    }
}

/// What idle and sse report of a fleet opened and held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hold {
    /// Connections (streams) asked for.
    pub requested: u64,
    /// Those that failed to open or join (sse: or to send their first `id:` line).
    pub failed: u64,
    /// Why, with counts.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Joined connections (open streams) that dropped during the hold.
    pub disconnects: u64,
    /// Client processes used.
    pub processes: usize,
    /// Seconds spent opening.
    pub connect_secs: f64,
    /// Seconds held after all were open.
    pub hold_secs: f64,
    /// Server RSS before opening, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS once all were open, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// Server RSS at the end of the hold, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// Kernel TCP buffer memory before opening, KiB (machine-wide, both ends of loopback).
    pub tcp_mem_before_kib: Option<u64>,
    /// Kernel TCP buffer memory once all were open, KiB.
    pub tcp_mem_after_kib: Option<u64>,
}

/// What fanout, publish and pg report of their subscribers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Subscribers {
    /// Subscribers asked for.
    pub subscribers_requested: u64,
    /// Subscribers that failed to open or join (pg: or to subscribe to Postgres Changes).
    pub subscriber_failures: u64,
    /// Why, with counts (pg: also why subscribers failed later).
    pub failure_reasons: BTreeMap<String, u64>,
    /// Subscribers that dropped during the run (pg: or were told of an error).
    pub disconnects: u64,
    /// Client processes holding subscribers.
    pub processes: usize,
}

/// What fanout, sse (with `--publish-rate`) and publish report of their publishing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    /// Messages published (publish: sent, accepted or not).
    pub sent: u64,
    /// Messages refused or failed for any reason (publish: rate limits included).
    pub publish_errors: u64,
    /// Why, with counts.
    pub publish_error_reasons: BTreeMap<String, u64>,
    /// Deliveries expected: each message sent (publish: accepted) times the subscribers of its
    /// channel.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// `expected - delivered` (negative would mean duplicates).
    pub drops: i64,
    /// Server CPU seconds from the first send to the end of the drain.
    pub server_cpu_secs: Option<f64>,
}

impl Subscribers {
    /// The subscribers of a fleet that opened as `ready` and ended as `done`.
    pub fn of(requested: u64, ready: &ReadyStats, done: &DoneStats, processes: usize) -> Self {
        Self {
            subscribers_requested: requested,
            subscriber_failures: ready.failed,
            failure_reasons: ready.reasons.0.clone(),
            disconnects: done.disconnects,
            processes,
        }
    }
}

impl Published {
    /// `sent` messages (`errors` more failed, for `reasons`) that should have made `expected`
    /// deliveries and made `delivered`, costing the server `cpu`.
    pub fn of(
        sent: u64,
        errors: u64,
        reasons: &Reasons,
        expected: u64,
        delivered: u64,
        cpu: &Cpu,
    ) -> Self {
        Self {
            sent,
            publish_errors: errors,
            publish_error_reasons: reasons.0.clone(),
            expected,
            delivered,
            drops: shortfall(expected, delivered),
            server_cpu_secs: cpu.secs(),
        }
    }
}

/// Counts of an idle run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleDetail {
    /// The clients' wire protocol (`--protocol`).
    pub protocol: &'static str,
    /// Channels the connections were spread over.
    pub channels: u64,
    /// The fleet.
    #[serde(flatten)]
    pub hold: Hold,
}

/// Counts of a fanout run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanoutDetail {
    /// The clients' wire protocol (`--protocol`).
    pub protocol: &'static str,
    /// The subscribers.
    #[serde(flatten)]
    pub subscribers: Subscribers,
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
    /// Achieved publish rate.
    pub sent_per_sec: f64,
    /// The publishing.
    #[serde(flatten)]
    pub published: Published,
    /// Seconds from the first send to the last delivery.
    pub elapsed_secs: f64,
}

/// Counts of an sse run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SseDetail {
    /// Topics the streams were spread over.
    pub topics: u64,
    /// The streams.
    #[serde(flatten)]
    pub hold: Hold,
    /// Messages per second published over HTTP during the hold (`--publish-rate`), if any.
    pub publish_rate: Option<u64>,
    /// Payload size, bytes (with `--publish-rate`).
    pub payload_bytes: Option<usize>,
    /// The publishing (with `--publish-rate`).
    #[serde(flatten)]
    pub published: Published,
}

/// Counts of a recover run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverDetail {
    /// Runs asked for.
    pub runs_requested: u64,
    /// Runs that replayed every missed message.
    pub runs_complete: u64,
    /// Messages missed (published while away) per run.
    pub missed: u64,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Replay time of each run, ms: from sending the join to the last replayed message.
    pub replays_ms: Vec<f64>,
    /// Time from sending the join to its reply, ms, per run.
    pub join_reply_ms: Vec<f64>,
    /// Messages accepted per second while publishing what was missed (HTTP), per run.
    pub published_per_sec: Vec<f64>,
    /// HTTP requests sent again after `429 Too Many Requests`.
    pub rate_limited_retries: u64,
    /// Missing offsets in replays.
    pub gaps: u64,
    /// Offsets replayed twice (or out of order).
    pub duplicates: u64,
    /// Runs that failed, with reasons.
    pub failure_reasons: BTreeMap<String, u64>,
}

/// Counts of a publish run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishDetail {
    /// The subscribers.
    #[serde(flatten)]
    pub subscribers: Subscribers,
    /// Channels.
    pub channels: u64,
    /// `http` or `ws`.
    pub publisher: &'static str,
    /// Publisher connections.
    pub publisher_connections: u64,
    /// Messages per HTTP request.
    pub batch: u64,
    /// Target publish rate, messages per second (0: as fast as allowed).
    pub rate: u64,
    /// Seconds of publishing asked for.
    pub duration_secs: u64,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Messages the server accepted (HTTP 202, WebSocket ack).
    pub accepted: u64,
    /// Messages refused by a rate limit (HTTP 429, WebSocket `Too many messages per second`).
    pub rate_limited: u64,
    /// The publishing.
    #[serde(flatten)]
    pub published: Published,
    /// Seconds spent publishing.
    pub publish_secs: f64,
    /// Seconds from the first send to the last delivery.
    pub elapsed_secs: f64,
    /// Server CPU time per accepted message, µs.
    pub cpu_us_per_message: Option<f64>,
}

/// Counts of a presence run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PresenceDetail {
    /// Members asked for.
    pub members_requested: u64,
    /// Channels they were spread over.
    pub channels: u64,
    /// Keys a member of the largest channel must see.
    pub keys_per_member: u64,
    /// Client processes used.
    pub processes: usize,
    /// Members that could not connect.
    pub connect_failures: u64,
    /// Why, with counts.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Seconds spent connecting (before the go).
    pub connect_secs: f64,
    /// Members that saw every key of their channel.
    pub members_complete: u64,
    /// Connected members that did not.
    pub members_incomplete: u64,
    /// Time from the go until the last member had every key, ms (only when every member did).
    pub all_complete_ms: Option<f64>,
    /// `presence_state` and `presence_diff` frames received by all members.
    pub presence_frames: u64,
    /// Presence frames per connected member.
    pub frames_per_member: f64,
    /// Members whose join or track was refused, or that dropped, after the go.
    pub member_failures: u64,
    /// Why, with counts.
    pub member_failure_reasons: BTreeMap<String, u64>,
    /// Seconds from the go to the end of the wait.
    pub window_secs: f64,
    /// Server CPU seconds over that window.
    pub server_cpu_secs: Option<f64>,
}

/// Counts of a churn run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnDetail {
    /// Cycles started per second, asked for.
    pub rate: u64,
    /// Seconds of starting cycles, asked for.
    pub duration_secs: u64,
    /// Channels the cycles joined in turn.
    pub channels: u64,
    /// Most cycles under way at once.
    pub concurrency: usize,
    /// Cycles started.
    pub started: u64,
    /// Cycles that connected, joined, left and closed.
    pub completed: u64,
    /// Cycles that failed at some step.
    pub failed: u64,
    /// Why, with counts.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Completed cycles per second over the run.
    pub cycles_per_sec: f64,
    /// Seconds until the last cycle was started.
    pub start_secs: f64,
    /// Seconds until the last cycle ended.
    pub run_secs: f64,
    /// Server RSS before the first cycle, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Largest server RSS seen, KiB.
    pub server_rss_peak_kib: Option<u64>,
    /// Server RSS two seconds after the last cycle, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// `server_rss_after_kib - server_rss_before_kib`.
    pub rss_growth_kib: Option<i64>,
    /// Server RSS once a second during the run, KiB.
    pub rss_samples_kib: Vec<u64>,
    /// Server CPU seconds from the first cycle to the last.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU time per completed cycle, µs.
    pub cpu_us_per_cycle: Option<f64>,
}

/// Counts of a pg run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PgDetail {
    /// The subscribers.
    #[serde(flatten)]
    pub subscribers: Subscribers,
    /// Claims groups (subscriber i is in group i % groups).
    pub groups: u64,
    /// Row-level security on, each group seeing its own rows.
    pub rls: bool,
    /// Each subscriber's binding filters on its group.
    pub filter: bool,
    /// Writer connections.
    pub writers: u64,
    /// Rows per transaction.
    pub rows_per_tx: u64,
    /// Target rows per second in total (0: as fast as possible).
    pub rate: u64,
    /// Seconds of inserting asked for.
    pub duration_secs: u64,
    /// Size of each row's `body`, bytes.
    pub payload_bytes: usize,
    /// Rows committed.
    pub rows_inserted: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Rows committed per second over the inserting time.
    pub rows_per_sec: Option<f64>,
    /// Rows whose transaction failed.
    pub insert_errors: u64,
    /// Why, with counts.
    pub insert_error_reasons: BTreeMap<String, u64>,
    /// Growth of the server's `herald_pg_changes_total` over the run (`null`: no `/metrics`).
    pub changes_ingested: Option<u64>,
    /// That growth per second, from the first insert until the counter reached the rows committed
    /// (or stopped growing).
    pub changes_ingested_per_sec: Option<f64>,
    /// Seconds from the first insert until then.
    pub ingest_secs: Option<f64>,
    /// Deliveries expected: each subscriber's visible rows (its group's with --rls or --filter,
    /// else all), summed.
    pub expected: u64,
    /// Deliveries received (changes of the subscriber's own rows).
    pub delivered: u64,
    /// `expected - delivered` (negative would mean duplicates).
    pub missing: i64,
    /// Changes of another group's rows received with --rls or --filter (none should arrive).
    pub foreign: u64,
    /// Seconds spent inserting.
    pub insert_secs: f64,
    /// Seconds from the first insert to the last delivery.
    pub elapsed_secs: f64,
    /// Server CPU seconds from the first insert to the end of the wait.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU time per row committed, µs.
    pub cpu_us_per_row: Option<f64>,
}

impl Report {
    /// A report of `scenario` with every figure unmeasured (`null`, zero).
    pub fn new(scenario: &'static str, detail: Detail) -> Self {
        Self {
            scenario,
            detail,
            ..Self::default()
        }
    }

    /// The JSON object, on one line.
    pub fn to_json_line(&self) -> String {
        // Serializing plain structs with string keys cannot fail; fall back to a stub just in case.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human-readable table: every figure of the JSON object (`detail`'s inline), in its order,
    /// under its key, then what to make of them.
    pub fn table(&self) -> String {
        let mut rows = Vec::new();
        if let Ok(json) = serde_json::to_string(self) {
            flatten("", &json, &mut rows);
        }
        rows.retain(|(key, _)| key != "scenario");
        rows.extend(self.notes().into_iter().map(|n| ("note".to_owned(), n)));
        let width = rows.iter().map(|(l, _)| l.chars().count()).max();
        let mut out = format!("herald bench {}\n", self.scenario);
        for (label, value) in rows {
            let _ = writeln!(out, "  {label:<w$}  {value}", w = width.unwrap_or(0));
        }
        out
    }

    /// What the figures need to be read right.
    fn notes(&self) -> Vec<String> {
        match &self.detail {
            Detail::Idle(_) | Detail::Sse(_) => vec![TCP_NOTE.to_owned()],
            Detail::Recover(_) => vec![RETENTION_NOTE.to_owned()],
            Detail::Publish(d) if d.rate_limited > 0 => vec![RATE_LIMIT_NOTE.to_owned()],
            Detail::Pg(d) => match d.changes_ingested {
                None => vec![PG_METRICS_NOTE.to_owned()],
                Some(n) if n < d.rows_inserted => vec![format!(
                    "the server had ingested {} of the {} rows when the wait ended: \
                     changes_ingested_per_sec is its rate under that backlog",
                    int(n),
                    int(d.rows_inserted)
                )],
                Some(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }
}

/// The fields of a JSON object, in the order they were written.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Appends a row per figure of the JSON object `json`: nested objects as `key.inner` (`detail`'s
/// keys bare), reason counts as `n x reason`, lists inline (long ones by count, first and last).
fn flatten(prefix: &str, json: &str, rows: &mut Vec<(String, String)>) {
    let Ok(Fields(fields)) = serde_json::from_str::<Fields>(json) else {
        return;
    };
    for (key, raw) in fields {
        let label = match prefix {
            "" | "detail" => key.clone(),
            p => format!("{p}.{key}"),
        };
        let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        match value {
            Value::Object(reasons) if key.ends_with("reasons") => {
                for (reason, n) in reasons {
                    rows.push((label.clone(), format!("{} x {reason}", figure(&n))));
                }
            }
            Value::Object(_) => flatten(&label, raw.get(), rows),
            Value::Array(list) if list.len() > 12 => {
                let (first, last) = (list.first(), list.last());
                let (first, last) = (
                    first.map_or_else(String::new, figure),
                    last.map_or_else(String::new, figure),
                );
                rows.push((
                    label,
                    format!("{} values, first {first}, last {last}", list.len()),
                ));
            }
            Value::Array(list) => {
                let each: Vec<String> = list.iter().map(figure).collect();
                rows.push((label, each.join(", ")));
            }
            v => rows.push((label, figure(&v))),
        }
    }
}

/// A JSON value as the table shows it: integers with thousands separators, `-` for null.
fn figure(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_u64().map_or_else(|| n.to_string(), int),
        v => v.to_string(),
    }
}

/// What kernel TCP memory is.
const TCP_NOTE: &str = "kernel TCP mem is machine-wide socket buffer memory (/proc/net/sockstat), \
     both ends of every loopback connection; it is not part of the server's RSS";

/// Why a pg run has no ingest figures.
pub const PG_METRICS_NOTE: &str = "changes ingested come from the server's /metrics \
     (herald_pg_changes_total), which could not be read";

/// What a recover run needs from the server.
pub const RETENTION_NOTE: &str = "the server must keep at least --missed messages per channel \
     for long enough (its default is 100 for 2 minutes): start it with e.g. \
     HERALD_HISTORY_MAX_MESSAGES=20000 HERALD_HISTORY_MAX_AGE=10m, and above 10,000 missed also \
     HERALD_MAX_REPLAY_MESSAGES";

/// What to do about refusals by the server's rate limits in a publish run.
pub const RATE_LIMIT_NOTE: &str = "the server refused messages over its rate limits: HTTP \
     max_http_messages_per_second (default 10,000 per node; start the server with \
     HERALD_MAX_HTTP_MESSAGES_PER_SECOND=1000000 to measure past it), WebSocket \
     max_messages_per_second (default 1,000 per connection; lower --publisher-rate)";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout_report() -> Report {
        Report {
            connections: 100,
            connect_rate: Some(512.25),
            delivered_per_sec: Some(9_900.5),
            latency_ms: Some(LatencySummary {
                p50: 0.25,
                p90: 0.5,
                p99: 1.5,
                p999: 3.0,
                max: 4.125,
            }),
            ..Report::new(
                "fanout",
                Detail::Fanout(FanoutDetail {
                    publisher: "ws",
                    published: Published {
                        sent: 300,
                        expected: 30_000,
                        delivered: 30_000,
                        ..Published::default()
                    },
                    ..FanoutDetail::default()
                }),
            )
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
            "accepted_per_sec",
            "replay_ms",
            "replay_msgs_per_sec",
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
    fn table_shows_every_figure_under_its_key() {
        let mut report = fanout_report();
        if let Detail::Fanout(d) = &mut report.detail {
            d.subscribers
                .failure_reasons
                .insert("connect: refused".into(), 2);
        }
        let t = report.table();
        assert!(t.starts_with("herald bench fanout\n"), "{t}");
        let row = |key: &str| {
            t.lines()
                .find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(' '))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {key} in\n{t}"))
        };
        assert_eq!(row("delivered_per_sec"), "9900.5");
        assert_eq!(row("latency_ms.p999"), "3.0");
        assert_eq!(row("server_cpu_pct"), "-");
        assert_eq!(row("expected"), "30,000");
        assert_eq!(row("failure_reasons"), "2 x connect: refused");
        assert_eq!(row("errors"), "0");
        // Aligned: every value starts in the same column.
        let columns: std::collections::BTreeSet<usize> = t
            .lines()
            .skip(1)
            .map(|l| {
                let end = l[2..].find("  ").unwrap_or(0) + 2;
                l.len() - l[end..].trim_start().len()
            })
            .collect();
        assert_eq!(columns.len(), 1, "{t}");
    }
}
