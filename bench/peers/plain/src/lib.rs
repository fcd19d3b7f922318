//! The deliberately naive reference server for benchmarks (`herald bench --protocol plain`): what a
//! first real-time server in Rust usually looks like, so that Herald can be measured against it by the
//! same load generator in the same run. It is not meant to be used for anything else.
//!
//! Its design is the obvious one, on purpose: axum's `ws` with an 8 KiB read buffer, one
//! `tokio::sync::broadcast` channel per channel name, and one task per connection that reads the
//! client's frames and sends every message of the channels it joined with one send + flush each. No
//! authentication, limits, history, presence, batching or heartbeats.
//!
//! Protocol "plain" (JSON text frames on `GET /ws`; see `bench/peers/README.md`):
//! - `{"op":"join","channel":"c"}` → `{"op":"joined","channel":"c"}`
//! - `{"op":"leave","channel":"c"}` → `{"op":"left","channel":"c"}`
//! - `{"op":"publish","channel":"c","data":…}` → every member of `c` gets `{"channel":"c","data":…}`
//! - anything else → `{"op":"error","reason":"…"}`
//!
//! Over HTTP: `POST /publish` with `{"channel":"c","data":…}` or an array of them publishes the same
//! way and answers 202; `GET /healthz` answers 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The WebSocket read buffer of every connection.
pub const READ_BUFFER: usize = 8 * 1024;
/// Messages a channel keeps for a member that is behind (a member further behind skips them).
const CHANNEL_CAPACITY: usize = 1024;

/// Channel name → its broadcast sender.
#[derive(Clone, Default)]
struct App {
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>,
}

impl App {
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<Utf8Bytes> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Sends `{"channel":…,"data":…}` to the members of `channel`, if it has any.
    fn publish(&self, channel: &str, data: &RawValue) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = channels.get(channel) {
            let _ = sender.send(Utf8Bytes::from(format!(
                "{{\"channel\":{},\"data\":{}}}",
                json_string(channel),
                data.get()
            )));
        }
    }

    /// Forgets channels nobody is a member of any more.
    fn prune(&self) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, sender| sender.receiver_count() > 0);
    }
}

/// A client frame, or one message of `POST /publish`.
#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(default)]
    op: Option<String>,
    channel: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn reply(op: &str, channel: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        "{{\"op\":\"{op}\",\"channel\":{}}}",
        json_string(channel)
    ))
}

/// The server's routes: `GET /ws`, `POST /publish`, `GET /healthz`.
pub fn router() -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/publish", post(publish))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(App::default())
}

/// Serves [`router`] on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

async fn upgrade(ws: WebSocketUpgrade, State(app): State<App>) -> Response {
    ws.read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| connection(socket, app))
}

async fn publish(State(app): State<App>, body: Bytes) -> Response {
    // One message, or an array of them.
    let many = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let messages = if many {
        serde_json::from_slice::<Vec<Inbound<'_>>>(&body)
    } else {
        serde_json::from_slice::<Inbound<'_>>(&body).map(|m| vec![m])
    };
    let messages = match messages {
        Ok(messages) => messages,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let null = RawValue::NULL;
    for m in &messages {
        app.publish(&m.channel, m.data.unwrap_or(null));
    }
    StatusCode::ACCEPTED.into_response()
}

/// One task per connection: reads the client's frames and, in between, sends every message of the
/// channels it joined, one send + flush each.
async fn connection(mut socket: WebSocket, app: App) {
    let mut joined: Vec<(String, broadcast::Receiver<Utf8Bytes>)> = Vec::new();
    loop {
        let out = tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => match handle(&text, &mut joined, &app) {
                    Some(reply) => reply,
                    None => continue,
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            message = next_message(&mut joined), if !joined.is_empty() => message,
        };
        if socket.send(Message::Text(out)).await.is_err() {
            break;
        }
    }
    drop(joined);
    app.prune();
}

/// Acts on a client frame; the reply to send, if any.
fn handle(
    text: &str,
    joined: &mut Vec<(String, broadcast::Receiver<Utf8Bytes>)>,
    app: &App,
) -> Option<Utf8Bytes> {
    let Ok(m) = serde_json::from_str::<Inbound<'_>>(text) else {
        return Some(Utf8Bytes::from_static(
            r#"{"op":"error","reason":"bad frame"}"#,
        ));
    };
    match m.op.as_deref() {
        Some("join") => {
            if !joined.iter().any(|(c, _)| *c == m.channel) {
                joined.push((m.channel.clone(), app.subscribe(&m.channel)));
            }
            Some(reply("joined", &m.channel))
        }
        Some("leave") => {
            joined.retain(|(c, _)| *c != m.channel);
            app.prune();
            Some(reply("left", &m.channel))
        }
        Some("publish") => {
            app.publish(&m.channel, m.data.unwrap_or(RawValue::NULL));
            None
        }
        _ => Some(Utf8Bytes::from_static(
            r#"{"op":"error","reason":"unknown op"}"#,
        )),
    }
}

/// The next message of any joined channel (at least one); a member that fell behind skips what it
/// missed.
async fn next_message(joined: &mut [(String, broadcast::Receiver<Utf8Bytes>)]) -> Utf8Bytes {
    loop {
        let received = match joined {
            [(_, rx)] => rx.recv().await,
            _ => {
                let all = joined.iter_mut().map(|(_, rx)| Box::pin(rx.recv()));
                futures_util::future::select_all(all).await.0
            }
        };
        match received {
            Ok(text) => return text,
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            // Senders are never dropped while a receiver exists (the map keeps them).
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    use super::*;

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn next_text(ws: &mut Client) -> String {
        loop {
            match ws.next().await.unwrap().unwrap() {
                WsMessage::Text(t) => return t.to_string(),
                _ => continue,
            }
        }
    }

    async fn post(addr: std::net::SocketAddr, body: &str) -> String {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        sock.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn join_publish_leave_and_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        let url = format!("ws://{addr}/ws");
        let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (mut b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();

        a.send(WsMessage::text(r#"{"op":"join","channel":"c"}"#))
            .await
            .unwrap();
        assert_eq!(next_text(&mut a).await, r#"{"op":"joined","channel":"c"}"#);
        b.send(WsMessage::text(
            r#"{"op":"publish","channel":"c","data":{"t":1}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(next_text(&mut a).await, r#"{"channel":"c","data":{"t":1}}"#);

        let response = post(addr, r#"{"channel":"c","data":[2]}"#).await;
        assert!(response.starts_with("HTTP/1.1 202"), "{response}");
        assert_eq!(next_text(&mut a).await, r#"{"channel":"c","data":[2]}"#);
        let response = post(
            addr,
            r#"[{"channel":"c","data":3},{"channel":"d","data":4}]"#,
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 202"), "{response}");
        assert_eq!(next_text(&mut a).await, r#"{"channel":"c","data":3}"#);
        assert!(post(addr, "nope").await.starts_with("HTTP/1.1 400"));

        b.send(WsMessage::text(r#"{"op":"dance","channel":"c"}"#))
            .await
            .unwrap();
        assert!(next_text(&mut b).await.contains("unknown op"));
        a.send(WsMessage::text(r#"{"op":"leave","channel":"c"}"#))
            .await
            .unwrap();
        assert_eq!(next_text(&mut a).await, r#"{"op":"left","channel":"c"}"#);
        b.send(WsMessage::text(
            r#"{"op":"publish","channel":"c","data":5}"#,
        ))
        .await
        .unwrap();
        // Nobody is in c any more: the next frame `a` gets is the answer to its own bad frame.
        a.send(WsMessage::text("{")).await.unwrap();
        assert!(next_text(&mut a).await.contains("bad frame"));
    }
}
