//! A tiny in-process stand-in for a Phoenix v2 server, for the crate's own tests: it answers joins
//! (with `ack`, `recover` and presence), leaves and heartbeats, fans broadcasts out to the other
//! members of a topic (WebSocket clients and `GET /sse` streams), keeps every topic's messages with
//! offsets for recovery, tracks presences (a `presence_state` after the join, an unbatched
//! `presence_diff` per change), and accepts `POST /api/broadcast`. Just enough protocol to exercise
//! the scenarios end to end. The peers' protocols have their own stand-ins (module `mock_peers`).

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
    /// Members of each topic that asked for presence: connection and where its frames go.
    presence_members: HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>)>>,
    /// Tracked keys of each topic, with the connection that tracked them.
    presences: HashMap<String, Vec<(String, u64)>>,
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

/// Sends `{"joins": …, "leaves": …}` to every presence member of `topic`.
fn presence_diff(state: &State, topic: &str, joins: &[&str], leaves: &[&str]) {
    let side = |keys: &[&str]| -> Value {
        keys.iter()
            .map(|k| ((*k).to_owned(), json!({"metas": [{"phx_ref": k}]})))
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    let frame =
        json!([null, null, topic, "presence_diff", {"joins": side(joins), "leaves": side(leaves)}])
            .to_string();
    for (_, tx) in state.presence_members.get(topic).into_iter().flatten() {
        let _ = tx.send(frame.clone());
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
    // Presence keys given in the joins (`config.presence.key`).
    let mut keys: HashMap<String, String> = HashMap::new();
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
                let presence = payload["config"]["presence"]["enabled"] == true;
                let key = payload["config"]["presence"]["key"].as_str().unwrap_or("");
                keys.insert(topic.to_owned(), key.to_owned());
                let mut st = state.lock().unwrap();
                let log = st.logs.get(topic).cloned().unwrap_or_default();
                st.members
                    .entry(topic.to_owned())
                    .or_default()
                    .push((id, Member::Ws(tx.clone())));
                let presence_state = presence.then(|| {
                    st.presence_members
                        .entry(topic.to_owned())
                        .or_default()
                        .push((id, tx.clone()));
                    let keys = st.presences.get(topic).cloned().unwrap_or_default();
                    keys.iter()
                        .map(|(k, _)| (k.clone(), json!({"metas": [{"phx_ref": k}]})))
                        .collect::<serde_json::Map<String, Value>>()
                });
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
                if let Some(keys) = presence_state {
                    let push = json!([join_ref, null, topic, "presence_state", keys]);
                    let _ = tx.send(push.to_string());
                }
            }
            "presence" if joined.contains_key(topic) => {
                let key = keys.get(topic).cloned().unwrap_or_default();
                let mut st = state.lock().unwrap();
                let list = st.presences.entry(topic.to_owned()).or_default();
                list.retain(|(_, owner)| *owner != id);
                list.push((key.clone(), id));
                presence_diff(&st, topic, &[&key], &[]);
                drop(st);
                let _ = tx.send(reply("ok", json!({})));
            }
            "phx_leave" => {
                joined.remove(topic);
                leave_topic(&state, topic, id);
                let _ = tx.send(reply("ok", json!({})));
                let close = json!([join_ref, join_ref, topic, "phx_close", {}]);
                let _ = tx.send(close.to_string());
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
    let topics: Vec<String> = state.lock().unwrap().members.keys().cloned().collect();
    for topic in topics {
        leave_topic(state, &topic, id);
    }
}

/// Removes connection `id` from `topic`, untracking its presence.
fn leave_topic(state: &Shared, topic: &str, id: u64) {
    let mut st = state.lock().unwrap();
    if let Some(list) = st.members.get_mut(topic) {
        list.retain(|(member, _)| *member != id);
    }
    if let Some(list) = st.presence_members.get_mut(topic) {
        list.retain(|(member, _)| *member != id);
    }
    let mut gone = Vec::new();
    if let Some(list) = st.presences.get_mut(topic) {
        list.retain(|(key, owner)| {
            let mine = *owner == id;
            if mine {
                gone.push(key.clone());
            }
            !mine
        });
    }
    let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
    if !gone.is_empty() {
        presence_diff(&st, topic, &[], &gone);
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

/// Reads one HTTP/1.1 request from a mock server's connection: its request target and its body (by
/// `Content-Length`). `None` at the end of the connection or on a broken request.
pub(crate) async fn read_request(sock: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    if sock.read_line(&mut request_line).await.unwrap_or(0) == 0 {
        return None;
    }
    let target = request_line.split_whitespace().nth(1)?.to_owned();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    sock.read_exact(&mut body).await.ok()?;
    Some((target, body))
}

async fn http(sock: TcpStream, state: Shared) {
    let mut sock = BufReader::new(sock);
    while let Some((_, body)) = read_request(&mut sock).await {
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

pub(crate) mod smoke {
    use super::*;
    use crate::churn::{self, ChurnOpts};
    use crate::clock::Clock;
    use crate::fanout::{self, FanoutOpts};
    use crate::idle::{self, IdleOpts};
    use crate::presence::{self, PresenceOpts};
    use crate::protocol::Protocol;
    use crate::publish::{self, PublishOpts};
    use crate::recover::{self, RecoverOpts};
    use crate::report::Detail;
    use crate::sse::{self, SseOpts};
    use crate::target::Target;
    use crate::{Context, PublisherKind};

    fn context(addr: SocketAddr) -> Context {
        context_for(addr, Protocol::Phoenix)
    }

    /// A context for a server of `protocol` at `addr`, measuring this process as the server.
    pub(crate) fn context_for(addr: SocketAddr, protocol: Protocol) -> Context {
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let pusher = crate::pusher::App::default();
        Context {
            ws_url: target.ws_url_for(protocol, "test-token", &pusher),
            target,
            protocol,
            pusher,
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
                // Pacing never exceeds the rate; on a loaded machine it may fall short of it.
                assert!(d.accepted <= 200, "{}", report.table());
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_members_see_every_key() {
        let ctx = context(start().await);
        let opts = PresenceOpts {
            members: 31,
            channels: 3,
            timeout: 30,
        };
        let report = presence::run(&ctx, opts).await.unwrap();
        let Detail::Presence(d) = &report.detail else {
            panic!()
        };
        assert_eq!(report.connections, 31, "{}", report.table());
        assert_eq!(d.members_complete, 31, "{}", report.table());
        assert_eq!((d.members_incomplete, report.errors), (0, 0));
        assert_eq!(d.keys_per_member, 11);
        // Each member gets a presence_state and at least the diff of its own track.
        assert!(d.presence_frames >= 2 * 31, "{}", report.table());
        assert!(d.all_complete_ms.is_some());
        assert!(report.server_cpu_pct.is_some());

        let too_many = PresenceOpts {
            members: 50_000,
            channels: 2,
            timeout: 1,
        };
        let e = presence::run(&ctx, too_many).await.unwrap_err();
        assert!(e.to_string().contains("more than 20000"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn churn_cycles_connect_join_leave_and_close() {
        let ctx = Arc::new(context(start().await));
        let opts = ChurnOpts {
            rate: 40,
            duration: 1,
            channels: 3,
        };
        let report = churn::run(Arc::clone(&ctx), opts).await.unwrap();
        let Detail::Churn(d) = &report.detail else {
            panic!()
        };
        assert_eq!(
            (d.started, d.completed, d.failed),
            (40, 40, 0),
            "{}",
            report.table()
        );
        assert_eq!(report.errors, 0);
        assert!(d.cycles_per_sec > 0.0);
        assert!(d.server_rss_before_kib.is_some() && d.server_rss_after_kib.is_some());
        assert!(d.rss_growth_kib.is_some() && !d.rss_samples_kib.is_empty());
        assert!(report.latency_ms.is_some() && d.cpu_us_per_cycle.is_some());
        assert!(
            report.table().contains("server RSS growth"),
            "{}",
            report.table()
        );

        // A server that is not there: every cycle fails, with the reason.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let ctx = Arc::new(Context {
            server_pid: None,
            ..context(addr)
        });
        let opts = ChurnOpts {
            rate: 5,
            duration: 1,
            channels: 1,
        };
        let report = churn::run(ctx, opts).await.unwrap();
        let Detail::Churn(d) = &report.detail else {
            panic!()
        };
        assert_eq!((d.completed, d.failed, report.errors), (0, 5, 5));
        assert!(
            d.failure_reasons.keys().any(|r| r.starts_with("connect")),
            "{:?}",
            d.failure_reasons
        );
    }
}
