#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The Envoy dynamic module (`make native`) against the Envoy binary in use:
//! every callback the library imports must be one that Envoy exports (a missing
//! one fails at the first call, inside a request), and the library must export
//! every hook Envoy 1.40 requires (it refuses the module otherwise) plus
//! nothing Envoy does not know.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The HTTP hooks Envoy 1.40 requires of a module, and the program hook.
const REQUIRED_HOOKS: [&str; 21] = [
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
];

pub fn native_lib() -> PathBuf {
    let p = repo_root().join("target/native/libcanary_router.so");
    assert!(
        p.is_file(),
        "no {}: run `make native` (make integration builds it first)",
        p.display()
    );
    p
}

/// The dynamic symbols of `file`: defined ones, or undefined ones.
fn dynamic_symbols(file: &Path, defined: bool) -> BTreeSet<String> {
    let flag = if defined {
        "--defined-only"
    } else {
        "--undefined-only"
    };
    let out = Command::new("nm")
        .args(["-D", flag])
        .arg(file)
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success(), "nm -D {flag} {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .collect()
}

#[test]
fn every_callback_the_library_imports_is_exported_by_this_envoy() {
    if common::wasm_only("checks the dynamic module's ABI against Envoy, in the Wasm run") {
        return;
    }
    let imported: Vec<String> = dynamic_symbols(&native_lib(), false)
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert!(
        imported.len() >= 10,
        "the library imports Envoy's callbacks: {imported:?}"
    );
    let exported = dynamic_symbols(&envoy_bin(), true);
    let missing: Vec<&String> = imported.iter().filter(|s| !exported.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "imported by the library, not exported by {}: {missing:?}",
        envoy_bin().display()
    );
}

#[test]
fn the_library_exports_every_hook_envoy_requires_and_no_unknown_one() {
    if common::wasm_only("checks the dynamic module's ABI against Envoy, in the Wasm run") {
        return;
    }
    let exported = dynamic_symbols(&native_lib(), true);
    let missing: Vec<&str> = REQUIRED_HOOKS
        .iter()
        .copied()
        .filter(|h| !exported.contains(*h))
        .collect();
    assert!(missing.is_empty(), "hooks missing: {missing:?}");
    // Every hook the library exports is one this Envoy looks up by name.
    let envoy = std::fs::read(envoy_bin()).unwrap();
    let unknown: Vec<&String> = exported
        .iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_on_"))
        .filter(|s| !envoy.windows(s.len()).any(|w| w == s.as_bytes()))
        .collect();
    assert!(
        unknown.is_empty(),
        "hooks this Envoy does not know: {unknown:?}"
    );
}
