//! The `recover` scenario: per run, a fresh channel whose position a client learns, M messages
//! published while it is away, and a recovering join timed to the last replayed message, whose
//! offsets must be contiguous.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_protocol::JoinConfig;
use herald_protocol::client::{self, Recovery};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, CLOSE_TIMEOUT, ConnError, Ws};
use crate::error::ScenarioError;
use crate::fleet::{LiveHandle, Reasons};
use crate::measure::Progress;
use crate::payload::{self, channel_name};
use crate::protocol::Protocol;
use crate::publisher::{self, Pace, Plan};
use crate::report::{Fields, RETENTION_NOTE, Report};
use crate::stats::{Spread, round3};
use crate::{Context, PublisherKind};

/// The server's default retention: more missed messages than this need a larger one.
const DEFAULT_RETENTION: u64 = 100;
/// The server's default `max_replay_messages`.
const DEFAULT_MAX_REPLAY: u64 = 10_000;
/// Longest wait for a replay, beyond [`OPEN_TIMEOUT`] for the reply.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of a recover run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RecoverOpts {
    /// Messages published while the client is away, replayed when it comes back.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub missed: u64,
    /// Size of each message payload in bytes.
    #[arg(long, default_value_t = 100, value_parser = crate::bytes_up_to(1_048_576))]
    pub payload: usize,
    /// Runs, each on a new channel `bench-recover-<id>-<run>`.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub runs: u64,
    /// Messages per HTTP request while publishing what is missed (the server takes at most
    /// max_http_batch, 1,000 by default).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub batch: u64,
    /// Most messages per second published while the client is away; keep it under the
    /// server's max_http_messages_per_second (10,000 by default). A batch refused with 429 is
    /// sent again.
    #[arg(long, default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub publish_rate: u64,
}

/// Checks the offsets of a replay: they must run from `after + 1` to `after + count`, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OffsetCheck {
    next: u64,
    end: u64,
    received: u64,
    gaps: u64,
    duplicates: u64,
}

impl OffsetCheck {
    fn new(after: u64, count: u64) -> Self {
        Self {
            next: after + 1,
            end: after + count,
            received: 0,
            gaps: 0,
            duplicates: 0,
        }
    }

    /// Takes the next replayed offset.
    fn see(&mut self, offset: u64) {
        self.received += 1;
        if offset == self.next {
            self.next += 1;
        } else if offset > self.next {
            self.gaps += offset - self.next;
            self.next = offset + 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Whether the last expected offset has arrived.
    fn complete(&self) -> bool {
        self.next > self.end
    }

    /// Offsets still missing at the end.
    fn missing(&self) -> u64 {
        (self.end + 1).saturating_sub(self.next)
    }
}

/// Connects a client and joins `topic` asking to recover after `(epoch, offset)`, reading up to
/// the reply: the client, the reply's `recovery`, and the time from the join to the reply.
async fn join_recovering(
    ctx: &Context,
    topic: &str,
    (epoch, offset): (&str, u64),
    what: &str,
) -> Result<(Ws, Option<Recovery>, Duration), ScenarioError> {
    let failed = |source| ScenarioError::Client {
        what: what.to_owned(),
        source,
    };
    let connect = conn::connect(&ctx.target, &ctx.ws_url, None);
    let mut ws = conn::within("connect", connect).await.map_err(failed)?;
    let opts = JoinConfig {
        recover: Some((epoch.to_owned(), offset)),
        ..JoinConfig::default()
    };
    let sent_at = Instant::now();
    let join = async {
        ws.send(Message::text(client::join("1", topic, &opts)))
            .await?;
        conn::await_answer(&mut ws, Protocol::Phoenix, |text| {
            let frame = client::decode(text).filter(|f| f.topic == topic)?;
            let reply = client::reply_to(&frame, "1")?;
            Some(
                reply
                    .map(|r| client::recovery(&r))
                    .map_err(ConnError::JoinRefused),
            )
        })
        .await
    };
    let recovery = conn::within("join", join).await.map_err(failed)?;
    let recovery = recovery.ok_or_else(|| {
        ScenarioError::Protocol(format!(
            "the join reply for {topic} has no `recovery`: the server does not support \
             config.broadcast.recover"
        ))
    });
    match recovery {
        Ok(r) => Ok((ws, Some(r), sent_at.elapsed())),
        Err(e) => {
            close(ws).await;
            Err(e)
        }
    }
}

async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}

/// Publishes `opts.missed` messages to channel `<prefix>-<run>` over HTTP, in batches, paced at
/// `opts.publish_rate`, sending a batch again after 429. Returns messages per second and retries.
async fn publish_missed(
    ctx: &Context,
    prefix: &str,
    run: u64,
    opts: RecoverOpts,
) -> Result<(f64, u64), ScenarioError> {
    let plan = Plan {
        kind: PublisherKind::Http,
        prefix: prefix.to_owned(),
        channels: 1,
        offset: run,
        connections: 1,
        pace: Pace::Count {
            rate: opts.publish_rate,
            total: opts.missed,
        },
        duration: 0,
        batch: payload::batch_for(opts.batch, opts.payload),
        ack: false,
        payload: opts.payload,
    };
    let out = publisher::publish(
        ctx,
        plan,
        Vec::new(),
        LiveHandle::default(),
        ("recover", true),
    )
    .await?;
    if out.tally.errors > 0 {
        return Err(ScenarioError::Publish(out.tally.reasons.summary()));
    }
    let secs = out.publish_secs();
    let rate = if secs > 0.0 {
        opts.missed as f64 / secs
    } else {
        0.0
    };
    Ok((round3(rate), out.tally.retries))
}

/// Reads replayed messages of `topic` until `check` is complete; the instant the last one arrived.
async fn read_replay(
    ws: &mut Ws,
    topic: &str,
    check: &mut OffsetCheck,
    replayed: &AtomicU64,
) -> Result<Instant, String> {
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                let why = frame.map(|f| format!(" ({} {})", f.code, f.reason));
                return Err(format!(
                    "closed by the server during the replay{}",
                    why.unwrap_or_default()
                ));
            }
            Ok(_) => continue,
            Err(e) => return Err(format!("replay: {e}")),
        };
        let Some(frame) = client::decode(&text).filter(|f| f.topic == topic) else {
            continue;
        };
        if let Some(message) = client::system(&frame, "error") {
            return Err(format!("closed by the server: {message}"));
        }
        let Some(meta) = client::broadcast_of(&frame).map(|b| b.meta) else {
            continue;
        };
        if let (true, Some(offset)) = (meta.replayed, meta.offset) {
            check.see(offset);
            replayed.store(check.received, Relaxed);
            if check.complete() {
                return Ok(Instant::now());
            }
        }
    }
    Err("connection ended during the replay".to_owned())
}

/// What the runs measured.
#[derive(Debug, Default)]
struct Runs {
    replays_ms: Vec<f64>,
    join_reply_ms: Vec<f64>,
    published_per_sec: Vec<f64>,
    retries: u64,
    gaps: u64,
    duplicates: u64,
    complete: u64,
    failure_reasons: Reasons,
}

impl Runs {
    /// Run `run` (of `opts.runs`) on channel `<prefix>-<run>`.
    async fn one(
        &mut self,
        ctx: &Context,
        opts: RecoverOpts,
        prefix: &str,
        run: u64,
    ) -> Result<(), ScenarioError> {
        let name = channel_name(prefix, run);
        let topic = format!("realtime:{name}");
        let what = format!("joining {topic} to learn its position");
        let (ws, recovery, _) = join_recovering(ctx, &topic, ("", 0), &what).await?;
        close(ws).await;
        let Some(Recovery {
            epoch: Some(epoch),
            offset,
            ..
        }) = recovery
        else {
            return Err(ScenarioError::NoHistory(name));
        };
        let (published_per_sec, retries) = publish_missed(ctx, prefix, run, opts).await?;
        self.published_per_sec.push(published_per_sec);
        self.retries += retries;

        let replayed = Arc::new(AtomicU64::new(0));
        let progress = {
            let (replayed, runs, missed) = (Arc::clone(&replayed), opts.runs, opts.missed);
            Progress::start(move || {
                let replayed = replayed.load(Relaxed);
                format!(
                    "recover: run {}/{runs}: replayed {replayed}/{missed}",
                    run + 1
                )
            })
        };
        let what = format!("recovering join of {topic}");
        let (mut ws, recovery, reply) =
            join_recovering(ctx, &topic, (&epoch, offset), &what).await?;
        let sent_at = Instant::now() - reply;
        self.join_reply_ms.push(round3(reply.as_secs_f64() * 1e3));
        let Some(recovery) = recovery.filter(|r| r.recovered) else {
            close(ws).await;
            let retention = opts.missed.max(DEFAULT_RETENTION).next_multiple_of(1_000);
            let replay = match opts.missed > DEFAULT_MAX_REPLAY {
                true => format!(" HERALD_MAX_REPLAY_MESSAGES={retention}"),
                false => String::new(),
            };
            return Err(ScenarioError::NotRecovered {
                channel: name,
                missed: opts.missed,
                retention,
                replay,
            });
        };
        let mut check = OffsetCheck::new(offset, opts.missed);
        let want = offset + opts.missed;
        let mut failure = (recovery.offset != want).then(|| {
            format!(
                "the server's position was {} where {want} was expected",
                recovery.offset
            )
        });
        let replay = read_replay(&mut ws, &topic, &mut check, &replayed);
        let replay = tokio::time::timeout(REPLAY_TIMEOUT, replay).await;
        let timed_out = || format!("replay incomplete after {} s", REPLAY_TIMEOUT.as_secs());
        let replay = replay.unwrap_or_else(|_| Err(timed_out()));
        close(ws).await;
        progress.finish();
        match replay {
            // From sending the join to the last replayed message.
            Ok(last) => {
                let ms = last.duration_since(sent_at).as_secs_f64() * 1e3;
                self.replays_ms.push(round3(ms));
            }
            Err(reason) => {
                check.gaps += check.missing();
                failure = failure.or(Some(reason));
            }
        }
        (self.gaps, self.duplicates) = (self.gaps + check.gaps, self.duplicates + check.duplicates);
        // A replay that failed always says why.
        match failure {
            Some(reason) => self.failure_reasons.add(reason, 1),
            None => self.complete += u64::from(check.gaps == 0 && check.duplicates == 0),
        }
        Ok(())
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: RecoverOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("recover")?;
    if opts.missed > DEFAULT_RETENTION {
        eprintln!("note: {RETENTION_NOTE}");
    }
    // A fresh channel family per invocation: runs never find an earlier run's messages.
    let prefix = format!("bench-recover-{}", ctx.clock.epoch_unix_ns() / 1_000_000);
    let mut r = Runs::default();
    let runs = async {
        for run in 0..opts.runs {
            r.one(ctx, opts, &prefix, run).await?;
        }
        Ok::<(), ScenarioError>(())
    };
    tokio::select! {
        outcome = runs => outcome?,
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping early"),
    }
    let failed_runs = u64::try_from(r.join_reply_ms.len()).unwrap_or(0) - r.complete;
    let replay_ms = Spread::of(&r.replays_ms);
    let detail = Fields(vec![
        ("runs_requested", json!(opts.runs)),
        ("runs_complete", json!(r.complete)),
        ("missed", json!(opts.missed)),
        ("payload_bytes", json!(opts.payload)),
        ("replays_ms", json!(r.replays_ms)),
        ("join_reply_ms", json!(r.join_reply_ms)),
        ("published_per_sec", json!(r.published_per_sec)),
        ("rate_limited_retries", json!(r.retries)),
        ("gaps", json!(r.gaps)),
        ("duplicates", json!(r.duplicates)),
        ("failure_reasons", json!(r.failure_reasons)),
    ]);
    let per_sec = |r: Spread| round3(opts.missed as f64 / (r.median / 1e3));
    Ok(Report {
        connections: 1,
        replay_ms,
        replay_msgs_per_sec: replay_ms.filter(|r| r.median > 0.0).map(per_sec),
        errors: r.gaps + r.duplicates + failed_runs,
        ..Report::new("recover", detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_offsets_must_be_contiguous() {
        let mut c = OffsetCheck::new(0, 6);
        for o in [1, 2, 2, 4, 3, 6] {
            assert!(!c.complete());
            c.see(o);
        }
        // 3 came late (counted as a duplicate of what the gap skipped), 5 never came.
        assert!(c.complete());
        assert_eq!((c.received, c.gaps, c.duplicates), (6, 2, 2));
        let mut c = OffsetCheck::new(10, 3);
        c.see(11);
        assert_eq!((c.complete(), c.missing()), (false, 2));
    }
}
