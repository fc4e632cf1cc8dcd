//! Host adapters: the only code that talks to a proxy. Each one implements
//! [`crate::filter::Host`] and calls [`crate::filter`]; nothing else in the
//! crate knows which proxy it runs in.
//!
//! - `wasm`: Proxy-Wasm (Envoy's Wasm filter, Istio's WasmPlugin).
//! - `native`: an Envoy dynamic module (feature `dynamic-module`, `make native`).

#[cfg(all(feature = "dynamic-module", not(target_arch = "wasm32")))]
mod native;
#[cfg(target_arch = "wasm32")]
mod wasm;
