//! Fuzz target: Phoenix text frames (protocol 1.0.0 objects and 2.0.0 arrays) from arbitrary text.
//! No input may panic the decoder.
#![no_main]

use herald_protocol::{Vsn, decode_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = decode_text(Vsn::V1, text);
    let _ = decode_text(Vsn::V2, text);
});
