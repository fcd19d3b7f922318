//! Fuzz target: every decoder of client input, on arbitrary bytes. None may panic; what decodes as
//! a binary push must encode back to the same bytes' meaning.
#![no_main]

use bytes::Bytes;
use herald_protocol::binary::{decode_push, encode_push};
use herald_protocol::{JoinConfig, Vsn, decode_binary, decode_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let _ = decode_binary(Vsn::V2, &frame);
    if let Ok(push) = decode_push(&frame) {
        let again = encode_push(&push).expect("a decoded push re-encodes");
        assert_eq!(decode_push(&again).expect("re-decodes"), push);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_text(Vsn::V1, text);
        let _ = decode_text(Vsn::V2, text);
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = JoinConfig::parse(&value);
        }
    }
});
