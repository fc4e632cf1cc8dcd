//! The in-proxy ramp: the canary's weight as a pure function of the clock.
//!
//! Every proxy of a fleet computes the same weight from the same configuration
//! and its own clock, with no coordination, and a restart resumes the schedule
//! where it stands. Before `start` the configured weights apply; step `i` holds
//! from `start + hold_0 + ... + hold_(i-1)` for `hold_i`; the last step holds
//! forever. The other subsets share the rest in their configured proportions.

use crate::bucket::BUCKETS;

/// A compiled ramp. `subset` is the last listed subset (validated), so raising
/// its weight only moves keys into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ramp {
    pub subset: usize,
    /// Unix time of the first step, in milliseconds.
    pub start_ms: i64,
    pub steps: Vec<RampStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RampStep {
    pub weight_bp: u16,
    /// `None` only for the last step.
    pub hold_ms: Option<i64>,
}

impl Ramp {
    /// The step in force at `now_ms` (0-based), `None` before `start`.
    pub fn step_at(&self, now_ms: i64) -> Option<usize> {
        if now_ms < self.start_ms {
            return None;
        }
        let mut step_start = self.start_ms;
        for (i, step) in self.steps.iter().enumerate() {
            match step.hold_ms {
                Some(hold) if now_ms >= step_start.saturating_add(hold) => {
                    step_start = step_start.saturating_add(hold);
                }
                _ => return Some(i),
            }
        }
        self.steps.len().checked_sub(1)
    }

    /// The weights (basis points) at `now_ms`, and the step in force.
    pub fn weights_at(&self, base: &[u16], now_ms: i64) -> (Vec<u16>, Option<usize>) {
        let Some(step) = self.step_at(now_ms) else {
            return (base.to_vec(), None);
        };
        let canary = self.steps.get(step).map_or(0, |s| s.weight_bp);
        (share_rest(base, self.subset, canary), Some(step))
    }
}

/// `subset` gets `weight_bp`; the others share the rest in proportion to their
/// `base` weights (largest remainder, ties to the earlier subset), or all of it
/// goes to the first other subset when they have no weight at all.
pub fn share_rest(base: &[u16], subset: usize, weight_bp: u16) -> Vec<u16> {
    let rest = u64::from(BUCKETS.saturating_sub(weight_bp));
    let others: u64 = base
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != subset)
        .map(|(_, w)| u64::from(*w))
        .sum();
    let mut out: Vec<u16> = vec![0; base.len()];
    if let Some(w) = out.get_mut(subset) {
        *w = weight_bp;
    }
    if others == 0 {
        if let Some((i, _)) = base.iter().enumerate().find(|(i, _)| *i != subset) {
            if let Some(w) = out.get_mut(i) {
                *w = rest as u16;
            }
        }
        return out;
    }
    let mut remainders: Vec<(u64, usize)> = Vec::new();
    let mut given = 0u64;
    for (i, w) in base.iter().enumerate() {
        if i == subset {
            continue;
        }
        let exact = rest * u64::from(*w);
        let share = exact / others;
        given += share;
        remainders.push((exact % others, i));
        if let Some(o) = out.get_mut(i) {
            *o = share as u16;
        }
    }
    // Largest remainders first; on ties the earlier subset. Picked one by one
    // (at most 15 others) rather than sorted: a sort instance costs ~5 KiB of .wasm.
    for _ in 0..rest - given {
        let best = remainders
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(at, _)| at);
        let Some(at) = best else { break };
        let (_, i) = remainders.swap_remove(at);
        if let Some(o) = out.get_mut(i) {
            *o += 1;
        }
    }
    out
}

/// `30s`, `5m`, `2h` in milliseconds.
pub fn parse_hold(text: &str) -> Option<i64> {
    let unit = match text.as_bytes().last()? {
        b's' => 1_000,
        b'm' => 60_000,
        b'h' => 3_600_000,
        _ => return None,
    };
    let digits = text.get(..text.len() - 1)?;
    if digits.len() > 9 {
        return None;
    }
    decimal(digits)?.checked_mul(unit)
}

/// RFC 3339 (`2026-12-01T10:00:00Z`, optional fraction, `Z` or `±HH:MM`) to Unix
/// milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| decimal(text.get(from..from + len)?);
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        let digits = b
            .get(at + 1..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let frac = decimal(text.get(at + 1..at + 1 + digits.min(3))?)?;
        millis = match digits {
            1 => frac * 100,
            2 => frac * 10,
            _ => frac,
        };
        at += 1 + digits;
    }
    let offset_min = match text.get(at..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes().first(), Some(b'+' | b'-'))
            && tz.as_bytes().get(3) == Some(&b':') =>
        {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1_000 + millis)
}

/// A non-empty run of ASCII digits (at most 18) as a number.
fn decimal(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 {
        return None;
    }
    text.bytes().try_fold(0i64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Ramp {
        Ramp {
            subset: 1,
            start_ms: 1_000_000,
            steps: vec![
                RampStep {
                    weight_bp: 1000,
                    hold_ms: Some(5_000),
                },
                RampStep {
                    weight_bp: 5000,
                    hold_ms: Some(5_000),
                },
                RampStep {
                    weight_bp: 10000,
                    hold_ms: None,
                },
            ],
        }
    }

    #[test]
    fn schedule_edges() {
        let r = ramp();
        let base = [9500, 500];
        assert_eq!(
            r.weights_at(&base, 0),
            (vec![9500, 500], None),
            "far in the past"
        );
        assert_eq!(
            r.weights_at(&base, 999_999),
            (vec![9500, 500], None),
            "1 ms before start"
        );
        assert_eq!(
            r.weights_at(&base, 1_000_000),
            (vec![9000, 1000], Some(0)),
            "exactly at start"
        );
        assert_eq!(r.weights_at(&base, 1_004_999), (vec![9000, 1000], Some(0)));
        assert_eq!(
            r.weights_at(&base, 1_005_000),
            (vec![5000, 5000], Some(1)),
            "on a step boundary"
        );
        assert_eq!(r.weights_at(&base, 1_010_000), (vec![0, 10000], Some(2)));
        assert_eq!(
            r.weights_at(&base, i64::MAX),
            (vec![0, 10000], Some(2)),
            "far in the future"
        );
    }

    #[test]
    fn others_share_the_rest_in_proportion() {
        assert_eq!(
            share_rest(&[6000, 3000, 1000], 2, 4000),
            vec![4000, 2000, 4000]
        );
        // Rounding: the sum is always exactly 10,000.
        let w = share_rest(&[3333, 3333, 3334], 2, 1);
        assert_eq!(
            w.iter().map(|&x| u32::from(x)).sum::<u32>(),
            10_000,
            "{w:?}"
        );
        assert_eq!(w[2], 1);
        // No weight elsewhere: the rest goes to the first other subset.
        assert_eq!(share_rest(&[0, 0, 10000], 2, 2500), vec![7500, 0, 2500]);
    }

    /// The largest-remainder shares as first written, with a sort.
    fn share_rest_sorted(base: &[u16], subset: usize, weight_bp: u16) -> Vec<u16> {
        let rest = u64::from(BUCKETS.saturating_sub(weight_bp));
        let others: u64 = base
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != subset)
            .map(|(_, w)| u64::from(*w))
            .sum();
        if others == 0 {
            return share_rest(base, subset, weight_bp);
        }
        let mut out = vec![0u16; base.len()];
        out[subset] = weight_bp;
        let mut remainders = Vec::new();
        let mut given = 0;
        for (i, w) in base.iter().enumerate().filter(|(i, _)| *i != subset) {
            let exact = rest * u64::from(*w);
            given += exact / others;
            out[i] = (exact / others) as u16;
            remainders.push((exact % others, i));
        }
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, i) in remainders.into_iter().take((rest - given) as usize) {
            out[i] += 1;
        }
        out
    }

    #[test]
    fn remainders_go_where_a_sort_would_send_them() {
        let mut rng = crate::rng::SplitMix64::new(7);
        for _ in 0..20_000 {
            let n = 2 + (rng.next_u64() % 15) as usize;
            let mut base: Vec<u16> = (0..n).map(|_| (rng.next_u64() % 50) as u16).collect();
            // Many ties: small weights, often equal.
            let sum: u64 = base.iter().map(|&w| u64::from(w)).sum();
            if sum == 0 {
                continue;
            }
            let mut left = 10_000u64;
            for w in base.iter_mut() {
                *w = (u64::from(*w) * 10_000 / sum) as u16;
                left -= u64::from(*w);
            }
            base[0] += left as u16;
            let subset = (rng.next_u64() % n as u64) as usize;
            let weight = (rng.next_u64() % 10_001) as u16;
            assert_eq!(
                share_rest(&base, subset, weight),
                share_rest_sorted(&base, subset, weight),
                "{base:?} {subset} {weight}"
            );
        }
    }

    #[test]
    fn holds_and_times_parse() {
        assert_eq!(parse_hold("30s"), Some(30_000));
        assert_eq!(parse_hold("5m"), Some(300_000));
        assert_eq!(parse_hold("2h"), Some(7_200_000));
        for bad in ["", "s", "5", "5d", "-5m", "1.5m", "5 m", "9999999999h"] {
            assert_eq!(parse_hold(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-12-01T10:00:00Z"),
            Some(1_796_119_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T11:00:00+01:00"),
            Some(1_796_119_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T10:00:00.250Z"),
            Some(1_796_119_200_250)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:00:00",
            "2026-12-01 10:00:00Z",
            "2026-12-01T10:00:00+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
