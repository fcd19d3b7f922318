//! A tiny in-process stand-in for a Pusher Channels server (Sockudo), for the crate's own tests of
//! `--protocol pusher`: `pusher:connection_established`, private-channel subscriptions checked
//! against the app secret (a wrong signature is refused), client events relayed to the other members
//! of their channel, signed `POST /apps/<id>/batch_events` (an unsigned or wrongly signed request is
//! refused with 401), and a `pusher:ping` to every client at a short interval, closing one that has
//! not answered by the next. Then idle and fanout end to end against it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::mock::read_request;
use crate::pusher::{self, App};

/// Channel name → members.
type Channels = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>)>>>>;

/// Starts the stand-in for `app` on an ephemeral loopback port, pinging every client every `ping`.
pub async fn start_pusher(app: App, ping: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let channels: Channels = Arc::default();
    let app = Arc::new(app);
    tokio::spawn(async move {
        let mut next_id = 0;
        while let Ok((sock, _)) = listener.accept().await {
            next_id += 1;
            let (channels, app) = (Arc::clone(&channels), Arc::clone(&app));
            tokio::spawn(async move {
                let mut first = [0u8; 5];
                if sock.peek(&mut first).await.is_ok() && &first == b"POST " {
                    http(sock, channels, &app).await;
                } else {
                    websocket(sock, next_id, channels, &app, ping).await;
                }
            });
        }
    });
    addr
}

fn emit(channels: &Channels, channel: &str, frame: &str, except: Option<u64>) {
    for (member, tx) in channels.lock().unwrap().get(channel).into_iter().flatten() {
        if Some(*member) != except {
            let _ = tx.send(frame.to_owned());
        }
    }
}

async fn websocket(sock: TcpStream, id: u64, channels: Channels, app: &App, ping: Duration) {
    let mut path = String::new();
    // The error type is tungstenite's, and this callback never returns it.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(sock, callback).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    if path != app.ws_path() {
        let _ = tx.send(
            json!({"event": "pusher:error", "data": {"code": 4001, "message": "App key not found"}})
                .to_string(),
        );
        drop(tx);
        let _ = writer.await;
        return;
    }
    let socket_id = format!("{id}.{id}");
    let established = json!({"socket_id": socket_id, "activity_timeout": 120}).to_string();
    let _ =
        tx.send(json!({"event": "pusher:connection_established", "data": established}).to_string());
    let mut pings = tokio::time::interval(ping);
    pings.tick().await;
    let mut awaiting_pong = false;
    let mut subscribed = Vec::new();
    loop {
        tokio::select! {
            _ = pings.tick() => {
                if awaiting_pong {
                    break;
                }
                awaiting_pong = true;
                let _ = tx.send(pusher::PING.to_owned());
            }
            msg = stream.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(text) = msg else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                let event = frame["event"].as_str().unwrap_or_default();
                match event {
                    "pusher:pong" => awaiting_pong = false,
                    "pusher:ping" => {
                        let _ = tx.send(pusher::PONG.to_owned());
                    }
                    "pusher:subscribe" => {
                        let channel = frame["data"]["channel"].as_str().unwrap_or_default();
                        let auth = frame["data"]["auth"].as_str().unwrap_or_default();
                        let expected = app.channel_auth(&socket_id, channel).unwrap();
                        if channel.starts_with("private-") && auth == expected {
                            let mut channels = channels.lock().unwrap();
                            channels.entry(channel.to_owned()).or_default().push((id, tx.clone()));
                            drop(channels);
                            subscribed.push(channel.to_owned());
                            let _ = tx.send(json!({
                                "event": "pusher_internal:subscription_succeeded",
                                "channel": channel,
                                "data": "{}",
                            }).to_string());
                        } else {
                            let _ = tx.send(json!({
                                "event": "pusher:error",
                                "data": {"code": 4009, "message": "Connection is unauthorized"},
                            }).to_string());
                        }
                    }
                    _ if event.starts_with("client-") => {
                        let channel = frame["channel"].as_str().unwrap_or_default();
                        if subscribed.iter().any(|c| c == channel) {
                            let data = &frame["data"];
                            let out = json!({"event": event, "channel": channel, "data": data});
                            emit(&channels, channel, &out.to_string(), Some(id));
                        } else {
                            let _ = tx.send(json!({
                                "event": "pusher:error",
                                "data": {"code": 4301, "message": "not subscribed"},
                            }).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for list in channels.lock().unwrap().values_mut() {
        list.retain(|(member, _)| *member != id);
    }
    drop(tx);
    let _ = writer.await;
}

async fn http(sock: TcpStream, channels: Channels, app: &App) {
    let mut sock = BufReader::new(sock);
    while let Some((target, body)) = read_request(&mut sock).await {
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let timestamp = query
            .split('&')
            .find_map(|p| p.strip_prefix("auth_timestamp="))
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        let signed = app.signed_post(path, &body, timestamp).unwrap();
        let reply: &[u8] = if path == app.batch_events_path("") && target == signed {
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            for e in body["batch"].as_array().into_iter().flatten() {
                let channel = e["channel"].as_str().unwrap_or_default();
                let out = json!({"event": e["name"], "channel": channel, "data": e["data"]});
                emit(&channels, channel, &out.to_string(), None);
            }
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        } else {
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 17\r\n\r\ninvalid signature"
        };
        if sock.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

mod smoke {
    use super::*;
    use crate::idle::{self, IdleOpts};
    use crate::mock::smoke::context_for;
    use crate::mock_peers::smoke::idle_and_fanout;
    use crate::protocol::Protocol;
    use crate::report::Detail;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pusher_idle_and_fanout_sign_and_answer_pings() {
        // Pings every 300 ms: holding for 2 s only works if every client answers them.
        let addr = start_pusher(App::default(), Duration::from_millis(300)).await;
        idle_and_fanout(addr, Protocol::Pusher, 2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pusher_with_the_wrong_secret_is_refused() {
        let addr = start_pusher(App::default(), Duration::from_secs(30)).await;
        let mut ctx = context_for(addr, Protocol::Pusher);
        ctx.pusher.secret = "not-the-secret".into();
        let report = idle::run(
            &ctx,
            IdleOpts {
                connections: 5,
                channels: 1,
                hold: 0,
            },
        )
        .await
        .unwrap();
        let Detail::Idle(d) = &report.detail else {
            panic!()
        };
        assert_eq!((report.connections, d.failed), (0, 5), "{}", report.table());
        assert!(
            d.failure_reasons
                .keys()
                .any(|r| r.contains("Connection is unauthorized")),
            "{:?}",
            d.failure_reasons
        );
    }
}
