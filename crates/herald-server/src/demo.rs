//! What the binary serves to browsers besides the protocol endpoints: the demo app (`/`), the admin
//! page (`/admin`), the JavaScript SDK (`/sdk/herald.js`, `/sdk/react.js`), the admin page's live stats
//! stream (`/api/admin/stats`), and in development mode `/dev/token` and a simulated metrics feed for
//! the demo dashboard. Static files are embedded in the binary.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use herald_core::auth::roles;
use herald_core::{Body as MessageBody, Broadcast, ChannelKey, Origin};
use serde_json::{Value, json};

use crate::state::AppState;

/// One embedded file: path, content type, contents.
type Asset = (&'static str, &'static str, &'static str);

const ASSETS: &[Asset] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "/demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/demo.js"),
    ),
    (
        "/demo.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/demo.css"),
    ),
    (
        "/admin",
        "text/html; charset=utf-8",
        include_str!("../../../web/admin.html"),
    ),
    (
        "/admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/admin.js"),
    ),
    (
        "/sdk/herald.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../clients/js/herald.js"),
    ),
    (
        "/sdk/react.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../clients/js/react.js"),
    ),
];

/// Channel of the simulated metrics feed (development mode).
pub const DEMO_METRICS_TOPIC: &str = "demo:metrics";

/// The browser-facing routes.
pub fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new()
        .route("/dev/token", get(dev_token))
        .route("/api/admin/stats", get(admin_stats))
        .route("/realtime/v1/api/admin/stats", get(admin_stats));
    for (path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Whether a browser sent the request from another site's page: a `Sec-Fetch-Site` other than
/// same-origin or none, or an `Origin` whose host is not the one asked.
fn cross_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `/dev/token[?role=anon|authenticated|service_role]`: a token for the demo and admin pages. Only
/// outside production mode.
async fn dev_token(
    State(app): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if app.config.production {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not available in production mode"})),
        )
            .into_response();
    }
    if cross_origin(&headers) {
        herald_core::stats::error("dev_token_cross_origin");
        return (
            StatusCode::FORBIDDEN,
            axum::Json(
                json!({"error": "development tokens are given to this server's own pages only"}),
            ),
        )
            .into_response();
    }
    let role = match q.get("role").map(String::as_str) {
        None | Some("anon") => roles::ANON,
        Some("authenticated") => roles::AUTHENTICATED,
        Some("service_role") => roles::SERVICE_ROLE,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "role: anon, authenticated or service_role"})),
            )
                .into_response();
        }
    };
    let sub = q.get("sub").map(String::as_str);
    match app.auth.mint(role, sub, 3600) {
        Ok(token) => axum::Json(json!({ "token": token, "role": role })).into_response(),
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

/// Parses the Prometheus text exposition into `name{labels}` -> value.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One snapshot of the node for the admin page.
pub fn snapshot(app: &AppState) -> Value {
    let metrics = app
        .prometheus
        .as_ref()
        .map(|h| parse_prometheus(&h.render()))
        .unwrap_or_default();
    let get = |k: &str| metrics.get(k).copied().unwrap_or(0.0);
    let errors: BTreeMap<String, f64> = metrics
        .iter()
        .filter_map(|(k, v)| {
            let reason = k
                .strip_prefix("herald_errors_total{reason=\"")?
                .strip_suffix("\"}")?;
            Some((reason.to_owned(), *v))
        })
        .collect();
    let mut channels = crate::http_api::channel_summaries(app);
    channels.sort_by(|a, b| b["subscribers"].as_u64().cmp(&a["subscribers"].as_u64()));
    channels.truncate(100);
    json!({
        "at": herald_core::history::Clock::new().now_ms(),
        "connections": {
            "websocket": get("herald_connections{transport=\"websocket\"}"),
            "sse": get("herald_connections{transport=\"sse\"}"),
        },
        "channels_total": app.hub.channels().len(),
        "channels": channels,
        "presences": app.hub.presence_total(),
        "messages_in": {
            "websocket": get("herald_messages_in_total{transport=\"websocket\"}"),
            "http": get("herald_messages_in_total{transport=\"http\"}"),
        },
        "messages_out": {
            "websocket": get("herald_messages_out_total{transport=\"websocket\"}"),
            "sse": get("herald_messages_out_total{transport=\"sse\"}"),
        },
        "joins": get("herald_joins_total"),
        "slow_consumers": errors.get("slow_consumer").copied().unwrap_or(0.0),
        "errors": errors,
    })
}

/// `GET /api/admin/stats` (service role; token as for `/sse`): a `stats` event every second.
async fn admin_stats(
    State(app): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let query_token = q.get("apikey").or_else(|| q.get("access_token"));
    let token = crate::credentials::token(&headers, query_token.map(String::as_str), None);
    let Some(token) = token else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "API key is missing"})),
        )
            .into_response();
    };
    match app.auth.verify(&token) {
        Err(e) => {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": e.handshake_message()})),
            )
                .into_response();
        }
        Ok(c) if !c.is_service() => {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"error": "the admin stream needs the service_role"})),
            )
                .into_response();
        }
        Ok(_) => {}
    }
    let state = (app, tokio::time::interval(Duration::from_secs(1)));
    let stream = futures_util::stream::unfold(state, |(app, mut tick)| async move {
        tokio::select! {
            () = app.shutdown.cancelled() => None,
            _ = tick.tick() => {
                let data = snapshot(&app);
                let chunk = Bytes::from(format!("event: stats\ndata: {data}\n\n"));
                Some((Ok::<_, Infallible>(chunk), (app, tick)))
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Development mode: publishes the node's own message rates to `demo:metrics` every second, for the
/// demo dashboard. Stops at shutdown.
pub async fn demo_feed(app: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<(f64, f64)> = None;
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = snapshot(&app);
        let sum = |v: &Value| {
            v.as_object()
                .map_or(0.0, |o| o.values().filter_map(Value::as_f64).sum::<f64>())
        };
        let (msg_in, msg_out) = (sum(&s["messages_in"]), sum(&s["messages_out"]));
        let (rate_in, rate_out) = match last {
            Some((i, o)) => ((msg_in - i).max(0.0), (msg_out - o).max(0.0)),
            None => (0.0, 0.0),
        };
        last = Some((msg_in, msg_out));
        let payload = json!({
            "at": s["at"],
            "messages_in_per_sec": rate_in,
            "messages_out_per_sec": rate_out,
            "connections": sum(&s["connections"]),
        });
        let Ok(raw) = serde_json::value::to_raw_value(&payload) else {
            continue;
        };
        let key = ChannelKey::new(DEMO_METRICS_TOPIC, false);
        // No subscribers, nothing to do: the feed costs nothing when nobody watches.
        if app.hub.subscriber_count(&key) == 0 {
            continue;
        }
        let msg = Broadcast::new(
            key,
            "metrics".to_owned(),
            MessageBody::Json(raw),
            Origin::Text,
            None,
        );
        if let Err(e) = app.hub.publish(msg).await {
            tracing::debug!(error = %e, "demo feed publish failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_read_back() {
        let m = parse_prometheus(
            "# TYPE x counter\nherald_joins_total 3\nherald_errors_total{reason=\"slow_consumer\"} 2\n\n",
        );
        assert_eq!(m["herald_joins_total"], 3.0);
        assert_eq!(m["herald_errors_total{reason=\"slow_consumer\"}"], 2.0);
    }
}
