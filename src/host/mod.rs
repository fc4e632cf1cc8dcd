//! The only module that talks to `proxy_wasm`: the root context (configure, define
//! metrics, swap the router) and the HTTP context (adapt the request, apply and
//! count the decision). Host calls go through `hostcalls` so that every failure is
//! a `Result` we handle, never a panic inside an SDK convenience wrapper.

mod brake;
mod http;
mod metrics;
mod raw;

use std::cell::RefCell;
use std::fmt::Write;
use std::rc::Rc;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::config;
use crate::rng::SplitMix64;

use self::http::CanaryHttp;
use self::metrics::MetricIds;

/// A configuration ready to serve: the compiled router and its metric ids.
pub(crate) struct Active {
    pub router: crate::router::Router,
    pub metrics: MetricIds,
    /// The split in force: the configured one, or the ramp's current step,
    /// recomputed on the root context's tick (off the request path).
    pub split: RefCell<crate::bucket::Split>,
    /// The brake's shared window and this VM's view of it.
    pub brake: Option<brake::BrakeState>,
}

/// The host's clock in Unix nanoseconds (0 if the host cannot tell).
pub(crate) fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The host's clock in Unix milliseconds (0 if the host cannot tell).
pub(crate) fn now_ms() -> i64 {
    ns_to_ms(now_ns())
}

pub(crate) fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

impl Active {
    /// Move to the ramp step in force now; report the weights when they change.
    fn refresh_split(&self) {
        let restarted_at = match (&self.brake, &self.router.brake) {
            (Some(state), Some(brake)) => {
                state.refresh(brake, now_ms());
                state.restarted_at_ms.get()
            }
            _ => 0,
        };
        if self.router.ramp.is_none() {
            return;
        }
        let now = self.router.split_at_restarted(now_ms(), restarted_at);
        let changed = self.split.borrow().weights_bp() != now.weights_bp();
        if changed {
            self.metrics.record_weights(&now.weights_bp());
        }
        *self.split.borrow_mut() = now;
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CanaryRoot::new()) });
}}

struct CanaryRoot {
    /// `None` until a configuration has been accepted.
    active: Option<Rc<Active>>,
    /// One generator per VM (VMs are single-threaded), shared by its requests.
    rng: Rc<RefCell<SplitMix64>>,
}

impl CanaryRoot {
    fn new() -> CanaryRoot {
        let rng = SplitMix64::from_entropy().unwrap_or_else(|| {
            // Never a fixed seed: fall back to the clock, and say so.
            warn!("canary-router: no entropy from the host; seeding random choices from the clock");
            let nanos = hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            SplitMix64::new(nanos)
        });
        CanaryRoot {
            active: None,
            rng: Rc::new(RefCell::new(rng)),
        }
    }
}

impl Context for CanaryRoot {}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let started = hostcalls::get_current_time().ok();
        let bytes = match hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                error!(
                    "canary-router: cannot read the plugin configuration: host status {status:?}"
                );
                return false;
            }
        };
        let loaded = match config::load(&bytes) {
            Ok(loaded) => loaded,
            Err(e) => {
                error!("canary-router: {e}");
                return false;
            }
        };
        let metrics = match MetricIds::define(&loaded.router.metrics) {
            Ok(ids) => ids,
            Err(e) => {
                error!("canary-router: {e}");
                return false;
            }
        };
        for warning in &loaded.warnings {
            warn!("canary-router: {warning}");
        }
        let router = loaded.router;
        // Host clock: the wall time this VM spent parsing, compiling and
        // defining metrics (big `in` lists and rule sets show here).
        let took_ms = started
            .zip(hostcalls::get_current_time().ok())
            .and_then(|(a, b)| b.duration_since(a).ok())
            // As u64: formatting a u128 would add core's u128 printer (~3 KiB).
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // `v1=90.00% v2=10.00%`, written in place (no Vec of Strings to join).
        let mut split = String::new();
        for (i, (s, w)) in router.subsets.iter().zip(&router.weights_bp).enumerate() {
            let sep = if i > 0 { " " } else { "" };
            let _ = write!(split, "{sep}{s}={}.{:02}%", w / 100, w % 100);
        }
        info!(
            "canary-router: configured in {took_ms} ms: subsets {split}, {} rule(s), {} sticky key(s), header {}",
            router.rules.len(),
            router.sticky_keys.len(),
            router.header,
        );
        metrics.record_wasm_memory();
        let brake = match brake::BrakeState::new(&router) {
            Ok(brake) => brake,
            Err(e) => {
                error!("canary-router: {e}");
                return false;
            }
        };
        if let (Some(state), Some(config)) = (&brake, &router.brake) {
            state.refresh(config, now_ms());
        }
        let restarted_at = brake.as_ref().map_or(0, |b| b.restarted_at_ms.get());
        let split = router.split_at_restarted(now_ms(), restarted_at);
        metrics.record_weights(&split.weights_bp());
        // A ramp's step is re-read from the clock every 250 ms; without one, the
        // timer only refreshes the memory gauge.
        let tick = if router.ramp.is_some() || router.brake.is_some() {
            250
        } else {
            5_000
        };
        self.active = Some(Rc::new(Active {
            router,
            metrics,
            split: RefCell::new(split),
            brake,
        }));
        let _ = hostcalls::set_tick_period(std::time::Duration::from_millis(tick));
        true
    }

    fn on_tick(&mut self) {
        if let Some(active) = &self.active {
            active.refresh_split();
            active.metrics.record_wasm_memory();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryHttp::new(
            self.active.clone(),
            self.rng.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
