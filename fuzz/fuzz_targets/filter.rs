//! Fuzz target: the `filter` of a `postgres_changes` binding from arbitrary text. No input may
//! panic the parser, and what parses has between one and the maximum number of conditions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(parsed) = herald_postgres::filter::parse(text) {
        assert!(!parsed.conditions.is_empty());
        assert!(parsed.conditions.len() <= herald_postgres::filter::MAX_CONDITIONS);
    }
});
