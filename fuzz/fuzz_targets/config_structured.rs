#![no_main]
//! Generated configurations (subsets, rules, sticky keys, pins, mode), valid
//! or broken in one known way, serialized to JSON and loaded.
//! The invariants are in `fuzz/checks.rs` (`checks::config_structured`).

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_structured(data));
