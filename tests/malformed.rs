#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Malformed requests never make the filter answer 5xx or fail its VM: garbage
//! cookies, 16 KiB values, bearer tokens that are not JWTs, non-UTF-8 bytes, empty
//! keys. They fall through to the weights (or `fallback`); afterwards normal
//! requests still route correctly and the counters still add up.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;

fn config() -> String {
    json!({
        "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
        "default_subset": "v1",
        "sticky": {
            "keys": [ {"jwt_claim": "sub"}, {"cookie": "session_id"}, {"header": "x-user-id"} ],
            "seed": "malformed"
        },
        "jwt": { "source": "unverified_bearer" },
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "beta", "subset": "v2", "match": {"cookie": {"name": "beta", "exact": "true"}}},
            {"name": "staff", "subset": "v2", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
            {"name": "deep", "subset": "v2", "match": {"jwt_claim": {"name": "a.b.c", "exact": "x"}}},
            {"name": "agent", "subset": "v1", "match": {"header": {"name": "user-agent", "regex": "Legacy[A-Za-z]*/[0-9.]+"}}}
        ]
    })
    .to_string()
}

fn b64(s: &[u8]) -> String {
    b64url_encode(s)
}

/// A token with this raw payload (not necessarily JSON) and a junk signature.
fn token_with_payload(payload: &[u8]) -> String {
    format!("{}.{}.c2ln", b64(br#"{"alg":"HS256"}"#), b64(payload))
}

/// A named request: its headers, values as raw bytes.
type Named = (&'static str, Vec<(&'static str, Vec<u8>)>);

fn malformed_requests() -> Vec<Named> {
    let big = |c: u8| vec![c; 16 * 1024];
    let mut deep = Vec::new();
    deep.extend(std::iter::repeat_n(b'[', 5000));
    deep.extend(std::iter::repeat_n(b']', 5000));
    let mut deep_obj = b"{\"a\":".repeat(3000);
    deep_obj.extend(b"1");
    deep_obj.extend(b"}".repeat(3000));
    vec![
        (
            "garbage cookie",
            vec![("cookie", b";;;===; =; a; b==c;;; ;".to_vec())],
        ),
        ("cookie without =", vec![("cookie", b"session_id".to_vec())]),
        (
            "cookie of separators",
            vec![("cookie", b"=;=;=;=".to_vec())],
        ),
        (
            "cookie with quotes",
            vec![("cookie", b"session_id=\"; beta=\"true".to_vec())],
        ),
        ("16 KiB x-user-id", vec![("x-user-id", big(b'u'))]),
        (
            "16 KiB cookie",
            vec![("cookie", [b"session_id=".as_slice(), &big(b's')].concat())],
        ),
        ("16 KiB rule header", vec![("x-canary", big(b'a'))]),
        (
            "16 KiB user-agent for the regex",
            vec![("user-agent", [b"Legacy".as_slice(), &big(b'x')].concat())],
        ),
        (
            "16 KiB bearer",
            vec![(
                "authorization",
                [b"Bearer ".as_slice(), &big(b'A')].concat(),
            )],
        ),
        (
            "bearer not base64",
            vec![("authorization", b"Bearer !!!.@@@.###".to_vec())],
        ),
        (
            "bearer one segment",
            vec![("authorization", b"Bearer abc".to_vec())],
        ),
        ("bearer empty", vec![("authorization", b"Bearer ".to_vec())]),
        (
            "bearer only dots",
            vec![("authorization", b"Bearer ..".to_vec())],
        ),
        (
            "bearer four segments",
            vec![("authorization", b"Bearer a.b.c.d".to_vec())],
        ),
        (
            "bearer payload not JSON",
            vec![("authorization", bearer(&token_with_payload(b"hello")))],
        ),
        (
            "bearer payload a JSON array",
            vec![("authorization", bearer(&token_with_payload(b"[1,2,3]")))],
        ),
        (
            "bearer payload a JSON string",
            vec![("authorization", bearer(&token_with_payload(b"\"staff\"")))],
        ),
        (
            "bearer payload not UTF-8",
            vec![(
                "authorization",
                bearer(&token_with_payload(b"{\"sub\":\"\xff\xfe\"}")),
            )],
        ),
        (
            "bearer payload deeply nested array",
            vec![("authorization", bearer(&token_with_payload(&deep)))],
        ),
        (
            "bearer payload deeply nested object",
            vec![("authorization", bearer(&token_with_payload(&deep_obj)))],
        ),
        (
            "bearer claims of odd types",
            vec![("authorization", bearer(&token_with_payload(
            br#"{"sub": 12, "groups": {"staff": true}, "a": {"b": [1, {"c": "x"}]}, "exp": 1e400}"#,
        )))],
        ),
        (
            "bearer with padding",
            vec![(
                "authorization",
                format!("Bearer {}==", token_with_payload(b"{}")).into_bytes(),
            )],
        ),
        (
            "non-UTF-8 x-user-id",
            vec![("x-user-id", b"\xff\xfe\x80user".to_vec())],
        ),
        (
            "non-UTF-8 cookie",
            vec![(
                "cookie",
                b"theme=\xc3\x28; session_id=\xff\xfe; beta=\xe2\x82".to_vec(),
            )],
        ),
        (
            "non-UTF-8 rule header",
            vec![("x-canary", b"alw\xffays".to_vec())],
        ),
        (
            "non-UTF-8 user-agent for the regex",
            vec![("user-agent", b"Legacy\xff/1.0".to_vec())],
        ),
        (
            "non-UTF-8 bearer",
            vec![("authorization", b"Bearer \xff\xfe.\x80.\x81".to_vec())],
        ),
        ("empty x-user-id", vec![("x-user-id", Vec::new())]),
        ("empty cookie header", vec![("cookie", Vec::new())]),
        (
            "x-user-id sent twice, one empty",
            vec![("x-user-id", Vec::new()), ("x-user-id", b"u".to_vec())],
        ),
        (
            "many cookies",
            vec![(
                "cookie",
                (0..2000)
                    .map(|i| format!("c{i}=v{i}"))
                    .collect::<Vec<_>>()
                    .join("; ")
                    .into_bytes(),
            )],
        ),
    ]
}

#[test]
fn malformed_requests_never_fail_and_counters_still_add_up() {
    let mut envoy = Envoy::start(
        &config(),
        Opts::default().without_jwt_authn().without_early_strip(),
    );
    let mut sent = 0u64;
    let stable = |envoy: &mut Envoy| -> Vec<String> {
        (0..20)
            .map(|i| routed_subset(&envoy.get("/", &h(&[("x-user-id", &format!("stable-{i}"))]))))
            .collect()
    };
    let before = stable(&mut envoy);
    sent += 20;

    let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (what, headers) in malformed_requests() {
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let probe = envoy.get("/", &hs);
        if probe.status >= 500 || probe.served_by().is_empty() {
            wrong.push(format!(
                "{what}: status {} body {:?}",
                probe.status,
                probe.body_str()
            ));
            continue;
        }
        sent += 1;
        // Again, with the decision read from the counters.
        let d = envoy.decide("/", &hs);
        sent += 1;
        if d.status != 200 || d.rule.is_some() {
            wrong.push(format!("{what}: {d:?}"));
        }
        reasons.insert(what, d.reason.clone());
    }
    assert!(
        wrong.is_empty(),
        "malformed requests that failed:\n{}",
        wrong.join("\n")
    );
    eprintln!("decisions on malformed requests: {reasons:#?}");
    // Empty values count as absent: no key, so a random choice.
    assert_eq!(reasons["empty x-user-id"], "random");
    assert_eq!(reasons["empty cookie header"], "random");
    // Garbage that carries no usable key falls through to random (or fallback),
    // never hashes a made-up key.
    for what in [
        "bearer not base64",
        "bearer payload not JSON",
        "garbage cookie",
    ] {
        assert!(
            reasons[what] == "random" || reasons[what] == "fallback",
            "{what}: {}",
            reasons[what]
        );
    }

    // The filter still works: rules, sticky keys, JWT claims.
    for _ in 0..5 {
        let d = envoy.decide("/", &h(&[("x-canary", "always")]));
        assert_eq!((d.subset.as_str(), d.rule.as_deref()), ("v2", Some("qa")));
        let t = sign_hs256(&claims(json!({"groups": ["staff"]})));
        let d = envoy.decide("/", &[("authorization", &bearer(&t))]);
        assert_eq!(
            (d.subset.as_str(), d.rule.as_deref()),
            ("v2", Some("staff"))
        );
        sent += 2;
    }
    assert_eq!(stable(&mut envoy), before, "sticky keys unchanged");
    sent += 20;

    // Counters add up: one decision and one response per request the filter saw.
    let stats = envoy.wasm_stats();
    let requests: u64 = stats
        .iter()
        .filter(|(k, _)| parse_requests_name(k).is_some())
        .map(|(_, v)| v)
        .sum();
    let responses: u64 = stats
        .iter()
        .filter(|(k, _)| parse_responses_name(k).is_some())
        .map(|(_, v)| v)
        .sum();
    assert_eq!(requests, sent, "requests counted: {stats:?}");
    assert_eq!(responses, sent, "responses counted: {stats:?}");

    // No VM failure, no panic, in the log.
    let log = envoy.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("panicked")
                || l.contains("[critical]")
                || (l.contains("[wasm]") && (l.contains("[error]") || l.contains("failed")))
        })
        .collect();
    assert!(bad.is_empty(), "VM trouble in the log:\n{}", bad.join("\n"));
}

#[test]
fn malformed_bearer_tokens_with_jwt_authn_in_front() {
    // Verified mode: jwt_authn refuses what is not a valid token (4xx), the
    // filter never sees it, and nothing fails.
    let mut config: serde_json::Value = serde_json::from_str(&config()).unwrap();
    config["jwt"] = json!({"source": "verified", "metadata_key": "payload"});
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());
    for (what, headers) in malformed_requests() {
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let r = envoy.get("/", &hs);
        assert!(r.status < 500, "{what}: status {}", r.status);
        if r.status == 200 {
            routed_subset(&r);
        }
    }
    let d = envoy.decide("/", &h(&[("x-canary", "always")]));
    assert_eq!((d.subset.as_str(), d.rule.as_deref()), ("v2", Some("qa")));
    assert!(!envoy.log().contains("panicked"));
}
