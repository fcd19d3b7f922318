//! Channel state costs nothing once unused: one connection joins and leaves 100,000 distinct random
//! topics (history on, the default), and afterwards the data directory has not grown, no channel
//! is open or cached in memory, and the process's resident memory is back within a small bound of
//! what it was before. The measured figures are printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Herald, eventually, free_port, healthz};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "topics-secret-topics-secret-topics-01";
const TOPICS: usize = 100_000;
/// Joins (and leaves) sent before their replies are read.
const WINDOW: usize = 500;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Joins and leaves `n` fresh random topics, `WINDOW` at a time, and checks every reply is `ok`.
async fn churn<S>(ws: &mut S, n: usize, next_ref: &mut u64)
where
    S: SinkExt<Message>
        + StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    <S as futures_util::Sink<Message>>::Error: std::fmt::Debug,
{
    let mut done = 0;
    while done < n {
        let batch = WINDOW.min(n - done);
        for _ in 0..batch {
            let topic = format!("realtime:t-{}", uuid::Uuid::new_v4().simple());
            for event in ["phx_join", "phx_leave"] {
                *next_ref += 1;
                let frame = json!({"topic": topic, "event": event, "payload": {}, "ref": next_ref.to_string(), "join_ref": null});
                ws.feed(Message::Text(frame.to_string().into()))
                    .await
                    .unwrap();
            }
        }
        ws.flush().await.unwrap();
        let mut replies = 0;
        while replies < batch * 2 {
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("no reply within 30 s")
                .unwrap()
                .unwrap();
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["event"] == "phx_reply" {
                assert_eq!(v["payload"]["status"], "ok", "{v}");
                replies += 1;
            }
        }
        done += batch;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_100k_random_topics_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let herald = Herald::start(
        port,
        data.path(),
        &[],
        &[
            ("HERALD_JWT_SECRET", SECRET),
            ("HERALD_MAX_JOINS_PER_SECOND", "1000000"),
        ],
    );
    eventually(
        "herald to become ready",
        Duration::from_secs(20),
        || async { healthz(port) },
    )
    .await;
    let token = herald_core::Authenticator::new(SECRET.as_bytes())
        .mint("anon", None, 3600)
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/socket/websocket?apikey={token}&vsn=1.0.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut next_ref = 0;
    let settled = || async {
        // Everything left, and the sweep (every second) has dropped the unused logs.
        healthz(port).filter(|h| h["channels"] == 0 && h["history_channels"] == 0)
    };
    // Warm-up: the allocator's pools and the store's first files exist before the baseline.
    churn(&mut ws, 2_000, &mut next_ref).await;
    eventually(
        "the warm-up channels to be dropped",
        Duration::from_secs(30),
        settled,
    )
    .await;
    let pid = herald.0.id();
    let (disk_before, rss_before) = (dir_bytes(data.path()), rss_kib(pid));

    churn(&mut ws, TOPICS, &mut next_ref).await;
    let during = rss_kib(pid);
    eventually(
        "the 100,000 channels to be dropped",
        Duration::from_secs(60),
        settled,
    )
    .await;
    let (disk_after, rss_after) = (dir_bytes(data.path()), rss_kib(pid));
    println!(
        "100,000 topics joined and left: data directory {disk_before} -> {disk_after} bytes; \
         RSS {rss_before} KiB before, {during} KiB right after the last leave, {rss_after} KiB settled"
    );
    // Joins write nothing.
    assert_eq!(disk_after, disk_before, "joins wrote to the data directory");
    // No per-topic state stays: 100,000 topics at even 100 bytes each would be 9.8 MiB.
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    ws.close(None).await.unwrap();
}
