//! Fuzz target: Phoenix 2.0.0 binary frames from arbitrary bytes. No input may panic the decoder,
//! and what decodes as a broadcast push must encode back to the same push.
#![no_main]

use bytes::Bytes;
use herald_protocol::binary::{decode_push, encode_push};
use herald_protocol::{Vsn, decode_binary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let _ = decode_binary(Vsn::V1, &frame);
    let _ = decode_binary(Vsn::V2, &frame);
    if let Ok(push) = decode_push(&frame) {
        let again = encode_push(&push).expect("a decoded push re-encodes");
        assert_eq!(decode_push(&again).expect("re-decodes"), push);
    }
});
