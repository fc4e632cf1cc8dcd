//! canary-router: a Proxy-Wasm HTTP filter that picks the canary subset per request.
//!
//! The request's way through the crate: [`config::load`] parses, validates and
//! compiles the plugin configuration into a [`plan::Plan`]; per request,
//! [`decide::decide_with`] reads a [`request::RequestView`] and returns a
//! [`decide::Decision`] (rules, sticky buckets, pins, the ramp's split, the
//! brake: all of it, pure). [`filter`] runs that as a proxy asks (configure,
//! tick, request and response headers) over the [`filter::Host`] trait; the
//! host adapters (`host`, one per proxy ABI) are the only code that talks to a
//! proxy. `docs/architecture.md` draws the way.
//!
//! The public API is what the CLI, the benchmarks and a host adapter need.
//! Everything else is private; the `internals` feature makes it public for the
//! fuzzers and the differential tests, which check internals against models.

/// Modules private to the crate, public with the `internals` feature.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

pub mod bucket;
pub mod cohort;
pub mod config;
pub mod decide;
pub mod filter;
pub mod formats;
pub mod goals;
pub mod grpc;
pub mod hash;
pub mod labels;
pub mod metrics;
pub mod plan;
pub mod request;
pub mod rng;
pub mod simulate;

internal!(brake, claims, json, pin, ramp, rules, slots);
mod swar;
#[cfg(test)]
mod test_inputs;

#[cfg(any(target_arch = "wasm32", feature = "dynamic-module"))]
mod host;
