//! The `presence` scenario (Phoenix only): members that connect, then all join with presence and
//! track at once, each reading presence frames until it has seen every key of its channel.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_protocol::{JoinConfig, client};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::Context;
use crate::clock::Clock;
use crate::conn::{self, CLOSE_TIMEOUT, HEARTBEAT, Shared, Ws};
use crate::error::ScenarioError;
use crate::fleet::Transport;
use crate::measure::{CpuWindow, Interrupt, open_fleet, server_cpu, settle};
use crate::progress::Progress;
use crate::report::{Detail, PresenceDetail, Report};
use crate::stats::round3;

/// Most members in one channel.
pub const MAX_PER_CHANNEL: u64 = 20_000;
/// Stop waiting when no member completed and no presence frame arrived for this long.
const QUIET: Duration = Duration::from_secs(5);
/// Join ref of a member's join (and of its track push).
const JOIN_REF: &str = "1";
/// Push ref of a member's track.
const TRACK_REF: &str = "2";

/// Options of a presence run: its command-line flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PresenceOpts {
    /// Members (member i has key `m<i>`); at most 20,000 per channel.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    pub members: u64,
    /// Channels to spread them over (member i joins channel i % C).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// Longest wait, in seconds, for every member to see every key (the wait also ends when
    /// nothing arrived for 5 s).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout: u64,
}

/// The channel family of a run: the same in the parent and its workers, which share the clock's
/// epoch, and new for every run, so that no member meets keys of an earlier run.
pub fn prefix(clock: &Clock) -> String {
    format!("bench-presence-{}", clock.epoch_unix_ns() / 1_000_000)
}

/// Members of channel `channel` when `members` are spread over `channels` (member i on i % C).
pub fn members_of(members: u64, channels: u64, channel: u64) -> u64 {
    let channels = channels.max(1);
    members / channels + u64::from(channel < members % channels)
}

/// One member of a presence fleet.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its global index: its key is `m<index>`.
    pub index: u64,
    /// Members in all processes.
    pub members: u64,
    /// Channels.
    pub channels: u64,
    /// Its topic, `realtime:<prefix>-<index % channels>`.
    pub topic: String,
}

impl Member {
    /// Keys it must see: the members of its channel.
    fn expected(&self) -> u64 {
        let channels = self.channels.max(1);
        members_of(self.members, channels, self.index % channels)
    }

    /// The slot of `key` among the members of this member's channel, if it names one.
    fn slot(&self, key: &str) -> Option<usize> {
        let channels = self.channels.max(1);
        let i: u64 = key.strip_prefix('m')?.parse().ok()?;
        (i < self.members && i % channels == self.index % channels)
            .then(|| usize::try_from(i / channels).ok())
            .flatten()
    }
}

/// The keys a member has seen, as a bit set over the slots of its channel.
#[derive(Debug)]
struct Seen {
    bits: Vec<u64>,
    count: u64,
    expected: u64,
}

impl Seen {
    fn new(expected: u64) -> Self {
        let words = usize::try_from(expected.div_ceil(64)).unwrap_or(0);
        Self {
            bits: vec![0; words],
            count: 0,
            expected,
        }
    }

    /// Marks a slot seen; counts it the first time.
    fn mark(&mut self, slot: usize) {
        if let Some(word) = self.bits.get_mut(slot / 64) {
            let bit = 1u64 << (slot % 64);
            if *word & bit == 0 {
                *word |= bit;
                self.count += 1;
            }
        }
    }

    fn complete(&self) -> bool {
        self.count >= self.expected
    }
}

/// What a member does with one server frame once it has joined.
enum Step {
    /// Nothing more to do.
    Continue,
    /// Its join was answered: track now.
    Track,
    /// The server refused or ended its membership.
    Failed(String),
}

fn read_frame(text: &str, m: &Member, seen: &mut Seen, shared: &Shared) -> Step {
    let Some(frame) = client::decode(text).filter(|f| f.topic == m.topic) else {
        return Step::Continue;
    };
    match client::reply_to(&frame, JOIN_REF) {
        Some(Ok(_)) => return Step::Track,
        Some(Err(reason)) => return Step::Failed(format!("join refused: {reason}")),
        None => {}
    }
    if let Some(Err(reason)) = client::reply_to(&frame, TRACK_REF) {
        return Step::Failed(format!("track refused: {reason}"));
    }
    if let Some(message) = client::system(&frame, "error") {
        return Step::Failed(format!("closed by the server: {message}"));
    }
    let Some(keys) = client::presence_joins(&frame) else {
        return Step::Continue;
    };
    shared.counters.frames.fetch_add(1, Relaxed);
    for key in keys {
        if let Some(slot) = m.slot(&key) {
            seen.mark(slot);
        }
    }
    Step::Continue
}

/// Holds one member: heartbeats while it waits for `go`, then joins with presence key `m<index>`,
/// tracks, and reads presence frames until `stop`. When it has seen every key of its channel, it
/// counts as delivered with the time since the go as its latency.
pub async fn member(
    mut ws: Ws,
    m: Member,
    mut stop: watch::Receiver<bool>,
    mut go: watch::Receiver<Option<u64>>,
    shared: Arc<Shared>,
) {
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + conn::first_heartbeat_delay(m.index),
        HEARTBEAT,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = Seen::new(m.expected());
    let mut go_ns: Option<u64> = None;
    let mut complete = false;
    let mut next_ref: u64 = 3;
    let mut failure: Option<String> = None;
    if *stop.borrow_and_update() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            changed = go.changed(), if go_ns.is_none() => {
                if changed.is_err() {
                    // The fleet is gone.
                    break;
                }
                let Some(at) = *go.borrow_and_update() else { continue };
                go_ns = Some(at);
                let opts = JoinConfig {
                    presence_enabled: true,
                    presence_key: format!("m{}", m.index),
                    ..JoinConfig::default()
                };
                let join = client::join(JOIN_REF, &m.topic, &opts);
                if let Err(e) = ws.send(Message::text(join)).await {
                    failure = Some(format!("join: {e}"));
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = ws.send(Message::text(client::heartbeat(next_ref))).await {
                    failure = Some(format!("heartbeat: {e}"));
                    break;
                }
                next_ref += 1;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match read_frame(&text, &m, &mut seen, &shared) {
                    Step::Continue => {}
                    Step::Track => {
                        let state = serde_json::json!({"i": m.index});
                        let track = client::track(JOIN_REF, TRACK_REF, &m.topic, &state);
                        if let Err(e) = ws.send(Message::text(track)).await {
                            failure = Some(format!("track: {e}"));
                            break;
                        }
                    }
                    Step::Failed(reason) => {
                        failure = Some(reason);
                        break;
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| format!(" ({} {})", f.code, f.reason));
                    failure = Some(format!("closed by the server{}", why.unwrap_or_default()));
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(format!("websocket: {e}"));
                    break;
                }
                None => {
                    failure = Some("connection ended".to_owned());
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
        if !complete
            && seen.complete()
            && let Some(at) = go_ns
        {
            complete = true;
            shared.delivered(at);
        }
    }
    if let Some(reason) = failure {
        shared.failed_late(reason);
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: PresenceOpts) -> Result<Report, ScenarioError> {
    let per_channel = members_of(opts.members, opts.channels, 0);
    if per_channel > MAX_PER_CHANNEL {
        return Err(ScenarioError::PresenceTooLarge {
            per_channel,
            max: MAX_PER_CHANNEL,
        });
    }
    server_cpu(ctx)?;
    let prefix = prefix(&ctx.clock);
    let transport = Transport::Presence {
        members: opts.members,
    };
    let spec = ctx.fleet_spec(transport, &prefix, opts.channels, opts.members, true);
    let (mut fleet, ready) = open_fleet(ctx, "presence", spec, true).await?;
    let processes = fleet.processes();
    let connect_secs = ready.connect_end_ns.saturating_sub(ready.connect_start_ns) as f64 / 1e9;

    // Everyone joins and tracks at once.
    let window = CpuWindow::start(ctx);
    let go = window.start;
    let go_ns = ctx.clock.ns_at(go);
    fleet.go(go_ns).await;
    let live = fleet.live();
    let established = ready.established;
    let progress = {
        let live = live.clone();
        Progress::start(move || {
            let l = live.snapshot();
            format!(
                "presence: {}/{established} members have every key, {} presence frames, {} failed",
                l.delivered, l.frames, l.disconnects
            )
        })
    };
    let interrupt = Interrupt::watch();
    let limits = (go, Duration::from_secs(opts.timeout), QUIET);
    let watch = || {
        let l = live.snapshot();
        (l.delivered, l.frames, l.disconnects)
    };
    let all_in = |(delivered, _, failed): &(u64, u64, u64)| delivered + failed >= established;
    settle(limits, &interrupt.flag(), watch, all_in).await;
    interrupt.finish("stopping early");
    let cpu = window.end(ctx);
    progress.finish();
    let done = fleet.stop().await;

    let complete = done.delivered;
    let incomplete = established.saturating_sub(complete);
    let all_complete_ms = (incomplete == 0 && ready.failed == 0)
        .then(|| round3(done.last_delivery_ns.saturating_sub(go_ns) as f64 / 1e6));
    let detail = PresenceDetail {
        members_requested: opts.members,
        channels: opts.channels,
        keys_per_member: per_channel,
        processes,
        connect_failures: ready.failed,
        failure_reasons: ready.reasons.0.clone(),
        connect_secs: round3(connect_secs),
        members_complete: complete,
        members_incomplete: incomplete,
        all_complete_ms,
        presence_frames: done.frames,
        frames_per_member: round3(done.frames as f64 / established.max(1) as f64),
        member_failures: done.disconnects,
        member_failure_reasons: done.failures.0.clone(),
        window_secs: round3(cpu.window),
        server_cpu_secs: cpu.secs(),
    };
    Ok(Report {
        connections: established,
        connect_rate: ready.connect_rate().map(round3),
        latency_ms: done.latencies().summary(),
        server_cpu_pct: cpu.pct(),
        // A member that failed is also incomplete, unless it failed after completing: count each
        // member once.
        errors: ready.failed + incomplete.max(done.disconnects),
        ..Report::new("presence", Detail::Presence(detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_spread_over_channels() {
        assert_eq!(members_of(10, 3, 0), 4);
        assert_eq!(members_of(10, 3, 2), 3);
        assert_eq!(members_of(2, 5, 3), 0);
        assert_eq!((0..7).map(|c| members_of(100, 7, c)).sum::<u64>(), 100);
    }

    #[test]
    fn members_recognise_the_keys_of_their_channel() {
        let m = Member {
            index: 4,
            members: 10,
            channels: 3,
            topic: "realtime:p-1".into(),
        };
        // Channel 1 holds members 1, 4, 7.
        assert_eq!(m.expected(), 3);
        assert_eq!(m.slot("m1"), Some(0));
        assert_eq!(m.slot("m7"), Some(2));
        assert_eq!(m.slot("m2"), None);
        assert_eq!(m.slot("m10"), None);
        assert_eq!(m.slot("x4"), None);
        let mut seen = Seen::new(m.expected());
        for key in ["m1", "m4", "m4", "m2"] {
            if let Some(slot) = m.slot(key) {
                seen.mark(slot);
            }
        }
        assert!(!seen.complete());
        seen.mark(2);
        assert!(seen.complete());
        assert_eq!(seen.count, 3);
    }
}
