//! The hub: where a node's subscriptions are made, and where publishes enter the broker.
//!
//! Everything published (broadcasts from any transport, `realtime.send` from SQL, presence diffs)
//! goes to the broker; what the broker hands back reaches subscribers through its event handler
//! only. The hub keeps the node's registry and presence, and tells the broker which channels the
//! node listens to, in order with the registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::broker::Broker;
pub use crate::broker::{PublishError, Published};
use crate::channel::ChannelKey;
use crate::delivery::EventHandler;
use crate::embedded::Embedded;
use crate::history::{History, HistoryError, RecoverRequest, Recovery};
use crate::message::{Broadcast, ChannelEvent};
use crate::presence::{Presence, TrackOutcome};
use crate::registry::{Gate, Registry, Subscriber};
use crate::stats::Stats;

/// Settings of a hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// This node's id (owner of its presences, and part of every sender identity).
    pub node_id: String,
    /// Presence changes within this window go out as one diff (zero: one diff per change).
    pub presence_batch: Duration,
    /// Presence metas per channel at most (0: unlimited).
    pub max_presence_members: usize,
    /// Distinct channels with local subscribers at most (0: unlimited).
    pub max_channels: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            node_id: "node".to_owned(),
            presence_batch: Duration::from_millis(50),
            max_presence_members: 0,
            max_channels: 0,
        }
    }
}

/// The reply to a join refused because the node has `max_channels` channels open.
pub const NODE_CHANNEL_LIMIT: &str = "NodeChannelLimitReached: Too many channels on this node";

/// A recovering subscription whose live messages are held until [`Live::open`] (or its drop):
/// queue the replay first, then open, and the subscriber sees every message once, in order.
#[derive(Debug)]
pub struct Live {
    registry: Arc<Registry>,
    key: ChannelKey,
    id: u64,
    gate: Arc<Gate>,
    replayed: u64,
    opened: bool,
}

impl Live {
    /// Releases what was held while the replay was read (skipping what the replay carried).
    pub fn open(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if !std::mem::replace(&mut self.opened, true) {
            self.registry
                .open_gate(&self.key, self.id, &self.gate, self.replayed);
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.release();
    }
}

/// Routes messages between publishers and local subscribers, through the broker.
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    presence: Presence,
    history: Option<Arc<History>>,
    settings: HubSettings,
    stats: Stats,
    next_id: AtomicU64,
    me: Weak<Hub>,
    /// `settings.node_id`, shared by every sender identity this node hands out.
    node: Arc<str>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// A single-node hub with the embedded broker (and its history, when given).
    pub fn embedded(stats: Stats, settings: HubSettings, history: Option<History>) -> Arc<Hub> {
        let history = history.map(Arc::new);
        let kept = history.clone();
        Hub::build(stats, settings, kept, move |handler| {
            Arc::new(Embedded::new(handler, history)) as Arc<dyn Broker>
        })
    }

    /// A hub over a broker made by `broker` from this node's event handler.
    pub fn with_broker(
        stats: Stats,
        settings: HubSettings,
        broker: impl FnOnce(Arc<EventHandler>) -> Arc<dyn Broker>,
    ) -> Arc<Hub> {
        Hub::build(stats, settings, None, broker)
    }

    fn build(
        stats: Stats,
        settings: HubSettings,
        history: Option<Arc<History>>,
        broker: impl FnOnce(Arc<EventHandler>) -> Arc<dyn Broker>,
    ) -> Arc<Hub> {
        let node: Arc<str> = Arc::from(settings.node_id.as_str());
        let registry = Arc::new(Registry::new(stats.clone(), node.clone()));
        let broker = broker(Arc::new(EventHandler::new(registry.clone(), stats.clone())));
        Arc::new_cyclic(|me| Hub {
            registry,
            broker,
            presence: Presence::new(&settings.node_id, settings.max_presence_members),
            history,
            settings,
            stats,
            next_id: AtomicU64::new(1),
            me: me.clone(),
            node,
        })
    }

    /// A node-unique id (connections, subscriptions).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The identity of connection `conn` of this node, as senders carry it.
    pub fn sender(&self, conn: u64) -> crate::message::Sender {
        crate::message::Sender {
            node: self.node.clone(),
            conn,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The node's metric handles.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Whether a subscription to `key` may be made: the channel is open already, or the node has
    /// fewer than `max_channels` open. Checked before subscribing; joins racing on other threads may
    /// pass it together, so the cap can be exceeded by as many joins as run at once.
    pub fn admits(&self, key: &ChannelKey) -> bool {
        let max = self.settings.max_channels;
        max == 0 || self.registry.open_channels() < max || self.registry.is_open(key)
    }

    /// Subscribes a session to a channel; returns the subscription id.
    pub fn subscribe(&self, key: &ChannelKey, subscriber: Subscriber) -> u64 {
        let id = self.next_id();
        self.registry
            .add(key, id, subscriber, || self.broker.subscribe(key));
        id
    }

    /// Ends a subscription (and its presence, if it tracked one).
    pub fn unsubscribe(&self, key: &ChannelKey, id: u64) {
        self.registry
            .remove(key, id, || self.broker.unsubscribe(key));
        self.presence_untrack(key, id);
    }

    /// Tracks the presence state of a subscription.
    pub fn presence_track(
        &self,
        key: &ChannelKey,
        member_key: &str,
        id: u64,
        payload: Map<String, Value>,
    ) -> TrackOutcome {
        let change = self.presence.track(key, member_key, id, payload);
        if change.schedule_flush {
            self.schedule_presence_flush(key);
        }
        change.outcome
    }

    /// Removes the presence of a subscription, if any.
    pub fn presence_untrack(&self, key: &ChannelKey, id: u64) {
        if self.presence.untrack(key, id) {
            self.schedule_presence_flush(key);
        }
    }

    /// The presence state of a channel: `{key: {metas: [...]}}`.
    pub fn presence_state(&self, key: &ChannelKey) -> Value {
        self.presence.state(key)
    }

    /// The presence state to send a member joining now (see [`Presence::state_for_joiner`]).
    pub fn presence_state_for_joiner(&self, key: &ChannelKey) -> Value {
        self.presence.state_for_joiner(key)
    }

    /// Presence metas in a channel.
    pub fn presence_count(&self, key: &ChannelKey) -> usize {
        self.presence.count(key)
    }

    /// Presence metas on this node.
    pub fn presence_total(&self) -> usize {
        self.presence.total()
    }

    fn schedule_presence_flush(&self, key: &ChannelKey) {
        let window = self.settings.presence_batch;
        let runtime = tokio::runtime::Handle::try_current();
        let (false, Ok(runtime)) = (window.is_zero(), runtime) else {
            // No batching (or no runtime to wait on): send the diff now.
            self.flush_presence(key);
            return;
        };
        let hub = self.me.clone();
        let key = key.clone();
        runtime.spawn(async move {
            tokio::time::sleep(window).await;
            if let Some(hub) = hub.upgrade() {
                hub.flush_presence(&key);
            }
        });
    }

    /// Sends the pending presence diff of a channel, through the broker, to its members on every
    /// node.
    pub fn flush_presence(&self, key: &ChannelKey) {
        if let Some(diff) = self.presence.take_diff(key) {
            self.broker
                .emit(ChannelEvent::new(key.clone(), "presence_diff", diff));
            self.stats.presences.set(self.presence.total() as f64);
        }
    }

    /// Publishes a broadcast to every subscriber of its channel, on every node. When the channel keeps
    /// history, the message is durably appended (and given its position) before anyone receives it.
    pub async fn publish(&self, msg: Broadcast) -> Result<Published, PublishError> {
        crate::limits::check_broadcast(
            &msg.channel.name,
            &msg.event,
            msg.id.as_deref(),
            msg.idempotency_key.as_deref(),
        )?;
        self.broker.publish(msg).await
    }

    /// True when the channel keeps history.
    pub fn history_enabled(&self, key: &ChannelKey) -> bool {
        self.broker.keeps_history(key)
    }

    /// The embedded history, if the node keeps one (for its administration: sweeps, counts).
    pub fn history(&self) -> Option<&History> {
        self.history.as_deref()
    }

    /// Subscribes like [`Hub::subscribe`], and reads what the client missed. The subscription's
    /// live messages are held from the start; the replay holds everything up to the channel's
    /// top when it was read, and [`Live::open`] releases the held messages after it (skipping
    /// those the replay carried). No lock is held while history is read.
    pub async fn subscribe_recovering(
        &self,
        key: &ChannelKey,
        subscriber: Subscriber,
        request: &RecoverRequest,
    ) -> Result<(u64, Option<(Recovery, Live)>), HistoryError> {
        if !self.broker.keeps_history(key) {
            return Ok((self.subscribe(key, subscriber), None));
        }
        let gate = Gate::new(subscriber.capacity());
        let id = self.subscribe(key, subscriber.gated(gate.clone()));
        let recovery = match self.broker.recover(key.clone(), request.clone()).await {
            Ok(r) => r,
            Err(e) => {
                self.unsubscribe(key, id);
                return Err(e);
            }
        };
        let live = Live {
            registry: self.registry.clone(),
            key: key.clone(),
            id,
            gate,
            replayed: recovery.top,
            opened: false,
        };
        Ok((id, Some((recovery, live))))
    }

    /// Local subscribers of a channel.
    pub fn subscriber_count(&self, key: &ChannelKey) -> usize {
        self.registry.subscriber_count(key)
    }

    /// Channels with local subscribers and their counts.
    pub fn channels(&self) -> Vec<(ChannelKey, usize)> {
        self.registry.channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Body, Origin};
    use crate::registry::Fanout;
    use crate::session::SessionHandle;
    use axum::extract::ws::Message;
    use herald_protocol::Vsn;
    use serde_json::value::RawValue;

    fn body() -> Body {
        Body::Json(RawValue::from_string("{}".into()).unwrap())
    }

    fn fanout(p: Published) -> Fanout {
        match p {
            Published::Delivered { fanout, .. } => fanout,
            Published::Duplicate { .. } => panic!("unexpected duplicate"),
        }
    }

    #[tokio::test]
    async fn fans_out_and_honours_self() {
        let hub = Hub::embedded(Stats::new(), HubSettings::default(), None);
        let key = ChannelKey::new("room", false);
        let a = SessionHandle::new(1, Vsn::V2, 8);
        let b = SessionHandle::new(2, Vsn::V1, 8);
        let sa = hub.subscribe(&key, Subscriber::ws(a.clone(), false, false));
        hub.subscribe(&key, Subscriber::ws(b.clone(), true, false));
        let f = hub
            .publish(Broadcast::new(
                key.clone(),
                "e".into(),
                body(),
                Origin::Text,
                Some(hub.sender(1)),
            ))
            .await
            .unwrap();
        let f = fanout(f);
        assert_eq!(f.queued, 1);
        assert!(a.try_next_frame().is_none());
        assert!(matches!(b.try_next_frame(), Some(Message::Text(_))));
        // Connection 1 of another node is someone else: `a` receives its message.
        let elsewhere = crate::message::Sender {
            node: Arc::from("another-node"),
            conn: 1,
        };
        let f = hub
            .publish(Broadcast::new(
                key.clone(),
                "e".into(),
                body(),
                Origin::Text,
                Some(elsewhere),
            ))
            .await
            .unwrap();
        assert_eq!(fanout(f).queued, 2);
        assert!(matches!(a.try_next_frame(), Some(Message::Text(_))));
        hub.unsubscribe(&key, sa);
        assert_eq!(hub.subscriber_count(&key), 1);
        assert_eq!(hub.channels().len(), 1);
    }

    #[tokio::test]
    async fn raw_bytes_skip_v1_and_empty_channels_cost_nothing() {
        let hub = Hub::embedded(Stats::new(), HubSettings::default(), None);
        let key = ChannelKey::new("room", false);
        let f = hub
            .publish(Broadcast::new(
                key.clone(),
                "e".into(),
                body(),
                Origin::Text,
                None,
            ))
            .await
            .unwrap();
        assert_eq!(fanout(f), Fanout::default());
        let v1 = SessionHandle::new(1, Vsn::V1, 8);
        let id = hub.subscribe(&key, Subscriber::ws(v1, false, false));
        let raw = Body::Raw(bytes::Bytes::from_static(b"x"));
        let f = hub
            .publish(Broadcast::new(
                key.clone(),
                "e".into(),
                raw,
                Origin::Binary,
                None,
            ))
            .await
            .unwrap();
        assert_eq!(fanout(f).incompatible, 1);
        hub.unsubscribe(&key, id);
        assert!(hub.channels().is_empty());
    }
}
