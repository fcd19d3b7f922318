//! What a node needs to run: address, secret, limits and switches. Loading it from files, the
//! environment and flags is the binary's job.

use std::net::SocketAddr;
use std::time::Duration;

use herald_core::Limits;
use herald_core::history::HistorySettings;

/// Where and how history is kept.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// The store's directory.
    pub dir: std::path::PathBuf,
    /// Retention, idempotency window, replay bound.
    pub settings: HistorySettings,
    /// Sync every append to disk (survives power loss; slower). Without it, appends survive a crash
    /// of the process.
    pub fsync: bool,
    /// How often age retention runs.
    pub sweep_every: Duration,
}

/// The settings of one running node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The HMAC secret tokens are signed with.
    pub jwt_secret: String,
    /// Every limit.
    pub limits: Limits,
    /// How long a graceful shutdown may take before remaining connections are dropped.
    pub shutdown_grace: Duration,
    /// Serve `/_test/echo`, a plain WebSocket echo used by the conformance suite. Off by default.
    pub test_echo_route: bool,
    /// Production mode (no development conveniences).
    pub production: bool,
    /// Channel history; `None` turns it off.
    pub history: Option<HistoryConfig>,
    /// Name of the cookie that may carry the token of an SSE stream.
    pub sse_cookie: String,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive: Duration,
    /// A routed SSE stream (HTTP/2, HTTP/1.1 keep-alive) whose reader takes nothing for this long
    /// past a keep-alive interval has its connection closed.
    pub sse_stall_timeout: Duration,
    /// Origins browsers may call the HTTP API and `/sse` from (`*`: any).
    pub cors_origins: Vec<String>,
    /// Origins whose pages may open WebSockets and SSE streams (empty: any).
    pub allowed_origins: Vec<String>,
    /// How long a client may take to send its request head.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body, once its token has been accepted.
    pub body_read_timeout: Duration,
    /// Postgres Changes; `None` turns them off.
    pub postgres: Option<herald_postgres::Settings>,
    /// Only private channels may be joined (WebSocket) or streamed (SSE).
    pub private_only: bool,
    /// The bearer token `/metrics` requires; `None` leaves it open (refused in production mode).
    pub metrics_token: Option<String>,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies, load balancers).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Public keys, `iss`, `aud` and leeway of tokens (besides the shared secret).
    pub token_rules: herald_core::auth::TokenRules,
    /// A JWKS URL whose keys verify tokens; read at start, every `jwks_refresh` and when a token
    /// names an unknown `kid`.
    pub jwks_url: Option<String>,
    /// How often the JWKS is read again.
    pub jwks_refresh: Duration,
    /// This node's id, as messages name their sender; `None`: a new one at every start.
    pub node_id: Option<String>,
    /// The `[[policies]]` rules of private channels (none: the role rule, or the database's
    /// policies when a database is configured).
    pub policy: std::sync::Arc<herald_core::policy::Policy>,
}

impl ServerConfig {
    /// A config for tests and embedding: loopback, an ephemeral port, default limits.
    pub fn local(jwt_secret: &str) -> ServerConfig {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_secret: jwt_secret.to_owned(),
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(5),
            test_echo_route: false,
            production: false,
            history: None,
            sse_cookie: "herald_token".to_owned(),
            sse_keepalive: Duration::from_secs(15),
            sse_stall_timeout: Duration::from_secs(30),
            cors_origins: vec!["*".to_owned()],
            allowed_origins: Vec::new(),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            postgres: None,
            private_only: false,
            metrics_token: None,
            trusted_proxies: Vec::new(),
            token_rules: herald_core::auth::TokenRules::default(),
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            node_id: None,
            policy: Default::default(),
        }
    }
}
