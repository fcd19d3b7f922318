//! A panic inside a WebSocket session (forced with a failpoint) ends that connection only: its
//! subscription and presence go with it (members see it leave), and the node keeps serving the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_core::{ChannelKey, Limits};
use serde_json::{Value, json};

async fn member(server: &Server, topic: &str, key: &str) -> (Client, String) {
    let mut c = server.client("2.0.0").await;
    let jr = c
        .join_ok(topic, json!({"presence": {"enabled": true, "key": key}}))
        .await;
    assert_eq!(c.next_text().await.event, "presence_state");
    let r = c.next_ref();
    c.push(
        Some(&jr),
        &r,
        topic,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"k": key}}),
    )
    .await;
    loop {
        let f = c.next_text().await;
        if f.event == "phx_reply" {
            assert_eq!(f.payload["status"], "ok", "{f:?}");
            break;
        }
    }
    (c, jr)
}

/// The next presence diff that names `key` as leaving.
async fn leave_of(c: &mut Client, key: &str) -> Value {
    loop {
        let f = c.next_text().await;
        if f.event == "presence_diff" && f.payload["leaves"].get(key).is_some() {
            return f.payload;
        }
    }
}

#[tokio::test]
async fn a_panicking_session_leaves_no_ghost_subscriber() {
    let server = Server::start(Limits {
        presence_batch_ms: 0,
        ..Limits::default()
    })
    .await;
    let topic = "realtime:lobby";
    let key = ChannelKey::new("lobby", false);
    let hub = server.running.as_ref().unwrap().state.hub.clone();
    let (mut bystander, _) = member(&server, topic, "bystander").await;
    let (mut doomed, _) = member(&server, topic, "doomed").await;
    assert_eq!(hub.subscriber_count(&key), 2);

    // The next frame any session handles panics, once: the doomed one sends it.
    fail::cfg("ws-on-message", "1*panic").unwrap();
    let r = doomed.next_ref();
    doomed
        .push(None, &r, "phoenix", "heartbeat", json!({}))
        .await;
    // Diffs already queued may come first; then the connection ends (each read has a deadline).
    loop {
        match doomed.next().await {
            Got::Closed(_) => break,
            Got::Text(f) => assert_ne!(f.event, "phx_reply", "the heartbeat was answered: {f:?}"),
            Got::Binary(b) => panic!("unexpected binary frame {b:?}"),
        }
    }
    fail::remove("ws-on-message");

    // Its subscription and presence are gone: the bystander sees it leave, and counts agree.
    leave_of(&mut bystander, "doomed").await;
    assert_eq!(hub.subscriber_count(&key), 1);
    assert!(hub.presence_state(&key).get("doomed").is_none());
    // The node serves on.
    assert_eq!(
        server
            .http_broadcast("lobby", "chat", json!({"n": 1}))
            .await,
        202
    );
    loop {
        let f = bystander.next_text().await;
        if f.event == "broadcast" {
            assert_eq!(f.payload["payload"], json!({"n": 1}));
            break;
        }
    }
    bystander.assert_quiet_and_alive().await;
}
