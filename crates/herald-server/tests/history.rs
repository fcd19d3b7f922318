//! History over WebSocket: positions in every broadcast, recovery after a dropped socket (exact replay,
//! or `recovered: false`), the join/publish race, `replay {since, limit}`, idempotent publish, and the
//! history HTTP endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use herald_core::Limits;
use herald_core::history::{HistorySettings, RetentionRule};
use serde_json::{Value, json};

async fn server() -> Server {
    let rules = [RetentionRule {
        topics: "tiny:*".into(),
        max_messages: 3,
        max_age: "1h".into(),
    }];
    Server::with_history(
        Limits::default(),
        HistorySettings::default().with_rules(&rules).unwrap(),
    )
    .await
}

fn meta_of(f: &Frame) -> Value {
    f.payload["meta"].clone()
}

/// Parses a kind-4 frame into (event, metadata JSON, payload bytes).
fn kind4(b: &[u8]) -> (String, Value, Vec<u8>) {
    assert_eq!(b[0], 4);
    let (t, e, m) = (b[1] as usize, b[2] as usize, b[3] as usize);
    let event = String::from_utf8(b[5 + t..5 + t + e].to_vec()).unwrap();
    let meta = serde_json::from_slice(&b[5 + t + e..5 + t + e + m]).unwrap();
    (event, meta, b[5 + t + e + m..].to_vec())
}

#[tokio::test]
async fn every_broadcast_carries_its_position_on_both_serializers() {
    let server = server().await;
    let mut v1 = server.client("1.0.0").await;
    v1.join_ok("realtime:pos", json!({})).await;
    let mut v2 = server.client("2.0.0").await;
    let jr = v2
        .join_ok("realtime:pos", json!({"broadcast": {"self": true}}))
        .await;
    assert_eq!(
        server.http_broadcast("pos", "a", json!({"n": 1})).await,
        202
    );
    let m1 = meta_of(&v1.next_text().await);
    let m2 = meta_of(&v2.next_text().await);
    assert_eq!(m1, m2);
    assert_eq!(m1["offset"], 1);
    assert!(m1["epoch"].is_string() && m1["id"].is_string());
    v2.send_binary(kind3(&jr, "7", "realtime:pos", "b", 1, br#"{"n":2}"#))
        .await;
    let Got::Binary(frame) = v2.next().await else {
        panic!("expected kind 4")
    };
    let (event, meta, payload) = kind4(&frame);
    assert_eq!(
        (event.as_str(), meta["offset"].clone(), payload),
        ("b", json!(2), br#"{"n":2}"#.to_vec())
    );
    assert_eq!(meta["epoch"], m1["epoch"]);
    assert_eq!(meta_of(&v1.next_text().await)["offset"], 2);
}

#[tokio::test]
async fn a_dropped_client_recovers_exactly_what_it_missed() {
    let server = server().await;
    let mut c = server.client("2.0.0").await;
    c.join_ok("realtime:rec", json!({})).await;
    for i in 0..3 {
        server.http_broadcast("rec", "e", json!({"i": i})).await;
    }
    let mut last = Value::Null;
    for _ in 0..3 {
        last = meta_of(&c.next_text().await);
    }
    drop(c);
    for i in 3..8 {
        assert_eq!(
            server.http_broadcast("rec", "e", json!({"i": i})).await,
            202
        );
    }
    let mut back = server.client("2.0.0").await;
    let recover =
        json!({"broadcast": {"recover": {"epoch": last["epoch"], "offset": last["offset"]}}});
    let reply = back.join("realtime:rec", recover).await;
    assert_eq!(reply["status"], "ok");
    assert_eq!(
        reply["response"]["recovery"],
        json!({"recovered": true, "epoch": last["epoch"], "offset": 8})
    );
    for i in 3..8 {
        let f = back.next_text().await;
        assert_eq!(f.payload["payload"]["i"], i);
        assert_eq!(f.payload["meta"]["replayed"], true);
        assert_eq!(f.payload["meta"]["offset"], i + 1);
    }
    // Then live, without a gap or a duplicate.
    server.http_broadcast("rec", "e", json!({"i": 8})).await;
    let f = back.next_text().await;
    assert_eq!(
        (
            f.payload["payload"]["i"].clone(),
            f.payload["meta"].get("replayed").cloned()
        ),
        (json!(8), None)
    );
}

#[tokio::test]
async fn unrecoverable_positions_say_so_and_replay_nothing() {
    let server = server().await;
    let mut c = server.client("2.0.0").await;
    c.join_ok("realtime:tiny:x", json!({})).await;
    for i in 0..6 {
        server.http_broadcast("tiny:x", "e", json!({"i": i})).await;
    }
    let epoch = meta_of(&c.next_text().await)["epoch"].clone();
    for (name, recover) in [
        ("older than retention", json!({"epoch": epoch, "offset": 1})),
        ("another epoch", json!({"epoch": "nope", "offset": 5})),
        ("ahead of the log", json!({"epoch": epoch, "offset": 99})),
    ] {
        let mut other = server.client("2.0.0").await;
        let reply = other
            .join(
                "realtime:tiny:x",
                json!({"broadcast": {"recover": recover}}),
            )
            .await;
        assert_eq!(reply["response"]["recovery"]["recovered"], false, "{name}");
        assert_eq!(reply["response"]["recovery"]["offset"], 6, "{name}");
        other.assert_quiet_and_alive().await;
    }
    // Within retention it works.
    let mut ok = server.client("1.0.0").await;
    let reply = ok
        .join(
            "realtime:tiny:x",
            json!({"broadcast": {"recover": {"epoch": epoch, "offset": 3}}}),
        )
        .await;
    assert_eq!(reply["response"]["recovery"]["recovered"], true);
    for i in 3..6 {
        assert_eq!(ok.next_text().await.payload["payload"]["i"], i);
    }
}

#[tokio::test]
async fn recovering_joins_racing_publishes_see_every_message_once_in_order() {
    let server = Arc::new(server().await);
    let total = 600u64;
    let mut first = server.client("2.0.0").await;
    let reply = first
        .join(
            "realtime:race",
            json!({"broadcast": {"recover": {"epoch": "", "offset": 0}}}),
        )
        .await;
    let epoch = reply["response"]["recovery"]["epoch"].clone();
    drop(first);
    let publisher = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 1..=total {
                assert_eq!(
                    server.http_broadcast("race", "e", json!({"i": i})).await,
                    202
                );
            }
        })
    };
    // Three clients that keep dropping and recovering while the publisher runs.
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let server = server.clone();
        let epoch = epoch.clone();
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<u64> = Vec::new();
            let mut round = 0u64;
            while seen.last().copied().unwrap_or(0) < total {
                round += 1;
                let mut c = server.client("2.0.0").await;
                let last = seen.last().copied().unwrap_or(0);
                let reply = c
                    .join(
                        "realtime:race",
                        json!({"broadcast": {"recover": {"epoch": epoch, "offset": last}}}),
                    )
                    .await;
                assert_eq!(
                    reply["response"]["recovery"]["recovered"], true,
                    "reader {r} round {round}"
                );
                // Read a few (replayed or live), then drop the socket.
                let budget = 20 + (round * 7 + r * 13) % 50;
                for _ in 0..budget {
                    if seen.last().copied().unwrap_or(0) == total {
                        break;
                    }
                    let f = c.next_text().await;
                    assert_eq!(f.event, "broadcast");
                    seen.push(f.payload["meta"]["offset"].as_u64().unwrap());
                }
            }
            seen
        }));
    }
    publisher.await.unwrap();
    for reader in readers {
        let seen = reader.await.unwrap();
        let expected: Vec<u64> = (1..=total).collect();
        assert_eq!(
            seen, expected,
            "a reader missed, repeated or reordered messages"
        );
    }
}

#[tokio::test]
async fn replay_since_serves_the_newest_messages_oldest_first() {
    let server = server().await;
    for i in 0..10 {
        server.http_broadcast("since", "e", json!({"i": i})).await;
    }
    let mut c = server.client("2.0.0").await;
    let reply = c
        .join(
            "realtime:since",
            json!({"broadcast": {"replay": {"since": 0, "limit": 4}}}),
        )
        .await;
    assert_eq!(reply["status"], "ok");
    for i in 6..10 {
        let f = c.next_text().await;
        assert_eq!(
            (
                f.payload["payload"]["i"].clone(),
                f.payload["meta"]["replayed"].clone()
            ),
            (json!(i), json!(true))
        );
    }
    c.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn idempotent_publish_is_delivered_once() {
    let server = server().await;
    let mut c = server.client("2.0.0").await;
    let jr = c
        .join_ok(
            "realtime:idem",
            json!({"broadcast": {"ack": true, "self": true}}),
        )
        .await;
    let mut watcher = server.client("2.0.0").await;
    watcher.join_ok("realtime:idem", json!({})).await;
    let body = json!({"messages": [{"topic": "idem", "event": "e", "payload": {"n": 1}, "idempotency_key": "order-1"}]});
    assert_eq!(server.http_batch(body.clone()).await, 202);
    assert_eq!(server.http_batch(body).await, 202);
    // Over WebSocket: the key rides in the push's meta.
    for r in ["a1", "a2"] {
        let push = json!({"type": "broadcast", "event": "e", "payload": {"n": 2}, "meta": {"idempotency_key": "ws-1"}});
        c.push(Some(&jr), r, "realtime:idem", "broadcast", push)
            .await;
    }
    let mut got = Vec::new();
    let mut acks = 0;
    while acks < 2 || got.len() < 2 {
        let f = c.next_text().await;
        match f.event.as_str() {
            "phx_reply" => {
                assert_eq!(f.payload["status"], "ok");
                acks += 1;
            }
            "broadcast" => got.push(f.payload["payload"]["n"].clone()),
            other => panic!("{other}"),
        }
    }
    assert_eq!(got, [json!(1), json!(2)]);
    assert_eq!(watcher.next_text().await.payload["payload"]["n"], 1);
    assert_eq!(watcher.next_text().await.payload["payload"]["n"], 2);
    watcher.assert_quiet_and_alive().await;
    c.assert_quiet_and_alive().await;
}

#[tokio::test]
async fn history_endpoint_lists_stored_messages() {
    let server = server().await;
    for i in 0..5 {
        server.http_broadcast("h", "e", json!({"i": i})).await;
    }
    let auth = format!("Bearer {}", server.token("service_role"));
    let (status, body) = http_request(
        server.addr,
        "GET",
        "/api/channels/h/history?after=2&limit=2",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["offset"], 5);
    let offsets: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4]);
    assert_eq!(v["messages"][0]["payload"]["i"], 2);
    let anon = format!("Bearer {}", server.token("anon"));
    let (status, _) = http_request(
        server.addr,
        "GET",
        "/api/channels/h/history",
        &[("Authorization", &anon)],
        b"",
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_history_endpoint_lists_a_deeply_nested_payload_as_it_was_sent() {
    let server = server().await;
    // 200 levels: more than a JSON tree parser takes by default.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let body = format!(r#"{{"messages":[{{"topic":"deep","event":"e","payload":{deep}}}]}}"#);
    let auth = format!("Bearer {}", server.token("service_role"));
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _) = http_request(
        server.addr,
        "POST",
        "/api/broadcast",
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let (status, listed) = http_request(
        server.addr,
        "GET",
        "/api/channels/deep/history",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        listed.contains(&format!(r#""payload":{deep}"#)),
        "the payload is not listed as sent: {listed}"
    );
}

/// Bytes under `dir`, recursively.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test]
async fn a_hundred_thousand_topics_joined_and_left_leave_nothing_behind() {
    let server = Server::with_history(
        Limits {
            max_joins_per_second: 1_000_000,
            ..Limits::default()
        },
        HistorySettings::default(),
    )
    .await;
    let state = server.running.as_ref().unwrap().state.clone();
    let history = || state.hub.history().unwrap();
    let data = server.data.as_ref().unwrap().path().to_owned();
    let mut c = server.client("2.0.0").await;
    // A channel with messages, which must stay.
    assert_eq!(server.http_broadcast("kept", "e", json!({})).await, 202);
    history().sync().unwrap();
    let before = bytes_under(&data);
    // 100,000 distinct topics, half of them with a recovering join (which reads history), in
    // rounds of 100 (the per-connection channel limit).
    let recover = json!({"broadcast": {"recover": {"epoch": "", "offset": 0}}});
    for round in 0..1_000u32 {
        let mut refs = Vec::new();
        for i in 0..100u32 {
            let r = c.next_ref();
            let topic = format!("realtime:random-{round}-{i}-{:08x}", rand_u32(round, i));
            let config = if i % 2 == 0 {
                recover.clone()
            } else {
                json!({})
            };
            c.push(
                Some(&r),
                &r,
                &topic,
                "phx_join",
                json!({ "config": config }),
            )
            .await;
            refs.push((r, topic));
        }
        for (r, _) in &refs {
            let reply = c.reply(r).await;
            assert_eq!(reply["status"], "ok", "{reply}");
        }
        for (_, topic) in &refs {
            let r = c.next_ref();
            c.push(None, &r, topic, "phx_leave", json!({})).await;
            assert_eq!(c.reply(&r).await["status"], "ok");
            // `phx_close` for the join.
            assert_eq!(c.next_text().await.event, "phx_close");
        }
    }
    // Nothing was written for them, and once the sweep has run nothing of them stays in memory.
    history().sync().unwrap();
    let after = bytes_under(&data);
    eprintln!("data directory: {before} bytes before, {after} after 100,000 topics");
    assert_eq!(
        history().stored_channels().unwrap(),
        1,
        "only `kept` is stored"
    );
    assert!(after < before + 256 * 1024, "{before} -> {after} bytes");
    // The sweep (once a second on its own) drops the logs no one uses.
    history().sweep().unwrap();
    assert_eq!(
        history().cached_channels(),
        1,
        "channel logs still in memory"
    );
    assert_eq!(state.hub.channels().len(), 0);
    // The channel with a message is intact.
    let reply = c
        .join(
            "realtime:kept",
            json!({"broadcast": {"recover": {"epoch": "", "offset": 0}}}),
        )
        .await;
    assert_eq!(reply["response"]["recovery"]["offset"], 1, "{reply}");
}

/// A spread of bits for topic names (no randomness needed, only distinctness).
fn rand_u32(a: u32, b: u32) -> u32 {
    a.wrapping_mul(2_654_435_761) ^ b.wrapping_mul(40_503)
}
