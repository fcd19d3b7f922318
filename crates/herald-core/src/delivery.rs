//! The broker's event handler: the one way a message reaches this node's subscribers.
//!
//! Every broker, embedded or clustered, calls [`EventHandler::handle`] with each event it hands
//! to this node, in the channel's order. Nothing else calls the registry's fan-out, so every
//! broadcast, presence diff and `realtime.send` message takes the same path
//! (`grep -rn 'registry.deliver\|\.deliver(' crates/herald-core/src` finds this file only).

use std::sync::Arc;

use crate::broker::Event;
use crate::registry::{Fanout, Registry};
use crate::stats::Stats;

/// Delivers what the broker hands this node to the local subscribers.
#[derive(Debug)]
pub struct EventHandler {
    registry: Arc<Registry>,
    stats: Stats,
}

impl EventHandler {
    pub(crate) fn new(registry: Arc<Registry>, stats: Stats) -> EventHandler {
        EventHandler { registry, stats }
    }

    /// Queues the event for every local subscriber of its channel (holding it for a subscriber
    /// whose replay is not out yet).
    pub fn handle(&self, event: &Event) -> Fanout {
        if event.outgoing().channel().is_reserved() {
            // A node-internal log (a table's changes): its consumer reads it, no subscriber does.
            return Fanout::default();
        }
        let fanout = self.registry.deliver(event);
        if let Event::Channel(_) = event {
            self.stats.presence_diffs.increment(1);
            self.stats.presence_frames.increment(fanout.queued as u64);
        }
        fanout
    }

    /// True when this node has a local subscriber of the channel.
    pub fn listens(&self, key: &crate::channel::ChannelKey) -> bool {
        self.registry.is_open(key)
    }
}
