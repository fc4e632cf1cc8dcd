//! canary-router: a Proxy-Wasm HTTP filter that picks the canary subset per request.
//!
//! The request's way through the crate:
//! [`config::load`] parses, validates and compiles the plugin configuration into a
//! [`router::Router`]; per request, [`decide::decide`] reads a [`request::RequestView`]
//! (rules from [`rules`], sticky buckets from [`bucket`]) and returns a
//! [`decide::Decision`]; the host adapter (`host`, wasm32 only, the one module that
//! talks to `proxy_wasm`) writes the routing header and counts it ([`metrics`]).

pub mod brake;
pub mod bucket;
pub mod claims;
pub mod config;
pub mod cookie;
pub mod decide;
pub mod filter;
pub mod hash;
pub mod header_map;
pub mod json;
pub mod metrics;
pub mod pin;
pub mod ramp;
pub mod request;
pub mod rng;
pub mod router;
pub mod rules;
pub mod simulate;
pub mod slots;
mod swar;
#[cfg(test)]
mod test_inputs;

#[cfg(target_arch = "wasm32")]
mod host;
