#![no_main]
//! cookie::pairs and cookie::find over arbitrary bytes, and generated headers.
//! The invariants are in `fuzz/checks.rs` (`checks::cookie`).

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cookie(data));
