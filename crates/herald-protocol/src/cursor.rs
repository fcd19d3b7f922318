//! The SSE cursor: one opaque, URL-safe token in each `id:` line that holds the position of every
//! channel of a stream, so that a reconnecting `EventSource` (which sends it back as `Last-Event-ID`)
//! resumes each channel where it stopped.
//!
//! Layout before base64url (no padding): version `1`, entry count, then per channel: a 32-bit hash of
//! the channel (so an entry never applies to another channel), the epoch (length byte + bytes) and the
//! offset (LEB128); then the first 8 bytes of an HMAC-SHA256 of all that, keyed by the server. A token
//! that is malformed, of another version, too large, or tampered with decodes to an error, never to
//! someone else's position.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

const VERSION: u8 = 1;
const MAC_LEN: usize = 8;
/// Channels one cursor may hold.
pub const MAX_ENTRIES: usize = 64;
/// Longest token accepted (base64 characters).
pub const MAX_TOKEN_LEN: usize = 4096;

/// One channel's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorEntry {
    /// [`channel_hash`] of the channel.
    pub channel: u32,
    /// The channel's epoch.
    pub epoch: String,
    /// The last offset delivered.
    pub offset: u64,
}

/// Why a cursor was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CursorError {
    /// Not base64url, or cut short.
    #[error("malformed cursor")]
    Malformed,
    /// Another layout version.
    #[error("unsupported cursor version")]
    Version,
    /// Longer than the limits allow.
    #[error("cursor too large")]
    TooLarge,
    /// The signature does not match.
    #[error("cursor signature mismatch")]
    Tampered,
}

/// A stable 32-bit hash (FNV-1a) of a channel: its privacy flag and name.
pub fn channel_hash(private: bool, name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in std::iter::once(u8::from(private)).chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    if let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) {
        m.update(data);
        let full = m.finalize().into_bytes();
        out.copy_from_slice(&full[..MAC_LEN]);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_varint(data: &[u8], at: &mut usize) -> Result<u64, CursorError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at).ok_or(CursorError::Malformed)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CursorError::Malformed)
}

/// Encodes entries (at most [`MAX_ENTRIES`]; epochs of at most 255 bytes) into a token.
pub fn encode(entries: &[CursorEntry], key: &[u8]) -> Result<String, CursorError> {
    if entries.len() > MAX_ENTRIES {
        return Err(CursorError::TooLarge);
    }
    let mut out = Vec::with_capacity(2 + entries.len() * 20 + MAC_LEN);
    out.push(VERSION);
    out.push(entries.len() as u8);
    for e in entries {
        out.extend_from_slice(&e.channel.to_be_bytes());
        let len = u8::try_from(e.epoch.len()).map_err(|_| CursorError::TooLarge)?;
        out.push(len);
        out.extend_from_slice(e.epoch.as_bytes());
        put_varint(&mut out, e.offset);
    }
    let tag = mac(key, &out);
    out.extend_from_slice(&tag);
    Ok(URL_SAFE_NO_PAD.encode(out))
}

/// Decodes and verifies a token.
pub fn decode(token: &str, key: &[u8]) -> Result<Vec<CursorEntry>, CursorError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(CursorError::TooLarge);
    }
    let data = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| CursorError::Malformed)?;
    if data.len() < 2 + MAC_LEN {
        return Err(CursorError::Malformed);
    }
    let (body, tag) = data.split_at(data.len() - MAC_LEN);
    if body[0] != VERSION {
        return Err(CursorError::Version);
    }
    if mac(key, body) != tag {
        return Err(CursorError::Tampered);
    }
    let count = usize::from(body[1]);
    if count > MAX_ENTRIES {
        return Err(CursorError::TooLarge);
    }
    let mut at = 2;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let ch = body.get(at..at + 4).ok_or(CursorError::Malformed)?;
        let channel = u32::from_be_bytes([ch[0], ch[1], ch[2], ch[3]]);
        at += 4;
        let len = usize::from(*body.get(at).ok_or(CursorError::Malformed)?);
        at += 1;
        let epoch = body.get(at..at + len).ok_or(CursorError::Malformed)?;
        let epoch = String::from_utf8(epoch.to_vec()).map_err(|_| CursorError::Malformed)?;
        at += len;
        let offset = take_varint(body, &mut at)?;
        entries.push(CursorEntry {
            channel,
            epoch,
            offset,
        });
    }
    if at != body.len() {
        return Err(CursorError::Malformed);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = b"server key";
        let entries = vec![
            CursorEntry {
                channel: channel_hash(false, "a"),
                epoch: "e1".into(),
                offset: 7,
            },
            CursorEntry {
                channel: channel_hash(true, "a"),
                epoch: "e2".into(),
                offset: u64::MAX,
            },
        ];
        let t = encode(&entries, key).unwrap();
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode(&t, key).unwrap(), entries);
        assert_eq!(decode(&t, b"other key"), Err(CursorError::Tampered));
        assert_eq!(decode("%%%", key), Err(CursorError::Malformed));
        assert_eq!(decode("", key), Err(CursorError::Malformed));
        assert_ne!(channel_hash(false, "a"), channel_hash(true, "a"));
    }
}
