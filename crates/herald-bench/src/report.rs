//! The result of a run: the machine-readable JSON object (`--json`, always the last stdout line) and
//! the human-readable table printed by default. Every scenario has the same top-level keys (`null`
//! where a figure does not apply) and its own `detail` object, whose figures it lists in order.

use std::fmt::{self, Write as _};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::fleet::{DoneStats, ReadyStats, Reasons};
use crate::measure::{Cpu, per_sec, shortfall};
use crate::stats::{LatencySummary, Spread, round3};

/// One run's figures. Fields that do not apply to a scenario (or were not measured) are `null`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `idle`, `fanout`, `sse`, `recover`, `publish`, `presence`, `churn` or `pg`.
    pub scenario: &'static str,
    /// Connections established, streams open, subscribers joined, members connected (presence),
    /// clients connected at once (recover) or cycles completed (churn).
    pub connections: u64,
    /// Growth of the server's RSS per connection or stream, KiB (idle, sse; with `--server-pid`).
    pub rss_per_connection_kib: Option<f64>,
    /// Growth of kernel TCP buffer memory per connection or stream, KiB (idle, sse).
    pub kernel_per_connection_kib: Option<f64>,
    /// Joined connections (or open streams) per second while opening.
    pub connect_rate: Option<f64>,
    /// Deliveries per second (fanout, publish, sse with `--publish-rate`, pg).
    pub delivered_per_sec: Option<f64>,
    /// End-to-end latency percentiles (pg: from just before the commit; presence: from the go
    /// until a member has seen every key; churn: of one cycle).
    pub latency_ms: Option<LatencySummary>,
    /// Server CPU over the measured window, percent of one core (with `--server-pid`).
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
    pub detail: Fields,
}

/// The figures of a `detail` object, in order.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(&'static str, Value)>);

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl Fields {
    /// The figure under `key` (`null` when there is none).
    pub fn get(&self, key: &str) -> &Value {
        let found = self.0.iter().find(|(k, _)| *k == key);
        found.map_or(&Value::Null, |(_, v)| v)
    }

    /// These figures followed by `more`.
    pub fn and(mut self, more: Fields) -> Fields {
        self.0.extend(more.0);
        self
    }
}

/// What fanout, publish and pg report of their subscribers (with why they failed to join or,
/// later, dropped).
pub fn subscribers(
    requested: u64,
    ready: &ReadyStats,
    done: &DoneStats,
    processes: usize,
) -> Fields {
    let mut reasons = ready.reasons.clone();
    reasons.merge(done.failures.clone());
    Fields(vec![
        ("subscribers_requested", json!(requested)),
        ("subscriber_failures", json!(ready.failed)),
        ("failure_reasons", json!(reasons)),
        ("disconnects", json!(done.disconnects)),
        ("processes", json!(processes)),
    ])
}

/// What fanout, sse (with `--publish-rate`) and publish report of their publishing: `sent`
/// messages (`errors` more failed, for `reasons`) that should have made `expected` deliveries and
/// made `delivered`, costing the server `cpu` (unmeasured: `None`).
pub fn published(
    (sent, errors, reasons): (u64, u64, &Reasons),
    expected: u64,
    delivered: u64,
    cpu: Option<&Cpu>,
) -> Fields {
    Fields(vec![
        ("sent", json!(sent)),
        ("publish_errors", json!(errors)),
        ("publish_error_reasons", json!(reasons)),
        ("expected", json!(expected)),
        ("delivered", json!(delivered)),
        ("drops", json!(shortfall(expected, delivered))),
        ("server_cpu_secs", json!(cpu.and_then(Cpu::secs))),
    ])
}

impl Report {
    /// A report of `scenario` with every figure unmeasured (`null`, zero).
    pub fn new(scenario: &'static str, detail: Fields) -> Self {
        Self {
            scenario,
            detail,
            ..Self::default()
        }
    }

    /// A report of a fleet opened as `ready` that received `done` over `elapsed` seconds, costing
    /// the server `cpu`; `errors` are the fleet's failures and disconnects.
    pub fn deliveries(
        scenario: &'static str,
        (ready, done): (&ReadyStats, &DoneStats),
        cpu: &Cpu,
        elapsed: f64,
        detail: Fields,
    ) -> Self {
        Self {
            connections: ready.established,
            connect_rate: ready.connect_rate().map(round3),
            delivered_per_sec: per_sec(done.delivered, elapsed),
            latency_ms: done.latencies().summary(),
            server_cpu_pct: cpu.pct(),
            cpu_us_per_delivery: cpu.us_per(done.delivered),
            errors: ready.failed + done.disconnects,
            ..Report::new(scenario, detail)
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
        flatten("", &self.to_json_line(), &mut rows);
        rows.retain(|(key, _)| key != "scenario");
        rows.extend(self.notes().into_iter().map(|n| ("note".to_owned(), n)));
        let width = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = format!("herald bench {}\n", self.scenario);
        for (label, value) in rows {
            let _ = writeln!(out, "  {label:<width$}  {value}");
        }
        out
    }

    /// What the figures need to be read right.
    fn notes(&self) -> Vec<String> {
        let d = &self.detail;
        match self.scenario {
            "idle" | "sse" => vec![TCP_NOTE.to_owned()],
            "recover" => vec![RETENTION_NOTE.to_owned()],
            "publish" if d.get("rate_limited").as_u64() > Some(0) => {
                vec![RATE_LIMIT_NOTE.to_owned()]
            }
            "pg" => match (
                d.get("changes_ingested").as_u64(),
                d.get("rows_inserted").as_u64(),
            ) {
                (None, _) => vec![PG_METRICS_NOTE.to_owned()],
                (Some(n), Some(rows)) if n < rows => vec![format!(
                    "the server had ingested {} of the {} rows when the wait ended: \
                     changes_ingested_per_sec is its rate under that backlog",
                    int(n),
                    int(rows)
                )],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }
}

/// The fields of a JSON object, in the order they were written.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Appends a row per figure of the JSON object `json`: nested objects as `key.inner` (`detail`'s
/// keys bare), reason counts as `n x reason`, lists inline (long ones by count, first and last).
fn flatten(prefix: &str, json: &str, rows: &mut Vec<(String, String)>) {
    let Ok(Ordered(fields)) = serde_json::from_str::<Ordered>(json) else {
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
fn int(n: u64) -> String {
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
