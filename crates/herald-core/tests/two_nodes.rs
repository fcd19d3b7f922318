//! Two hubs in one process joined by a test broker over one shared in-memory log: the cluster
//! semantics of the broker seam, before any external engine. A message published on hub A reaches
//! hub B's subscribers; both hubs see one channel's messages in the same order under concurrent
//! publishers; a client recovers on B from a position it got on A; presence tracked on A is seen on
//! B; and `self: false` holds when connection ids collide across the hubs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::ws::Message;
use herald_core::broker::{BoxFuture, Marker};
use herald_core::history::{HistoryError, Position, RecoverRequest, Recovery};
use herald_core::message::{ChannelEvent, Sender};
use herald_core::registry::Fanout;
use herald_core::{
    Body, Broadcast, Broker, ChannelKey, Event, EventHandler, Hub, HubSettings, Origin,
    PublishError, Published, SessionHandle, Stats, Subscriber,
};
use herald_protocol::Vsn;
use herald_store::Record;
use serde_json::value::RawValue;
use serde_json::{Value, json};

const EPOCH: &str = "shared";

/// The shared engine: one log per channel, and the nodes with their interest.
#[derive(Default)]
struct Shared {
    logs: HashMap<ChannelKey, Vec<Arc<Broadcast>>>,
    nodes: Vec<(Weak<EventHandler>, HashMap<ChannelKey, usize>)>,
    keys: HashMap<(ChannelKey, String), u64>,
}

impl Shared {
    /// Hands an event to every node that listens to its channel, in the log's order (the lock
    /// is held: one order for every node).
    fn fan_out(&self, key: &ChannelKey, event: &Event) -> Fanout {
        let mut total = Fanout::default();
        for (handler, interest) in &self.nodes {
            if interest.get(key).copied().unwrap_or(0) == 0 {
                continue;
            }
            if let Some(h) = handler.upgrade() {
                total.queued += h.handle(event).queued;
            }
        }
        total
    }
}

struct TestBroker {
    shared: Arc<Mutex<Shared>>,
    node: usize,
}

fn record(offset: u64, b: &Broadcast) -> Record {
    let (raw, payload) = match &b.body {
        Body::Json(j) => (false, j.get().as_bytes().to_vec()),
        Body::Raw(r) => (true, r.to_vec()),
    };
    Record {
        offset,
        ts_ms: 0,
        id: b.id.clone().unwrap_or_default(),
        event: b.event.clone(),
        origin: u8::from(b.origin == Origin::Binary),
        raw,
        payload,
    }
}

impl Broker for TestBroker {
    fn publish(&self, mut msg: Broadcast) -> BoxFuture<'_, Result<Published, PublishError>> {
        let mut shared = self.shared.lock().unwrap();
        let key = msg.channel.clone();
        if let Some(k) = msg.idempotency_key.clone()
            && let Some(offset) = shared.keys.get(&(key.clone(), k.clone()))
        {
            let position = Position {
                epoch: Arc::from(EPOCH),
                offset: *offset,
            };
            return Box::pin(std::future::ready(Ok(Published::Duplicate { position })));
        }
        let offset = shared.logs.get(&key).map_or(0, Vec::len) as u64 + 1;
        let position = Position {
            epoch: Arc::from(EPOCH),
            offset,
        };
        msg.id.get_or_insert_with(|| format!("m{offset}"));
        msg.position = Some(position.clone());
        if let Some(k) = msg.idempotency_key.clone() {
            shared.keys.insert((key.clone(), k), offset);
        }
        let msg = Arc::new(msg);
        shared
            .logs
            .entry(key.clone())
            .or_default()
            .push(msg.clone());
        let fanout = shared.fan_out(&key, &Event::Broadcast(msg));
        Box::pin(std::future::ready(Ok(Published::Delivered {
            position: Some(position),
            fanout,
        })))
    }

    fn publish_group(
        &self,
        msgs: Vec<Broadcast>,
        _marker: Option<Marker>,
    ) -> BoxFuture<'_, Result<Vec<Published>, PublishError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for m in msgs {
                out.push(self.publish(m).await?);
            }
            Ok(out)
        })
    }

    fn emit(&self, event: ChannelEvent) {
        let shared = self.shared.lock().unwrap();
        let key = event.channel.clone();
        shared.fan_out(&key, &Event::Channel(Arc::new(event)));
    }

    fn subscribe(&self, key: &ChannelKey) {
        *self.shared.lock().unwrap().nodes[self.node]
            .1
            .entry(key.clone())
            .or_default() += 1;
    }

    fn unsubscribe(&self, key: &ChannelKey) {
        let mut shared = self.shared.lock().unwrap();
        let interest = &mut shared.nodes[self.node].1;
        if let Some(n) = interest.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                interest.remove(key);
            }
        }
    }

    fn keeps_history(&self, _key: &ChannelKey) -> bool {
        true
    }

    fn recover(
        &self,
        key: ChannelKey,
        request: RecoverRequest,
    ) -> BoxFuture<'_, Result<Recovery, HistoryError>> {
        let shared = self.shared.lock().unwrap();
        let log = shared.logs.get(&key).cloned().unwrap_or_default();
        drop(shared);
        let top = log.len() as u64;
        let (recovered, records) = match request {
            RecoverRequest::After { epoch, offset } if epoch == EPOCH && offset <= top => (
                true,
                log.iter()
                    .enumerate()
                    .skip(offset as usize)
                    .map(|(i, b)| record(i as u64 + 1, b))
                    .collect(),
            ),
            _ => (false, Vec::new()),
        };
        Box::pin(std::future::ready(Ok(Recovery {
            recovered,
            epoch: Arc::from(EPOCH),
            top,
            records,
        })))
    }

    fn position(&self, key: ChannelKey) -> BoxFuture<'_, Result<Position, HistoryError>> {
        let top = self
            .shared
            .lock()
            .unwrap()
            .logs
            .get(&key)
            .map_or(0, Vec::len);
        Box::pin(std::future::ready(Ok(Position {
            epoch: Arc::from(EPOCH),
            offset: top as u64,
        })))
    }

    fn read_after(
        &self,
        key: ChannelKey,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, HistoryError>> {
        let shared = self.shared.lock().unwrap();
        let records = shared.logs.get(&key).map_or_else(Vec::new, |log| {
            log.iter()
                .enumerate()
                .skip(after as usize)
                .take(limit)
                .map(|(i, b)| record(i as u64 + 1, b))
                .collect()
        });
        Box::pin(std::future::ready(Ok(records)))
    }

    fn marker(&self, _name: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, HistoryError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// Two hubs, `a` and `b`, over one shared log.
fn cluster() -> (Arc<Hub>, Arc<Hub>) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let node = |name: &str| {
        let shared = shared.clone();
        let settings = HubSettings {
            node_id: name.to_owned(),
            presence_batch: Duration::ZERO,
            ..HubSettings::default()
        };
        Hub::with_broker(Stats::new(), settings, move |handler| {
            let mut s = shared.lock().unwrap();
            s.nodes.push((Arc::downgrade(&handler), HashMap::new()));
            // The shared state keeps only a weak reference: the broker owns the handler.
            let node = s.nodes.len() - 1;
            drop(s);
            Arc::new(Owned {
                inner: TestBroker { shared, node },
                _handler: handler,
            }) as Arc<dyn Broker>
        })
    };
    (node("a"), node("b"))
}

/// A broker that keeps its node's handler alive.
struct Owned {
    inner: TestBroker,
    _handler: Arc<EventHandler>,
}

impl Broker for Owned {
    fn publish(&self, msg: Broadcast) -> BoxFuture<'_, Result<Published, PublishError>> {
        self.inner.publish(msg)
    }
    fn publish_group(
        &self,
        msgs: Vec<Broadcast>,
        marker: Option<Marker>,
    ) -> BoxFuture<'_, Result<Vec<Published>, PublishError>> {
        self.inner.publish_group(msgs, marker)
    }
    fn emit(&self, event: ChannelEvent) {
        self.inner.emit(event)
    }
    fn subscribe(&self, key: &ChannelKey) {
        self.inner.subscribe(key)
    }
    fn unsubscribe(&self, key: &ChannelKey) {
        self.inner.unsubscribe(key)
    }
    fn keeps_history(&self, key: &ChannelKey) -> bool {
        self.inner.keeps_history(key)
    }
    fn recover(
        &self,
        key: ChannelKey,
        request: RecoverRequest,
    ) -> BoxFuture<'_, Result<Recovery, HistoryError>> {
        self.inner.recover(key, request)
    }
    fn position(&self, key: ChannelKey) -> BoxFuture<'_, Result<Position, HistoryError>> {
        self.inner.position(key)
    }
    fn read_after(
        &self,
        key: ChannelKey,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, HistoryError>> {
        self.inner.read_after(key, after, limit)
    }
    fn marker(&self, name: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, HistoryError>> {
        self.inner.marker(name)
    }
}

fn json_body(v: Value) -> Body {
    Body::Json(RawValue::from_string(v.to_string()).unwrap())
}

fn msg(key: &ChannelKey, n: u64, sender: Option<Sender>) -> Broadcast {
    Broadcast::new(
        key.clone(),
        "e".into(),
        json_body(json!({ "n": n })),
        Origin::Text,
        sender,
    )
}

/// Every frame waiting in a session's queue, as JSON.
fn drain(s: &SessionHandle) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(frame) = s.try_next_frame() {
        let Message::Text(t) = frame else {
            panic!("a text frame was expected")
        };
        out.push(serde_json::from_str(t.as_str()).unwrap());
    }
    out
}

/// The `n` of each broadcast frame, in order.
fn numbers(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["event"] == "broadcast")
        .map(|f| f["payload"]["payload"]["n"].as_u64().unwrap())
        .collect()
}

fn offsets(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["event"] == "broadcast")
        .map(|f| f["payload"]["meta"]["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_message_published_on_a_reaches_subscribers_of_b() {
    let (a, b) = cluster();
    let key = ChannelKey::new("room", false);
    let on_b = SessionHandle::new(b.next_id(), Vsn::V1, 64);
    b.subscribe(&key, Subscriber::ws(on_b.clone(), false, false));
    a.publish(msg(&key, 1, None)).await.unwrap();
    assert_eq!(numbers(&drain(&on_b)), [1]);
    // A channel nobody on B listens to is not handed to B.
    let other = ChannelKey::new("elsewhere", false);
    let f = a.publish(msg(&other, 2, None)).await.unwrap();
    assert!(matches!(f, Published::Delivered { fanout, .. } if fanout.queued == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_hubs_see_one_order_under_two_concurrent_publishers() {
    let (a, b) = cluster();
    let key = ChannelKey::new("race", false);
    let on_a = SessionHandle::new(a.next_id(), Vsn::V1, 1024);
    let on_b = SessionHandle::new(b.next_id(), Vsn::V1, 1024);
    a.subscribe(&key, Subscriber::ws(on_a.clone(), false, false));
    b.subscribe(&key, Subscriber::ws(on_b.clone(), false, false));
    let publisher = |hub: Arc<Hub>, base: u64| {
        let key = key.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                hub.publish(msg(&key, base + n, None)).await.unwrap();
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let (x, y) = (publisher(a.clone(), 0), publisher(b.clone(), 1000));
    x.await.unwrap();
    y.await.unwrap();
    let (fa, fb) = (drain(&on_a), drain(&on_b));
    assert_eq!(numbers(&fa).len(), 600);
    assert_eq!(
        numbers(&fa),
        numbers(&fb),
        "the two hubs saw different orders"
    );
    assert_eq!(offsets(&fa), (1..=600).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_client_recovers_on_b_from_a_position_it_got_on_a() {
    let (a, b) = cluster();
    let key = ChannelKey::new("history", false);
    let first = SessionHandle::new(a.next_id(), Vsn::V1, 64);
    let sub = a.subscribe(&key, Subscriber::ws(first.clone(), false, false));
    for n in 1..=3 {
        a.publish(msg(&key, n, None)).await.unwrap();
    }
    let seen = drain(&first);
    let last = *offsets(&seen).last().unwrap();
    let epoch = seen[0]["payload"]["meta"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    a.unsubscribe(&key, sub);
    // Missed while away.
    for n in 4..=6 {
        a.publish(msg(&key, n, None)).await.unwrap();
    }
    let again = SessionHandle::new(b.next_id(), Vsn::V1, 64);
    let request = RecoverRequest::After {
        epoch,
        offset: last,
    };
    let (_, recovery) = b
        .subscribe_recovering(&key, Subscriber::ws(again.clone(), false, false), &request)
        .await
        .unwrap();
    let (recovery, live) = recovery.unwrap();
    assert!(recovery.recovered);
    assert_eq!(
        recovery
            .records
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        [4, 5, 6]
    );
    // Published before the replay is out: held, then delivered after it, once.
    a.publish(msg(&key, 7, None)).await.unwrap();
    assert!(
        drain(&again).is_empty(),
        "a live message overtook the replay"
    );
    live.open();
    assert_eq!(numbers(&drain(&again)), [7]);
    a.publish(msg(&key, 8, None)).await.unwrap();
    assert_eq!(numbers(&drain(&again)), [8]);
}

#[tokio::test]
async fn presence_tracked_on_a_is_seen_on_b() {
    let (a, b) = cluster();
    let key = ChannelKey::new("lobby", false);
    let watcher = SessionHandle::new(b.next_id(), Vsn::V1, 64);
    b.subscribe(&key, Subscriber::ws(watcher.clone(), false, true));
    let member = SessionHandle::new(a.next_id(), Vsn::V1, 64);
    let id = a.subscribe(&key, Subscriber::ws(member, false, true));
    let mut state = serde_json::Map::new();
    state.insert("status".into(), json!("online"));
    a.presence_track(&key, "ada", id, state);
    let frames = drain(&watcher);
    let diff = frames
        .iter()
        .find(|f| f["event"] == "presence_diff")
        .expect("no presence diff reached hub b");
    assert_eq!(
        diff["payload"]["joins"]["ada"]["metas"][0]["status"],
        "online"
    );
    a.unsubscribe(&key, id);
    let frames = drain(&watcher);
    let diff = frames
        .iter()
        .find(|f| f["event"] == "presence_diff")
        .expect("no leave reached hub b");
    assert!(diff["payload"]["leaves"].get("ada").is_some());
}

#[tokio::test]
async fn self_false_holds_when_connection_ids_collide_across_hubs() {
    let (a, b) = cluster();
    let key = ChannelKey::new("echo", false);
    // Connection 1 on each hub, both with `self: false`.
    let sender_a = SessionHandle::new(1, Vsn::V1, 64);
    let namesake_b = SessionHandle::new(1, Vsn::V1, 64);
    a.subscribe(&key, Subscriber::ws(sender_a.clone(), false, false));
    b.subscribe(&key, Subscriber::ws(namesake_b.clone(), false, false));
    a.publish(msg(&key, 1, Some(a.sender(1)))).await.unwrap();
    assert!(
        drain(&sender_a).is_empty(),
        "the sender received its own message"
    );
    assert_eq!(numbers(&drain(&namesake_b)), [1]);
}
