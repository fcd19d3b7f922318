//! A tiny in-process stand-in for a Phoenix v2 server, for the crate's own tests: it answers joins
//! and heartbeats, fans text broadcast pushes out to the other members of a topic, and accepts
//! `POST /api/broadcast`. Just enough protocol to exercise the scenarios end to end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Members = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>)>>>>;

/// Starts the mock server on an ephemeral loopback port.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let members: Members = Arc::default();
    tokio::spawn(async move {
        let mut next_id = 0;
        while let Ok((sock, _)) = listener.accept().await {
            next_id += 1;
            tokio::spawn(serve(sock, next_id, Arc::clone(&members)));
        }
    });
    addr
}

async fn serve(sock: TcpStream, id: u64, members: Members) {
    let mut first = [0u8; 5];
    let Ok(n) = sock.peek(&mut first).await else {
        return;
    };
    if &first[..n] == b"POST " {
        http(sock, members).await;
    } else {
        websocket(sock, id, members).await;
    }
}

fn fan_out(members: &Members, topic: &str, except: u64, frame: &str) {
    if let Some(list) = members.lock().unwrap().get(topic) {
        for (id, tx) in list {
            if *id != except {
                let _ = tx.send(frame.to_owned());
            }
        }
    }
}

async fn websocket(sock: TcpStream, id: u64, members: Members) {
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
    });
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(Value::Array(f)) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let (join_ref, push_ref, topic, event, payload) = (
            &f[0],
            &f[1],
            f[2].as_str().unwrap_or(""),
            f[3].as_str().unwrap_or(""),
            &f[4],
        );
        let reply = |status: &str| {
            serde_json::json!([join_ref, push_ref, topic, "phx_reply", {"status": status, "response": {}}]).to_string()
        };
        match event {
            "phx_join" => {
                members
                    .lock()
                    .unwrap()
                    .entry(topic.to_owned())
                    .or_default()
                    .push((id, tx.clone()));
                let _ = tx.send(reply("ok"));
            }
            "heartbeat" => {
                let _ = tx.send(reply("ok"));
            }
            "broadcast" => {
                let frame =
                    serde_json::json!([null, null, topic, "broadcast", payload]).to_string();
                fan_out(&members, topic, id, &frame);
            }
            _ => {}
        }
    }
    for list in members.lock().unwrap().values_mut() {
        list.retain(|(member, _)| *member != id);
    }
    writer.abort();
}

async fn http(sock: TcpStream, members: Members) {
    let mut sock = BufReader::new(sock);
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        if sock.read_exact(&mut body).await.is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        for m in body["messages"].as_array().into_iter().flatten() {
            let topic = format!("realtime:{}", m["topic"].as_str().unwrap_or(""));
            let inner = serde_json::json!({"type": "broadcast", "event": m["event"], "payload": m["payload"]});
            let frame = serde_json::json!([null, null, topic, "broadcast", inner]).to_string();
            fan_out(&members, &topic, 0, &frame);
        }
        let reply = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        if sock.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

mod smoke {
    use super::*;
    use crate::clock::Clock;
    use crate::fanout::{self, FanoutOpts};
    use crate::idle::{self, IdleOpts};
    use crate::report::Detail;
    use crate::target::Target;
    use crate::{Context, PublisherKind};

    fn context(addr: SocketAddr) -> Context {
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        Context {
            ws_url: target.ws_url("test-token"),
            target,
            token: "test-token".into(),
            server_pid: Some(std::process::id()),
            clock: Clock::start(),
            per_process: 10_000,
            concurrency: 8,
            per_address: 100,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_opens_joins_and_holds() {
        let ctx = context(start().await);
        // 150 connections at 100 per address use two source addresses.
        let report = idle::run(
            &ctx,
            IdleOpts {
                connections: 150,
                channels: 4,
                hold: 0,
            },
        )
        .await
        .unwrap();
        assert_eq!(report.connections, 150, "{}", report.table());
        assert_eq!(report.errors, 0);
        assert!(report.connect_rate.unwrap() > 0.0);
        assert!(report.rss_per_connection_kib.is_some());
        let Detail::Idle(d) = &report.detail else {
            panic!()
        };
        assert_eq!(d.failed, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fanout_delivers_everything_over_ws_and_http() {
        let ctx = context(start().await);
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
            assert_eq!(d.sent, 60, "{}", report.table());
            // Subscribers 0..20 over 3 channels: 7, 7, 6; 20 messages to each channel.
            assert_eq!(d.expected, 20 * 20);
            assert_eq!(d.delivered, d.expected, "{}", report.table());
            assert_eq!((d.drops, report.errors), (0, 0));
            assert!(report.latency_ms.is_some());
            assert!(report.server_cpu_pct.is_some() && report.cpu_us_per_delivery.is_some());
        }
    }
}
