//! Local subscriptions: which sessions on this node listen to which channel, and the fan-out to them.
//!
//! The map is sharded by channel so joins on different channels do not contend; fan-out holds a read
//! lock on one shard and never awaits. A channel without subscribers has no entry at all.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use indexmap::IndexMap;
use parking_lot::RwLock;

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
}

impl Subscriber {
    /// A WebSocket session's subscription.
    pub fn ws(session: Arc<SessionHandle>, self_broadcast: bool, presence: bool) -> Subscriber {
        Subscriber {
            sink: Sink::Ws(session),
            self_broadcast,
            presence,
            broadcast: true,
        }
    }

    /// An SSE stream's subscription.
    pub fn sse(stream: Arc<SseHandle>, presence: bool) -> Subscriber {
        Subscriber {
            sink: Sink::Sse(stream),
            self_broadcast: false,
            presence,
            broadcast: true,
        }
    }

    /// The same subscription, receiving broadcasts only when `broadcast` holds.
    pub fn with_broadcasts(mut self, broadcast: bool) -> Subscriber {
        self.broadcast = broadcast;
        self
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

    /// Adds a subscription; true when the channel had no local subscriber before.
    pub fn add(&self, key: &ChannelKey, id: u64, sub: Subscriber) -> bool {
        let mut shard = self.shard(key).write();
        let created = !shard.contains_key(key);
        shard.entry(key.clone()).or_default().insert(id, sub);
        if created {
            self.open.fetch_add(1, Ordering::Relaxed);
            self.stats.channels.increment(1.0);
        }
        created
    }

    /// Removes a subscription; true when the channel has no local subscriber left.
    pub fn remove(&self, key: &ChannelKey, id: u64) -> bool {
        let mut shard = self.shard(key).write();
        let Some(subs) = shard.get_mut(key) else {
            return false;
        };
        subs.swap_remove(&id);
        if subs.is_empty() {
            shard.remove(key);
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.stats.channels.decrement(1.0);
            true
        } else {
            false
        }
    }

    /// Queues the message for every local subscriber of its channel.
    pub fn deliver(&self, msg: &dyn Outgoing) -> Fanout {
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
            if msg.is_presence() {
                if !sub.presence {
                    continue;
                }
            } else if !sub.broadcast {
                continue;
            }
            let delivery = match &sub.sink {
                Sink::Ws(session) => {
                    let Some(frame) = msg.frame(session.vsn) else {
                        out.incompatible += 1;
                        continue;
                    };
                    session.push(frame.clone())
                }
                Sink::Sse(stream) => {
                    let Some(data) = msg.sse_frame() else {
                        continue;
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
