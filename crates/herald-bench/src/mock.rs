//! A tiny in-process stand-in for a Phoenix v2 server, for the crate's own tests: it answers joins
//! (with `ack` and `recover`) and heartbeats, fans broadcasts out to the other members of a topic
//! (WebSocket clients and `GET /sse` streams), keeps every topic's messages with offsets for
//! recovery, and accepts `POST /api/broadcast`. Just enough protocol to exercise the scenarios end to
//! end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The epoch of every topic's log.
const EPOCH: &str = "e1";

/// Where a member gets its frames.
#[derive(Clone)]
enum Member {
    /// v2 text frames.
    Ws(mpsc::UnboundedSender<String>),
    /// Event-stream text.
    Sse(mpsc::UnboundedSender<String>),
}

#[derive(Default)]
struct State {
    members: HashMap<String, Vec<(u64, Member)>>,
    /// Every topic's messages (`{type, event, payload, meta}`), offset i + 1 at index i.
    logs: HashMap<String, Vec<Value>>,
}

type Shared = Arc<Mutex<State>>;

/// Starts the mock server on an ephemeral loopback port.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state: Shared = Arc::default();
    tokio::spawn(async move {
        let mut next_id = 0;
        while let Ok((sock, _)) = listener.accept().await {
            next_id += 1;
            tokio::spawn(serve(sock, next_id, Arc::clone(&state)));
        }
    });
    addr
}

async fn serve(sock: TcpStream, id: u64, state: Shared) {
    let mut first = [0u8; 8];
    let mut n = 0;
    for _ in 0..100 {
        match sock.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(got) if got >= first.len() => {
                n = got;
                break;
            }
            Ok(got) => n = got,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if first[..n].starts_with(b"POST ") {
        http(sock, state).await;
    } else if first[..n].starts_with(b"GET /sse") {
        sse(sock, id, state).await;
    } else {
        websocket(sock, id, state).await;
    }
}

/// Logs a broadcast on `topic` (`realtime:<name>`) and fans it out to every member but `except`.
fn publish(state: &Shared, topic: &str, except: u64, event: &Value, payload: &Value) {
    let mut state = state.lock().unwrap();
    let log = state.logs.entry(topic.to_owned()).or_default();
    let offset = log.len() + 1;
    let inner = json!({"type": "broadcast", "event": event, "payload": payload,
        "meta": {"offset": offset, "epoch": EPOCH}});
    log.push(inner.clone());
    if let Some(list) = state.members.get(topic) {
        for (id, member) in list {
            if *id != except {
                send(member, topic, &inner);
            }
        }
    }
}

fn send(member: &Member, topic: &str, inner: &Value) {
    let _ = match member {
        Member::Ws(tx) => tx.send(json!([null, null, topic, "broadcast", inner]).to_string()),
        Member::Sse(tx) => {
            let name = topic.strip_prefix("realtime:").unwrap_or(topic);
            let data = json!({"topic": name, "event": inner["event"], "payload": inner["payload"],
                "meta": inner["meta"]});
            tx.send(format!(
                "event: broadcast\ndata: {data}\nid: c{}\n\n",
                inner["meta"]["offset"]
            ))
        }
    };
}

async fn websocket(sock: TcpStream, id: u64, state: Shared) {
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
    // Topics joined, with their `ack` setting.
    let mut joined: HashMap<String, bool> = HashMap::new();
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
        let reply = |status: &str, response: Value| {
            json!([join_ref, push_ref, topic, "phx_reply", {"status": status, "response": response}])
                .to_string()
        };
        match event {
            "phx_join" => {
                let broadcast = &payload["config"]["broadcast"];
                joined.insert(topic.to_owned(), broadcast["ack"] == true);
                let mut st = state.lock().unwrap();
                let log = st.logs.get(topic).cloned().unwrap_or_default();
                st.members
                    .entry(topic.to_owned())
                    .or_default()
                    .push((id, Member::Ws(tx.clone())));
                drop(st);
                let mut response = json!({"postgres_changes": []});
                let recover = &broadcast["recover"];
                if recover.is_object() {
                    let top = log.len() as u64;
                    let after = recover["offset"].as_u64().unwrap_or(0);
                    let recovered = recover["epoch"] == EPOCH && after <= top;
                    response["recovery"] =
                        json!({"recovered": recovered, "epoch": EPOCH, "offset": top});
                    let _ = tx.send(reply("ok", response));
                    if recovered {
                        for inner in log.iter().skip(usize::try_from(after).unwrap()) {
                            let mut inner = inner.clone();
                            inner["meta"]["replayed"] = json!(true);
                            send(&Member::Ws(tx.clone()), topic, &inner);
                        }
                    }
                } else {
                    let _ = tx.send(reply("ok", response));
                }
            }
            "heartbeat" => {
                let _ = tx.send(reply("ok", json!({})));
            }
            "broadcast" => match joined.get(topic) {
                Some(ack) => {
                    publish(&state, topic, id, &payload["event"], &payload["payload"]);
                    if *ack {
                        let _ = tx.send(reply("ok", json!({})));
                    }
                }
                None => {
                    let _ = tx.send(reply("error", json!({"reason": "unmatched topic"})));
                }
            },
            _ => {}
        }
    }
    leave(&state, id);
    writer.abort();
}

fn leave(state: &Shared, id: u64) {
    for list in state.lock().unwrap().members.values_mut() {
        list.retain(|(member, _)| *member != id);
    }
}

async fn sse(sock: TcpStream, id: u64, state: Shared) {
    let mut sock = BufReader::new(sock);
    let mut request = String::new();
    loop {
        let mut line = String::new();
        if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        request.push_str(&line);
    }
    let query = request.split_whitespace().nth(1).unwrap_or("");
    let topic = query
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("topic="))
        .unwrap_or("")
        .to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    state
        .lock()
        .unwrap()
        .members
        .entry(format!("realtime:{topic}"))
        .or_default()
        .push((id, Member::Sse(tx.clone())));
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let _ = tx.send("retry: 2000\n: connected\n\n".to_owned());
    let _ = tx.send("id: c0\n\n".to_owned());
    let mut sock = sock.into_inner();
    if sock.write_all(head.as_bytes()).await.is_ok() {
        while let Some(text) = rx.recv().await {
            let chunk = format!("{:x}\r\n{text}\r\n", text.len());
            if sock.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    }
    leave(&state, id);
}

async fn http(sock: TcpStream, state: Shared) {
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
            publish(&state, &topic, 0, &m["event"], &m["payload"]);
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
    use crate::publish::{self, PublishOpts};
    use crate::recover::{self, RecoverOpts};
    use crate::report::Detail;
    use crate::sse::{self, SseOpts};
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sse_opens_holds_and_delivers() {
        let ctx = context(start().await);
        let opts = SseOpts {
            streams: 150,
            topics: 3,
            hold: 1,
            publish_rate: None,
            payload: 100,
        };
        let report = sse::run(&ctx, opts).await.unwrap();
        assert_eq!(
            (report.connections, report.errors),
            (150, 0),
            "{}",
            report.table()
        );
        assert!(report.connect_rate.unwrap() > 0.0);
        assert!(report.rss_per_connection_kib.is_some());
        assert!(report.delivered_per_sec.is_none());

        // 30 messages over 3 topics of 10 streams each: 300 deliveries.
        let opts = SseOpts {
            streams: 30,
            publish_rate: Some(30),
            ..opts
        };
        let report = sse::run(&ctx, opts).await.unwrap();
        let Detail::Sse(d) = &report.detail else {
            panic!()
        };
        assert_eq!(
            (d.sent, d.expected, d.delivered),
            (30, 300, 300),
            "{}",
            report.table()
        );
        assert_eq!(report.errors, 0);
        assert!(report.latency_ms.is_some() && report.server_cpu_pct.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recover_replays_every_missed_message() {
        let ctx = context(start().await);
        let opts = RecoverOpts {
            missed: 120,
            payload: 64,
            runs: 3,
            batch: 50,
            publish_rate: 100_000,
        };
        let report = recover::run(&ctx, opts).await.unwrap();
        let Detail::Recover(d) = &report.detail else {
            panic!()
        };
        assert_eq!(d.runs_complete, 3, "{}", report.table());
        assert_eq!((d.gaps, d.duplicates, report.errors), (0, 0, 0));
        assert_eq!(d.replays_ms.len(), 3);
        let r = report.replay_ms.unwrap();
        assert!(r.min <= r.median && r.median <= r.max);
        assert!(report.replay_msgs_per_sec.unwrap() > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_counts_accepted_and_delivered_over_http_and_ws() {
        let ctx = Arc::new(context(start().await));
        for (publisher, rate) in [
            (PublisherKind::Http, 200),
            (PublisherKind::Ws, 200),
            (PublisherKind::Http, 0),
        ] {
            let opts = PublishOpts {
                rate,
                duration: 1,
                payload: 100,
                subscribers: 6,
                channels: 3,
                publisher,
                connections: 2,
                batch: 5,
                publisher_rate: 900,
            };
            let report = publish::run(Arc::clone(&ctx), opts).await.unwrap();
            let Detail::Publish(d) = &report.detail else {
                panic!()
            };
            if rate > 0 {
                assert_eq!(d.accepted, 200, "{}", report.table());
            }
            assert!(d.accepted > 0 && d.accepted == d.sent, "{}", report.table());
            // Two subscribers per channel.
            assert_eq!(d.expected, 2 * d.accepted);
            assert_eq!(d.delivered, d.expected, "{}", report.table());
            assert_eq!(report.errors, 0, "{}", report.table());
            assert!(report.accepted_per_sec.unwrap() > 0.0);
            assert!(report.server_cpu_pct.is_some());
        }
    }
}
