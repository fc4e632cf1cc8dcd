//! One configuration's life: parse, compile and define its metrics (configure),
//! keep the ramp's step and the brake's view current (tick), and hand each
//! request what it needs.

use std::cell::RefCell;
use std::fmt::Write;
use std::rc::Rc;

use log::{error, info, warn};

use super::brake::BrakeState;
use super::metric_ids::MetricIds;
use super::stream::FilterStream;
use super::{now_ms, Host};
use crate::config;
use crate::rng::SplitMix64;

/// A configuration ready to serve: the compiled plan and its metric ids.
pub(crate) struct Active {
    pub plan: crate::plan::Plan,
    pub metrics: MetricIds,
    /// The split in force: the configured one, or the ramp's current step,
    /// recomputed on the tick (off the request path).
    pub split: RefCell<crate::bucket::Split>,
    /// The brake's shared window and this worker's view of it.
    pub brake: Option<BrakeState>,
}

impl Active {
    /// Move to the ramp step in force now; report the weights when they change.
    fn refresh_split(&self, host: &impl Host) {
        let restarted_at = match (&self.brake, &self.plan.brake) {
            (Some(state), Some(brake)) => {
                state.refresh(host, brake, now_ms(host));
                state.restarted_at_ms.get()
            }
            _ => 0,
        };
        if self.plan.ramp.is_none() {
            return;
        }
        let now = self.plan.split_at_restarted(now_ms(host), restarted_at);
        let changed = self.split.borrow().weights_bp() != now.weights_bp();
        if changed {
            self.metrics.record_weights(host, &now.weights_bp());
        }
        *self.split.borrow_mut() = now;
    }
}

/// The filter for one plugin instance (one per worker in Proxy-Wasm).
pub struct FilterRoot {
    /// `None` until a configuration has been accepted.
    active: Option<Rc<Active>>,
    /// Keyless draws, shared by this instance's requests.
    rng: Rc<RefCell<SplitMix64>>,
}

impl FilterRoot {
    /// `rng` draws keyless requests' buckets (seed it from the host's entropy).
    pub fn new(rng: SplitMix64) -> FilterRoot {
        FilterRoot {
            active: None,
            rng: Rc::new(RefCell::new(rng)),
        }
    }

    /// Whether a configuration is serving.
    pub fn is_configured(&self) -> bool {
        self.active.is_some()
    }

    /// Read, compile and install the plugin configuration. A refused one is
    /// logged in one line and the previous one keeps serving: `false`.
    pub fn configure(&mut self, host: &impl Host) -> bool {
        let started = host.now_ns().ok();
        let bytes = match host.plugin_configuration() {
            Ok(bytes) => bytes,
            Err(status) => {
                error!("canary-router: cannot read the plugin configuration: {status}");
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
        let metrics = match MetricIds::define(host, &loaded.plan.metrics) {
            Ok(ids) => ids,
            Err(e) => {
                error!("canary-router: {e}");
                return false;
            }
        };
        for warning in &loaded.warnings {
            warn!("canary-router: {warning}");
        }
        let plan = loaded.plan;
        let brake = match BrakeState::new(host, &plan) {
            Ok(brake) => brake,
            Err(e) => {
                error!("canary-router: {e}");
                return false;
            }
        };
        // Host clock: the wall time spent parsing, compiling and defining
        // metrics (big `in` lists and rule sets show here).
        let took_ms = started
            .zip(host.now_ns().ok())
            .map_or(0, |(a, b)| b.saturating_sub(a) / 1_000_000);
        // `v1=90.00% v2=10.00%`, written in place (no Vec of Strings to join).
        let mut split = String::new();
        for (i, (s, w)) in plan.subsets.iter().zip(&plan.weights_bp).enumerate() {
            let sep = if i > 0 { " " } else { "" };
            let _ = write!(split, "{sep}{s}={}.{:02}%", w / 100, w % 100);
        }
        info!(
            "canary-router: configured in {took_ms} ms: subsets {split}, {} rule(s), {} sticky key(s), header {}",
            plan.rules.len(),
            plan.sticky_keys.len(),
            plan.header,
        );
        metrics.record_memory(host);
        if let (Some(state), Some(config)) = (&brake, &plan.brake) {
            state.refresh(host, config, now_ms(host));
        }
        let restarted_at = brake.as_ref().map_or(0, |b| b.restarted_at_ms.get());
        let split = plan.split_at_restarted(now_ms(host), restarted_at);
        metrics.record_weights(host, &split.weights_bp());
        // A ramp's step and the brake's cooldown are re-read every 250 ms; without
        // them, the timer only refreshes the memory gauge.
        let tick = if plan.ramp.is_some() || plan.brake.is_some() {
            250
        } else {
            5_000
        };
        self.active = Some(Rc::new(Active {
            plan,
            metrics,
            split: RefCell::new(split),
            brake,
        }));
        let _ = host.set_tick_period_ms(tick);
        true
    }

    pub fn tick(&mut self, host: &impl Host) {
        if let Some(active) = &self.active {
            active.refresh_split(host);
            active.metrics.record_memory(host);
        }
    }

    /// The per-request state of a new request.
    pub fn stream(&self) -> FilterStream {
        FilterStream::new(self.active.clone(), self.rng.clone())
    }
}
