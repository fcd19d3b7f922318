//! A minimal HTTP/1.1 client for the HTTP publishers (JSON POSTs) and for reading the server's
//! `/metrics` (GETs), over one keep-alive connection, reading `Content-Length` and chunked
//! responses, reconnecting when the server closes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest response body accepted.
const MAX_BODY: usize = 1 << 20;

/// A request that did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("http i/o: {0}")]
    Io(#[from] io::Error),
    /// No complete response within [`REQUEST_TIMEOUT`].
    #[error("http request timed out")]
    Timeout,
    /// The response was not HTTP/1.x as this client understands it.
    #[error("bad http response: {0}")]
    Malformed(&'static str),
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// Whether the body is chunked.
    pub chunked: bool,
    /// Whether the server will close the connection after this response.
    pub close: bool,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// One keep-alive connection to the server.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client for `addr`, sending `host` as the `Host` header. Connects lazily.
    pub fn new(addr: SocketAddr, host: String) -> Self {
        Self {
            addr,
            host,
            conn: None,
        }
    }

    /// POSTs `body` as JSON to `path` with a bearer token.
    ///
    /// A request on a reused connection that fails before any response byte is retried once on a
    /// fresh connection (the server may have closed an idle keep-alive connection).
    pub async fn post_json(
        &mut self,
        path: &str,
        bearer: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let request = request_bytes(&self.host, path, bearer, body);
        let reused = self.conn.is_some();
        match self.exchange(&request).await {
            Ok(resp) => Ok(resp),
            Err(_) if reused => {
                self.conn = None;
                self.exchange(&request).await
            }
            Err(e) => Err(e),
        }
    }

    /// GETs `path` (no credentials), with the same retry as [`Client::post_json`].
    pub async fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        let request = get_request_bytes(&self.host, path);
        let reused = self.conn.is_some();
        match self.exchange(&request).await {
            Ok(resp) => Ok(resp),
            Err(_) if reused => {
                self.conn = None;
                self.exchange(&request).await
            }
            Err(e) => Err(e),
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Response, HttpError> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange_inner(request))
            .await
            .unwrap_or(Err(HttpError::Timeout));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn exchange_inner(&mut self, request: &[u8]) -> Result<Response, HttpError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(self.addr).await?;
                let _ = stream.set_nodelay(true);
                self.conn.insert(BufReader::new(stream))
            }
        };
        conn.get_mut().write_all(request).await?;
        let head_bytes = read_head(conn).await?;
        let head = parse_head(&head_bytes)?;
        let body = if head.chunked {
            read_chunked(conn).await?
        } else {
            let len = head.content_length.unwrap_or(0);
            if len > MAX_BODY {
                return Err(HttpError::Malformed("body too large"));
            }
            let mut body = vec![0; len];
            conn.read_exact(&mut body).await?;
            body
        };
        // Without a length or chunking the body runs to EOF; this client does not read such bodies,
        // so it never reuses their connection either.
        if head.close
            || (!head.chunked
                && head.content_length.is_none()
                && head.status >= 200
                && head.status != 204
                && head.status != 304)
        {
            self.conn = None;
        }
        Ok(Response {
            status: head.status,
            body,
        })
    }
}

/// The bytes of a JSON POST request.
pub fn request_bytes(host: &str, path: &str, bearer: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The bytes of a GET request.
pub fn get_request_bytes(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n").into_bytes()
}

/// Reads a response head up to its blank line, skipping interim 1xx responses.
pub async fn read_head(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>, HttpError> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = conn.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if head.len() > MAX_HEAD {
            return Err(HttpError::Malformed("head too large"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            // Skip interim 1xx responses (a server may send 100 Continue unasked).
            if head.starts_with(b"HTTP/1.1 1") || head.starts_with(b"HTTP/1.0 1") {
                head.clear();
                continue;
            }
            return Ok(head);
        }
    }
}

/// Parses a response head (status line and headers, up to the blank line).
pub fn parse_head(head: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status_line = lines.next().ok_or(HttpError::Malformed("empty head"))?;
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("bad status"))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| HttpError::Malformed("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .to_ascii_lowercase()
                .split(',')
                .any(|v| v.trim() == "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.split(',').any(|v| v.trim() == "close") {
                head.close = true;
            } else if value.split(',').any(|v| v.trim() == "keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(head)
}

/// Parses a chunk-size line (hex, optional extensions).
pub fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let text = std::str::from_utf8(line).map_err(|_| HttpError::Malformed("chunk size"))?;
    let hex = text.trim().split(';').next().unwrap_or_default().trim();
    usize::from_str_radix(hex, 16).map_err(|_| HttpError::Malformed("chunk size"))
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                line.clear();
                if conn.read_until(b'\n', &mut line).await? == 0 || line == b"\r\n" || line == b"\n"
                {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::Malformed("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        line.clear();
        conn.read_until(b'\n', &mut line).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h =
            parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\ndate: x\r\n\r\n").unwrap();
        assert_eq!(
            h,
            Head {
                status: 202,
                content_length: Some(0),
                chunked: false,
                close: false
            }
        );
        let h = parse_head(b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n").unwrap();
        assert!(h.chunked && h.close && h.status == 422);
        assert!(parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().close);
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").is_err());
    }

    #[test]
    fn parses_chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r\n").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;ext=1\r\n").unwrap(), 0);
        assert!(parse_chunk_size(b"zz\r\n").is_err());
    }

    #[test]
    fn builds_requests() {
        let r = request_bytes("127.0.0.1:4000", "/api/broadcast", "tok", b"{}");
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n"));
        assert!(text.contains("Authorization: Bearer tok\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"));
        let r = get_request_bytes("127.0.0.1:4000", "/metrics");
        assert_eq!(
            r,
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn posts_and_reuses_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut sock = BufReader::new(sock);
            for reply in [
                &b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"[..],
                &b"HTTP/1.1 422 Unprocessable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
            ] {
                let head = read_head(&mut sock).await.unwrap();
                let text = String::from_utf8(head).unwrap();
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let mut body = vec![0; len];
                sock.read_exact(&mut body).await.unwrap();
                sock.get_mut().write_all(reply).await.unwrap();
            }
        });
        let mut client = Client::new(addr, addr.to_string());
        let r = client
            .post_json("/api/broadcast", "t", b"{\"a\":1}")
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len()), (202, 0));
        let r = client
            .post_json("/api/broadcast", "t", b"{}")
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (422, &b"abc"[..]));
        server.await.unwrap();
    }
}
