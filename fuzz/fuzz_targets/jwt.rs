#![no_main]
//! Bearer tokens, base64url, and claim lookup in JSON and in Envoy's
//! serialization of jwt_authn's payload.
//! The invariants are in `fuzz/checks.rs` (`checks::jwt`).

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::jwt(data));
