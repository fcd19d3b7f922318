//! Fair shares of a node: one client address holds at most `max_connections_per_ip` connections
//! (WebSocket and SSE together; behind a trusted proxy, the address it forwards, and from anyone
//! else `X-Forwarded-For` changes nothing); the node holds at most `max_channels` open channels;
//! and each HTTP caller (role and subject) has its own rate bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use herald_core::Limits;
use herald_server::ServerConfig;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A TCP connection to `addr` from the loopback address `source`.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// A WebSocket handshake from `source`, with an `X-Forwarded-For` header when given: the client,
/// or the refusal's status and body.
async fn handshake(
    server: &Server,
    source: [u8; 4],
    forwarded: Option<&str>,
) -> Result<Client, (u16, String)> {
    let url = server.url(&server.token("anon"), "2.0.0");
    let mut request = url.into_client_request().unwrap();
    if let Some(f) = forwarded {
        request
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_str(f).unwrap());
    }
    let stream = connect_from(source, server.addr).await;
    match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((ws, _)) => Ok(Client::from_ws(ws, "2.0.0")),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        )),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn server(limits: Limits, trusted: &[&str]) -> Server {
    let mut config = ServerConfig::local(SECRET);
    config.limits = limits;
    config.trusted_proxies = trusted
        .iter()
        .map(|t| herald_server::client_addr::parse_proxy(t).unwrap())
        .collect();
    Server::with_config(config, None).await
}

fn per_ip(n: usize) -> Limits {
    Limits {
        max_connections_per_ip: n,
        ..Limits::default()
    }
}

/// Retries `attempt` until it succeeds or the deadline passes (a closed connection's slot is
/// released once the server has noticed the close).
async fn until_accepted(
    server: &Server,
    source: [u8; 4],
    forwarded: Option<&str>,
) -> Result<Client, (u16, String)> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match handshake(server, source, forwarded).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_websockets_and_streams() {
    let server = server(per_ip(3), &[]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(handshake(&server, [127, 0, 0, 1], None).await.unwrap());
    }
    let token = server.token("anon");
    let sse = SseClient::open(server.addr, &format!("/sse?topic=room&apikey={token}"), &[]).await;
    assert_eq!(sse.status, 200);
    // The fourth connection from 127.0.0.1, whatever its transport, is refused, naming the limit.
    let (status, body) = handshake(&server, [127, 0, 0, 1], None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 429);
    assert!(body.contains("max_connections_per_ip is 3"), "{body}");
    let refused =
        SseClient::open(server.addr, &format!("/sse?topic=room&apikey={token}"), &[]).await;
    assert_eq!(refused.status, 429);
    let body = refused.body().await;
    assert!(body.contains("max_connections_per_ip"), "{body}");
    // Another address is not affected, and the connections held keep working.
    let mut other = handshake(&server, [127, 0, 0, 2], None).await.unwrap();
    other.join_ok("realtime:room", json!({})).await;
    held[0].join_ok("realtime:room", json!({})).await;
    // A closed connection gives its place back.
    let mut gone = held.pop().unwrap();
    gone.ws.close(None).await.unwrap();
    drop(gone);
    until_accepted(&server, [127, 0, 0, 1], None).await.unwrap();
}

#[tokio::test]
async fn forwarded_addresses_count_only_through_a_trusted_proxy() {
    // 127.0.0.1 is the proxy: each forwarded client has its own share.
    let proxied = server(per_ip(2), &["127.0.0.1"]).await;
    let _a1 = handshake(&proxied, [127, 0, 0, 1], Some("198.51.100.1"))
        .await
        .unwrap();
    let _a2 = handshake(&proxied, [127, 0, 0, 1], Some("6.6.6.6, 198.51.100.1"))
        .await
        .unwrap();
    let (status, body) = handshake(&proxied, [127, 0, 0, 1], Some("198.51.100.1"))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 429, "{body}");
    let _b = handshake(&proxied, [127, 0, 0, 1], Some("198.51.100.2"))
        .await
        .unwrap();
    // The proxy's own connections without a forwarded address are not capped.
    let mut own = Vec::new();
    for _ in 0..3 {
        own.push(handshake(&proxied, [127, 0, 0, 1], None).await.unwrap());
    }
    // From an untrusted peer, a forged header changes nothing: 127.0.0.2 is capped as itself.
    let _c1 = handshake(&proxied, [127, 0, 0, 2], Some("203.0.113.1"))
        .await
        .unwrap();
    let _c2 = handshake(&proxied, [127, 0, 0, 2], Some("203.0.113.2"))
        .await
        .unwrap();
    let (status, _) = handshake(&proxied, [127, 0, 0, 2], Some("203.0.113.3"))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 429);
    // Without trusted proxies, nobody's header counts.
    let direct = server(per_ip(1), &[]).await;
    let _d = handshake(&direct, [127, 0, 0, 1], Some("198.51.100.1"))
        .await
        .unwrap();
    let (status, _) = handshake(&direct, [127, 0, 0, 1], Some("198.51.100.2"))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 429);
}

#[tokio::test]
async fn the_node_opens_at_most_max_channels_and_existing_ones_stay_joinable() {
    let server = server(
        Limits {
            max_channels: 2,
            ..Limits::default()
        },
        &[],
    )
    .await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("2.0.0").await;
    a.join_ok("realtime:one", json!({})).await;
    b.join_ok("realtime:two", json!({})).await;
    let reply = b.join("realtime:three", json!({})).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(
        reply["response"]["reason"],
        "NodeChannelLimitReached: Too many channels on this node"
    );
    // A channel that is open already takes more subscribers.
    b.join_ok("realtime:one", json!({})).await;
    let token = server.token("anon");
    let sse = SseClient::open(
        server.addr,
        &format!("/sse?topic=three&apikey={token}"),
        &[],
    )
    .await;
    assert_eq!(sse.status, 429);
    let body = sse.body().await;
    assert!(body.contains("max_channels is 2"), "{body}");
    // Both still receive; once `two` is left, `three` may open.
    assert_eq!(
        server.http_broadcast("one", "e", json!({"n": 1})).await,
        202
    );
    for c in [&mut a, &mut b] {
        let f = c.next_text().await;
        assert_eq!(
            (f.topic.as_str(), f.event.as_str()),
            ("realtime:one", "broadcast")
        );
    }
    let r = b.next_ref();
    b.push(None, &r, "realtime:two", "phx_leave", json!({}))
        .await;
    b.reply(&r).await;
    // The leave is answered once the subscription is gone.
    a.join_ok("realtime:three", json!({})).await;
}

#[tokio::test]
async fn one_subject_flooding_the_http_api_leaves_the_others_their_share() {
    let server = Server::start(Limits {
        max_http_messages_per_second: 3,
        ..Limits::default()
    })
    .await;
    let publish = |sub: &'static str| {
        let token = server.auth.mint("authenticated", Some(sub), 3600).unwrap();
        async move {
            let body =
                json!({"messages": [{"topic": "room", "event": "e", "payload": {}}]}).to_string();
            http_request(
                server.addr,
                "POST",
                "/api/broadcast",
                &[
                    ("Authorization", &format!("Bearer {token}")),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .await
            .0
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(publish("alice").await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(publish("bob").await, 202);
    assert_eq!(server.http_broadcast("room", "e", json!({})).await, 202);
}

#[tokio::test]
async fn an_http2_stream_whose_reader_takes_nothing_loses_its_connection_and_slot() {
    let mut config = ServerConfig::local(SECRET);
    config.sse_keepalive = std::time::Duration::from_millis(200);
    config.sse_stall_timeout = std::time::Duration::from_millis(500);
    let server = Server::with_config(config, None).await;
    let state = server.running.as_ref().unwrap().state.clone();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    // A window of 64 bytes that this client never gives back.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(64)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let token = server.token("anon");
    let request = http::Request::get(format!(
        "http://{}/sse?topic=room&apikey={token}",
        server.addr
    ))
    .body(())
    .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        state.connections.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Publishing fills the window; the server then closes the connection.
    let mut canary = server.client("2.0.0").await;
    canary.join_ok("realtime:room", json!({})).await;
    for n in 0..5 {
        assert_eq!(
            server.http_broadcast("room", "e", json!({"n": n})).await,
            202
        );
        assert_eq!(canary.next_text().await.payload["payload"]["n"], n);
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "the stalled connection is still open");
    // Its slot is free again (the canary's is the only one left), and the canary is unharmed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while state.connections.load(std::sync::atomic::Ordering::Relaxed) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's slot was not freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    canary.assert_quiet_and_alive().await;
}
