//! `GET /sse`: Server-Sent Events for clients that only listen. Several topics per stream; every event
//! carries one `id:` cursor holding the position of all of them, so a reconnecting `EventSource`
//! (`Last-Event-ID`) or a reloaded page (`?last_event_id=`) resumes each channel exactly where it
//! stopped, or is told with a `system` event that it cannot.
//!
//! Fan-out hands each stream the message's shared, pre-encoded `event:`/`data:` lines; the stream only
//! adds its own `id:` line. Works over HTTP/1.1 and HTTP/2 (h2c) alike.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use herald_core::channel::ChannelKey;
use herald_core::history::{Position, RecoverRequest};
use herald_core::{Broadcast, SseHandle, SseItem, Subscriber};
use herald_protocol::cursor::{self, CursorEntry};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::listener::{ConnectionCloser, RemoteAddr};
use crate::state::{AppState, ConnectionSlot, Transport};

/// Topics one stream may follow.
pub const MAX_TOPICS: usize = 32;
/// Items drained from the queue per wake-up.
const DRAIN: usize = 64;
/// The reconnection delay suggested to browsers, in milliseconds.
const RETRY_MS: u32 = 2000;

/// The SSE route.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/sse", get(open))
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "error": text }))).into_response()
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "yes" | "on")
}

/// The HMAC key of cursors, derived from the node's secret.
pub fn cursor_key(app: &AppState) -> Vec<u8> {
    let mut k = b"herald-sse-cursor:".to_vec();
    k.extend_from_slice(app.config.jwt_secret.as_bytes());
    k
}

struct Channel {
    key: ChannelKey,
    hash: u32,
    subscription: u64,
    position: Option<Position>,
}

/// Why a stream was not opened: an HTTP status and the `error` text of its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: &str) -> Refusal {
        Refusal {
            status,
            message: message.to_owned(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        json!({ "error": self.message }).to_string()
    }
}

async fn open(
    State(app): State<Arc<AppState>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    closer: Option<Extension<ConnectionCloser>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let stream = match prepare(app.clone(), remote, pairs, &headers).await {
        Ok(stream) => stream,
        Err(r) => return error(r.status, &r.message),
    };
    if let Some(Extension(ConnectionCloser(closer))) = closer {
        tokio::spawn(watch_stall(
            stream.id,
            stream.pulled.clone(),
            stream.born,
            stream.gone.clone(),
            closer,
            app.config.sse_keepalive,
            app.config.sse_stall_timeout,
        ));
    }
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|b| (Ok::<_, Infallible>(b), s))
    });
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Closes the connection of a routed stream (HTTP/2, or HTTP/1.1 keep-alive) whose writer has not
/// asked for a chunk for `keepalive + stall`. A healthy writer asks at least every `keepalive` (the
/// keep-alive comment); one that stops is stuck behind a peer that does not read, which over
/// HTTP/2 means a flow-control window that never opens. Ending the connection frees the stream's
/// subscription, slot and send buffer; the client reconnects with `Last-Event-ID` and misses
/// nothing that history keeps.
async fn watch_stall(
    id: u64,
    pulled: Arc<AtomicU64>,
    born: tokio::time::Instant,
    gone: CancellationToken,
    closer: CancellationToken,
    keepalive: std::time::Duration,
    stall: std::time::Duration,
) {
    let limit = u64::try_from((keepalive + stall).as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            () = gone.cancelled() => return,
            () = tokio::time::sleep(keepalive) => {}
        }
        let now = u64::try_from(born.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(pulled.load(Ordering::Relaxed)) > limit {
            warn!(
                conn = id,
                "sse stream stalled (its reader takes nothing): closing its connection"
            );
            herald_core::stats::error("sse_stalled");
            closer.cancel();
            return;
        }
    }
}

/// What the token may read on each channel: `None` for public channels; private ones by the
/// configured rules (without rules and without a database, the role rule), or else by the
/// database's policies (the checks of one stream go to the database together). Refuses the stream
/// when one may not be read.
async fn read_permissions(
    app: &AppState,
    claims: &herald_core::Claims,
    keys: &[ChannelKey],
    presence: bool,
) -> Result<Vec<Option<herald_postgres::Permissions>>, Refusal> {
    let unauthorized = |k: &ChannelKey| {
        herald_core::stats::error("join_refused");
        Refusal::new(
            StatusCode::FORBIDDEN,
            &format!(
                "Unauthorized: You do not have permissions to read from this Channel topic: {}",
                k.name
            ),
        )
    };
    let policy = &app.config.policy;
    let pg = match &app.postgres {
        Some(pg) if keys.iter().any(|k| k.private) && !policy.has_rules() => pg,
        _ => {
            let mut permissions = Vec::with_capacity(keys.len());
            for k in keys {
                if !k.private {
                    permissions.push(None);
                    continue;
                }
                let p = policy.permissions(claims, k);
                if !p.may_join(presence) {
                    return Err(unauthorized(k));
                }
                permissions.push(Some(p));
            }
            return Ok(permissions);
        }
    };
    let checks = keys.iter().map(|k| async move {
        if k.private {
            let check = crate::ws::access::read_check(claims, k, presence);
            pg.authorize(check).await.map(Some)
        } else {
            Ok(None)
        }
    });
    let answers = futures_util::future::join_all(checks).await;
    let mut permissions = Vec::with_capacity(keys.len());
    for (k, answer) in keys.iter().zip(answers) {
        match answer {
            Ok(Some(p)) if !p.may_join(presence) => return Err(unauthorized(k)),
            Ok(p) => permissions.push(p),
            Err(e) => {
                herald_core::stats::error("pg_authz_unavailable");
                warn!(topic = %k.name, error = %e, "sse: channel policies could not be checked");
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Realtime was unable to connect to the project database",
                ));
            }
        }
    }
    Ok(permissions)
}

/// Checks a stream request and subscribes its channels; the stream then yields its bytes.
pub async fn prepare(
    app: Arc<AppState>,
    remote: std::net::SocketAddr,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<SseStream, Refusal> {
    let mut topics: Vec<String> = Vec::new();
    let (mut presence, mut private, mut query_cursor, mut query_token) = (false, false, None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "topic" if !topics.contains(&v) => topics.push(v),
            "presence" => presence = truthy(&v),
            "private" => private = truthy(&v),
            "last_event_id" => query_cursor = Some(v),
            "apikey" | "access_token" => query_token = Some(v),
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "topic: give at least one ?topic=<name>",
        ));
    }
    if topics.len() > MAX_TOPICS {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            &format!("topic: at most {MAX_TOPICS} topics per stream"),
        ));
    }
    if topics.iter().any(|t| t.is_empty()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "topic: can't be blank",
        ));
    }
    if let Some(e) = topics
        .iter()
        .find_map(|t| herald_core::limits::check_channel_name(t).err())
    {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, &e.to_string()));
    }
    if let Err(e) = crate::origin::check(&app.config, headers) {
        info!(%remote, reason = %e, "sse refused");
        herald_core::stats::error("origin_refused");
        return Err(Refusal::new(StatusCode::FORBIDDEN, &e.to_string()));
    }
    // A cookie stands for the user only on requests of its own site (or of a listed origin).
    let cookie = crate::origin::cookie_allowed(&app.config, headers)
        .then_some(app.config.sse_cookie.as_str());
    let token = crate::credentials::token(headers, query_token.as_deref(), cookie);
    let Some(token) = token else {
        herald_core::stats::error("token_missing");
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "API key is missing"));
    };
    let claims = match app
        .auth
        .verify_fresh(&token, crate::state::FRESH_KEY_WAIT)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            herald_core::stats::error(e.label());
            info!(%remote, reason = %e, "sse refused");
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                &e.handshake_message(),
            ));
        }
    };
    if app.config.private_only && !private {
        herald_core::stats::error("join_refused");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            crate::ws::session::PRIVATE_ONLY_REASON,
        ));
    }
    let keys: Vec<ChannelKey> = topics.iter().map(|t| ChannelKey::new(t, private)).collect();
    let permissions = read_permissions(&app, &claims, &keys, presence).await?;
    if let Some(k) = keys.iter().find(|k| !app.hub.admits(k)) {
        herald_core::stats::error("node_channel_limit");
        warn!(%remote, topic = %k.name, max = app.limits.max_channels, "sse refused: max_channels reached");
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{} (max_channels is {})",
                herald_core::hub::NODE_CHANNEL_LIMIT,
                app.limits.max_channels
            ),
        ));
    }
    let client = crate::client_addr::client_ip(&app.config.trusted_proxies, remote, headers);
    let slot = match app.try_reserve_connection(Transport::Sse, client) {
        Ok(slot) => slot,
        Err(full) => {
            herald_core::stats::error(full.label());
            info!(%remote, client = ?client, reason = %full, "sse refused");
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                &full.to_string(),
            ));
        }
    };
    let presented = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query_cursor)
        .filter(|c| !c.is_empty());
    let key = cursor_key(&app);
    let entries = presented.as_deref().map(|c| cursor::decode(c, &key));
    if let Some(Err(e)) = &entries {
        info!(%remote, reason = %e, "sse cursor refused; channels restart live");
        herald_core::stats::error("sse_bad_cursor");
    }
    let id = app.hub.next_id();
    let handle = SseHandle::new(id, app.limits.outbound_queue_frames);
    let mut stream = SseStream {
        app: app.clone(),
        handle: handle.clone(),
        pending: VecDeque::new(),
        channels: Vec::new(),
        cursor_key: key,
        ping: tokio::time::interval_at(
            tokio::time::Instant::now() + app.config.sse_keepalive,
            app.config.sse_keepalive,
        ),
        _slot: slot,
        id,
        expires_at: claims.expiry(tokio::time::Instant::now(), herald_core::auth::unix_now()),
        ending: false,
        pulled: Arc::new(AtomicU64::new(0)),
        born: tokio::time::Instant::now(),
        gone: CancellationToken::new(),
    };
    stream
        .pending
        .push_back(Bytes::from(format!("retry: {RETRY_MS}\n: connected\n\n")));
    let mut replays = Vec::new();
    let mut lives = Vec::new();
    for (k, permitted) in keys.into_iter().zip(permissions) {
        let hash = cursor::channel_hash(k.private, &k.name);
        let known = match &entries {
            Some(Ok(list)) => list.iter().find(|e| e.channel == hash).cloned(),
            _ => None,
        };
        let request = match &known {
            Some(e) => RecoverRequest::After {
                epoch: e.epoch.clone(),
                offset: e.offset,
            },
            // No usable position: subscribe at the current top (the empty epoch never matches).
            None => RecoverRequest::After {
                epoch: String::new(),
                offset: 0,
            },
        };
        // A member the policies let read only presence gets no broadcasts, and the reverse.
        let subscriber = Subscriber::sse(
            handle.clone(),
            presence && permitted.is_none_or(|p| p.presence_read),
        )
        .with_broadcasts(permitted.is_none_or(|p| p.broadcast_read));
        let (subscription, recovery) =
            match app.hub.subscribe_recovering(&k, subscriber, &request).await {
                Ok(done) => done,
                Err(e) => {
                    warn!(%remote, error = %e, "history read failed");
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "History unavailable; retry",
                    ));
                }
            };
        let mut channel = Channel {
            key: k.clone(),
            hash,
            subscription,
            position: None,
        };
        match recovery {
            Some((r, live)) => {
                lives.push(live);
                let recovered = r.recovered && known.is_some();
                if presented.is_some() && !recovered {
                    stream.system_unrecovered(&k);
                }
                // Until its replay is out, a channel's cursor entry stays where the client was.
                channel.position = Some(Position {
                    epoch: r.epoch.clone(),
                    offset: if recovered {
                        known.as_ref().map_or(r.top, |e| e.offset)
                    } else {
                        r.top
                    },
                });
                if recovered {
                    replays.push((k.clone(), r.epoch.clone(), r.records));
                }
            }
            None if presented.is_some() => stream.system_unrecovered(&k),
            None => {}
        }
        stream.channels.push(channel);
        if presence {
            let state = app.hub.presence_state_for_joiner(&k);
            let data = json!({ "topic": &*k.name, "payload": state });
            stream.pending.push_back(Bytes::from(format!(
                "event: presence_state\ndata: {data}\n\n"
            )));
        }
    }
    // Replays go out after every channel is subscribed, each event carrying the cursor of all of them.
    for (k, epoch, records) in replays {
        for record in records {
            let offset = record.offset;
            if let Some(b) = Broadcast::replay(k.clone(), record, &epoch)
                && let Some(data) = b.sse_frame()
            {
                stream.take(SseItem {
                    channel: k.clone(),
                    position: Some(Position {
                        epoch: epoch.clone(),
                        offset,
                    }),
                    data: data.clone(),
                });
            }
        }
    }
    // `ready` carries the stream's first cursor in an event the page can see (an `id:` alone sets the
    // browser's reconnection cursor but dispatches nothing).
    let ready = json!({ "topics": &topics });
    stream
        .pending
        .push_back(Bytes::from(format!("event: ready\ndata: {ready}\n")));
    stream.push_id();
    // What arrived while the replays were read goes out after them.
    lives.into_iter().for_each(herald_core::Live::open);
    info!(conn = id, %remote, topics = ?topics, resumed = presented.is_some(), "sse open");
    Ok(stream)
}

/// One open stream: its subscriptions, cursor and pending bytes.
pub struct SseStream {
    app: Arc<AppState>,
    handle: Arc<SseHandle>,
    pending: VecDeque<Bytes>,
    channels: Vec<Channel>,
    cursor_key: Vec<u8>,
    ping: tokio::time::Interval,
    _slot: ConnectionSlot,
    id: u64,
    /// When the stream's token expires: the stream then ends with a `system` event.
    expires_at: tokio::time::Instant,
    /// The stream ends once what is pending has been written.
    ending: bool,
    /// When the writer last asked for a chunk, in ms after `born` (see [`watch_stall`]).
    pulled: Arc<AtomicU64>,
    born: tokio::time::Instant,
    /// Cancelled when the stream is dropped.
    gone: CancellationToken,
}

impl SseStream {
    fn system_unrecovered(&mut self, key: &ChannelKey) {
        let data = json!({ "topic": &*key.name, "recovered": false });
        self.pending
            .push_back(Bytes::from(format!("event: system\ndata: {data}\n\n")));
    }

    fn cursor(&self) -> Option<String> {
        let entries: Vec<CursorEntry> = self
            .channels
            .iter()
            .filter_map(|c| {
                c.position.as_ref().map(|p| CursorEntry {
                    channel: c.hash,
                    epoch: p.epoch.to_string(),
                    offset: p.offset,
                })
            })
            .collect();
        if entries.is_empty() {
            return None;
        }
        cursor::encode(&entries, &self.cursor_key).ok()
    }

    /// Ends the current event with the stream's cursor (or a bare blank line without one).
    fn push_id(&mut self) {
        match self.cursor() {
            Some(c) => self.pending.push_back(Bytes::from(format!("id: {c}\n\n"))),
            None => self.pending.push_back(Bytes::from_static(b"\n")),
        }
    }

    fn take(&mut self, item: SseItem) {
        self.app.hub.stats().sse_messages_out.increment(1);
        self.pending.push_back(item.data);
        match item.position {
            Some(position) => {
                if let Some(c) = self.channels.iter_mut().find(|c| c.key == item.channel) {
                    c.position = Some(position);
                }
                self.push_id();
            }
            None => self.pending.push_back(Bytes::from_static(b"\n")),
        }
    }

    /// Bytes already waiting, without waiting for more.
    pub fn take_ready(&mut self) -> Option<Bytes> {
        self.pending.pop_front()
    }

    /// The hub's handle on this stream (its close signal).
    pub fn handle(&self) -> Arc<SseHandle> {
        self.handle.clone()
    }

    /// The next bytes to write; `None` when the stream is over.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.pulled.store(ms, Ordering::Relaxed);
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                self.app
                    .hub
                    .stats()
                    .sse_bytes_out
                    .increment(chunk.len() as u64);
                return Some(chunk);
            }
            if self.ending {
                return None;
            }
            let handle = self.handle.clone();
            tokio::select! {
                biased;
                () = handle.closing() => {
                    warn!(conn = self.id, "sse slow consumer: closing the stream");
                    herald_core::stats::error("slow_consumer");
                    return None;
                }
                () = self.app.shutdown.cancelled() => return None,
                item = handle.next_item() => {
                    let item = item?;
                    self.take(item);
                    for _ in 0..DRAIN {
                        let Some(item) = self.handle.try_next_item() else { break };
                        self.take(item);
                    }
                }
                _ = self.ping.tick() => self.pending.push_back(Bytes::from_static(b": ping\n\n")),
                () = tokio::time::sleep_until(self.expires_at) => {
                    info!(conn = self.id, "sse token expired: ending the stream");
                    herald_core::stats::error("token_expired");
                    let data = json!({ "status": "error", "message": "Token has expired" });
                    self.pending.push_back(Bytes::from(format!("event: system\ndata: {data}\n\n")));
                    self.ending = true;
                }
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.gone.cancel();
        self.handle.close_queue();
        for c in &self.channels {
            self.app.hub.unsubscribe(&c.key, c.subscription);
        }
        info!(conn = self.id, "sse closed");
    }
}
