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

use crate::conn::{self, ConnError, Shared};
use crate::error::{Refusal, chain};
use crate::payload;
use crate::target::Target;

/// Read buffer per stream.
const READ_BUFFER: usize = 4096;
/// Most body bytes of a refusal kept for the failure reason.
const MAX_ERROR_BODY: usize = 4096;

/// An open SSE stream that has sent its first `id:` line; the task driving its HTTP connection is
/// aborted when it is let go.
pub struct SseConn {
    events: SseStream<Incoming>,
    connection: JoinHandle<()>,
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
) -> Result<SseConn, ConnError> {
    let stream = conn::within("connect", conn::tcp_connect(target.addr, source)).await?;
    conn::within("stream start", start(stream, &target.host_header, path)).await
}

async fn start(
    stream: tokio::net::TcpStream,
    host: &str,
    path: &str,
) -> Result<SseConn, ConnError> {
    let http = |e: hyper::Error| ConnError::Handshake(format!("sse: {}", chain(&e)));
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
        .map_err(|e| ConnError::Handshake(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    if status != 200 {
        // The status is what matters; a body that does not arrive only shortens the message.
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY).collect();
        let body = match tokio::time::timeout(Duration::from_secs(1), body).await {
            Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            _ => String::new(),
        };
        return Err(ConnError::Refused(Refusal::new(status, &body)));
    }
    let mut conn = SseConn {
        events: SseStream::new(response.into_body()),
        connection,
    };
    loop {
        match conn.events.next().await {
            Some(Ok(event)) if event.id.is_some() => return Ok(conn),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ConnError::Handshake(format!("sse: {}", chain(&e)))),
            None => {
                return Err(ConnError::Unexpected(
                    "the stream ended before its first id: line".to_owned(),
                ));
            }
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
