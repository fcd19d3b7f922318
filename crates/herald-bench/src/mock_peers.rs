//! Peers for the crate's own tests of `--protocol plain` and `--protocol socketio`: the real naive
//! reference server (crate `herald-peer-plain`), and a tiny in-process stand-in for the Socket.IO
//! reference server (Engine.IO open packet, namespace connect, acked `join`, `publish` → `msg` to the
//! room, `POST /publish`), which pings every client often and closes one that does not answer in
//! time, as Socket.IO does. Then idle and fanout end to end against both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::mock::read_request;
use crate::socketio::{self, Packet};

/// Room name → members.
type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>)>>>>;

/// Starts the real plain server on an ephemeral loopback port.
pub async fn start_plain() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(herald_peer_plain::serve(listener));
    addr
}

/// Starts the Socket.IO stand-in, pinging every client every `ping` (and closing it if the answer
/// has not come by the next ping).
pub async fn start_socketio(ping: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rooms: Rooms = Arc::default();
    tokio::spawn(async move {
        let mut next_id = 0;
        while let Ok((sock, _)) = listener.accept().await {
            next_id += 1;
            let rooms = Arc::clone(&rooms);
            tokio::spawn(async move {
                let mut first = [0u8; 5];
                if sock.peek(&mut first).await.is_ok() && &first == b"POST " {
                    http(sock, rooms).await;
                } else {
                    websocket(sock, next_id, rooms, ping).await;
                }
            });
        }
    });
    addr
}

fn emit(rooms: &Rooms, room: &str, data: &Value) {
    let frame = format!("42{}", serde_json::json!(["msg", data]));
    for (_, tx) in rooms.lock().unwrap().get(room).into_iter().flatten() {
        let _ = tx.send(frame.clone());
    }
}

async fn websocket(sock: TcpStream, id: u64, rooms: Rooms, ping: Duration) {
    let Ok(ws) = tokio_tungstenite::accept_async(sock).await else {
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
    let ms = ping.as_millis();
    let _ = tx.send(format!(
        "0{{\"sid\":\"s{id}\",\"upgrades\":[],\"pingInterval\":{ms},\"pingTimeout\":{ms},\"maxPayload\":1000000}}"
    ));
    let mut pings = tokio::time::interval(ping);
    pings.tick().await;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            _ = pings.tick() => {
                if awaiting_pong {
                    break;
                }
                awaiting_pong = true;
                let _ = tx.send(socketio::PING.to_owned());
            }
            msg = stream.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(text) = msg else { continue };
                match socketio::parse(&text) {
                    Packet::Pong => awaiting_pong = false,
                    Packet::Connect(_) => {
                        let _ = tx.send(format!("40{{\"sid\":\"n{id}\"}}"));
                    }
                    Packet::Event { ack, data } => {
                        let Ok(Value::Array(args)) = serde_json::from_str::<Value>(data) else {
                            continue;
                        };
                        match (args[0].as_str(), &args[1]) {
                            (Some("join"), Value::String(room)) => {
                                rooms.lock().unwrap().entry(room.clone()).or_default().push((id, tx.clone()));
                                if let Some(ack) = ack {
                                    let _ = tx.send(format!("43{ack}[\"ok\"]"));
                                }
                            }
                            (Some("publish"), m) => {
                                emit(&rooms, m["room"].as_str().unwrap_or(""), &m["data"]);
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for list in rooms.lock().unwrap().values_mut() {
        list.retain(|(member, _)| *member != id);
    }
    drop(tx);
    let _ = writer.await;
}

async fn http(sock: TcpStream, rooms: Rooms) {
    let mut sock = BufReader::new(sock);
    while let Some((_, body)) = read_request(&mut sock).await {
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        for m in body.as_array().into_iter().flatten() {
            emit(&rooms, m["room"].as_str().unwrap_or(""), &m["data"]);
        }
        let reply = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        if sock.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

pub(crate) mod smoke {
    use super::*;
    use crate::PublisherKind;
    use crate::fanout::{self, FanoutOpts};
    use crate::idle::{self, IdleOpts};
    use crate::mock::smoke::context_for;
    use crate::protocol::Protocol;
    use crate::report::Detail;

    /// Idle then fanout (WebSocket and HTTP publishers) against the server at `addr`.
    pub(crate) async fn idle_and_fanout(addr: SocketAddr, protocol: Protocol, hold: u64) {
        let ctx = context_for(addr, protocol);
        let report = idle::run(
            &ctx,
            IdleOpts {
                connections: 120,
                channels: 4,
                hold,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (report.connections, report.errors),
            (120, 0),
            "{}",
            report.table()
        );
        assert!(report.rss_per_connection_kib.is_some());
        assert!(report.table().contains(protocol.name()));

        for publisher in [PublisherKind::Ws, PublisherKind::Http] {
            let opts = FanoutOpts {
                subscribers: 20,
                channels: 3,
                rate: 60,
                duration: 1,
                payload: 200,
                publisher,
                publisher_rate: 500,
            };
            let report = fanout::run(&ctx, opts).await.unwrap();
            let Detail::Fanout(d) = &report.detail else {
                panic!()
            };
            assert_eq!(d.protocol, protocol.name());
            assert_eq!(d.sent, 60, "{}", report.table());
            assert_eq!(d.expected, 20 * 20);
            assert_eq!(d.delivered, d.expected, "{}", report.table());
            assert_eq!((d.drops, report.errors), (0, 0), "{}", report.table());
            assert!(report.latency_ms.is_some() && report.cpu_us_per_delivery.is_some());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_idle_and_fanout() {
        idle_and_fanout(start_plain().await, Protocol::Plain, 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn socketio_idle_and_fanout_answer_pings() {
        // Pings every 300 ms: holding for 2 s only works if every client answers them.
        let addr = start_socketio(Duration::from_millis(300)).await;
        idle_and_fanout(addr, Protocol::Socketio, 2).await;
    }
}
