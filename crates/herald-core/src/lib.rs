//! Herald's core: the hub and its channels, the backplane trait, the message model, authentication,
//! channel policy and limits. Transports (WebSocket, HTTP) live in `herald-server` and call in here.

pub mod auth;
pub mod backplane;
pub mod channel;
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
pub use channel::ChannelKey;
pub use hub::{Hub, HubSettings};
pub use limits::{Limits, RateLimiter};
pub use message::{Body, Broadcast, Origin};
pub use registry::{Sink, Subscriber};
pub use session::{CloseReason, Delivery, SessionHandle, SseHandle, SseItem, close};
pub use stats::Stats;
