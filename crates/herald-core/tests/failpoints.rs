//! The embedded broker at its failpoints (compiled in for tests only):
//! - a crash after the history append and before fan-out loses nothing: the publisher is told the
//!   publish failed, and the message is in history for a client that recovers after the restart;
//! - publishes racing a replay that is held at the failpoint reach the recovering subscriber
//!   exactly once, in order, after the replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use axum::extract::ws::Message;
use herald_core::history::{Clock, History, HistorySettings, RecoverRequest};
use herald_core::{
    Body, Broadcast, ChannelKey, Hub, HubSettings, Origin, SessionHandle, Stats, Subscriber,
};
use herald_protocol::Vsn;
use herald_store::Store;
use serde_json::value::RawValue;
use serde_json::{Value, json};

fn hub(dir: &std::path::Path) -> Arc<Hub> {
    let store = Store::open(dir, false).unwrap();
    let history = History::new(Arc::new(store), HistorySettings::default(), Clock::new());
    Hub::embedded(Stats::new(), HubSettings::default(), Some(history))
}

fn msg(key: &ChannelKey, n: u64) -> Broadcast {
    Broadcast::new(
        key.clone(),
        "e".into(),
        Body::Json(RawValue::from_string(json!({ "n": n }).to_string()).unwrap()),
        Origin::Text,
        None,
    )
}

fn numbers(s: &SessionHandle) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(Message::Text(t)) = s.try_next_frame() {
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        out.push(v["payload"]["payload"]["n"].as_u64().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_append_and_fanout_keeps_the_message_for_recovery() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let key = ChannelKey::new("room", false);
    let epoch = {
        let hub = hub(dir.path());
        let live = SessionHandle::new(hub.next_id(), Vsn::V1, 64);
        hub.subscribe(&key, Subscriber::ws(live.clone(), false, false));
        let first = hub.publish(msg(&key, 1)).await.unwrap();
        let epoch = first.position().unwrap().epoch.to_string();
        assert_eq!(numbers(&live), [1]);
        // The writer dies after the commit, before anyone is told.
        fail::cfg("history-after-append", "panic").unwrap();
        let crashed = hub.publish(msg(&key, 2)).await;
        assert!(
            crashed.is_err(),
            "a publish that was not delivered was reported as done"
        );
        assert!(numbers(&live).is_empty());
        // Later publishes fail loudly too: the node must restart.
        assert!(hub.publish(msg(&key, 3)).await.is_err());
        fail::remove("history-after-append");
        epoch
    };
    // Restarted over the same store: the message that was appended is there for recovery.
    let hub = hub(dir.path());
    let back = SessionHandle::new(hub.next_id(), Vsn::V1, 64);
    let request = RecoverRequest::After { epoch, offset: 1 };
    let (_, recovery) = hub
        .subscribe_recovering(&key, Subscriber::ws(back, false, false), &request)
        .await
        .unwrap();
    let (recovery, _live) = recovery.unwrap();
    assert!(recovery.recovered);
    assert_eq!(
        recovery
            .records
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        [2]
    );
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_a_replay_arrive_once_in_order_after_it() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let key = ChannelKey::new("race", false);
    let hub = hub(dir.path());
    let mut epoch = String::new();
    for n in 1..=10 {
        let p = hub.publish(msg(&key, n)).await.unwrap();
        epoch = p.position().unwrap().epoch.to_string();
    }
    // The replay read stops at the failpoint until the racing publishes are done.
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let reached_tx = std::sync::Mutex::new(reached_tx);
    fail::cfg_callback("history-replay", move || {
        let _ = reached_tx.lock().unwrap().send(());
        let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
    })
    .unwrap();
    let client = SessionHandle::new(hub.next_id(), Vsn::V1, 256);
    let recovering = tokio::spawn({
        let (hub, key, client) = (hub.clone(), key.clone(), client.clone());
        async move {
            let request = RecoverRequest::After { epoch, offset: 4 };
            let (_, r) = hub
                .subscribe_recovering(&key, Subscriber::ws(client, false, false), &request)
                .await
                .unwrap();
            r.unwrap()
        }
    });
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the replay never reached its failpoint");
    // Subscribed, replay not read yet: these are held for the client.
    for n in 11..=20 {
        hub.publish(msg(&key, n)).await.unwrap();
    }
    assert!(
        numbers(&client).is_empty(),
        "a live message overtook the replay"
    );
    go_tx.send(()).unwrap();
    let (recovery, live) = recovering.await.unwrap();
    fail::remove("history-replay");
    assert!(recovery.recovered);
    // What the replay holds depends on when the read copied the position; together with what was
    // held, it is every message after offset 4 exactly once.
    let mut seen: Vec<u64> = recovery.records.iter().map(|r| r.offset).collect();
    live.open();
    seen.extend(numbers(&client));
    assert_eq!(seen, (5..=20).collect::<Vec<u64>>());
    scenario.teardown();
}
