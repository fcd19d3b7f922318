//! The `presence` scenario (Phoenix only): members that connect, then all join with presence and
//! track at once, each reading presence frames until it has seen every key of its channel.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use herald_protocol::{JoinConfig, client};
use serde_json::json;

use crate::Context;
use crate::clock::Clock;
use crate::conn::{Event, Handled, Shared};
use crate::error::ScenarioError;
use crate::fleet::Transport;
use crate::measure::{Phase, open_fleet, server_cpu};
use crate::report::{Fields, Report};
use crate::stats::round3;

/// Most members in one channel.
pub const MAX_PER_CHANNEL: u64 = 20_000;
/// Stop waiting when no member completed and no presence frame arrived for this long.
const QUIET: Duration = Duration::from_secs(5);

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
fn members_of(members: u64, channels: u64, channel: u64) -> u64 {
    let channels = channels.max(1);
    members / channels + u64::from(channel < members % channels)
}

/// Member `index` of `members` over `channels`, on `topic`: on the go it joins with presence key
/// `m<index>` (join ref 1), tracks once the join is answered (ref 2), and marks the keys of its
/// channel that presence frames name; once it has seen them all, it counts as delivered with the
/// time since the go as its latency.
pub fn member(
    index: u64,
    members: u64,
    channels: u64,
    topic: String,
) -> impl FnMut(Event<'_>, &Shared) -> Handled {
    let channels = channels.max(1);
    let mine = index % channels;
    let expected = members_of(members, channels, mine);
    // A bit per member of its channel: a channel may hold 20,000 members, each tracking them all.
    let mut seen = vec![0u64; usize::try_from(expected.div_ceil(64)).unwrap_or(0)];
    let (mut count, mut go_ns) = (0, None);
    move |event, shared| {
        let text = match event {
            Event::Go(at) => {
                go_ns = Some(at);
                let opts = JoinConfig {
                    presence_enabled: true,
                    presence_key: format!("m{index}"),
                    ..JoinConfig::default()
                };
                return Ok(Some(client::join("1", &topic, &opts)));
            }
            Event::Text(text) => text,
        };
        let Some(frame) = client::decode(text).filter(|f| f.topic == topic) else {
            return Ok(None);
        };
        match client::reply_to(&frame, "1") {
            Some(Ok(_)) => {
                let track = client::track("1", "2", &topic, &json!({"i": index}));
                return Ok(Some(track));
            }
            Some(Err(reason)) => return Err(format!("join refused: {reason}")),
            None => {}
        }
        if let Some(Err(reason)) = client::reply_to(&frame, "2") {
            return Err(format!("track refused: {reason}"));
        }
        if let Some(message) = client::system(&frame, "error") {
            return Err(format!("closed by the server: {message}"));
        }
        let Some(keys) = client::presence_joins(&frame) else {
            return Ok(None);
        };
        shared.counters.frames.fetch_add(1, Relaxed);
        let complete = count >= expected;
        for key in keys {
            let i = key.strip_prefix('m').and_then(|i| i.parse::<u64>().ok());
            let slot = i
                .filter(|i| *i < members && i % channels == mine)
                .map(|i| i / channels);
            let slot = slot.and_then(|s| usize::try_from(s).ok());
            if let Some(slot) = slot
                && let Some(word) = seen.get_mut(slot / 64)
                && *word & (1 << (slot % 64)) == 0
            {
                *word |= 1 << (slot % 64);
                count += 1;
            }
        }
        if !complete
            && count >= expected
            && let Some(at) = go_ns
        {
            shared.delivered(at);
        }
        Ok(None)
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Context, opts: PresenceOpts) -> Result<Report, ScenarioError> {
    ctx.protocol.check("presence")?;
    let per_channel = members_of(opts.members, opts.channels, 0);
    if per_channel > MAX_PER_CHANNEL {
        return Err(ScenarioError::PresenceTooLarge {
            per_channel,
            max: MAX_PER_CHANNEL,
        });
    }
    server_cpu(ctx)?;
    let transport = Transport::Presence {
        members: opts.members,
    };
    let spec = ctx.fleet_spec(
        transport,
        &prefix(&ctx.clock),
        opts.channels,
        opts.members,
        true,
    );
    let (mut fleet, ready) = open_fleet(ctx, "presence", spec, true).await?;
    let processes = fleet.processes();

    // Everyone joins and tracks at once.
    let (live, established) = (fleet.live(), ready.established);
    let phase = {
        let live = live.clone();
        Phase::start(ctx, move || {
            let l = live.snapshot();
            format!(
                "presence: {}/{established} members have every key, {} presence frames, {} failed",
                l.delivered, l.frames, l.disconnects
            )
        })
    };
    let go_ns = ctx.clock.ns_at(phase.start);
    fleet.go(go_ns).await;
    let watch = || {
        let l = live.snapshot();
        (l.delivered, l.frames, l.disconnects)
    };
    let all_in = |(delivered, _, failed): &(u64, u64, u64)| delivered + failed >= established;
    let limits = (Duration::from_secs(opts.timeout), QUIET);
    phase.settle(limits, watch, all_in).await;
    let cpu = phase.end(ctx, "stopping early");
    let done = fleet.stop().await;

    let complete = done.delivered;
    let incomplete = established.saturating_sub(complete);
    let all_complete_ms = (incomplete == 0 && ready.failed == 0)
        .then(|| round3(done.last_delivery_ns.saturating_sub(go_ns) as f64 / 1e6));
    let frames_per_member = round3(done.frames as f64 / established.max(1) as f64);
    let detail = Fields(vec![
        ("members_requested", json!(opts.members)),
        ("channels", json!(opts.channels)),
        ("keys_per_member", json!(per_channel)),
        ("processes", json!(processes)),
        ("connect_failures", json!(ready.failed)),
        ("failure_reasons", json!(ready.reasons)),
        ("connect_secs", json!(round3(ready.connect_secs()))),
        ("members_complete", json!(complete)),
        ("members_incomplete", json!(incomplete)),
        ("all_complete_ms", json!(all_complete_ms)),
        ("presence_frames", json!(done.frames)),
        ("frames_per_member", json!(frames_per_member)),
        ("member_failures", json!(done.disconnects)),
        ("member_failure_reasons", json!(done.failures)),
        ("window_secs", json!(round3(cpu.window))),
        ("server_cpu_secs", json!(cpu.secs())),
    ]);
    Ok(Report {
        connections: established,
        connect_rate: ready.connect_rate().map(round3),
        latency_ms: done.latencies().summary(),
        server_cpu_pct: cpu.pct(),
        // A member that failed is also incomplete, unless it failed after completing: count each
        // member once.
        errors: ready.failed + incomplete.max(done.disconnects),
        ..Report::new("presence", detail)
    })
}
