//! The `publish` scenario: HTTP batch publishers or WebSocket publishers pushing with `ack`, paced
//! or as fast as the server accepts, counting accepted and refused messages.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::{JoinConfig, client};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, HEARTBEAT, Ws};
use crate::error::ScenarioError;
use crate::fanout::{self, subscribers_of};
use crate::fleet::{Reasons, Transport};
use crate::http::{self, HttpError};
use crate::measure::{CpuWindow, missing, open_fleet, per_sec, server_cpu, shortfall};
use crate::pace::{due_at, due_by, share};
use crate::payload::{self, PayloadBuilder};
use crate::progress::Progress;
use crate::report::{Detail, PublishDetail, Published, RATE_LIMIT_NOTE, Report, Subscribers};
use crate::stats::round3;
use crate::{Context, PublisherKind};

/// Channel-name prefix of this scenario: `bench-pub-0`, `bench-pub-1`, ...
pub const PREFIX: &str = "bench-pub";
/// Most channels one WebSocket connection may join (Herald's `max_channels_per_connection`).
const CHANNELS_PER_CONNECTION: u64 = 100;
/// Most messages a WebSocket publisher writes before flushing and looking at the clock again.
const WS_BURST: u64 = 100;
/// Longest a publisher may block on one write.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause of an HTTP publisher after a 429, so that it does not spin against the rate limit.
const RATE_LIMIT_PAUSE: Duration = Duration::from_millis(10);
/// How long WebSocket publishers wait for their last acks.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Options of a publish run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PublishOpts {
    /// Messages per second in total; 0: as fast as the server accepts them (HTTP: each
    /// connection sends its next batch as soon as the previous one is answered; WebSocket:
    /// each connection at --publisher-rate).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Size of each message payload in bytes (`{"t":...,"pad":"xxx"}`; at least about 25).
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(1_048_576))]
    pub payload: usize,
    /// WebSocket subscribers counting deliveries (subscriber i joins
    /// `realtime:bench-pub-<i % C>`); 0 measures publishing alone.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub subscribers: u64,
    /// Channels `bench-pub-<c>`; publisher j sends to the channels c with c % connections == j
    /// in turn.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// How messages are published.
    #[arg(long, value_enum, default_value_t = PublisherKind::Http)]
    pub publisher: PublisherKind,
    /// Concurrent publisher connections (HTTP/1.1 keep-alive or WebSocket).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub connections: u64,
    /// Messages per HTTP request: with --rate 0 every request carries this many; when paced, a
    /// request carries the messages due, up to this many (the server takes at most
    /// max_http_batch, 1,000 by default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub batch: u64,
    /// Most messages per second one WebSocket publisher connection sends; keep it under the
    /// server's max_messages_per_second (1,000 by default).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub publisher_rate: u64,
}

/// The channels publisher `index` of `publishers` sends to, in turn: those `c` with
/// `c % publishers == index` when there are at least as many channels as publishers, else the one
/// channel `index % channels`. Together the publishers cover every channel.
fn channels_of(index: u64, publishers: u64, channels: u64) -> Vec<u64> {
    let (publishers, channels) = (publishers.max(1), channels.max(1));
    if channels >= publishers {
        (index % publishers..channels)
            .step_by(usize::try_from(publishers).unwrap_or(usize::MAX))
            .collect()
    } else {
        vec![index % channels]
    }
}

/// The `n`-th message of a publisher with channels `mine` goes to this channel.
fn channel_for(mine: &[u64], n: u64) -> u64 {
    let len = mine.len().max(1) as u64;
    usize::try_from(n % len)
        .ok()
        .and_then(|i| mine.get(i))
        .copied()
        .unwrap_or(0)
}

/// Totals of all publishers, updated as they go.
#[derive(Debug, Default)]
struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    expected: AtomicU64,
    rate_limited: AtomicU64,
    errors: AtomicU64,
    reasons: Mutex<Reasons>,
    /// Clock time the last publisher stopped sending, ns.
    last_send_ns: AtomicU64,
}

impl Totals {
    fn accept(&self, channels: impl IntoIterator<Item = u64>, joined: &[u64]) {
        let (mut n, mut expected) = (0, 0);
        for c in channels {
            n += 1;
            expected += subscribers_of(joined, c);
        }
        self.accepted.fetch_add(n, Relaxed);
        self.expected.fetch_add(expected, Relaxed);
    }

    fn refuse(&self, n: u64, reason: String, rate_limited: bool) {
        self.errors.fetch_add(n, Relaxed);
        if rate_limited {
            self.rate_limited.fetch_add(n, Relaxed);
        }
        if let Ok(mut reasons) = self.reasons.lock() {
            reasons.add(reason, n);
        }
    }
}

/// What every publisher task needs.
#[derive(Clone)]
struct Job {
    /// This publisher's channels, in turn.
    mine: Arc<Vec<u64>>,
    /// Its rate (messages per second), or `None`: as fast as it can.
    rate: Option<u64>,
    /// When to stop.
    deadline: Instant,
    start: Instant,
    builder: Arc<PayloadBuilder>,
    joined: Arc<Vec<u64>>,
    totals: Arc<Totals>,
}

/// What a publisher does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Send this many messages now.
    Send(u64),
    /// Wait until the next message is due.
    Wait,
    /// Stop: the time is up, or everything is sent.
    Stop,
}

/// The next step of a publisher that has sent `n` messages, `elapsed` into a run of `limit`, at
/// `rate` messages per second (`None`: as fast as it can), sending at most `most` at once.
fn step(elapsed: Duration, limit: Duration, n: u64, most: u64, rate: Option<u64>) -> Step {
    if elapsed >= limit {
        return Step::Stop;
    }
    let Some(rate) = rate else {
        return Step::Send(most.max(1));
    };
    let total = rate.saturating_mul(limit.as_secs());
    if n >= total {
        return Step::Stop;
    }
    match due_by(elapsed, rate, total) {
        due if due > n => Step::Send((due - n).min(most.max(1))),
        _ => Step::Wait,
    }
}

impl Job {
    /// How many messages to send now, having sent `n` (0: finished); waits until one is due.
    async fn next(&self, n: u64, most: u64) -> u64 {
        let limit = self.deadline.duration_since(self.start);
        loop {
            match step(self.start.elapsed(), limit, n, most, self.rate) {
                Step::Send(count) => return count,
                Step::Stop => return 0,
                Step::Wait => {
                    let rate = self.rate.unwrap_or(1);
                    tokio::time::sleep_until(due_at(self.start, n, rate).into()).await;
                }
            }
        }
    }
}

/// One HTTP publisher: batches of `batch` messages over one keep-alive connection.
async fn http_publisher(ctx: Arc<Context>, job: Job, batch: u64) {
    let mut client = http::Client::new(&ctx.target);
    let path = ctx.target.broadcast_path();
    let totals = &job.totals;
    let mut n = 0;
    loop {
        let count = job.next(n, batch).await;
        if count == 0 {
            break;
        }
        let channels: Vec<u64> = (n..n + count).map(|k| channel_for(&job.mine, k)).collect();
        let payloads: Vec<String> = (0..count)
            .map(|_| job.builder.build(ctx.clock.now_ns()))
            .collect();
        let body = payload::http_batch(
            PREFIX,
            channels
                .iter()
                .zip(&payloads)
                .map(|(c, p)| (*c, p.as_str())),
        );
        n += count;
        totals.sent.fetch_add(count, Relaxed);
        match client.post_json(&path, &ctx.token, body.as_bytes()).await {
            Ok(resp) if resp.status == 202 || resp.status == 200 => {
                totals.accept(channels, &job.joined);
            }
            Ok(resp) => {
                let limited = resp.status == 429;
                totals.refuse(count, resp.summary(), limited);
                if limited {
                    tokio::time::sleep(RATE_LIMIT_PAUSE).await;
                }
            }
            Err(e) => {
                totals.refuse(count, e.to_string(), false);
                // A server that does not answer within the request timeout will not do better.
                if matches!(e, HttpError::Timeout) {
                    break;
                }
            }
        }
    }
    totals.last_send_ns.fetch_max(ctx.clock.now_ns(), Relaxed);
}

/// Opens WebSocket publisher `index` and joins its channels with `ack`.
async fn open_ws_publisher(
    ctx: &Context,
    index: u64,
    mine: &[u64],
    subscribers: u64,
) -> Result<Ws, ScenarioError> {
    let opts = JoinConfig {
        broadcast_ack: true,
        ..JoinConfig::default()
    };
    let open = async {
        let mut ws = conn::within("connect", conn::connect(&ctx.target, &ctx.ws_url, None)).await?;
        for &channel in mine {
            let (join_ref, topic) = (join_ref(channel), payload::topic(PREFIX, channel));
            conn::within("join", conn::join(&mut ws, &join_ref, &topic, &opts)).await?;
        }
        Ok(ws)
    };
    open.await.map_err(|source| ScenarioError::Publisher {
        index,
        subscribers,
        source,
    })
}

fn join_ref(channel: u64) -> String {
    (channel + 1).to_string()
}

/// What a WebSocket publisher's reader saw.
#[derive(Debug, Default)]
struct Answers {
    /// Pushes answered (acked or refused).
    answered: AtomicU64,
}

/// Counts a WebSocket publisher's acks and refusals (pushes have ref `p<n>`).
async fn read_acks(
    mut stream: SplitStream<Ws>,
    job: Job,
    answers: Arc<Answers>,
    sent: Arc<AtomicU64>,
) {
    let totals = &job.totals;
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some(frame) = client::decode(&text) else {
            continue;
        };
        if let Some(message) = client::system(&frame, "error") {
            // The push that crossed the limit is dropped unanswered; the channel is closed.
            let limited = message.contains("Too many messages");
            totals.refuse(
                1,
                format!("{} closed by the server: {message}", frame.topic),
                limited,
            );
            answers.answered.fetch_add(1, Relaxed);
            continue;
        }
        match fanout::push_reply(&frame) {
            Some((n, Ok(_))) => totals.accept([channel_for(&job.mine, n)], &job.joined),
            Some((_, Err(reason))) => totals.refuse(1, format!("refused: {reason}"), false),
            None => continue,
        }
        answers.answered.fetch_add(1, Relaxed);
    }
    let unanswered = sent
        .load(Relaxed)
        .saturating_sub(answers.answered.load(Relaxed));
    if unanswered > 0 {
        totals.refuse(
            unanswered,
            "publisher connection closed before the ack".to_owned(),
            false,
        );
        answers.answered.fetch_add(unanswered, Relaxed);
    }
}

/// One WebSocket publisher: pushes with `ack`, paced at its rate, then waits for the last acks.
async fn ws_publisher(ctx: Arc<Context>, job: Job, ws: Ws) {
    let (mut sink, stream) = ws.split();
    let answers = Arc::new(Answers::default());
    let sent = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(read_acks(
        stream,
        job.clone(),
        Arc::clone(&answers),
        Arc::clone(&sent),
    ));
    let totals = &job.totals;
    let mut next_heartbeat = Instant::now() + HEARTBEAT;
    let mut heartbeat_ref = 1;
    let mut n = 0;
    let mut broken = false;
    loop {
        let count = job.next(n, WS_BURST).await;
        if count == 0 {
            break;
        }
        if Instant::now() >= next_heartbeat {
            let frame = Message::text(client::heartbeat(heartbeat_ref));
            heartbeat_ref += 1;
            next_heartbeat += HEARTBEAT;
            broken = !feed(&mut sink, frame).await;
        }
        for k in n..n + count {
            if broken {
                break;
            }
            let channel = channel_for(&job.mine, k);
            let frame = client::broadcast(
                &join_ref(channel),
                &format!("p{k}"),
                &payload::topic(PREFIX, channel),
                "b",
                &job.builder.build(ctx.clock.now_ns()),
            );
            broken = !feed(&mut sink, Message::text(frame)).await;
            if !broken {
                sent.fetch_add(1, Relaxed);
                totals.sent.fetch_add(1, Relaxed);
            }
        }
        broken = broken
            || !matches!(
                tokio::time::timeout(SEND_TIMEOUT, sink.flush()).await,
                Ok(Ok(()))
            );
        n += count;
        if broken {
            totals.refuse(1, "publisher connection lost".to_owned(), false);
            break;
        }
    }
    totals.last_send_ns.fetch_max(ctx.clock.now_ns(), Relaxed);
    // The last acks, for a while.
    let waited = Instant::now();
    while answers.answered.load(Relaxed) < sent.load(Relaxed) && waited.elapsed() < ACK_WAIT {
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    // Closing makes the server close too, which ends the reader and counts what stayed unanswered.
    let mut reader = reader;
    if tokio::time::timeout(Duration::from_secs(3), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
        let unanswered = sent
            .load(Relaxed)
            .saturating_sub(answers.answered.load(Relaxed));
        if unanswered > 0 {
            totals.refuse(unanswered, "no ack".to_owned(), false);
        }
    }
}

async fn feed(sink: &mut SplitSink<Ws, Message>, frame: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.feed(frame)).await,
        Ok(Ok(()))
    )
}

/// Runs the scenario.
pub async fn run(ctx: Arc<Context>, opts: PublishOpts) -> Result<Report, ScenarioError> {
    server_cpu(&ctx)?;
    let per_connection = opts.channels.div_ceil(opts.connections.max(1));
    if opts.publisher == PublisherKind::Ws && per_connection > CHANNELS_PER_CONNECTION {
        return Err(ScenarioError::PublisherChannels {
            channels: opts.channels,
            connections: opts.connections,
            max: CHANNELS_PER_CONNECTION,
        });
    }

    let spec = ctx.fleet_spec(Transport::Ws, PREFIX, opts.channels, opts.subscribers, true);
    let (fleet, ready) = open_fleet(&ctx, "publish", spec, true).await?;
    let processes = fleet.processes();
    let joined = Arc::new(ready.joined(opts.channels));

    // Publishers: WebSocket ones connect and join before the clock starts.
    let mut sockets = Vec::new();
    if opts.publisher == PublisherKind::Ws {
        for j in 0..opts.connections {
            let mine = channels_of(j, opts.connections, opts.channels);
            match open_ws_publisher(&ctx, j, &mine, ready.established).await {
                Ok(ws) => sockets.push(ws),
                Err(e) => {
                    fleet.stop().await;
                    return Err(e);
                }
            }
        }
        let per = match opts.rate {
            0 => opts.publisher_rate,
            r => r.div_ceil(opts.connections.max(1)),
        };
        if per > opts.publisher_rate {
            eprintln!(
                "warning: {per} msg/s per WebSocket publisher is more than --publisher-rate {}; \
                 the server closes channels that send more than its max_messages_per_second \
                 (default 1,000): use more --connections",
                opts.publisher_rate
            );
        }
    }

    let batch = payload::batch_for(opts.batch, opts.payload);
    if batch < opts.batch && opts.publisher == PublisherKind::Http {
        eprintln!(
            "note: {batch} messages per request: {} would make too large a body",
            opts.batch
        );
    }
    let totals = Arc::new(Totals::default());
    let builder = Arc::new(PayloadBuilder::new(opts.payload));
    let window = CpuWindow::start(&ctx);
    let start = window.start;
    let deadline = start + Duration::from_secs(opts.duration);
    let mut tasks = JoinSet::new();
    let mut sockets = sockets.into_iter();
    for j in 0..opts.connections {
        let rate = match (opts.publisher, opts.rate) {
            (PublisherKind::Http, 0) => None,
            (PublisherKind::Ws, 0) => Some(opts.publisher_rate),
            (_, r) => Some(share(r, opts.connections, j)),
        };
        let job = Job {
            mine: Arc::new(channels_of(j, opts.connections, opts.channels)),
            rate,
            deadline,
            start,
            builder: Arc::clone(&builder),
            joined: Arc::clone(&joined),
            totals: Arc::clone(&totals),
        };
        match opts.publisher {
            PublisherKind::Http => tasks.spawn(http_publisher(Arc::clone(&ctx), job, batch)),
            PublisherKind::Ws => match sockets.next() {
                Some(ws) => tasks.spawn(ws_publisher(Arc::clone(&ctx), job, ws)),
                None => continue,
            },
        };
    }
    let progress = {
        let (live, totals) = (fleet.live(), Arc::clone(&totals));
        Progress::start(move || {
            let l = live.snapshot();
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            format!(
                "publish: accepted {} ({:.0}/s), refused {}, delivered {}/{}",
                totals.accepted.load(Relaxed),
                totals.accepted.load(Relaxed) as f64 / secs,
                totals.errors.load(Relaxed),
                l.delivered,
                totals.expected.load(Relaxed)
            )
        })
    };
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopped publishing early");
            interrupted.store(true, Relaxed);
            tasks.shutdown().await;
        }
    }
    let publish_end = match totals.last_send_ns.load(Relaxed) {
        // Interrupted before any publisher finished.
        0 => ctx.clock.now_ns(),
        last => last,
    };
    let drain_from = Instant::now();
    fanout::drain(
        &fleet.live(),
        totals.expected.load(Relaxed),
        drain_from,
        &interrupted,
    )
    .await;
    let cpu = window.end(&ctx);
    progress.finish();
    let done = fleet.stop().await;

    let start_ns = ctx.clock.ns_at(start);
    let publish_secs = publish_end.saturating_sub(start_ns) as f64 / 1e9;
    let elapsed = done
        .last_delivery_ns
        .max(publish_end)
        .saturating_sub(start_ns) as f64
        / 1e9;
    let accepted = totals.accepted.load(Relaxed);
    let expected = totals.expected.load(Relaxed);
    let delivered = done.delivered;
    let drops = shortfall(expected, delivered);
    let rate_limited = totals.rate_limited.load(Relaxed);
    let publish_errors = totals.errors.load(Relaxed);
    if rate_limited > 0 {
        eprintln!("note: {RATE_LIMIT_NOTE}");
    }
    let reasons = totals.reasons.lock().map(|r| r.clone()).unwrap_or_default();
    let sent = totals.sent.load(Relaxed);
    let detail = PublishDetail {
        subscribers: Subscribers::of(opts.subscribers, &ready, &done, processes),
        channels: opts.channels,
        publisher: match opts.publisher {
            PublisherKind::Ws => "ws",
            PublisherKind::Http => "http",
        },
        publisher_connections: opts.connections,
        batch: match opts.publisher {
            PublisherKind::Http => batch,
            PublisherKind::Ws => 1,
        },
        rate: opts.rate,
        duration_secs: opts.duration,
        payload_bytes: opts.payload,
        accepted,
        rate_limited,
        published: Published::of(sent, publish_errors, &reasons, expected, delivered, &cpu),
        publish_secs: round3(publish_secs),
        elapsed_secs: round3(elapsed),
        cpu_us_per_message: cpu.us_per(accepted),
    };
    Ok(Report {
        connections: ready.established,
        connect_rate: ready.connect_rate().map(round3),
        accepted_per_sec: per_sec(accepted, publish_secs),
        delivered_per_sec: per_sec(delivered, elapsed).filter(|_| opts.subscribers > 0),
        latency_ms: done.latencies().summary(),
        server_cpu_pct: cpu.pct(),
        cpu_us_per_delivery: cpu.us_per(delivered),
        errors: ready.failed + done.disconnects + publish_errors + missing(drops),
        ..Report::new("publish", Detail::Publish(detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_cover_every_channel_once() {
        assert_eq!(channels_of(0, 4, 10), [0, 4, 8]);
        assert_eq!(channels_of(3, 4, 10), [3, 7]);
        assert_eq!(channels_of(5, 8, 3), [2]);
        assert_eq!(channels_of(0, 1, 1), [0]);
        for (publishers, channels) in [(1u64, 10u64), (4, 10), (10, 10), (7, 300)] {
            let mut all: Vec<u64> = (0..publishers)
                .flat_map(|j| channels_of(j, publishers, channels))
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..channels).collect::<Vec<_>>());
            assert!(
                (0..publishers).all(|j| channels_of(j, publishers, channels).len() as u64
                    <= channels.div_ceil(publishers))
            );
        }
        let mine = channels_of(1, 4, 10);
        let order: Vec<u64> = (0..5).map(|n| channel_for(&mine, n)).collect();
        assert_eq!(order, [1, 5, 9, 1, 5]);
        assert_eq!(channel_for(&[], 3), 0);
    }

    #[test]
    fn steps_pace_and_stop_at_the_deadline() {
        let ms = Duration::from_millis;
        let limit = Duration::from_secs(2);
        // 100 msg/s for 2 s: 200 in all, message k due at k * 10 ms.
        assert_eq!(step(ms(0), limit, 0, 10, Some(100)), Step::Send(1));
        assert_eq!(step(ms(5), limit, 1, 10, Some(100)), Step::Wait);
        assert_eq!(step(ms(10), limit, 1, 10, Some(100)), Step::Send(1));
        // Behind schedule: catch up, at most `most` at once.
        assert_eq!(step(ms(500), limit, 1, 10, Some(100)), Step::Send(10));
        assert_eq!(step(ms(500), limit, 45, 10, Some(100)), Step::Send(6));
        assert_eq!(step(ms(1_995), limit, 199, 10, Some(100)), Step::Send(1));
        assert_eq!(step(ms(1_999), limit, 200, 10, Some(100)), Step::Stop);
        assert_eq!(step(limit, limit, 150, 10, Some(100)), Step::Stop);
        // Unpaced: a full batch every time until the deadline.
        assert_eq!(step(ms(0), limit, 0, 50, None), Step::Send(50));
        assert_eq!(step(ms(1_999), limit, 1 << 40, 50, None), Step::Send(50));
        assert_eq!(step(limit, limit, 0, 50, None), Step::Stop);
        assert_eq!(step(ms(0), limit, 0, 0, None), Step::Send(1));

        // Walking the clock in 1 ms steps sends exactly rate * seconds, never ahead of schedule.
        let mut n = 0;
        for t in 0..2_000u64 {
            if let Step::Send(count) = step(ms(t), limit, n, 10, Some(100)) {
                n += count;
                assert!(n <= t / 10 + 1, "{n} sent by {t} ms");
            }
        }
        assert_eq!(n, 200);
    }
}
