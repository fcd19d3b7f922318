//! The benchmark's HTTP clients: hyper-util's client over keep-alive connections for the HTTP
//! publishers (JSON POSTs) and the reads of the server's `/metrics` (GETs), each request bounded in
//! time and its response in size; and the Server-Sent Events clients, `GET /sse` over HTTP/1.1
//! (hyper) from a chosen loopback source address, their events read with `sse-stream` up to the
//! first one carrying an `id` (the cursor, sent once the stream is subscribed), then held, timing
//! every benchmark broadcast when the run measures delivery, until told to stop.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use sse_stream::SseStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::conn::{self, ConnError, Shared};
use crate::error::{Refusal, chain};
use crate::payload;
use crate::target::Target;

/// Longest one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest response body accepted.
const MAX_BODY: usize = 1 << 20;

/// A request that did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed (the whole chain of causes).
    #[error("http: {0}")]
    Request(String),
    /// No complete response within [`REQUEST_TIMEOUT`].
    #[error("http request timed out after {} s: the server is not answering", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// `HTTP <status> <start of the body>`, for failure reasons.
    pub fn summary(&self) -> String {
        let body: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(160)
            .collect();
        format!("HTTP {} {}", self.status, body.trim())
    }
}

/// Requests to the server over a pool of keep-alive connections (one, when used in turn).
#[derive(Debug, Clone)]
pub struct Client {
    hyper: Hyper<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Client {
    /// A client of `target`'s server. Connects lazily.
    pub fn new(target: &Target) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            hyper: Hyper::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{}", target.host_header),
        }
    }

    /// POSTs `body` as JSON to `path` (with its query) with a bearer token.
    pub async fn post_json(
        &mut self,
        path: &str,
        bearer: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let request = Request::post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {bearer}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)));
        self.send(request).await
    }

    /// GETs `path` (no credentials).
    pub async fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        let request = Request::get(format!("{}{path}", self.base)).body(Full::default());
        self.send(request).await
    }

    async fn send(
        &self,
        request: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Response, HttpError> {
        let request = request.map_err(|e| HttpError::Request(e.to_string()))?;
        let exchange = async {
            let response = self
                .hyper
                .request(request)
                .await
                .map_err(|e| HttpError::Request(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError::Request(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }
}

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
