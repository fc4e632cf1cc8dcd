#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The filter's counters are exact: at /stats they equal what the test sent and
//! what the backends served, per subset, reason, rule and response class; the
//! same numbers appear at /stats/prometheus with labels.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;

fn config() -> String {
    json!({
        "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
        "sticky": { "keys": [ {"cookie": "session_id"}, {"header": "x-user-id"} ], "seed": "counters" },
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "legacy", "subset": "v1", "match": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}},
            {"name": "unused", "subset": "v2", "match": {"cookie": {"name": "never", "present": true}}}
        ]
    })
    .to_string()
}

/// (path, headers, the reason the test expects, the rule if any)
type Planned = (
    String,
    Vec<(String, String)>,
    &'static str,
    Option<&'static str>,
);

const SUBSETS: [&str; 2] = ["v1", "v2"];
const RULES: [&str; 3] = ["qa", "legacy", "unused"];

/// Every counter the configuration defines, at 0 (the shadow-mode request
/// counters too: they are defined in either mode; and `skipped`, which a lone
/// instance without a scope never moves).
fn all_zero() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::from([(format!("{}canary.skipped", stats_prefix()), 0)]);
    for s in SUBSETS {
        for r in REASONS {
            m.insert(requests_counter("canary", s, r), 0);
            m.insert(shadow_requests_counter("canary", s, r), 0);
        }
        for c in CLASSES {
            m.insert(responses_counter("canary", s, c), 0);
        }
    }
    for r in RULES {
        m.insert(rule_counter("canary", r), 0);
    }
    m
}

#[test]
fn counters_are_defined_at_configure_time() {
    let envoy = Envoy::start(&config(), Opts::default().concurrency(2));
    // Before any request, every subset x reason, subset x class and rule exists.
    assert_eq!(envoy.wasm_stats(), all_zero());
    let prom = envoy.prometheus();
    for s in SUBSETS {
        for r in REASONS {
            let line = format!("canary_requests{{subset=\"{s}\",reason=\"{r}\"}} 0");
            assert!(prom.lines().any(|l| l == line), "{line} in\n{prom}");
            let line = format!("canary_shadow_requests{{subset=\"{s}\",reason=\"{r}\"}} 0");
            assert!(prom.lines().any(|l| l == line), "{line} in\n{prom}");
        }
    }
}

#[test]
fn counters_equal_what_was_sent_and_served() {
    let envoy = Envoy::start(&config(), Opts::default().concurrency(2));
    let mut want = all_zero();
    let mut add = |name: String| *want.get_mut(&name).unwrap_or_else(|| panic!("{name}")) += 1;
    let mut sent = 0u64;

    // (path, headers, the reason the test expects, the rule if any)
    let mut plan: Vec<Planned> = Vec::new();
    for i in 0..150 {
        let path = ["/", "/status/302", "/status/404", "/status/503", "/"][i % 5];
        plan.push((
            path.into(),
            vec![("x-user-id".into(), format!("u{i}"))],
            "hash",
            None,
        ));
    }
    for i in 0..30 {
        let cookie = format!("theme=dark; session_id=s{i}");
        plan.push(("/".into(), vec![("cookie".into(), cookie)], "hash", None));
    }
    for i in 0..60 {
        let path = ["/", "/status/404", "/status/503"][i % 3];
        plan.push((path.into(), vec![], "random", None));
    }
    for i in 0..25 {
        let path = ["/", "/status/302"][i % 2];
        plan.push((
            path.into(),
            vec![
                ("x-canary".into(), "always".into()),
                ("x-user-id".into(), format!("u{i}")),
            ],
            "rule",
            Some("qa"),
        ));
    }
    for _ in 0..15 {
        plan.push((
            "/status/404".into(),
            vec![("user-agent".into(), "LegacyApp/2.0".into())],
            "rule",
            Some("legacy"),
        ));
    }

    // Over two connections, alternating, so both workers may take part.
    let mut clients = [envoy.client(), envoy.client()];
    for (n, (path, headers, reason, rule)) in plan.iter().enumerate() {
        let hs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let r = clients[n % 2].get(path, &hs);
        sent += 1;
        let served = r.served_by();
        assert!(
            served == "v1" || served == "v2",
            "{path} {headers:?}: {r:?}"
        );
        assert_eq!(r.seen_subset(), served, "{path} {headers:?}");
        let want_status: u16 = path
            .strip_prefix("/status/")
            .map_or(200, |s| s.parse().unwrap());
        assert_eq!(r.status, want_status, "{path}");
        match *rule {
            Some("qa") => assert_eq!(served, "v2"),
            Some("legacy") => assert_eq!(served, "v1"),
            _ => {}
        }
        add(requests_counter("canary", &served, reason));
        add(responses_counter("canary", &served, status_class(r.status)));
        if let Some(rule) = rule {
            add(rule_counter("canary", rule));
        }
    }
    drop(clients);

    let got = envoy.wasm_stats();
    assert_eq!(got, want, "counters at /stats");
    let sum_requests: u64 = got
        .iter()
        .filter(|(k, _)| parse_requests_name(k).is_some())
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        sum_requests, sent,
        "the sum over reasons is the number of requests"
    );
    let stats = envoy.stats();
    assert_eq!(
        stats["cluster.v1.upstream_rq_total"] + stats["cluster.v2.upstream_rq_total"],
        sent
    );
    for s in SUBSETS {
        let served: u64 = CLASSES
            .iter()
            .map(|c| got[&responses_counter("canary", s, c)])
            .sum();
        assert_eq!(
            served,
            stats[&format!("cluster.{s}.upstream_rq_total")],
            "{s}"
        );
    }

    // The same numbers at /stats/prometheus, with labels.
    let prom = parse_prometheus(&envoy.prometheus());
    let find = |name: &str, labels: &[(&str, &str)]| -> u64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let hits: Vec<f64> = prom
            .iter()
            .filter(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(hits.len(), 1, "{name}{labels:?} once at /stats/prometheus");
        hits[0] as u64
    };
    for s in SUBSETS {
        for r in REASONS {
            assert_eq!(
                find("canary_requests", &[("subset", s), ("reason", r)]),
                got[&requests_counter("canary", s, r)],
                "canary_requests{{subset={s},reason={r}}}"
            );
        }
        for c in CLASSES {
            assert_eq!(
                find("canary_responses", &[("subset", s), ("class", c)]),
                got[&responses_counter("canary", s, c)],
                "canary_responses{{subset={s},class={c}}}"
            );
        }
    }
    for r in RULES {
        assert_eq!(
            find("canary_rule_matches", &[("rule", r)]),
            got[&rule_counter("canary", r)],
            "canary_rule_matches{{rule={r}}}"
        );
    }
    // Exactly as the README shows it.
    let text = envoy.prometheus();
    let qa_line = format!(
        "canary_requests{{subset=\"v2\",reason=\"rule\"}} {}",
        got[&requests_counter("canary", "v2", "rule")]
    );
    assert!(text.lines().any(|l| l == qa_line), "{qa_line}");
    assert!(
        text.lines()
            .any(|l| l == "canary_rule_matches{rule=\"qa\"} 25"),
        "canary_rule_matches{{rule=\"qa\"}} 25"
    );
    // The latency histogram saw every counted response, per subset (Envoy merges
    // histograms on its stats flush, every second in envoy/envoy.yaml).
    for s in SUBSETS {
        let responses: u64 = CLASSES
            .iter()
            .map(|c| got[&responses_counter("canary", s, c)])
            .sum();
        let t0 = std::time::Instant::now();
        loop {
            let prom = parse_prometheus(&envoy.prometheus());
            let want: BTreeMap<String, String> = [("subset".to_string(), s.to_string())]
                .into_iter()
                .collect();
            let count = prom
                .iter()
                .find(|(n, l, _)| n == "canary_response_duration_ms_count" && *l == want)
                .map(|(_, _, v)| *v as u64);
            if count == Some(responses) {
                // The demo upstreams answer at once: every response is in the first buckets.
                let le_1s = prom
                    .iter()
                    .find(|(n, l, _)| {
                        n == "canary_response_duration_ms_bucket"
                            && l.get("subset").map(String::as_str) == Some(s)
                            && l.get("le").map(String::as_str) == Some("1000")
                    })
                    .map(|(_, _, v)| *v as u64);
                assert_eq!(le_1s, Some(responses), "{s}: responses under 1 s");
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(15),
                "canary_response_duration_ms_count{{subset={s}}} is {count:?}, want {responses}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    // No untagged leftovers of the filter's names (the memory gauge and the
    // skipped counter have no labels).
    for (name, labels, _) in &prom {
        if name.starts_with("canary")
            && name != "canary_wasm_memory_bytes"
            && name != "canary_skipped"
        {
            assert!(!labels.is_empty(), "{name} without labels");
            assert!(
                !name.contains("subset") && !name.contains("reason"),
                "{name}"
            );
        }
    }
}

#[test]
fn the_vm_memory_gauge_reports_linear_memory() {
    if common::wasm_only("the Wasm VM's memory gauge") {
        return;
    }
    let envoy = Envoy::start(&demo_config().to_string(), Opts::default());
    let bytes = envoy
        .wasm_memory_gauge("canary")
        .expect("gauge defined at configure time");
    // Whole 64 KiB pages, at least the module's initial memory, far below 1 GiB.
    assert_eq!(bytes % 65_536, 0, "{bytes}");
    assert!((65_536..1 << 30).contains(&bytes), "{bytes}");
}
