//! The hub: the one place where subscriptions are made and messages are published.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::backplane::{Backplane, BackplaneError, InProcess};
use crate::channel::ChannelKey;
use crate::history::{
    Appended, History, HistoryError, NewMessage, Position, RecoverRequest, Recovery,
};
use crate::message::{Body, Broadcast, ChannelEvent, Origin};
use crate::presence::{Presence, TrackOutcome};
use crate::registry::{Fanout, Registry, Subscriber};
use crate::stats::Stats;

/// Settings of a hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// This node's id (owner of its presences).
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

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Delivered (and stored at `position` when the channel keeps history).
    Delivered {
        /// The message's place in history.
        position: Option<Position>,
        /// Local fan-out counts.
        fanout: Fanout,
    },
    /// A repeat of an idempotency key: accepted, not delivered again.
    Duplicate {
        /// Where the original was stored.
        position: Position,
    },
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The backplane failed.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
    /// The history store failed; nothing was delivered.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A name or key of the message is too long; nothing was stored or delivered. No retry helps.
    #[error(transparent)]
    Invalid(#[from] crate::limits::LengthError),
}

/// Routes messages between publishers and local subscribers, through the backplane.
pub struct Hub {
    registry: Arc<Registry>,
    backplane: Arc<dyn Backplane>,
    presence: Presence,
    history: Option<History>,
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
    /// A single-node hub with the in-process backplane.
    pub fn in_process(stats: Stats, settings: HubSettings, history: Option<History>) -> Arc<Hub> {
        let node: Arc<str> = Arc::from(settings.node_id.as_str());
        let registry = Arc::new(Registry::new(stats.clone(), node.clone()));
        let backplane = Arc::new(InProcess::new(registry.clone()));
        Arc::new_cyclic(|me| Hub {
            registry,
            backplane,
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
        if self.registry.add(key, id, subscriber) {
            self.backplane.interest(key, true);
        }
        id
    }

    /// Ends a subscription (and its presence, if it tracked one).
    pub fn unsubscribe(&self, key: &ChannelKey, id: u64) {
        if self.registry.remove(key, id) {
            self.backplane.interest(key, false);
        }
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

    /// Sends the pending presence diff of a channel to its members.
    pub fn flush_presence(&self, key: &ChannelKey) {
        if let Some(diff) = self.presence.take_diff(key) {
            self.stats.presence_diffs.increment(1);
            let fanout =
                self.registry
                    .deliver(&ChannelEvent::new(key.clone(), "presence_diff", diff));
            self.stats.presence_frames.increment(fanout.queued as u64);
            self.stats.presences.set(self.presence.total() as f64);
        }
    }

    /// Publishes a broadcast to every subscriber of its channel, on every node. When the channel keeps
    /// history, the message is durably appended (and given its position) before anyone receives it.
    pub async fn publish(&self, mut msg: Broadcast) -> Result<Published, PublishError> {
        crate::limits::check_broadcast(
            &msg.channel.name,
            &msg.event,
            msg.id.as_deref(),
            msg.idempotency_key.as_deref(),
        )?;
        let Some(history) = self.history.as_ref().filter(|h| h.enabled(&msg.channel)) else {
            let fanout = self.backplane.publish(Arc::new(msg)).await?;
            return Ok(Published::Delivered {
                position: None,
                fanout,
            });
        };
        let id = msg
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (raw, payload): (bool, &[u8]) = match &msg.body {
            Body::Raw(b) => (true, b),
            Body::Json(j) => (false, j.get().as_bytes()),
        };
        let payload = payload.to_vec();
        let event = msg.event.clone();
        let idempotency_key = msg.idempotency_key.take();
        let new = NewMessage {
            id: &id,
            event: &event,
            origin: u8::from(msg.origin == Origin::Binary),
            raw,
            payload: &payload,
            idempotency_key: idempotency_key.as_deref(),
        };
        let key = msg.channel.clone();
        let registry = &self.registry;
        let (appended, fanout) = history.append(&key, &new, |position| {
            msg.id = Some(id.clone());
            msg.position = Some(position.clone());
            // Delivered under the channel's lock, so deliveries follow offsets.
            registry.deliver(&msg)
        })?;
        Ok(match appended {
            Appended::New(position) => Published::Delivered {
                position: Some(position),
                fanout: fanout.unwrap_or_default(),
            },
            Appended::Duplicate(position) => Published::Duplicate { position },
        })
    }

    /// True when the channel keeps history.
    pub fn history_enabled(&self, key: &ChannelKey) -> bool {
        self.history.as_ref().is_some_and(|h| h.enabled(key))
    }

    /// The history, if the node keeps one.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Subscribes like [`Hub::subscribe`], after reading what the client missed. The replayed messages
    /// are exactly those before the subscription took effect; live delivery starts right after them.
    pub fn subscribe_recovering(
        &self,
        key: &ChannelKey,
        subscriber: Subscriber,
        request: &RecoverRequest,
    ) -> Result<(u64, Option<Recovery>), HistoryError> {
        let Some(history) = self.history.as_ref().filter(|h| h.enabled(key)) else {
            return Ok((self.subscribe(key, subscriber), None));
        };
        let (recovery, id) = history.recover(key, request, || self.subscribe(key, subscriber))?;
        Ok((id, Some(recovery)))
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
        let hub = Hub::in_process(Stats::new(), HubSettings::default(), None);
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
        let hub = Hub::in_process(Stats::new(), HubSettings::default(), None);
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
