//! The WebSocket endpoint (`/socket/websocket` and `/realtime/v1/websocket`): the handshake checks
//! (protocol version, connection limit, API key) and the hand-over to a session.

pub mod access;
pub mod echo;
mod inbound;
pub mod session;
pub mod socket;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_protocol::Vsn;
use serde_json::json;
use tracing::info;

use crate::listener::RemoteAddr;
use crate::state::AppState;

/// Initial read buffer of each connection: small, since idle connections are the common case. A frame
/// larger than this is read into room reserved for its whole length once its header has arrived, so
/// the size bounds only how much one read asks for, not how large a message may be.
pub const READ_BUFFER_BYTES: usize = 512;
/// Writes are buffered up to this size before going to the socket (coalescing).
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The WebSocket routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/socket/websocket", get(handshake))
        .route("/realtime/v1/websocket", get(handshake))
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

async fn handshake(
    State(app): State<Arc<AppState>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(vsn) = Vsn::parse(params.get("vsn").map(String::as_str)) else {
        info!(%remote, vsn = ?params.get("vsn"), "handshake refused: unsupported vsn");
        herald_core::stats::error("handshake_bad_vsn");
        return refuse(
            StatusCode::BAD_REQUEST,
            "Unsupported serializer version: vsn must be 1.0.0 or 2.0.0",
        );
    };
    if let Err(e) = crate::origin::check(&app.config, &headers) {
        info!(%remote, reason = %e, "handshake refused");
        herald_core::stats::error("origin_refused");
        return refuse(StatusCode::FORBIDDEN, &e.to_string());
    }
    let token = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("apikey").cloned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        info!(%remote, "handshake refused: API key is missing");
        herald_core::stats::error("token_missing");
        return refuse(StatusCode::UNAUTHORIZED, "API key is missing");
    };
    let claims = match app
        .auth
        .verify_fresh(&token, crate::state::FRESH_KEY_WAIT)
        .await
    {
        Ok(claims) => claims,
        Err(e) => {
            info!(%remote, reason = %e, "handshake refused");
            herald_core::stats::error(e.label());
            return refuse(StatusCode::UNAUTHORIZED, &e.handshake_message());
        }
    };
    let client = crate::client_addr::client_ip(&app.config.trusted_proxies, remote, &headers);
    let slot = match app.try_reserve_connection(crate::state::Transport::WebSocket, client) {
        Ok(slot) => slot,
        Err(full) => {
            info!(%remote, client = ?client, reason = %full, "handshake refused");
            herald_core::stats::error(full.label());
            return refuse(StatusCode::TOO_MANY_REQUESTS, &full.to_string());
        }
    };
    let limits = &app.limits;
    let app2 = app.clone();
    let token_guard = app.sessions.token();
    // Only the token's hash lives as long as the connection.
    let token_hash = session::token_hash(&token);
    drop(token);
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES + limits.max_frame_bytes.saturating_mul(2))
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_failed_upgrade(move |e| {
            tracing::warn!(%remote, error = %e, "websocket upgrade failed");
            herald_core::stats::error("upgrade_failed");
        })
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let _tracked = token_guard;
            let claims = access::keep_claims(&app2, claims);
            session::run(
                app2,
                socket,
                session::Peer {
                    remote,
                    vsn,
                    token_hash,
                    claims: std::sync::Arc::new(claims),
                },
            )
            .await;
        })
}
