#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Sticky hashing against the weights: accuracy over many distinct keys, and the
//! exact extremes 0/100 and 100/0.

mod common;

use std::collections::BTreeMap;

use common::*;

/// The subset of each key (`x-user-id`), over `threads` keep-alive connections.
fn subsets_of(envoy: &Envoy, keys: &[String], threads: usize) -> Vec<String> {
    let chunk = keys.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                let mut client = envoy.client();
                s.spawn(move || {
                    part.iter()
                        .map(|k| routed_subset(&client.get("/", &[("x-user-id", k.as_bytes())])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn count(subsets: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in subsets {
        *m.entry(s.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn ninety_ten_lands_within_one_point_of_ten_percent_on_v2() {
    let envoy = Envoy::start(
        &weights_config(90.0, 10.0, "weights-accuracy").to_string(),
        Opts::default(),
    );
    let n = 20_000;
    let keys: Vec<String> = (0..n).map(|i| format!("user-{i:05}")).collect();
    let subsets = subsets_of(&envoy, &keys, 2);
    let counts = count(&subsets);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    let v1 = counts.get("v1").copied().unwrap_or(0);
    assert_eq!(v1 + v2, n, "only v1 and v2 exist: {counts:?}");
    let share = v2 as f64 * 100.0 / n as f64;
    assert!(
        (share - 10.0).abs() <= 1.0,
        "v2 share {share:.2} % of {n} keys, want 10 ± 1 ({counts:?})"
    );
    // Each of these was decided by hash.
    let stats = envoy.wasm_stats();
    assert_eq!(
        stats[&requests_counter("canary", "v2", "hash")],
        v2 as u64,
        "hash-decided v2 requests"
    );
    assert_eq!(stats[&requests_counter("canary", "v1", "hash")], v1 as u64);
}

#[test]
fn zero_and_hundred_put_everything_on_one_side() {
    for (v1, v2, want) in [(0.0, 100.0, "v2"), (100.0, 0.0, "v1")] {
        let mut envoy = Envoy::start(
            &weights_config(v1, v2, "weights-extremes").to_string(),
            Opts::default(),
        );
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let counts = count(&subsets_of(&envoy, &keys, 2));
        assert_eq!(
            counts,
            BTreeMap::from([(want.to_string(), keys.len())]),
            "{v1}/{v2}, keyed requests"
        );
        // Without a key: random by weight, still all on one side.
        let mut keyless = Vec::new();
        for _ in 0..300 {
            keyless.push(routed_subset(&envoy.get("/", &[])));
        }
        assert_eq!(
            count(&keyless),
            BTreeMap::from([(want.to_string(), 300)]),
            "{v1}/{v2}, requests without a key"
        );
        let stats = envoy.wasm_stats();
        assert_eq!(stats[&requests_counter("canary", want, "random")], 300);
        assert_eq!(
            stats[&requests_counter("canary", want, "hash")],
            keys.len() as u64
        );
    }
}

#[test]
fn fractional_weights_and_three_subsets() {
    // 0.01 % granularity and more than two subsets (v3 has no cluster of its
    // own; the route table sends it to v1, the upstream still sees "v3").
    let config = serde_json::json!({
        "subsets": [
            {"name": "v1", "weight": 49.5},
            {"name": "v2", "weight": 0.25},
            {"name": "v3", "weight": 50.25}
        ],
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": "fractions" }
    });
    let envoy = Envoy::start(&config.to_string(), Opts::default());
    let n = 20_000;
    let keys: Vec<String> = (0..n).map(|i| format!("frac-{i}")).collect();
    let counts = count(&subsets_of(&envoy, &keys, 2));
    let share = |s: &str| counts.get(s).copied().unwrap_or(0) as f64 * 100.0 / n as f64;
    assert!((share("v1") - 49.5).abs() <= 1.5, "{counts:?}");
    assert!((share("v3") - 50.25).abs() <= 1.5, "{counts:?}");
    assert!(share("v2") > 0.0 && share("v2") <= 0.6, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), n);
}

/// The crate's XXH64 (checked against the published reference vectors in
/// src/hash.rs): the filter in Envoy must put every key exactly where the
/// documented formula `xxh64(key, xxh64(seed, 0)) % 10000` says.
use canary_router::hash::xxh64;

#[test]
fn buckets_follow_the_documented_hash() {
    let seed = "api-2026-11";
    // Basis points: 33.33 % / 0.07 % / 66.60 %.
    let config = serde_json::json!({
        "subsets": [
            {"name": "v1", "weight": 33.33},
            {"name": "v2", "weight": 0.07},
            {"name": "v3", "weight": 66.6}
        ],
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": seed }
    });
    let envoy = Envoy::start(&config.to_string(), Opts::default());
    let seed_hash = xxh64(seed.as_bytes(), 0);
    let expected = |key: &str| -> &'static str {
        match xxh64(key.as_bytes(), seed_hash) % 10_000 {
            0..3333 => "v1",
            3333..3340 => "v2",
            _ => "v3",
        }
    };
    // Short and long keys (XXH64 has a separate path from 32 bytes on).
    let mut keys: Vec<String> = (0..3000).map(|i| format!("u{i}")).collect();
    keys.extend((0..1000).map(|i| format!("a-much-longer-user-key-{i:08}@example.com")));
    let got = subsets_of(&envoy, &keys, 2);
    let mismatches: Vec<String> = keys
        .iter()
        .zip(&got)
        .filter(|(k, g)| expected(k) != g.as_str())
        .map(|(k, g)| format!("{k}: want {}, got {g}", expected(k)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} keys not in their documented bucket range, e.g. {:?}",
        mismatches.len(),
        keys.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert!(
        got.iter().any(|g| g == "v2"),
        "0.07 % of 4000 keys: a few on v2"
    );
}

#[test]
fn requests_without_a_key_are_random_by_weight_and_not_replayed() {
    let config = weights_config(80.0, 20.0, "random").to_string();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let envoy = Envoy::start(&config, Opts::default());
        let mut client = envoy.client();
        let seq: Vec<String> = (0..2000)
            .map(|_| routed_subset(&client.get("/", &[])))
            .collect();
        let v2 = seq.iter().filter(|s| *s == "v2").count();
        // 20 % of 2000 = 400, sd ~18: allow 4 sd.
        assert!(
            (328..=472).contains(&v2),
            "{v2} of 2000 keyless requests on v2"
        );
        let stats = envoy.wasm_stats();
        assert_eq!(
            stats[&requests_counter("canary", "v2", "random")],
            v2 as u64
        );
        runs.push(seq);
    }
    // Never a fixed seed: two starts do not replay the same choices.
    assert_ne!(
        runs[0], runs[1],
        "two Envoy starts made identical random choices"
    );
}
