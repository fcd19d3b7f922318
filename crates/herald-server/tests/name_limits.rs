//! Names and keys over their length limits (topic, event, message id, idempotency key) get the same
//! answer on every transport, naming the limit, on a channel that keeps history (where the store's
//! key encoding once panicked); a batch with one bad message is refused whole; a token whose `exp`
//! is as far as a u64 goes and one whose `nbf` is ahead are handled without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_core::Limits;
use herald_core::history::HistorySettings;
use serde_json::json;

async fn history_server() -> Server {
    Server::with_history(Limits::default(), HistorySettings::default()).await
}

fn service(server: &Server) -> String {
    format!("Bearer {}", server.token("service_role"))
}

#[tokio::test]
async fn websocket_joins_and_pushes_over_the_limits_get_error_replies_naming_them() {
    let server = history_server().await;
    let mut c = server.client("1.0.0").await;
    for len in [247, 65_530] {
        let topic = format!("realtime:{}", "t".repeat(len));
        c.push(Some("j"), "j", &topic, "phx_join", json!({"config": {}}))
            .await;
        let reply = c.reply("j").await;
        assert_eq!(reply["status"], "error", "{reply}");
        assert_eq!(
            reply["response"]["reason"],
            format!("TopicTooLong: topic is {len} bytes long; the limit is 246 bytes")
        );
    }
    // The longest name that fits is accepted.
    c.join_ok(
        &format!("realtime:{}", "t".repeat(246)),
        json!({"broadcast": {"ack": true}}),
    )
    .await;
    let room = "realtime:room";
    c.join_ok(room, json!({"broadcast": {"ack": true}})).await;
    let long_event = "e".repeat(70_000);
    c.push(
        Some("r"),
        "p1",
        room,
        "broadcast",
        json!({"type": "broadcast", "event": long_event, "payload": {}}),
    )
    .await;
    let reply = c.reply("p1").await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(
        reply["response"]["reason"],
        "event is 70000 bytes long; the limit is 255 bytes"
    );
    let long_key = "k".repeat(70_000);
    c.push(
        Some("r"),
        "p2",
        room,
        "broadcast",
        json!({"type": "broadcast", "event": "chat", "payload": {}, "meta": {"idempotency_key": long_key}}),
    )
    .await;
    let reply = c.reply("p2").await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(
        reply["response"]["reason"],
        "idempotency_key is 70000 bytes long; the limit is 255 bytes"
    );
    // The socket still works, and so does the channel.
    c.push(
        Some("r"),
        "p3",
        room,
        "broadcast",
        json!({"type": "broadcast", "event": "chat", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(c.reply("p3").await["status"], "ok");
}

#[tokio::test]
async fn http_publishes_over_the_limits_are_422_naming_the_field_and_a_bad_batch_delivers_nothing()
{
    let server = history_server().await;
    let mut watcher = server.client("2.0.0").await;
    watcher.join_ok("realtime:room", json!({})).await;
    let auth = service(&server);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let long_key = "k".repeat(70_000);
    let batch = json!({"messages": [
        {"topic": "room", "event": "chat", "payload": {"n": 1}},
        {"topic": "room", "event": "chat", "payload": {"n": 2}, "idempotency_key": long_key},
        {"topic": "t".repeat(65_530), "event": "chat", "payload": {"n": 3}},
        {"topic": "room", "event": "e".repeat(300), "payload": {"n": 4}},
        {"topic": "room", "event": "chat", "payload": {"n": 5}, "id": "i".repeat(300)},
    ]})
    .to_string();
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &headers,
        batch.as_bytes(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let errors: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        errors["errors"]["messages"],
        json!([
            {"index": 1, "idempotency_key": "idempotency_key is 70000 bytes long; the limit is 255 bytes"},
            {"index": 2, "topic": "topic is 65530 bytes long; the limit is 246 bytes"},
            {"index": 3, "event": "event is 300 bytes long; the limit is 255 bytes"},
            {"index": 4, "id": "id is 300 bytes long; the limit is 255 bytes"},
        ]),
        "{body}"
    );
    // The single route: the same limits, the same words.
    let path = format!("/api/broadcast/room/events/{}", "e".repeat(300));
    let (status, body) = http_request(server.addr, "POST", &path, &headers, b"{}").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("event is 300 bytes long; the limit is 255 bytes"),
        "{body}"
    );
    let header_key = "k".repeat(300);
    let keyed = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", header_key.as_str()),
    ];
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/api/broadcast/room/events/chat",
        &keyed,
        b"{}",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("idempotency_key is 300 bytes long; the limit is 255 bytes"),
        "{body}"
    );
    // A request head past the server's buffer is refused as such, before any work.
    let huge = [
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", long_key.as_str()),
    ];
    let (status, _) = http_request(
        server.addr,
        "POST",
        "/api/broadcast/room/events/chat",
        &huge,
        b"{}",
    )
    .await;
    assert_eq!(status, 431);
    // Nothing of the refused batch was delivered: the next message is the first the watcher sees.
    assert_eq!(
        server
            .http_broadcast("room", "chat", json!({"n": "after"}))
            .await,
        202
    );
    let f = watcher.next_text().await;
    assert_eq!(f.payload["payload"], json!({"n": "after"}), "{f:?}");
}

#[tokio::test]
async fn an_sse_topic_over_the_limit_is_400_naming_it() {
    let server = history_server().await;
    let path = format!(
        "/sse?topic={}&apikey={}",
        "t".repeat(300),
        server.token("anon")
    );
    let (status, body) = http_request(server.addr, "GET", &path, &[], b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("topic is 300 bytes long; the limit is 246 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn a_token_with_the_largest_exp_joins_and_one_not_yet_valid_is_refused() {
    let server = history_server().await;
    let far = sign(json!({"role": "anon", "exp": u64::MAX}), SECRET);
    let mut c = Client::connect(&server.url(&far, "1.0.0"), "1.0.0").await;
    c.join_ok("realtime:room", json!({})).await;
    assert_eq!(
        server.http_broadcast("room", "chat", json!({"n": 1})).await,
        202
    );
    assert_eq!(c.next_text().await.payload["payload"], json!({"n": 1}));
    // The same token on an SSE stream.
    let path = format!("/sse?topic=room&apikey={far}");
    let (status, _) = http_request_head(server.addr, &path).await;
    assert_eq!(status, 200);

    let early = sign(
        json!({"role": "anon", "exp": now() + 600, "nbf": now() + 300}),
        SECRET,
    );
    let (status, body) = refused_handshake(&server.url(&early, "1.0.0")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Token is not valid yet"), "{body}");
}

/// The status line of a response whose body does not end (an SSE stream).
async fn http_request_head(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    (text[9..12].parse().unwrap(), text)
}
