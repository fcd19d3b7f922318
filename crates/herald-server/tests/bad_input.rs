//! Hostile and malformed input: every case gets its documented reply or close, never a panic, and
//! a bystander subscribed on the same node keeps receiving after each one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_core::Limits;
use serde_json::{Value, json};

/// What a case must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// No reply at all; the connection stays usable.
    Silent,
    /// A `phx_reply` with status error whose reason contains this text; the connection stays usable.
    Error(&'static str),
    /// A `phx_reply` with status ok.
    Ok,
    /// A `system` error with this message text, then `phx_close`.
    SystemClose(&'static str),
}

enum Input {
    Text(String),
    Binary(Vec<u8>),
}

struct Case {
    name: &'static str,
    vsn: &'static str,
    joined: bool,
    input: Input,
    expect: Expect,
}

const ROOM: &str = "realtime:room";

fn text(name: &'static str, input: &str, expect: Expect) -> Case {
    Case {
        name,
        vsn: "2.0.0",
        joined: true,
        input: Input::Text(input.to_owned()),
        expect,
    }
}

fn v1(name: &'static str, input: &str, expect: Expect) -> Case {
    Case {
        name,
        vsn: "1.0.0",
        joined: true,
        input: Input::Text(input.to_owned()),
        expect,
    }
}

fn bin(name: &'static str, input: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        vsn: "2.0.0",
        joined: true,
        input: Input::Binary(input),
        expect,
    }
}

fn push(event: &str, payload: Value) -> String {
    json!(["1", "r1", ROOM, event, payload]).to_string()
}

fn join_with(token: &str, config: Value) -> String {
    json!(["9", "r1", "realtime:other", "phx_join", {"config": config, "access_token": token}])
        .to_string()
}

fn cases(server: &Server) -> Vec<Case> {
    let s = SECRET;
    let forged = sign(
        json!({"role": "anon", "exp": now() + 600}),
        "not-the-secret",
    );
    let expired = sign(json!({"role": "anon", "exp": now() - 30}), s);
    let no_role = sign(json!({"exp": now() + 600}), s);
    let no_exp = sign(json!({"role": "anon"}), s);
    let string_iat = sign(
        json!({"role": "anon", "exp": now() + 600, "iat": "yesterday"}),
        s,
    );
    let anon = server.token("anon");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    vec![
        // Frames that are not messages at all: logged and ignored.
        text("not json", "garbage", Expect::Silent),
        text("empty text", "", Expect::Silent),
        text("empty array", "[]", Expect::Silent),
        text("wrong arity", r#"[1,2,3]"#, Expect::Silent),
        text(
            "object on v2",
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#,
            Expect::Silent,
        ),
        text("number topic", r#"[null,"r1",5,"e",{}]"#, Expect::Silent),
        text(
            "number event",
            r#"[null,"r1","realtime:room",7,{}]"#,
            Expect::Silent,
        ),
        text(
            "object join_ref",
            r#"[{},"r1","realtime:room","broadcast",{}]"#,
            Expect::Silent,
        ),
        text(
            "array ref",
            r#"[null,[],"realtime:room","broadcast",{}]"#,
            Expect::Silent,
        ),
        text(
            "truncated json",
            r#"["1","r1","realtime:room","broadcast",{"type":"#,
            Expect::Silent,
        ),
        text("deeply nested", &deep, Expect::Silent),
        text("json scalar", "42", Expect::Silent),
        text("null frame", "null", Expect::Silent),
        v1(
            "v1 array frame",
            r#"["1","r1","phoenix","heartbeat",{}]"#,
            Expect::Silent,
        ),
        v1(
            "v1 missing event",
            r#"{"topic":"phoenix","payload":{},"ref":"r1"}"#,
            Expect::Silent,
        ),
        v1(
            "v1 missing topic",
            r#"{"event":"heartbeat","payload":{},"ref":"r1"}"#,
            Expect::Silent,
        ),
        Case {
            name: "binary on v1",
            vsn: "1.0.0",
            joined: true,
            input: Input::Binary(kind3("1", "r1", ROOM, "e", 1, b"{}")),
            expect: Expect::Silent,
        },
        // Binary frames with lying or unknown headers.
        bin("binary empty", vec![], Expect::Silent),
        bin(
            "binary kind 0",
            vec![0, 1, 1, 1, b'a', b'b', b'c'],
            Expect::Silent,
        ),
        bin(
            "binary kind 4 from client",
            vec![4, 1, 1, 0, 1, b't', b'e', b'{', b'}'],
            Expect::Silent,
        ),
        bin("binary truncated header", vec![3, 1, 1], Expect::Silent),
        bin(
            "binary lying lengths",
            vec![3, 200, 200, 200, 200, 200, 1, b'x'],
            Expect::Silent,
        ),
        bin(
            "binary bad encoding",
            vec![3, 0, 0, 0, 0, 0, 9],
            Expect::Silent,
        ),
        bin(
            "binary non-utf8 topic",
            vec![3, 0, 0, 2, 0, 0, 1, 0xff, 0xfe],
            Expect::Silent,
        ),
        bin(
            "binary to unjoined topic",
            kind3("1", "r1", "realtime:elsewhere", "e", 1, b"{}"),
            Expect::Error("unmatched topic"),
        ),
        bin(
            "binary invalid json payload",
            kind3("1", "r1", ROOM, "e", 1, b"{nope"),
            Expect::Error("payload is not valid JSON"),
        ),
        bin(
            "binary oversize payload",
            kind3("1", "r1", ROOM, "e", 0, &vec![7u8; 5000]),
            Expect::Error("payload_size_exceeded"),
        ),
        // Messages that parse but make no sense.
        text(
            "push to unjoined topic",
            &json!(["1", "r1", "realtime:elsewhere", "broadcast", {"event": "e", "payload": {}}])
                .to_string(),
            Expect::Error("unmatched topic"),
        ),
        text(
            "unknown event",
            &push("frobnicate", json!({})),
            Expect::Error("unknown event: frobnicate"),
        ),
        text(
            "unknown phoenix event",
            r#"[null,"r1","phoenix","reboot",{}]"#,
            Expect::Error("unknown event"),
        ),
        text(
            "broadcast payload is a string",
            &push("broadcast", json!("hello")),
            Expect::Error("must be an object"),
        ),
        text(
            "broadcast without event",
            &push("broadcast", json!({"type": "broadcast", "payload": {}})),
            Expect::Error("needs an `event`"),
        ),
        text(
            "broadcast event not a string",
            &push("broadcast", json!({"event": 5, "payload": {}})),
            Expect::Error("must be an object"),
        ),
        text(
            "oversize broadcast",
            &push(
                "broadcast",
                json!({"event": "e", "payload": {"x": "y".repeat(5000)}}),
            ),
            Expect::Error("payload_size_exceeded"),
        ),
        text(
            "leave of a topic never joined",
            &json!(["1", "r1", "realtime:never", "phx_leave", {}]).to_string(),
            Expect::Ok,
        ),
        text(
            "presence on unjoined topic",
            &json!(["1", "r1", "realtime:never", "presence", {"event": "track", "payload": {}}])
                .to_string(),
            Expect::Error("unmatched topic"),
        ),
        // Joins that must be refused with the documented reason.
        text(
            "join without prefix",
            &json!(["9", "r1", "room", "phx_join", {}]).to_string(),
            Expect::Error("unmatched topic"),
        ),
        text(
            "join of realtime: alone",
            &json!(["9", "r1", "realtime:", "phx_join", {}]).to_string(),
            Expect::Error("TopicNameRequired: You must provide a topic name"),
        ),
        text(
            "join with malformed token",
            &join_with("not.a.jwt", json!({})),
            Expect::Error("MalformedJWT: The token provided is not a valid JWT"),
        ),
        text(
            "join with forged token",
            &join_with(&forged, json!({})),
            Expect::Error("JwtSignatureError: Failed to validate JWT signature"),
        ),
        text(
            "join with expired token",
            &join_with(&expired, json!({})),
            Expect::Error("InvalidJWTToken: Token has expired"),
        ),
        text(
            "join with token without role",
            &join_with(&no_role, json!({})),
            Expect::Error("InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        ),
        text(
            "join with token without exp",
            &join_with(&no_exp, json!({})),
            Expect::Error("InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        ),
        text(
            "join with non-numeric iat",
            &join_with(&string_iat, json!({})),
            Expect::Error("MalformedJWT"),
        ),
        text(
            "anon joins a private channel",
            &join_with(&anon, json!({"private": true})),
            Expect::Error(
                "Unauthorized: You do not have permissions to read from this Channel topic: other",
            ),
        ),
        // Lenient where the reference server is lenient: bad config values fall back to defaults.
        text(
            "join payload is an array",
            &json!(["9", "r1", "realtime:other", "phx_join", [1, 2]]).to_string(),
            Expect::Ok,
        ),
        text(
            "join config of wrong types",
            &join_with(
                &anon,
                json!({"broadcast": "yes", "presence": 3, "private": "maybe"}),
            ),
            Expect::Ok,
        ),
        // Token refresh with bad tokens closes only that channel.
        text(
            "access_token refresh with garbage",
            &push("access_token", json!({"access_token": "garbage"})),
            Expect::SystemClose("The token provided is not a valid JWT"),
        ),
        text(
            "access_token refresh with expired token",
            &push("access_token", json!({"access_token": expired})),
            Expect::SystemClose("Token has expired"),
        ),
        text(
            "access_token refresh with forged token",
            &push("access_token", json!({"access_token": forged})),
            Expect::SystemClose("Failed to validate JWT signature"),
        ),
    ]
}

async fn run_case(server: &Server, case: &Case) {
    let mut c = server.client(case.vsn).await;
    if case.joined {
        let r = "j1";
        c.push(
            Some(r),
            r,
            ROOM,
            "phx_join",
            json!({"config": {"broadcast": {"ack": true}}}),
        )
        .await;
        let p = c.reply(r).await;
        assert_eq!(p["status"], "ok", "{}: setup join failed", case.name);
    }
    match &case.input {
        Input::Text(t) => c.send_text(t).await,
        Input::Binary(b) => c.send_binary(b.clone()).await,
    }
    match case.expect {
        Expect::Silent => c.assert_quiet_and_alive().await,
        Expect::Ok => {
            let f = c.next_text().await;
            assert_eq!(f.event, "phx_reply", "{}: {f:?}", case.name);
            assert_eq!(f.payload["status"], "ok", "{}: {f:?}", case.name);
            c.assert_quiet_and_alive().await;
        }
        Expect::Error(reason) => {
            let f = c.next_text().await;
            assert_eq!(f.event, "phx_reply", "{}: {f:?}", case.name);
            assert_eq!(f.ref_, json!("r1"), "{}: {f:?}", case.name);
            assert_eq!(f.payload["status"], "error", "{}: {f:?}", case.name);
            let got = f.payload["response"]["reason"].as_str().unwrap_or_default();
            assert!(
                got.contains(reason),
                "{}: reason {got:?} lacks {reason:?}",
                case.name
            );
            c.assert_quiet_and_alive().await;
        }
        Expect::SystemClose(message) => {
            let f = c.next_text().await;
            assert_eq!(f.event, "system", "{}: {f:?}", case.name);
            assert_eq!(f.payload["status"], "error", "{}: {f:?}", case.name);
            let got = f.payload["message"].as_str().unwrap_or_default();
            assert!(
                got.contains(message),
                "{}: message {got:?} lacks {message:?}",
                case.name
            );
            let f = c.next_text().await;
            assert_eq!(f.event, "phx_close", "{}: {f:?}", case.name);
            assert_eq!(
                f.ref_,
                json!("j1"),
                "{}: phx_close must carry the join ref",
                case.name
            );
            c.assert_quiet_and_alive().await;
        }
    }
}

#[tokio::test]
async fn hostile_frames_get_documented_answers_and_spare_bystanders() {
    let limits = Limits {
        max_payload_bytes: 1024,
        ..Limits::default()
    };
    let server = Server::start(limits).await;
    let mut bystander = server.client("2.0.0").await;
    bystander.join_ok("realtime:watch", json!({})).await;
    let all = cases(&server);
    assert!(
        all.len() >= 40,
        "the suite must hold at least 40 cases, has {}",
        all.len()
    );
    for (i, case) in all.iter().enumerate() {
        run_case(&server, case).await;
        assert_eq!(
            server
                .http_broadcast("watch", "alive", json!({"after": case.name}))
                .await,
            202
        );
        let f = bystander.next_text().await;
        assert_eq!(
            f.event, "broadcast",
            "bystander after case {i} ({}): {f:?}",
            case.name
        );
        assert_eq!(f.payload["payload"]["after"], case.name);
    }
}

#[tokio::test]
async fn frame_over_the_limit_closes_with_1009() {
    let server = Server::start(Limits {
        max_frame_bytes: 16 * 1024,
        ..Limits::default()
    })
    .await;
    let mut bystander = server.client("2.0.0").await;
    bystander.join_ok("realtime:watch", json!({})).await;
    let mut c = server.client("2.0.0").await;
    c.send_text(&"x".repeat(64 * 1024)).await;
    assert_eq!(c.expect_close().await, Some(1009));
    assert_eq!(
        server.http_broadcast("watch", "alive", json!({})).await,
        202
    );
    assert_eq!(bystander.next_text().await.event, "broadcast");
}

#[tokio::test]
async fn join_flood_is_refused_and_the_socket_closed() {
    let server = Server::start(Limits {
        max_joins_per_second: 5,
        ..Limits::default()
    })
    .await;
    let mut c = server.client("2.0.0").await;
    for i in 0..5 {
        c.join_ok(&format!("realtime:flood{i}"), json!({})).await;
    }
    let p = c.join("realtime:flood5", json!({})).await;
    assert_eq!(
        p["response"]["reason"],
        "ClientJoinRateLimitReached: Too many joins per second"
    );
    assert_eq!(c.expect_close().await, Some(herald_core::close::JOIN_FLOOD));
}

#[tokio::test]
async fn too_many_channels_refuses_the_extra_join_only() {
    let server = Server::start(Limits {
        max_channels_per_connection: 3,
        ..Limits::default()
    })
    .await;
    let mut c = server.client("2.0.0").await;
    for i in 0..3 {
        c.join_ok(&format!("realtime:c{i}"), json!({})).await;
    }
    let p = c.join("realtime:c3", json!({})).await;
    assert_eq!(
        p["response"]["reason"],
        "ChannelRateLimitReached: Too many channels"
    );
    c.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn message_flood_closes_the_channel_with_a_system_error() {
    let server = Server::start(Limits {
        max_messages_per_second: 5,
        ..Limits::default()
    })
    .await;
    let mut c = server.client("2.0.0").await;
    let jr = c.join_ok(ROOM, json!({"broadcast": {"ack": true}})).await;
    for i in 0..5 {
        let r = format!("m{i}");
        c.push(
            Some(&jr),
            &r,
            ROOM,
            "broadcast",
            json!({"event": "e", "payload": {}}),
        )
        .await;
        assert_eq!(c.reply(&r).await["status"], "ok");
    }
    c.push(
        Some(&jr),
        "m5",
        ROOM,
        "broadcast",
        json!({"event": "e", "payload": {}}),
    )
    .await;
    let f = c.next_text().await;
    assert_eq!(
        (f.event.as_str(), f.payload["message"].as_str()),
        ("system", Some("Too many messages per second"))
    );
    assert_eq!(c.next_text().await.event, "phx_close");
    c.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn refused_handshakes_carry_the_known_errors() {
    let server = Server::default().await;
    let addr = server.addr;
    let (status, body) =
        refused_handshake(&format!("ws://{addr}/socket/websocket?vsn=2.0.0")).await;
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"API key is missing"}"#)
    );
    let bad = sign(json!({"role": "anon", "exp": now() + 60}), "nope");
    let (status, body) = refused_handshake(&server.url(&bad, "2.0.0")).await;
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"Failed to validate JWT signature"}"#)
    );
    let (status, _) = refused_handshake(&server.url(&server.token("anon"), "3.0.0")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn connection_limit_refuses_with_429() {
    let server = Server::start(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let _a = server.client("2.0.0").await;
    let mut b = server.client("2.0.0").await;
    let (status, body) = refused_handshake(&server.url(&server.token("anon"), "2.0.0")).await;
    assert_eq!(
        (status, body.as_str()),
        (429, r#"{"error":"Too many connected users"}"#)
    );
    b.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_others_keep_receiving() {
    let server = Server::start(Limits {
        outbound_queue_frames: 8,
        max_payload_bytes: 200_000,
        ..Limits::default()
    })
    .await;
    let mut fast = server.client("2.0.0").await;
    fast.join_ok("realtime:big", json!({})).await;
    let mut slow = server.client("2.0.0").await;
    slow.join_ok("realtime:big", json!({})).await;
    // `slow` stops reading. Publish until the socket buffers and its queue are full.
    let payload = json!({"blob": "z".repeat(150_000)});
    let key = herald_core::ChannelKey::new("big", false);
    let hub = server.running.as_ref().unwrap().state.hub.clone();
    let mut sent = 0;
    while hub.subscriber_count(&key) == 2 && sent < 400 {
        assert_eq!(
            server.http_broadcast("big", "e", payload.clone()).await,
            202
        );
        let f = fast.next_text().await;
        assert_eq!(f.event, "broadcast", "fast client, message {sent}");
        sent += 1;
    }
    // The slow session leaves the channel once its close is under way (bounded by the close timeout).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while hub.subscriber_count(&key) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow consumer was never disconnected ({sent} sent)"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Once it reads again, the slow client finds its connection ended.
    loop {
        match slow.next().await {
            Got::Closed(code) => {
                assert!(
                    code.is_none() || code == Some(herald_core::close::SLOW_CONSUMER),
                    "close code {code:?}"
                );
                break;
            }
            _ => continue,
        }
    }
}

/// The response to `request`, read to its end (the server closes after a refusal).
async fn answer_to(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the answer within the deadline")?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

#[tokio::test]
async fn an_sse_request_head_over_16_kib_is_answered_431_not_reset() {
    let server = Server::default().await;
    let mut request = b"GET /sse?topic=a HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..40 {
        request.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "f".repeat(500)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answer = answer_to(server.addr, &request)
        .await
        .expect("an answer, not a reset");
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{answer}"
    );
    assert!(
        answer.contains("request head larger than 16 KiB"),
        "{answer}"
    );
    let mut many = b"GET /sse?topic=a HTTP/1.1\r\n".to_vec();
    for i in 0..70 {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let answer = answer_to(server.addr, &many).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("more than 64 request headers"), "{answer}");
}

#[tokio::test]
async fn a_batch_that_is_not_json_by_its_content_type_is_415() {
    let server = Server::default().await;
    let token = format!("Bearer {}", server.token("service_role"));
    let body = json!({"messages": [{"topic": "room", "event": "e", "payload": {}}]}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("Authorization", token.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        let (status, answer) = http_request(
            server.addr,
            "POST",
            "/api/broadcast",
            &headers,
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        assert!(answer.contains("application/json"), "{answer}");
    }
    let headers = [
        ("Authorization", token.as_str()),
        ("Content-Type", "application/json; charset=utf-8"),
    ];
    let (status, answer) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
}

/// Sends a request head (and `body_start` of its body) and returns the answer, read to its end,
/// while the rest of the declared body is never sent.
async fn answer_without_body(addr: std::net::SocketAddr, head: &str, body_start: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body_start).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut out))
        .await
        .expect("an answer before the body is complete")
        .unwrap();
    String::from_utf8_lossy(&out[..n]).to_string()
}

#[tokio::test]
async fn a_body_is_not_read_before_its_token_nor_past_its_limit_nor_for_ever() {
    let mut config = herald_server::ServerConfig::local(SECRET);
    config.body_read_timeout = std::time::Duration::from_secs(1);
    let server = Server::with_config(config, None).await;
    let big = 16 * 1024 * 1024;
    // No token: refused at once, whatever the body would have been.
    let answer = answer_without_body(
        server.addr,
        &format!("POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n\r\n"),
        b"{",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let token = server.token("service_role");
    // A declared length over the limit: 413 before a byte of the body is read.
    let answer = answer_without_body(
        server.addr,
        &format!("POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", big + 1),
        b"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 16777216 bytes"), "{answer}");
    // A body that never finishes: 408 once the body timeout has passed.
    for path in ["/api/broadcast", "/api/broadcast/room/events/chat"] {
        let answer = answer_without_body(
            server.addr,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"),
            b"{\"messages\":",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    }
    // The node serves on.
    assert_eq!(server.http_broadcast("room", "chat", json!({})).await, 202);
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_after_the_head_timeout() {
    use tokio::io::AsyncReadExt;
    let mut config = herald_server::ServerConfig::local(SECRET);
    config.header_read_timeout = std::time::Duration::from_secs(1);
    let server = Server::with_config(config, None).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("the server closes the silent connection within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // A client that speaks is served as ever.
    assert_eq!(server.http_broadcast("room", "chat", json!({})).await, 202);
}

#[tokio::test]
async fn an_anonymous_http_flood_does_not_starve_service_role_publishes() {
    let server = Server::start(Limits {
        max_http_messages_per_second: 2,
        ..Limits::default()
    })
    .await;
    let publish = |token: String| {
        let addr = server.addr;
        async move {
            let auth = format!("Bearer {token}");
            // Two messages: a whole bucket, which takes a second to refill.
            let m = json!({"topic": "room", "event": "e", "payload": {}});
            let body = json!({ "messages": [m, m] }).to_string();
            http_request(
                addr,
                "POST",
                "/api/broadcast",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .await
        }
    };
    // Anonymous callers empty their bucket, and the next anonymous batch is refused...
    assert_eq!(publish(server.token("anon")).await.0, 202);
    let (status, body) = publish(server.token("anon")).await;
    assert_eq!(status, 429, "{body}");
    // ...while the service role's bucket is untouched.
    let (status, body) = publish(server.token("service_role")).await;
    assert_eq!(status, 202, "{body}");
}

/// Opens a WebSocket by hand on a raw TCP stream and returns it past the 101 response.
async fn raw_websocket(server: &Server) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /socket/websocket?apikey={}&vsn=2.0.0 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.token("anon"),
        server.addr
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "handshake cut short");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Writes `bytes` while reading what the server sends, until it closes; returns what was read
/// before the end, and whether the end was a reset.
async fn write_while_reading(s: tokio::net::TcpStream, bytes: Vec<u8>) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rx, mut tx) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = tx.write_all(&bytes).await;
        tx
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let reset = loop {
        match tokio::time::timeout(DEADLINE, rx.read(&mut buf)).await {
            Ok(Ok(0)) => break false,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break true,
            Err(_) => panic!("the server neither closed nor answered"),
        }
    };
    let _ = writer.await;
    (got, reset)
}

#[tokio::test]
async fn a_frame_twenty_times_the_limit_still_gets_its_1009() {
    // The server stops reading at the frame's header while the client goes on sending megabytes.
    // The close frame must reach the client all the same, and the connection end without a reset.
    let server = Server::default().await;
    let s = raw_websocket(&server).await;
    let len: u64 = 20 * 1024 * 1024;
    // A masked text frame (mask key 0, so the payload goes as is) with a 64-bit length.
    let mut frame = vec![0x81, 0xFF];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.resize(frame.len() + len as usize, b'x');
    let (got, reset) = write_while_reading(s, frame).await;
    // An unmasked close frame whose code is 1009.
    let close = got
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2..4] == 1009u16.to_be_bytes());
    assert!(close, "no close 1009 among {} bytes", got.len());
    assert!(!reset, "the connection ended with a reset");
}

/// A masked client text frame (mask key 0).
fn client_text_frame(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut f = vec![0x81];
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(text.as_bytes());
    f
}

#[tokio::test]
async fn a_pipelining_join_flood_still_gets_its_4029() {
    let server = Server::start(Limits {
        max_joins_per_second: 5,
        ..Limits::default()
    })
    .await;
    let s = raw_websocket(&server).await;
    // Thousands of joins in one go, without waiting for replies: most arrive after the close.
    let mut burst = Vec::new();
    for i in 0..20_000 {
        let join = json!([i.to_string(), i.to_string(), format!("realtime:flood{i}"), "phx_join", {"config": {}}]);
        burst.extend(client_text_frame(&join.to_string()));
    }
    let (got, reset) = write_while_reading(s, burst).await;
    let code = herald_core::close::JOIN_FLOOD.to_be_bytes();
    let close = got.windows(4).any(|w| w[0] == 0x88 && w[2..4] == code);
    assert!(
        close,
        "no close {} among {} bytes",
        herald_core::close::JOIN_FLOOD,
        got.len()
    );
    assert!(!reset, "the connection ended with a reset");
}

#[tokio::test]
async fn a_single_message_declared_over_the_limit_is_413_before_its_body() {
    let server = Server::default().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/broadcast/room/events/e HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        server.token("service_role")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // No body byte is sent: the answer must come from the declared length alone.
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut answer))
        .await
        .expect("an answer before any body byte")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("Payload size exceeds the limit"), "{text}");
}
