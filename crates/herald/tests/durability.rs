//! Durability: every message the HTTP API accepted (202) is still there after `kill -9` and a restart
//! on the same data directory, at the same positions, in the same epoch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Herald, eventually, free_port, healthz, request};

const SECRET: &str = "durability-secret-durability-secret-01";

async fn start(data: &std::path::Path, port: u16) -> Herald {
    let herald = Herald::start(port, data, &[], &[("HERALD_JWT_SECRET", SECRET)]);
    eventually(
        "herald to become ready",
        Duration::from_secs(20),
        || async { healthz(port) },
    )
    .await;
    herald
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let token = herald_core::Authenticator::new(SECRET.as_bytes())
        .mint("service_role", None, 600)
        .unwrap();
    let port = free_port();
    let herald = start(data.path(), port).await;
    let n = 300;
    for i in 0..n {
        let body = json!({"messages": [{"topic": "durable", "event": "e", "payload": {"i": i}}]})
            .to_string();
        assert_eq!(
            request(port, "POST", "/api/broadcast", &token, &body).0,
            202
        );
    }
    let (_, before) = request(
        port,
        "GET",
        "/api/channels/durable/history?limit=1",
        &token,
        "",
    );
    let before: Value = serde_json::from_str(&before).unwrap();
    drop(herald); // SIGKILL: no shutdown, no flush.

    let port = free_port();
    let herald = start(data.path(), port).await;
    let mut messages = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = request(
            port,
            "GET",
            &format!("/api/channels/durable/history?after={after}&limit=1000"),
            &token,
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["epoch"], before["epoch"],
            "the epoch changed across the restart"
        );
        let page = v["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap()["offset"].as_u64().unwrap();
        messages.extend(page);
    }
    drop(herald);
    // Default retention keeps the newest 100.
    let kept: Vec<(u64, i64)> = messages
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["payload"]["i"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, i64)> = (n - 100..n).map(|i| (i as u64 + 1, i)).collect();
    assert_eq!(kept, expected);
}
