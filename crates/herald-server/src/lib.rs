//! Herald's transports: the accept loop (HTTP/1.1 and h2c on one port), the WebSocket endpoint, the
//! HTTP API, health and metrics. [`start`] runs a node and returns a handle to stop it.

pub mod client_addr;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod http_api;
pub mod jwks;
pub mod linger;
pub mod listener;
pub mod origin;
pub mod sse;
pub mod sse_http1;
pub mod state;
pub mod ws;

pub use config::{HistoryConfig, ServerConfig};
pub use listener::{Running, StartError, serve, start};
pub use state::AppState;
