//! `canary-router explain` and the filter in a real Envoy decide alike on
//! requests as clients really send them: blanks around values (Envoy trims
//! spaces and tabs only, and keeps U+00A0 and other blanks), headers sent
//! several times (each value matched on its own, except the headers Envoy
//! stores once and joins), non-ASCII values, regexes on bytes, and cookies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use canary_router::rng::SplitMix64;
use common::*;
use serde_json::{json, Value};

const DECISION: &str = "x-canary-decision";

fn config() -> Value {
    let rule = |name: &str, subset: &str, source: &str, operand: Value| json!({"name": name, "subset": subset, "match": {source: operand}});
    json!({
        "subsets": [{"name": "v1", "weight": 60}, {"name": "v2", "weight": 40}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": "cli-parity"},
        "rules": [
            rule("qa", "v2", "header", json!({"name": "x-canary", "exact": "always"})),
            rule("legacy", "v1", "header", json!({"name": "user-agent", "prefix": "LegacyApp/"})),
            rule("fwd", "v2", "header", json!({"name": "x-forwarded-for", "regex": "10\\..*"})),
            rule("referer", "v2", "header", json!({"name": "referer", "exact": "a"})),
            rule("ver", "v2", "header", json!({"name": "x-version", "regex": ".{3,4}"})),
            rule("cafe", "v2", "header", json!({"name": "x-lang", "regex": "caf."})),
            rule("nbsp", "v2", "header", json!({"name": "x-tag", "exact": "\u{a0}beta"})),
            rule("tenant", "v1", "header", json!({"name": "x-tenant", "in": ["acme", "globex"]})),
            rule("feat", "v2", "header", json!({"name": "x-features", "contains": "dark"})),
            rule("beta", "v2", "cookie", json!({"name": "beta", "exact": "true"})),
            rule("gone", "v2", "header", json!({"name": "x-gone", "present": false})),
        ],
        "decision_header": DECISION,
    })
}

/// Header names and the values drawn for them.
const NAMES: &[&str] = &[
    "x-canary",
    "user-agent",
    "x-forwarded-for",
    "referer",
    "x-version",
    "x-lang",
    "x-tag",
    "x-tenant",
    "x-features",
    "x-user-id",
];

const VALUES: &[&str] = &[
    "",
    "a",
    "always",
    "LegacyApp/2",
    "Mozilla",
    "10.0.0.1",
    "192.168.0.1",
    "é",
    "éé",
    "abc",
    "café",
    "cafe",
    "\u{a0}beta",
    "beta",
    "\u{3000}beta",
    "acme",
    "acme,globex",
    "light, dark",
    "darker",
    "a,b",
];

/// Blanks around a value, as a client may send them.
const PADS: &[&str] = &["", "", " ", "  ", "\t", " \t ", "\u{a0}", "\u{3000}"];

const COOKIES: &[&str] = &[
    "beta=true",
    "beta = true",
    "beta=\"true\"",
    "a=1; beta=false; beta=true",
    "beta=false",
    "theme=dark",
    "beta=true ; x=1",
];

#[test]
fn explain_agrees_with_the_filter_on_odd_requests() {
    let config = config();
    let dir = std::env::temp_dir().join(format!("canary-cli-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("parity.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut envoy = Envoy::start(&config.to_string(), Opts::default().without_jwt_authn());

    let mut rng = SplitMix64::new(0xc11_2026);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    const REQUESTS: usize = 300;
    let (mut agreed, mut repeated, mut rules) = (0, 0, 0);
    let mut disagreements = Vec::new();
    for i in 0..REQUESTS {
        // Always a sticky key (so that no decision is a random draw),
        // sometimes padded or repeated.
        let mut headers: Vec<(String, String)> = vec![(
            "x-user-id".into(),
            format!("{}user-{i}{}", PADS[pick(3)], PADS[pick(3)]),
        )];
        for _ in 0..pick(4) {
            let name = NAMES[pick(NAMES.len())];
            for _ in 0..[1, 1, 2, 3][pick(4)] {
                let value = format!(
                    "{}{}{}",
                    PADS[pick(PADS.len())],
                    VALUES[pick(VALUES.len())],
                    PADS[pick(PADS.len())]
                );
                headers.push((name.into(), value));
            }
        }
        // Absent now and then: the `present: false` rule.
        if i % 13 != 0 {
            headers.push(("x-gone".into(), PADS[pick(PADS.len())].into()));
        }
        let cookies: Vec<&str> = (0..pick(3)).map(|_| COOKIES[pick(COOKIES.len())]).collect();
        repeated += usize::from(
            headers
                .iter()
                .enumerate()
                .any(|(k, (n, _))| headers[..k].iter().any(|(m, _)| m == n)),
        );

        let mut request: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        for c in &cookies {
            request.push(("cookie", c.as_bytes()));
        }
        let response = envoy.get("/", &request);
        assert_eq!(response.status, 200, "{response:?}");
        let from_envoy = response.header(DECISION).expect("decision header");

        let mut args: Vec<String> = vec![
            "explain".into(),
            "--config".into(),
            path.to_str().unwrap().into(),
            "--json".into(),
        ];
        for (n, v) in &headers {
            args.extend(["-H".into(), format!("{n}: {v}")]);
        }
        for c in &cookies {
            args.extend(["-b".into(), (*c).to_owned()]);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_canary-router"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        rules += usize::from(v["reason"] == "rule");
        if v["decision"] == from_envoy.as_str() {
            agreed += 1;
        } else {
            disagreements.push(format!(
                "request {i}: Envoy {from_envoy:?}, explain {}: {args:?}",
                v["decision"]
            ));
        }
    }
    println!(
        "explain vs filter: {agreed}/{REQUESTS} decisions agree \
         ({repeated} with a repeated header, {rules} decided by a rule)"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(
        repeated > 50 && rules > 50,
        "the corpus exercises the rules"
    );
}

/// The headers Envoy stores once and joins (the list `explain` follows) are
/// joined in the filter too, and the others listed one entry per copy: a
/// header sent as `a` then `b` matches `exact: "a"` only when kept apart.
#[test]
fn explain_joins_the_headers_envoy_joins() {
    const JOINED: &[&str] = &[
        "accept",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "access-control-request-private-network",
        "authorization",
        "cache-control",
        "content-encoding",
        "content-type",
        "grpc-accept-encoding",
        "grpc-timeout",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "origin",
        "pragma",
        "proxy-status",
        "referer",
        "user-agent",
        "via",
        "x-client-trace-id",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-proto",
        "x-request-id",
    ];
    const APART: &[&str] = &["x-canary", "x-user-id", "accept-language", "etag", "range"];
    let rules: Vec<Value> = JOINED
        .iter()
        .chain(APART)
        .enumerate()
        .map(|(i, name)| {
            json!({"name": format!("h{i}"), "subset": "v2",
                "match": {"header": {"name": name, "exact": "a"}}})
        })
        .collect();
    let config = json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "rules": rules,
        "decision_header": DECISION,
    });
    let dir = std::env::temp_dir().join(format!("canary-cli-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("joined.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut envoy = Envoy::start(&config.to_string(), Opts::default().without_jwt_authn());
    for (i, name) in JOINED.iter().chain(APART).enumerate() {
        let response = envoy.get("/", &[(name, b"a"), (name, b"b")]);
        let from_envoy = response.header(DECISION).expect("decision header");
        let joined = JOINED.contains(name);
        assert_eq!(
            from_envoy.contains(&format!("rule=h{i}")),
            !joined,
            "{name}: {from_envoy}"
        );
        let o = Command::new(env!("CARGO_BIN_EXE_canary-router"))
            .args(["explain", path.to_str().unwrap(), "--json"])
            .args(["-H", &format!("{name}: a"), "-H", &format!("{name}: b")])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        // No key: a random draw unless the rule matched; compare the rule.
        let envoy_rule = from_envoy.split("; ").find_map(|f| f.strip_prefix("rule="));
        assert_eq!(v["rule"].as_str(), envoy_rule, "{name}");
    }
}
