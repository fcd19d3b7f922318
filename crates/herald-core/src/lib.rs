//! Herald's core: the hub and its channels, the broker seam (and the embedded broker), the one
//! event handler that delivers, the message model, authentication, channel policy and limits.
//! Transports (WebSocket, SSE, HTTP) live in `herald-server` and call in here.

pub mod auth;
pub mod broker;
pub mod channel;
pub mod delivery;
pub mod embedded;
pub mod history;
pub mod hub;
pub mod keys;
pub mod limits;
pub mod message;
pub mod policy;
pub mod presence;
pub mod queue;
pub mod registry;
pub mod session;
pub mod stats;

pub use auth::{AuthError, Authenticator, Claims};
pub use broker::{Broker, Event, PublishError, Published};
pub use channel::ChannelKey;
pub use delivery::EventHandler;
pub use hub::{Hub, HubSettings, Live};
pub use limits::{Limits, RateLimiter};
pub use message::{Body, Broadcast, Origin};
pub use registry::{Sink, Subscriber};
pub use session::{CloseReason, Delivery, SessionHandle, SseHandle, SseItem, close};
pub use stats::Stats;
