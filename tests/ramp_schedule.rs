//! The in-proxy ramp in a real Envoy, on an accelerated schedule: the measured
//! canary share follows 10 -> 50 -> 100 %, never early, every key that reached
//! the canary stays there, and the weight gauge and the decision header show
//! the step.
//!
//! Timing-proof on a loaded machine: the schedule is pushed by ECDS once Envoy
//! is ready, each response is attributed to the step its decision header names
//! (not to when the test thought it was sent), steps hold 8 s so a full pass
//! over the keys fits in each, and the only time limits are lower bounds (a step
//! never starts early) and generous upper ones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

const KEYS: usize = 2_000;

/// RFC 3339 (UTC, milliseconds) for a Unix time in milliseconds.
fn rfc3339(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One pass over the keys: per key, the step the decision header names and
/// whether v2 served it, with the time the response arrived.
fn pass(envoy: &mut Envoy) -> Vec<(usize, String, bool, u128)> {
    (0..KEYS)
        .map(|i| {
            let key = format!("user-{i}");
            let r = envoy.get("/", &[("x-user-id", key.as_bytes())]);
            assert_eq!(r.status, 200);
            let decision = r.header("x-canary-decision").unwrap();
            let step = decision
                .split("; ")
                .find_map(|f| f.strip_prefix("step="))
                .unwrap_or("none")
                .to_owned();
            (i, step, r.served_by() == "v2", now_ms())
        })
        .collect()
}

const HOLD_MS: u128 = 8_000;

#[test]
fn a_ramp_moves_the_canary_share_on_schedule_and_keys_never_leave() {
    let base = json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": "ramp-schedule"},
        "decision_header": "x-canary-decision",
    });
    let dir = std::env::temp_dir().join(format!("canary-ramp-{}", std::process::id()));
    let mut envoy = Envoy::start(&base.to_string(), Opts::default().ecds(dir.clone()));
    let gauge = |envoy: &Envoy| envoy.stats().get(&weight_gauge("canary", "v2")).copied();

    // Before any ramp: the configured 0 %.
    let before = pass(&mut envoy);
    assert!(before.iter().all(|(_, step, v2, _)| step == "none" && !v2));
    assert_eq!(gauge(&envoy), Some(0));

    // The schedule, pushed now that Envoy serves: 10 % and 50 % for 8 s each,
    // then 100 %.
    let start = now_ms() + 1_000;
    let mut config = base.clone();
    config["ramp"] = json!({"subset": "v2", "start": rfc3339(start),
        "steps": [{"weight": 10, "hold": "8s"}, {"weight": 50, "hold": "8s"}, {"weight": 100}]});
    write_ecds(&dir, &config.to_string());

    // Passes until one whole pass is in the last step.
    let mut seen: Vec<(usize, String, bool, u128)> = Vec::new();
    let t0 = now_ms();
    loop {
        let p = pass(&mut envoy);
        let done = p.iter().all(|(_, step, _, _)| step == "3");
        seen.extend(p);
        if done {
            break;
        }
        assert!(
            now_ms() - t0 < 120_000,
            "the ramp did not reach its last step in 2 minutes"
        );
    }

    // Per step: every key seen in it, at the share of that step.
    let mut previous: BTreeSet<usize> = BTreeSet::new();
    for (step, share, begins) in [
        ("1", 10.0, start),
        ("2", 50.0, start + HOLD_MS),
        ("3", 100.0, start + 2 * HOLD_MS),
    ] {
        let in_step: Vec<_> = seen.iter().filter(|(_, s, _, _)| s == step).collect();
        // Never early: the filter reads the same clock as the test.
        let first = in_step.iter().map(|(_, _, _, at)| *at).min().unwrap();
        assert!(
            first >= begins,
            "step {step} answered {} ms early",
            begins - first
        );
        let keys: BTreeSet<usize> = in_step.iter().map(|(k, _, _, _)| *k).collect();
        assert_eq!(keys.len(), KEYS, "step {step}: every key sampled");
        // The last answer per key in this step.
        let mut last = std::collections::BTreeMap::new();
        for (k, _, v2, _) in &in_step {
            last.insert(*k, *v2);
        }
        let on_v2: BTreeSet<usize> = last
            .iter()
            .filter(|(_, v2)| **v2)
            .map(|(k, _)| *k)
            .collect();
        let pct = on_v2.len() as f64 * 100.0 / KEYS as f64;
        assert!(
            (pct - share).abs() <= 2.0,
            "step {step}: {pct:.1} % on v2, want {share} ± 2"
        );
        let left: Vec<_> = previous.difference(&on_v2).collect();
        assert!(
            left.is_empty(),
            "keys left the canary at step {step}: {left:?}"
        );
        previous = on_v2;
    }
    // Within a step a key never flips back either: once on v2, always on v2.
    let mut on_v2_since: std::collections::BTreeMap<usize, u128> =
        std::collections::BTreeMap::new();
    for (k, _, v2, at) in &seen {
        match (on_v2_since.get(k), v2) {
            (Some(since), false) => panic!("key {k} on v2 since {since} went back to v1 at {at}"),
            (None, true) => {
                on_v2_since.insert(*k, *at);
            }
            _ => {}
        }
    }
    assert_eq!(
        gauge(&envoy),
        Some(10_000),
        "weight_bp gauge at the last step"
    );
    // The labelled gauge in Prometheus.
    assert!(envoy
        .prometheus()
        .lines()
        .any(|l| l == "canary_weight_bp{subset=\"v2\"} 10000"));
    let _ = std::fs::remove_dir_all(&dir);
}
