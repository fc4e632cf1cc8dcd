#![no_main]
//! Arbitrary requests (headers, cookies, claims) against fixed configurations
//! through Request and decide.
//! The invariants are in `fuzz/checks.rs` (`checks::decide`).

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::decide(data));
