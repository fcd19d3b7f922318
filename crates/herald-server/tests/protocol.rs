//! Protocol semantics with a raw client: heartbeats, joins, leaves, duplicate joins, broadcast with
//! self and ack across serializers, binary frames, token refresh and expiry, idle timeout, the HTTP
//! API, metrics and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_core::Limits;
use serde_json::json;

#[tokio::test]
async fn heartbeat_is_answered_on_both_versions() {
    let server = Server::default().await;
    let mut v2 = server.client("2.0.0").await;
    v2.send_text(r#"[null,"7","phoenix","heartbeat",{}]"#).await;
    let f = v2.next_text().await;
    assert_eq!(
        (
            f.join_ref,
            f.ref_,
            f.topic.as_str(),
            f.event.as_str(),
            f.payload
        ),
        (
            json!(null),
            json!("7"),
            "phoenix",
            "phx_reply",
            json!({"status": "ok", "response": {}})
        )
    );
    let mut v1 = server.client("1.0.0").await;
    v1.send_text(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}"#)
        .await;
    let f = v1.next_text().await;
    assert_eq!(
        (f.ref_, f.payload["status"].clone()),
        (json!(null), json!("ok"))
    );
}

#[tokio::test]
async fn join_echoes_postgres_bindings_and_says_they_are_not_configured() {
    let server = Server::default().await;
    let mut c = server.client("2.0.0").await;
    let bindings = json!([
        {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.1"},
        {"event": "*", "schema": "public"}
    ]);
    let p = c
        .join("realtime:pg", json!({"postgres_changes": bindings}))
        .await;
    assert_eq!(p["status"], "ok");
    let echoed = p["response"]["postgres_changes"].as_array().unwrap();
    assert_eq!(echoed.len(), 2);
    for (e, b) in echoed.iter().zip(bindings.as_array().unwrap()) {
        for k in ["event", "schema", "table", "filter"] {
            assert_eq!(e.get(k), b.get(k));
        }
        assert!(e["id"].is_u64());
    }
    let f = c.next_text().await;
    assert_eq!(f.event, "system");
    assert_eq!(f.payload["extension"], "postgres_changes");
    assert_eq!(f.payload["status"], "error");
    // The channel stays open for broadcasts.
    c.assert_quiet_and_alive().await;
    assert_eq!(
        server
            .http_broadcast("pg", "e", json!({"still": "open"}))
            .await,
        202
    );
    assert_eq!(c.next_text().await.payload["payload"]["still"], "open");
    let p = c.join("realtime:plain", json!({})).await;
    assert_eq!(p["response"], json!({"postgres_changes": []}));
}

#[tokio::test]
async fn leave_replies_then_closes_and_stops_delivery() {
    let server = Server::default().await;
    let mut c = server.client("2.0.0").await;
    let jr = c.join_ok("realtime:room", json!({})).await;
    c.push(Some(&jr), "9", "realtime:room", "phx_leave", json!({}))
        .await;
    assert_eq!(c.reply("9").await["status"], "ok");
    let f = c.next_text().await;
    assert_eq!(
        (f.event.as_str(), f.join_ref.clone(), f.ref_.clone()),
        ("phx_close", json!(jr), json!(jr))
    );
    assert_eq!(server.http_broadcast("room", "e", json!({})).await, 202);
    c.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn duplicate_join_closes_the_old_join_and_accepts_the_new() {
    let server = Server::default().await;
    let mut c = server.client("2.0.0").await;
    let first = c.join_ok("realtime:room", json!({})).await;
    c.push(
        Some("50"),
        "50",
        "realtime:room",
        "phx_join",
        json!({"config": {}}),
    )
    .await;
    let f = c.next_text().await;
    assert_eq!(
        (f.event.as_str(), f.ref_.clone()),
        ("phx_close", json!(first))
    );
    assert_eq!(c.reply("50").await["status"], "ok");
    assert_eq!(
        server.http_broadcast("room", "e", json!({"n": 1})).await,
        202
    );
    assert_eq!(c.next_text().await.payload["payload"]["n"], 1);
    c.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn broadcast_honours_self_and_ack_across_serializers() {
    let server = Server::default().await;
    let mut sender = server.client("2.0.0").await;
    let jr = sender
        .join_ok(
            "realtime:r",
            json!({"broadcast": {"self": true, "ack": true}}),
        )
        .await;
    let mut v1 = server.client("1.0.0").await;
    v1.join_ok("realtime:r", json!({})).await;
    let mut quiet = server.client("2.0.0").await;
    let qjr = quiet
        .join_ok("realtime:r", json!({"broadcast": {"self": false}}))
        .await;

    // Binary kind 3 JSON from a v2 client: v2 subscribers get kind 4, v1 subscribers get JSON text.
    sender
        .send_binary(kind3(
            &jr,
            "11",
            "realtime:r",
            "evt",
            1,
            br#"{"hello":"world"}"#,
        ))
        .await;
    let mut got_reply = false;
    let mut got_self = false;
    for _ in 0..2 {
        match sender.next().await {
            Got::Text(f) => {
                assert_eq!(
                    (f.event.as_str(), f.ref_.clone()),
                    ("phx_reply", json!("11"))
                );
                got_reply = true;
            }
            Got::Binary(b) => {
                assert_eq!(b[0], 4);
                assert!(b.ends_with(br#"{"hello":"world"}"#));
                got_self = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(got_reply && got_self);
    let f = v1.next_text().await;
    assert_eq!(
        f.payload,
        json!({"type": "broadcast", "event": "evt", "payload": {"hello": "world"}})
    );
    assert!(matches!(quiet.next().await, Got::Binary(_)));

    // A text broadcast from v1 reaches v2 subscribers as text; quiet (self false) does not echo its own.
    quiet
        .push(
            Some(&qjr),
            "12",
            "realtime:r",
            "broadcast",
            json!({"type": "broadcast", "event": "t", "payload": [1, 2]}),
        )
        .await;
    let f = sender.next_text().await;
    assert_eq!(
        f.payload,
        json!({"type": "broadcast", "event": "t", "payload": [1, 2]})
    );
    assert_eq!(v1.next_text().await.payload["payload"], json!([1, 2]));
    quiet.assert_quiet_and_alive().await;

    // Raw bytes go to v2 subscribers only.
    sender
        .send_binary(kind3(&jr, "13", "realtime:r", "bin", 0, &[9, 8, 7]))
        .await;
    assert!(
        matches!(quiet.next().await, Got::Binary(b) if b.ends_with(&[b'b', b'i', b'n', 9, 8, 7]))
    );
    v1.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn http_api_single_and_batch() {
    let server = Server::default().await;
    let mut v2 = server.client("2.0.0").await;
    v2.join_ok("realtime:h", json!({})).await;
    let mut v1 = server.client("1.0.0").await;
    v1.join_ok("realtime:h", json!({})).await;
    let auth = format!("Bearer {}", server.token("service_role"));
    for prefix in ["/api", "/realtime/v1/api"] {
        let (status, _) = http_request(
            server.addr,
            "POST",
            &format!("{prefix}/broadcast/h/events/single"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            br#"{"k":1}"#,
        )
        .await;
        assert_eq!(status, 202);
        assert!(matches!(v2.next().await, Got::Binary(b) if b.ends_with(br#"{"k":1}"#)));
        assert_eq!(v1.next_text().await.payload["event"], "single");
    }
    let (status, _) = http_request(
        server.addr,
        "POST",
        "/api/broadcast/h/events/raw",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        &[1, 2, 3],
    )
    .await;
    assert_eq!(status, 202);
    assert!(matches!(v2.next().await, Got::Binary(b) if b.ends_with(&[1, 2, 3])));
    v1.assert_quiet_and_alive().await;
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/api/broadcast/h/events/x",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        b"hi",
    )
    .await;
    assert_eq!(status, 415);
    assert!(body.contains("Unsupported Media Type"));
    // Batch with ids: text frames with meta.id.
    let body = json!({"messages": [
        {"topic": "h", "event": "a", "payload": {"n": 1}, "id": "m-1"},
        {"topic": "h", "event": "b", "payload": {"n": 2}}
    ]});
    let (status, _) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &[
            ("apikey", &server.token("anon")),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let f = v2.next_text().await;
    assert_eq!(
        f.payload,
        json!({"type": "broadcast", "event": "a", "payload": {"n": 1}, "meta": {"id": "m-1"}})
    );
    assert_eq!(v2.next_text().await.payload["event"], "b");
    // Errors.
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &[],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"message":"Unauthorized"}"#)
    );
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{\"messages\":[{\"topic\":\"h\"}]}",
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("errors"));
    let private =
        json!({"messages": [{"topic": "h", "event": "a", "payload": {}, "private": true}]});
    let (status, _) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &[
            ("apikey", &server.token("anon")),
            ("Content-Type", "application/json"),
        ],
        private.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn expiring_token_closes_only_its_channel_and_refresh_extends_it() {
    let server = Server::default().await;
    let mut c = server.client("2.0.0").await;
    let short = server.auth.mint("authenticated", Some("u"), 2).unwrap();
    let long = server.auth.mint("authenticated", Some("u"), 3600).unwrap();
    c.push(
        Some("1"),
        "1",
        "realtime:a",
        "phx_join",
        json!({"config": {}, "access_token": short}),
    )
    .await;
    assert_eq!(c.reply("1").await["status"], "ok");
    c.push(
        Some("2"),
        "2",
        "realtime:b",
        "phx_join",
        json!({"config": {}, "access_token": short}),
    )
    .await;
    assert_eq!(c.reply("2").await["status"], "ok");
    // Refresh b with a long-lived token; a keeps the short one.
    c.push(
        Some("2"),
        "3",
        "realtime:b",
        "access_token",
        json!({"access_token": long}),
    )
    .await;
    let f = c.next_text().await;
    assert_eq!(
        (f.topic.as_str(), f.event.as_str()),
        ("realtime:a", "system")
    );
    assert!(
        f.payload["message"]
            .as_str()
            .unwrap()
            .starts_with("Token has expired")
    );
    assert_eq!(f.payload["channel"], "a");
    let f = c.next_text().await;
    assert_eq!(
        (f.topic.as_str(), f.event.as_str(), f.ref_.clone()),
        ("realtime:a", "phx_close", json!("1"))
    );
    assert_eq!(
        server
            .http_broadcast("b", "e", json!({"alive": true}))
            .await,
        202
    );
    let f = c.next_text().await;
    assert_eq!(
        (f.topic.as_str(), f.payload["payload"]["alive"].clone()),
        ("realtime:b", json!(true))
    );
}

#[tokio::test]
async fn refreshing_to_anon_loses_a_private_channel() {
    let server = Server::default().await;
    let mut c = server.client("2.0.0").await;
    let user = server.token("authenticated");
    c.push(
        Some("1"),
        "1",
        "realtime:p",
        "phx_join",
        json!({"config": {"private": true}, "access_token": user}),
    )
    .await;
    assert_eq!(c.reply("1").await["status"], "ok");
    let anon = server.auth.mint("anon", None, 600).unwrap();
    c.push(
        Some("1"),
        "2",
        "realtime:p",
        "access_token",
        json!({"access_token": anon}),
    )
    .await;
    let f = c.next_text().await;
    assert_eq!(
        f.payload["message"],
        "You no longer have permission to read from this Channel topic: p"
    );
    assert_eq!(c.next_text().await.event, "phx_close");
}

#[tokio::test]
async fn private_and_public_channels_of_one_name_are_separate() {
    let server = Server::default().await;
    let mut public = server.client("2.0.0").await;
    public.join_ok("realtime:same", json!({})).await;
    let mut private = Client::connect(
        &server.url(&server.token("authenticated"), "2.0.0"),
        "2.0.0",
    )
    .await;
    private
        .join_ok("realtime:same", json!({"private": true}))
        .await;
    assert_eq!(
        server
            .http_broadcast("same", "e", json!({"to": "public"}))
            .await,
        202
    );
    assert_eq!(public.next_text().await.payload["payload"]["to"], "public");
    private.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn silent_client_is_closed_after_the_idle_timeout() {
    let server = Server::start(Limits {
        idle_timeout_secs: 1,
        ..Limits::default()
    })
    .await;
    let mut c = server.client("2.0.0").await;
    c.join_ok("realtime:idle", json!({})).await;
    assert_eq!(
        c.expect_close().await,
        Some(herald_core::close::IDLE_TIMEOUT)
    );
    let key = herald_core::ChannelKey::new("idle", false);
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
async fn shutdown_closes_sockets_with_1001() {
    let mut server = Server::default().await;
    let mut c = server.client("2.0.0").await;
    c.join_ok("realtime:bye", json!({})).await;
    let addr = server.addr;
    server.stop().await;
    assert_eq!(c.expect_close().await, Some(1001));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn three_hundred_messages_arrive_in_order() {
    let server = Server::default().await;
    let mut sender = server.client("2.0.0").await;
    let jr = sender.join_ok("realtime:order", json!({})).await;
    let mut receiver = server.client("1.0.0").await;
    receiver.join_ok("realtime:order", json!({})).await;
    for i in 0..300 {
        sender
            .push(
                Some(&jr),
                &format!("o{i}"),
                "realtime:order",
                "broadcast",
                json!({"event": "n", "payload": {"i": i}}),
            )
            .await;
    }
    for i in 0..300 {
        assert_eq!(receiver.next_text().await.payload["payload"]["i"], i);
    }
}

#[tokio::test]
async fn realtime_v1_path_and_x_api_key_header_work() {
    let server = Server::default().await;
    let url = format!("ws://{}/realtime/v1/websocket?vsn=2.0.0", server.addr);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("x-api-key", server.token("anon").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client::from_ws(ws, "2.0.0");
    c.join_ok("realtime:v1path", json!({})).await;
}

#[tokio::test]
async fn demo_page_and_development_token() {
    let server = Server::default().await;
    let (status, body) = http_request(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(status, 200);
    assert!(body.contains("data-testid=\"connection-status\""));
    let (status, body) = http_request(server.addr, "GET", "/dev/token", &[], b"").await;
    assert_eq!(status, 200);
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        server
            .auth
            .verify(token["token"].as_str().unwrap())
            .unwrap()
            .role,
        "anon"
    );
    let mut config = herald_server::ServerConfig::local(SECRET);
    config.production = true;
    let prod = herald_server::start(config, None).await.unwrap();
    let (status, _) = http_request(prod.addr, "GET", "/dev/token", &[], b"").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metrics_count_connections_joins_and_messages() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // Metric handles bind to the recorder in force when the node's state is built.
    let state = metrics::with_local_recorder(&recorder, || {
        herald_server::AppState::new(
            herald_server::ServerConfig::local(SECRET),
            Some(handle.clone()),
        )
    })
    .unwrap();
    let running = herald_server::serve(state).await.unwrap();
    let auth = herald_core::Authenticator::new(SECRET.as_bytes());
    let url = format!(
        "ws://{}/socket/websocket?apikey={}&vsn=2.0.0",
        running.addr,
        auth.mint("anon", None, 60).unwrap()
    );
    let mut a = Client::connect(&url, "2.0.0").await;
    let mut b = Client::connect(&url, "2.0.0").await;
    let jr = a.join_ok("realtime:m", json!({})).await;
    b.join_ok("realtime:m", json!({})).await;
    a.push(
        Some(&jr),
        "5",
        "realtime:m",
        "broadcast",
        json!({"event": "e", "payload": {}}),
    )
    .await;
    assert_eq!(b.next_text().await.event, "broadcast");
    let (status, text) = http_request(running.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    for line in [
        "herald_connections{transport=\"websocket\"} 2",
        "herald_channels 1",
        "herald_joins_total 2",
        "herald_messages_in_total{transport=\"websocket\"} 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.contains("herald_messages_out_total{transport=\"websocket\"}"),
        "{text}"
    );
}
