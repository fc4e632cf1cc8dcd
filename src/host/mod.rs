//! Host adapters: the only code that talks to a proxy. Each one implements
//! [`crate::filter::Host`] and calls [`crate::filter`]; nothing else in the
//! crate knows which proxy it runs in.
//!
//! - `wasm`: Proxy-Wasm (Envoy's Wasm filter, Istio's WasmPlugin).

mod wasm;
