//! Fuzz target: the `config` of a `phx_join` from arbitrary JSON. No value may panic the parser.
#![no_main]

use herald_protocol::JoinConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = JoinConfig::parse(&value);
        let _ = JoinConfig::parse(&serde_json::json!({ "config": value }));
    }
});
