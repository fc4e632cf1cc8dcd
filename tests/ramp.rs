#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Ramping the canary only moves users into it; changing the seed reshuffles.

mod common;

use std::collections::BTreeSet;

use common::*;

const KEYS: usize = 6000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("ramp-user-{i}")).collect()
}

/// Start an Envoy with `config` and return the keys it puts on v2.
fn v2_set(config: &serde_json::Value, keys: &[String]) -> BTreeSet<String> {
    let envoy = Envoy::start(&config.to_string(), Opts::default());
    let half = keys.len().div_ceil(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(half)
            .map(|part| {
                let mut client = envoy.client();
                s.spawn(move || {
                    part.iter()
                        .filter(|k| {
                            routed_subset(&client.get("/", &[("x-user-id", k.as_bytes())])) == "v2"
                        })
                        .cloned()
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

#[test]
fn raising_the_canary_weight_only_moves_users_into_it() {
    let keys = keys();
    let seed = "api-2026-11";
    let at10 = v2_set(&weights_config(90.0, 10.0, seed), &keys);
    let at50 = v2_set(&weights_config(50.0, 50.0, seed), &keys);
    let at100 = v2_set(&weights_config(0.0, 100.0, seed), &keys);
    let pct = |s: &BTreeSet<String>| s.len() as f64 * 100.0 / KEYS as f64;
    assert!(
        (pct(&at10) - 10.0).abs() <= 1.5,
        "at 10: {:.2} %",
        pct(&at10)
    );
    assert!(
        (pct(&at50) - 50.0).abs() <= 2.0,
        "at 50: {:.2} %",
        pct(&at50)
    );
    assert_eq!(at100.len(), KEYS, "at 100 every key is on v2");
    let left_at50: Vec<&String> = at10.difference(&at50).collect();
    assert!(
        left_at50.is_empty(),
        "{} v2 users at 10 % are not on v2 at 50 %, e.g. {:?}",
        left_at50.len(),
        left_at50.iter().take(5).collect::<Vec<_>>()
    );
    assert!(at50.is_subset(&at100));
}

#[test]
fn changing_the_seed_reshuffles_users() {
    let keys = keys();
    let a = v2_set(&weights_config(80.0, 20.0, "seed-a"), &keys);
    let b = v2_set(&weights_config(80.0, 20.0, "seed-b"), &keys);
    for s in [&a, &b] {
        let pct = s.len() as f64 * 100.0 / KEYS as f64;
        assert!((pct - 20.0).abs() <= 1.5, "v2 share {pct:.2} %");
    }
    // Independent shuffles share about 20 % of their v2 users; the same
    // shuffle would share all of them.
    let common = a.intersection(&b).count();
    let smaller = a.len().min(b.len());
    assert!(
        common * 100 <= smaller * 35,
        "seeds a and b share {common} of {smaller} v2 users: not reshuffled"
    );
    // And the same seed again gives the same set.
    let a_again = v2_set(&weights_config(80.0, 20.0, "seed-a"), &keys);
    assert_eq!(a, a_again, "same seed, same users");
}
