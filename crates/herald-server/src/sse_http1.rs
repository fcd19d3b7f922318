//! `GET /sse` over HTTP/1.x without a general HTTP stack's per-connection buffers.
//!
//! An SSE stream is one request followed by a response that never ends, and it idles most of its
//! life. A general HTTP/1 connection keeps its read and write buffers (8 KiB each in hyper) for as long
//! as the response lasts, which is most of an idle stream's memory. So the accept loop hands
//! connections whose first bytes are `GET /sse` to this module: the request head is parsed with
//! `httparse` into a temporary buffer that is freed at once, the same checks as the routed endpoint
//! run (`sse::prepare`), and the stream's bytes go straight to the socket. The response is
//! close-delimited (`Connection: close`), which every `EventSource` accepts. Everything else, HTTP/2
//! included, goes through the regular router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::sse;
use crate::state::AppState;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes written per write call at most when events pile up.
const MAX_WRITE: usize = 64 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// An HTTP/1 `GET /sse` request.
    Sse,
    /// Anything else.
    Other,
    /// Nothing arrived within the head timeout, or the connection closed first: drop it.
    Silent,
}

/// Reads the first bytes of a connection (at most 9, as many as it takes to decide), waiting for
/// each read until `deadline`, the end of the request head's time. Returns what they say and the
/// bytes read, which belong to the request and must be handed on. A client that sends its head a
/// byte at a time costs a wake-up per byte, never a poll loop.
pub async fn sniff(stream: &mut TcpStream, deadline: tokio::time::Instant) -> (Sniff, Vec<u8>) {
    const PREFIXES: [&[u8]; 2] = [b"GET /sse?", b"GET /sse "];
    let mut seen = Vec::with_capacity(9);
    let mut buf = [0u8; 9];
    loop {
        let want = 9 - seen.len();
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf[..want])).await {
            Ok(Ok(n)) if n > 0 => n,
            // Nothing more within the head's time, or closed: a head never completed.
            _ => return (Sniff::Silent, seen),
        };
        seen.extend_from_slice(&buf[..n]);
        if PREFIXES.contains(&seen.as_slice()) {
            return (Sniff::Sse, seen);
        }
        if !PREFIXES.iter().any(|p| p.starts_with(&seen)) {
            return (Sniff::Other, seen);
        }
    }
}

/// Serves one SSE request on a raw HTTP/1 connection whose first bytes, `prefix`, were read
/// already; its head must be complete by `deadline`.
pub async fn serve(
    app: Arc<AppState>,
    mut stream: TcpStream,
    remote: SocketAddr,
    prefix: Vec<u8>,
    deadline: tokio::time::Instant,
) {
    let _tracked = app.sessions.token();
    // The head's reader and the refusal paths are boxed: their buffers must not take room in the
    // state of a stream that lives for hours (this task's future is allocated once, at its
    // largest).
    let head = match Box::pin(read_head(&mut stream, prefix, deadline)).await {
        Head::Complete(head) => head,
        Head::TooLarge => {
            herald_core::stats::error("request_head_too_large");
            debug!(%remote, "sse request head over {MAX_HEAD} bytes");
            let message = format!("request head larger than {} KiB", MAX_HEAD / 1024);
            let _ = Box::pin(write_refusal(
                &mut stream,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &message,
                None,
            ))
            .await;
            Box::pin(linger(&mut stream)).await;
            return;
        }
        Head::Missing => {
            debug!(%remote, "sse request head not received");
            return;
        }
    };
    let (pairs, headers) = match parse_head(&head) {
        Ok(parsed) => parsed,
        Err(status) => {
            let message = if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
                "more than 64 request headers"
            } else {
                "malformed request"
            };
            let _ = Box::pin(write_refusal(&mut stream, status, message, None)).await;
            Box::pin(linger(&mut stream)).await;
            return;
        }
    };
    drop(head);
    let cors = cors_origin(&app, &headers);
    let mut events = match Box::pin(sse::prepare(app.clone(), remote, pairs, &headers)).await {
        Ok(events) => events,
        Err(r) => {
            let _ = Box::pin(write_refusal(
                &mut stream,
                r.status,
                &r.message,
                cors.as_ref(),
            ))
            .await;
            return;
        }
    };
    let mut start = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\nconnection: close\r\n",
    );
    push_cors(&mut start, cors.as_ref());
    start.push_str("\r\n");
    if stream.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    let handle = events.handle();
    let (mut reader, mut writer) = stream.split();
    let mut probe = [0u8; 64];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = events.next_chunk() => chunk,
            // A client that closes (or sends anything after its request) ends the stream.
            _ = reader.read(&mut probe) => None,
        };
        let Some(chunk) = chunk else { break };
        out.extend_from_slice(&chunk);
        while out.len() < MAX_WRITE {
            let Some(more) = events.take_ready() else {
                break;
            };
            out.extend_from_slice(&more);
        }
        let written = tokio::select! {
            r = writer.write_all(&out) => r.is_ok(),
            () = handle.closing() => false,
            () = app.shutdown.cancelled() => false,
        };
        if !written {
            break;
        }
        out.clear();
        if out.capacity() > 4 * 1024 {
            out = Vec::new();
        }
    }
}

/// What reading a request head gave.
enum Head {
    Complete(Vec<u8>),
    /// Over `MAX_HEAD` bytes without its end.
    TooLarge,
    /// The connection ended or went quiet before the head did.
    Missing,
}

async fn read_head(
    stream: &mut TcpStream,
    prefix: Vec<u8>,
    deadline: tokio::time::Instant,
) -> Head {
    let mut head = prefix;
    head.reserve(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Head::Complete(head);
        }
        if head.len() >= MAX_HEAD {
            return Head::TooLarge;
        }
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Head::Missing,
        };
        head.extend_from_slice(&chunk[..n]);
    }
}

/// After a refusal: reads and drops what the client is still sending, for a bounded time and
/// amount, so that closing does not reset the connection before the client has read the answer.
async fn linger(stream: &mut TcpStream) {
    const LINGER: Duration = Duration::from_secs(2);
    const LINGER_BYTES: usize = 1024 * 1024;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut chunk = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

type Parsed = (Vec<(String, String)>, HeaderMap);

fn parse_head(head: &[u8]) -> Result<Parsed, StatusCode> {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) | Err(_) => return Err(StatusCode::BAD_REQUEST),
    }
    let path = req.path.ok_or(StatusCode::BAD_REQUEST)?;
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let pairs = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| StatusCode::BAD_REQUEST)?;
        headers.append(name, value);
    }
    Ok((pairs, headers))
}

/// The origin to allow in the response, and whether it may send credentials, as the router's CORS
/// layer decides: a listed origin with credentials, any origin under `*` without.
fn cors_origin(app: &AppState, headers: &HeaderMap) -> Option<(String, bool)> {
    let origin = headers.get("origin")?.to_str().ok()?;
    let origins = &app.config.cors_origins;
    if origins.iter().any(|o| o == origin) {
        return Some((origin.to_owned(), true));
    }
    origins
        .iter()
        .any(|o| o == "*")
        .then(|| (origin.to_owned(), false))
}

fn push_cors(out: &mut String, origin: Option<&(String, bool)>) {
    if let Some((origin, credentials)) = origin {
        out.push_str("access-control-allow-origin: ");
        out.push_str(origin);
        if *credentials {
            out.push_str("\r\naccess-control-allow-credentials: true");
        }
        out.push_str("\r\nvary: origin\r\n");
    }
}

async fn write_refusal(
    stream: &mut TcpStream,
    status: StatusCode,
    message: &str,
    cors: Option<&(String, bool)>,
) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    push_cors(&mut head, cors);
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_and_headers() {
        let (pairs, headers) =
            parse_head(b"GET /sse?topic=a&topic=b%20c&apikey=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc\r\n\r\n")
                .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("topic".to_owned(), "a".to_owned()),
                ("topic".to_owned(), "b c".to_owned()),
                ("apikey".to_owned(), "t".to_owned())
            ]
        );
        assert_eq!(headers.get("last-event-id").unwrap(), "abc");
        assert_eq!(
            parse_head(b"GARBAGE\r\n\r\n").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
    }
}
