#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! JWT claims: verified by Envoy's jwt_authn (tokens signed here with the HS256
//! key of envoy/jwks.json) and read from its metadata or from its forwarded
//! payload header, or decoded from the bearer token without verification when
//! the configuration asks for it explicitly.

mod common;

use common::*;
use serde_json::{json, Value};

fn claim_rule(name: &str, subset: &str, claim: &str, op: Value) -> Value {
    let mut m = json!({ "name": claim });
    for (k, v) in op.as_object().unwrap() {
        m[k] = v.clone();
    }
    json!({ "name": name, "subset": subset, "match": { "jwt_claim": m } })
}

/// v1 by weight; v2 and v3 only through claim rules.
fn claims_config(source: &str) -> Value {
    json!({
        "subsets": [
            {"name": "v1", "weight": 100},
            {"name": "v2", "weight": 0},
            {"name": "v3", "weight": 0}
        ],
        "sticky": { "keys": [ {"jwt_claim": "sub"}, {"header": "x-user-id"} ], "seed": "jwt" },
        "jwt": jwt_section(source),
        "rules": [
            claim_rule("staff", "v2", "groups", json!({"contains": "staff"})),
            claim_rule("tenants", "v2", "tenant", json!({"in": ["acme", "globex"]})),
            claim_rule("scope", "v2", "scope", json!({"contains": "canary:opt-in"})),
            claim_rule("nested_roles", "v2", "realm_access.roles", json!({"contains": "tester"})),
            claim_rule("nested_tier", "v2", "org.tier", json!({"exact": "gold"})),
            claim_rule("vip", "v2", "sub", json!({"exact": "vip"})),
            claim_rule("qa_email", "v2", "email", json!({"prefix": "qa-"})),
            claim_rule("team", "v2", "tenant", json!({"regex": "team-[0-9]+"})),
            claim_rule("group_beta", "v3", "groups", json!({"exact": "beta"})),
            claim_rule("group_in", "v3", "groups", json!({"in": ["ops", "sre"]})),
            claim_rule("group_prefix", "v3", "groups", json!({"prefix": "ext-"})),
            claim_rule("opted_in", "v2", "canary_opt_in", json!({"present": true})),
        ]
    })
}

/// `jwt` for a source: `metadata_key` only belongs to `verified`.
fn jwt_section(source: &str) -> Value {
    if source == "verified" {
        json!({ "source": "verified", "metadata_key": "payload" })
    } else {
        json!({ "source": source })
    }
}

/// (claims, expected rule, expected subset).
fn claim_cases() -> Vec<(Value, Option<&'static str>, &'static str)> {
    let e = |v: Value| v;
    vec![
        (
            e(json!({"sub": "u1", "groups": ["dev", "staff"]})),
            Some("staff"),
            "v2",
        ),
        (e(json!({"groups": ["staffing", "dev"]})), None, "v1"),
        (e(json!({"groups": "staff"})), Some("staff"), "v2"),
        (e(json!({"tenant": "acme"})), Some("tenants"), "v2"),
        (e(json!({"tenant": "globex"})), Some("tenants"), "v2"),
        (e(json!({"tenant": "initech"})), None, "v1"),
        (
            e(json!({"scope": "read canary:opt-in write"})),
            Some("scope"),
            "v2",
        ),
        (e(json!({"scope": "read canary:opt-in-later"})), None, "v1"),
        (
            e(json!({"realm_access": {"roles": ["user", "tester"]}})),
            Some("nested_roles"),
            "v2",
        ),
        (e(json!({"realm_access": {"roles": ["user"]}})), None, "v1"),
        (e(json!({"roles": ["tester"]})), None, "v1"),
        (
            e(json!({"org": {"tier": "gold", "name": "x"}})),
            Some("nested_tier"),
            "v2",
        ),
        (e(json!({"org": {"tier": "silver"}})), None, "v1"),
        (e(json!({"sub": "vip"})), Some("vip"), "v2"),
        (e(json!({"sub": "vip2"})), None, "v1"),
        (
            e(json!({"email": "qa-bob@example.com"})),
            Some("qa_email"),
            "v2",
        ),
        (e(json!({"email": "bob-qa-@example.com"})), None, "v1"),
        (e(json!({"tenant": "team-42"})), Some("team"), "v2"),
        (e(json!({"tenant": "team-42x"})), None, "v1"),
        // exact / in / prefix on a list claim: any element.
        (
            e(json!({"groups": ["dev", "beta"]})),
            Some("group_beta"),
            "v3",
        ),
        (e(json!({"groups": ["dev", "sre"]})), Some("group_in"), "v3"),
        (
            e(json!({"groups": ["ext-partner"]})),
            Some("group_prefix"),
            "v3",
        ),
        (e(json!({"groups": ["dev"]})), None, "v1"),
        (e(json!({"canary_opt_in": true})), Some("opted_in"), "v2"),
        (e(json!({"canary_opt_in": "yes"})), Some("opted_in"), "v2"),
        // First match wins: staff is listed before group_beta.
        (e(json!({"groups": ["beta", "staff"]})), Some("staff"), "v2"),
    ]
}

fn check_claim_cases(envoy: &mut Envoy, sign: fn(&str) -> String) {
    for (c, want_rule, want_subset) in claim_cases() {
        let token = sign(&claims(c.clone()));
        let d = envoy.decide("/", &[("authorization", &bearer(&token))]);
        assert_eq!(
            (d.rule.as_deref(), d.subset.as_str(), d.status),
            (want_rule, want_subset, 200),
            "claims {c}: decision {d:?}"
        );
    }
}

#[test]
fn verified_claims_from_jwt_authn_route_by_rule() {
    let mut envoy = Envoy::start(&claims_config("verified").to_string(), Opts::default());
    check_claim_cases(&mut envoy, sign_hs256);
    // No token: no rule.
    let d = envoy.decide("/", &[]);
    assert_eq!(
        (d.rule, d.subset.as_str(), d.reason.as_str()),
        (None, "v1", "random")
    );
}

/// "No JWT, or an unreadable one: JWT rules do not match": `present: false` on
/// a claim matches a token without that claim, never a request without a token.
/// (what, headers, (rule, subset) wanted)
type Case<'a> = (
    &'a str,
    Vec<(&'a str, &'a [u8])>,
    (Option<&'a str>, &'a str),
);

#[test]
fn present_false_on_a_claim_needs_a_token() {
    // Both sources are checked before failing, so a failure shows both.
    let mut wrong = Vec::new();
    for source in ["verified", "payload_header", "unverified_bearer"] {
        let mut config = claims_config(source);
        config["rules"] = json!([claim_rule(
            "no_employee",
            "v3",
            "employee_id",
            json!({"present": false})
        )]);
        let opts = if source == "unverified_bearer" {
            Opts::default().without_jwt_authn()
        } else {
            Opts::default()
        };
        let mut envoy = Envoy::start(&config.to_string(), opts);
        let without = bearer(&sign_hs256(&claims(json!({"sub": "someone"}))));
        let with = bearer(&sign_hs256(&claims(
            json!({"sub": "someone", "employee_id": "e-1"}),
        )));
        let cases: Vec<Case<'_>> = vec![
            (
                "a token without the claim",
                vec![("authorization", &without)],
                (Some("no_employee"), "v3"),
            ),
            (
                "a token with the claim",
                vec![("authorization", &with)],
                (None, "v1"),
            ),
            ("no token at all", vec![], (None, "v1")),
            (
                "a bearer that is not a JWT",
                vec![("authorization", b"Bearer not-a-jwt")],
                (None, "v1"),
            ),
        ];
        for (what, headers, want) in cases {
            if source != "unverified_bearer" && what == "a bearer that is not a JWT" {
                continue; // jwt_authn answers 401 itself
            }
            let d = envoy.decide("/", &headers);
            if (d.rule.as_deref(), d.subset.as_str()) != want {
                wrong.push(format!("{source}, {what}: want {want:?}, got {d:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_bad_signature_is_refused_by_jwt_authn_and_never_reaches_v2() {
    let mut envoy = Envoy::start(&claims_config("verified").to_string(), Opts::default());
    let before = envoy.wasm_stats();
    let listener_before = envoy.stats();
    let bad_tokens = [
        sign_hs256_bad_signature(&claims(json!({"sub": "u1", "groups": ["staff"]}))),
        sign_hs256_bad_signature(&claims(json!({"tenant": "acme"}))),
        // Expired, correctly signed.
        sign_hs256(&claims(json!({"groups": ["staff"], "exp": 1_000_000_000}))),
        // Another issuer, correctly signed.
        {
            let mut c: Value = serde_json::from_str(&claims(json!({"groups": ["staff"]}))).unwrap();
            c["iss"] = "someone-else".into();
            sign_hs256(&c.to_string())
        },
    ];
    for t in &bad_tokens {
        for _ in 0..5 {
            let r = envoy.get("/", &[("authorization", &bearer(t))]);
            assert_eq!(r.status, 401, "jwt_authn refuses {t}");
            assert_eq!(r.served_by(), "", "no upstream served it");
        }
    }
    // The filter never saw them: none of its counters moved.
    assert_eq!(delta(&before, &envoy.wasm_stats()), Default::default());
    let after = envoy.stats();
    let v2_rq = |s: &std::collections::BTreeMap<String, u64>| {
        s.get("cluster.v2.upstream_rq_total").copied().unwrap_or(0)
    };
    assert_eq!(
        v2_rq(&after),
        v2_rq(&listener_before),
        "nothing reached cluster v2"
    );
    // The same claims, correctly signed, do reach v2.
    let good = sign_hs256(&claims(json!({"sub": "u1", "groups": ["staff"]})));
    let d = envoy.decide("/", &[("authorization", &bearer(&good))]);
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v2", Some("staff"))
    );
}

#[test]
fn unverified_bearer_decodes_claims_without_jwt_authn_and_warns() {
    let mut envoy = Envoy::start(
        &claims_config("unverified_bearer").to_string(),
        Opts::default().without_jwt_authn(),
    );
    let log = envoy.wait_for_log("WITHOUT checking the signature");
    let warning: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("canary-router") && l.contains("unverified"))
        .collect();
    assert!(
        !warning.is_empty() && warning.iter().all(|l| l.contains("[warning]")),
        "a configure-time warning saying claims are unverified; got {warning:?}"
    );
    // Nothing checks the signature here: any token's claims are used, which is
    // why this mode must be chosen explicitly.
    check_claim_cases(&mut envoy, sign_hs256);
    check_claim_cases(&mut envoy, sign_hs256_bad_signature);
    // A lowercase scheme is a bearer token too (RFC 9110 schemes are case-insensitive).
    let t = sign_hs256(&claims(json!({"groups": ["staff"]})));
    let d = envoy.decide("/", &[("authorization", format!("bearer {t}").as_bytes())]);
    assert_eq!(d.rule.as_deref(), Some("staff"));
    // Not a bearer token: no claims.
    let d = envoy.decide("/", &[("authorization", format!("Basic {t}").as_bytes())]);
    assert_eq!((d.rule, d.subset.as_str()), (None, "v1"));
}

#[test]
fn verified_mode_never_reads_the_bearer_token_itself() {
    // jwt_authn removed: no verified metadata. A perfectly valid token must not
    // be decoded by the filter in verified mode.
    let mut envoy = Envoy::start(
        &claims_config("verified").to_string(),
        Opts::default().without_jwt_authn(),
    );
    // Warnings are logged before this line: once it is there, none can follow.
    let log = envoy.wait_for_log("canary-router: configured in ");
    assert!(
        !log.lines()
            .any(|l| l.contains("canary-router") && l.contains("unverified")),
        "verified mode must not warn about unverified claims"
    );
    for c in [
        json!({"groups": ["staff"]}),
        json!({"tenant": "acme"}),
        json!({"sub": "vip"}),
    ] {
        let t = sign_hs256(&claims(c.clone()));
        let d = envoy.decide("/", &[("authorization", &bearer(&t))]);
        assert_eq!((d.rule, d.subset.as_str()), (None, "v1"), "claims {c}");
    }
}

#[test]
fn sub_claim_as_sticky_key() {
    let config = json!({
        "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
        "sticky": { "keys": [ {"jwt_claim": "sub"}, {"header": "x-user-id"} ], "seed": "jwt-sticky" }
    });
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());
    let users: Vec<String> = (0..40).map(|i| format!("jwt-user-{i}")).collect();
    let by_header: Vec<(String, String)> = users
        .iter()
        .map(|u| {
            let d = envoy.decide("/", &h(&[("x-user-id", u)]));
            assert_eq!(d.reason, "hash");
            (u.clone(), d.subset)
        })
        .collect();
    let on_v1: Vec<&String> = by_header
        .iter()
        .filter(|(_, s)| s == "v1")
        .map(|(u, _)| u)
        .collect();
    let on_v2: Vec<&String> = by_header
        .iter()
        .filter(|(_, s)| s == "v2")
        .map(|(u, _)| u)
        .collect();
    assert!(on_v1.len() >= 3 && on_v2.len() >= 3, "{by_header:?}");
    for (a, b) in on_v1.iter().zip(&on_v2) {
        for (sub, header, want) in [(a, b, "v1"), (b, a, "v2")] {
            // Two different tokens for the same sub: same subset, and the sub
            // (listed first) beats the x-user-id header.
            for exp_offset in [0u64, 1000] {
                let mut c: Value = serde_json::from_str(&claims(json!({"sub": sub}))).unwrap();
                c["exp"] = (c["exp"].as_u64().unwrap() + exp_offset).into();
                let t = sign_hs256(&c.to_string());
                let d = envoy.decide(
                    "/",
                    &[
                        ("authorization", &bearer(&t)),
                        ("x-user-id", header.as_bytes()),
                    ],
                );
                assert_eq!(
                    (d.subset.as_str(), d.reason.as_str()),
                    (want, "hash"),
                    "sub {sub} with x-user-id {header}"
                );
            }
        }
    }
    // A token without sub: the header is the key.
    let t = sign_hs256(&claims(json!({"groups": ["x"]})));
    let d = envoy.decide(
        "/",
        &[
            ("authorization", &bearer(&t)),
            ("x-user-id", on_v2[0].as_bytes()),
        ],
    );
    assert_eq!((d.subset.as_str(), d.reason.as_str()), ("v2", "hash"));
}

#[test]
fn payload_header_claims_route_like_metadata_claims() {
    // jwt_authn's forward_payload_header (x-jwt-payload in envoy/envoy.yaml):
    // the same verified claims, read with the header list instead of metadata.
    let mut envoy = Envoy::start(
        &claims_config("payload_header").to_string(),
        Opts::default(),
    );
    check_claim_cases(&mut envoy, sign_hs256);
    let d = envoy.decide("/", &[]);
    assert_eq!((d.rule, d.subset.as_str()), (None, "v1"));
    // A bad signature still stops at jwt_authn.
    let bad = sign_hs256_bad_signature(&claims(json!({"groups": ["staff"]})));
    assert_eq!(
        envoy.get("/", &[("authorization", &bearer(&bad))]).status,
        401
    );
}

#[test]
fn a_client_sent_payload_header_is_never_trusted() {
    let forged = b64url_encode(br#"{"sub":"vip","groups":["staff"],"tenant":"acme"}"#);
    let dev = bearer(&sign_hs256(&claims(
        json!({"sub": "u7", "groups": ["dev"]}),
    )));
    let config = claims_config("payload_header").to_string();

    // Shipped envoy.yaml: early_header_mutation drops the client's copy, so
    // only jwt_authn's copy (if any) reaches the filter.
    let mut envoy = Envoy::start(&config, Opts::default());
    for headers in [
        vec![("x-jwt-payload", forged.as_bytes())],
        vec![
            ("x-jwt-payload", forged.as_bytes()),
            ("authorization", dev.as_slice()),
        ],
    ] {
        let d = envoy.decide("/", &headers);
        assert_eq!((d.rule, d.subset.as_str()), (None, "v1"), "{headers:?}");
    }
    drop(envoy);

    // Without the early strip, jwt_authn appends its copy after the client's:
    // two copies mean a forgery, and the filter trusts neither.
    let mut envoy = Envoy::start(&config, Opts::default().without_early_strip());
    let d = envoy.decide(
        "/",
        &[
            ("x-jwt-payload", forged.as_bytes()),
            ("authorization", dev.as_slice()),
        ],
    );
    assert_eq!((d.rule, d.subset.as_str()), (None, "v1"));
    // The real token alone still works there.
    let staff = bearer(&sign_hs256(&claims(json!({"groups": ["staff"]}))));
    let d = envoy.decide("/", &[("authorization", staff.as_slice())]);
    assert_eq!(
        (d.rule.as_deref(), d.subset.as_str()),
        (Some("staff"), "v2")
    );
}

#[test]
fn switching_the_claim_source_moves_no_user() {
    // The same sub hashes to the same bucket whichever way the claims arrive.
    let config = |source: &str| {
        json!({
            "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
            "sticky": { "keys": [ {"jwt_claim": "sub"} ], "seed": "source-switch" },
            "jwt": jwt_section(source),
        })
        .to_string()
    };
    let tokens: Vec<Vec<u8>> = (0..30)
        .map(|i| bearer(&sign_hs256(&claims(json!({"sub": format!("s-{i}")})))))
        .collect();
    let mut by_source = Vec::new();
    for source in ["verified", "payload_header"] {
        let mut envoy = Envoy::start(&config(source), Opts::default());
        let subsets: Vec<String> = tokens
            .iter()
            .map(|t| {
                let d = envoy.decide("/", &[("authorization", t.as_slice())]);
                assert_eq!(d.reason, "hash", "{source}");
                d.subset
            })
            .collect();
        by_source.push(subsets);
    }
    assert_eq!(by_source[0], by_source[1]);
    assert!(by_source[0].iter().any(|s| s == "v1") && by_source[0].iter().any(|s| s == "v2"));
}
