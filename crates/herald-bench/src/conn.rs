//! One benchmark WebSocket client: opening it from a loopback source address, subscribing it in the
//! run's protocol, and holding it (heartbeats, answers to pings, timing deliveries) until told to stop.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_protocol::{JoinConfig, client};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::clock::Clock;
use crate::error::{Refusal, io_with_remedy};
use crate::fleet::{Counters, Reasons};
use crate::plain;
use crate::protocol::Protocol;
use crate::pusher::{self, PusherError};
use crate::socketio::{self, Packet};
use crate::stats::Latencies;
use crate::target::Target;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Interval between heartbeats (the reference client's; the server closes after 60 s of silence).
pub const HEARTBEAT: Duration = Duration::from_secs(25);
/// Time allowed for each of connect+handshake and join.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed to send a close frame when stopping.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message a benchmark client accepts (server frames are the benchmark's own payloads).
const MAX_MESSAGE: usize = 16 << 20;

/// Why a client could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Creating or binding the local socket failed (for example: ports exhausted, too many files).
    #[error("cannot open a local socket: {}", io_with_remedy(.0))]
    Socket(io::Error),
    /// The TCP connection was refused or failed.
    #[error("connect: {}", io_with_remedy(.0))]
    Connect(io::Error),
    /// The server answered the WebSocket upgrade with an HTTP refusal.
    #[error(transparent)]
    Refused(Refusal),
    /// The WebSocket upgrade failed otherwise.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The frame could not be sent or the connection broke while waiting.
    #[error("websocket: {0}")]
    Io(tungstenite::Error),
    /// The server answered the join with an error.
    #[error("join refused: {0}")]
    JoinRefused(String),
    /// The server closed the connection before answering the join.
    #[error("the server closed the connection before answering the join (did it stop?)")]
    ClosedBeforeReply,
    /// The server said something the protocol does not allow at that point.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A Pusher subscription could not be signed.
    #[error("signing the subscription: {0}")]
    Sign(PusherError),
    /// The client's own token could not be minted.
    #[error("token: {0}")]
    Token(String),
    /// A step took longer than it may ([`OPEN_TIMEOUT`], [`CLOSE_TIMEOUT`]).
    #[error("{0} timed out: the server did not answer in time (overloaded? lower --concurrency)")]
    Timeout(&'static str),
}

impl From<tungstenite::Error> for ConnError {
    fn from(e: tungstenite::Error) -> Self {
        // Not `#[from]`: that would also make it the `source`, and error chains would print it twice.
        ConnError::Io(e)
    }
}

fn ws_config() -> WebSocketConfig {
    // Small read buffer and eager writes: these clients are mostly idle, and many share a process.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

fn handshake_error(e: tungstenite::Error) -> ConnError {
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            ConnError::Refused(Refusal::new(resp.status().as_u16(), &body))
        }
        tungstenite::Error::Io(e) => ConnError::Connect(e),
        other => ConnError::Handshake(other.to_string()),
    }
}

/// Runs `step` within [`OPEN_TIMEOUT`]; past it, the error is a timeout of `what`.
pub async fn within<T>(
    what: &'static str,
    step: impl Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(OPEN_TIMEOUT, step)
        .await
        .unwrap_or(Err(ConnError::Timeout(what)))
}

/// Opens a TCP connection from `source` (any port; the system's choice when `None`) to `addr`.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ConnError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnError::Socket)?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ConnError::Socket)?;
    }
    let stream = socket.connect(addr).await.map_err(ConnError::Connect)?;
    // Latency matters more than packet count here; failing to set it only costs latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a TCP connection from `source` (any port) to the target and upgrades it to a WebSocket.
pub async fn connect(
    target: &Target,
    ws_url: &str,
    source: Option<IpAddr>,
) -> Result<Ws, ConnError> {
    let stream = tcp_connect(target.addr, source).await?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(ws_url, stream, Some(ws_config()))
            .await
            .map_err(handshake_error)?;
    Ok(ws)
}

/// Reads frames until `answer` recognises the one it waits for and returns what it says. The
/// server's pings met on the way are answered as `protocol` does.
pub async fn await_answer<T>(
    ws: &mut Ws,
    protocol: Protocol,
    mut answer: impl FnMut(&str) -> Option<Result<T, ConnError>>,
) -> Result<T, ConnError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Some(pong) = protocol.pong_for(&text) {
                    ws.send(Message::text(pong)).await?;
                    continue;
                }
                if let Some(result) = answer(&text) {
                    return result;
                }
            }
            Some(Ok(Message::Close(_))) | None => return Err(ConnError::ClosedBeforeReply),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Joins `topic` with join ref `join_ref` and waits for the reply.
pub async fn join(
    ws: &mut Ws,
    join_ref: &str,
    topic: &str,
    opts: &JoinConfig,
) -> Result<(), ConnError> {
    ws.send(Message::text(client::join(join_ref, topic, opts)))
        .await?;
    await_answer(ws, Protocol::Phoenix, |text| {
        let frame = client::decode(text).filter(|f| f.topic == topic)?;
        match client::reply_to(&frame, join_ref)? {
            Ok(_) => Some(Ok(())),
            Err(reason) => Some(Err(ConnError::JoinRefused(reason))),
        }
    })
    .await
}

/// Leaves `topic` (joined with `join_ref`) with push ref `push_ref` and waits for the reply.
pub async fn leave(
    ws: &mut Ws,
    join_ref: &str,
    push_ref: &str,
    topic: &str,
) -> Result<(), ConnError> {
    ws.send(Message::text(client::leave(join_ref, push_ref, topic)))
        .await?;
    await_answer(ws, Protocol::Phoenix, |text| {
        let frame = client::decode(text).filter(|f| f.topic == topic)?;
        match client::reply_to(&frame, push_ref)? {
            Ok(_) => Some(Ok(())),
            Err(reason) => Some(Err(ConnError::Unexpected(format!(
                "leave refused: {reason}"
            )))),
        }
    })
    .await
}

/// Closes the WebSocket: sends a close frame and reads until the server has answered with its own
/// and ended the connection, within [`CLOSE_TIMEOUT`].
pub async fn close(mut ws: Ws) -> Result<(), ConnError> {
    let handshake = async {
        ws.close(None).await?;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => return Err(ConnError::from(e)),
            }
        }
        Ok(())
    };
    tokio::time::timeout(CLOSE_TIMEOUT, handshake)
        .await
        .unwrap_or(Err(ConnError::Timeout("close")))
}

/// Plain protocol: joins `channel` and waits for `joined`.
pub async fn plain_join(ws: &mut Ws, channel: &str) -> Result<(), ConnError> {
    ws.send(Message::text(plain::join_frame(channel))).await?;
    await_answer(ws, Protocol::Plain, |text| match plain::reply(text)? {
        plain::Reply::Joined(c) if c == channel => Some(Ok(())),
        plain::Reply::Joined(_) => None,
        plain::Reply::Error(reason) => Some(Err(ConnError::JoinRefused(reason))),
    })
    .await
}

/// Socket.IO: waits for the Engine.IO open packet, connects to the main namespace and waits until the
/// server accepts.
pub async fn socketio_connect(ws: &mut Ws) -> Result<(), ConnError> {
    await_answer(ws, Protocol::Socketio, |text| match socketio::parse(text) {
        Packet::Open(_) => Some(Ok(())),
        _ => Some(Err(ConnError::Unexpected(format!(
            "expected the Engine.IO open packet, got {}",
            text.chars().take(80).collect::<String>()
        )))),
    })
    .await?;
    ws.send(Message::text(socketio::CONNECT)).await?;
    await_answer(ws, Protocol::Socketio, |text| match socketio::parse(text) {
        Packet::Connect(_) => Some(Ok(())),
        Packet::ConnectError(data) => Some(Err(ConnError::JoinRefused(
            socketio::connect_error_message(data),
        ))),
        Packet::Close | Packet::Disconnect => Some(Err(ConnError::ClosedBeforeReply)),
        _ => None,
    })
    .await
}

/// Socket.IO: emits `join` for `room` with ack id 1 and waits for the ack.
pub async fn socketio_join(ws: &mut Ws, room: &str) -> Result<(), ConnError> {
    ws.send(Message::text(socketio::join_frame(1, room)))
        .await?;
    await_answer(ws, Protocol::Socketio, |text| match socketio::parse(text) {
        Packet::Ack { id: 1, .. } => Some(Ok(())),
        Packet::Close | Packet::Disconnect => Some(Err(ConnError::ClosedBeforeReply)),
        _ => None,
    })
    .await
}

/// Pusher: waits for `pusher:connection_established` and returns the socket id.
pub async fn pusher_connect(ws: &mut Ws) -> Result<String, ConnError> {
    await_answer(ws, Protocol::Pusher, |text| match pusher::parse(text) {
        Some(pusher::Frame::ConnectionEstablished(socket_id)) => Some(Ok(socket_id)),
        Some(pusher::Frame::Error(reason)) => Some(Err(ConnError::JoinRefused(reason))),
        _ => Some(Err(ConnError::Unexpected(format!(
            "expected pusher:connection_established, got {}",
            text.chars().take(80).collect::<String>()
        )))),
    })
    .await
}

/// Pusher: subscribes socket `socket_id` to the private `channel`, signing the subscription with
/// `app`'s secret, and waits until the server confirms it.
pub async fn pusher_subscribe(
    ws: &mut Ws,
    app: &pusher::App,
    socket_id: &str,
    channel: &str,
) -> Result<(), ConnError> {
    let auth = app
        .channel_auth(socket_id, channel)
        .map_err(ConnError::Sign)?;
    ws.send(Message::text(pusher::subscribe_frame(channel, &auth)))
        .await?;
    await_answer(ws, Protocol::Pusher, |text| match pusher::parse(text)? {
        pusher::Frame::SubscriptionSucceeded(c) if c == channel => Some(Ok(())),
        pusher::Frame::Error(reason) => Some(Err(ConnError::JoinRefused(reason))),
        _ => None,
    })
    .await
}

/// Subscribes an open connection to channel `name` (Phoenix topic `realtime:<name>`, plain
/// channel, Socket.IO room `<name>` or Pusher channel `private-<name>`, signed with `app`) the way
/// `protocol` does it.
pub async fn subscribe(
    ws: &mut Ws,
    protocol: Protocol,
    name: &str,
    app: &pusher::App,
) -> Result<(), ConnError> {
    match protocol {
        Protocol::Phoenix => {
            join(ws, "1", &format!("realtime:{name}"), &JoinConfig::default()).await
        }
        Protocol::Plain => plain_join(ws, name).await,
        Protocol::Socketio => {
            socketio_connect(ws).await?;
            socketio_join(ws, name).await
        }
        Protocol::Pusher => {
            let socket_id = pusher_connect(ws).await?;
            pusher_subscribe(ws, app, &socket_id, &pusher::channel(name)).await
        }
    }
}

/// Connects and subscribes to channel `name` in `protocol`, each step bounded by [`OPEN_TIMEOUT`].
pub async fn open(
    target: &Target,
    ws_url: &str,
    source: Option<IpAddr>,
    protocol: Protocol,
    name: &str,
    app: &pusher::App,
) -> Result<Ws, ConnError> {
    let mut ws = within("connect", connect(target, ws_url, source)).await?;
    within("join", subscribe(&mut ws, protocol, name, app)).await?;
    Ok(ws)
}

/// What every held connection of a process shares.
#[derive(Debug)]
pub struct Shared {
    /// Live counts.
    pub counters: Arc<Counters>,
    /// Where broadcast latencies go, when this run measures them.
    pub latency: Option<Mutex<Latencies>>,
    /// The time base that broadcast send times refer to.
    pub clock: Clock,
    /// Why held connections failed after the fleet was ready (presence members whose join or track
    /// was refused).
    pub failures: Mutex<Reasons>,
}

impl Shared {
    /// A fresh set of counters, timing deliveries when `record_latency`.
    pub fn new(record_latency: bool, clock: Clock) -> Self {
        Self {
            counters: Arc::new(Counters::default()),
            latency: record_latency.then(|| Mutex::new(Latencies::new())),
            clock,
            failures: Mutex::new(Reasons::default()),
        }
    }

    /// Counts a held connection that failed after the fleet was ready, and why.
    pub fn failed_late(&self, reason: String) {
        self.counters.disconnects.fetch_add(1, Relaxed);
        if let Ok(mut failures) = self.failures.lock() {
            failures.add(reason, 1);
        }
    }

    /// Counts a benchmark broadcast stamped `sent_ns` as delivered now and records its latency.
    pub fn delivered(&self, sent_ns: u64) {
        let Some(latency) = &self.latency else {
            return;
        };
        let now = self.clock.now_ns();
        if let Ok(mut hist) = latency.lock() {
            hist.record_us(now.saturating_sub(sent_ns) / 1_000);
        }
        self.counters.delivered.fetch_add(1, Relaxed);
        self.counters.last_delivery_ns.fetch_max(now, Relaxed);
    }
}

/// Delay before connection `index` sends its first heartbeat, spreading heartbeats over the interval.
pub fn first_heartbeat_delay(index: u64) -> Duration {
    let period_ms = u64::try_from(HEARTBEAT.as_millis()).unwrap_or(25_000);
    // A large prime stride scatters consecutive indices over the whole period.
    Duration::from_millis(1 + index.wrapping_mul(7_919) % period_ms)
}

/// Keeps a subscribed connection alive until `stop` turns true (or its sender is dropped).
///
/// Counts a disconnect if the connection ends before that. Phoenix connections heartbeat, Socket.IO
/// and Pusher connections answer the server's pings. When `shared.latency` is set, every benchmark
/// message is timed against its `t` and counted as delivered.
pub async fn hold(
    ws: Ws,
    index: u64,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    protocol: Protocol,
) {
    hold_with(ws, index, stop, shared, protocol, |text, shared| {
        if shared.latency.is_some()
            && let Some(sent) = protocol.send_time(text)
        {
            shared.delivered(sent);
        }
    })
    .await;
}

/// Like [`hold`], handing every text frame that is not a ping to `on_text`.
pub async fn hold_with(
    mut ws: Ws,
    index: u64,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    protocol: Protocol,
    mut on_text: impl FnMut(&str, &Shared),
) {
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + first_heartbeat_delay(index), HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let heartbeats = protocol.client_heartbeats();
    let mut next_ref: u64 = 2;
    if *stop.borrow_and_update() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        return;
    }
    loop {
        let reply = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = heartbeat.tick(), if heartbeats => {
                next_ref += 1;
                client::heartbeat(next_ref - 1)
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match protocol.pong_for(&text) {
                    Some(pong) => pong.to_owned(),
                    None => {
                        on_text(&text, &shared);
                        continue;
                    }
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    shared.counters.disconnects.fetch_add(1, Relaxed);
                    return;
                }
                Some(Ok(_)) => continue,
            },
        };
        if ws.send(Message::text(reply)).await.is_err() {
            shared.counters.disconnects.fetch_add(1, Relaxed);
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_spread_over_the_period() {
        let mut delays: Vec<_> = (0..1_000).map(first_heartbeat_delay).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d > Duration::ZERO && *d <= HEARTBEAT)
        );
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 900);
    }
}
