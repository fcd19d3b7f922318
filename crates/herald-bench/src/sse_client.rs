//! One benchmark Server-Sent Events client: `GET /sse` over HTTP/1.1 from a chosen loopback source
//! address, read up to the stream's first `id:` line (the cursor, sent once the stream is subscribed),
//! then held, reading and discarding pings (and, when the run measures delivery, timing every
//! benchmark broadcast) until told to stop. Also the two incremental decoders this needs: chunked
//! transfer coding and `text/event-stream` lines.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::conn::{self, ConnError, OPEN_TIMEOUT, Shared};
use crate::http::{self, HttpError};
use crate::target::Target;

/// Read buffer per stream: idle streams only ever receive pings, so keep it small.
const READ_BUFFER: usize = 1024;
/// Longest line accepted on a stream (a benchmark payload is at most 1 MiB, plus its envelope).
const MAX_LINE: usize = 2 << 20;
/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Most body bytes of a refusal kept for the failure reason.
const MAX_ERROR_BODY: usize = 4096;

/// Why a stream could not be opened, or broke.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// Creating, binding or connecting the socket failed.
    #[error(transparent)]
    Tcp(ConnError),
    /// Writing the request or reading the response failed, or the response was not HTTP/1.x.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server answered with another status than 200; carries the status and body.
    #[error("refused: HTTP {0}")]
    Refused(String),
    /// The stream ended before its first `id:` line.
    #[error("stream ended before its first id: line")]
    ClosedBeforeId,
    /// The body broke the chunked coding or the event-stream format.
    #[error("bad event stream: {0}")]
    Malformed(&'static str),
    /// A step took longer than [`OPEN_TIMEOUT`].
    #[error("{0} timed out")]
    Timeout(&'static str),
}

impl From<io::Error> for SseError {
    fn from(e: io::Error) -> Self {
        SseError::Http(HttpError::Io(e))
    }
}

/// The request line and headers of an SSE stream for `path` (which carries the query).
pub fn request_bytes(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    )
    .into_bytes()
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(usize),
    /// Reading the line end after a chunk's data.
    DataEnd,
    /// After the last chunk, reading trailer lines up to the blank one.
    Trailers,
    /// The body is complete.
    Done,
}

/// An incremental decoder of the chunked transfer coding.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

impl ChunkDecoder {
    /// Decodes `input`, appending body bytes to `out`; `true` once the body is complete.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, SseError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(true),
                ChunkState::Data(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        self.push_line(input)?;
                        return Ok(false);
                    };
                    self.push_line(&input[..=end])?;
                    input = &input[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    let blank = line == b"\r\n" || line == b"\n";
                    self.state = match self.state {
                        ChunkState::Size => match http::parse_chunk_size(&line) {
                            Ok(0) => ChunkState::Trailers,
                            Ok(n) => ChunkState::Data(n),
                            Err(_) => return Err(SseError::Malformed("bad chunk size")),
                        },
                        ChunkState::DataEnd if blank => ChunkState::Size,
                        ChunkState::DataEnd => {
                            return Err(SseError::Malformed("chunk longer than its size"));
                        }
                        ChunkState::Trailers if blank => ChunkState::Done,
                        other => other,
                    };
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Ok(self.state == ChunkState::Done)
    }

    fn push_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_CHUNK_LINE {
            return Err(SseError::Malformed("chunk-size line too long"));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

/// One thing an event stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A comment line (`: ping`): the text after the colon, without its leading space.
    Comment(String),
    /// An `id:` field: the event's (here: the stream's cursor).
    Id(String),
    /// A complete event (a blank line after one or more `data:` lines).
    Event {
        /// The `event:` field, `message` when there was none.
        event: String,
        /// The `data:` lines joined by newlines.
        data: String,
    },
}

/// An incremental `text/event-stream` parser: lines end in LF, CRLF or CR, `field: value` with one
/// optional space after the colon, a line starting with a colon is a comment, and a blank line
/// dispatches the event gathered so far.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The last byte fed was a CR, so a following LF ends nothing.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Parses `bytes`, calling `on` for every comment, `id:` and complete event.
    pub fn feed(&mut self, bytes: &[u8], mut on: impl FnMut(SseItem)) -> Result<(), SseError> {
        let mut rest = bytes;
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&rest[..end])?;
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut on);
            self.line = line;
            self.line.clear();
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push(rest)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(SseError::Malformed("line too long"));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], on: &mut impl FnMut(SseItem)) {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            if self.has_data {
                let event = match std::mem::take(&mut self.event) {
                    e if e.is_empty() => "message".to_owned(),
                    e => e,
                };
                on(SseItem::Event {
                    event,
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            on(SseItem::Comment(
                comment.strip_prefix(' ').unwrap_or(comment).to_owned(),
            ));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // The standard ignores ids containing NUL.
            "id" if !value.contains('\0') => on(SseItem::Id(value.to_owned())),
            // `retry:` and unknown fields do not matter here.
            _ => {}
        }
    }
}

/// The send time `t` of a benchmark broadcast delivered as SSE `data`
/// (`{"topic":..,"event":"b","payload":{"t":..},"meta":..}`).
pub fn broadcast_send_time(data: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        event: std::borrow::Cow<'a, str>,
        payload: Payload,
    }
    #[derive(Deserialize)]
    struct Payload {
        t: u64,
    }
    let d: Data<'_> = serde_json::from_str(data).ok()?;
    (d.event == "b").then_some(d.payload.t)
}

/// How the response body is framed.
#[derive(Debug)]
enum Framing {
    Chunked(ChunkDecoder),
    /// Until the connection closes.
    Raw,
}

/// An open SSE stream that has sent its first `id:` line.
#[derive(Debug)]
pub struct SseConn {
    reader: BufReader<TcpStream>,
    framing: Framing,
    parser: SseParser,
    /// Decoded body bytes waiting for the parser.
    body: Vec<u8>,
}

/// What reading a stream turned up.
#[derive(Debug, Default)]
struct Seen {
    id: bool,
    ended: bool,
}

impl SseConn {
    /// Reads what is there (waiting for at least one byte), passing every item to `on`.
    async fn read_some(
        &mut self,
        buf: &mut [u8],
        mut on: impl FnMut(SseItem),
    ) -> Result<Seen, SseError> {
        let n = self.reader.read(buf).await?;
        let mut seen = Seen::default();
        if n == 0 {
            seen.ended = true;
            return Ok(seen);
        }
        let bytes = &buf[..n];
        self.body.clear();
        let input = match &mut self.framing {
            Framing::Chunked(decoder) => {
                seen.ended = decoder.feed(bytes, &mut self.body)?;
                &self.body[..]
            }
            Framing::Raw => bytes,
        };
        self.parser.feed(input, |item| {
            seen.id |= matches!(item, SseItem::Id(_));
            on(item);
        })?;
        Ok(seen)
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
        .map_err(|_| SseError::Timeout("connect"))?
        .map_err(SseError::Tcp)?;
    tokio::time::timeout(OPEN_TIMEOUT, start(stream, &target.host_header, path))
        .await
        .map_err(|_| SseError::Timeout("stream start"))?
}

async fn start(stream: TcpStream, host: &str, path: &str) -> Result<SseConn, SseError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    reader
        .get_mut()
        .write_all(&request_bytes(host, path))
        .await?;
    let head = http::parse_head(&http::read_head(&mut reader).await?)?;
    if head.status != 200 {
        let len = head.content_length.unwrap_or(0).min(MAX_ERROR_BODY);
        let mut body = vec![0; len];
        // The status is what matters; a body that does not arrive only shortens the message.
        let _ = tokio::time::timeout(Duration::from_secs(1), reader.read_exact(&mut body)).await;
        let body: String = String::from_utf8_lossy(&body).chars().take(160).collect();
        return Err(SseError::Refused(format!(
            "{} {}",
            head.status,
            body.trim()
        )));
    }
    let mut conn = SseConn {
        reader,
        framing: if head.chunked {
            Framing::Chunked(ChunkDecoder::default())
        } else {
            Framing::Raw
        },
        parser: SseParser::default(),
        body: Vec::new(),
    };
    let mut buf = [0u8; READ_BUFFER];
    loop {
        let seen = conn.read_some(&mut buf, |_| {}).await?;
        if seen.id {
            return Ok(conn);
        }
        if seen.ended {
            return Err(SseError::ClosedBeforeId);
        }
    }
}

/// Keeps a stream open until `stop` turns true (or its sender is dropped), counting a disconnect if
/// it ends before that. When `shared.latency` is set, every benchmark broadcast is timed against its
/// `t` and counted as delivered.
pub async fn hold(mut conn: SseConn, mut stop: watch::Receiver<bool>, shared: Arc<Shared>) {
    let mut buf = [0u8; READ_BUFFER];
    if *stop.borrow_and_update() {
        return;
    }
    loop {
        let seen = tokio::select! {
            biased;
            _ = stop.changed() => return,
            seen = conn.read_some(&mut buf, |item| {
                if let SseItem::Event { event, data } = item
                    && event == "broadcast"
                    && shared.latency.is_some()
                    && let Some(sent) = broadcast_send_time(&data)
                {
                    shared.delivered(sent);
                }
            }) => seen,
        };
        if !matches!(seen, Ok(Seen { ended: false, .. })) {
            shared
                .counters
                .disconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(parts: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        for part in parts {
            parser.feed(part, |i| items.push(i)).unwrap();
        }
        items
    }

    const HERALD: &[u8] = b"retry: 2000\n: connected\n\nid: AQJwdy1a\n\nevent: broadcast\ndata: {\"topic\":\"bench-0\",\"event\":\"b\",\"payload\":{\"t\":42,\"pad\":\"x\"},\"meta\":{\"offset\":1}}\nid: AQJwdy1b\n\n: ping\n\n";

    #[test]
    fn parses_a_herald_stream() {
        let want = vec![
            SseItem::Comment("connected".into()),
            SseItem::Id("AQJwdy1a".into()),
            SseItem::Id("AQJwdy1b".into()),
            SseItem::Event {
                event: "broadcast".into(),
                data: r#"{"topic":"bench-0","event":"b","payload":{"t":42,"pad":"x"},"meta":{"offset":1}}"#
                    .into(),
            },
            SseItem::Comment("ping".into()),
        ];
        assert_eq!(parse_all(&[HERALD]), want);
        // Any split of the input gives the same items.
        for at in 1..HERALD.len() {
            assert_eq!(
                parse_all(&[&HERALD[..at], &HERALD[at..]]),
                want,
                "split {at}"
            );
        }
        let bytes: Vec<&[u8]> = HERALD.chunks(1).collect();
        assert_eq!(parse_all(&bytes), want);
    }

    #[test]
    fn follows_the_event_stream_rules() {
        // CRLF and lone CR line ends, a CR split from its LF, multi-line data, no space after the
        // colon, a field without a colon, the default event name.
        let items = parse_all(&[b"data:a\r", b"\ndata: b\rid\r\n\r", b"\nevent: x\n\n:\n"]);
        assert_eq!(
            items,
            vec![
                SseItem::Id(String::new()),
                SseItem::Event {
                    event: "message".into(),
                    data: "a\nb".into()
                },
                SseItem::Comment(String::new()),
            ]
        );
        // An event name without data dispatches nothing, and does not leak into the next event.
        let items = parse_all(&[b"event: x\n\ndata: y\n\n"]);
        assert_eq!(
            items,
            vec![SseItem::Event {
                event: "message".into(),
                data: "y".into()
            }]
        );
        let mut parser = SseParser::default();
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(parser.feed(&long, |_| {}).is_err());
    }

    #[test]
    fn decodes_chunked_bodies_across_splits() {
        let wire = b"7\r\nretry: \r\n18;ext=1\r\n2000\n: connected\n\nid: c\n\r\n0\r\nx-trailer: 1\r\n\r\nrest";
        let want = b"retry: 2000\n: connected\n\nid: c\n";
        for at in 0..wire.len() {
            let mut d = ChunkDecoder::default();
            let mut out = Vec::new();
            let first = d.feed(&wire[..at], &mut out).unwrap();
            let done = d.feed(&wire[at..], &mut out).unwrap();
            assert!(!first || at >= wire.len() - 4, "split {at}");
            assert!(done, "split {at}");
            assert_eq!(out, want, "split {at}");
        }
        let mut d = ChunkDecoder::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = ChunkDecoder::default();
        assert!(d.feed(b"2\r\nabc\r\n", &mut Vec::new()).is_err());
        let mut d = ChunkDecoder::default();
        assert!(
            d.feed(&[b'1'; MAX_CHUNK_LINE + 1], &mut Vec::new())
                .is_err()
        );
    }

    #[test]
    fn reads_benchmark_send_times() {
        assert_eq!(
            broadcast_send_time(r#"{"topic":"bench-1","event":"b","payload":{"t":7,"pad":""}}"#),
            Some(7)
        );
        assert_eq!(
            broadcast_send_time(r#"{"topic":"bench-1","event":"c","payload":{"t":7}}"#),
            None
        );
        assert_eq!(
            broadcast_send_time(r#"{"topic":"bench-1","recovered":false}"#),
            None
        );
        let r = String::from_utf8(request_bytes(
            "127.0.0.1:4000",
            "/sse?topic=bench-0&apikey=k",
        ))
        .unwrap();
        assert!(
            r.starts_with("GET /sse?topic=bench-0&apikey=k HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n")
        );
        assert!(r.ends_with("\r\n\r\n"));
    }
}
