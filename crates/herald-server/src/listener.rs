//! The accept loop: one TCP listener serving HTTP/1.1 (with WebSocket upgrades) and h2c, the router,
//! and graceful shutdown (stop accepting, close sessions with 1001, wait a bounded time).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::state::AppState;
use crate::{http_api, sse_http1, ws};

/// Bytes an HTTP/2 stream may have waiting for its peer's flow-control window.
const H2_SEND_BUFFER: usize = 64 * 1024;

/// The remote address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Ends the connection a request came on, when cancelled (a stalled stream on it).
#[derive(Debug, Clone)]
pub struct ConnectionCloser(pub tokio_util::sync::CancellationToken);

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// Its state (history store) could not be set up.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Shared state, for embedding and tests.
    pub state: Arc<AppState>,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        if let Err(e) = self.task.await {
            warn!(error = %e, "accept loop ended abnormally");
        }
    }

    /// Waits until the node has stopped (after a shutdown was requested elsewhere).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            warn!(error = %e, "accept loop ended abnormally");
        }
    }
}

/// Builds the router of a node.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .merge(ws::routes())
        .merge(crate::demo::routes())
        .merge(crate::sse::routes())
        .merge(http_api::routes());
    if state.config.test_echo_route {
        router = router.merge(ws::echo::routes());
    }
    let cors = cors(&state.config.cors_origins);
    router.layer(cors).with_state(state)
}

/// Binds and starts serving. Returns once the listener is bound.
pub async fn start(
    config: ServerConfig,
    prometheus: Option<PrometheusHandle>,
) -> Result<Running, StartError> {
    serve(AppState::new(config, prometheus)?).await
}

/// Binds and starts serving an already built state.
pub async fn serve(state: Arc<AppState>) -> Result<Running, StartError> {
    let addr = state.config.addr;
    let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let app = router(state.clone());
    if let Some(every) = state.config.history.as_ref().map(|h| h.sweep_every) {
        tokio::spawn(sweep_history(state.clone(), every));
    }
    if !state.config.production {
        tokio::spawn(crate::demo::demo_feed(state.clone()));
    }
    if let Some(url) = state.config.jwks_url.clone() {
        tokio::spawn(crate::jwks::keep_fresh(
            state.clone(),
            url,
            state.config.jwks_refresh,
        ));
    }
    let task = tokio::spawn(accept_loop(listener, app, state.clone()));
    info!(%addr, "listening");
    Ok(Running { addr, state, task })
}

/// Cross-origin access for browsers. A listed origin may send credentials (a cookie-authenticated
/// SSE stream); `*` lets any origin call, never with credentials, so that a page of another site
/// cannot read a user's private stream with the user's cookie.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
    let any = origins.iter().any(|o| o == "*");
    let listed: Arc<Vec<HeaderValue>> = Arc::new(
        origins
            .iter()
            .filter(|o| *o != "*")
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect(),
    );
    let credentialed = listed.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            any || listed.contains(origin)
        }))
        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
            credentialed.contains(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("apikey"),
            HeaderName::from_static("x-client-info"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(3600))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Applies age retention and forgets expired idempotency keys, until shutdown.
async fn sweep_history(state: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let s = state.clone();
        let swept = tokio::task::spawn_blocking(move || s.hub.history().map(|h| h.sweep())).await;
        match swept {
            Ok(Some(Err(e))) => {
                warn!(error = %e, "history sweep failed");
                herald_core::stats::error("history_sweep");
            }
            Ok(Some(Ok(n))) if n > 0 => tracing::debug!(removed = n, "history sweep"),
            _ => {}
        }
    }
}

/// Serves a connection with the general HTTP stack (HTTP/1.1 with upgrades, h2c), whose first
/// bytes, `prefix`, were read already and whose request head must be complete by `deadline`.
async fn serve_http(
    app: Router,
    mut builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: tokio::net::TcpStream,
    prefix: Vec<u8>,
    remote: SocketAddr,
    deadline: tokio::time::Instant,
) {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    builder
        .http1()
        .header_read_timeout(left.max(Duration::from_millis(1)));
    let closer = tokio_util::sync::CancellationToken::new();
    let handed = ConnectionCloser(closer.clone());
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(RemoteAddr(remote));
        req.extensions_mut().insert(handed.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let io = TokioIo::new(crate::linger::Lingering::new(stream, prefix));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::select! {
        served = watcher.watch(conn.into_owned()) => {
            if let Err(e) = served {
                tracing::debug!(error = %e, %remote, "http connection ended with an error");
            }
        }
        () = closer.cancelled() => {
            tracing::debug!(%remote, "closed a connection with a stalled stream");
        }
    }
}

async fn accept_loop(listener: TcpListener, app: Router, state: Arc<AppState>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .max_buf_size(64 * 1024);
    // An h2c peer that stops answering pings is dropped. A stream whose reader never opens its
    // flow-control window holds at most `max_send_buf_size` bytes in the connection, and its
    // SSE queue is bounded by `outbound_queue_frames` (a full one ends the stream).
    builder
        .http2()
        .max_concurrent_streams(100)
        .max_send_buf_size(H2_SEND_BUFFER)
        .max_header_list_size(16 * 1024)
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    loop {
        let accepted = tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: log, back off briefly, keep serving.
                warn!(error = %e, "accept failed");
                herald_core::stats::error("accept_failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            warn!(error = %e, %remote, "set_nodelay failed");
        }
        let app = app.clone();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut stream = stream;
            // The request head's time starts now, whoever reads it: the sniff below, the SSE
            // reader or hyper.
            let deadline = tokio::time::Instant::now() + state.config.header_read_timeout;
            // Idle SSE streams over HTTP/1 skip the general HTTP stack (see `sse_http1`); a
            // connection that sends nothing within the head timeout is closed.
            let (sniffed, prefix) = sse_http1::sniff(&mut stream, deadline).await;
            match sniffed {
                sse_http1::Sniff::Sse => {
                    sse_http1::serve(state, stream, remote, prefix, deadline).await;
                    return;
                }
                sse_http1::Sniff::Silent => {
                    herald_core::stats::error("connection_silent");
                    tracing::debug!(%remote, "closed a connection that sent no request head");
                    return;
                }
                sse_http1::Sniff::Other => {}
            }
            // Boxed: an SSE stream served above keeps this task for its whole life, and must not
            // carry room for the general HTTP stack's connection state, which it never uses.
            Box::pin(serve_http(
                app, builder, watcher, stream, prefix, remote, deadline,
            ))
            .await;
        });
    }
    drop(listener);
    info!("shutting down: no longer accepting connections");
    let grace = state.config.shutdown_grace;
    state.sessions.close();
    let sessions = state.sessions.clone();
    let drained = tokio::time::timeout(grace, async move {
        graceful.shutdown().await;
        sessions.wait().await;
    })
    .await;
    if let Some(h) = state.hub.history()
        && let Err(e) = h.sync()
    {
        warn!(error = %e, "history sync at shutdown failed");
    }
    match drained {
        Ok(()) => info!("shutdown complete"),
        Err(_) => warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace elapsed; dropping remaining connections"
        ),
    }
}
