//! The scenarios end to end against the real servers, started in this test process: Herald
//! (`herald_server::start`, with history, so that `recover` works, and limits of the test's choosing)
//! and the naive reference server of `bench/peers/plain`. The server's PID is this process's, so the
//! CPU and memory figures are measured too.

use std::net::SocketAddr;

use herald_core::Limits;
use herald_server::{HistoryConfig, Running, ServerConfig};

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::error::ScenarioError;
use crate::protocol::Protocol;
use crate::report::Report;
use crate::target::Target;
use crate::{Context, token};

/// The integer figure `key` of a report (top-level or in its `detail`), if it has one.
fn n(report: &Report, key: &str) -> Option<u64> {
    let json: Value = serde_json::from_str(&report.to_json_line()).ok()?;
    json.get(key).or(json["detail"].get(key))?.as_u64()
}

/// Checks that `text` says each of `parts`.
fn says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
}

/// Checks what every report owes its reader (a JSON line with the keys `scripts/bench-report`
/// reads, a table with a row per figure), and that its integer figures are those of `want`
/// (`key=value ...`).
fn expect(report: &Report, want: &str) {
    let table = report.table();
    let json: Value = serde_json::from_str(&report.to_json_line()).unwrap();
    for key in [
        "rss_per_connection_kib",
        "delivered_per_sec",
        "latency_ms",
        "server_cpu_pct",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    let title = format!("herald bench {}\n", report.scenario);
    assert!(table.starts_with(&title), "{table}");
    // Every figure but empty reason counts.
    let shown = report
        .detail
        .0
        .iter()
        .filter(|(_, v)| v.as_object().is_none_or(|o| !o.is_empty()));
    for (key, _) in shown {
        let row = table.lines().any(|l| l.trim_start().starts_with(key));
        assert!(row, "no {key} in\n{table}");
    }
    let keys = want
        .split_whitespace()
        .filter_map(|kv| kv.split('=').next());
    let got: Vec<String> = keys
        .map(|k| format!("{k}={}", n(report, k).unwrap_or(u64::MAX)))
        .collect();
    assert_eq!(got.join(" "), want, "{table}");
}

const SECRET: &str = "bench-test-secret-bench-test-secret-0123";

/// A Herald on an ephemeral loopback port, with history in a directory of its own.
struct Herald {
    running: Running,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Herald {
    async fn start(limits: Limits) -> Herald {
        let data = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::local(SECRET);
        config.limits = limits;
        config.history = Some(HistoryConfig {
            dir: data.path().join("history"),
            settings: herald_core::history::HistorySettings::default(),
            fsync: false,
            sweep_every: std::time::Duration::from_secs(60),
        });
        let running = herald_server::start(config, None).await.unwrap();
        Herald {
            addr: running.addr,
            running,
            _data: data,
        }
    }

    /// Limits that the scenarios' small runs stay under (the HTTP rate is the only one they reach).
    async fn roomy() -> Herald {
        Herald::start(Limits {
            max_http_messages_per_second: 1_000_000,
            ..Limits::default()
        })
        .await
    }

    fn context(&self) -> Context {
        let now = token::unix_now_secs();
        let token = token::mint(SECRET, "service_role", now, json!({})).unwrap();
        context_for(self.addr, Protocol::Phoenix, &token)
    }

    /// Waits until the server has let go of every connection (closing is not instant on its side).
    async fn wait_until_empty(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let connections = &self.running.state.connections;
        while connections.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            let open = tokio::time::Instant::now() < deadline;
            assert!(open, "connections still open");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// A context for a server of `protocol` at `addr`, measuring this process as the server.
fn context_for(addr: SocketAddr, protocol: Protocol, token: &str) -> Context {
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let pusher = crate::protocol::App::default();
    Context {
        ws_url: target.ws_url_for(protocol, token, &pusher),
        target,
        protocol,
        pusher,
        token: token.into(),
        server_pid: Some(std::process::id()),
        clock: Clock::start(),
        per_process: 10_000,
        concurrency: 8,
        per_address: 100,
    }
}

/// The first failure reason of a report's `detail`.
fn first_reason(report: &Report) -> String {
    let reasons = report.detail.get("failure_reasons").as_object();
    reasons
        .and_then(|r| r.keys().next().cloned())
        .unwrap_or_default()
}

/// Runs `herald bench <args>` against the server of `ctx`.
async fn bench(ctx: &Context, args: &str) -> Result<Report, ScenarioError> {
    let scenario = crate::parse(args).unwrap().scenario;
    crate::measure(ctx, scenario).await
}

/// Runs `herald bench <args>`, which must report.
async fn measured(ctx: &Context, args: &str) -> Report {
    bench(ctx, args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_opens_joins_and_holds() {
    let herald = Herald::roomy().await;
    // 150 connections at 100 per address use two source addresses.
    let args = "idle --connections 150 --channels 4 --hold 1";
    let report = measured(&herald.context(), args).await;
    expect(&report, "connections=150 failed=0 errors=0");
    assert!(report.connect_rate.unwrap() > 0.0 && report.rss_per_connection_kib.is_some());
    assert!(report.table().contains("kernel TCP mem"));
    herald.stop().await;
}

/// Fanout of 60 messages to 20 subscribers over 3 channels (7, 7, 6): 400 deliveries.
async fn fanout_delivers_everything(ctx: &Context) {
    for publisher in ["ws", "http"] {
        let args = "fanout --subscribers 20 --channels 3 --rate 60 --duration 1 --payload 200";
        let report = measured(ctx, &format!("{args} --publisher {publisher}")).await;
        expect(&report, "sent=60 expected=400 delivered=400 errors=0");
        assert_eq!(report.detail.get("publisher"), publisher);
        assert!(report.latency_ms.is_some() && report.delivered_per_sec.unwrap() > 0.0);
        assert!(report.server_cpu_pct.is_some() && report.cpu_us_per_delivery.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_everything_over_ws_and_http() {
    let herald = Herald::roomy().await;
    fanout_delivers_everything(&herald.context()).await;
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_opens_holds_and_delivers() {
    let herald = Herald::roomy().await;
    let ctx = herald.context();
    let report = measured(&ctx, "sse --streams 150 --topics 3 --hold 1").await;
    expect(&report, "connections=150 errors=0");
    assert!(report.connect_rate.unwrap() > 0.0 && report.rss_per_connection_kib.is_some());
    assert!(report.delivered_per_sec.is_none() && report.detail.get("publish_rate").is_null());

    // 30 messages over 3 topics of 10 streams each: 300 deliveries.
    let args = "sse --streams 30 --topics 3 --hold 1 --publish-rate 30";
    let report = measured(&ctx, args).await;
    expect(&report, "sent=30 expected=300 delivered=300 errors=0");
    assert!(report.latency_ms.is_some() && report.server_cpu_pct.is_some());
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_replays_every_missed_message() {
    let herald = Herald::roomy().await;
    let ctx = herald.context();
    let args = "recover --missed 90 --payload 64 --runs 3 --batch 40 --publish-rate 100000";
    let report = measured(&ctx, args).await;
    expect(&report, "runs_complete=3 gaps=0 duplicates=0 errors=0");
    let replays = report.detail.get("replays_ms").as_array().map(Vec::len);
    assert_eq!(replays, Some(3));
    let r = report.replay_ms.unwrap();
    assert!(r.min <= r.median && r.median <= r.max);
    assert!(report.replay_msgs_per_sec.unwrap() > 0.0);

    // More than the server keeps (100 by default): the run stops with the settings to change.
    let e = bench(&ctx, "recover --missed 150 --runs 1")
        .await
        .unwrap_err();
    says(&e.to_string(), &["HERALD_HISTORY_MAX_MESSAGES="]);
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_counts_accepted_and_delivered_over_http_and_ws() {
    let herald = Herald::roomy().await;
    let ctx = herald.context();
    for (publisher, rate) in [("http", 200), ("ws", 200), ("http", 0)] {
        let args = "publish --duration 1 --subscribers 6 --channels 3 --connections 2 --batch 5";
        let args = format!("{args} --publisher {publisher} --rate {rate}");
        let report = measured(&ctx, &args).await;
        let accepted = n(&report, "accepted").unwrap_or(0);
        // Pacing never exceeds the rate; on a loaded machine it may fall short of it.
        let table = report.table();
        assert!(accepted > 0 && (rate == 0 || accepted <= 200), "{table}");
        // Two subscribers per channel.
        let twice = 2 * accepted;
        let want = format!("sent={accepted} expected={twice} delivered={twice} errors=0");
        expect(&report, &want);
        assert!(report.accepted_per_sec.unwrap() > 0.0 && report.server_cpu_pct.is_some());
    }
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_members_see_every_key() {
    let herald = Herald::roomy().await;
    let args = "presence --members 31 --channels 3 --timeout 30";
    let report = measured(&herald.context(), args).await;
    let want = "connections=31 members_complete=31 members_incomplete=0 keys_per_member=11";
    expect(&report, &format!("{want} errors=0"));
    // Each member gets a presence_state and at least the diff of its own track.
    let frames = n(&report, "presence_frames");
    assert!(frames >= Some(2 * 31), "{}", report.table());
    assert!(report.detail.get("all_complete_ms").is_f64() && report.latency_ms.is_some());
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cycles_connect_join_leave_and_close() {
    let herald = Herald::roomy().await;
    let ctx = herald.context();
    let report = measured(&ctx, "churn --rate 40 --duration 1 --channels 3").await;
    expect(&report, "started=40 completed=40 failed=0 errors=0");
    assert!(n(&report, "server_rss_before_kib") > Some(0));
    assert!(n(&report, "server_rss_after_kib") > Some(0));
    assert!(report.latency_ms.is_some() && report.detail.get("cpu_us_per_cycle").is_f64());
    herald.stop().await;

    // The server is gone: every cycle fails, and says what to do.
    let ctx = Context {
        server_pid: None,
        ..context_for(ctx.target.addr, Protocol::Phoenix, "any")
    };
    let report = measured(&ctx, "churn --rate 5 --duration 1 --channels 1").await;
    expect(&report, "completed=0 failed=5 errors=5");
    says(&first_reason(&report), &["start the server"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_to_change() {
    // A server that takes 20 connections.
    let herald = Herald::start(Limits {
        max_connections: 20,
        ..Limits::default()
    })
    .await;
    let ctx = herald.context();
    let report = measured(&ctx, "idle --connections 25 --channels 2 --hold 0").await;
    expect(&report, "connections=20 failed=5");
    let reason = first_reason(&report);
    says(
        &reason,
        &[
            "HTTP 429 Too many connected users",
            "HERALD_MAX_CONNECTIONS",
        ],
    );

    herald.wait_until_empty().await;
    // 20 subscribers fill the server: the publisher is refused, and the error names the cause and
    // the remedy.
    let e = bench(
        &ctx,
        "fanout --subscribers 20 --channels 2 --rate 10 --duration 1",
    )
    .await;
    let e = format!("{:#}", anyhow::Error::from(e.unwrap_err()));
    says(
        &e,
        &[
            "publisher connection 0",
            "20 subscribers",
            "HERALD_MAX_CONNECTIONS",
        ],
    );

    // A token signed with another secret.
    let now = token::unix_now_secs();
    let wrong = token::mint(
        "not-the-secret-not-the-secret-0123456",
        "anon",
        now,
        json!({}),
    );
    let ctx = context_for(herald.addr, Protocol::Phoenix, &wrong.unwrap());
    let report = measured(&ctx, "idle --connections 3 --channels 1 --hold 0").await;
    expect(&report, "connections=0 failed=3");
    says(&first_reason(&report), &["HTTP 401", "--token"]);
    herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_idle_and_fanout_against_the_naive_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(herald_peer_plain::serve(listener));
    let ctx = context_for(addr, Protocol::Plain, "");
    let report = measured(&ctx, "idle --connections 120 --channels 4 --hold 0").await;
    expect(&report, "connections=120 errors=0");
    assert_eq!(report.detail.get("protocol"), "plain");
    fanout_delivers_everything(&ctx).await;
}
