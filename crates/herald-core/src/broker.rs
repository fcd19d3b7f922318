//! The broker seam: what every producer publishes through and what every node receives from.
//!
//! A broker assigns a message its place in its channel (epoch + offset) when the channel keeps
//! history, stores it, and hands it to every node's [`EventHandler`](crate::delivery::EventHandler),
//! which is the only way anything reaches local subscribers. It also tracks which channels this
//! node listens to (reference-counted by the hub, in order with the registry) and serves the
//! history reads recovery needs. On one node the broker is [`Embedded`](crate::embedded::Embedded);
//! a cluster puts a shared engine behind the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_store::Record;
use thiserror::Error;

use crate::channel::ChannelKey;
use crate::history::{HistoryError, Position, RecoverRequest, Recovery};
use crate::message::{Broadcast, ChannelEvent, Outgoing};
use crate::registry::Fanout;

/// A boxed future, as the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a broker hands to every node: a broadcast (with its position when the channel keeps
/// history) or a protocol event such as a presence diff.
#[derive(Debug, Clone)]
pub enum Event {
    /// A user broadcast.
    Broadcast(Arc<Broadcast>),
    /// A protocol event (`presence_diff`).
    Channel(Arc<ChannelEvent>),
}

impl Event {
    /// The event as the registry fans it out.
    pub fn outgoing(&self) -> &dyn Outgoing {
        match self {
            Event::Broadcast(b) => &**b,
            Event::Channel(c) => &**c,
        }
    }

    /// Its offset in its channel, when it has one.
    pub fn offset(&self) -> Option<u64> {
        self.outgoing().position().map(|p| p.offset)
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Handed to every node (and stored at `position` when the channel keeps history).
    Delivered {
        /// The message's place in history.
        position: Option<Position>,
        /// This node's fan-out counts (on a broker that delivers before answering).
        fanout: Fanout,
    },
    /// A repeat of an idempotency key: accepted, not delivered again.
    Duplicate {
        /// Where the original was stored.
        position: Position,
    },
}

impl Published {
    /// The message's position, if it has one.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Published::Delivered { position, .. } => position.as_ref(),
            Published::Duplicate { position } => Some(position),
        }
    }
}

/// Why a publish failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The broker or its store could not take the message; nothing was delivered. A retry may
    /// succeed.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A name or key of the message is too long; nothing was stored or delivered. No retry helps.
    #[error(transparent)]
    Invalid(#[from] crate::limits::LengthError),
}

impl From<HistoryError> for PublishError {
    fn from(e: HistoryError) -> Self {
        PublishError::Unavailable(e.to_string())
    }
}

/// A marker stored atomically with a group of messages (the Postgres consumer's progress).
pub type Marker = (String, Vec<u8>);

/// Carries messages to every node and owns their positions.
pub trait Broker: Send + Sync + 'static {
    /// Publishes one message: positioned and stored when its channel keeps history, then handed to
    /// every node. Resolves once that is done; an error means nothing was delivered.
    fn publish(&self, msg: Broadcast) -> BoxFuture<'_, Result<Published, PublishError>>;

    /// Publishes several messages (of any channels) as one atomic step, with an optional marker
    /// stored with them. Answers come in the order given.
    fn publish_group(
        &self,
        msgs: Vec<Broadcast>,
        marker: Option<Marker>,
    ) -> BoxFuture<'_, Result<Vec<Published>, PublishError>>;

    /// Hands an ephemeral event (a presence diff: no position, no history) to every node.
    fn emit(&self, event: ChannelEvent);

    /// This node gained a subscriber of a channel it had none of. Called in order with
    /// [`Broker::unsubscribe`] for the same channel.
    fn subscribe(&self, key: &ChannelKey);

    /// This node lost its last subscriber of a channel.
    fn unsubscribe(&self, key: &ChannelKey);

    /// True when the channel keeps history.
    fn keeps_history(&self, key: &ChannelKey) -> bool;

    /// What a client missed after a position, up to the channel's top at the moment of the read.
    fn recover(
        &self,
        key: ChannelKey,
        request: RecoverRequest,
    ) -> BoxFuture<'_, Result<Recovery, HistoryError>>;

    /// The channel's current position.
    fn position(&self, key: ChannelKey) -> BoxFuture<'_, Result<Position, HistoryError>>;

    /// Up to `limit` stored records after `after`.
    fn read_after(
        &self,
        key: ChannelKey,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, HistoryError>>;

    /// A marker stored by [`Broker::publish_group`].
    fn marker(&self, name: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, HistoryError>>;
}
