//! Herald's wire formats, as pure code with no I/O.
//!
//! This crate owns the Phoenix channel protocol as `@supabase/realtime-js` speaks it: the v1 JSON
//! object frames, the v2 JSON array frames and the v2 binary broadcast frames (kinds 3 and 4), plus
//! the parsing of a join's `config`. Decoding never panics on any input; encoding produces ready-to-send
//! bytes so that a message is serialized once per wire format and shared by every subscriber.

pub mod binary;
pub mod client;
pub mod cursor;
pub mod decode;
pub mod encode;
pub mod join;

pub use binary::{BinaryPush, PayloadEncoding};
pub use decode::{DecodeError, Inbound, InboundPayload, decode_binary, decode_text};
pub use encode::{OutFrame, encode_broadcast_binary, encode_broadcast_text, encode_frame};
pub use join::{JoinConfig, PostgresBinding};

/// The protocol version a socket negotiated with the `vsn` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `1.0.0`: JSON objects in text frames only.
    V1,
    /// `2.0.0`: JSON arrays in text frames and binary broadcast frames.
    V2,
}

impl Vsn {
    /// Parses the `vsn` query value; a missing value means `1.0.0`.
    pub fn parse(value: Option<&str>) -> Option<Vsn> {
        match value {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }

    /// The version string as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// A frame ready to be written to a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    /// A text frame (always valid UTF-8).
    Text(String),
    /// A binary frame.
    Binary(bytes::Bytes),
}

impl WireFrame {
    /// The number of payload bytes the frame carries.
    pub fn len(&self) -> usize {
        match self {
            WireFrame::Text(s) => s.len(),
            WireFrame::Binary(b) => b.len(),
        }
    }

    /// True when the frame carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
