//! One benchmark WebSocket client: opening it from a chosen loopback source address, joining its
//! channel, and holding it open (heartbeats every 25 s, recording the latency of every benchmark
//! broadcast it receives) until told to stop.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::clock::Clock;
use crate::fleet::Counters;
use crate::phoenix::{self, JoinOpts, Reply};
use crate::stats::Latencies;
use crate::target::Target;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Interval between heartbeats (the reference client's; the server closes after 60 s of silence).
pub const HEARTBEAT: Duration = Duration::from_secs(25);
/// Time allowed for each of connect+handshake and join.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed to send a close frame when stopping.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message a benchmark client accepts (server frames are the benchmark's own payloads).
const MAX_MESSAGE: usize = 16 << 20;

/// Why a client could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Creating or binding the local socket failed (for example: ports exhausted, too many files).
    #[error("socket: {0}")]
    Socket(io::Error),
    /// The TCP connection was refused or failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The WebSocket upgrade failed; for HTTP refusals this carries the status and body.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The frame could not be sent or the connection broke while waiting.
    #[error("websocket: {0}")]
    Io(tungstenite::Error),
    /// The server answered the join with an error.
    #[error("join refused: {0}")]
    JoinRefused(String),
    /// The server closed the connection before answering the join.
    #[error("closed before the join reply")]
    ClosedBeforeReply,
    /// A step took longer than [`OPEN_TIMEOUT`].
    #[error("{0} timed out")]
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
            let body: String = body.chars().take(160).collect();
            ConnError::Handshake(format!("HTTP {} {}", resp.status().as_u16(), body.trim()))
        }
        other => ConnError::Handshake(other.to_string()),
    }
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

/// Joins `topic` with join ref `join_ref` and waits for the reply.
pub async fn join(
    ws: &mut Ws,
    join_ref: &str,
    topic: &str,
    opts: &JoinOpts,
) -> Result<(), ConnError> {
    ws.send(Message::text(phoenix::join_frame(join_ref, topic, opts)))
        .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let Some(frame) = phoenix::parse_frame(&text) else {
                    continue;
                };
                if frame.topic != topic {
                    continue;
                }
                match phoenix::reply_to(&frame, join_ref) {
                    Some(Reply::Ok) => return Ok(()),
                    Some(Reply::Error(reason)) => return Err(ConnError::JoinRefused(reason)),
                    None => {}
                }
            }
            Some(Ok(Message::Close(_))) | None => return Err(ConnError::ClosedBeforeReply),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Connects and joins `topic`, each step bounded by [`OPEN_TIMEOUT`].
pub async fn open(
    target: &Target,
    ws_url: &str,
    source: Option<IpAddr>,
    topic: &str,
) -> Result<Ws, ConnError> {
    let mut ws = tokio::time::timeout(OPEN_TIMEOUT, connect(target, ws_url, source))
        .await
        .map_err(|_| ConnError::Timeout("connect"))??;
    tokio::time::timeout(
        OPEN_TIMEOUT,
        join(&mut ws, "1", topic, &JoinOpts::default()),
    )
    .await
    .map_err(|_| ConnError::Timeout("join"))??;
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
}

impl Shared {
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
fn first_heartbeat_delay(index: u64) -> Duration {
    let period_ms = u64::try_from(HEARTBEAT.as_millis()).unwrap_or(25_000);
    // A large prime stride scatters consecutive indices over the whole period.
    Duration::from_millis(1 + index.wrapping_mul(7_919) % period_ms)
}

/// Keeps a joined connection alive until `stop` turns true (or its sender is dropped).
///
/// Counts a disconnect if the connection ends before that. When `shared.latency` is set, every
/// benchmark broadcast is timed against its `t` and counted as delivered.
pub async fn hold(mut ws: Ws, index: u64, mut stop: watch::Receiver<bool>, shared: Arc<Shared>) {
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + first_heartbeat_delay(index), HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_ref: u64 = 2;
    if *stop.borrow_and_update() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = heartbeat.tick() => {
                if ws.send(Message::text(phoenix::heartbeat_frame(next_ref))).await.is_err() {
                    shared.counters.disconnects.fetch_add(1, Relaxed);
                    return;
                }
                next_ref += 1;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if shared.latency.is_some()
                        && let Some(sent) = phoenix::broadcast_send_time(&text)
                    {
                        shared.delivered(sent);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    shared.counters.disconnects.fetch_add(1, Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
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
