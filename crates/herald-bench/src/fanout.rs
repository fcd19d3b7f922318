//! The `fanout` scenario, and the paced publishers (WebSocket or HTTP, in any `--protocol`) that
//! `sse` shares: message k to channel k % C, stamped with its send time, then a drain.

use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::{Inbound, JoinConfig, client};
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::conn::{self, ConnError, HEARTBEAT, Ws};
use crate::error::ScenarioError;
use crate::fleet::{DoneStats, LiveHandle, Reasons, Transport};
use crate::http;
use crate::measure::{
    Cpu, CpuWindow, Interrupt, missing, open_fleet, per_sec, server_cpu, settle, shortfall,
};
use crate::pace::{due_at, due_by};
use crate::payload::{self, BENCH, PayloadBuilder};
use crate::plain;
use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::pusher;
use crate::report::{Detail, FanoutDetail, Published, Report, Subscribers};
use crate::stats::round3;
use crate::{Context, PublisherKind};

/// Most channels one WebSocket publisher connection joins (servers commonly cap channels per
/// connection; Herald's default is 100).
const CHANNELS_PER_PUBLISHER: u64 = 100;
/// Most messages sent before the loop looks at the clock again.
const MAX_BATCH: u64 = 1_000;
/// Longest a publisher may block on one write (a server that stops reading must not hang the run).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages in one HTTP request.
const HTTP_BATCH: usize = 100;
/// Drain: stop waiting when nothing arrived for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// ... or after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(15);

/// Options of a fanout run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct FanoutOpts {
    /// Subscribers to open.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub subscribers: u64,
    /// Channels (subscriber i joins `realtime:bench-<i % C>`; message k goes to channel k % C).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// Messages per second published, in total over all channels.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Size of each message payload in bytes (`{"t":...,"pad":"xxx"}`; at least about 25).
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(1_048_576))]
    pub payload: usize,
    /// How messages are published.
    #[arg(long, value_enum, default_value_t = PublisherKind::Ws)]
    pub publisher: PublisherKind,
    /// Most messages per second one WebSocket publisher connection sends: more publisher
    /// connections are opened, up to one per channel, to reach --rate. Keep it under the
    /// server's per-connection message limit (Herald: 1,000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub publisher_rate: u64,
}

/// Number of WebSocket publisher connections: enough that none joins more than
/// [`CHANNELS_PER_PUBLISHER`] channels and, as far as channels allow, none sends more than
/// `per_connection` messages per second. Channel `c` is published by connection `c % n`.
fn publisher_connections(channels: u64, rate: u64, per_connection: u64) -> u64 {
    let for_channels = channels.div_ceil(CHANNELS_PER_PUBLISHER);
    let for_rate = rate.div_ceil(per_connection.max(1)).min(channels);
    for_channels.max(for_rate).max(1)
}

/// Running totals of the publishing side.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Messages published.
    pub sent: u64,
    /// Deliveries those should make: each message times the subscribers of its channel.
    pub expected: u64,
    /// Messages that could not be published.
    pub errors: u64,
    /// Why, with counts.
    pub reasons: Reasons,
}

impl Tally {
    /// Counts one message published to `channel`, which has `joined[channel]` subscribers.
    pub fn sent_to(&mut self, channel: u64, joined: &[u64]) {
        self.sent += 1;
        self.expected += subscribers_of(joined, channel);
    }

    /// Counts `n` messages that could not be published, and why.
    pub fn failed(&mut self, n: u64, reason: String) {
        self.errors += n;
        self.reasons.add(reason, n);
    }
}

/// Subscribers of `channel` (`joined[channel]`, 0 past the end).
pub(crate) fn subscribers_of(joined: &[u64], channel: u64) -> u64 {
    usize::try_from(channel)
        .ok()
        .and_then(|c| joined.get(c))
        .copied()
        .unwrap_or(0)
}

/// Refusals the server sent back to WebSocket publishers (pushes are sent without ack, so only
/// errors come back), with what those messages had been expected to deliver.
#[derive(Debug, Default)]
struct Refusals {
    count: AtomicU64,
    expected: AtomicU64,
    reasons: Mutex<Reasons>,
    /// Publisher connections that ended while publishing.
    lost: AtomicU64,
}

/// One publisher connection's write half, shared with its reader (which answers Socket.IO pings).
type SharedSink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

/// WebSocket publishers: of `n` connections, connection `s` publishes to the channels `c` with
/// `c % n == s` (joining them first with Phoenix, subscribing with Pusher, whose client events only
/// a member of the channel may send; plain and Socket.IO publish without joining).
pub(crate) struct WsPublishers {
    protocol: Protocol,
    sinks: Vec<Option<SharedSink>>,
    readers: Vec<JoinHandle<()>>,
    refusals: Arc<Refusals>,
    next_heartbeat: u64,
}

impl WsPublishers {
    async fn open(
        ctx: &Context,
        channels: u64,
        connections: u64,
        joined: Arc<Vec<u64>>,
    ) -> Result<Self, ScenarioError> {
        let refusals = Arc::new(Refusals::default());
        let mut sinks = Vec::new();
        let mut readers = Vec::new();
        let stride = usize::try_from(connections.max(1)).unwrap_or(usize::MAX);
        for first in 0..connections {
            let mine = (first..channels).step_by(stride);
            let ws =
                open_publisher(ctx, mine)
                    .await
                    .map_err(|source| ScenarioError::Publisher {
                        index: first,
                        subscribers: joined.iter().sum(),
                        source,
                    })?;
            let (sink, stream) = ws.split();
            let sink = Arc::new(tokio::sync::Mutex::new(sink));
            readers.push(tokio::spawn(read_publisher(
                stream,
                Arc::clone(&sink),
                ctx.protocol,
                channels,
                Arc::clone(&joined),
                Arc::clone(&refusals),
            )));
            sinks.push(Some(sink));
        }
        Ok(Self {
            protocol: ctx.protocol,
            sinks,
            readers,
            refusals,
            next_heartbeat: 1,
        })
    }

    /// The frame publishing message `k` with `payload` to `channel`.
    fn frame(&self, k: u64, channel: u64, payload: &str) -> String {
        let name = payload::channel_name(BENCH, channel);
        match self.protocol {
            Protocol::Phoenix => client::broadcast(
                &join_ref(channel),
                &format!("p{k}"),
                &format!("realtime:{name}"),
                "b",
                payload,
            ),
            protocol => protocol.publish_frame(&name, payload),
        }
    }

    async fn send(
        &mut self,
        ks: Range<u64>,
        channels: u64,
        joined: &[u64],
        ctx: &Context,
        builder: &PayloadBuilder,
        tally: &mut Tally,
    ) {
        let mut touched = vec![false; self.sinks.len()];
        for k in ks {
            let channel = k % channels;
            let socket =
                usize::try_from(channel % self.sinks.len().max(1) as u64).unwrap_or(usize::MAX);
            let frame = self.frame(k, channel, &builder.build(ctx.clock.now_ns()));
            let Some(slot) = self.sinks.get_mut(socket) else {
                continue;
            };
            let Some(sink) = slot.as_ref() else {
                tally.failed(1, "publisher connection lost".to_owned());
                continue;
            };
            let fed = async { sink.lock().await.feed(Message::text(frame)).await };
            match tokio::time::timeout(SEND_TIMEOUT, fed)
                .await
                .unwrap_or_else(|_| Err(WsError::Io(io::ErrorKind::TimedOut.into())))
            {
                Ok(()) => {
                    tally.sent_to(channel, joined);
                    if let Some(t) = touched.get_mut(socket) {
                        *t = true;
                    }
                }
                Err(e) => {
                    tally.failed(1, format!("publisher send: {e}"));
                    *slot = None;
                }
            }
        }
        for (slot, touched) in self.sinks.iter_mut().zip(touched) {
            let Some(sink) = slot.as_ref().filter(|_| touched) else {
                continue;
            };
            let flushed = async { sink.lock().await.flush().await };
            if let Err(e) = tokio::time::timeout(SEND_TIMEOUT, flushed)
                .await
                .unwrap_or_else(|_| Err(WsError::Io(io::ErrorKind::TimedOut.into())))
            {
                // The messages were counted as sent; whether they left is unknown.
                tally.reasons.add(format!("publisher flush: {e}"), 1);
                *slot = None;
            }
        }
    }

    /// Phoenix publishers heartbeat; the peers' protocols need none from the client (Socket.IO and
    /// Pusher pings are answered by the readers).
    async fn heartbeat(&mut self) {
        if !self.protocol.client_heartbeats() {
            return;
        }
        for slot in &mut self.sinks {
            let frame = Message::text(client::heartbeat(self.next_heartbeat));
            if let Some(sink) = slot.as_ref() {
                let sent = async { sink.lock().await.send(frame).await };
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, sent).await, Ok(Ok(()))) {
                    *slot = None;
                }
            }
        }
        self.next_heartbeat += 1;
    }

    async fn close(mut self) {
        for slot in &mut self.sinks {
            if let Some(sink) = slot.take() {
                let closed = async { sink.lock().await.close().await };
                let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
            }
        }
        for reader in self.readers {
            reader.abort();
        }
    }
}

/// Connects a publisher and joins (Phoenix) or subscribes to (Pusher) the channels it publishes to;
/// plain and Socket.IO publish without joining.
async fn open_publisher(ctx: &Context, mine: impl Iterator<Item = u64>) -> Result<Ws, ConnError> {
    let mut ws = conn::within("connect", conn::connect(&ctx.target, &ctx.ws_url, None)).await?;
    let socket_id = match ctx.protocol {
        Protocol::Socketio => {
            conn::within("connect", conn::socketio_connect(&mut ws)).await?;
            None
        }
        Protocol::Pusher => Some(conn::within("connect", conn::pusher_connect(&mut ws)).await?),
        Protocol::Phoenix | Protocol::Plain => None,
    };
    for channel in mine {
        let name = payload::channel_name(BENCH, channel);
        match (ctx.protocol, &socket_id) {
            (Protocol::Phoenix, _) => {
                let (join_ref, topic) = (join_ref(channel), format!("realtime:{name}"));
                let config = JoinConfig::default();
                conn::within("join", conn::join(&mut ws, &join_ref, &topic, &config)).await?;
            }
            (Protocol::Pusher, Some(id)) => {
                let name = pusher::channel(&name);
                let subscribe = conn::pusher_subscribe(&mut ws, &ctx.pusher, id, &name);
                conn::within("join", subscribe).await?;
            }
            _ => break,
        }
    }
    Ok(ws)
}

fn join_ref(channel: u64) -> String {
    (channel + 1).to_string()
}

/// Drains a publisher's incoming frames: answers Socket.IO and Pusher pings, and counts refused
/// pushes (Phoenix: replies with status error to the push refs `p<k>`; plain: `error` frames;
/// Pusher: `pusher:error` frames).
async fn read_publisher(
    mut stream: SplitStream<Ws>,
    sink: SharedSink,
    protocol: Protocol,
    channels: u64,
    joined: Arc<Vec<u64>>,
    refusals: Arc<Refusals>,
) {
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if let Some(pong) = protocol.pong_for(&text) {
            let pong = async { sink.lock().await.send(Message::text(pong)).await };
            if !matches!(tokio::time::timeout(SEND_TIMEOUT, pong).await, Ok(Ok(()))) {
                break;
            }
            continue;
        }
        // Which message a plain or Pusher error refused is unknown: its expected deliveries stay
        // counted.
        let refused = match protocol {
            Protocol::Phoenix => {
                read_phoenix_refusal(&text, channels, &joined, &refusals);
                None
            }
            Protocol::Plain => match plain::reply(&text) {
                Some(plain::Reply::Error(reason)) => Some(reason),
                _ => None,
            },
            Protocol::Pusher => match pusher::parse(&text) {
                Some(pusher::Frame::Error(reason)) => Some(reason),
                _ => None,
            },
            Protocol::Socketio => None,
        };
        if let Some(reason) = refused {
            refusals.count.fetch_add(1, Relaxed);
            if let Ok(mut reasons) = refusals.reasons.lock() {
                reasons.add(format!("refused: {reason}"), 1);
            }
        }
    }
    refusals.lost.fetch_add(1, Relaxed);
}

/// Counts a Phoenix refusal: a `system` error, or an error reply to a push ref `p<k>`.
fn read_phoenix_refusal(text: &str, channels: u64, joined: &[u64], refusals: &Refusals) {
    let Some(frame) = client::decode(text) else {
        return;
    };
    if let Some(message) = client::system(&frame, "error") {
        if let Ok(mut reasons) = refusals.reasons.lock() {
            reasons.add(
                format!("{} closed by the server: {message}", frame.topic),
                1,
            );
        }
        return;
    }
    let Some((k, Err(reason))) = push_reply(&frame) else {
        return;
    };
    refusals.count.fetch_add(1, Relaxed);
    refusals
        .expected
        .fetch_add(subscribers_of(joined, k % channels.max(1)), Relaxed);
    if let Ok(mut reasons) = refusals.reasons.lock() {
        reasons.add(format!("refused: {reason}"), 1);
    }
}

/// The reply to a push with ref `p<k>`: `k`, and whether it was accepted.
pub(crate) fn push_reply(frame: &Inbound) -> Option<(u64, Result<Box<RawValue>, String>)> {
    let k = frame
        .ref_
        .as_deref()?
        .strip_prefix('p')?
        .parse::<u64>()
        .ok()?;
    Some((k, client::reply_to(frame, &format!("p{k}"))?))
}

/// The HTTP publisher: batches of at most [`HTTP_BATCH`] messages per request (Phoenix:
/// `POST /api/broadcast`; plain and Socket.IO: `POST /publish`; Pusher: at most
/// [`pusher::MAX_BATCH`] per signed `POST /apps/<id>/batch_events`).
pub(crate) struct HttpPublisher {
    client: http::Client,
    /// Channel-name prefix: channel `c` is `<prefix>-<c>`.
    prefix: &'static str,
    /// Set after a request timed out: the server is not answering, so stop asking.
    stalled: bool,
}

impl HttpPublisher {
    /// A publisher to the channels `<prefix>-<c>` over one keep-alive connection.
    pub fn new(ctx: &Context, prefix: &'static str) -> Self {
        let client = http::Client::new(&ctx.target);
        Self {
            client,
            prefix,
            stalled: false,
        }
    }

    async fn send(
        &mut self,
        ks: Range<u64>,
        channels: u64,
        joined: &[u64],
        ctx: &Context,
        builder: &PayloadBuilder,
        tally: &mut Tally,
    ) {
        let ks: Vec<u64> = ks.collect();
        let (protocol, path) = (
            ctx.protocol,
            ctx.target.publish_path(ctx.protocol, &ctx.pusher),
        );
        let per_request = match protocol {
            Protocol::Pusher => pusher::MAX_BATCH,
            _ => HTTP_BATCH,
        };
        for chunk in ks.chunks(per_request) {
            let n = chunk.len() as u64;
            if self.stalled {
                tally.failed(n, "not sent: the server stopped answering".to_owned());
                continue;
            }
            let payloads: Vec<(u64, String)> = chunk
                .iter()
                .map(|k| (k % channels, builder.build(ctx.clock.now_ns())))
                .collect();
            let body =
                protocol.http_batch(self.prefix, payloads.iter().map(|(c, p)| (*c, p.as_str())));
            let signed = match protocol {
                Protocol::Pusher => ctx.pusher.signed_post(&path, body.as_bytes(), unix_secs()),
                _ => Ok(path.clone()),
            };
            let result = match signed {
                Ok(path) => {
                    self.client
                        .post_json(&path, &ctx.token, body.as_bytes())
                        .await
                }
                Err(e) => {
                    tally.failed(n, e.to_string());
                    continue;
                }
            };
            match result {
                Ok(resp) if resp.status == 202 || resp.status == 200 => {
                    for (channel, _) in &payloads {
                        tally.sent_to(*channel, joined);
                    }
                }
                Ok(resp) => tally.failed(n, resp.summary()),
                Err(e) => {
                    self.stalled = matches!(e, http::HttpError::Timeout);
                    tally.failed(n, e.to_string());
                }
            }
        }
    }
}

/// Seconds since the Unix epoch, for Pusher request signatures.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a publishing phase sends its messages.
pub(crate) enum Publisher {
    /// WebSocket connections (joined to the channels, with Phoenix).
    Ws(WsPublishers),
    /// HTTP publish requests (boxed: the client is large).
    Http(Box<HttpPublisher>),
}

impl Publisher {
    fn connections(&self) -> u64 {
        match self {
            Publisher::Ws(p) => p.sinks.len() as u64,
            Publisher::Http(_) => 1,
        }
    }

    async fn send(
        &mut self,
        ks: Range<u64>,
        channels: u64,
        joined: &[u64],
        ctx: &Context,
        builder: &PayloadBuilder,
        tally: &mut Tally,
    ) {
        match self {
            Publisher::Ws(p) => p.send(ks, channels, joined, ctx, builder, tally).await,
            Publisher::Http(p) => p.send(ks, channels, joined, ctx, builder, tally).await,
        }
    }

    async fn heartbeat(&mut self) {
        if let Publisher::Ws(p) = self {
            p.heartbeat().await;
        }
    }
}

/// What a paced publishing phase sends: `rate * duration` messages, message k to channel
/// `k % channels`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Channels.
    pub channels: u64,
    /// Messages per second, in total.
    pub rate: u64,
    /// Seconds of publishing.
    pub duration: u64,
}

/// What a publishing phase did.
#[derive(Debug)]
pub(crate) struct Phase {
    /// The publishing side's totals.
    pub tally: Tally,
    /// When publishing started.
    pub start: Instant,
    /// When the last message was sent.
    pub publish_end: Instant,
    /// Server CPU from the start to the end of the drain.
    pub cpu: Cpu,
}

impl Phase {
    /// Seconds from the first send to the last delivery (or the last send) that `done` saw.
    pub fn elapsed_secs(&self, ctx: &Context, done: &DoneStats) -> f64 {
        let end_ns = done.last_delivery_ns.max(ctx.clock.ns_at(self.publish_end));
        end_ns.saturating_sub(ctx.clock.ns_at(self.start)) as f64 / 1e9
    }
}

/// Publishes `schedule` paced at its rate, then waits until `live` has received what was expected,
/// nothing more arrives for [`DRAIN_QUIET`], or [`DRAIN_MAX`] passed. `joined[c]` is the number of
/// subscribers of channel `c`; `label` starts the progress line. Ctrl-C ends both early.
pub(crate) async fn publish_and_drain(
    ctx: &Context,
    publisher: &mut Publisher,
    schedule: Schedule,
    builder: &PayloadBuilder,
    joined: &[u64],
    live: LiveHandle,
    label: &'static str,
) -> Phase {
    let total = schedule.rate * schedule.duration;
    let interrupt = Interrupt::watch();
    let sent_live = Arc::new(AtomicU64::new(0));
    let expected_live = Arc::new(AtomicU64::new(0));
    let progress = {
        let (live, sent, expected) = (
            live.clone(),
            Arc::clone(&sent_live),
            Arc::clone(&expected_live),
        );
        Progress::start(move || {
            let l = live.snapshot();
            format!(
                "{label}: sent {}/{total}, delivered {}/{}, {} subscribers dropped",
                sent.load(Relaxed),
                l.delivered,
                expected.load(Relaxed),
                l.disconnects
            )
        })
    };
    let window = CpuWindow::start(ctx);
    let start = window.start;
    let mut tally = Tally::default();
    let mut next_heartbeat = start + HEARTBEAT;
    let mut k = 0;
    while k < total && !interrupt.is_set() {
        let now = Instant::now();
        if now >= next_heartbeat {
            publisher.heartbeat().await;
            next_heartbeat += HEARTBEAT;
        }
        let due = due_by(now.saturating_duration_since(start), schedule.rate, total);
        if k < due {
            let end = due.min(k + MAX_BATCH);
            publisher
                .send(k..end, schedule.channels, joined, ctx, builder, &mut tally)
                .await;
            k = end;
            sent_live.store(tally.sent, Relaxed);
            expected_live.store(tally.expected, Relaxed);
        } else {
            tokio::time::sleep_until(due_at(start, k, schedule.rate).into()).await;
        }
    }
    let publish_end = Instant::now();

    drain(&live, tally.expected, publish_end, &interrupt.flag()).await;
    let cpu = window.end(ctx);
    progress.finish();
    interrupt.finish("stopped publishing early");
    Phase {
        tally,
        start,
        publish_end,
        cpu,
    }
}

/// Waits until `live` has received `expected` deliveries, nothing more arrived for
/// [`DRAIN_QUIET`], [`DRAIN_MAX`] passed since `publish_end`, or `interrupted` turned true.
pub(crate) async fn drain(
    live: &LiveHandle,
    expected: u64,
    publish_end: Instant,
    interrupted: &AtomicBool,
) {
    let delivered = || live.snapshot().delivered;
    let limits = (publish_end, DRAIN_MAX, DRAIN_QUIET);
    settle(limits, interrupted, delivered, |d| *d >= expected).await;
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: FanoutOpts) -> Result<Report, ScenarioError> {
    server_cpu(ctx)?;
    let spec = ctx.fleet_spec(Transport::Ws, BENCH, opts.channels, opts.subscribers, true);
    let (fleet, ready) = open_fleet(ctx, "fanout", spec, true).await?;
    let processes = fleet.processes();
    let joined = Arc::new(ready.joined(opts.channels));

    // Publishers.
    let publisher = match opts.publisher {
        PublisherKind::Ws => {
            let n = publisher_connections(opts.channels, opts.rate, opts.publisher_rate);
            if opts.rate.div_ceil(n) > opts.publisher_rate {
                eprintln!(
                    "warning: {} msg/s over {} channels is more than --publisher-rate {} per \
                     publisher connection; the server may refuse some (use more channels or \
                     --publisher http)",
                    opts.rate, opts.channels, opts.publisher_rate
                );
            }
            WsPublishers::open(ctx, opts.channels, n, Arc::clone(&joined))
                .await
                .map(Publisher::Ws)
        }
        PublisherKind::Http => Ok(Publisher::Http(Box::new(HttpPublisher::new(ctx, BENCH)))),
    };
    let mut publisher = match publisher {
        Ok(p) => p,
        Err(e) => {
            fleet.stop().await;
            return Err(e);
        }
    };
    let publishers = publisher.connections();

    // Publish and drain.
    let builder = PayloadBuilder::new(opts.payload);
    let schedule = Schedule {
        channels: opts.channels,
        rate: opts.rate,
        duration: opts.duration,
    };
    let mut phase = publish_and_drain(
        ctx,
        &mut publisher,
        schedule,
        &builder,
        &joined,
        fleet.live(),
        "fanout",
    )
    .await;

    let done = fleet.stop().await;
    let tally = &mut phase.tally;
    if let Publisher::Ws(p) = publisher {
        let refusals = Arc::clone(&p.refusals);
        // Read before closing: closing ends the readers too.
        let lost = refusals.lost.load(Relaxed);
        p.close().await;
        let refused = refusals.count.load(Relaxed);
        tally.sent = tally.sent.saturating_sub(refused);
        tally.expected = tally
            .expected
            .saturating_sub(refusals.expected.load(Relaxed));
        tally.errors += refused;
        if let Ok(reasons) = refusals.reasons.lock() {
            tally.reasons.merge(reasons.clone());
        }
        if lost > 0 {
            tally
                .reasons
                .add("publisher connection closed by the server".to_owned(), lost);
        }
    }

    let publish_secs = phase.publish_end.duration_since(phase.start).as_secs_f64();
    let elapsed = phase.elapsed_secs(ctx, &done);
    let delivered = done.delivered;
    let tally = &phase.tally;
    let drops = shortfall(tally.expected, delivered);
    let detail = FanoutDetail {
        protocol: ctx.protocol.name(),
        subscribers: Subscribers::of(opts.subscribers, &ready, &done, processes),
        channels: opts.channels,
        publisher: match opts.publisher {
            PublisherKind::Ws => "ws",
            PublisherKind::Http => "http",
        },
        publishers,
        rate: opts.rate,
        duration_secs: opts.duration,
        payload_bytes: opts.payload,
        sent_per_sec: per_sec(tally.sent, publish_secs).unwrap_or(0.0),
        published: Published::of(
            tally.sent,
            tally.errors,
            &tally.reasons,
            tally.expected,
            delivered,
            &phase.cpu,
        ),
        elapsed_secs: round3(elapsed),
    };
    Ok(Report {
        connections: ready.established,
        connect_rate: ready.connect_rate().map(round3),
        delivered_per_sec: per_sec(delivered, elapsed),
        latency_ms: done.latencies().summary(),
        server_cpu_pct: phase.cpu.pct(),
        cpu_us_per_delivery: phase.cpu.us_per(delivered),
        errors: ready.failed + done.disconnects + tally.errors + missing(drops),
        ..Report::new("fanout", Detail::Fanout(detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_connections_respect_channel_and_rate_caps() {
        assert_eq!(publisher_connections(10, 100, 500), 1);
        assert_eq!(publisher_connections(250, 100, 500), 3);
        assert_eq!(publisher_connections(10, 2_000, 500), 4);
        // One connection per channel at most: the rate cap cannot be met with 2 channels.
        assert_eq!(publisher_connections(2, 10_000, 500), 2);
        assert_eq!(publisher_connections(1, 1, 0), 1);
    }
}
