//! The brake's shared window in Proxy-Wasm shared data: every worker VM of the
//! proxy updates one window with compare-and-swap, so no update is lost.

use std::cell::Cell;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

use crate::brake::{Brake, Trip, Window};
use crate::router::Router;

/// Tries of one compare-and-swap update before giving up on that response.
const CAS_TRIES: usize = 16;

pub(crate) struct BrakeState {
    key: String,
    trips: u32,
    tripped_gauge: u32,
    /// This VM's view, refreshed on the tick and when this VM trips it.
    pub tripped: Cell<bool>,
    /// When the last cooldown ended (the ramp restarts from there); 0: never.
    pub restarted_at_ms: Cell<i64>,
}

impl BrakeState {
    /// Define the brake's metrics and make sure the shared window exists, so
    /// that every later update carries a CAS token.
    pub fn new(router: &Router) -> Result<Option<BrakeState>, String> {
        let (Some(brake), Some(key)) = (&router.brake, router.brake_key()) else {
            return Ok(None);
        };
        let (trips_name, gauge_name) = router.metrics.brake(router.subset_name(brake.subset));
        let define = |kind, name: &str| {
            hostcalls::define_metric(kind, name)
                .map_err(|status| format!("cannot define metric {name}: host status {status:?}"))
        };
        let state = BrakeState {
            trips: define(MetricType::Counter, &trips_name)?,
            tripped_gauge: define(MetricType::Gauge, &gauge_name)?,
            key,
            tripped: Cell::new(false),
            restarted_at_ms: Cell::new(0),
        };
        if let Ok((None, _)) = hostcalls::get_shared_data(&state.key) {
            let _ = hostcalls::set_shared_data(&state.key, Some(&Window::default().encode()), None);
        }
        Ok(Some(state))
    }

    fn read(&self) -> Option<(Window, Option<u32>)> {
        let (bytes, cas) = hostcalls::get_shared_data(&self.key).ok()?;
        Some((
            bytes.and_then(|b| Window::decode(&b)).unwrap_or_default(),
            cas,
        ))
    }

    /// Refresh this VM's view (the tick); end a cooldown when it has passed.
    pub fn refresh(&self, brake: &Brake, now_ms: i64) {
        for _ in 0..CAS_TRIES {
            let Some((mut window, cas)) = self.read() else {
                return;
            };
            let tripped = window.is_tripped(brake, now_ms);
            if window.tripped_at_ms != 0 && !tripped {
                // Cooldown over: a fresh window, and the ramp restarts now.
                window.restart(now_ms);
                if let Err(Status::CasMismatch) =
                    hostcalls::set_shared_data(&self.key, Some(&window.encode()), cas)
                {
                    continue;
                }
            }
            self.tripped.set(tripped);
            self.restarted_at_ms.set(window.restarted_at_ms);
            let _ = hostcalls::record_metric(self.tripped_gauge, u64::from(tripped));
            return;
        }
    }

    /// Count one response of the braked subset; trip the brake if the window
    /// now says so (one VM flips it, counts the trip and logs it).
    pub fn record(
        &self,
        brake: &Brake,
        subset: &str,
        now_ms: i64,
        error: bool,
        latency_ms: Option<u64>,
    ) {
        for _ in 0..CAS_TRIES {
            let Some((mut window, cas)) = self.read() else {
                return;
            };
            window.record(now_ms, brake.window_ms, error, latency_ms);
            let trip = if window.tripped_at_ms == 0 {
                window.check(brake, now_ms)
            } else {
                None
            };
            if trip.is_some() {
                window.tripped_at_ms = now_ms;
            }
            match hostcalls::set_shared_data(&self.key, Some(&window.encode()), cas) {
                Ok(()) => {
                    if let Some(trip) = trip {
                        self.tripped(brake, subset, &trip);
                    }
                    return;
                }
                Err(Status::CasMismatch) => continue,
                Err(_) => return,
            }
        }
    }

    fn tripped(&self, brake: &Brake, subset: &str, trip: &Trip) {
        self.tripped.set(true);
        let _ = hostcalls::increment_metric(self.trips, 1);
        let _ = hostcalls::record_metric(self.tripped_gauge, 1);
        let window_s = brake.window_ms / 1000;
        match trip.p99_above_ms {
            Some(p99) => warn!(
                "canary-router: brake tripped on {subset}: p99 above {p99} ms (limit {} ms) over {} responses in {window_s}s; new requests go to the default subset",
                brake.max_p99_ms.unwrap_or_default(),
                trip.responses
            ),
            None => warn!(
                "canary-router: brake tripped on {subset}: error rate {} (limit {}) over {} responses in {window_s}s; new requests go to the default subset",
                // Per mille through integers: core's float printer costs ~14 KiB.
                per_mille(trip.error_rate),
                per_mille(brake.max_error_rate),
                trip.responses
            ),
        }
    }
}

/// A fraction as `0.214`, rounded to three decimals.
fn per_mille(fraction: f64) -> String {
    let m = (fraction * 1000.0).round().clamp(0.0, 1_000_000.0) as u64;
    format!("{}.{:03}", m / 1000, m % 1000)
}
