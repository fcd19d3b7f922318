//! The HTTP API: broadcast from servers (batch and single, under `/api` and `/realtime/v1/api`),
//! `/healthz` and `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_core::channel::ChannelKey;
use herald_core::hub::PublishError;
use herald_core::{Body, Broadcast, Claims, Limits, Origin};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::listener::RemoteAddr;
use crate::state::AppState;

/// The HTTP API routes.
pub fn routes() -> Router<Arc<AppState>> {
    let api = Router::new()
        .route("/broadcast", post(batch))
        .route("/broadcast/{topic}/events/{event}", post(single))
        .route("/channels", get(channels))
        .route("/channels/{topic}/presence", get(presence))
        .route("/channels/{topic}/history", get(history));
    Router::new()
        .nest("/api", api.clone())
        .nest("/realtime/v1/api", api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// The largest batch body: a full payload for each of up to 64 messages, and never less than one
/// payload with room for its envelope.
fn batch_body_limit(limits: &Limits) -> usize {
    limits
        .max_payload_bytes
        .saturating_mul(limits.max_http_batch.min(64))
        .max(limits.max_payload_bytes + 64 * 1024)
}

/// Why a request body was not taken.
enum BodyRefusal {
    TooLarge,
    TooSlow,
    Unreadable,
}

/// Reads a request body, once its token has been checked: at most `limit` bytes (a declared
/// `Content-Length` over it is refused before a byte is read), within the node's body timeout.
async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, BodyRefusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyRefusal::TooLarge);
    }
    match tokio::time::timeout(
        app.config.body_read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Err(_) => Err(BodyRefusal::TooSlow),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(BodyRefusal::TooLarge);
                }
                source = err.source();
            }
            Err(BodyRefusal::Unreadable)
        }
    }
}

impl BodyRefusal {
    /// The answer, with `too_large` as the 413's (or 422's) body.
    fn answer(self, app: &AppState, too_large: ApiError) -> ApiError {
        match self {
            BodyRefusal::TooLarge => {
                herald_core::stats::error("http_body_too_large");
                too_large
            }
            BodyRefusal::TooSlow => {
                herald_core::stats::error("http_body_timeout");
                message(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request body did not arrive within {} s",
                        app.config.body_read_timeout.as_secs()
                    ),
                )
            }
            BodyRefusal::Unreadable => {
                herald_core::stats::error("http_body_unreadable");
                message(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
            }
        }
    }
}

/// An error answer of the HTTP API: a status and its JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    /// Seconds after which a retry can succeed (sent as `Retry-After`).
    retry_after: Option<u32>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// The answer to a publish the hub refused, after `accepted` messages of the request were taken:
/// a name too long is the caller's to fix (422); a store or backplane failure can pass on a retry
/// (503 with `Retry-After`), and `accepted` says how many of a batch need no retry.
fn publish_failure(remote: std::net::SocketAddr, e: &PublishError, accepted: usize) -> ApiError {
    if let PublishError::Invalid(e) = e {
        herald_core::stats::error("http_invalid_message");
        return unprocessable(json!({ e.field(): e.to_string() }));
    }
    warn!(%remote, error = %e, accepted, "publish failed");
    herald_core::stats::error("publish_failed");
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: json!({ "message": "Publish failed; retry", "accepted": accepted }),
        retry_after: Some(1),
    }
}

fn message(status: StatusCode, text: &str) -> ApiError {
    ApiError {
        status,
        body: json!({ "message": text }),
        retry_after: None,
    }
}

fn unprocessable(errors: Value) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: json!({ "errors": errors }),
        retry_after: None,
    }
}

/// The bearer token, else the `apikey` header, else the `apikey` query parameter.
fn request_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    crate::credentials::token(headers, query.get("apikey").map(String::as_str), None)
}

async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Claims, ApiError> {
    let Some(token) = request_token(headers, query) else {
        herald_core::stats::error("http_unauthorized");
        return Err(message(StatusCode::UNAUTHORIZED, "Unauthorized"));
    };
    app.auth
        .verify_fresh(&token, crate::state::FRESH_KEY_WAIT)
        .await
        .map_err(|e| {
            herald_core::stats::error("http_unauthorized");
            info!(reason = %e, "http request refused");
            message(StatusCode::UNAUTHORIZED, "Unauthorized")
        })
}

/// Takes `n` messages from the bucket of the caller (its role and subject); an empty bucket is 429
/// with `Retry-After`.
fn take_rate(app: &AppState, claims: &Claims, n: usize) -> Result<(), ApiError> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let key = herald_core::limits::RateBuckets::key(&claims.role, claims.sub.as_deref());
    if app.http_limiter.lock().try_take(&key, n) {
        Ok(())
    } else {
        herald_core::stats::error("http_rate_limited");
        Err(ApiError {
            retry_after: Some(1),
            ..message(StatusCode::TOO_MANY_REQUESTS, "Too many requests")
        })
    }
}

#[derive(Deserialize)]
struct BatchIn {
    messages: Vec<MessageIn>,
}

#[derive(Deserialize)]
struct MessageIn {
    topic: String,
    event: String,
    payload: Box<RawValue>,
    #[serde(default)]
    private: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

fn flexible_bool(v: Option<&Value>) -> Option<bool> {
    match v {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
        Some(_) => None,
    }
}

async fn batch(
    State(app): State<Arc<AppState>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let claims = authenticate(&app, &headers, &query).await?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        herald_core::stats::error("http_unsupported_media_type");
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            body: json!({"error": "Unsupported Media Type. Send the batch as application/json"}),
            retry_after: None,
        });
    }
    let limit = batch_body_limit(&app.limits);
    let body = read_body(&app, &headers, body, limit).await.map_err(|r| {
        r.answer(
            &app,
            message(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {limit} bytes"),
            ),
        )
    })?;
    let batch: BatchIn = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            herald_core::stats::error("http_invalid_body");
            return Err(unprocessable(json!({ "body": e.to_string() })));
        }
    };
    if batch.messages.len() > app.limits.max_http_batch {
        herald_core::stats::error("http_batch_too_large");
        return Err(message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many messages to broadcast, please reduce the batch size",
        ));
    }
    // Validate everything first: a batch is accepted whole or not at all.
    let mut errors = Vec::new();
    let mut ready = Vec::with_capacity(batch.messages.len());
    for (index, m) in batch.messages.into_iter().enumerate() {
        let Some(private) = flexible_bool(m.private.as_ref()) else {
            errors.push(json!({"index": index, "private": "must be a boolean"}));
            continue;
        };
        if m.topic.is_empty() {
            errors.push(json!({"index": index, "topic": "can't be blank"}));
            continue;
        }
        if m.payload.get().len() > app.limits.max_payload_bytes {
            errors.push(json!({"index": index, "payload": "Payload size exceeds the limit"}));
            continue;
        }
        let key = ChannelKey::new(&m.topic, private);
        if !by_policies(&app, &claims, &key) && !may_write(&app, &claims, &key) {
            herald_core::stats::error("write_denied");
            return Err(message(
                StatusCode::FORBIDDEN,
                &format!(
                    "You do not have permissions to write to this Channel topic: {}",
                    m.topic
                ),
            ));
        }
        let mut msg = Broadcast::new(key, m.event, Body::Json(m.payload), Origin::Text, None);
        msg.id = match m.id {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        msg.idempotency_key = m.idempotency_key.filter(|k| !k.is_empty());
        if let Err(e) = herald_core::limits::check_broadcast(
            &msg.channel.name,
            &msg.event,
            msg.id.as_deref(),
            msg.idempotency_key.as_deref(),
        ) {
            errors.push(json!({"index": index, e.field(): e.to_string()}));
            continue;
        }
        ready.push(msg);
    }
    if !errors.is_empty() {
        herald_core::stats::error("http_invalid_message");
        return Err(unprocessable(json!({ "messages": errors })));
    }
    let ready = writable(&app, &claims, ready).await?;
    take_rate(&app, &claims, ready.len())?;
    let stats = app.hub.stats();
    for (accepted, msg) in ready.into_iter().enumerate() {
        stats.http_messages_in.increment(1);
        stats.http_bytes_in.increment(msg.body.len() as u64);
        if let Err(e) = app.hub.publish(msg).await {
            return Err(publish_failure(remote, &e, accepted));
        }
    }
    Ok(StatusCode::ACCEPTED)
}

async fn single(
    State(app): State<Arc<AppState>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Path((topic, event)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let claims = authenticate(&app, &headers, &query).await?;
    let body = read_body(&app, &headers, body, app.limits.max_payload_bytes)
        .await
        .map_err(|r| {
            r.answer(
                &app,
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    body: json!({"errors": { "payload": "Payload size exceeds the limit" }}),
                    retry_after: None,
                },
            )
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let payload = match content_type.as_str() {
        "application/json" => match String::from_utf8(body.to_vec())
            .ok()
            .and_then(|t| RawValue::from_string(t).ok())
        {
            Some(raw) => Body::Json(raw),
            None => {
                herald_core::stats::error("http_invalid_body");
                return Err(unprocessable(json!({ "payload": "is not valid JSON" })));
            }
        },
        "application/octet-stream" => Body::Raw(body),
        _ => {
            herald_core::stats::error("http_unsupported_media_type");
            return Err(ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                body: json!({"error": "Unsupported Media Type. Use application/json or application/octet-stream"}),
                retry_after: None,
            });
        }
    };
    if payload.len() > app.limits.max_payload_bytes {
        herald_core::stats::error("payload_too_large");
        return Err(unprocessable(
            json!({ "payload": "Payload size exceeds the limit" }),
        ));
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("idempotency_key").cloned())
        .filter(|k| !k.is_empty());
    if topic.is_empty() || event.is_empty() {
        herald_core::stats::error("http_invalid_message");
        return Err(unprocessable(
            json!({ "topic": "topic and event can't be blank" }),
        ));
    }
    if let Err(e) =
        herald_core::limits::check_broadcast(&topic, &event, None, idempotency_key.as_deref())
    {
        herald_core::stats::error("http_invalid_message");
        return Err(unprocessable(json!({ e.field(): e.to_string() })));
    }
    let Some(private) = flexible_bool(
        query
            .get("private")
            .map(|s| Value::String(s.clone()))
            .as_ref(),
    ) else {
        return Err(unprocessable(json!({ "private": "must be true or false" })));
    };
    let key = ChannelKey::new(&topic, private);
    if !by_policies(&app, &claims, &key) && !may_write(&app, &claims, &key) {
        herald_core::stats::error("write_denied");
        return Err(message(
            StatusCode::FORBIDDEN,
            &format!("You do not have permissions to write to this Channel topic: {topic}"),
        ));
    }
    let msg = Broadcast::new(key, event, payload, Origin::Binary, None);
    let Some(mut msg) = writable(&app, &claims, vec![msg]).await?.pop() else {
        // Refused by the insert policy: skipped, and still accepted.
        return Ok(StatusCode::ACCEPTED);
    };
    take_rate(&app, &claims, 1)?;
    let stats = app.hub.stats();
    stats.http_messages_in.increment(1);
    stats.http_bytes_in.increment(msg.body.len() as u64);
    msg.idempotency_key = idempotency_key;
    match app.hub.publish(msg).await {
        Ok(_) => Ok(StatusCode::ACCEPTED),
        Err(e) => Err(publish_failure(remote, &e, 0)),
    }
}

/// True when a message to this channel is governed by the database's policies: a private channel,
/// a database, no configured rules, and a caller that is not the service role.
fn by_policies(app: &AppState, claims: &Claims, key: &ChannelKey) -> bool {
    key.private && app.postgres.is_some() && !claims.is_service() && !app.config.policy.has_rules()
}

/// May the caller send to the channel, as Herald's own rules decide (the configured rules, or the
/// role rule)? A refusal answers 403.
fn may_write(app: &AppState, claims: &Claims, key: &ChannelKey) -> bool {
    app.config.policy.permissions(claims, key).broadcast_write
}

/// The messages the caller may send: those governed by the policies go only when the insert
/// policy allows it (one check per channel, all of them asked together); the others are skipped,
/// as Supabase skips them, and the request is still accepted.
async fn writable(
    app: &AppState,
    claims: &Claims,
    messages: Vec<Broadcast>,
) -> Result<Vec<Broadcast>, ApiError> {
    let Some(pg) = &app.postgres else {
        return Ok(messages);
    };
    let mut channels: Vec<&ChannelKey> = messages
        .iter()
        .map(|m| &m.channel)
        .filter(|k| by_policies(app, claims, k))
        .collect();
    if channels.is_empty() {
        return Ok(messages);
    }
    channels.sort();
    channels.dedup();
    let answers = futures_util::future::join_all(
        channels
            .iter()
            .map(|k| pg.authorize(crate::ws::access::write_check(claims, k))),
    )
    .await;
    let mut allowed = HashMap::with_capacity(channels.len());
    for (k, answer) in channels.into_iter().zip(answers) {
        match answer {
            Ok(p) => allowed.insert(k.name.clone(), p.broadcast_write),
            Err(e) => {
                herald_core::stats::error("pg_authz_unavailable");
                warn!(topic = %k.name, error = %e, "http: channel policies could not be checked");
                return Err(message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Realtime was unable to connect to the project database",
                ));
            }
        };
    }
    Ok(messages
        .into_iter()
        .filter(|m| {
            let ok = !by_policies(app, claims, &m.channel)
                || allowed.get(&m.channel.name).copied().unwrap_or(false);
            if !ok {
                herald_core::stats::error("write_denied");
                info!(topic = %m.channel.name, role = %claims.role, "http: message skipped, the channel's insert policy refuses it");
            }
            ok
        })
        .collect())
}

fn require_service(claims: &Claims) -> Result<(), ApiError> {
    if claims.is_service() {
        Ok(())
    } else {
        herald_core::stats::error("http_forbidden");
        Err(message(
            StatusCode::FORBIDDEN,
            "This endpoint needs the service_role",
        ))
    }
}

/// `GET /api/channels`: channels with local subscribers, with subscriber and presence counts.
async fn channels(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_service(&authenticate(&app, &headers, &query).await?)?;
    Ok(axum::Json(json!({ "channels": channel_summaries(&app) })).into_response())
}

/// Every channel with local subscribers: `{topic, private, subscribers, presences}`.
pub fn channel_summaries(app: &AppState) -> Vec<Value> {
    app.hub
        .channels()
        .into_iter()
        .map(|(key, subscribers)| {
            json!({
                "topic": &*key.name,
                "private": key.private,
                "subscribers": subscribers,
                "presences": app.hub.presence_count(&key),
            })
        })
        .collect()
}

/// A service-role request about one channel: the channel (`?private=true` picks the private one).
async fn service_channel(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    topic: &str,
) -> Result<ChannelKey, ApiError> {
    require_service(&authenticate(app, headers, query).await?)?;
    let private = query.get("private").map(|s| Value::String(s.clone()));
    let Some(private) = flexible_bool(private.as_ref()) else {
        return Err(unprocessable(json!({ "private": "must be true or false" })));
    };
    Ok(ChannelKey::new(topic, private))
}

/// `GET /api/channels/<topic>/presence[?private=true]`: the presence state of a channel.
async fn presence(
    State(app): State<Arc<AppState>>,
    Path(topic): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = service_channel(&app, &headers, &query, &topic).await?;
    Ok(
        axum::Json(json!({ "topic": topic, "state": app.hub.presence_state(&key) }))
            .into_response(),
    )
}

/// `GET /api/channels/<topic>/history?after=<offset>&limit=<n>[&private=true]`: stored messages.
async fn history(
    State(app): State<Arc<AppState>>,
    Path(topic): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = service_channel(&app, &headers, &query, &topic).await?;
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| unprocessable(json!({ name: "must be a non-negative integer" }))),
        }
    };
    let after = number("after", 0)?;
    let limit = number("limit", 100)?.clamp(1, 1000) as usize;
    if !app.hub.history_enabled(&key) {
        return Err(message(
            StatusCode::NOT_FOUND,
            "This channel keeps no history",
        ));
    };
    let internal = |e: herald_core::history::HistoryError| {
        warn!(error = %e, "history read failed");
        ApiError {
            retry_after: Some(1),
            ..message(
                StatusCode::SERVICE_UNAVAILABLE,
                "History unavailable; retry",
            )
        }
    };
    let broker = app.hub.broker();
    let position = broker.position(key.clone()).await.map_err(internal)?;
    let records = broker
        .read_after(key, after, limit)
        .await
        .map_err(internal)?;
    let messages: Vec<StoredMessage> = records
        .into_iter()
        .map(|r| {
            // Stored JSON goes out as stored: however deep, it is never parsed into a tree here.
            let encoded = |b: &[u8]| StoredPayload::Encoded {
                encoding: "base64",
                data: base64_encode(b),
            };
            let json = (!r.raw)
                .then(|| std::str::from_utf8(&r.payload).ok())
                .flatten()
                .and_then(|t| RawValue::from_string(t.to_owned()).ok());
            let payload = match json {
                Some(raw) => StoredPayload::Json(raw),
                None => encoded(&r.payload),
            };
            StoredMessage {
                offset: r.offset,
                id: r.id,
                event: r.event,
                payload,
                inserted_at: r.ts_ms,
            }
        })
        .collect();
    Ok(axum::Json(History {
        topic,
        epoch: position.epoch.to_string(),
        offset: position.offset,
        messages,
    })
    .into_response())
}

/// The answer of the history endpoint.
#[derive(serde::Serialize)]
struct History {
    topic: String,
    epoch: String,
    offset: u64,
    messages: Vec<StoredMessage>,
}

/// One stored message, as the history endpoint lists it.
#[derive(serde::Serialize)]
struct StoredMessage {
    offset: u64,
    id: String,
    event: String,
    payload: StoredPayload,
    inserted_at: u64,
}

/// A stored payload: its JSON as stored, or raw bytes in base64.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum StoredPayload {
    Json(Box<RawValue>),
    Encoded {
        encoding: &'static str,
        data: String,
    },
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let connections = app.connections.load(std::sync::atomic::Ordering::Relaxed);
    let channels = app.hub.channels().len();
    let mut body = json!({ "status": "ok", "connections": connections, "channels": channels });
    if let Some(h) = app.hub.history() {
        // Channel logs held in memory: those in use and those holding messages.
        body["history_channels"] = json!(h.cached_channels());
    }
    if let Some(pg) = &app.postgres {
        body["postgres"] = json!({
            "ready": pg.ready(),
            "leader": pg.leader(),
            "standby": pg.standby(),
            "streaming": pg.streaming(),
        });
    }
    axum::Json(body).into_response()
}

async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &app.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), expected.as_bytes()) {
            herald_core::stats::error("metrics_unauthorized");
            return message(
                StatusCode::UNAUTHORIZED,
                "/metrics needs Authorization: Bearer <metrics_token>",
            )
            .into_response();
        }
    }
    match &app.prometheus {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed").into_response(),
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
