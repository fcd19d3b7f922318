//! Fuzz target: SSE cursors (`Last-Event-ID`). An arbitrary token never panics the decoder; entries
//! made from the input encode and decode back to themselves, and never verify under another key.
#![no_main]

use herald_protocol::cursor::{CursorEntry, decode, encode};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-key-fuzz-key-fuzz-key-0123";

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = decode(token, KEY);
    }
    let entries: Vec<CursorEntry> = data
        .chunks(12)
        .map(|c| {
            let mut n = [0u8; 12];
            n[..c.len()].copy_from_slice(c);
            CursorEntry {
                channel: u32::from_be_bytes([n[0], n[1], n[2], n[3]]),
                epoch: format!("{:x}", n[4]),
                offset: u64::from_be_bytes([n[4], n[5], n[6], n[7], n[8], n[9], n[10], n[11]]),
            }
        })
        .collect();
    if let Ok(token) = encode(&entries, KEY) {
        assert_eq!(decode(&token, KEY).expect("a token decodes with its key"), entries);
        assert!(decode(&token, b"another key").is_err());
    }
});
