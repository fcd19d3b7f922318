//! Local subscriptions: which sessions on this node listen to which channel, and the fan-out to them.
//!
//! The map is sharded by channel so joins on different channels do not contend; fan-out holds a read
//! lock on one shard and never awaits. A channel without subscribers has no entry at all.
//!
//! A recovering subscription comes with a [`Gate`]: while its replay is being read, what the
//! broker delivers for it is held, and released (without what the replay already carried) once the
//! replay is queued.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};

use crate::broker::Event;
use crate::channel::ChannelKey;
use crate::message::Outgoing;
use crate::session::{Delivery, SessionHandle, SseHandle, SseItem};
use crate::stats::Stats;

const SHARDS: usize = 64;

/// Where a subscription's messages go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A WebSocket session.
    Ws(Arc<SessionHandle>),
    /// An SSE stream.
    Sse(Arc<SseHandle>),
}

/// One subscription to a channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Where its messages go.
    pub sink: Sink,
    /// Whether the sender receives its own broadcasts.
    pub self_broadcast: bool,
    /// Whether it receives presence events (only subscribers that asked for presence do).
    pub presence: bool,
    /// Whether it receives broadcasts (a private channel's member whose policies grant only
    /// presence read does not).
    pub broadcast: bool,
    /// Holds its deliveries while its replay is read.
    gate: Option<Arc<Gate>>,
}

/// Holds a recovering subscription's deliveries until its replay is queued.
#[derive(Debug)]
pub struct Gate {
    holding: std::sync::atomic::AtomicBool,
    held: Mutex<Vec<Event>>,
    /// Most events held; past it the subscriber is closed as a slow consumer.
    max: usize,
}

impl Gate {
    /// A closed gate holding at most `max` events.
    pub fn new(max: usize) -> Arc<Gate> {
        Arc::new(Gate {
            holding: std::sync::atomic::AtomicBool::new(true),
            held: Mutex::new(Vec::new()),
            max: max.max(1),
        })
    }

    /// Queues what was held (skipping events at or below offset `replayed`, which the replay
    /// carried) to `sub`, and lets later deliveries through. Deliveries racing with this wait for
    /// it, so the order is the broker's.
    pub(crate) fn open(&self, sub: &Subscriber, replayed: u64) {
        let mut held = self.held.lock();
        let mut out = Fanout::default();
        for event in held.drain(..) {
            if event.offset().is_some_and(|o| o <= replayed) {
                continue;
            }
            offer(sub, event.outgoing(), None, &mut out);
        }
        self.holding
            .store(false, std::sync::atomic::Ordering::Release);
        *held = Vec::new();
    }
}

impl Subscriber {
    /// A WebSocket session's subscription.
    pub fn ws(session: Arc<SessionHandle>, self_broadcast: bool, presence: bool) -> Subscriber {
        Subscriber {
            sink: Sink::Ws(session),
            self_broadcast,
            presence,
            broadcast: true,
            gate: None,
        }
    }

    /// An SSE stream's subscription.
    pub fn sse(stream: Arc<SseHandle>, presence: bool) -> Subscriber {
        Subscriber {
            sink: Sink::Sse(stream),
            self_broadcast: false,
            presence,
            broadcast: true,
            gate: None,
        }
    }

    /// The same subscription, receiving broadcasts only when `broadcast` holds.
    pub fn with_broadcasts(mut self, broadcast: bool) -> Subscriber {
        self.broadcast = broadcast;
        self
    }

    /// Most messages its sink queues.
    pub(crate) fn capacity(&self) -> usize {
        match &self.sink {
            Sink::Ws(s) => s.queue_capacity(),
            Sink::Sse(s) => s.queue_capacity(),
        }
    }

    /// The same subscription, held behind `gate` until its replay is queued.
    pub(crate) fn gated(mut self, gate: Arc<Gate>) -> Subscriber {
        self.gate = Some(gate);
        self
    }

    fn close_slow(&self) {
        match &self.sink {
            Sink::Ws(s) => s.close_with(
                crate::session::close::SLOW_CONSUMER,
                "slow consumer: outbound queue full",
            ),
            Sink::Sse(s) => s.end(),
        }
    }

    fn id(&self) -> u64 {
        match &self.sink {
            Sink::Ws(s) => s.id,
            Sink::Sse(stream) => stream.id,
        }
    }
}

type Shard = HashMap<ChannelKey, IndexMap<u64, Subscriber>>;

/// Counts of one fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Frames queued.
    pub queued: usize,
    /// Subscribers that could not be shown the message (raw bytes to a v1 socket).
    pub incompatible: usize,
    /// Subscribers closed as slow consumers by this message.
    pub overflowed: usize,
}

/// The node's subscriptions.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    stats: Stats,
    /// Channels with at least one local subscriber.
    open: AtomicUsize,
    /// This node's id: a message's sender is one of its subscribers only when sent from here.
    node: Arc<str>,
}

impl Registry {
    /// An empty registry.
    pub fn new(stats: Stats, node: Arc<str>) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            stats,
            open: AtomicUsize::new(0),
            node,
        }
    }

    fn shard(&self, key: &ChannelKey) -> &RwLock<Shard> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Adds a subscription. When the channel had no local subscriber before, `first` runs (the
    /// broker's interest), under the shard's lock, so that it is ordered with the `last` of a
    /// racing removal.
    pub(crate) fn add(&self, key: &ChannelKey, id: u64, sub: Subscriber, first: impl FnOnce()) {
        let mut shard = self.shard(key).write();
        let created = !shard.contains_key(key);
        shard.entry(key.clone()).or_default().insert(id, sub);
        if created {
            self.open.fetch_add(1, Ordering::Relaxed);
            self.stats.channels.increment(1.0);
            first();
        }
    }

    /// Removes a subscription; when it was the channel's last, `last` runs under the shard's lock.
    /// Returns the removed subscription.
    pub(crate) fn remove(
        &self,
        key: &ChannelKey,
        id: u64,
        last: impl FnOnce(),
    ) -> Option<Subscriber> {
        let mut shard = self.shard(key).write();
        let subs = shard.get_mut(key)?;
        let removed = subs.swap_remove(&id);
        if subs.is_empty() {
            shard.remove(key);
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.stats.channels.decrement(1.0);
            last();
        }
        removed
    }

    /// Opens a recovering subscription's gate: what was held goes out after the replay.
    pub(crate) fn open_gate(&self, key: &ChannelKey, id: u64, gate: &Gate, replayed: u64) {
        let shard = self.shard(key).read();
        if let Some(sub) = shard.get(key).and_then(|subs| subs.get(&id)) {
            gate.open(sub, replayed);
        } else {
            // Gone already: nothing to release.
            gate.holding.store(false, Ordering::Release);
            *gate.held.lock() = Vec::new();
        }
    }

    /// Queues the event for every local subscriber of its channel. Only the broker's event
    /// handler calls this.
    pub(crate) fn deliver(&self, event: &Event) -> Fanout {
        let msg = event.outgoing();
        let mut out = Fanout::default();
        let shard = self.shard(msg.channel()).read();
        let Some(subs) = shard.get(msg.channel()) else {
            return out;
        };
        let sender = msg.sender().filter(|s| s.node == self.node).map(|s| s.conn);
        for sub in subs.values() {
            if !sub.self_broadcast && sender == Some(sub.id()) {
                continue;
            }
            offer(sub, msg, Some(event), &mut out);
        }
        drop(shard);
        if out.incompatible > 0 {
            self.stats
                .dropped_binary_to_v1
                .increment(out.incompatible as u64);
        }
        if out.overflowed > 0 {
            self.stats.slow_consumers.increment(out.overflowed as u64);
        }
        out
    }

    /// Channels with at least one local subscriber.
    pub fn open_channels(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether the channel has a local subscriber.
    pub fn is_open(&self, key: &ChannelKey) -> bool {
        self.shard(key).read().contains_key(key)
    }

    /// Local subscribers of a channel.
    pub fn subscriber_count(&self, key: &ChannelKey) -> usize {
        self.shard(key).read().get(key).map_or(0, IndexMap::len)
    }

    /// Every channel with local subscribers, with its subscriber count.
    pub fn channels(&self) -> Vec<(ChannelKey, usize)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.extend(shard.read().iter().map(|(k, v)| (k.clone(), v.len())));
        }
        all.sort();
        all
    }
}

/// Offers one message to one subscriber: held behind its gate (when `event` is given and the gate
/// is closed), skipped when the subscription does not take its kind, else queued.
fn offer(sub: &Subscriber, msg: &dyn Outgoing, event: Option<&Event>, out: &mut Fanout) {
    if msg.is_presence() {
        if !sub.presence {
            return;
        }
    } else if !sub.broadcast {
        return;
    }
    if let (Some(gate), Some(event)) = (&sub.gate, event)
        && gate.holding.load(Ordering::Acquire)
    {
        let mut held = gate.held.lock();
        if gate.holding.load(Ordering::Acquire) {
            if held.len() >= gate.max {
                drop(held);
                sub.close_slow();
                out.overflowed += 1;
            } else {
                held.push(event.clone());
                out.queued += 1;
            }
            return;
        }
    }
    let delivery = match &sub.sink {
        Sink::Ws(session) => {
            let Some(frame) = msg.frame(session.vsn) else {
                out.incompatible += 1;
                return;
            };
            session.push(frame.clone())
        }
        Sink::Sse(stream) => {
            let Some(data) = msg.sse_frame() else {
                return;
            };
            stream.push(SseItem {
                channel: msg.channel().clone(),
                position: msg.position().cloned(),
                data: data.clone(),
            })
        }
    };
    match delivery {
        Delivery::Queued => out.queued += 1,
        Delivery::Closed => {}
        Delivery::Overflow => out.overflowed += 1,
    }
}
