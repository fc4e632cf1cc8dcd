#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Shadow mode: every decision is made and counted as in enforce mode, but under
//! `<prefix>.shadow.subset.<s>.reason.<r>.requests`, and the routing header is
//! not set: the route table's default (v1) serves everything, a client-sent
//! routing header is still removed, no pin cookie is set, the normal request
//! and response counters stay 0, rule counters still count, and the decision
//! header says `mode=shadow`. The shipped stats tags label the shadow counters.

mod common;

use std::collections::BTreeMap;

use canary_router::hash::xxh64;
use common::pin::*;
use common::*;
use serde_json::json;

const SEED: &str = "shadow-2026";

fn shadow_config() -> String {
    json!({
        "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
        "sticky": {
            "keys": [ {"header": "x-user-id"}, {"cookie": "session_id"} ],
            "seed": SEED,
            "pin_cookie": pin_cookie_config()
        },
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "beta", "subset": "v2", "match": {"cookie": {"name": "beta", "exact": "true"}}},
            {"name": "legacy", "subset": "v1", "match": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}}
        ],
        "decision_header": DECISION,
        "mode": "shadow"
    })
    .to_string()
}

/// What a planned request must be decided as.
#[derive(Debug, Clone)]
enum Want {
    Rule(&'static str, &'static str),
    /// key source as the decision header writes it, key value
    Hash(&'static str, String),
    Random,
    /// a well-formed pin cookie (a visitor pinned while the filter enforced)
    Pinned(String),
}

/// Request headers and what the request must be decided as.
type Planned = (Vec<(String, String)>, Want);

fn plan() -> Vec<Planned> {
    let mut p: Vec<Planned> = Vec::new();
    let spoof = |i: usize| -> Vec<(String, String)> {
        match i % 3 {
            0 => vec![("x-canary-subset".into(), "v2".into())],
            1 => vec![("X-Canary-Subset".into(), "v2".into())],
            _ => vec![],
        }
    };
    for i in 0..30 {
        let mut hs = vec![("x-canary".into(), "always".into())];
        if i % 2 == 0 {
            hs.push(("x-user-id".into(), format!("rule-user-{i}")));
        }
        hs.extend(spoof(i));
        p.push((hs, Want::Rule("qa", "v2")));
    }
    for i in 0..20 {
        let mut hs = vec![("cookie".into(), "theme=dark; beta=true".into())];
        hs.extend(spoof(i));
        p.push((hs, Want::Rule("beta", "v2")));
    }
    for i in 0..20 {
        let mut hs = vec![("user-agent".into(), format!("LegacyApp/{i}.0"))];
        hs.extend(spoof(i));
        p.push((hs, Want::Rule("legacy", "v1")));
    }
    for i in 0..100 {
        let user = format!("shadow-user-{i}");
        let mut hs = vec![("x-user-id".into(), user.clone())];
        hs.extend(spoof(i));
        p.push((hs, Want::Hash("header:x-user-id", user)));
    }
    for i in 0..30 {
        let session = format!("shadow-session-{i}");
        let mut hs = vec![("cookie".into(), format!("session_id={session}; lang=en"))];
        hs.extend(spoof(i));
        p.push((hs, Want::Hash("cookie:session_id", session)));
    }
    for i in 0..80 {
        p.push((spoof(i), Want::Random));
    }
    for i in 0..20u64 {
        let id = format!(
            "{:016x}{:016x}",
            xxh64(&i.to_le_bytes(), 1),
            xxh64(&i.to_le_bytes(), 2)
        );
        let mut hs = vec![("cookie".into(), pin_cookie(&id))];
        hs.extend(spoof(i as usize));
        p.push((hs, Want::Pinned(id)));
    }
    // A fixed interleaving of the kinds.
    let mut keyed: Vec<(u64, Planned)> = p
        .into_iter()
        .enumerate()
        .map(|(i, x)| (xxh64(&(i as u64).to_le_bytes(), 7), x))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, x)| x).collect()
}

#[test]
fn shadow_mode_counts_every_decision_and_the_route_table_serves() {
    let envoy = Envoy::start(&shadow_config(), Opts::default().without_early_strip());
    let mut client = envoy.client();
    let plan = plan();
    let total = plan.len() as u64;
    let mut tally = Tally::new();
    let mut rules: BTreeMap<&str, u64> = BTreeMap::new();
    for (n, (headers, want)) in plan.iter().enumerate() {
        let hs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let r = client.get("/", &hs);
        let what = format!("request {n} {headers:?} ({want:?})");
        assert_eq!(
            (r.status, r.served_by(), r.seen_subset()),
            (200, "v1".to_string(), String::new()),
            "{what}: the route table's default serves, with no routing header"
        );
        assert_eq!(
            r.header_all("set-cookie"),
            vec!["served_by=v1; Path=/".to_string()],
            "{what}: no pin cookie in shadow mode"
        );
        let decision = decision_of(&r);
        match want {
            Want::Rule(rule, subset) => {
                assert_eq!(
                    decision,
                    format!("subset={subset}; reason=rule; rule={rule}; mode=shadow"),
                    "{what}"
                );
                tally_add(&mut tally, subset, "rule");
                *rules.entry(rule).or_default() += 1;
            }
            Want::Hash(key, value) => {
                let (b, subset) = predict(value, SEED, 50.0);
                assert_eq!(
                    decision,
                    format!("subset={subset}; reason=hash; key={key}; bucket={b}; mode=shadow"),
                    "{what}"
                );
                tally_add(&mut tally, &subset, "hash");
            }
            Want::Random => {
                let (subset, b) = parse_random_decision(&decision, false, true);
                assert_eq!(
                    subset,
                    subset_of_bucket(b, &[("v1", 50.0), ("v2", 50.0)]),
                    "{what}: {decision}"
                );
                tally_add(&mut tally, &subset, "random");
            }
            Want::Pinned(id) => {
                // Decided as in enforce mode (by the pin), only not routed.
                let (b, subset) = predict(id, SEED, 50.0);
                assert_eq!(
                    decision,
                    format!("subset={subset}; reason=pin; key=pin; bucket={b}; mode=shadow"),
                    "{what}"
                );
                tally_add(&mut tally, &subset, "pin");
            }
        }
    }
    drop(client);
    assert!(
        tally.contains_key(&("v2".into(), "hash".into()))
            && tally.contains_key(&("v1".into(), "hash".into()))
            && tally.contains_key(&("v2".into(), "random".into())),
        "decisions for v2 that v1 served: {tally:?}"
    );

    let stats = envoy.wasm_stats();
    let mut want_nonzero: BTreeMap<String, u64> = BTreeMap::new();
    for s in ["v1", "v2"] {
        for r in ["rule", "hash", "random", "pin", "fallback"] {
            let name = shadow_requests_counter("canary", s, r);
            let n = tally
                .get(&(s.to_string(), r.to_string()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                stats.get(&name).copied(),
                Some(n),
                "{name}: defined, and equal to the decisions"
            );
            if n > 0 {
                want_nonzero.insert(name, n);
            }
        }
    }
    for (rule, n) in &rules {
        want_nonzero.insert(rule_counter("canary", rule), *n);
    }
    let nonzero: BTreeMap<String, u64> = stats
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        nonzero, want_nonzero,
        "only the shadow and rule counters move: no normal requests or responses counter"
    );
    let shadow_sum: u64 = stats
        .iter()
        .filter(|(k, _)| parse_shadow_requests_name(k).is_some())
        .map(|(_, v)| v)
        .sum();
    assert_eq!(shadow_sum, total, "one shadow decision per request");
    let all = envoy.stats();
    assert_eq!(all["cluster.v1.upstream_rq_total"], total);
    assert_eq!(
        all.get("cluster.v2.upstream_rq_total")
            .copied()
            .unwrap_or(0),
        0
    );

    // /stats/prometheus: canary_shadow_requests{subset, reason}, the same numbers.
    let text = envoy.prometheus();
    let prom = parse_prometheus(&text);
    for s in ["v1", "v2"] {
        for r in ["rule", "hash", "random", "pin", "fallback"] {
            let want: BTreeMap<String, String> = [
                ("subset".to_string(), s.to_string()),
                ("reason".to_string(), r.to_string()),
            ]
            .into();
            let hits: Vec<f64> = prom
                .iter()
                .filter(|(n, l, _)| n == "canary_shadow_requests" && *l == want)
                .map(|(_, _, v)| *v)
                .collect();
            assert_eq!(
                hits,
                vec![stats[&shadow_requests_counter("canary", s, r)] as f64],
                "canary_shadow_requests{{subset={s},reason={r}}} once, as at /stats"
            );
        }
    }
    let v2_rule = tally[&("v2".to_string(), "rule".to_string())];
    assert_eq!(v2_rule, 50);
    let line = format!("canary_shadow_requests{{subset=\"v2\",reason=\"rule\"}} {v2_rule}");
    assert!(text.lines().any(|l| l == line), "`{line}` in\n{text}");
    assert!(
        text.lines()
            .any(|l| l == "canary_rule_matches{rule=\"qa\"} 30"),
        "rule tags still work:\n{text}"
    );
    for (name, labels, _) in &prom {
        // The memory gauge and the skipped counter are the names without labels.
        if name.starts_with("canary")
            && name != "canary_wasm_memory_bytes"
            && name != "canary_skipped"
        {
            assert!(!labels.is_empty(), "{name} without labels");
            assert!(
                !name.contains("subset") && !name.contains("reason"),
                "{name} {labels:?}: untagged"
            );
        }
    }
}

#[test]
fn in_shadow_mode_even_a_full_canary_is_served_by_the_route_table() {
    // Every decision says v2 (weight 100); v1 serves all of it. Another metrics
    // prefix, no pin cookie and no decision header.
    let config = json!({
        "subsets": [ {"name": "v1", "weight": 0}, {"name": "v2", "weight": 100} ],
        "metrics_prefix": "other",
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": SEED },
        "mode": "shadow"
    });
    let envoy = Envoy::start(
        &config.to_string(),
        Opts::default().concurrency(2).without_early_strip(),
    );
    let mut client = envoy.client();
    for i in 0..40 {
        let user = format!("full-{i}");
        let hs: Vec<(&str, &[u8])> = match i % 4 {
            0 => vec![],
            1 => vec![("x-canary-subset", b"v2")],
            2 => vec![("x-user-id", user.as_bytes())],
            _ => vec![("x-user-id", user.as_bytes()), ("x-canary-subset", b"v2")],
        };
        let r = client.get("/", &hs);
        assert_eq!(
            (r.status, r.served_by(), r.seen_subset()),
            (200, "v1".to_string(), String::new()),
            "{hs:?}"
        );
        assert_eq!(decision_of(&r), "", "no decision_header configured");
        assert_eq!(r.header_all("set-cookie"), vec!["served_by=v1; Path=/"]);
    }
    let stats = envoy.wasm_stats();
    assert_eq!(stats[&shadow_requests_counter("other", "v2", "random")], 20);
    assert_eq!(stats[&shadow_requests_counter("other", "v2", "hash")], 20);
    assert_eq!(
        stats.values().sum::<u64>(),
        40,
        "nothing else counted: {stats:?}"
    );
    let prom = envoy.prometheus();
    for line in [
        "other_shadow_requests{subset=\"v2\",reason=\"random\"} 20",
        "other_shadow_requests{subset=\"v2\",reason=\"hash\"} 20",
        "other_shadow_requests{subset=\"v1\",reason=\"hash\"} 0",
    ] {
        assert!(prom.lines().any(|l| l == line), "`{line}` in\n{prom}");
    }
}
