//! The local brake: a sliding window of the braked subset's responses, shared by
//! all worker VMs of a proxy (Proxy-Wasm shared data, compare-and-swap), and the
//! trip decision. Pure: the host adapter reads and writes the bytes.
//!
//! The window has `SLOTS` slots of `window / SLOTS` each; a slot is reused when
//! its epoch is older than the window. Latency is kept as a histogram with fixed
//! bucket bounds, so p99 is known to its bucket: the brake trips on latency only
//! when the whole p99 bucket lies above the limit (never a false trip from
//! rounding).

/// Slots per window.
pub const SLOTS: usize = 10;
/// Upper bounds (ms, inclusive) of the latency buckets; the last is open.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    u64::MAX,
];

/// A compiled `brake`.
#[derive(Debug, Clone, PartialEq)]
pub struct Brake {
    pub subset: usize,
    pub max_error_rate: f64,
    pub max_p99_ms: Option<u64>,
    pub window_ms: i64,
    pub min_requests: u64,
    /// `None`: stays tripped until the configuration changes.
    pub cooldown_ms: Option<i64>,
    /// Also stop rules that force the subset (default true).
    pub stop_rules: bool,
    /// Part of the shared-data key: changing it (or the seed or weights) resets.
    pub reset: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    epoch: i64,
    requests: u32,
    errors: u32,
    latency: [u32; LATENCY_BOUNDS_MS.len()],
}

/// The shared state of one brake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    slots: [Slot; SLOTS],
    /// Unix ms of the trip; 0 while not tripped.
    pub tripped_at_ms: i64,
    /// Unix ms of the last cooldown's end (a ramp restarts from there); 0 if none.
    pub restarted_at_ms: i64,
}

/// What tripped the brake, for the one log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    pub responses: u64,
    pub error_rate: f64,
    /// The p99 bucket's lower bound, when latency tripped it.
    pub p99_above_ms: Option<u64>,
}

const SLOT_BYTES: usize = 8 + 4 + 4 + 4 * LATENCY_BOUNDS_MS.len();
const WINDOW_BYTES: usize = 16 + SLOTS * SLOT_BYTES;

impl Window {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WINDOW_BYTES);
        out.extend(self.tripped_at_ms.to_le_bytes());
        out.extend(self.restarted_at_ms.to_le_bytes());
        for slot in &self.slots {
            out.extend(slot.epoch.to_le_bytes());
            out.extend(slot.requests.to_le_bytes());
            out.extend(slot.errors.to_le_bytes());
            for count in slot.latency {
                out.extend(count.to_le_bytes());
            }
        }
        out
    }

    /// `None` for anything that is not exactly an encoded window.
    pub fn decode(bytes: &[u8]) -> Option<Window> {
        if bytes.len() != WINDOW_BYTES {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let part = bytes.get(at..at + n)?;
            at += n;
            Some(part)
        };
        let i64_of = |b: &[u8]| -> Option<i64> { Some(i64::from_le_bytes(b.try_into().ok()?)) };
        let u32_of = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.try_into().ok()?)) };
        let mut w = Window {
            tripped_at_ms: i64_of(take(8)?)?,
            restarted_at_ms: i64_of(take(8)?)?,
            ..Window::default()
        };
        for slot in w.slots.iter_mut() {
            slot.epoch = i64_of(take(8)?)?;
            slot.requests = u32_of(take(4)?)?;
            slot.errors = u32_of(take(4)?)?;
            for count in slot.latency.iter_mut() {
                *count = u32_of(take(4)?)?;
            }
        }
        Some(w)
    }

    fn slot_ms(window_ms: i64) -> i64 {
        (window_ms / SLOTS as i64).max(1)
    }

    /// Count one response of the braked subset.
    pub fn record(&mut self, now_ms: i64, window_ms: i64, error: bool, latency_ms: Option<u64>) {
        let epoch = now_ms.div_euclid(Self::slot_ms(window_ms));
        let index = epoch.rem_euclid(SLOTS as i64) as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot.requests = slot.requests.saturating_add(1);
        if error {
            slot.errors = slot.errors.saturating_add(1);
        }
        if let Some(ms) = latency_ms {
            let bucket = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(0);
            if let Some(count) = slot.latency.get_mut(bucket) {
                *count = count.saturating_add(1);
            }
        }
    }

    /// Responses, errors and the latency histogram of the slots within the window.
    fn totals(&self, now_ms: i64, window_ms: i64) -> (u64, u64, [u64; LATENCY_BOUNDS_MS.len()]) {
        let current = now_ms.div_euclid(Self::slot_ms(window_ms));
        let mut totals = (0u64, 0u64, [0u64; LATENCY_BOUNDS_MS.len()]);
        for slot in self
            .slots
            .iter()
            .filter(|s| s.epoch > current - SLOTS as i64 && s.epoch <= current)
        {
            totals.0 += u64::from(slot.requests);
            totals.1 += u64::from(slot.errors);
            for (t, c) in totals.2.iter_mut().zip(slot.latency) {
                *t += u64::from(c);
            }
        }
        totals
    }

    /// Should the brake trip now? Only with at least `min_requests` in the window.
    pub fn check(&self, brake: &Brake, now_ms: i64) -> Option<Trip> {
        let (responses, errors, latency) = self.totals(now_ms, brake.window_ms);
        if responses == 0 || responses < brake.min_requests {
            return None;
        }
        let error_rate = errors as f64 / responses as f64;
        let p99_above_ms = brake.max_p99_ms.and_then(|max| {
            let measured: u64 = latency.iter().sum();
            if measured == 0 {
                return None;
            }
            // The bucket holding the 99th percentile, and its lower bound.
            let rank = (measured * 99).div_ceil(100);
            let mut seen = 0;
            let bucket = latency.iter().position(|c| {
                seen += c;
                seen >= rank
            })?;
            let lower = bucket
                .checked_sub(1)
                .and_then(|b| LATENCY_BOUNDS_MS.get(b))
                .copied()
                .unwrap_or(0);
            (lower >= max).then_some(lower)
        });
        (error_rate > brake.max_error_rate || p99_above_ms.is_some()).then_some(Trip {
            responses,
            error_rate,
            p99_above_ms,
        })
    }

    /// Tripped at `now_ms`, given the cooldown?
    pub fn is_tripped(&self, brake: &Brake, now_ms: i64) -> bool {
        self.tripped_at_ms != 0
            && brake
                .cooldown_ms
                .is_none_or(|c| now_ms < self.tripped_at_ms.saturating_add(c))
    }

    /// After a cooldown: a fresh window, and the ramp restarts from now.
    pub fn restart(&mut self, now_ms: i64) {
        *self = Window {
            restarted_at_ms: now_ms,
            ..Window::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brake() -> Brake {
        Brake {
            subset: 1,
            max_error_rate: 0.05,
            max_p99_ms: Some(500),
            window_ms: 10_000,
            min_requests: 20,
            cooldown_ms: None,
            stop_rules: true,
            reset: String::new(),
        }
    }

    #[test]
    fn encoding_round_trips_and_refuses_junk() {
        let mut w = Window::default();
        w.record(12_345, 10_000, true, Some(700));
        w.tripped_at_ms = 99;
        assert_eq!(Window::decode(&w.encode()), Some(w.clone()));
        assert_eq!(Window::decode(&w.encode()[1..]), None);
        assert_eq!(Window::decode(b""), None);
    }

    #[test]
    fn needs_min_requests_then_trips_on_errors() {
        let b = brake();
        let mut w = Window::default();
        for i in 0..19 {
            w.record(1_000 + i, b.window_ms, true, None);
        }
        assert_eq!(w.check(&b, 1_100), None, "19 < min_requests");
        w.record(1_100, b.window_ms, true, None);
        let trip = w.check(&b, 1_100).unwrap();
        assert_eq!((trip.responses, trip.error_rate), (20, 1.0));
    }

    #[test]
    fn healthy_traffic_never_trips() {
        let b = brake();
        let mut w = Window::default();
        for i in 0..10_000 {
            // 1 % errors against a 5 % limit, latency well under 500 ms.
            w.record(i, b.window_ms, i % 100 == 0, Some(40));
        }
        assert_eq!(w.check(&b, 9_999), None);
    }

    #[test]
    fn old_slots_leave_the_window() {
        let b = brake();
        let mut w = Window::default();
        for i in 0..100 {
            w.record(i, b.window_ms, true, None);
        }
        assert!(w.check(&b, 100).is_some());
        // One window later the errors are gone; healthy responses do not trip.
        for i in 0..100 {
            w.record(20_000 + i, b.window_ms, false, None);
        }
        assert_eq!(w.check(&b, 20_100), None);
        assert_eq!(w.totals(20_100, b.window_ms).0, 100);
    }

    #[test]
    fn p99_trips_only_when_its_whole_bucket_is_over() {
        let b = brake();
        let mut w = Window::default();
        for i in 0..100 {
            w.record(i, b.window_ms, false, Some(if i < 98 { 20 } else { 450 }));
        }
        assert_eq!(w.check(&b, 100), None, "p99 in (250, 500]: not above 500");
        for i in 0..10 {
            w.record(200 + i, b.window_ms, false, Some(700));
        }
        assert_eq!(w.check(&b, 300).unwrap().p99_above_ms, Some(500));
    }

    #[test]
    fn cooldown_and_restart() {
        let mut b = brake();
        let mut w = Window {
            tripped_at_ms: 1_000,
            ..Window::default()
        };
        assert!(w.is_tripped(&b, i64::MAX), "never: stays tripped");
        b.cooldown_ms = Some(5_000);
        assert!(w.is_tripped(&b, 5_999));
        assert!(!w.is_tripped(&b, 6_000));
        w.restart(6_000);
        assert_eq!((w.tripped_at_ms, w.restarted_at_ms), (0, 6_000));
    }
}
