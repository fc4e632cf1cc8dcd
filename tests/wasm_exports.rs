#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The built module exports exactly the callbacks the filter implements.
//!
//! `make wasm` drops any other export (std's and the linker's), because Envoy calls every
//! callback a module exports (on_log, on_done, body callbacks: one call into the
//! VM each per request for nothing) and skips the missing ones. The flip side:
//! a callback the filter starts to implement is never called unless it is added
//! to WASM_EXPORTS in the Makefile. This test ties the two lists together, and
//! the integration tests show the kept callbacks are enough (routing, counters
//! on the response, ticks, configuration).

mod common;

use common::*;

/// The export names of a WebAssembly binary (the export section, id 7).
fn exports(wasm: &[u8]) -> Vec<String> {
    fn leb(b: &[u8], i: &mut usize) -> usize {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            value |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                return value;
            }
        }
    }
    assert_eq!(&wasm[..4], b"\0asm", "not a wasm module");
    let mut i = 8;
    while i < wasm.len() {
        let id = wasm[i];
        i += 1;
        let size = leb(wasm, &mut i);
        if id == 7 {
            let mut j = i;
            let count = leb(wasm, &mut j);
            return (0..count)
                .map(|_| {
                    let len = leb(wasm, &mut j);
                    let name = String::from_utf8(wasm[j..j + len].to_vec()).unwrap();
                    j += len + 1; // the name, then the kind
                    leb(wasm, &mut j); // the index
                    name
                })
                .collect();
        }
        i += size;
    }
    Vec::new()
}

#[test]
fn the_module_exports_only_the_callbacks_it_implements() {
    if common::wasm_only("checks the exports and size of the .wasm module") {
        return;
    }
    let makefile = read_repo_file("Makefile");
    let listed = makefile
        .split("WASM_EXPORTS :=")
        .nth(1)
        .expect("WASM_EXPORTS in the Makefile");
    // The make variable ends at its first line without a trailing backslash.
    let end = listed
        .lines()
        .position(|l| !l.trim_end().ends_with('\\'))
        .unwrap();
    let mut wanted: Vec<String> = listed
        .lines()
        .take(end + 1)
        .flat_map(|l| l.trim_end_matches('\\').split_whitespace())
        .map(str::to_owned)
        .collect();
    let mut got = exports(&std::fs::read(wasm_path()).unwrap());
    got.sort();
    wanted.sort();
    assert_eq!(
        got, wanted,
        "the module's exports vs the Makefile's WASM_EXPORTS"
    );
    for needed in [
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        // A gRPC call's status: Envoy calls it only for responses with trailers.
        "proxy_on_response_trailers",
        "proxy_on_delete",
        "proxy_on_tick",
        "proxy_on_configure",
        "proxy_on_memory_allocate",
    ] {
        assert!(
            got.iter().any(|e| e == needed),
            "{needed} must stay exported"
        );
    }
    for dropped in ["proxy_on_log", "proxy_on_done", "proxy_on_response_body"] {
        assert!(!got.iter().any(|e| e == dropped), "{dropped} is not needed");
    }
}

/// The module's size budget: 250 KiB. What it pays for: the configuration is
/// read by the crate's own JSON reader (src/json.rs), because serde_json's
/// generic reader adds about 19 KiB to the module (measured: 237.7 KB with the
/// own reader, 257.7 KB with `serde_json::from_slice`), which would break it.
/// A change that grows the module past it must win the bytes back elsewhere.
#[test]
fn the_module_fits_its_size_budget() {
    if common::wasm_only("checks the exports and size of the .wasm module") {
        return;
    }
    let size = std::fs::metadata(wasm_path()).unwrap().len();
    assert!(
        size < 250 * 1024,
        "{} is {size} bytes ({:.1} KiB), over the 250 KiB budget",
        wasm_path().display(),
        size as f64 / 1024.0
    );
}
