//! Server-Sent Events: multi-topic streams with one cursor, resume by `Last-Event-ID` or
//! `?last_event_id=` with nothing lost or doubled, refused cursors, presence events, and the errors
//! before a stream starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_core::Limits;
use herald_core::history::HistorySettings;
use serde_json::{Value, json};

async fn server() -> Server {
    Server::with_history(Limits::default(), HistorySettings::default()).await
}

fn data(ev: &SseEvent) -> Value {
    serde_json::from_str(&ev.data).unwrap()
}

#[tokio::test]
async fn resume_across_two_topics_loses_and_doubles_nothing() {
    let server = server().await;
    let token = server.token("anon");
    let path = format!("/sse?topic=a&topic=b&apikey={token}");
    let mut first = SseClient::open(server.addr, &path, &[]).await;
    assert_eq!(first.status, 200);
    let mut last_id = None;
    let initial = first.next().await;
    assert!(initial.id.is_some(), "the stream starts with a cursor");
    assert_eq!(
        (initial.event.as_str(), data(&initial)["topics"].clone()),
        ("ready", json!(["a", "b"]))
    );
    last_id = initial.id.or(last_id);
    let mut seen: Vec<(String, u64)> = Vec::new();
    for i in 0..3 {
        server.http_broadcast("a", "e", json!({"i": i})).await;
        server.http_broadcast("b", "e", json!({"i": i})).await;
    }
    for _ in 0..6 {
        let d = data(&first.next_data(&mut last_id).await);
        seen.push((
            d["topic"].as_str().unwrap().to_owned(),
            d["meta"]["offset"].as_u64().unwrap(),
        ));
    }
    drop(first);
    for i in 3..7 {
        server.http_broadcast("a", "e", json!({"i": i})).await;
        server.http_broadcast("b", "e", json!({"i": i})).await;
    }
    let last = last_id.unwrap();
    // Each resume starts from the same cursor; the live message of the first adds one to the second's replay.
    for (round, (how, path, headers)) in [
        (
            "Last-Event-ID",
            path.clone(),
            vec![("Last-Event-ID", last.as_str())],
        ),
        (
            "?last_event_id",
            format!("{path}&last_event_id={last}"),
            vec![],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut again = SseClient::open(server.addr, &path, &headers).await;
        let mut resumed = seen.clone();
        let mut id = None;
        let top_b = 7 + round as u64;
        for _ in 0..(4 + top_b - 3) {
            let ev = again.next_data(&mut id).await;
            assert_eq!(ev.event, "broadcast", "{how}: {ev:?}");
            let d = data(&ev);
            assert_eq!(d["meta"]["replayed"], true, "{how}");
            resumed.push((
                d["topic"].as_str().unwrap().to_owned(),
                d["meta"]["offset"].as_u64().unwrap(),
            ));
        }
        server.http_broadcast("b", "e", json!({"i": "live"})).await;
        let live = data(&again.next_data(&mut id).await);
        assert_eq!(
            (
                live["topic"].clone(),
                live["meta"]["offset"].clone(),
                live["meta"].get("replayed")
            ),
            (json!("b"), json!(top_b + 1), None),
            "{how}"
        );
        for (topic, top) in [("a", 7), ("b", top_b)] {
            let offsets: Vec<u64> = resumed
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, o)| *o)
                .collect();
            assert_eq!(
                offsets,
                (1..=top).collect::<Vec<_>>(),
                "{how}: topic {topic}"
            );
        }
    }
}

#[tokio::test]
async fn refused_cursors_say_recovered_false_then_stream_live() {
    let server = server().await;
    let token = server.token("anon");
    let mut s = SseClient::open(server.addr, &format!("/sse?topic=t&apikey={token}"), &[]).await;
    let mut id = s.next().await.id;
    server.http_broadcast("t", "e", json!({})).await;
    s.next_data(&mut id).await;
    let real = id.unwrap();
    let mut tampered: Vec<char> = real.chars().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for bad in ["garbage", tampered.as_str(), "AQ"] {
        let mut c = SseClient::open(
            server.addr,
            &format!("/sse?topic=t&topic=u&apikey={token}"),
            &[("Last-Event-ID", bad)],
        )
        .await;
        let mut none = None;
        let mut topics = Vec::new();
        for _ in 0..2 {
            let ev = c.next_data(&mut none).await;
            assert_eq!(ev.event, "system", "cursor {bad:?}");
            assert_eq!(data(&ev)["recovered"], false);
            topics.push(data(&ev)["topic"].as_str().unwrap().to_owned());
        }
        assert_eq!(topics, ["t", "u"]);
        server.http_broadcast("u", "e", json!({"live": bad})).await;
        assert_eq!(data(&c.next_data(&mut none).await)["payload"]["live"], bad);
    }
}

#[tokio::test]
async fn errors_before_the_stream_are_json() {
    let server = server().await;
    let c = SseClient::open(server.addr, "/sse?topic=t", &[]).await;
    assert_eq!(c.status, 401);
    assert!(c.body().await.contains("API key is missing"));
    let c = SseClient::open(
        server.addr,
        &format!("/sse?apikey={}", server.token("anon")),
        &[],
    )
    .await;
    assert_eq!(c.status, 400);
    assert!(c.body().await.contains("topic"));
    let c = SseClient::open(
        server.addr,
        &format!("/sse?topic=t&private=1&apikey={}", server.token("anon")),
        &[],
    )
    .await;
    assert_eq!(c.status, 403);
    let c = SseClient::open(server.addr, "/sse?topic=t&apikey=not-a-jwt", &[]).await;
    assert_eq!(c.status, 401);
    // Cookie and bearer header both work.
    let cookie = format!("theme=dark; herald_token={}", server.token("authenticated"));
    let c = SseClient::open(
        server.addr,
        "/sse?topic=t&private=1",
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(c.status, 200);
    let bearer = format!("Bearer {}", server.token("anon"));
    let c = SseClient::open(server.addr, "/sse?topic=t", &[("Authorization", &bearer)]).await;
    assert_eq!(c.status, 200);
}

#[tokio::test]
async fn presence_events_on_request() {
    let server = server().await;
    let token = server.token("anon");
    let mut s = SseClient::open(
        server.addr,
        &format!("/sse?topic=p&presence=1&apikey={token}"),
        &[],
    )
    .await;
    let mut id = None;
    let state = s.next_data(&mut id).await;
    assert_eq!(
        (state.event.as_str(), data(&state)["payload"].clone()),
        ("presence_state", json!({}))
    );
    let mut ws = server.client("2.0.0").await;
    let jr = ws
        .join_ok("realtime:p", json!({"presence": {"key": "kim"}}))
        .await;
    ws.push(
        Some(&jr),
        "t",
        "realtime:p",
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"at": 1}}),
    )
    .await;
    let diff = s.next_data(&mut id).await;
    assert_eq!(diff.event, "presence_diff");
    assert_eq!(data(&diff)["payload"]["joins"]["kim"]["metas"][0]["at"], 1);
}

#[tokio::test]
async fn stream_leaves_its_channels_when_the_client_goes() {
    let server = server().await;
    let token = server.token("anon");
    let s = SseClient::open(server.addr, &format!("/sse?topic=gone&apikey={token}"), &[]).await;
    let key = herald_core::ChannelKey::new("gone", false);
    let hub = server.running.as_ref().unwrap().state.hub.clone();
    assert_eq!(hub.subscriber_count(&key), 1);
    drop(s);
    // The stream notices on its next write; publish until it has gone.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while hub.subscriber_count(&key) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream kept its subscription"
        );
        server.http_broadcast("gone", "e", json!({})).await;
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let server = server().await;
    let short = server.auth.mint("anon", None, 2).unwrap();
    let mut s = SseClient::open(server.addr, &format!("/sse?topic=exp&apikey={short}"), &[]).await;
    let mut id = None;
    let ev = s.next_data(&mut id).await;
    assert_eq!(ev.event, "system");
    assert_eq!(data(&ev)["message"], "Token has expired");
    // And then the stream is over: the connection closes with nothing more.
    assert_eq!(s.body().await.trim(), "");
    let key = herald_core::ChannelKey::new("exp", false);
    assert_eq!(
        server
            .running
            .as_ref()
            .unwrap()
            .state
            .hub
            .subscriber_count(&key),
        0
    );
}

#[tokio::test]
async fn browsers_on_other_origins_are_allowed() {
    let server = server().await;
    let (status, _) = http_request(
        server.addr,
        "OPTIONS",
        "/api/broadcast",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let raw = raw_response(
        server.addr,
        "GET /sse?topic=c HTTP/1.0\r\nOrigin: https://app.example\r\n\r\n",
    )
    .await;
    assert!(
        raw.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example"),
        "{raw}"
    );
}

async fn raw_response(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}
