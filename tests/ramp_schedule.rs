//! The in-proxy ramp in a real Envoy, on an accelerated schedule (2 s holds):
//! the measured canary share follows 10 -> 50 -> 100 % on time, every key that
//! reached the canary stays there, and the weight gauge and the decision header
//! show the step.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Keys on v2 now, and the step the decision header names.
fn sample(envoy: &mut Envoy) -> (BTreeSet<usize>, BTreeSet<String>) {
    let mut on_v2 = BTreeSet::new();
    let mut steps = BTreeSet::new();
    for i in 0..KEYS {
        let key = format!("user-{i}");
        let r = envoy.get("/", &[("x-user-id", key.as_bytes())]);
        assert_eq!(r.status, 200);
        if r.served_by() == "v2" {
            on_v2.insert(i);
        }
        let decision = r.header("x-canary-decision").unwrap();
        steps.insert(
            decision
                .split("; ")
                .find_map(|f| f.strip_prefix("step="))
                .unwrap_or("none")
                .to_owned(),
        );
    }
    (on_v2, steps)
}

#[test]
fn a_ramp_moves_the_canary_share_on_schedule_and_keys_never_leave() {
    // Steps start 3 s after the config is written: 10 % for 2 s, 50 % for 2 s,
    // then 100 %; each sample starts 0.7 s into its step (the filter re-reads
    // the clock every 250 ms) and takes about 0.5 s.
    let start = now_ms() + 3_000;
    let config = json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": "ramp-schedule"},
        "decision_header": "x-canary-decision",
        "ramp": {"subset": "v2", "start": rfc3339(start),
                 "steps": [{"weight": 10, "hold": "2s"}, {"weight": 50, "hold": "2s"}, {"weight": 100}]},
    });
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());
    let wait_until = |at: u128| {
        let now = now_ms();
        if at > now {
            std::thread::sleep(Duration::from_millis((at - now) as u64));
        }
    };
    let gauge = |envoy: &Envoy| envoy.stats().get(&weight_gauge("canary", "v2")).copied();

    let (before, steps) = sample(&mut envoy);
    assert!(
        now_ms() < start,
        "the first sample must finish before the start"
    );
    assert!(
        before.is_empty(),
        "before start: the configured 0 % ({} keys on v2)",
        before.len()
    );
    assert_eq!(steps, BTreeSet::from(["none".to_owned()]));
    assert_eq!(gauge(&envoy), Some(0));

    let mut previous = before;
    for (i, (at, share, step)) in [
        (start + 700, 10.0, "1"),
        (start + 2_700, 50.0, "2"),
        (start + 4_700, 100.0, "3"),
    ]
    .into_iter()
    .enumerate()
    {
        wait_until(at);
        let (on_v2, steps) = sample(&mut envoy);
        assert!(now_ms() < at + 1_300, "the sample must end inside its step");
        let pct = on_v2.len() as f64 * 100.0 / KEYS as f64;
        assert!(
            (pct - share).abs() <= 2.0,
            "step {}: {pct:.1} % on v2, want {share} ± 2",
            i + 1
        );
        assert_eq!(
            steps,
            BTreeSet::from([step.to_owned()]),
            "decision header step"
        );
        assert_eq!(
            gauge(&envoy),
            Some((share * 100.0) as u64),
            "weight_bp gauge"
        );
        let left: Vec<_> = previous.difference(&on_v2).collect();
        assert!(
            left.is_empty(),
            "keys left the canary at step {}: {left:?}",
            i + 1
        );
        previous = on_v2;
    }
    // The labelled gauge in Prometheus.
    assert!(envoy
        .prometheus()
        .lines()
        .any(|l| l == "canary_weight_bp{subset=\"v2\"} 10000"));
}
