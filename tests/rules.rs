#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Rules on headers and cookies: every operator, first match wins, rules beat
//! weights, cookies among other cookies and split over two headers, a header sent
//! twice. (JWT claim rules: tests/jwt.rs.)
//!
//! Every request is checked through the filter's own counters (`Envoy::decide`):
//! which rule matched, which subset and reason were counted, and the upstream
//! that answered.

mod common;

use common::*;
use serde_json::json;

/// A rule routing to `subset` when `source` (`header` or `cookie`) named `name`
/// satisfies `op`.
fn rule(
    rule: &str,
    subset: &str,
    source: &str,
    name: &str,
    op: serde_json::Value,
) -> serde_json::Value {
    let mut m = json!({ "name": name });
    for (k, v) in op.as_object().unwrap() {
        m[k] = v.clone();
    }
    json!({ "name": rule, "subset": subset, "match": { source: m } })
}

/// All traffic on v1 by weight; v2 and v3 (weight 0) only through rules. v3
/// has no cluster: the route table sends it to v1, the upstream sees "v3".
fn config(rules: Vec<serde_json::Value>) -> String {
    json!({
        "subsets": [
            {"name": "v1", "weight": 100},
            {"name": "v2", "weight": 0},
            {"name": "v3", "weight": 0}
        ],
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": "rules" },
        "rules": rules
    })
    .to_string()
}

/// Assert the request matched `want_rule` (and so went to `want_subset`), or no
/// rule at all (`None`: weights, so v1).
fn check(envoy: &mut Envoy, headers: &[(&str, &[u8])], want_rule: Option<&str>, want_subset: &str) {
    let d = envoy.decide("/", headers);
    let shown: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
        .collect();
    assert_eq!(
        (d.rule.as_deref(), d.subset.as_str()),
        (want_rule, want_subset),
        "request headers {shown:?}: decision {d:?}"
    );
    assert_eq!(d.status, 200);
}

#[test]
fn header_operators() {
    let mut envoy = Envoy::start(
        &config(vec![
            rule(
                "h_exact",
                "v2",
                "header",
                "x-h-exact",
                json!({"exact": "yes"}),
            ),
            rule(
                "h_prefix",
                "v2",
                "header",
                "x-h-prefix",
                json!({"prefix": "pre-"}),
            ),
            rule(
                "h_present",
                "v2",
                "header",
                "x-h-present",
                json!({"present": true}),
            ),
            rule(
                "h_in",
                "v2",
                "header",
                "x-h-in",
                json!({"in": ["alpha", "beta", "gamma"]}),
            ),
            rule(
                "h_contains",
                "v2",
                "header",
                "x-h-contains",
                json!({"contains": "canary"}),
            ),
            rule(
                "h_regex",
                "v2",
                "header",
                "x-h-regex",
                json!({"regex": "[a-z]+-[0-9]{2}"}),
            ),
            // Header names are case-insensitive, in the config too.
            rule(
                "h_upper",
                "v3",
                "header",
                "X-Upper-Name",
                json!({"exact": "1"}),
            ),
        ]),
        Opts::default(),
    );
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("x-h-exact", "yes", Some("h_exact"), "v2"),
        ("X-H-EXACT", "yes", Some("h_exact"), "v2"),
        ("x-h-exact", "YES", None, "v1"),
        ("x-h-exact", "yes!", None, "v1"),
        ("x-h-exact", "ye", None, "v1"),
        ("x-h-prefix", "pre-release", Some("h_prefix"), "v2"),
        ("x-h-prefix", "pre-", Some("h_prefix"), "v2"),
        ("x-h-prefix", "pre", None, "v1"),
        ("x-h-prefix", "xpre-", None, "v1"),
        ("x-h-present", "anything", Some("h_present"), "v2"),
        ("x-h-in", "beta", Some("h_in"), "v2"),
        ("x-h-in", "gamma", Some("h_in"), "v2"),
        ("x-h-in", "delta", None, "v1"),
        ("x-h-in", "alph", None, "v1"),
        (
            "x-h-contains",
            "alpha canary beta",
            Some("h_contains"),
            "v2",
        ),
        ("x-h-contains", "canary", Some("h_contains"), "v2"),
        ("x-h-contains", "alpha beta", None, "v1"),
        ("x-h-contains", "canary-extra", None, "v1"),
        ("x-h-regex", "abc-12", Some("h_regex"), "v2"),
        // Full match: neither a longer value nor one with a prefix matches.
        ("x-h-regex", "abc-123", None, "v1"),
        ("x-h-regex", "9abc-12", None, "v1"),
        ("x-h-regex", "abc-1", None, "v1"),
        ("x-upper-name", "1", Some("h_upper"), "v3"),
        ("X-UPPER-NAME", "1", Some("h_upper"), "v3"),
        ("x-unrelated", "yes", None, "v1"),
    ];
    for (name, value, want_rule, want_subset) in cases {
        check(&mut envoy, &h(&[(name, value)]), *want_rule, want_subset);
    }
    // No header at all: no rule (present: true does not match an absent header).
    check(&mut envoy, &[], None, "v1");
}

#[test]
fn cookie_operators_among_other_cookies() {
    let mut envoy = Envoy::start(
        &config(vec![
            rule(
                "c_exact",
                "v2",
                "cookie",
                "c_exact",
                json!({"exact": "yes"}),
            ),
            rule(
                "c_prefix",
                "v2",
                "cookie",
                "c_prefix",
                json!({"prefix": "pre-"}),
            ),
            rule(
                "c_present",
                "v2",
                "cookie",
                "c_present",
                json!({"present": true}),
            ),
            rule(
                "c_in",
                "v2",
                "cookie",
                "c_in",
                json!({"in": ["alpha", "beta"]}),
            ),
            rule(
                "c_contains",
                "v2",
                "cookie",
                "c_contains",
                json!({"contains": "canary"}),
            ),
            rule(
                "c_regex",
                "v2",
                "cookie",
                "c_regex",
                json!({"regex": "[a-z]+-[0-9]{2}"}),
            ),
            rule("beta", "v3", "cookie", "beta", json!({"exact": "true"})),
        ]),
        Opts::default(),
    );
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("c_exact=yes", Some("c_exact"), "v2"),
        ("theme=dark; c_exact=yes; lang=en", Some("c_exact"), "v2"),
        ("theme=dark;c_exact=yes", Some("c_exact"), "v2"),
        ("c_exact=no", None, "v1"),
        ("c_exact=yes2", None, "v1"),
        // Cookie names are matched whole.
        ("xc_exact=yes", None, "v1"),
        ("c_exactx=yes", None, "v1"),
        // The first occurrence of a name wins.
        ("c_exact=no; c_exact=yes", None, "v1"),
        ("c_exact=yes; c_exact=no", Some("c_exact"), "v2"),
        ("a=1; c_prefix=pre-42; b=2", Some("c_prefix"), "v2"),
        ("c_prefix=pr", None, "v1"),
        ("x=1; c_present=1", Some("c_present"), "v2"),
        ("c_in=beta; z=1", Some("c_in"), "v2"),
        ("c_in=gamma", None, "v1"),
        ("c_contains=canary", Some("c_contains"), "v2"),
        ("c_contains=canaryx", None, "v1"),
        ("c_regex=abc-12", Some("c_regex"), "v2"),
        ("c_regex=abc-123", None, "v1"),
        ("session=abc; beta=true; theme=light", Some("beta"), "v3"),
        ("session=abc; beta=false; theme=light", None, "v1"),
        // The cookie's name as another cookie's value is not the cookie.
        ("other=beta", None, "v1"),
    ];
    for (cookie, want_rule, want_subset) in cases {
        check(
            &mut envoy,
            &h(&[("cookie", cookie)]),
            *want_rule,
            want_subset,
        );
    }
    // A header named like the cookie is not the cookie.
    check(&mut envoy, &h(&[("beta", "true")]), None, "v1");

    // A cookie split over two cookie headers (HTTP/1.1 clients may do that).
    check(
        &mut envoy,
        &h(&[
            ("cookie", "session=abc; theme=light"),
            ("cookie", "beta=true"),
        ]),
        Some("beta"),
        "v3",
    );
    check(
        &mut envoy,
        &h(&[("cookie", "beta=true"), ("cookie", "session=abc")]),
        Some("beta"),
        "v3",
    );
    // First occurrence wins across the two headers too.
    check(
        &mut envoy,
        &h(&[("cookie", "beta=false"), ("cookie", "beta=true")]),
        None,
        "v1",
    );
}

#[test]
fn absent_sources_with_present_false() {
    // present: false matches when the source is absent. Listed in this order,
    // a request without the cookie matches c_absent first.
    let mut envoy = Envoy::start(
        &config(vec![
            rule(
                "c_absent",
                "v3",
                "cookie",
                "c_required",
                json!({"present": false}),
            ),
            rule(
                "h_absent",
                "v2",
                "header",
                "x-h-required",
                json!({"present": false}),
            ),
        ]),
        Opts::default(),
    );
    check(&mut envoy, &[], Some("c_absent"), "v3");
    check(
        &mut envoy,
        &h(&[("cookie", "other=1")]),
        Some("c_absent"),
        "v3",
    );
    check(
        &mut envoy,
        &h(&[("x-h-required", "1")]),
        Some("c_absent"),
        "v3",
    );
    check(
        &mut envoy,
        &h(&[("cookie", "a=1; c_required=1")]),
        Some("h_absent"),
        "v2",
    );
    check(
        &mut envoy,
        &h(&[("cookie", "c_required=1"), ("x-h-required", "yes")]),
        None,
        "v1",
    );
}

#[test]
fn first_match_wins_and_rules_beat_weights() {
    let mut envoy = Envoy::start(
        &config(vec![
            rule("first", "v3", "header", "x-prec", json!({"exact": "both"})),
            rule("second", "v2", "header", "x-prec", json!({"prefix": "bo"})),
            rule("by_cookie", "v2", "cookie", "who", json!({"exact": "me"})),
            rule("to_v1", "v1", "header", "x-prec", json!({"present": true})),
        ]),
        Opts::default(),
    );
    check(&mut envoy, &h(&[("x-prec", "both")]), Some("first"), "v3");
    check(&mut envoy, &h(&[("x-prec", "bolt")]), Some("second"), "v2");
    check(&mut envoy, &h(&[("x-prec", "other")]), Some("to_v1"), "v1");
    // Several rules match: the first listed wins, whatever the source.
    check(
        &mut envoy,
        &h(&[("cookie", "who=me"), ("x-prec", "both")]),
        Some("first"),
        "v3",
    );
    check(
        &mut envoy,
        &h(&[("cookie", "who=me"), ("x-prec", "other")]),
        Some("by_cookie"),
        "v2",
    );
    // v2 has weight 0, so every sticky key lands on v1, unless a rule says v2.
    for i in 0..20 {
        let user = format!("user-{i}");
        let d = envoy.decide("/", &h(&[("x-user-id", &user)]));
        assert_eq!((d.subset.as_str(), d.reason.as_str()), ("v1", "hash"));
        let d = envoy.decide("/", &h(&[("x-user-id", &user), ("x-prec", "bolt")]));
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str(), d.rule.as_deref()),
            ("v2", "rule", Some("second"))
        );
    }
}

#[test]
/// As Envoy 1.40's route matchers: each value of a header sent twice is
/// matched on its own (tests/envoy_header_parity.rs compares with Envoy itself).
fn a_header_sent_twice_matches_when_one_value_does() {
    let mut envoy = Envoy::start(
        &config(vec![
            rule(
                "dup_joined",
                "v2",
                "header",
                "x-dup",
                json!({"exact": "a,b"}),
            ),
            rule("dup_first", "v3", "header", "x-dup2", json!({"exact": "a"})),
            rule(
                "dup_prefix",
                "v2",
                "header",
                "x-dup3",
                json!({"prefix": "a,"}),
            ),
            rule(
                "dup_in",
                "v3",
                "header",
                "x-dup4",
                json!({"in": ["one,two"]}),
            ),
        ]),
        Opts::default(),
    );
    // Two values "a" and "b" are not the one value "a,b".
    check(
        &mut envoy,
        &h(&[("x-dup", "a"), ("x-dup", "b")]),
        None,
        "v1",
    );
    check(
        &mut envoy,
        &h(&[("x-dup", "a,b")]),
        Some("dup_joined"),
        "v2",
    );
    check(&mut envoy, &h(&[("x-dup", "a")]), None, "v1");
    // Sent twice, one value is "a": an exact "a" matches.
    check(
        &mut envoy,
        &h(&[("x-dup2", "a"), ("x-dup2", "b")]),
        Some("dup_first"),
        "v3",
    );
    check(&mut envoy, &h(&[("x-dup2", "a")]), Some("dup_first"), "v3");
    check(
        &mut envoy,
        &h(&[("x-dup3", "a"), ("X-Dup3", "z")]),
        None,
        "v1",
    );
    check(
        &mut envoy,
        &h(&[("x-dup3", "q"), ("x-dup3", "a,x")]),
        Some("dup_prefix"),
        "v2",
    );
    check(
        &mut envoy,
        &h(&[("x-dup4", "one"), ("x-dup4", "two")]),
        None,
        "v1",
    );
    check(
        &mut envoy,
        &h(&[("x-dup4", "two"), ("x-dup4", "one,two")]),
        Some("dup_in"),
        "v3",
    );
}

#[test]
fn an_in_list_of_thousands_of_values() {
    let tenants: Vec<String> = (0..5000).map(|i| format!("tenant-{i:04}")).collect();
    let mut envoy = Envoy::start(
        &config(vec![rule(
            "many",
            "v2",
            "header",
            "x-tenant",
            json!({ "in": tenants }),
        )]),
        Opts::default(),
    );
    for t in ["tenant-0000", "tenant-2500", "tenant-4999"] {
        check(&mut envoy, &h(&[("x-tenant", t)]), Some("many"), "v2");
    }
    for t in ["tenant-5000", "tenant-", "tenant-00000"] {
        check(&mut envoy, &h(&[("x-tenant", t)]), None, "v1");
    }
}
