//! Presence: who is in a channel, under which key, with which state (metas).
//!
//! Per channel: key -> metas, each meta with a unique `phx_ref` and owned by one subscription (one
//! channel join of one connection) on one node. Changes accumulate in a pending diff (joins, leaves)
//! that the hub flushes to every member as one `presence_diff` per batching window, so a crowd joining
//! at once costs one diff per window instead of one per member. Applied in order (joins, then leaves),
//! a pending diff is correct for every member, including one whose `presence_state` already reflects
//! part of it: clients replace metas by `phx_ref` and ignore leaves of metas they do not have.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::channel::ChannelKey;

const SHARDS: usize = 32;

/// One presence entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Unique reference of this meta.
    pub phx_ref: String,
    /// The state the client tracked.
    pub payload: Map<String, Value>,
    /// The subscription (channel join) that owns it.
    pub subscription: u64,
    /// The node that owns it.
    pub node: Arc<str>,
}

impl Meta {
    fn to_json(&self, prev: Option<&str>) -> Value {
        let mut m = self.payload.clone();
        m.insert("phx_ref".to_owned(), Value::from(self.phx_ref.as_str()));
        if let Some(prev) = prev {
            m.insert("phx_ref_prev".to_owned(), Value::from(prev));
        }
        Value::Object(m)
    }
}

/// What a track did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackOutcome {
    /// A new meta, or a changed one.
    Changed,
    /// The same payload as before: nothing to tell anyone.
    Unchanged,
    /// The channel already has the maximum number of members.
    Full,
}

#[derive(Debug, Default)]
struct Pending {
    joins: IndexMap<String, Vec<Value>>,
    leaves: IndexMap<String, Vec<Value>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    fn into_diff(self) -> Value {
        let side = |m: IndexMap<String, Vec<Value>>| {
            Value::Object(
                m.into_iter()
                    .map(|(k, metas)| (k, json!({ "metas": metas })))
                    .collect(),
            )
        };
        json!({ "joins": side(self.joins), "leaves": side(self.leaves) })
    }
}

#[derive(Debug, Default)]
struct ChannelPresence {
    members: IndexMap<String, Vec<Meta>>,
    by_subscription: HashMap<u64, String>,
    pending: Pending,
    flush_scheduled: bool,
}

impl ChannelPresence {
    fn meta_count(&self) -> usize {
        self.by_subscription.len()
    }
}

/// What the caller must do after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The outcome of the call.
    pub outcome: TrackOutcome,
    /// A flush must be scheduled (the first change of a window).
    pub schedule_flush: bool,
}

/// Presence of every channel on this node.
#[derive(Debug)]
pub struct Presence {
    shards: Box<[Mutex<HashMap<ChannelKey, ChannelPresence>>]>,
    hasher: RandomState,
    node: Arc<str>,
    next_ref: AtomicU64,
    max_members: usize,
}

impl Presence {
    /// Presence for node `node`; `max_members` metas per channel at most (0: unlimited).
    pub fn new(node: &str, max_members: usize) -> Presence {
        Presence {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            node: Arc::from(node),
            next_ref: AtomicU64::new(1),
            max_members,
        }
    }

    fn shard(&self, key: &ChannelKey) -> &Mutex<HashMap<ChannelKey, ChannelPresence>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    fn new_ref(&self) -> String {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.node)
    }

    /// Tracks (or re-tracks) the state of a subscription under `member_key`.
    pub fn track(
        &self,
        key: &ChannelKey,
        member_key: &str,
        subscription: u64,
        payload: Map<String, Value>,
    ) -> Change {
        let mut shard = self.shard(key).lock();
        let channel = shard.entry(key.clone()).or_default();
        let previous = channel.by_subscription.get(&subscription).cloned();
        if let Some(old_key) = &previous {
            let same = channel
                .members
                .get(old_key)
                .and_then(|metas| metas.iter().find(|m| m.subscription == subscription))
                .is_some_and(|m| old_key == member_key && m.payload == payload);
            if same {
                return Change {
                    outcome: TrackOutcome::Unchanged,
                    schedule_flush: false,
                };
            }
        } else if self.max_members > 0 && channel.meta_count() >= self.max_members {
            return Change {
                outcome: TrackOutcome::Full,
                schedule_flush: false,
            };
        }
        let mut prev_ref = None;
        if let Some(old_key) = previous
            && let Some(old) = remove_meta(channel, &old_key, subscription)
        {
            prev_ref = Some(old.phx_ref.clone());
            channel
                .pending
                .leaves
                .entry(old_key)
                .or_default()
                .push(old.to_json(None));
        }
        let meta = Meta {
            phx_ref: self.new_ref(),
            payload,
            subscription,
            node: self.node.clone(),
        };
        channel
            .pending
            .joins
            .entry(member_key.to_owned())
            .or_default()
            .push(meta.to_json(prev_ref.as_deref()));
        channel
            .members
            .entry(member_key.to_owned())
            .or_default()
            .push(meta);
        channel
            .by_subscription
            .insert(subscription, member_key.to_owned());
        let schedule_flush = !std::mem::replace(&mut channel.flush_scheduled, true);
        Change {
            outcome: TrackOutcome::Changed,
            schedule_flush,
        }
    }

    /// Removes the meta of a subscription, if it has one. True when a flush must be scheduled.
    pub fn untrack(&self, key: &ChannelKey, subscription: u64) -> bool {
        let mut shard = self.shard(key).lock();
        let Some(channel) = shard.get_mut(key) else {
            return false;
        };
        let Some(member_key) = channel.by_subscription.get(&subscription).cloned() else {
            return false;
        };
        if let Some(old) = remove_meta(channel, &member_key, subscription) {
            channel
                .pending
                .leaves
                .entry(member_key)
                .or_default()
                .push(old.to_json(None));
        }
        !std::mem::replace(&mut channel.flush_scheduled, true)
    }

    /// The whole state of a channel: `{key: {metas: [...]}}`.
    pub fn state(&self, key: &ChannelKey) -> Value {
        let shard = self.shard(key).lock();
        let Some(channel) = shard.get(key) else {
            return json!({});
        };
        Value::Object(
            channel
                .members
                .iter()
                .map(|(k, metas)| {
                    let metas: Vec<Value> = metas.iter().map(|m| m.to_json(None)).collect();
                    (k.clone(), json!({ "metas": metas }))
                })
                .collect(),
        )
    }

    /// The state as of the last diff sent, for a member that is joining now: the pending diff, which it
    /// will also receive, brings it up to date without announcing any meta twice.
    pub fn state_for_joiner(&self, key: &ChannelKey) -> Value {
        let shard = self.shard(key).lock();
        let Some(channel) = shard.get(key) else {
            return json!({});
        };
        let pending_ref = |m: &Value| m.get("phx_ref").and_then(Value::as_str).map(str::to_owned);
        let joined: std::collections::HashSet<String> = channel
            .pending
            .joins
            .values()
            .flatten()
            .filter_map(pending_ref)
            .collect();
        let mut out: IndexMap<String, Vec<Value>> = IndexMap::new();
        for (k, metas) in &channel.members {
            for m in metas.iter().filter(|m| !joined.contains(&m.phx_ref)) {
                out.entry(k.clone()).or_default().push(m.to_json(None));
            }
        }
        for (k, metas) in &channel.pending.leaves {
            for m in metas {
                if pending_ref(m).is_some_and(|r| !joined.contains(&r)) {
                    out.entry(k.clone()).or_default().push(m.clone());
                }
            }
        }
        Value::Object(
            out.into_iter()
                .map(|(k, metas)| (k, json!({ "metas": metas })))
                .collect(),
        )
    }

    /// Takes the pending diff of a channel (`{joins, leaves}`), if there is one, ending the window.
    pub fn take_diff(&self, key: &ChannelKey) -> Option<Value> {
        let mut shard = self.shard(key).lock();
        let channel = shard.get_mut(key)?;
        channel.flush_scheduled = false;
        let pending = std::mem::take(&mut channel.pending);
        if channel.members.is_empty() {
            shard.remove(key);
        }
        if pending.is_empty() {
            None
        } else {
            Some(pending.into_diff())
        }
    }

    /// Metas in a channel.
    pub fn count(&self, key: &ChannelKey) -> usize {
        self.shard(key)
            .lock()
            .get(key)
            .map_or(0, ChannelPresence::meta_count)
    }

    /// Metas on this node, over all channels.
    pub fn total(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .values()
                    .map(ChannelPresence::meta_count)
                    .sum::<usize>()
            })
            .sum()
    }
}

fn remove_meta(channel: &mut ChannelPresence, member_key: &str, subscription: u64) -> Option<Meta> {
    channel.by_subscription.remove(&subscription);
    let metas = channel.members.get_mut(member_key)?;
    let i = metas.iter().position(|m| m.subscription == subscription)?;
    let old = metas.remove(i);
    if metas.is_empty() {
        channel.members.shift_remove(member_key);
    }
    Some(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn track_retrack_untrack() {
        let p = Presence::new("n1", 0);
        let k = ChannelKey::new("room", false);
        let c = p.track(&k, "alice", 1, obj(json!({"s": "online"})));
        assert_eq!(
            c,
            Change {
                outcome: TrackOutcome::Changed,
                schedule_flush: true
            }
        );
        assert_eq!(
            p.track(&k, "alice", 1, obj(json!({"s": "online"}))).outcome,
            TrackOutcome::Unchanged
        );
        // Same window: no second schedule.
        let c = p.track(&k, "alice", 1, obj(json!({"s": "away"})));
        assert_eq!(
            c,
            Change {
                outcome: TrackOutcome::Changed,
                schedule_flush: false
            }
        );
        let state = p.state(&k);
        assert_eq!(state["alice"]["metas"].as_array().unwrap().len(), 1);
        assert_eq!(state["alice"]["metas"][0]["s"], "away");
        let diff = p.take_diff(&k).unwrap();
        assert_eq!(diff["joins"]["alice"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["s"], "online");
        assert_eq!(
            diff["joins"]["alice"]["metas"][1]["phx_ref_prev"],
            diff["leaves"]["alice"]["metas"][0]["phx_ref"]
        );
        assert!(p.untrack(&k, 1));
        let diff = p.take_diff(&k).unwrap();
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["s"], "away");
        assert_eq!(p.state(&k), json!({}));
        assert!(p.take_diff(&k).is_none());
        assert_eq!(p.total(), 0);
    }

    #[test]
    fn a_joiner_gets_the_state_the_pending_diff_applies_to() {
        let p = Presence::new("n1", 0);
        let k = ChannelKey::new("room", false);
        p.track(&k, "a", 1, obj(json!({"v": 1})));
        p.track(&k, "gone", 3, obj(json!({})));
        p.take_diff(&k);
        p.track(&k, "a", 1, obj(json!({"v": 2})));
        p.track(&k, "b", 2, obj(json!({})));
        p.untrack(&k, 3);
        // Flushed view: a at v1, gone still there, no b.
        let s = p.state_for_joiner(&k);
        assert_eq!(s["a"]["metas"][0]["v"], 1);
        assert!(s.get("b").is_none());
        assert_eq!(s["gone"]["metas"].as_array().unwrap().len(), 1);
        // Applying the pending diff (joins, then leaves) gives the current state.
        let diff = p.take_diff(&k).unwrap();
        assert_eq!(diff["joins"]["a"]["metas"][0]["v"], 2);
        assert_eq!(diff["leaves"]["gone"]["metas"].as_array().unwrap().len(), 1);
        assert_eq!(p.state_for_joiner(&k), p.state(&k));
    }

    #[test]
    fn shared_keys_and_member_limit() {
        let p = Presence::new("n1", 2);
        let k = ChannelKey::new("room", false);
        p.track(&k, "bob", 1, Map::new());
        p.track(&k, "bob", 2, Map::new());
        assert_eq!(
            p.track(&k, "carol", 3, Map::new()).outcome,
            TrackOutcome::Full
        );
        assert_eq!(p.state(&k)["bob"]["metas"].as_array().unwrap().len(), 2);
        p.untrack(&k, 1);
        assert_eq!(p.state(&k)["bob"]["metas"].as_array().unwrap().len(), 1);
        assert!(!p.untrack(&k, 99));
    }
}
