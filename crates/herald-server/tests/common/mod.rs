//! Test harness: an in-process Herald on an ephemeral port, token minting, and a raw protocol client
//! that waits for frames with a deadline (never sleeps).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_core::{Authenticator, Limits};
use herald_server::{Running, ServerConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const DEADLINE: Duration = Duration::from_secs(5);

pub struct Server {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub auth: Authenticator,
    pub data: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start(limits: Limits) -> Server {
        let mut config = ServerConfig::local(SECRET);
        config.limits = limits;
        Server::with_config(config, None).await
    }

    /// A server whose channels keep history in a fresh directory.
    pub async fn with_history(
        limits: Limits,
        settings: herald_core::history::HistorySettings,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::local(SECRET);
        config.limits = limits;
        config.history = Some(herald_server::HistoryConfig {
            dir: dir.path().join("history"),
            settings,
            fsync: false,
            sweep_every: Duration::from_secs(1),
        });
        Server::with_config(config, Some(dir)).await
    }

    pub async fn with_config(mut config: ServerConfig, data: Option<tempfile::TempDir>) -> Server {
        config.shutdown_grace = Duration::from_secs(3);
        let running = herald_server::start(config, None)
            .await
            .expect("server starts");
        Server {
            addr: running.addr,
            running: Some(running),
            auth: Authenticator::new(SECRET.as_bytes()),
            data,
        }
    }

    pub async fn default() -> Server {
        Server::start(Limits::default()).await
    }

    pub fn token(&self, role: &str) -> String {
        self.auth.mint(role, Some("user-1"), 3600).unwrap()
    }

    pub fn url(&self, token: &str, vsn: &str) -> String {
        format!(
            "ws://{}/socket/websocket?apikey={token}&vsn={vsn}",
            self.addr
        )
    }

    pub async fn client(&self, vsn: &str) -> Client {
        Client::connect(&self.url(&self.token("anon"), vsn), vsn).await
    }

    pub async fn http_broadcast(&self, topic: &str, event: &str, payload: Value) -> u16 {
        self.http_batch(json!({"messages": [{"topic": topic, "event": event, "payload": payload}]}))
            .await
    }

    pub async fn http_batch(&self, body: Value) -> u16 {
        let body = body.to_string();
        http_request(
            self.addr,
            "POST",
            "/api/broadcast",
            &[
                (
                    "Authorization",
                    &format!("Bearer {}", self.token("service_role")),
                ),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
        .0
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The HTTP status and body of a refused WebSocket handshake.
pub async fn refused_handshake(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("handshake unexpectedly accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            (status, body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub vsn: String,
    next_ref: u64,
}

/// A decoded server frame (v2 arrays and v1 objects both end up here).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub join_ref: Value,
    pub ref_: Value,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

#[derive(Debug)]
pub enum Got {
    Text(Frame),
    Binary(Vec<u8>),
    Closed(Option<u16>),
}

impl Client {
    pub async fn connect(url: &str, vsn: &str) -> Client {
        let req = url.into_client_request().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket connects");
        Client {
            ws,
            vsn: vsn.to_owned(),
            next_ref: 100,
        }
    }

    pub fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>, vsn: &str) -> Client {
        Client {
            ws,
            vsn: vsn.to_owned(),
            next_ref: 100,
        }
    }

    pub fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Sends a message in this client's protocol version.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        ref_: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) {
        let text = if self.vsn == "1.0.0" {
            json!({"topic": topic, "event": event, "payload": payload, "ref": ref_, "join_ref": join_ref}).to_string()
        } else {
            json!([join_ref, ref_, topic, event, payload]).to_string()
        };
        self.send_text(&text).await;
    }

    /// The next frame (pings skipped), within the deadline.
    pub async fn next(&mut self) -> Got {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame within the deadline");
            match msg {
                None | Some(Err(_)) => return Got::Closed(None),
                Some(Ok(Message::Close(frame))) => {
                    return Got::Closed(frame.map(|f: CloseFrame| f.code.into()));
                }
                Some(Ok(Message::Text(t))) => return Got::Text(parse_frame(&t)),
                Some(Ok(Message::Binary(b))) => return Got::Binary(b.to_vec()),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn next_text(&mut self) -> Frame {
        match self.next().await {
            Got::Text(f) => f,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads until a `phx_reply` with this ref; returns its payload. Fails on anything else.
    pub async fn reply(&mut self, ref_: &str) -> Value {
        let f = self.next_text().await;
        assert_eq!(
            f.event, "phx_reply",
            "expected a reply to {ref_}, got {f:?}"
        );
        assert_eq!(f.ref_, json!(ref_), "reply to another ref: {f:?}");
        f.payload
    }

    pub async fn join(&mut self, topic: &str, config: Value) -> Value {
        let r = self.next_ref();
        self.push(Some(&r), &r, topic, "phx_join", json!({ "config": config }))
            .await;
        self.reply(&r).await
    }

    pub async fn join_ok(&mut self, topic: &str, config: Value) -> String {
        let r = self.next_ref();
        self.push(Some(&r), &r, topic, "phx_join", json!({ "config": config }))
            .await;
        let p = self.reply(&r).await;
        assert_eq!(p["status"], "ok", "join failed: {p}");
        r
    }

    /// Proves the connection is alive and nothing else is pending: a heartbeat's reply is the next frame.
    pub async fn assert_quiet_and_alive(&mut self) {
        let r = self.next_ref();
        self.push(None, &r, "phoenix", "heartbeat", json!({})).await;
        let p = self.reply(&r).await;
        assert_eq!(p, json!({"status": "ok", "response": {}}));
    }

    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Got::Closed(code) => return code,
                _ => continue,
            }
        }
    }
}

pub fn parse_frame(text: &str) -> Frame {
    let v: Value = serde_json::from_str(text).unwrap();
    match v {
        Value::Array(a) => Frame {
            join_ref: a[0].clone(),
            ref_: a[1].clone(),
            topic: a[2].as_str().unwrap().to_owned(),
            event: a[3].as_str().unwrap().to_owned(),
            payload: a[4].clone(),
        },
        Value::Object(o) => Frame {
            join_ref: Value::Null,
            ref_: o["ref"].clone(),
            topic: o["topic"].as_str().unwrap().to_owned(),
            event: o["event"].as_str().unwrap().to_owned(),
            payload: o["payload"].clone(),
        },
        other => panic!("unexpected frame {other}"),
    }
}

/// A kind-3 frame as the client builds it.
pub fn kind3(
    join_ref: &str,
    ref_: &str,
    topic: &str,
    event: &str,
    encoding: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![
        3,
        join_ref.len() as u8,
        ref_.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        encoding,
    ];
    for part in [
        join_ref.as_bytes(),
        ref_.as_bytes(),
        topic.as_bytes(),
        event.as_bytes(),
        payload,
    ] {
        f.extend_from_slice(part);
    }
    f
}

pub fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn now() -> u64 {
    herald_core::auth::unix_now()
}

/// One parsed SSE event (comments skipped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// A minimal SSE client over HTTP/1.0 (so the body is not chunked).
pub struct SseClient {
    stream: TcpStream,
    buf: Vec<u8>,
    pub status: u16,
}

impl SseClient {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut c = SseClient {
            stream,
            buf: Vec::new(),
            status: 0,
        };
        let head = c.read_until(b"\r\n\r\n").await;
        c.status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
        c
    }

    async fn read_until(&mut self, sep: &[u8]) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(at) = self.buf.windows(sep.len()).position(|w| w == sep) {
                let head: Vec<u8> = self.buf.drain(..at + sep.len()).collect();
                return head;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("sse data within the deadline")
                .unwrap();
            assert!(n > 0, "sse stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The rest of a non-stream (error) response.
    pub async fn body(mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, self.stream.read_to_end(&mut rest)).await;
        self.buf.extend_from_slice(&rest);
        String::from_utf8_lossy(&self.buf).to_string()
    }

    /// The next event that has data or an id (retry-only blocks and comments are skipped).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            let block = self.read_until(b"\n\n").await;
            let text = String::from_utf8(block).unwrap();
            let mut ev = SseEvent::default();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev.event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    ev.data = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    ev.id = Some(v.to_owned());
                }
            }
            if !ev.data.is_empty() || ev.id.is_some() {
                return ev;
            }
        }
    }

    /// The next event with data (id-only and `ready` events skipped), and the last id seen up to it.
    pub async fn next_data(&mut self, last_id: &mut Option<String>) -> SseEvent {
        loop {
            let ev = self.next().await;
            if ev.id.is_some() {
                last_id.clone_from(&ev.id);
            }
            if !ev.data.is_empty() && ev.event != "ready" {
                return ev;
            }
        }
    }
}
