//! The v2 binary broadcast frames: kind 3 (client push) and kind 4 (server broadcast).
//!
//! Every length in these headers is one unsigned byte, so join_ref, ref, topic, event and metadata are
//! each at most 255 bytes; the payload is the rest of the frame.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Kind byte of a client broadcast push.
pub const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Kind byte of a server broadcast.
pub const KIND_USER_BROADCAST: u8 = 4;
const PUSH_HEADER: usize = 7;
const BROADCAST_HEADER: usize = 5;

/// How a binary broadcast's payload bytes are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadEncoding {
    /// Raw bytes (an `ArrayBuffer` in the client).
    Raw,
    /// UTF-8 JSON text.
    Json,
}

impl PayloadEncoding {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(PayloadEncoding::Raw),
            1 => Some(PayloadEncoding::Json),
            _ => None,
        }
    }

    fn as_byte(self) -> u8 {
        match self {
            PayloadEncoding::Raw => 0,
            PayloadEncoding::Json => 1,
        }
    }
}

/// A decoded kind-3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryPush {
    /// The channel's join reference, if any.
    pub join_ref: Option<String>,
    /// The push reference (used for the ack reply), if any.
    pub ref_: Option<String>,
    /// Full topic, e.g. `realtime:room1`.
    pub topic: String,
    /// The user event name.
    pub event: String,
    /// Metadata JSON text (allow-listed push fields), possibly empty.
    pub metadata: Bytes,
    /// How the payload is encoded.
    pub encoding: PayloadEncoding,
    /// The payload bytes.
    pub payload: Bytes,
}

/// Why a binary frame could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BinaryError {
    /// The frame is empty.
    #[error("empty binary frame")]
    Empty,
    /// The kind byte is not one clients may send.
    #[error("unsupported binary frame kind {0}")]
    UnknownKind(u8),
    /// The frame is shorter than its header says.
    #[error("binary frame truncated: header announces {needed} bytes, frame has {have}")]
    Truncated {
        /// Bytes the header requires.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The payload encoding byte is neither 0 nor 1.
    #[error("unknown payload encoding {0}")]
    BadEncoding(u8),
    /// A string field is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A field is longer than one length byte can describe.
    #[error("{0} is longer than 255 bytes")]
    TooLong(&'static str),
}

/// Decodes a kind-3 frame. `frame` is shared, so the payload is a zero-copy slice of it.
pub fn decode_push(frame: &Bytes) -> Result<BinaryPush, BinaryError> {
    let kind = *frame.first().ok_or(BinaryError::Empty)?;
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(BinaryError::UnknownKind(kind));
    }
    if frame.len() < PUSH_HEADER {
        return Err(BinaryError::Truncated {
            needed: PUSH_HEADER,
            have: frame.len(),
        });
    }
    let lens = [
        usize::from(frame[1]),
        usize::from(frame[2]),
        usize::from(frame[3]),
        usize::from(frame[4]),
        usize::from(frame[5]),
    ];
    let encoding =
        PayloadEncoding::from_byte(frame[6]).ok_or(BinaryError::BadEncoding(frame[6]))?;
    let needed = PUSH_HEADER + lens.iter().sum::<usize>();
    if frame.len() < needed {
        return Err(BinaryError::Truncated {
            needed,
            have: frame.len(),
        });
    }
    let mut at = PUSH_HEADER;
    let mut take = |len: usize| {
        let piece = frame.slice(at..at + len);
        at += len;
        piece
    };
    let join_ref = utf8(take(lens[0]), "join_ref")?;
    let ref_ = utf8(take(lens[1]), "ref")?;
    let topic = utf8(take(lens[2]), "topic")?;
    let event = utf8(take(lens[3]), "event")?;
    let metadata = take(lens[4]);
    if std::str::from_utf8(&metadata).is_err() {
        return Err(BinaryError::NotUtf8("metadata"));
    }
    let payload = frame.slice(at..);
    Ok(BinaryPush {
        join_ref: non_empty(join_ref),
        ref_: non_empty(ref_),
        topic,
        event,
        metadata,
        encoding,
        payload,
    })
}

fn utf8(bytes: Bytes, field: &'static str) -> Result<String, BinaryError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| BinaryError::NotUtf8(field))
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Encodes a kind-4 broadcast frame.
pub fn encode_broadcast(
    topic: &str,
    event: &str,
    metadata: &[u8],
    encoding: PayloadEncoding,
    payload: &[u8],
) -> Result<Bytes, BinaryError> {
    let len_byte = |len: usize, field: &'static str| {
        u8::try_from(len).map_err(|_| BinaryError::TooLong(field))
    };
    let t = len_byte(topic.len(), "topic")?;
    let e = len_byte(event.len(), "event")?;
    let m = len_byte(metadata.len(), "metadata")?;
    let mut out = BytesMut::with_capacity(
        BROADCAST_HEADER + topic.len() + event.len() + metadata.len() + payload.len(),
    );
    out.put_u8(KIND_USER_BROADCAST);
    out.put_u8(t);
    out.put_u8(e);
    out.put_u8(m);
    out.put_u8(encoding.as_byte());
    out.put_slice(topic.as_bytes());
    out.put_slice(event.as_bytes());
    out.put_slice(metadata);
    out.put_slice(payload);
    Ok(out.freeze())
}

/// Encodes a kind-3 push frame, as the client does. Used by tests, tools and the load generator.
pub fn encode_push(push: &BinaryPush) -> Result<Bytes, BinaryError> {
    let len_byte = |len: usize, field: &'static str| {
        u8::try_from(len).map_err(|_| BinaryError::TooLong(field))
    };
    let jr = push.join_ref.as_deref().unwrap_or("");
    let r = push.ref_.as_deref().unwrap_or("");
    let mut out = BytesMut::with_capacity(
        PUSH_HEADER
            + jr.len()
            + r.len()
            + push.topic.len()
            + push.event.len()
            + push.metadata.len()
            + push.payload.len(),
    );
    out.put_u8(KIND_USER_BROADCAST_PUSH);
    out.put_u8(len_byte(jr.len(), "join_ref")?);
    out.put_u8(len_byte(r.len(), "ref")?);
    out.put_u8(len_byte(push.topic.len(), "topic")?);
    out.put_u8(len_byte(push.event.len(), "event")?);
    out.put_u8(len_byte(push.metadata.len(), "metadata")?);
    out.put_u8(push.encoding.as_byte());
    out.put_slice(jr.as_bytes());
    out.put_slice(r.as_bytes());
    out.put_slice(push.topic.as_bytes());
    out.put_slice(push.event.as_bytes());
    out.put_slice(&push.metadata);
    out.put_slice(&push.payload);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_the_documented_example() {
        let frame = hex(concat!(
            "0301010e030001",
            "3638",
            "7265616c74696d653a726f6f6d31",
            "657674",
            "7b2268656c6c6f223a22776f726c64227d"
        ));
        let push = decode_push(&Bytes::from(frame)).unwrap();
        assert_eq!(push.join_ref.as_deref(), Some("6"));
        assert_eq!(push.ref_.as_deref(), Some("8"));
        assert_eq!(push.topic, "realtime:room1");
        assert_eq!(push.event, "evt");
        assert!(push.metadata.is_empty());
        assert_eq!(push.encoding, PayloadEncoding::Json);
        assert_eq!(&push.payload[..], br#"{"hello":"world"}"#);
    }

    #[test]
    fn encodes_kind_four() {
        let b = encode_broadcast("realtime:r", "e", b"", PayloadEncoding::Raw, &[9, 8, 7]).unwrap();
        assert_eq!(&b[..5], &[4, 10, 1, 0, 0]);
        assert_eq!(&b[5..15], b"realtime:r");
        assert_eq!(&b[15..], &[b'e', 9, 8, 7]);
    }

    #[test]
    fn rejects_lying_headers() {
        assert_eq!(decode_push(&Bytes::new()), Err(BinaryError::Empty));
        assert_eq!(
            decode_push(&Bytes::from_static(&[3, 1, 1])),
            Err(BinaryError::Truncated { needed: 7, have: 3 })
        );
        assert_eq!(
            decode_push(&Bytes::from_static(&[3, 200, 0, 0, 0, 0, 1, b'x'])),
            Err(BinaryError::Truncated {
                needed: 207,
                have: 8
            })
        );
        assert_eq!(
            decode_push(&Bytes::from_static(&[3, 0, 0, 0, 0, 0, 7])),
            Err(BinaryError::BadEncoding(7))
        );
        assert_eq!(
            decode_push(&Bytes::from_static(&[2, 0, 0, 0, 0, 0, 1])),
            Err(BinaryError::UnknownKind(2))
        );
        assert_eq!(
            decode_push(&Bytes::from_static(&[3, 0, 0, 1, 0, 0, 1, 0xff])),
            Err(BinaryError::NotUtf8("topic"))
        );
    }

    #[test]
    fn refuses_long_fields() {
        let long = "x".repeat(256);
        assert_eq!(
            encode_broadcast(&long, "e", b"", PayloadEncoding::Json, b"{}"),
            Err(BinaryError::TooLong("topic"))
        );
    }
}
