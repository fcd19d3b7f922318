//! The page served at `/` (a small live chat over the WebSocket endpoint) and, outside production
//! mode, `/dev/token`, which hands that page an `anon` token.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

const INDEX: &str = include_str!("../../../web/index.html");

/// The demo routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/dev/token", get(dev_token))
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn dev_token(State(app): State<Arc<AppState>>) -> Response {
    if app.config.production {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not available in production mode"})),
        )
            .into_response();
    }
    match app.auth.mint(herald_core::auth::roles::ANON, None, 3600) {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "could not mint a development token");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": "could not mint a token"})),
            )
                .into_response()
        }
    }
}
