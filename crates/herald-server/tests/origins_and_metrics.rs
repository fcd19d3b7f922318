//! What a page of another site may do: under `cors_origins = ["*"]` it may call Herald but never with
//! the user's credentials (so it cannot read a cookie-authenticated private stream), a listed origin
//! may; `/dev/token` gives development tokens to Herald's own pages only; `/metrics` asks for its
//! token when one is configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_server::ServerConfig;

/// The response, lower-cased: the whole of it, or only its head for an SSE stream, which does not
/// end.
async fn raw_response(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    if !request.starts_with("GET /sse") {
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        return String::from_utf8_lossy(&out).to_ascii_lowercase();
    }
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the stream ended before its head");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

fn head(response: &str) -> &str {
    response.split("\r\n\r\n").next().unwrap_or_default()
}

async fn server_with_origins(origins: &[&str]) -> Server {
    let mut config = ServerConfig::local(SECRET);
    config.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect();
    Server::with_config(config, None).await
}

#[tokio::test]
async fn under_a_wildcard_no_origin_gets_credentials_a_listed_one_does() {
    let open = server_with_origins(&["*"]).await;
    let token = open.token("authenticated");
    // The SSE stream (its own HTTP/1 path) and the HTTP API (the router's layer) answer alike.
    for request in [
        format!(
            "GET /sse?topic=c&private=true HTTP/1.0\r\nOrigin: https://evil.example\r\nCookie: herald_token={token}\r\n\r\n"
        ),
        "GET /api/channels HTTP/1.0\r\nOrigin: https://evil.example\r\n\r\n".to_owned(),
    ] {
        let response = raw_response(open.addr, &request).await;
        let head = head(&response);
        assert!(
            head.contains("access-control-allow-origin: https://evil.example"),
            "{head}"
        );
        assert!(!head.contains("access-control-allow-credentials"), "{head}");
    }
    let listed = server_with_origins(&["https://app.example"]).await;
    for request in [
        "GET /sse?topic=c HTTP/1.0\r\nOrigin: https://app.example\r\n\r\n",
        "GET /api/channels HTTP/1.0\r\nOrigin: https://app.example\r\n\r\n",
    ] {
        let response = raw_response(listed.addr, request).await;
        let head = head(&response);
        assert!(
            head.contains("access-control-allow-origin: https://app.example"),
            "{head}"
        );
        assert!(
            head.contains("access-control-allow-credentials: true"),
            "{head}"
        );
    }
    // An origin that is not listed gets no CORS headers at all.
    let response = raw_response(
        listed.addr,
        "GET /api/channels HTTP/1.0\r\nOrigin: https://evil.example\r\n\r\n",
    )
    .await;
    assert!(
        !head(&response).contains("access-control-allow-origin"),
        "{response}"
    );
}

#[tokio::test]
async fn development_tokens_go_to_the_servers_own_pages_only() {
    let server = Server::default().await;
    let host = server.addr.to_string();
    let own = raw_response(
        server.addr,
        &format!("GET /dev/token HTTP/1.0\r\nHost: {host}\r\nSec-Fetch-Site: same-origin\r\n\r\n"),
    )
    .await;
    assert!(
        own.starts_with("http/1.0 200") || own.starts_with("http/1.1 200"),
        "{own}"
    );
    assert!(own.contains("\"token\""), "{own}");
    for cross in [
        format!("GET /dev/token HTTP/1.0\r\nHost: {host}\r\nOrigin: https://evil.example\r\n\r\n"),
        format!("GET /dev/token HTTP/1.0\r\nHost: {host}\r\nSec-Fetch-Site: cross-site\r\n\r\n"),
    ] {
        let response = raw_response(server.addr, &cross).await;
        assert!(response.contains(" 403 "), "{response}");
        assert!(!response.contains("\"token\""), "{response}");
    }
}

#[tokio::test]
async fn metrics_ask_for_their_token_when_one_is_set() {
    let mut config = ServerConfig::local(SECRET);
    config.metrics_token = Some("scrape-me".to_owned());
    let server = Server::with_config(config, None).await;
    let (status, body) = http_request(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("metrics_token"), "{body}");
    let (status, _) = http_request(
        server.addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer wrong")],
        b"",
    )
    .await;
    assert_eq!(status, 401);
    // The right token passes the check (this test server has no recorder installed: 404).
    let (status, body) = http_request(
        server.addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer scrape-me")],
        b"",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics recorder not installed"), "{body}");
}

#[tokio::test]
async fn a_cookie_stands_for_the_user_only_on_requests_of_its_own_site() {
    let server = server_with_origins(&["*"]).await;
    let token = server.token("authenticated");
    let host = server.addr.to_string();
    let stream = |origin: &str| {
        format!(
            "GET /sse?topic=c&private=true HTTP/1.0\r\nHost: {host}\r\n{origin}Cookie: herald_token={token}\r\n\r\n"
        )
    };
    // Another site's page: the cookie is not taken, so the stream is refused.
    let cross = raw_response(server.addr, &stream("Origin: https://evil.example\r\n")).await;
    assert!(cross.starts_with("http/1.1 401"), "{cross}");
    // The node's own pages, and requests from no page at all, use it.
    let own = raw_response(server.addr, &stream(&format!("Origin: http://{host}\r\n"))).await;
    assert!(own.starts_with("http/1.1 200"), "{own}");
    let plain = raw_response(server.addr, &stream("")).await;
    assert!(plain.starts_with("http/1.1 200"), "{plain}");
}

#[tokio::test]
async fn allowed_origins_decide_which_pages_may_open_sockets_and_streams() {
    let mut config = ServerConfig::local(SECRET);
    config.allowed_origins = vec!["https://app.example".to_owned()];
    let server = Server::with_config(config, None).await;
    let url = server.url(&server.token("anon"), "2.0.0");
    let socket = |origin: Option<&str>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request().unwrap();
        if let Some(o) = origin {
            request.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    match socket(Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(
                body.contains("Origin not allowed: https://evil.example"),
                "{body}"
            );
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(socket(Some("https://app.example")).await.is_ok());
    assert!(socket(None).await.is_ok());
    let token = server.token("anon");
    let sse = |origin: &str| {
        format!("GET /sse?topic=c&apikey={token} HTTP/1.0\r\nOrigin: {origin}\r\n\r\n")
    };
    let refused = raw_response(server.addr, &sse("https://evil.example")).await;
    assert!(refused.starts_with("http/1.1 403"), "{refused}");
    let accepted = raw_response(server.addr, &sse("https://app.example")).await;
    assert!(accepted.starts_with("http/1.1 200"), "{accepted}");
}
