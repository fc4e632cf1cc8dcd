#![no_main]
//! Arbitrary bytes into config::load: Ok or Err, never a panic; an accepted
//! plan covers every bucket; load is deterministic.
//! The invariants are in `fuzz/checks.rs` (`checks::config`).

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config(data));
