#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! No client picks its subset: a client-sent x-canary-subset (any case, sent
//! twice) is replaced by the filter's decision before the route is chosen.
//! Run WITHOUT envoy.yaml's early header strip, as in Istio: the client's header
//! first selects the v2 route, and only the filter's write (and Envoy's route
//! re-pick under ABI 0.2.1) sends the request to v1.

mod common;

use common::*;
use serde_json::json;

#[test]
fn a_client_cannot_force_the_canary() {
    let config = json!({
        "subsets": [ {"name": "v1", "weight": 100}, {"name": "v2", "weight": 0} ],
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": "spoof" },
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}}
        ]
    });
    let mut envoy = Envoy::start(&config.to_string(), Opts::default().without_early_strip());
    let attempts: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-canary-subset", "v2")],
        vec![("X-Canary-Subset", "v2")],
        vec![("X-CANARY-SUBSET", "v2")],
        vec![("x-canary-subset", "v2"), ("x-canary-subset", "v2")],
        vec![("x-canary-subset", "v1"), ("X-Canary-Subset", "v2")],
        vec![("x-canary-subset", "v2"), ("x-user-id", "mallory")],
        vec![("x-canary-subset", "v2"), ("cookie", "x-canary-subset=v2")],
        vec![("x-canary-subset", "")],
    ];
    for a in &attempts {
        for conn in ["keep-alive", "new"] {
            let r = if conn == "new" {
                envoy.get_new_conn("/", &h(a))
            } else {
                envoy.get("/", &h(a))
            };
            assert_eq!(
                (r.status, r.served_by(), r.seen_subset()),
                (200, "v1".to_string(), "v1".to_string()),
                "client sent {a:?} ({conn} connection)"
            );
        }
        let d = envoy.decide("/", &h(a));
        assert_eq!(d.subset, "v1", "counted for v1: {a:?}");
    }
    // When the filter does choose v2 (a rule), a client-sent v1 does not win
    // either, and the upstream sees exactly the filter's value.
    for a in [
        vec![("x-canary", "always"), ("x-canary-subset", "v1")],
        vec![
            ("x-canary-subset", "v1"),
            ("x-canary", "always"),
            ("x-canary-subset", "v1"),
        ],
    ] {
        let r = envoy.get("/", &h(&a));
        assert_eq!(
            (r.status, r.served_by(), r.seen_subset()),
            (200, "v2".to_string(), "v2".to_string()),
            "client sent {a:?}"
        );
    }
}

#[test]
fn metrics_prefix_names_the_counters() {
    let config = json!({
        "subsets": [ {"name": "v1", "weight": 100}, {"name": "v2", "weight": 0} ],
        "metrics_prefix": "other"
    });
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());
    for _ in 0..10 {
        let r = envoy.get("/", &h(&[("x-canary-subset", "v2")]));
        assert_eq!((r.served_by(), r.seen_subset()), ("v1".into(), "v1".into()));
    }
    let stats = envoy.wasm_stats();
    assert_eq!(stats[&requests_counter("other", "v1", "random")], 10);
    assert_eq!(stats[&responses_counter("other", "v1", "2xx")], 10);
    assert!(
        !stats
            .keys()
            .any(|k| k.starts_with(&format!("{}canary.", stats_prefix()))),
        "metrics_prefix \"other\" replaces \"canary\": {stats:?}"
    );
    // The shipped stats tags label any prefix.
    let prom = envoy.prometheus();
    assert!(
        prom.lines()
            .any(|l| l == "other_requests{subset=\"v1\",reason=\"random\"} 10"),
        "{prom}"
    );
}
