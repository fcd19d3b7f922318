//! Presence with a raw protocol client: state on join, diffs on track, re-track, untrack, leave and
//! socket loss (also a silent one, through a proxy that stops forwarding), shared keys, limits, and
//! diff batching.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_core::Limits;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn presence_cfg(key: &str) -> Value {
    json!({"presence": {"enabled": true, "key": key}})
}

async fn member(server: &Server, topic: &str, key: &str) -> (Client, String) {
    let mut c = server.client("2.0.0").await;
    let jr = c.join_ok(topic, presence_cfg(key)).await;
    let state = c.next_text().await;
    assert_eq!(state.event, "presence_state");
    assert_eq!(state.join_ref, json!(jr));
    (c, jr)
}

async fn track(c: &mut Client, jr: &str, topic: &str, payload: Value) -> Value {
    let r = c.next_ref();
    c.push(
        Some(jr),
        &r,
        topic,
        "presence",
        json!({"type": "presence", "event": "track", "payload": payload}),
    )
    .await;
    // Diffs from other members' changes may come first.
    loop {
        let f = c.next_text().await;
        if f.event == "presence_diff" {
            continue;
        }
        assert_eq!(
            (f.event.as_str(), f.ref_.clone()),
            ("phx_reply", json!(r)),
            "{f:?}"
        );
        return f.payload;
    }
}

/// Next presence_diff, skipping nothing else.
async fn diff(c: &mut Client) -> Value {
    let f = c.next_text().await;
    assert_eq!(f.event, "presence_diff", "{f:?}");
    assert_eq!(f.join_ref, Value::Null);
    f.payload
}

fn keys(side: &Value) -> Vec<String> {
    let mut k: Vec<String> = side.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn track_retrack_untrack_and_leave() {
    let server = Server::start(Limits {
        presence_batch_ms: 0,
        ..Limits::default()
    })
    .await;
    let t = "realtime:lobby";
    let (mut a, ajr) = member(&server, t, "alice").await;
    assert_eq!(
        track(&mut a, &ajr, t, json!({"status": "online"})).await["status"],
        "ok"
    );
    let d = diff(&mut a).await;
    assert_eq!(keys(&d["joins"]), ["alice"]);
    let first_ref = d["joins"]["alice"]["metas"][0]["phx_ref"].clone();
    assert_eq!(d["joins"]["alice"]["metas"][0]["status"], "online");

    // A late joiner gets the full state.
    let mut b = server.client("2.0.0").await;
    let bjr = b.join_ok(t, presence_cfg("bob")).await;
    let state = b.next_text().await.payload;
    assert_eq!(state["alice"]["metas"][0]["phx_ref"], first_ref);

    // Identical re-track: no diff. Changed re-track: one diff, new meta in joins, old in leaves.
    assert_eq!(
        track(&mut a, &ajr, t, json!({"status": "online"})).await["status"],
        "ok"
    );
    a.assert_quiet_and_alive().await;
    assert_eq!(
        track(&mut a, &ajr, t, json!({"status": "away"})).await["status"],
        "ok"
    );
    for c in [&mut a, &mut b] {
        let d = diff(c).await;
        assert_eq!(d["leaves"]["alice"]["metas"][0]["phx_ref"], first_ref);
        assert_eq!(d["joins"]["alice"]["metas"][0]["status"], "away");
        assert_eq!(d["joins"]["alice"]["metas"][0]["phx_ref_prev"], first_ref);
    }
    let state = server
        .running
        .as_ref()
        .unwrap()
        .state
        .hub
        .presence_state(&herald_core::ChannelKey::new("lobby", false));
    assert_eq!(state["alice"]["metas"].as_array().unwrap().len(), 1);

    // Untrack.
    let r = a.next_ref();
    a.push(
        Some(&ajr),
        &r,
        t,
        "presence",
        json!({"type": "presence", "event": "untrack"}),
    )
    .await;
    assert_eq!(a.reply(&r).await["status"], "ok");
    assert_eq!(keys(&diff(&mut b).await["leaves"]), ["alice"]);
    assert_eq!(keys(&diff(&mut a).await["leaves"]), ["alice"]);

    // Bob tracks, then his socket closes: Alice sees the leave.
    track(&mut b, &bjr, t, json!({})).await;
    assert_eq!(keys(&diff(&mut a).await["joins"]), ["bob"]);
    drop(b);
    assert_eq!(keys(&diff(&mut a).await["leaves"]), ["bob"]);
}

#[tokio::test]
async fn shared_key_has_one_meta_per_connection_and_empty_key_gets_a_uuid() {
    let server = Server::start(Limits {
        presence_batch_ms: 0,
        ..Limits::default()
    })
    .await;
    let t = "realtime:shared";
    let (mut a, ajr) = member(&server, t, "carol").await;
    let (mut b, bjr) = member(&server, t, "carol").await;
    track(&mut a, &ajr, t, json!({"tab": 1})).await;
    track(&mut b, &bjr, t, json!({"tab": 2})).await;
    let key = herald_core::ChannelKey::new("shared", false);
    let hub = server.running.as_ref().unwrap().state.hub.clone();
    assert_eq!(
        hub.presence_state(&key)["carol"]["metas"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (mut anon, njr) = member(&server, t, "").await;
    track(&mut anon, &njr, t, json!({})).await;
    let state = hub.presence_state(&key);
    let generated: Vec<&String> = state
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "carol")
        .collect();
    assert_eq!(generated.len(), 1);
    assert!(uuid_like(generated[0]), "{generated:?}");
    drop(a);
    // Converges to one meta under carol.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while hub.presence_state(&key)["carol"]["metas"]
        .as_array()
        .map(Vec::len)
        != Some(1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol kept two metas"
        );
        let _ = diff(&mut b).await;
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn presence_limits_close_only_the_offending_channel() {
    let limits = Limits {
        presence_batch_ms: 0,
        max_presence_payload_bytes: 100,
        presence_calls_per_window: 3,
        max_presence_members: 2,
        ..Limits::default()
    };
    let server = Server::start(limits).await;
    let t = "realtime:lim";
    // Non-object payload: error reply, channel stays.
    let (mut a, ajr) = member(&server, t, "a").await;
    let r = a.next_ref();
    a.push(
        Some(&ajr),
        &r,
        t,
        "presence",
        json!({"type": "presence", "event": "track", "payload": [1]}),
    )
    .await;
    assert_eq!(
        a.reply(&r).await["response"]["reason"],
        "Presence track payload must be a map"
    );
    // Oversize: system error then phx_close.
    let r = a.next_ref();
    a.push(
        Some(&ajr),
        &r,
        t,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"x": "y".repeat(200)}}),
    )
    .await;
    let f = a.next_text().await;
    assert_eq!(
        (f.event.as_str(), f.payload["message"].as_str()),
        ("system", Some("Track message size exceeded"))
    );
    assert_eq!(a.next_text().await.event, "phx_close");
    a.assert_quiet_and_alive().await;
    // Flood: the fourth call in the window closes the channel.
    let (mut b, bjr) = member(&server, t, "b").await;
    for i in 0..3 {
        assert_eq!(
            track(&mut b, &bjr, t, json!({"i": i})).await["status"],
            "ok"
        );
        let _ = diff(&mut b).await;
    }
    let r = b.next_ref();
    b.push(
        Some(&bjr),
        &r,
        t,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"i": 9}}),
    )
    .await;
    let f = b.next_text().await;
    assert_eq!(f.payload["message"], "Client presence rate limit exceeded");
    assert_eq!(b.next_text().await.event, "phx_close");
    // Member limit: two metas fit, the third is refused.
    let (mut c, cjr) = member(&server, "realtime:lim2", "c").await;
    let (mut d, djr) = member(&server, "realtime:lim2", "d").await;
    let (mut e, ejr) = member(&server, "realtime:lim2", "e").await;
    let t = "realtime:lim2";
    track(&mut c, &cjr, t, json!({})).await;
    track(&mut d, &djr, t, json!({})).await;
    let r = e.next_ref();
    e.push(
        Some(&ejr),
        &r,
        t,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {}}),
    )
    .await;
    loop {
        let f = e.next_text().await;
        if f.event == "system" {
            assert_eq!(
                f.payload["message"],
                "Too many presence members in this channel"
            );
            break;
        }
    }
}

/// A TCP proxy whose connection can be cut silently: after `cut`, bytes are no longer forwarded in
/// either direction and no FIN or RST is sent; both sockets stay open.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio_util::sync::CancellationToken,
}

async fn proxy_to(upstream: std::net::SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = tokio_util::sync::CancellationToken::new();
    let cut_rx = cut.clone();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let server = TcpStream::connect(upstream).await.unwrap();
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                    mut to: tokio::net::tcp::OwnedWriteHalf,
                    cut: tokio_util::sync::CancellationToken| async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    () = cut.cancelled() => {
                        // Hold both halves open forever: a silent, dead link.
                        std::future::pending::<()>().await;
                    }
                    n = tokio::io::AsyncReadExt::read(&mut from, &mut buf) => {
                        let Ok(n) = n else { return };
                        if n == 0 || to.write_all(&buf[..n]).await.is_err() { return; }
                    }
                }
            }
        };
        tokio::join!(pump(cr, sw, cut_rx.clone()), pump(sr, cw, cut_rx));
    });
    Proxy { addr, cut }
}

#[tokio::test]
async fn a_silently_dead_connection_leaves_presence_within_the_idle_timeout() {
    let server = Server::start(Limits {
        presence_batch_ms: 0,
        idle_timeout_secs: 1,
        ..Limits::default()
    })
    .await;
    let t = "realtime:cut";
    let proxy = proxy_to(server.addr).await;
    let url = format!(
        "ws://{}/socket/websocket?apikey={}&vsn=2.0.0",
        proxy.addr,
        server.token("anon")
    );
    let mut ghost = Client::connect(&url, "2.0.0").await;
    let gjr = ghost.join_ok(t, presence_cfg("ghost")).await;
    assert_eq!(ghost.next_text().await.event, "presence_state");
    track(&mut ghost, &gjr, t, json!({})).await;
    let (mut watcher, _) = member(&server, t, "watcher").await;
    proxy.cut.cancel();
    // The watcher keeps its own connection alive while waiting for the leave.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(6);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leave for the dead connection"
        );
        watcher
            .push(None, "hb", "phoenix", "heartbeat", json!({}))
            .await;
        let f = watcher.next_text().await;
        if f.event == "presence_diff" && f.payload["leaves"].get("ghost").is_some() {
            break;
        }
    }
    drop(ghost);
}

#[tokio::test]
async fn batching_coalesces_a_crowd_into_few_diffs() {
    // A long window makes the coalescing independent of how fast the test machine is.
    for batch_ms in [0u64, 1000] {
        let server = Server::start(Limits {
            presence_batch_ms: batch_ms,
            ..Limits::default()
        })
        .await;
        let t = "realtime:crowd";
        let n = 40;
        let mut members = Vec::new();
        for i in 0..n {
            let (c, jr) = member(&server, t, &format!("m{i}")).await;
            members.push((c, jr));
        }
        for (c, jr) in members.iter_mut() {
            let r = c.next_ref();
            c.push(
                Some(jr),
                &r,
                t,
                "presence",
                json!({"type": "presence", "event": "track", "payload": {}}),
            )
            .await;
        }
        // Everyone converges to n keys, counting diff frames received.
        let mut frames = 0usize;
        for (c, _) in members.iter_mut() {
            let mut seen = std::collections::HashSet::new();
            while seen.len() < n {
                let f = c.next_text().await;
                match f.event.as_str() {
                    "presence_diff" => {
                        frames += 1;
                        seen.extend(keys(&f.payload["joins"]));
                    }
                    "phx_reply" => {}
                    other => panic!("unexpected {other}"),
                }
            }
        }
        if batch_ms == 0 {
            assert_eq!(
                frames,
                n * n,
                "without batching every track is a diff to every member"
            );
        } else {
            assert!(
                frames < n * n / 4,
                "batching sent {frames} diff frames for {n} members"
            );
        }
    }
}
