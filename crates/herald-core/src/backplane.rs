//! The backplane carries published messages to every node's hub. On one node it is in-process;
//! in a cluster it is an external engine (Redis), behind the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use thiserror::Error;

use crate::channel::ChannelKey;
use crate::message::SharedBroadcast;
use crate::registry::{Fanout, Registry};

/// A boxed future, as the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a publish failed.
#[derive(Debug, Error)]
pub enum BackplaneError {
    /// The backplane could not be reached.
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
}

/// Carries messages to every node.
pub trait Backplane: Send + Sync + 'static {
    /// Publishes to every node (this one included). Resolves once the message is handed over.
    fn publish(&self, msg: SharedBroadcast) -> BoxFuture<'_, Result<Fanout, BackplaneError>>;

    /// This node has gained its first (`true`) or lost its last (`false`) subscriber of a channel.
    fn interest(&self, key: &ChannelKey, interested: bool);
}

/// The single-node backplane: publishing is local delivery.
#[derive(Debug)]
pub struct InProcess {
    registry: Arc<Registry>,
}

impl InProcess {
    /// A backplane delivering into `registry`.
    pub fn new(registry: Arc<Registry>) -> InProcess {
        InProcess { registry }
    }
}

impl Backplane for InProcess {
    fn publish(&self, msg: SharedBroadcast) -> BoxFuture<'_, Result<Fanout, BackplaneError>> {
        let fanout = self.registry.deliver(&*msg);
        Box::pin(std::future::ready(Ok(fanout)))
    }

    fn interest(&self, _key: &ChannelKey, _interested: bool) {}
}
