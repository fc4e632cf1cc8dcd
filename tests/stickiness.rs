#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The same key gets the same subset: on every repeat, after a restart, on both
//! workers; the first present key source wins, and the bucket depends on the key
//! value and the seed only.

mod common;

use std::collections::BTreeMap;

use common::*;

fn keyed(key: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![("x-user-id", key.as_bytes().to_vec())]
}

fn get_subset(envoy: &mut Envoy, headers: &[(&'static str, Vec<u8>)]) -> String {
    let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    routed_subset(&envoy.get("/", &hs))
}

#[test]
fn same_key_same_subset_on_every_repeat_and_after_a_restart() {
    let mut envoy = Envoy::start(
        &weights_config(50.0, 50.0, "sticky-restart").to_string(),
        Opts::default(),
    );
    let keys: Vec<String> = (0..400).map(|i| format!("sticky-{i}")).collect();
    let first: BTreeMap<String, String> = keys
        .iter()
        .map(|k| (k.clone(), get_subset(&mut envoy, &keyed(k))))
        .collect();
    let v2 = first.values().filter(|s| *s == "v2").count();
    assert!(
        (120..=280).contains(&v2),
        "50/50 must put keys on both sides: {v2} of 400 on v2"
    );
    for round in 0..3 {
        for k in &keys {
            assert_eq!(
                get_subset(&mut envoy, &keyed(k)),
                first[k],
                "key {k}, repeat {round}"
            );
        }
    }
    envoy.restart();
    for k in &keys {
        assert_eq!(
            get_subset(&mut envoy, &keyed(k)),
            first[k],
            "key {k} after a restart"
        );
    }
}

#[test]
fn same_key_same_subset_on_both_workers() {
    let envoy = Envoy::start(
        &weights_config(50.0, 50.0, "sticky-workers").to_string(),
        Opts::default().concurrency(2),
    );
    let listener = format!("listener.0.0.0.0_{}", envoy.ports.listener);
    let keys: Vec<String> = (0..120).map(|i| format!("worker-key-{i}")).collect();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // A new connection per request: the kernel spreads them over both workers.
    for round in 0..8 {
        for k in &keys {
            let r = envoy.get_new_conn("/", &[("x-user-id", k.as_bytes())]);
            seen.entry(k.clone())
                .or_default()
                .push(format!("{} (round {round})", routed_subset(&r)));
        }
    }
    for (k, subsets) in &seen {
        let distinct: std::collections::BTreeSet<&str> = subsets
            .iter()
            .map(|s| s.split(' ').next().unwrap())
            .collect();
        assert_eq!(distinct.len(), 1, "key {k} moved: {subsets:?}");
    }
    let stats = envoy.stats();
    let cx = |w: u32| {
        stats
            .get(&format!("{listener}.worker_{w}.downstream_cx_total"))
            .copied()
            .unwrap_or_else(|| panic!("no per-worker stat for {listener} worker_{w}"))
    };
    let (w0, w1) = (cx(0), cx(1));
    let total = (keys.len() * 8) as u64;
    assert_eq!(w0 + w1, total, "every request on its own connection");
    // Both workers served a real share of the connections, so most keys were
    // decided on both.
    assert!(
        w0 >= total / 10 && w1 >= total / 10,
        "connections per worker: {w0} and {w1}"
    );
}

#[test]
fn first_present_key_source_wins_and_the_bucket_depends_on_the_value_only() {
    let config = serde_json::json!({
        "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
        "sticky": {
            "keys": [ {"cookie": "session_id"}, {"header": "x-user-id"} ],
            "seed": "sticky-sources"
        }
    });
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());
    let keys: Vec<String> = (0..60).map(|i| format!("src-{i}")).collect();
    let by_header: BTreeMap<&str, String> = keys
        .iter()
        .map(|k| (k.as_str(), get_subset(&mut envoy, &keyed(k))))
        .collect();
    let on = |s: &str| -> Vec<&str> {
        by_header
            .iter()
            .filter(|(_, v)| *v == s)
            .map(|(k, _)| *k)
            .collect()
    };
    let (on_v1, on_v2) = (on("v1"), on("v2"));
    assert!(on_v1.len() >= 5 && on_v2.len() >= 5, "{by_header:?}");
    // The same value from the cookie lands where it lands from the header.
    for k in &keys {
        let cookie = format!("theme=dark; session_id={k}; lang=en");
        let d = envoy.decide("/", &h(&[("cookie", &cookie)]));
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str()),
            (by_header[k.as_str()].as_str(), "hash"),
            "cookie {k}"
        );
    }
    // Cookie (listed first) beats the header, whichever side each is on.
    for (a, b) in on_v1.iter().zip(&on_v2) {
        for (cookie_key, header_key) in [(a, b), (b, a)] {
            let cookie = format!("session_id={cookie_key}");
            let d = envoy.decide("/", &h(&[("cookie", &cookie), ("x-user-id", header_key)]));
            assert_eq!(
                d.subset, by_header[*cookie_key],
                "cookie {cookie_key} + header {header_key}"
            );
        }
    }
    // An empty cookie value counts as absent: the header decides.
    for k in on_v2.iter().take(5) {
        let d = envoy.decide("/", &h(&[("cookie", "session_id="), ("x-user-id", k)]));
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str()),
            ("v2", "hash"),
            "empty cookie, header {k}"
        );
    }
}
