//! One benchmark Server-Sent Events client: `GET /sse` over HTTP/1.1 (hyper) from a chosen loopback
//! source address, its events read with `sse-stream` up to the first one carrying an `id` (the
//! cursor, sent once the stream is subscribed), then held, timing every benchmark broadcast when the
//! run measures delivery, until told to stop.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use sse_stream::SseStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::conn::{self, ConnError, OPEN_TIMEOUT, Shared};
use crate::error::{Refusal, chain};
use crate::payload;
use crate::target::Target;

/// Read buffer per stream.
const READ_BUFFER: usize = 4096;
/// Most body bytes of a refusal kept for the failure reason.
const MAX_ERROR_BODY: usize = 4096;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// Creating, binding or connecting the socket failed.
    #[error(transparent)]
    Tcp(ConnError),
    /// The HTTP exchange or the event stream broke (the whole chain of causes).
    #[error("sse: {0}")]
    Http(String),
    /// The server answered with another status than 200.
    #[error(transparent)]
    Refused(Refusal),
    /// The stream ended before its first event with an `id`.
    #[error("the stream ended before its first id: line")]
    ClosedBeforeId,
    /// A step took longer than [`OPEN_TIMEOUT`].
    #[error("{step} timed out after {} s: the server is not answering", OPEN_TIMEOUT.as_secs())]
    Timeout {
        /// What timed out.
        step: &'static str,
    },
}

/// An open SSE stream that has sent its first `id:` line.
pub struct SseConn {
    events: SseStream<Incoming>,
    /// The task driving the HTTP connection; aborted when the stream is let go.
    connection: JoinHandle<()>,
}

impl std::fmt::Debug for SseConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseConn")
    }
}

impl Drop for SseConn {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Opens `GET <path>` from `source` and reads until the stream's first `id:` line, each step bounded
/// by [`OPEN_TIMEOUT`].
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    path: &str,
) -> Result<SseConn, SseError> {
    let stream = tokio::time::timeout(OPEN_TIMEOUT, conn::tcp_connect(target.addr, source))
        .await
        .map_err(|_| SseError::Timeout { step: "connect" })?
        .map_err(SseError::Tcp)?;
    tokio::time::timeout(OPEN_TIMEOUT, start(stream, &target.host_header, path))
        .await
        .map_err(|_| SseError::Timeout {
            step: "stream start",
        })?
}

async fn start(stream: tokio::net::TcpStream, host: &str, path: &str) -> Result<SseConn, SseError> {
    let http = |e: hyper::Error| SseError::Http(chain(&e));
    // A small fixed read buffer: idle streams only ever receive pings, and many share a process.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let connection = tokio::spawn(async move {
        // Its end (or failure) shows as the end of the event stream.
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header(HOST, host)
        .header(ACCEPT, "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| SseError::Http(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    if status != 200 {
        // The status is what matters; a body that does not arrive only shortens the message.
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY).collect();
        let body = match tokio::time::timeout(Duration::from_secs(1), body).await {
            Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            _ => String::new(),
        };
        return Err(SseError::Refused(Refusal::new(status, &body)));
    }
    let mut conn = SseConn {
        events: SseStream::new(response.into_body()),
        connection,
    };
    loop {
        match conn.events.next().await {
            Some(Ok(event)) if event.id.is_some() => return Ok(conn),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SseError::Http(chain(&e))),
            None => return Err(SseError::ClosedBeforeId),
        }
    }
}

/// The send time `t` of a benchmark broadcast delivered as SSE `data`
/// (`{"topic":..,"event":"b","payload":{"t":..},"meta":..}`).
pub fn broadcast_send_time(data: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Data {
        event: String,
        payload: Box<serde_json::value::RawValue>,
    }
    let d: Data = serde_json::from_str(data).ok()?;
    (d.event == "b").then(|| payload::send_time(d.payload.get()))?
}

/// Keeps a stream open until `stop` turns true (or its sender is dropped), counting a disconnect if
/// it ends before that. When `shared.latency` is set, every benchmark broadcast is timed against its
/// `t` and counted as delivered.
pub async fn hold(mut conn: SseConn, mut stop: watch::Receiver<bool>, shared: Arc<Shared>) {
    if *stop.borrow_and_update() {
        return;
    }
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => return,
            event = conn.events.next() => event,
        };
        match event {
            Some(Ok(event)) => {
                if shared.latency.is_some()
                    && event.event.as_deref() == Some("broadcast")
                    && let Some(sent) = event.data.as_deref().and_then(broadcast_send_time)
                {
                    shared.delivered(sent);
                }
            }
            Some(Err(_)) | None => {
                shared.counters.disconnects.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}
