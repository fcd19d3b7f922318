//! One benchmark WebSocket client: opening it from a loopback source address, subscribing it in the
//! run's protocol, and holding it (heartbeats, answers to pings, its frames handed to the
//! scenario) until told to stop.

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
use crate::protocol::{self, App, Protocol, SignError};
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
/// Largest message a benchmark client accepts.
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
    Sign(SignError),
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
        let local = SocketAddr::new(ip, 0);
        socket.bind(local).map_err(ConnError::Socket)?;
    }
    let stream = socket.connect(addr).await.map_err(ConnError::Connect)?;
    // Latency matters more than packet count here; failing to set it only costs latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a TCP connection from `source` to the target and upgrades it to a WebSocket.
pub async fn connect(
    target: &Target,
    ws_url: &str,
    source: Option<IpAddr>,
) -> Result<Ws, ConnError> {
    let stream = tcp_connect(target.addr, source).await?;
    // Small read buffer and eager writes: these clients are mostly idle, and many share a process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match tokio_tungstenite::client_async_with_config(ws_url, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy);
            let refusal = Refusal::new(resp.status().as_u16(), &body.unwrap_or_default());
            Err(ConnError::Refused(refusal))
        }
        Err(tungstenite::Error::Io(e)) => Err(ConnError::Connect(e)),
        Err(other) => Err(ConnError::Handshake(other.to_string())),
    }
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
                } else if let Some(result) = answer(&text) {
                    return result;
                }
            }
            Some(Ok(Message::Close(_))) | None => return Err(ConnError::ClosedBeforeReply),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Sends the Phoenix push `frame` on `topic` and waits for its reply (to `ref_`).
pub async fn request(ws: &mut Ws, frame: String, topic: &str, ref_: &str) -> Result<(), ConnError> {
    ws.send(Message::text(frame)).await?;
    await_answer(ws, Protocol::Phoenix, |text| {
        let frame = client::decode(text).filter(|f| f.topic == topic)?;
        Some(
            client::reply_to(&frame, ref_)?
                .map(drop)
                .map_err(ConnError::JoinRefused),
        )
    })
    .await
}

/// Joins `topic` with join ref `join_ref` and waits for the reply.
pub async fn join(
    ws: &mut Ws,
    join_ref: &str,
    topic: &str,
    opts: &JoinConfig,
) -> Result<(), ConnError> {
    request(ws, client::join(join_ref, topic, opts), topic, join_ref).await
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

/// Connects and subscribes to channel `name` in `protocol`, each step bounded by [`OPEN_TIMEOUT`].
pub async fn open(
    target: &Target,
    ws_url: &str,
    source: Option<IpAddr>,
    protocol: Protocol,
    name: &str,
    app: &App,
) -> Result<Ws, ConnError> {
    let mut ws = within("connect", connect(target, ws_url, source)).await?;
    within("join", protocol::subscribe(&mut ws, protocol, name, app)).await?;
    Ok(ws)
}

/// What every held connection of a process shares.
#[derive(Debug)]
pub struct Shared {
    pub counters: Arc<Counters>,
    pub latency: Option<Mutex<Latencies>>,
    pub clock: Clock,
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

    /// Counts a delivery of a message stamped `sent_ns` now and records its latency.
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

/// What a held connection is shown.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A text frame from the server that is not a ping.
    Text(&'a str),
    /// The fleet's go (presence), with its clock time.
    Go(u64),
}

/// What a holder makes of an [`Event`]: a frame to send, or why the connection failed.
pub type Handled = Result<Option<String>, String>;

/// Counts and times every benchmark message of `protocol` (when the run measures deliveries).
pub fn deliveries(protocol: Protocol) -> impl FnMut(Event<'_>, &Shared) -> Handled {
    move |event, shared| {
        if let Event::Text(text) = event
            && shared.latency.is_some()
            && let Some(sent) = protocol.send_time(text)
        {
            shared.delivered(sent);
        }
        Ok(None)
    }
}

/// Keeps connection `index` alive until `stop` turns true (or its sender is dropped), handing its
/// frames (and the go, if it waits for one) to `handle`. Phoenix connections heartbeat (spread over
/// the interval by index), Socket.IO and Pusher connections answer the server's pings. A
/// connection that ends before the stop, or that `handle` fails, counts as failed late.
pub async fn hold(
    mut ws: Ws,
    index: u64,
    mut stop: watch::Receiver<bool>,
    mut go: Option<watch::Receiver<Option<u64>>>,
    shared: Arc<Shared>,
    protocol: Protocol,
    mut handle: impl FnMut(Event<'_>, &Shared) -> Handled,
) {
    let period = u64::try_from(HEARTBEAT.as_millis()).unwrap_or(25_000);
    // A large prime stride scatters consecutive indices over the whole period.
    let first = Duration::from_millis(1 + index.wrapping_mul(7_919) % period);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + first, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let heartbeats = protocol == Protocol::Phoenix;
    let mut next_ref: u64 = 3;
    let mut waiting = go.is_some();
    if *stop.borrow_and_update() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        return;
    }
    let failure = loop {
        let handled = tokio::select! {
            biased;
            _ = stop.changed() => break None,
            at = async {
                let go = go.as_mut()?;
                go.changed().await.ok()?;
                Some(*go.borrow_and_update())
            }, if waiting => match at {
                // The fleet is gone.
                None => break None,
                Some(None) => Ok(None),
                Some(Some(at)) => {
                    waiting = false;
                    handle(Event::Go(at), &shared)
                }
            },
            _ = heartbeat.tick(), if heartbeats => {
                next_ref += 1;
                Ok(Some(client::heartbeat(next_ref - 1)))
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match protocol.pong_for(&text) {
                    Some(pong) => Ok(Some(pong.to_owned())),
                    None => handle(Event::Text(&text), &shared),
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| format!(" ({} {})", f.code, f.reason));
                    Err(format!("closed by the server{}", why.unwrap_or_default()))
                }
                Some(Err(e)) => Err(format!("websocket: {e}")),
                None => Err("connection ended".to_owned()),
                Some(Ok(_)) => Ok(None),
            },
        };
        match handled {
            Ok(Some(frame)) => {
                if let Err(e) = ws.send(Message::text(frame)).await {
                    break Some(format!("websocket: {e}"));
                }
            }
            Ok(None) => {}
            Err(reason) => break Some(reason),
        }
    };
    match failure {
        Some(reason) => shared.failed_late(reason),
        None => drop(tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await),
    }
}
