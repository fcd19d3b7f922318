//! State shared by every connection of a node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_core::history::{Clock, History};
use herald_core::{Authenticator, Hub, HubSettings, Limits, Stats};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;

/// How long a handshake with a token naming an unknown `kid` waits for the JWKS to be read again.
pub const FRESH_KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a node's state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The data directory could not be created.
    #[error("cannot create {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    /// The history store could not be opened.
    #[error(transparent)]
    Store(#[from] herald_store::StoreError),
    /// Postgres Changes could not be set up.
    #[error(transparent)]
    Postgres(#[from] herald_postgres::PgError),
}

/// Everything a request handler or a session needs.
pub struct AppState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// Token verification.
    pub auth: Authenticator,
    /// Limits in force.
    pub limits: Limits,
    /// The node's settings.
    pub config: ServerConfig,
    /// Open connections, WebSocket and SSE (counted against `max_connections`).
    pub connections: AtomicUsize,
    /// Open connections per client address (counted against `max_connections_per_ip`); an
    /// address leaves the map with its last connection.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Messages per second accepted by the HTTP API, per caller (role and token subject).
    pub http_limiter: Mutex<herald_core::limits::RateBuckets>,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Tracks sessions so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Renders `/metrics`, when a Prometheus recorder is installed.
    pub prometheus: Option<PrometheusHandle>,
    /// Postgres Changes, when a database is configured.
    pub postgres: Option<Arc<herald_postgres::Postgres>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a node with the in-process backplane. Opens the history store when configured.
    pub fn new(
        config: ServerConfig,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Arc<AppState>, StateError> {
        let history = match &config.history {
            None => None,
            Some(h) => {
                std::fs::create_dir_all(&h.dir)
                    .map_err(|e| StateError::DataDir(h.dir.clone(), e))?;
                let store = herald_store::Store::open(&h.dir, h.fsync)?;
                Some(History::new(
                    Arc::new(store),
                    h.settings.clone(),
                    Clock::new(),
                ))
            }
        };
        let stats = Stats::new();
        let settings = HubSettings {
            node_id: config
                .node_id
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()),
            presence_batch: std::time::Duration::from_millis(config.limits.presence_batch_ms),
            max_presence_members: config.limits.max_presence_members,
            max_channels: config.limits.max_channels,
        };
        let hub = Hub::embedded(stats, settings, history);
        let shutdown = CancellationToken::new();
        let postgres = match &config.postgres {
            None => None,
            Some(pg) => Some(herald_postgres::Postgres::start(
                pg.clone(),
                hub.clone(),
                shutdown.clone(),
            )?),
        };
        Ok(Arc::new(AppState {
            hub,
            auth: Authenticator::with_rules(
                config.jwt_secret.as_bytes(),
                config.token_rules.clone(),
            ),
            limits: config.limits.clone(),
            http_limiter: Mutex::new(herald_core::limits::RateBuckets::new(
                config.limits.max_http_messages_per_second,
            )),
            config,
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            shutdown,
            sessions: TaskTracker::new(),
            prometheus,
            postgres,
        }))
    }

    /// Reserves a connection slot for a client at `client` (`None`: a trusted proxy forwarded no
    /// address, so no per-address cap applies), or says which limit is reached.
    pub fn try_reserve_connection(
        self: &Arc<Self>,
        transport: Transport,
        client: Option<IpAddr>,
    ) -> Result<ConnectionSlot, ConnectionRefused> {
        let max = self.limits.max_connections;
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return Err(ConnectionRefused::Node);
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        // From here on the slot owns the node-wide count, and gives it back if refused below.
        let mut slot = ConnectionSlot {
            app: self.clone(),
            transport,
            client: None,
        };
        transport.gauge(self).increment(1.0);
        let per_ip = self.limits.max_connections_per_ip;
        if let Some(ip) = client.filter(|_| per_ip > 0) {
            let mut map = self.per_ip.lock();
            let n = map.entry(ip).or_insert(0);
            if *n >= per_ip {
                if *n == 0 {
                    map.remove(&ip);
                }
                return Err(ConnectionRefused::Address { max: per_ip });
            }
            *n += 1;
            slot.client = Some(ip);
        }
        Ok(slot)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// The node holds `max_connections`.
    #[error("Too many connected users")]
    Node,
    /// The client's address holds `max_connections_per_ip`.
    #[error("Too many connections from this address (max_connections_per_ip is {max})")]
    Address {
        /// The limit.
        max: usize,
    },
}

impl ConnectionRefused {
    /// The label of its error counter.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectionRefused::Node => "too_many_connections",
            ConnectionRefused::Address { .. } => "too_many_connections_per_ip",
        }
    }
}

/// The kind of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket.
    WebSocket,
    /// A Server-Sent Events stream.
    Sse,
}

impl Transport {
    fn gauge(self, app: &AppState) -> &metrics::Gauge {
        match self {
            Transport::WebSocket => &app.hub.stats().ws_connections,
            Transport::Sse => &app.hub.stats().sse_connections,
        }
    }
}

/// A reserved connection slot; released on drop (also when an upgrade never completes).
#[derive(Debug)]
pub struct ConnectionSlot {
    app: Arc<AppState>,
    transport: Transport,
    /// The address counted against `max_connections_per_ip`, if any.
    client: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
        self.transport.gauge(&self.app).decrement(1.0);
        if let Some(ip) = self.client {
            let mut map = self.app.per_ip.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}
