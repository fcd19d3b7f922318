//! A fleet of benchmark connections (WebSocket clients, SSE streams, presence members or Postgres
//! Changes subscribers) opened with bounded concurrency from rotating source addresses, held and
//! counted, in this process or spread over worker processes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Context;
use crate::conn::{self, Shared};
use crate::http;
use crate::payload::channel_name;
use crate::pg::{self, PgJoin};
use crate::presence;
use crate::protocol::Protocol;
use crate::stats::Latencies;

/// Distinct failure reasons kept; the rest are counted under "other".
const MAX_REASONS: usize = 16;

/// How a fleet's connections reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// WebSocket clients of the run's protocol, each subscribed to one channel.
    Ws,
    /// Server-Sent Events streams (`GET /sse`), each following one channel.
    Sse,
    /// Phoenix clients that join with presence key `m<i>` and track on the go; `members` is the
    /// size of the whole fleet (all processes).
    Presence { members: u64 },
    /// Phoenix clients subscribed to Postgres Changes (module `pg`).
    Pg(PgJoin),
}

/// What to open: connection `i` of `base..base + count` follows channel `<prefix>-<i % channels>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    /// The run (its server, key, protocol, clock, concurrency and source addresses).
    pub ctx: Context,
    pub transport: Transport,
    pub prefix: String,
    pub channels: u64,
    /// Global index of the first connection.
    pub base: u64,
    pub count: u64,
    /// Whether to time deliveries.
    pub record_latency: bool,
}

/// Live counts, updated as connections open, receive and drop.
#[derive(Debug, Default)]
pub struct Counters {
    pub established: AtomicU64,
    pub failed: AtomicU64,
    pub delivered: AtomicU64,
    pub disconnects: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    pub frames: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub established: u64,
    pub failed: u64,
    pub delivered: u64,
    pub disconnects: u64,
    /// Frames counted by the scenario.
    #[serde(default)]
    pub frames: u64,
}

impl Counters {
    /// Reads all counts.
    pub fn snapshot(&self) -> Live {
        Live {
            established: self.established.load(Relaxed),
            failed: self.failed.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            frames: self.frames.load(Relaxed),
        }
    }

    /// Overwrites the counts with a worker's latest report.
    pub fn store(&self, live: Live) {
        self.established.store(live.established, Relaxed);
        self.failed.store(live.failed, Relaxed);
        self.delivered.store(live.delivered, Relaxed);
        self.disconnects.store(live.disconnects, Relaxed);
        self.frames.store(live.frames, Relaxed);
    }
}

/// Sums the live counts of every process of a fleet; cheap to clone into a progress printer.
#[derive(Debug, Clone, Default)]
pub struct LiveHandle(pub Vec<Arc<Counters>>);

impl LiveHandle {
    /// The current totals.
    pub fn snapshot(&self) -> Live {
        let sum = |a: Live, b: Live| Live {
            established: a.established + b.established,
            failed: a.failed + b.failed,
            delivered: a.delivered + b.delivered,
            disconnects: a.disconnects + b.disconnects,
            frames: a.frames + b.frames,
        };
        self.0
            .iter()
            .map(|c| c.snapshot())
            .fold(Live::default(), sum)
    }
}

/// Failure reasons with counts, bounded in size.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reasons(pub BTreeMap<String, u64>);

impl Reasons {
    /// Counts `n` failures for `reason`.
    pub fn add(&mut self, reason: String, n: u64) {
        let full = self.0.len() >= MAX_REASONS && !self.0.contains_key(&reason);
        let key = if full { "other".to_owned() } else { reason };
        *self.0.entry(key).or_default() += n;
    }

    /// Adds another set of reasons.
    pub fn merge(&mut self, other: Reasons) {
        for (reason, n) in other.0 {
            self.add(reason, n);
        }
    }

    /// `n x reason; ...`, for error messages.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(r, n)| format!("{n} x {r}")).collect();
        parts.join("; ")
    }
}

/// The state once every connection of a fleet has been tried.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyStats {
    pub established: u64,
    pub failed: u64,
    pub reasons: Reasons,
    pub joined_per_channel: Vec<(u64, u64)>,
    pub connect_start_ns: u64,
    pub connect_end_ns: u64,
}

impl ReadyStats {
    /// Combines the stats of the parts of a fleet.
    pub fn combine(parts: impl IntoIterator<Item = ReadyStats>) -> ReadyStats {
        let mut parts = parts.into_iter();
        let mut all = parts.next().unwrap_or_default();
        for other in parts {
            all.established += other.established;
            all.failed += other.failed;
            all.reasons.merge(other.reasons);
            all.joined_per_channel.extend(other.joined_per_channel);
            all.connect_start_ns = all.connect_start_ns.min(other.connect_start_ns);
            all.connect_end_ns = all.connect_end_ns.max(other.connect_end_ns);
        }
        all
    }

    /// Joined connections of each channel `0..channels`.
    pub fn joined(&self, channels: u64) -> Vec<u64> {
        let mut joined = vec![0; usize::try_from(channels).unwrap_or(0)];
        for &(c, n) in &self.joined_per_channel {
            if let Some(j) = usize::try_from(c).ok().and_then(|c| joined.get_mut(c)) {
                *j += n;
            }
        }
        joined
    }

    /// Seconds spent connecting.
    pub fn connect_secs(&self) -> f64 {
        crate::measure::secs(self.connect_start_ns, self.connect_end_ns)
    }

    /// Joined connections per second over the connect phase.
    pub fn connect_rate(&self) -> Option<f64> {
        let secs = self.connect_secs();
        (self.established > 0 && secs > 0.0).then(|| self.established as f64 / secs)
    }
}

/// The state after a fleet was stopped.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneStats {
    pub delivered: u64,
    pub disconnects: u64,
    pub last_delivery_ns: u64,
    pub latency_us: Vec<(u64, u64)>,
    pub frames: u64,
    pub failures: Reasons,
}

impl DoneStats {
    /// Combines the results of two parts of a fleet.
    pub fn merge(&mut self, other: DoneStats) {
        self.delivered += other.delivered;
        self.disconnects += other.disconnects;
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
        self.latency_us.extend(other.latency_us);
        self.frames += other.frames;
        self.failures.merge(other.failures);
    }

    /// What the connections of `shared` received.
    pub fn of(shared: &Shared) -> Self {
        let latency = shared.latency.as_ref().and_then(|l| l.lock().ok());
        let c = &shared.counters;
        DoneStats {
            delivered: c.delivered.load(Relaxed),
            disconnects: c.disconnects.load(Relaxed),
            last_delivery_ns: c.last_delivery_ns.load(Relaxed),
            latency_us: latency.map(|h| h.to_pairs()).unwrap_or_default(),
            frames: c.frames.load(Relaxed),
            failures: shared
                .failures
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default(),
        }
    }

    /// The latencies as a histogram.
    pub fn latencies(&self) -> Latencies {
        let mut l = Latencies::new();
        l.add_pairs(&self.latency_us);
        l
    }
}

/// An opened connection, ready to be held.
enum Opened {
    Ws(conn::Ws),
    Sse(http::SseConn),
}

/// Opens connection `i` of `spec`.
async fn open(spec: &FleetSpec, i: u64) -> Result<Opened, String> {
    let ctx = &spec.ctx;
    let (target, protocol, ws_url) = (&ctx.target, ctx.protocol, ctx.ws_url.as_str());
    let source = target.source_for(i, ctx.per_address);
    let name = channel_name(&spec.prefix, i % spec.channels.max(1));
    let opened = match spec.transport {
        Transport::Ws => conn::open(target, ws_url, source, protocol, &name, &ctx.pusher).await,
        Transport::Presence { .. } => {
            conn::within("connect", conn::connect(target, ws_url, source)).await
        }
        Transport::Pg(join) => pg::open(target, ws_url, source, i, join).await,
        Transport::Sse => {
            let path = target.sse_path(&name, &ctx.token);
            let stream = http::open(target, source, &path).await;
            return stream.map(Opened::Sse).map_err(|e| e.to_string());
        }
    };
    opened.map(Opened::Ws).map_err(|e| e.to_string())
}

pub async fn connect_all(
    spec: FleetSpec,
    shared: Arc<Shared>,
    stop_rx: watch::Receiver<bool>,
    go_rx: watch::Receiver<Option<u64>>,
) -> (ReadyStats, JoinSet<()>) {
    let mut ready = ReadyStats {
        connect_start_ns: spec.ctx.clock.now_ns(),
        ..ReadyStats::default()
    };
    let mut per_channel = BTreeMap::<u64, u64>::new();
    let mut holders = JoinSet::new();
    let spec = Arc::new(spec);
    let channels = spec.channels.max(1);
    let attempts = futures_util::stream::iter(spec.base..spec.base.saturating_add(spec.count))
        .map(|i| {
            let spec = Arc::clone(&spec);
            async move { (i, open(&spec, i).await) }
        })
        .buffer_unordered(spec.ctx.concurrency.max(1));
    tokio::pin!(attempts);
    let mut stop = stop_rx.clone();
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.changed() => break,
            next = attempts.next() => next,
        };
        let Some((i, result)) = next else { break };
        let opened = match result {
            Ok(opened) => opened,
            Err(reason) => {
                shared.counters.failed.fetch_add(1, Relaxed);
                ready.failed += 1;
                ready.reasons.add(reason, 1);
                continue;
            }
        };
        shared.counters.established.fetch_add(1, Relaxed);
        ready.established += 1;
        *per_channel.entry(i % channels).or_default() += 1;
        let (stop, shared) = (stop_rx.clone(), Arc::clone(&shared));
        let ws = match opened {
            Opened::Sse(s) => {
                holders.spawn(http::hold(s, stop, shared));
                continue;
            }
            Opened::Ws(ws) => ws,
        };
        match spec.transport {
            Transport::Presence { members } => {
                let topic = format!("realtime:{}", channel_name(&spec.prefix, i % channels));
                let handle = presence::member(i, members, channels, topic);
                let go = Some(go_rx.clone());
                holders.spawn(conn::hold(
                    ws,
                    i,
                    stop,
                    go,
                    shared,
                    Protocol::Phoenix,
                    handle,
                ))
            }
            Transport::Pg(join) => {
                let handle = pg::subscriber(i, join, spec.ctx.clock.epoch_unix_ns());
                holders.spawn(conn::hold(
                    ws,
                    i,
                    stop,
                    None,
                    shared,
                    Protocol::Phoenix,
                    handle,
                ))
            }
            _ => {
                let protocol = spec.ctx.protocol;
                let handle = conn::deliveries(protocol);
                holders.spawn(conn::hold(ws, i, stop, None, shared, protocol, handle))
            }
        };
    }
    ready.joined_per_channel = per_channel.into_iter().collect();
    ready.connect_end_ns = spec.ctx.clock.now_ns();
    (ready, holders)
}

/// Splits `count` connections starting at `base` into shares of at most `per_process`, as even as
/// possible: `(base, count)` per share.
pub fn shares(base: u64, count: u64, per_process: u64) -> Vec<(u64, u64)> {
    let n = count.div_ceil(per_process.max(1)).max(1);
    let mut next = base;
    (0..n)
        .map(|k| {
            let size = crate::clock::share(count, n, k);
            next += size;
            (next - size, size)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_shares_cover_the_fleet_evenly() {
        assert_eq!(shares(0, 10, 100), vec![(0, 10)]);
        let big = vec![(0, 16_667), (16_667, 16_667), (33_334, 16_666)];
        assert_eq!(shares(0, 50_000, 19_000), big);
        assert_eq!(shares(5, 4, 2), vec![(5, 2), (7, 2)]);
    }
}
