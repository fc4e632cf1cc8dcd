//! Which build of the filter the integration tests run in Envoy: the
//! Proxy-Wasm module (`CANARY_HOST=wasm`, the default) or the Envoy dynamic
//! module (`CANARY_HOST=native`, `make native`, docs/native.md). The tests are
//! the same for both; only the harness knows the difference:
//!
//! - the HTTP filter entry (inline or by ECDS) loads the `.wasm` or names the
//!   dynamic module, with the same plugin JSON;
//! - Envoy gets `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` (`CANARY_NATIVE_DIR`,
//!   default `<repo>/target/native`) for the dynamic module;
//! - the filter's stats sit under `dynamicmodulescustom.` instead of
//!   `wasmcustom.` (same names after the prefix);
//! - claims from jwt_authn come by its forwarded payload header instead of its
//!   dynamic metadata, which a dynamic module cannot read ([`plugin_config`]).
//!
//! A test about the Wasm build itself starts with
//! `if wasm_only("why") { return; }`.

use std::path::PathBuf;

use super::repo_root;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Wasm,
    Native,
}

/// The build under test, from `CANARY_HOST` (unset or empty: `wasm`).
pub fn host() -> Host {
    match std::env::var("CANARY_HOST").as_deref() {
        Err(_) | Ok("" | "wasm") => Host::Wasm,
        Ok("native") => Host::Native,
        Ok(other) => panic!("CANARY_HOST={other:?}: expected \"wasm\" or \"native\""),
    }
}

pub fn is_native() -> bool {
    host() == Host::Native
}

/// True (the test should return at once) when the dynamic module is under
/// test and the test is about the Wasm build itself; says so on stdout.
pub fn wasm_only(reason: &str) -> bool {
    if is_native() {
        println!("skipped under CANARY_HOST=native: {reason}");
        return true;
    }
    false
}

/// The prefix Envoy puts before the filter's own stat names.
pub fn stats_prefix() -> &'static str {
    match host() {
        Host::Wasm => "wasmcustom.",
        Host::Native => "dynamicmodulescustom.",
    }
}

/// The directory holding `libcanary_router.so` (`CANARY_NATIVE_DIR`, default
/// `<repo>/target/native`).
pub fn native_dir() -> PathBuf {
    let dir = std::env::var_os("CANARY_NATIVE_DIR")
        .map_or_else(|| repo_root().join("target/native"), PathBuf::from);
    assert!(
        dir.join("libcanary_router.so").is_file(),
        "no libcanary_router.so in {} (CANARY_NATIVE_DIR): run `make native`, or `make integration`",
        dir.display()
    );
    dir
}

const DYNAMIC_MODULE_FILTER: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

/// The ECDS type URL of the filter under test.
pub fn filter_type_url() -> &'static str {
    match host() {
        Host::Wasm => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        Host::Native => DYNAMIC_MODULE_FILTER,
    }
}

/// The dynamic module's `DynamicModuleFilter` config (the `typed_config` of
/// its HTTP filter entry or of its ECDS resource), as in docs/native.md.
pub fn dynamic_module_filter(config: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": DYNAMIC_MODULE_FILTER,
        "dynamic_module_config": {"name": "canary_router"},
        "filter_name": "canary-router",
        "filter_config": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": plugin_config(config),
        },
    })
}

/// The plugin configuration as the build under test is given it. The Wasm
/// build gets it unchanged. The dynamic module cannot read jwt_authn's
/// dynamic metadata (docs/native.md), so a configuration reading claims from
/// it (`jwt.source` "verified", also the default) reads them from the payload
/// header the same jwt_authn forwards (envoy/envoy.yaml: `x-jwt-payload`,
/// client copies stripped early) instead: the same claims of the same
/// verified token. Anything else, and text that is not a JSON object, stays
/// as it is.
pub fn plugin_config(text: &str) -> String {
    if !is_native() {
        return text.to_string();
    }
    let Ok(serde_json::Value::Object(mut config)) = serde_json::from_str(text) else {
        return text.to_string();
    };
    if !reads_claims(&serde_json::Value::Object(config.clone())) {
        return text.to_string();
    }
    let from_metadata = match config.get("jwt") {
        None => true,
        Some(serde_json::Value::Object(jwt)) => {
            jwt.keys().all(|k| k == "source" || k == "metadata_key")
                && jwt.get("source").is_none_or(|s| s == "verified")
                && jwt.get("metadata_key").is_none_or(|k| k == "payload")
        }
        Some(_) => false,
    };
    if !from_metadata {
        return text.to_string();
    }
    config.insert(
        "jwt".into(),
        serde_json::json!({ "source": "payload_header" }),
    );
    serde_json::Value::Object(config).to_string()
}

/// Whether a key or a rule anywhere in the configuration reads a JWT claim.
fn reads_claims(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k == "jwt_claim" || reads_claims(v)),
        serde_json::Value::Array(a) => a.iter().any(reads_claims),
        _ => false,
    }
}

/// What the dynamic module's Envoy adds to the bootstrap, as
/// envoy/envoy-native.yaml does: the runtime flag under which Envoy drops the
/// module's metrics namespace at /stats/prometheus, so the series are named as
/// the Wasm filter's (`canary_requests{...}`, not
/// `envoy_dynamicmodulescustom_canary_requests{...}`).
pub fn bootstrap_extra() -> &'static str {
    match host() {
        Host::Wasm => "",
        Host::Native => {
            "\nlayered_runtime:\n  layers:\n  - name: canary-router\n    static_layer:\n      \
             envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix: true\n"
        }
    }
}

/// How Envoy 1.40 says it refused the filter's configuration (after the
/// filter's own `canary-router: config: ...` line): the Wasm filter's words,
/// and the dynamic module's.
const WASM_REFUSAL: &str = "Unable to create Wasm plugin canary-router";
const NATIVE_REFUSAL: &str = "Failed to create filter config: Failed to initialize dynamic module";

/// The log of an Envoy that refused the filter's configuration, with the
/// dynamic module's refusal line also saying it in the Wasm filter's words
/// (which tests look for): Envoy words the same refusal differently per
/// extension. Panics if the dynamic module's refusal is not in the log.
pub fn refusal_log(log: String) -> String {
    if !is_native() {
        return log;
    }
    assert!(
        log.contains(NATIVE_REFUSAL),
        "no `{NATIVE_REFUSAL}` from Envoy in the log of a refused configuration:\n{log}"
    );
    log.replace(
        NATIVE_REFUSAL,
        &format!("{NATIVE_REFUSAL} ({WASM_REFUSAL})"),
    )
}
