//! One WebSocket connection speaking the Phoenix channel protocol: heartbeats, joins and leaves,
//! broadcasts, token refresh and expiry, limits, and the writer that drains the outbound queue.
//!
//! The session is a single task. It never holds a lock across an await: hub calls are synchronous
//! apart from `publish`, the policy checks of private channels are awaited without any lock, and the
//! socket is only touched by this task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use herald_core::auth::unix_now;
use herald_core::channel::{self, TopicError};
use herald_core::history::RecoverRequest;
use herald_core::hub::Published;
use herald_core::policy::Permissions;
use herald_core::presence::TrackOutcome;
use herald_core::session::close;
use herald_core::{Broadcast, ChannelKey, Claims, RateLimiter, SessionHandle, Subscriber};
use herald_protocol::{
    Inbound, InboundPayload, JoinConfig, OutFrame, Vsn, decode_binary, decode_text, encode_frame,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::access::{self, Denied, UNAVAILABLE_MESSAGE, UNAVAILABLE_REASON, keep_claims};
use super::inbound::{broadcast_parts, pg_recover};
use super::socket::{CLOSE_WRITE_TIMEOUT, close_for_error, close_socket, write_batch};
use crate::state::AppState;

/// Who is on the other end, as established by the handshake.
#[derive(Debug)]
pub struct Peer {
    /// Remote address.
    pub remote: SocketAddr,
    /// Protocol version.
    pub vsn: Vsn,
    /// A hash of the socket's API key.
    pub token_hash: u64,
    /// Its verified claims.
    pub claims: Arc<Claims>,
}

/// A channel this connection has joined.
#[derive(Debug)]
struct Joined {
    key: ChannelKey,
    join_ref: Option<String>,
    subscription: u64,
    ack: bool,
    /// A hash of the channel's token (to tell a new token from the same one).
    token_hash: u64,
    claims: Arc<Claims>,
    expires_at: Instant,
    /// The presence key of this join (the configured one, or a generated UUID).
    presence_key: String,
    /// Subscribed to Postgres Changes.
    postgres: bool,
    /// Presence was enabled at join.
    presence: bool,
    /// What a private channel allows (`None`: a public channel). Kept until the token changes.
    permissions: Option<Permissions>,
    /// The database's insert policies have not been asked yet: they are, at the first send or
    /// track (as Supabase asks them), and the answer is kept with `permissions`.
    writes_pending: bool,
}

/// The join refusal of a public channel on a node that allows only private ones.
pub const PRIVATE_ONLY_REASON: &str = "PrivateOnly: This project only allows private channels";

/// A hash of a token, to tell whether a client sent the same one again.
pub fn token_hash(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

/// Runs a connection until it closes.
pub async fn run(app: Arc<AppState>, socket: WebSocket, peer: Peer) {
    let id = app.hub.next_id();
    let handle = SessionHandle::new(id, peer.vsn, app.limits.outbound_queue_frames);
    info!(conn = id, remote = %peer.remote, vsn = peer.vsn.as_str(), role = %peer.claims.role, "open");
    let mut session = Session {
        join_limiter: RateLimiter::new(app.limits.max_joins_per_second),
        presence_limiter: RateLimiter::per_window(
            app.limits.presence_calls_per_window,
            Duration::from_secs(app.limits.presence_window_secs.max(1)),
        ),
        message_limiter: RateLimiter::new(app.limits.max_messages_per_second),
        last_seen: Instant::now(),
        channels: HashMap::new(),
        out: Vec::new(),
        app,
        handle,
        peer,
        id,
    };
    let ending = session.serve(socket).await;
    // `Session`'s drop ends its queue and subscriptions, on this path and when a panic unwinds.
    session.end();
    match ending {
        Ending::Closed(frame) => {
            info!(conn = id, remote = %session.peer.remote, code = frame.code, reason = %frame.reason, "close")
        }
        Ending::PeerClosed(code) => {
            info!(conn = id, remote = %session.peer.remote, code, "close by client")
        }
        Ending::Dropped(why) => {
            info!(conn = id, remote = %session.peer.remote, reason = why, "connection lost")
        }
    }
}

pub(super) enum Ending {
    /// Herald closed the socket with this frame.
    Closed(CloseFrame),
    /// The client closed it.
    PeerClosed(u16),
    /// The connection dropped without a close handshake.
    Dropped(&'static str),
}

struct Session {
    app: Arc<AppState>,
    handle: Arc<SessionHandle>,
    peer: Peer,
    id: u64,
    /// Joined channels. Boxed: a map's slots are allocated in advance (at least three), and most
    /// connections join one channel.
    channels: HashMap<String, Box<Joined>>,
    join_limiter: RateLimiter,
    message_limiter: RateLimiter,
    presence_limiter: RateLimiter,
    last_seen: Instant,
    /// Frames produced while handling input, written before the next wait.
    out: Vec<Message>,
}

/// Whatever ends a session, a panic included, its subscriptions end with it: a connection that is
/// gone never stays registered to receive fan-out.
impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

impl Session {
    /// Closes the outbound queue and leaves every channel. Safe to repeat.
    fn end(&mut self) {
        self.handle.close_queue();
        self.leave_all();
    }

    async fn serve(&mut self, mut socket: WebSocket) -> Ending {
        let handle = self.handle.clone();
        let shutdown = self.app.shutdown.clone();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = handle.closing() => {
                    let reason = handle.close_reason().unwrap_or(herald_core::CloseReason {
                        code: close::NORMAL,
                        reason: String::new(),
                    });
                    if reason.code == close::SLOW_CONSUMER {
                        warn!(conn = self.id, remote = %self.peer.remote, "slow consumer: closing");
                    }
                    return Box::pin(close_socket(socket, &mut self.out, reason.code, &reason.reason)).await;
                }
                () = shutdown.cancelled() => {
                    return Box::pin(close_socket(socket, &mut self.out, close::GOING_AWAY, "server shutting down")).await;
                }
                frame = handle.next_frame() => {
                    let Some(frame) = frame else { return Ending::Dropped("queue closed") };
                    self.out.push(frame);
                }
                inbound = socket.recv() => {
                    match inbound {
                        Some(Ok(msg)) => {
                            self.last_seen = Instant::now();
                            // Boxed: the (large) handling future exists only while a frame is handled, so an idle
                            // connection's task stays small.
                            if let Some(code) = Box::pin(self.on_message(msg)).await {
                                // Let the automatic close reply go out before the socket is dropped.
                                use futures_util::SinkExt;
                                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, socket.flush()).await;
                                return Ending::PeerClosed(code);
                            }
                        }
                        Some(Err(e)) => {
                            debug!(conn = self.id, error = %e, "read error");
                            if let Some(frame) = close_for_error(&e) {
                                herald_core::stats::error(if frame.code == close::TOO_BIG { "frame_too_big" } else { "ws_protocol" });
                                warn!(conn = self.id, remote = %self.peer.remote, code = frame.code, reason = %frame.reason, "bad frame");
                                return Box::pin(close_socket(socket, &mut self.out, frame.code, &frame.reason)).await;
                            }
                            return Ending::Dropped("reset or read error");
                        }
                        None => return Ending::Dropped("eof"),
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(ending) = self.on_timer() {
                        return Box::pin(close_socket(socket, &mut self.out, ending.0, ending.1)).await;
                    }
                }
            }
            if self.handle.is_closing() {
                continue;
            }
            if !self.out.is_empty() {
                let written = tokio::select! {
                    r = Box::pin(write_batch(&mut socket, &mut self.out, &handle, &self.app)) => r,
                    () = handle.closing() => Ok(()),
                };
                if written.is_err() {
                    return Ending::Dropped("write error");
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let idle = self.last_seen + self.app.limits.idle_timeout();
        self.channels
            .values()
            .map(|c| c.expires_at)
            .fold(idle, Instant::min)
    }

    /// Timer work: idle timeout (returns the close to send) and token expiry of channels.
    fn on_timer(&mut self) -> Option<(u16, &'static str)> {
        let now = Instant::now();
        if now >= self.last_seen + self.app.limits.idle_timeout() {
            herald_core::stats::error("idle_timeout");
            return Some((close::IDLE_TIMEOUT, "idle timeout: no heartbeat received"));
        }
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires_at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        let unix = unix_now();
        for topic in expired {
            if let Some(joined) = self.channels.get(&topic) {
                let ago = unix.saturating_sub(joined.claims.exp);
                let message = format!("Token has expired {ago} seconds ago");
                herald_core::stats::error("token_expired");
                self.stop_channel(&topic, "system", &message);
            }
        }
        None
    }

    /// Handles one frame; returns the close code when the client closed the socket.
    async fn on_message(&mut self, msg: Message) -> Option<u16> {
        fail::fail_point!("ws-on-message");
        let stats = self.app.hub.stats();
        let decoded = match msg {
            Message::Text(text) => {
                stats.ws_messages_in.increment(1);
                stats.ws_bytes_in.increment(text.len() as u64);
                decode_text(self.peer.vsn, text.as_str())
            }
            Message::Binary(bytes) => {
                stats.ws_messages_in.increment(1);
                stats.ws_bytes_in.increment(bytes.len() as u64);
                decode_binary(self.peer.vsn, &bytes)
            }
            Message::Ping(_) | Message::Pong(_) => return None,
            Message::Close(frame) => return Some(frame.map_or(1005, |f| f.code)),
        };
        match decoded {
            Ok(inbound) => self.dispatch(inbound).await,
            Err(e) => {
                herald_core::stats::error("malformed_frame");
                warn!(conn = self.id, remote = %self.peer.remote, error = %e, "malformed frame ignored");
            }
        }
        None
    }

    async fn dispatch(&mut self, msg: Inbound) {
        if msg.topic == "phoenix" {
            if msg.event == "heartbeat" {
                self.reply(None, msg.ref_.as_deref(), "phoenix", "ok", json!({}));
            } else {
                self.reply(
                    None,
                    msg.ref_.as_deref(),
                    "phoenix",
                    "error",
                    json!({"reason": "unknown event"}),
                );
            }
            return;
        }
        match msg.event.as_str() {
            "phx_join" => return self.join(msg).await,
            "phx_leave" => return self.leave(msg),
            _ => {}
        }
        if !self.channels.contains_key(&msg.topic) {
            herald_core::stats::error("unmatched_topic");
            debug!(conn = self.id, topic = %msg.topic, event = %msg.event, "push to a topic not joined");
            self.reply(
                None,
                msg.ref_.as_deref(),
                &msg.topic,
                "error",
                json!({"reason": "unmatched topic"}),
            );
            return;
        }
        match msg.event.as_str() {
            "access_token" => self.refresh_token(msg).await,
            "broadcast" => self.broadcast(msg).await,
            "presence" => self.presence(msg).await,
            other => {
                herald_core::stats::error("unknown_event");
                debug!(conn = self.id, topic = %msg.topic, event = other, "unknown event");
                let join_ref = self.join_ref(&msg.topic);
                self.reply(
                    join_ref.as_deref(),
                    msg.ref_.as_deref(),
                    &msg.topic,
                    "error",
                    json!({"reason": format!("unknown event: {other}")}),
                );
            }
        }
    }

    fn join_ref(&self, topic: &str) -> Option<String> {
        self.channels.get(topic).and_then(|c| c.join_ref.clone())
    }

    /// What the channel allows, with its insert policies asked first when they are still pending
    /// (one check, batched with any others; the answer is kept). `Err`: the database could not
    /// be asked (nothing is kept, so the next send asks again).
    async fn write_rights(&mut self, topic: &str) -> Result<Option<Permissions>, Denied> {
        let Some(joined) = self.channels.get(topic) else {
            return Ok(None);
        };
        let (Some(read), true, Some(pg)) = (
            joined.permissions,
            joined.writes_pending,
            &self.app.postgres,
        ) else {
            return Ok(joined.permissions);
        };
        let w = access::insert_rights(pg, self.id, &joined.claims, &joined.key).await?;
        let p = Permissions {
            broadcast_write: w.broadcast_write,
            presence_write: w.presence_write,
            ..read
        };
        if let Some(joined) = self.channels.get_mut(topic) {
            joined.permissions = Some(p);
            joined.writes_pending = false;
        }
        Ok(Some(p))
    }

    async fn join(&mut self, msg: Inbound) {
        let ref_ = msg.ref_.as_deref();
        let join_ref = msg.join_ref.clone().or_else(|| msg.ref_.clone());
        let topic = msg.topic.as_str();
        let refuse = |s: &mut Session, reason: String| {
            herald_core::stats::error("join_refused");
            info!(conn = s.id, remote = %s.peer.remote, topic, reason = %reason, "join refused");
            s.reply(
                join_ref.as_deref(),
                ref_,
                topic,
                "error",
                json!({ "reason": reason }),
            );
        };
        let name = match channel::channel_name(topic) {
            Ok(name) => name.to_owned(),
            Err(TopicError::Unmatched) => return refuse(self, "unmatched topic".to_owned()),
            Err(TopicError::NameRequired) => {
                return refuse(
                    self,
                    "TopicNameRequired: You must provide a topic name".to_owned(),
                );
            }
            Err(TopicError::TooLong(e)) => return refuse(self, format!("TopicTooLong: {e}")),
        };
        if !self.join_limiter.try_take(1) {
            refuse(
                self,
                "ClientJoinRateLimitReached: Too many joins per second".to_owned(),
            );
            self.handle
                .close_with(close::JOIN_FLOOD, "too many joins per second");
            return;
        }
        let payload = match &msg.payload {
            InboundPayload::Json(raw) => {
                serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null)
            }
            InboundPayload::Binary(_) => Value::Null,
        };
        let config = JoinConfig::parse(&payload);
        if !config.warnings.is_empty() {
            info!(conn = self.id, topic, warnings = ?config.warnings, "join config has invalid values; defaults used");
        }
        if self.app.config.private_only && !config.private {
            return refuse(self, PRIVATE_ONLY_REASON.to_owned());
        }
        if self.channels.contains_key(topic) {
            // A second join of the same topic replaces the first.
            self.stop_channel(topic, "", "");
        }
        if self.channels.len() >= self.app.limits.max_channels_per_connection {
            return refuse(
                self,
                "ChannelRateLimitReached: Too many channels".to_owned(),
            );
        }
        // The socket's key (already verified) unless the join brings its own token.
        let (token_hash, claims) = match config.access_token.as_deref() {
            Some(t)
                if !t.is_empty()
                    && !t.starts_with("sb_")
                    && token_hash(t) != self.peer.token_hash =>
            {
                match self.app.auth.verify(t) {
                    Ok(c) => (token_hash(t), Arc::new(keep_claims(&self.app, c))),
                    Err(e) => return refuse(self, e.join_reason()),
                }
            }
            _ => {
                let now = unix_now();
                if self.peer.claims.exp <= now {
                    let e = herald_core::AuthError::Expired {
                        ago: now - self.peer.claims.exp,
                    };
                    return refuse(self, e.join_reason());
                }
                (self.peer.token_hash, self.peer.claims.clone())
            }
        };
        let key = ChannelKey::new(&name, config.private);
        let presence_on = config.presence_enabled || !config.presence_key.is_empty();
        let (permissions, writes_pending) = match access::read_rights(
            &self.app,
            self.id,
            &claims,
            &key,
            presence_on,
        )
        .await
        {
            Ok(p) => p,
            Err(Denied::Unauthorized) => {
                return refuse(
                    self,
                    format!(
                        "Unauthorized: You do not have permissions to read from this Channel topic: {name}"
                    ),
                );
            }
            Err(Denied::Unavailable) => return refuse(self, UNAVAILABLE_REASON.to_owned()),
        };
        // A member the policies let read only presence gets no broadcasts, and one that may read
        // only broadcasts no presence.
        let reads_broadcast = permissions.is_none_or(|p| p.broadcast_read);
        let reads_presence = presence_on && permissions.is_none_or(|p| p.presence_read);
        if !self.app.hub.admits(&key) {
            herald_core::stats::error("node_channel_limit");
            warn!(
                conn = self.id,
                topic,
                max = self.app.limits.max_channels,
                "join refused: max_channels reached"
            );
            return refuse(self, herald_core::hub::NODE_CHANNEL_LIMIT.to_owned());
        }
        let request = match (&config.recover, config.replay) {
            _ if !reads_broadcast => None,
            (Some((epoch, offset)), _) => Some(RecoverRequest::After {
                epoch: epoch.clone(),
                offset: *offset,
            }),
            (None, Some((since_ms, limit))) => Some(RecoverRequest::Since {
                since_ms,
                limit: limit.unwrap_or(25).clamp(1, 1000) as usize,
            }),
            (None, None) => None,
        };
        let (subscription, recovery) = match &request {
            None => (
                self.app.hub.subscribe(
                    &key,
                    Subscriber::ws(self.handle.clone(), config.broadcast_self, reads_presence)
                        .with_broadcasts(reads_broadcast),
                ),
                None,
            ),
            Some(request) => {
                match self
                    .app
                    .hub
                    .subscribe_recovering(
                        &key,
                        Subscriber::ws(self.handle.clone(), config.broadcast_self, reads_presence)
                            .with_broadcasts(reads_broadcast),
                        request,
                    )
                    .await
                {
                    Ok(done) => done,
                    Err(e) => {
                        warn!(conn = self.id, topic, error = %e, "history read failed");
                        return refuse(
                            self,
                            "UnableToReplayMessages: history is unavailable, retry".to_owned(),
                        );
                    }
                }
            }
        };
        let expires_at = claims.expiry(Instant::now(), unix_now());
        let presence_key = if config.presence_key.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            config.presence_key.clone()
        };
        let postgres = !config.postgres_changes.is_empty() && self.app.postgres.is_some();
        let pg_claims = claims.clone();
        self.channels.insert(
            topic.to_owned(),
            Box::new(Joined {
                postgres,
                key,
                join_ref: join_ref.clone(),
                subscription,
                ack: config.broadcast_ack,
                token_hash,
                claims,
                expires_at,
                presence_key,
                presence: presence_on,
                permissions,
                writes_pending,
            }),
        );
        self.app.hub.stats().joins.increment(1);
        info!(conn = self.id, remote = %self.peer.remote, topic, private = config.private, "join");
        let bindings: Vec<Value> = config.postgres_changes.iter().map(|b| b.echo()).collect();
        let mut response = json!({ "postgres_changes": bindings });
        // Recovery reports the channel's position; a `replay` join gets it too, so that a client whose
        // replay was empty still knows where to recover from.
        if config.recover.is_some() || config.replay.is_some() {
            response["recovery"] = match &recovery {
                Some((r, _)) => {
                    json!({"recovered": r.recovered, "epoch": &*r.epoch, "offset": r.top})
                }
                None => json!({"recovered": false, "epoch": null, "offset": 0}),
            };
        }
        self.reply(join_ref.as_deref(), ref_, topic, "ok", response);
        if let Some((recovery, live)) = recovery {
            let replayed = recovery.records.len();
            let key = ChannelKey::new(&name, config.private);
            for record in recovery.records {
                if let Some(b) = Broadcast::replay(key.clone(), record, &recovery.epoch)
                    && let Some(frame) = b.frame(self.peer.vsn)
                {
                    self.out.push(frame.clone());
                }
            }
            // What arrived meanwhile goes out after the replay.
            live.open();
            info!(
                conn = self.id,
                topic,
                recovered = recovery.recovered,
                replayed,
                "recovery"
            );
        }
        if let (true, Some(pg)) = (postgres, &self.app.postgres) {
            pg.subscribe(herald_postgres::SubscribeRequest {
                session: self.handle.clone(),
                topic: topic.to_owned(),
                channel: name.clone(),
                join_ref: join_ref.clone(),
                bindings: config
                    .postgres_changes
                    .iter()
                    .map(|b| (Value::Object(b.raw.clone()), b.id()))
                    .collect(),
                group: pg_group(&pg_claims),
                recover: pg_recover(&payload),
            });
        } else if !config.postgres_changes.is_empty() {
            self.push(
                join_ref.as_deref(),
                topic,
                "system",
                &json!({
                    "extension": "postgres_changes",
                    "status": "error",
                    "message": "Postgres Changes are not configured on this server (no database URL is set)",
                    "channel": name,
                }),
            );
        }
        if reads_presence {
            let key = ChannelKey::new(&name, config.private);
            let state = self.app.hub.presence_state_for_joiner(&key);
            self.push(join_ref.as_deref(), topic, "presence_state", &state);
        }
    }

    fn leave(&mut self, msg: Inbound) {
        let Some(joined) = self.channels.remove(&msg.topic) else {
            self.reply(
                msg.join_ref.as_deref(),
                msg.ref_.as_deref(),
                &msg.topic,
                "ok",
                json!({}),
            );
            return;
        };
        self.app.hub.unsubscribe(&joined.key, joined.subscription);
        self.end_postgres(&joined, &msg.topic);
        info!(conn = self.id, remote = %self.peer.remote, topic = %msg.topic, "leave");
        let join_ref = joined.join_ref.as_deref();
        self.reply(join_ref, msg.ref_.as_deref(), &msg.topic, "ok", json!({}));
        self.push_close(join_ref, &msg.topic);
    }

    /// Ends a channel from the server side: an optional `system` error, then `phx_close`.
    fn stop_channel(&mut self, topic: &str, extension: &str, message: &str) {
        let Some(joined) = self.channels.remove(topic) else {
            return;
        };
        self.app.hub.unsubscribe(&joined.key, joined.subscription);
        self.end_postgres(&joined, topic);
        let join_ref = joined.join_ref.as_deref();
        if !message.is_empty() {
            info!(conn = self.id, remote = %self.peer.remote, topic, reason = message, "channel closed by server");
            self.push(
                join_ref,
                topic,
                "system",
                &json!({
                    "extension": extension,
                    "status": "error",
                    "message": message,
                    "channel": &*joined.key.name,
                }),
            );
        }
        self.push_close(join_ref, topic);
    }

    async fn refresh_token(&mut self, msg: Inbound) {
        let InboundPayload::Json(raw) = &msg.payload else {
            return;
        };
        let token = serde_json::from_str::<Value>(raw.get()).ok().and_then(|v| {
            v.get("access_token")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let Some(token) = token else { return };
        let Some(joined) = self.channels.get(&msg.topic) else {
            return;
        };
        if token.is_empty() || token.starts_with("sb_") || token_hash(&token) == joined.token_hash {
            return;
        }
        match self.app.auth.verify(&token) {
            Err(e) => {
                herald_core::stats::error(e.label());
                self.stop_channel(&msg.topic, "system", &e.to_string());
            }
            Ok(claims) => {
                let claims = keep_claims(&self.app, claims);
                let (key, presence) = (joined.key.clone(), joined.presence);
                // The policies are checked again with the new token.
                let (permissions, writes_pending) = match access::read_rights(
                    &self.app, self.id, &claims, &key, presence,
                )
                .await
                {
                    Ok(p) => p,
                    Err(denied) => {
                        let message = match denied {
                            Denied::Unauthorized => format!(
                                "You no longer have permission to read from this Channel topic: {}",
                                key.name
                            ),
                            Denied::Unavailable => UNAVAILABLE_MESSAGE.to_owned(),
                        };
                        self.stop_channel(&msg.topic, "system", &message);
                        return;
                    }
                };
                if let Some(joined) = self.channels.get_mut(&msg.topic) {
                    joined.expires_at = claims.expiry(Instant::now(), unix_now());
                    joined.permissions = permissions;
                    joined.writes_pending = writes_pending;
                    joined.claims = Arc::new(claims);
                    joined.token_hash = token_hash(&token);
                    if joined.postgres
                        && let Some(pg) = &self.app.postgres
                    {
                        pg.refresh(self.id, &msg.topic, pg_group(&joined.claims));
                    }
                    debug!(conn = self.id, topic = %msg.topic, "access token refreshed");
                }
            }
        }
    }

    async fn broadcast(&mut self, msg: Inbound) {
        let topic = msg.topic.clone();
        let Some(joined) = self.channels.get(&topic) else {
            return;
        };
        let (key, ack, join_ref) = (joined.key.clone(), joined.ack, joined.join_ref.clone());
        let ref_ = msg.ref_.as_deref();
        if !self.message_limiter.try_take(1) {
            herald_core::stats::error("message_rate");
            self.stop_channel(&topic, "system", "Too many messages per second");
            return;
        }
        let (event, body, origin, idempotency_key) = match broadcast_parts(msg.payload) {
            Ok(parts) => parts,
            Err(reason) => {
                herald_core::stats::error("malformed_broadcast");
                info!(conn = self.id, topic = %topic, reason, "broadcast refused");
                self.reply(
                    join_ref.as_deref(),
                    ref_,
                    &topic,
                    "error",
                    json!({ "reason": reason }),
                );
                return;
            }
        };
        if body.len() > self.app.limits.max_payload_bytes {
            herald_core::stats::error("payload_too_large");
            info!(conn = self.id, topic = %topic, size = body.len(), "broadcast refused: payload too large");
            self.reply(
                join_ref.as_deref(),
                ref_,
                &topic,
                "error",
                json!({"reason": "payload_size_exceeded"}),
            );
            return;
        }
        let may_write = match self.write_rights(&topic).await {
            Ok(p) => p.is_none_or(|p| p.broadcast_write),
            Err(_) => {
                self.reply(
                    join_ref.as_deref(),
                    ref_,
                    &topic,
                    "error",
                    json!({ "reason": UNAVAILABLE_REASON }),
                );
                return;
            }
        };
        if !may_write {
            herald_core::stats::error("write_denied");
            self.reply(
                join_ref.as_deref(),
                ref_,
                &topic,
                "error",
                json!({"reason": "Unauthorized: You do not have permissions to write to this Channel topic"}),
            );
            return;
        }
        let mut message =
            Broadcast::new(key, event, body, origin, Some(self.app.hub.sender(self.id)));
        message.idempotency_key = idempotency_key;
        match self.app.hub.publish(message).await {
            // The ack says where the message was stored, so a sender can recognise its own messages
            // in a later replay.
            Ok(published) if ack => {
                let position = match &published {
                    Published::Delivered { position, .. } => position.as_ref(),
                    Published::Duplicate { position } => Some(position),
                };
                let response = match position {
                    Some(p) => json!({"offset": p.offset, "epoch": &*p.epoch}),
                    None => json!({}),
                };
                self.reply(join_ref.as_deref(), ref_, &topic, "ok", response)
            }
            Ok(_) => {}
            Err(e) => {
                // A name too long (checked by the hub, for every transport) is the sender's to fix;
                // anything else may pass on a retry.
                let reason = match &e {
                    herald_core::hub::PublishError::Invalid(e) => {
                        herald_core::stats::error("name_too_long");
                        info!(conn = self.id, topic = %topic, reason = %e, "broadcast refused");
                        e.to_string()
                    }
                    _ => {
                        herald_core::stats::error("publish_failed");
                        warn!(conn = self.id, topic = %topic, error = %e, "publish failed");
                        "publish failed; retry".to_owned()
                    }
                };
                self.reply(
                    join_ref.as_deref(),
                    ref_,
                    &topic,
                    "error",
                    json!({ "reason": reason }),
                );
            }
        }
    }

    /// `presence` pushes: `{"type":"presence","event":"track"|"untrack","payload":{...}}`.
    async fn presence(&mut self, msg: Inbound) {
        let topic = msg.topic.clone();
        let Some(joined) = self.channels.get(&topic) else {
            return;
        };
        let (key, subscription, member_key) = (
            joined.key.clone(),
            joined.subscription,
            joined.presence_key.clone(),
        );
        let join_ref = joined.join_ref.clone();
        let ref_ = msg.ref_.as_deref();
        if !self.presence_limiter.try_take(1) {
            herald_core::stats::error("presence_rate");
            self.stop_channel(&topic, "system", "Client presence rate limit exceeded");
            return;
        }
        let InboundPayload::Json(raw) = &msg.payload else {
            return;
        };
        let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        match value.get("event").and_then(Value::as_str) {
            Some("track") => {
                let Some(state) = value.get("payload").and_then(Value::as_object) else {
                    herald_core::stats::error("presence_not_a_map");
                    self.reply(
                        join_ref.as_deref(),
                        ref_,
                        &topic,
                        "error",
                        json!({"reason": "Presence track payload must be a map"}),
                    );
                    return;
                };
                let may_track = matches!(
                    self.write_rights(&topic).await,
                    Ok(p) if p.is_none_or(|p| p.presence_write)
                );
                if !may_track {
                    herald_core::stats::error("presence_denied");
                    info!(conn = self.id, topic = %topic, "track refused by the channel's policies");
                    self.reply(join_ref.as_deref(), ref_, &topic, "error", json!({}));
                    return;
                }
                let size = value.get("payload").map_or(0, |p| p.to_string().len());
                if size > self.app.limits.max_presence_payload_bytes {
                    herald_core::stats::error("presence_too_large");
                    self.stop_channel(&topic, "system", "Track message size exceeded");
                    return;
                }
                match self
                    .app
                    .hub
                    .presence_track(&key, &member_key, subscription, state.clone())
                {
                    TrackOutcome::Full => {
                        herald_core::stats::error("presence_full");
                        self.stop_channel(
                            &topic,
                            "system",
                            "Too many presence members in this channel",
                        );
                    }
                    TrackOutcome::Changed | TrackOutcome::Unchanged => {
                        debug!(conn = self.id, topic = %topic, key = %member_key, "track");
                        self.reply(join_ref.as_deref(), ref_, &topic, "ok", json!({}));
                    }
                }
            }
            Some("untrack") => {
                self.app.hub.presence_untrack(&key, subscription);
                self.reply(join_ref.as_deref(), ref_, &topic, "ok", json!({}));
            }
            _ => {
                herald_core::stats::error("presence_unknown_event");
                self.reply(
                    join_ref.as_deref(),
                    ref_,
                    &topic,
                    "error",
                    json!({"reason": "presence event must be track or untrack"}),
                );
            }
        }
    }

    fn reply(
        &mut self,
        join_ref: Option<&str>,
        ref_: Option<&str>,
        topic: &str,
        status: &str,
        response: Value,
    ) {
        let payload = json!({ "status": status, "response": response });
        self.encode(join_ref, ref_, topic, "phx_reply", &payload);
    }

    fn push(&mut self, join_ref: Option<&str>, topic: &str, event: &str, payload: &Value) {
        self.encode(join_ref, None, topic, event, payload);
    }

    fn push_close(&mut self, join_ref: Option<&str>, topic: &str) {
        self.encode(join_ref, join_ref, topic, "phx_close", &json!({}));
    }

    fn encode(
        &mut self,
        join_ref: Option<&str>,
        ref_: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) {
        let frame = OutFrame {
            join_ref,
            ref_,
            topic,
            event,
            payload,
        };
        match encode_frame(self.peer.vsn, &frame) {
            Ok(text) => self.out.push(Message::Text(text.into())),
            Err(e) => warn!(conn = self.id, error = %e, "could not encode a frame"),
        }
    }

    fn leave_all(&mut self) {
        let channels: Vec<(String, Box<Joined>)> = self.channels.drain().collect();
        for (topic, joined) in channels {
            self.app.hub.unsubscribe(&joined.key, joined.subscription);
            self.end_postgres(&joined, &topic);
        }
    }

    fn end_postgres(&self, joined: &Joined, topic: &str) {
        if joined.postgres
            && let Some(pg) = &self.app.postgres
        {
            pg.unsubscribe(self.id, topic);
        }
    }
}

/// The database identity of a channel's token.
fn pg_group(claims: &Claims) -> herald_postgres::Group {
    herald_postgres::Group {
        role: Arc::from(claims.role.as_str()),
        claims: Arc::from(Value::Object(claims.all.clone()).to_string()),
        sub: claims.sub.as_deref().map(Arc::from),
    }
}
