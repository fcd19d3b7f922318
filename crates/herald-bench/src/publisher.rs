//! The publishers of `fanout`, `publish`, `sse` and `recover`: one task per WebSocket or HTTP
//! keep-alive connection, each sending stamped payloads to its share of the channels, paced or as
//! fast as the server answers, counting what the server accepted, refused and should deliver; then
//! the wait for the deliveries.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::{JoinConfig, client};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::{due_at, due_by, share};
use crate::conn::{self, ConnError, HEARTBEAT, Ws};
use crate::error::ScenarioError;
use crate::fleet::{DoneStats, LiveHandle, Reasons};
use crate::http::{self, HttpError};
use crate::measure::{Cpu, Phase, secs};
use crate::payload::{PayloadBuilder, channel_name};
use crate::protocol::{self, PUSHER_MAX_BATCH, Protocol};
use crate::report::{Fields, published};
use crate::{Context, PublisherKind};

/// Most channels one WebSocket publisher joins (servers commonly cap channels per connection;
/// Herald's default is 100).
pub const CHANNELS_PER_CONNECTION: u64 = 100;
/// Most messages a WebSocket publisher writes before flushing and looking at the clock again.
const WS_BURST: u64 = 100;
/// Longest a publisher may block on one write (a server that stops reading must not hang the run).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause of an HTTP publisher after a 429 it does not retry, so that it does not spin.
const RATE_LIMIT_PAUSE: Duration = Duration::from_millis(10);
/// Pause before sending a batch refused with 429 again, and the most retries of one batch.
const RETRY_AFTER: Duration = Duration::from_millis(250);
const MAX_RETRIES: u32 = 40;
/// How long WebSocket publishers wait for their last acks.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Drain: stop waiting when nothing arrived for this long, or after this long in any case.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(15);

/// How a publisher's messages fall due.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the server answers, until the duration is over.
    Unpaced,
    /// The connections share `rate` per second evenly, until the duration is over.
    Split(u64),
    /// One schedule of `rate` per second for the duration: message k to channel k % channels at
    /// k / rate, each connection sending those of its channels, however late.
    Shared(u64),
    /// `total` messages at `rate` per second, in full batches.
    Count { rate: u64, total: u64 },
}

/// What to publish: connection j sends to [`channels_of`] j, to channels `<prefix>-<c>`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: PublisherKind,
    pub prefix: String,
    pub channels: u64,
    pub offset: u64,
    pub connections: u64,
    pub pace: Pace,
    pub duration: u64,
    pub batch: u64,
    pub ack: bool,
    pub payload: usize,
}

/// The channels publisher `index` of `publishers` sends to, in turn: those `c` with
/// `c % publishers == index` when there are at least as many channels as publishers, else the one
/// channel `index % channels`.
pub fn channels_of(index: u64, publishers: u64, channels: u64) -> Vec<u64> {
    let (publishers, channels) = (publishers.max(1), channels.max(1));
    if channels < publishers {
        return vec![index % channels];
    }
    let stride = usize::try_from(publishers).unwrap_or(usize::MAX);
    (index % publishers..channels).step_by(stride).collect()
}

/// What publishers did.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub sent: u64,
    /// Messages the server accepted (without acks: sent and not refused).
    pub accepted: u64,
    /// Deliveries the accepted messages should make.
    pub expected: u64,
    /// Messages refused or failed; of those, refused by a rate limit.
    pub errors: u64,
    pub rate_limited: u64,
    /// HTTP requests sent again after 429.
    pub retries: u64,
    pub reasons: Reasons,
    /// Clock time the last publisher stopped sending, ns.
    pub last_send_ns: u64,
}

/// The tally of all publishers, counted as they go.
#[derive(Debug, Default)]
struct Totals(Mutex<Tally>);

impl Totals {
    fn with(&self, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut tally) = self.0.lock() {
            f(&mut tally);
        }
    }

    fn get(&self) -> Tally {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn accept(&self, channels: &[u64], joined: &[u64]) {
        let expected: u64 = channels.iter().map(|&c| subscribers_of(joined, c)).sum();
        let n = channels.len() as u64;
        self.with(|t| (t.accepted, t.expected) = (t.accepted + n, t.expected + expected));
    }

    fn refuse(&self, n: u64, reason: String, rate_limited: bool) {
        self.with(|t| {
            t.errors += n;
            t.rate_limited += if rate_limited { n } else { 0 };
            t.reasons.add(reason, n);
        });
    }

    /// Takes back a message counted as accepted when sent (`channel`, if known) that was refused.
    fn take_back(&self, channel: Option<u64>, joined: &[u64]) {
        let expected = channel.map_or(0, |c| subscribers_of(joined, c));
        self.with(|t| {
            t.accepted = t.accepted.saturating_sub(1);
            t.expected = t.expected.saturating_sub(expected);
        });
    }
}

/// Subscribers of `channel` (`joined[channel]`, 0 past the end).
pub fn subscribers_of(joined: &[u64], channel: u64) -> u64 {
    let c = usize::try_from(channel).ok();
    c.and_then(|c| joined.get(c)).copied().unwrap_or(0)
}

/// One publisher's schedule.
#[derive(Debug, Clone)]
struct Job {
    mine: Arc<Vec<u64>>,
    rate: u64,
    total: u64,
    /// With [`Pace::Shared`], the channel count: message n is then the schedule's message
    /// `(n / mine.len()) * channels + mine[n % mine.len()]`.
    spread: Option<u64>,
    full: bool,
    start: Instant,
    deadline: Option<Instant>,
    joined: Arc<Vec<u64>>,
    totals: Arc<Totals>,
}

impl Job {
    fn new(
        plan: &Plan,
        j: u64,
        start: Instant,
        joined: &Arc<Vec<u64>>,
        totals: &Arc<Totals>,
    ) -> Self {
        let secs = Duration::from_secs(plan.duration);
        let (rate, total, spread, deadline) = match plan.pace {
            Pace::Unpaced => (0, u64::MAX, None, Some(start + secs)),
            Pace::Split(rate) => {
                let own = share(rate, plan.connections, j);
                (own, own * plan.duration, None, Some(start + secs))
            }
            Pace::Shared(rate) => (rate, rate * plan.duration, Some(plan.channels), None),
            Pace::Count { rate, total } => (rate, total, None, None),
        };
        Self {
            mine: Arc::new(
                channels_of(j, plan.connections, plan.channels)
                    .iter()
                    .map(|c| c + plan.offset)
                    .collect(),
            ),
            rate,
            total,
            spread,
            full: matches!(plan.pace, Pace::Count { .. }),
            start,
            deadline,
            joined: Arc::clone(joined),
            totals: Arc::clone(totals),
        }
    }

    fn channel(&self, n: u64) -> u64 {
        let i = usize::try_from(n % self.mine.len().max(1) as u64).unwrap_or(0);
        self.mine.get(i).copied().unwrap_or(0)
    }

    /// Where message `n` sits in the schedule.
    fn index(&self, n: u64) -> u64 {
        let m = self.mine.len().max(1) as u64;
        self.spread
            .map_or(n, |c| (n / m).saturating_mul(c) + self.channel(n))
    }

    /// How many messages to send now, having sent `n` (0: finished), at most `most`; waits until
    /// they are due.
    async fn next(&self, n: u64, most: u64) -> u64 {
        loop {
            let late = self.deadline.is_some_and(|d| Instant::now() >= d);
            if late || self.index(n) >= self.total {
                return 0;
            }
            if self.rate == 0 {
                return most.max(1);
            }
            let due = due_by(self.start.elapsed(), self.rate, self.total);
            let fits = (0..most.max(1))
                .take_while(|i| self.index(n + i) < self.total)
                .count();
            let ready = (0..fits as u64)
                .take_while(|i| self.index(n + i) < due)
                .count() as u64;
            let wanted = if self.full { fits as u64 } else { 1 };
            if ready >= wanted {
                return ready;
            }
            let at = due_at(self.start, self.index(n + wanted - 1), self.rate);
            match self.deadline {
                Some(d) => tokio::time::sleep_until(at.min(d).into()).await,
                None => tokio::time::sleep_until(at.into()).await,
            }
        }
    }
}

/// Seconds since the Unix epoch, for Pusher request signatures.
fn unix_secs() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, |d| d.as_secs())
}

/// One HTTP publisher: batches of at most `plan.batch` messages (Pusher: 10) over one keep-alive
/// connection.
async fn http_publisher(ctx: Arc<Context>, plan: Arc<Plan>, job: Job, retry: bool) {
    let mut client = http::Client::new(&ctx.target);
    let path = ctx.target.publish_path(ctx.protocol, &ctx.pusher);
    let most = match ctx.protocol {
        Protocol::Pusher => plan.batch.min(PUSHER_MAX_BATCH),
        _ => plan.batch,
    };
    let (t, builder) = (&job.totals, PayloadBuilder::new(plan.payload));
    let mut n = 0;
    loop {
        let count = job.next(n, most).await;
        if count == 0 {
            break;
        }
        let channels: Vec<u64> = (n..n + count).map(|k| job.channel(k)).collect();
        let payloads: Vec<String> = (0..count)
            .map(|_| builder.build(ctx.clock.now_ns()))
            .collect();
        let messages = channels
            .iter()
            .zip(&payloads)
            .map(|(c, p)| (*c, p.as_str()));
        let body = ctx.protocol.http_batch(&plan.prefix, messages);
        n += count;
        t.with(|t| t.sent += count);
        let mut attempts = 0;
        let failure = loop {
            let path = match ctx.protocol {
                Protocol::Pusher => {
                    match ctx.pusher.signed_post(&path, body.as_bytes(), unix_secs()) {
                        Ok(signed) => signed,
                        Err(e) => break Some((e.to_string(), false, false)),
                    }
                }
                _ => path.clone(),
            };
            match client.post_json(&path, &ctx.token, body.as_bytes()).await {
                Ok(resp) if resp.status == 200 || resp.status == 202 => break None,
                Ok(resp) if resp.status == 429 && retry && attempts < MAX_RETRIES => {
                    attempts += 1;
                    t.with(|t| t.retries += 1);
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Ok(resp) => break Some((resp.summary(), resp.status == 429, false)),
                // A server that does not answer within the request timeout will not do better.
                Err(e) => break Some((e.to_string(), false, matches!(e, HttpError::Timeout))),
            }
        };
        match failure {
            None => t.accept(&channels, &job.joined),
            Some((reason, limited, stalled)) => {
                t.refuse(count, reason, limited);
                if stalled {
                    break;
                }
                if limited {
                    tokio::time::sleep(RATE_LIMIT_PAUSE).await;
                }
            }
        }
    }
    let now = ctx.clock.now_ns();
    t.with(|t| t.last_send_ns = t.last_send_ns.max(now));
}

/// Connects WebSocket publisher `mine` and joins (Phoenix, with `ack` if asked) or subscribes to
/// (Pusher, whose client events only a member may send) its channels; plain and Socket.IO publish
/// without joining.
async fn open_ws(ctx: &Context, plan: &Plan, mine: &[u64]) -> Result<Ws, ConnError> {
    let connect = conn::connect(&ctx.target, &ctx.ws_url, None);
    let mut ws = conn::within("connect", connect).await?;
    let socket_id = conn::within("connect", protocol::open_session(&mut ws, ctx.protocol)).await?;
    let config = JoinConfig {
        broadcast_ack: plan.ack,
        ..JoinConfig::default()
    };
    for &c in mine {
        let name = channel_name(&plan.prefix, c);
        let joined = match ctx.protocol {
            Protocol::Phoenix => {
                let topic = format!("realtime:{name}");
                let ref_ = (c + 1).to_string();
                conn::within("join", conn::join(&mut ws, &ref_, &topic, &config)).await
            }
            Protocol::Pusher => {
                let join =
                    protocol::join_peer(&mut ws, ctx.protocol, &ctx.pusher, &socket_id, &name);
                conn::within("join", join).await
            }
            Protocol::Plain | Protocol::Socketio => break,
        };
        joined?;
    }
    Ok(ws)
}

type Sink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

/// Whether `step` finished in time without error.
async fn sent<E>(step: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, step).await, Ok(Ok(())))
}

/// One WebSocket publisher: pushes (Phoenix: with push refs `p<n>`), then, with acks, waits for
/// the last ones.
async fn ws_publisher(ctx: Arc<Context>, plan: Arc<Plan>, job: Job, ws: Ws) {
    let (sink, stream) = ws.split();
    let sink: Sink = Arc::new(tokio::sync::Mutex::new(sink));
    let pending = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(read_answers(
        stream,
        Arc::clone(&sink),
        ctx.protocol,
        plan.ack,
        job.clone(),
        Arc::clone(&pending),
    ));
    let (t, builder) = (&job.totals, PayloadBuilder::new(plan.payload));
    let mut next_heartbeat = Instant::now() + HEARTBEAT;
    let (mut heartbeat_ref, mut n) = (1, 0);
    'run: loop {
        let count = job.next(n, WS_BURST).await;
        if count == 0 {
            break;
        }
        let mut sink = sink.lock().await;
        if ctx.protocol == Protocol::Phoenix && Instant::now() >= next_heartbeat {
            next_heartbeat += HEARTBEAT;
            heartbeat_ref += 1;
            let frame = Message::text(client::heartbeat(heartbeat_ref - 1));
            if !sent(sink.feed(frame)).await {
                t.refuse(1, "publisher connection lost".to_owned(), false);
                break;
            }
        }
        for k in n..n + count {
            let channel = job.channel(k);
            let (join_ref, name) = (
                (channel + 1).to_string(),
                channel_name(&plan.prefix, channel),
            );
            let payload = builder.build(ctx.clock.now_ns());
            let frame = protocol::push_frame(ctx.protocol, &join_ref, k, &name, &payload);
            if !sent(sink.feed(Message::text(frame))).await {
                t.refuse(1, "publisher connection lost".to_owned(), false);
                break 'run;
            }
            t.with(|t| t.sent += 1);
            match plan.ack {
                true => drop(pending.fetch_add(1, Relaxed)),
                false => t.accept(&[channel], &job.joined),
            }
        }
        n += count;
        if !sent(sink.flush()).await {
            // The messages were counted as sent; whether they left is unknown.
            t.refuse(1, "publisher connection lost".to_owned(), false);
            break;
        }
    }
    let now = ctx.clock.now_ns();
    t.with(|t| t.last_send_ns = t.last_send_ns.max(now));
    let waited = Instant::now();
    while pending.load(Relaxed) > 0 && waited.elapsed() < ACK_WAIT && !reader.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if reader.is_finished() && !plan.ack {
        let reason = "publisher connection closed by the server".to_owned();
        t.with(|t| t.reasons.add(reason, 1));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.lock().await.close()).await;
    // Closing makes the server close too, which ends the reader.
    let mut reader = reader;
    if tokio::time::timeout(Duration::from_secs(3), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    let unanswered = pending.swap(0, Relaxed);
    if unanswered > 0 {
        t.refuse(
            unanswered,
            "publisher connection closed before the ack".to_owned(),
            false,
        );
    }
}

/// Reads a WebSocket publisher's answers: pongs to Socket.IO and Pusher pings, acks and refusals
/// (Phoenix: replies to the push refs `p<n>` and `system` errors; the peers' error frames).
async fn read_answers(
    mut stream: SplitStream<Ws>,
    sink: Sink,
    protocol: Protocol,
    ack: bool,
    job: Job,
    pending: Arc<AtomicU64>,
) {
    let t = &job.totals;
    let answered = || {
        let _ = pending.fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1));
    };
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        if let Some(pong) = protocol.pong_for(&text) {
            if !sent(async { sink.lock().await.send(Message::text(pong)).await }).await {
                break;
            }
            continue;
        }
        if let Some(reason) = protocol.refusal(&text) {
            // Which message was refused is unknown: its expected deliveries stay counted.
            t.refuse(1, format!("refused: {reason}"), false);
            t.take_back(None, &job.joined);
            continue;
        }
        let Some(frame) = client::decode(&text) else {
            continue;
        };
        if let Some(message) = client::system(&frame, "error") {
            // The push that crossed a limit is dropped unanswered; the channel is closed.
            let limited = message.contains("Too many messages");
            t.refuse(
                1,
                format!("{} closed by the server: {message}", frame.topic),
                limited,
            );
            answered();
            continue;
        }
        let Some((n, reply)) = push_reply(&frame) else {
            continue;
        };
        let channel = job.channel(n);
        match (reply, ack) {
            (Ok(()), true) => t.accept(&[channel], &job.joined),
            (Ok(()), false) => {}
            (Err(reason), _) => {
                t.refuse(1, format!("refused: {reason}"), false);
                if !ack {
                    t.take_back(Some(channel), &job.joined);
                }
            }
        }
        answered();
    }
}

/// The reply to a push with ref `p<n>`: `n`, and whether it was accepted.
fn push_reply(frame: &herald_protocol::Inbound) -> Option<(u64, Result<(), String>)> {
    let ref_ = frame.ref_.as_deref()?;
    let n = ref_.strip_prefix('p')?.parse::<u64>().ok()?;
    Some((n, client::reply_to(frame, ref_)?.map(drop)))
}

/// What a publishing phase did.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    /// Clock time of the first send, ns.
    pub start_ns: u64,
    /// Server CPU from the start to the end of the drain.
    pub cpu: Cpu,
}

impl Outcome {
    /// Seconds spent publishing.
    pub fn publish_secs(&self) -> f64 {
        secs(self.start_ns, self.tally.last_send_ns)
    }

    /// Seconds from the first send to the last delivery (or the last send) that `done` saw.
    pub fn elapsed_secs(&self, done: &DoneStats) -> f64 {
        secs(
            self.start_ns,
            done.last_delivery_ns.max(self.tally.last_send_ns),
        )
    }

    /// The publishing figures of a report: `sent` messages of which `delivered` arrived.
    pub fn figures(&self, sent: u64, delivered: u64) -> Fields {
        let t = &self.tally;
        published(
            (sent, t.errors, &t.reasons),
            t.expected,
            delivered,
            Some(&self.cpu),
        )
    }
}

/// Publishes `plan` to the channels whose subscribers `joined` counts (WebSocket publishers
/// connect and join first, before the clock starts; HTTP 429s are retried when `retry`), then waits
/// until `live` has received what was expected, nothing more arrives for [`DRAIN_QUIET`], or
/// [`DRAIN_MAX`] passed. `label` starts the progress line. Ctrl-C ends both early.
pub async fn publish(
    ctx: &Context,
    plan: Plan,
    joined: Vec<u64>,
    live: LiveHandle,
    (label, retry): (&'static str, bool),
) -> Result<Outcome, ScenarioError> {
    let (ctx, plan, joined) = (Arc::new(ctx.clone()), Arc::new(plan), Arc::new(joined));
    let mut sockets = Vec::new();
    for j in (0..plan.connections).filter(|_| plan.kind == PublisherKind::Ws) {
        let mine = channels_of(j, plan.connections, plan.channels);
        let ws = open_ws(&ctx, &plan, &mine).await;
        let subscribers = joined.iter().sum();
        sockets.push(ws.map_err(|source| ScenarioError::Publisher {
            index: j,
            subscribers,
            source,
        })?);
    }
    let (totals, start) = (Arc::new(Totals::default()), Instant::now());
    let phase = {
        let (live, t) = (live.clone(), Arc::clone(&totals));
        Phase::start(&ctx, move || {
            let (t, l, secs) = (t.get(), live.snapshot(), start.elapsed().as_secs_f64());
            format!(
                "{label}: accepted {} ({:.0}/s), refused {}, delivered {}/{}, {} dropped",
                t.accepted,
                t.accepted as f64 / secs.max(1e-3),
                t.errors,
                l.delivered,
                t.expected,
                l.disconnects
            )
        })
    };
    let mut tasks = JoinSet::new();
    let mut sockets = sockets.into_iter();
    for j in 0..plan.connections {
        let job = Job::new(&plan, j, phase.start, &joined, &totals);
        let (ctx, p) = (Arc::clone(&ctx), Arc::clone(&plan));
        match sockets.next() {
            Some(ws) => tasks.spawn(ws_publisher(ctx, p, job, ws)),
            None => tasks.spawn(http_publisher(ctx, p, job, retry)),
        };
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    if phase.unless_interrupted(all).await.is_none() {
        tasks.shutdown().await;
    }
    // Interrupted before any publisher finished: publishing ended now.
    let now = ctx.clock.now_ns();
    totals.with(|t| {
        if t.last_send_ns == 0 {
            t.last_send_ns = now;
        }
    });
    let expected = totals.get().expected;
    let delivered = || live.snapshot().delivered;
    phase
        .settle((DRAIN_MAX, DRAIN_QUIET), delivered, |d| *d >= expected)
        .await;
    let start_ns = ctx.clock.ns_at(phase.start);
    let cpu = phase.end(&ctx, "stopped publishing early");
    Ok(Outcome {
        tally: totals.get(),
        start_ns,
        cpu,
    })
}
