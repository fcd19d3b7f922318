//! `/_test/echo`: a plain WebSocket echo over the same stack as the real endpoint, so the RFC 6455
//! conformance suite can exercise framing, fragmentation, UTF-8 and close handling. It exists only
//! when `test_echo_route` is switched on.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;

use crate::state::AppState;
use crate::ws::socket::close_for_error;

/// The echo route.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/_test/echo", get(echo))
}

async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(super::READ_BUFFER_BYTES)
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20)
        .on_upgrade(run)
}

async fn run(mut socket: WebSocket) {
    while let Some(msg) = socket.recv().await {
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                if let Some(frame) = close_for_error(&e) {
                    let _ = socket.send(Message::Close(Some(frame))).await;
                }
                return;
            }
        };
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => {
                // Send the automatic close reply before dropping the socket.
                use futures_util::SinkExt;
                let _ = socket.flush().await;
                return;
            }
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}
