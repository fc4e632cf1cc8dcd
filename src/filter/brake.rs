//! The brake's shared window in the proxy's shared data: every worker of the
//! proxy updates one window with compare-and-swap, so no update is lost.
//!
//! A trip must hold proxy-wide at once, not from each worker's next tick: the
//! worker that trips it increments the trips counter, a metric every worker
//! reads (one cheap host call, made only for requests the brake concerns), and
//! a worker that sees the counter above what it last saw treats the brake as
//! tripped. Only the end of a cooldown waits for the tick.

use std::cell::Cell;

use log::warn;

use super::metric_ids::define;
use super::{Host, HostError, MetricKind};
use crate::brake::{Brake, Trip, Window};
use crate::plan::Plan;

/// Tries of one compare-and-swap update before giving up on that response.
const CAS_TRIES: usize = 16;

pub(crate) struct BrakeState {
    key: String,
    trips: u32,
    tripped_gauge: u32,
    /// This worker's view, refreshed on the tick and when it trips the brake.
    tripped: Cell<bool>,
    /// The trips counter when this worker last looked: a higher value means
    /// another worker has tripped the brake since.
    seen_trips: Cell<u64>,
    /// When the last cooldown ended (the ramp restarts from there); 0: never.
    pub restarted_at_ms: Cell<i64>,
}

impl BrakeState {
    /// Define the brake's metrics and make sure the shared window exists, so
    /// that every later update carries a CAS token.
    pub fn new(host: &impl Host, plan: &Plan) -> Result<Option<BrakeState>, String> {
        let (Some(brake), Some(key)) = (&plan.brake, plan.brake_key()) else {
            return Ok(None);
        };
        let (trips_name, gauge_name) = plan.metrics.brake(plan.subset_name(brake.subset));
        let trips = define(host, MetricKind::Counter, &trips_name).map_err(|e| e.to_string())?;
        let tripped_gauge =
            define(host, MetricKind::Gauge, &gauge_name).map_err(|e| e.to_string())?;
        let state = BrakeState {
            trips,
            tripped_gauge,
            key,
            tripped: Cell::new(false),
            seen_trips: Cell::new(host.get_metric(trips).unwrap_or(0)),
            restarted_at_ms: Cell::new(0),
        };
        if let Ok((None, _)) = host.get_shared_data(&state.key) {
            let _ = host.set_shared_data(&state.key, &Window::default().encode(), None);
        }
        Ok(Some(state))
    }

    /// Whether requests for the braked subset must go elsewhere now: this
    /// worker's view, or a trip by any other worker since it last looked.
    pub fn is_tripped(&self, host: &impl Host) -> bool {
        if self.tripped.get() {
            return true;
        }
        match host.get_metric(self.trips) {
            Ok(trips) if trips > self.seen_trips.get() => {
                self.tripped.set(true);
                true
            }
            _ => false,
        }
    }

    fn read(&self, host: &impl Host) -> Option<(Window, Option<u32>)> {
        let (bytes, cas) = host.get_shared_data(&self.key).ok()?;
        Some((
            bytes.and_then(|b| Window::decode(&b)).unwrap_or_default(),
            cas,
        ))
    }

    /// Refresh this worker's view (the tick); end a cooldown when it has passed.
    pub fn refresh(&self, host: &impl Host, brake: &Brake, now_ms: i64) {
        // The counter before the window: a trip after this read shows in the
        // counter, one before it in the window.
        let Ok(trips_before) = host.get_metric(self.trips) else {
            return;
        };
        for _ in 0..CAS_TRIES {
            let Some((mut window, cas)) = self.read(host) else {
                return;
            };
            let mut tripped = window.is_tripped(brake, now_ms);
            if window.tripped_at_ms != 0 && !tripped {
                // Cooldown over: a fresh window, and the ramp restarts now.
                window.restart(now_ms);
                match host.set_shared_data(&self.key, &window.encode(), cas) {
                    Err(HostError::CAS_MISMATCH) => continue,
                    Err(_) => return,
                    Ok(()) => {}
                }
            }
            // A trip while this ran still counts.
            if host
                .get_metric(self.trips)
                .is_ok_and(|after| after > trips_before)
            {
                tripped = true;
            }
            self.tripped.set(tripped);
            self.seen_trips.set(trips_before);
            self.restarted_at_ms.set(window.restarted_at_ms);
            let _ = host.record_metric(self.tripped_gauge, u64::from(tripped));
            return;
        }
    }

    /// Count one response of the braked subset; trip the brake if the window
    /// now says so (one worker flips it, counts the trip and logs it).
    pub fn record(
        &self,
        host: &impl Host,
        brake: &Brake,
        subset: &str,
        now_ms: i64,
        error: bool,
        latency_ms: Option<u64>,
    ) {
        for _ in 0..CAS_TRIES {
            let Some((mut window, cas)) = self.read(host) else {
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
            match host.set_shared_data(&self.key, &window.encode(), cas) {
                Ok(()) => {
                    if let Some(trip) = trip {
                        self.tripped(host, brake, subset, &trip);
                    }
                    return;
                }
                Err(HostError::CAS_MISMATCH) => continue,
                Err(_) => return,
            }
        }
    }

    fn tripped(&self, host: &impl Host, brake: &Brake, subset: &str, trip: &Trip) {
        self.tripped.set(true);
        let _ = host.increment_metric(self.trips, 1);
        let _ = host.record_metric(self.tripped_gauge, 1);
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
