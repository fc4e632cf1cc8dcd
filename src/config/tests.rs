use super::*;
use crate::request::JwtSource;
use crate::rules::{Condition, Input, Operator};

pub(crate) const CONTRACT: &str = r#"{
  "subsets": [ {"name": "v1", "weight": 90}, {"name": "v2", "weight": 10} ],
  "default_subset": "v1",
  "header": "x-canary-subset",
  "metrics_prefix": "canary",
  "sticky": {
    "keys": [ {"jwt_claim": "sub"}, {"cookie": "session_id"}, {"header": "x-user-id"} ],
    "seed": "api-2026-11"
  },
  "jwt": { "source": "verified", "metadata_key": "payload" },
  "rules": [
    {"name": "qa",      "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
    {"name": "beta",    "subset": "v2", "match": {"cookie": {"name": "beta", "exact": "true"}}},
    {"name": "staff",   "subset": "v2", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
    {"name": "tenants", "subset": "v2", "match": {"jwt_claim": {"name": "tenant", "in": ["acme", "globex"]}}},
    {"name": "legacy",  "subset": "v1", "match": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}}
  ]
}"#;

fn err(json: &str) -> String {
    load(json.as_bytes()).unwrap_err().to_string()
}

#[test]
fn the_contract_example_compiles() {
    let loaded = load(CONTRACT.as_bytes()).unwrap();
    let r = &loaded.plan;
    assert_eq!(r.subsets, ["v1", "v2"]);
    assert_eq!(r.weights_bp, [9000, 1000]);
    assert_eq!(r.default_subset, 0);
    assert_eq!(r.header, "x-canary-subset");
    assert_eq!(r.seed, "api-2026-11");
    assert_eq!(
        r.jwt,
        JwtSource::Verified {
            metadata_key: "payload".into()
        }
    );
    assert_eq!(r.rules.len(), 5);
    let labels: Vec<&str> = r.sticky_keys.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(
        labels,
        ["jwt_claim:sub", "cookie:session_id", "header:x-user-id"]
    );
    assert!(loaded.warnings.is_empty());
    assert_eq!(
        r.metrics.rule_matches[2],
        "canary.rule=.=staff;.;rule_matches"
    );
}

#[test]
fn only_subsets_is_required() {
    let r = load(br#"{"subsets":[{"name":"stable","weight":100}]}"#)
        .unwrap()
        .plan;
    assert_eq!(r.default_subset, 0);
    assert_eq!(r.header, "x-canary-subset");
    assert_eq!(
        r.metrics.requests[0][0],
        "canary.subset=.=stable;.;reason=.=rule;.;requests"
    );
    assert!(r.sticky_keys.is_empty());
    assert!(r.rules.is_empty());
    assert_eq!(
        r.jwt,
        JwtSource::Verified {
            metadata_key: "payload".into()
        }
    );
}

#[test]
fn names_are_normalised_and_compiled() {
    let r = load(
        br#"{"subsets":[{"name":"a","weight":50},{"name":"b","weight":50}],
             "header":"X-Route-To", "default_subset":"b",
             "rules":[{"name":"r","subset":"b","match":{"header":{"name":"X-Tenant","in":["x","y"]}}},
                      {"name":"n","subset":"a","match":{"jwt_claim":{"name":"realm_access.roles","regex":"adm.*"}}}]}"#,
    )
    .unwrap()
    .plan;
    assert_eq!(r.header, "x-route-to");
    assert_eq!(r.default_subset, 1);
    let rules = r.rules.rules();
    let test = |i: usize| match &rules[i].condition {
        Condition::Test(test) => test.clone(),
        other => panic!("rule {i}: {other:?}"),
    };
    assert!(matches!(test(0).input, Input::Header(h) if r.slots.header_name(h) == "x-tenant"));
    assert!(matches!(&test(0).operator, Operator::In(set) if set.len() == 2));
    assert!(
        matches!(test(1).input, Input::Claim(p) if r.slots.claim_path(p) == ["realm_access", "roles"])
    );
}

#[test]
fn weights_in_hundredths() {
    let r = load(br#"{"subsets":[{"name":"a","weight":66.67},{"name":"b","weight":33.33}]}"#)
        .unwrap()
        .plan;
    assert_eq!(r.weights_bp, [6667, 3333]);
    let r = load(br#"{"subsets":[{"name":"a","weight":99.99},{"name":"b","weight":0.01}]}"#)
        .unwrap()
        .plan;
    assert_eq!(r.weights_bp, [9999, 1]);
}

#[test]
fn one_line_errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("", "config: (root): configuration is empty; want a JSON object with at least \"subsets\""),
        ("  \n", "config: (root): configuration is empty"),
        ("{}", "config: (root): missing field `subsets`"),
        ("{\"subsets\": [", "config: (root): invalid JSON: EOF while parsing a list at line 1 column 13"),
        ("[1]", "config: (root): want a JSON object"),
        ("not json", "config: (root): invalid JSON: expected ident at line 1 column 2"),
        ("\"v1\"", "config: (root): want a JSON object"),
        (r#"{"subsets":[{"name":"v1","weight":100}]} x"#, "config: (root): invalid JSON: trailing characters at line 1 column 42"),
        (r#"{"subsets":[]}"#, "config: subsets: want 1 to 16 subsets, got 0"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":30}]}"#,
            "config: subsets[1].weight: weights sum to 120, want 100"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":9.99}]}"#,
            "config: subsets[1].weight: weights sum to 99.99, want 100"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","wieght":10}]}"#,
            "config: subsets[1].wieght: unknown field `wieght`, expected `name` or `weight`"),
        (r#"{"subsets":[{"name":"v1","weight":90.005},{"name":"v2","weight":9.995}]}"#,
            "config: subsets[0].weight: 90.005 has more than two decimals"),
        (r#"{"subsets":[{"name":"v1","weight":-1},{"name":"v2","weight":101}]}"#,
            "config: subsets[0].weight: -1 is not a percentage between 0 and 100"),
        (r#"{"subsets":[{"name":"v1","weight":"100"}]}"#,
            "config: subsets[0].weight: want a number, got the string \"100\""),
        (r#"{"subsets":[{"name":"V1","weight":100}]}"#,
            "config: subsets[0].name: \"V1\" is not a valid subset name (want [a-z0-9][a-z0-9_-]{0,62})"),
        (r#"{"subsets":[{"name":"v1","weight":50},{"name":"v1","weight":50}]}"#,
            "config: subsets[1].name: duplicate subset \"v1\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"default_subset":"v3"}"#,
            "config: default_subset: \"v3\" is not a listed subset (have v1)"),
        (r#"{"subsets":[{"name":"v1","weight":50},{"name":"v2","weight":25},{"name":"v4","weight":25}],"default_subset":"v3"}"#,
            "config: default_subset: \"v3\" is not a listed subset (have v1, v2, v4)"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"header":"bad header"}"#,
            "config: header: \"bad header\" is not a valid HTTP header name"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"metrics_prefix":"a..b"}"#,
            "config: metrics_prefix: \"a..b\" is not a valid stats prefix"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"trust-me"}}"#,
            "config: jwt.source: unknown source \"trust-me\", expected \"verified\", \"payload_header\" or \"unverified_bearer\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"payload_header","metadata_key":"p"}}"#,
            "config: jwt.metadata_key: only applies to source \"verified\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"header":"x-jwt-payload"}}"#,
            "config: jwt.header: only applies to source \"payload_header\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"payload_header","header":"x jwt"}}"#,
            "config: jwt.header: \"x jwt\" is not a valid HTTP header name"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"payload_header","header":"X-Canary-Subset"}}"#,
            "config: jwt.header: \"x-canary-subset\" is the decision header, which the filter overwrites"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"unverified_bearer","metadata_key":"p"}}"#,
            "config: jwt.metadata_key: only applies to source \"verified\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"keys":[{"cookie":"a","header":"b"}]}}"#,
            "config: sticky.keys[0]: want exactly one of jwt_claim, cookie, header, baggage; got 2 (cookie, header)"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"keys":[{}]}}"#,
            "config: sticky.keys[0]: want exactly one of jwt_claim, cookie, header, baggage; got none"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"keys":[{"jwt_claim":"a..b"}]}}"#,
            "config: sticky.keys[0].jwt_claim: \"a..b\" is not a claim name or dotted path"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"seeds":"x"}}"#,
            "config: sticky.seeds: unknown field `seeds`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v2","match":{"header":{"name":"a","exact":"b"}}}]}"#,
            "config: rules[0].subset: \"v2\" is not a listed subset (have v1)"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","exact":"b","prefix":"c"}}}]}"#,
            "config: rules[0].match.header: want exactly one of exact, prefix, present, in, contains, regex; got 2 (exact, prefix)"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a"}}}]}"#,
            "config: rules[0].match.header: want exactly one of exact, prefix, present, in, contains, regex; got none"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","exat":"b"}}}]}"#,
            "config: rules[0].match.header.exat: unknown field `exat`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{}}]}"#,
            "config: rules[0].match: want exactly one of header, cookie, jwt_claim, path, method, host, query, baggage, all, any, not; got none"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","exact":"b"},"cookie":{"name":"a","exact":"b"}}}]}"#,
            "config: rules[0].match: want exactly one of header, cookie, jwt_claim, path, method, host, query, baggage, all, any, not; got 2 (header, cookie)"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","regex":"(unclosed"}}}]}"#,
            "config: rules[0].match.header.regex: invalid regex \"(unclosed\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","in":[]}}}]}"#,
            "config: rules[0].match.header.in: empty list: the rule could never match"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"jwt_claim":{"name":"scope","contains":"a b"}}}]}"#,
            "config: rules[0].match.jwt_claim.contains: want one non-empty token"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"R.1","subset":"v1","match":{"header":{"name":"a","exact":"b"}}}]}"#,
            "config: rules[0].name: \"R.1\" is not a valid rule name"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","exact":"b"}}},{"name":"r","subset":"v1","match":{"cookie":{"name":"a","exact":"b"}}}]}"#,
            "config: rules[1].name: duplicate rule name \"r\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"cookie":{"name":"a;b","exact":"b"}}}]}"#,
            "config: rules[0].match.cookie.name: \"a;b\" is not a valid cookie name"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","present":"yes"}}}]}"#,
            "config: rules[0].match.header.present: want true or false, got the string \"yes\""),
        (r#"{"subsets":{"name":"v1"}}"#, "config: subsets: want a list, got an object"),
        (r#"{"subsets":[["v1",100]]}"#, "config: subsets[0]: want an object, got a list"),
        (r#"{"subsets":[{"name":"v1"}]}"#, "config: subsets[0]: missing field `weight`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1","match":{"header":{"name":"a","in":["x",1]}}}]}"#,
            "config: rules[0].match.header.in[1]: want a string, got the number 1"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"keys":{"header":"x"}}}"#,
            "config: sticky.keys: want a list, got an object"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"rules":[{"name":"r","subset":"v1"}]}"#,
            "config: rules[0]: missing field `match`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"wieght":1}"#,
            "config: wieght: unknown field `wieght`, expected one of `subsets`, `default_subset`, `header`, `metrics_prefix`, `sticky`, `jwt`, `rules`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"mode":"dry-run"}"#,
            "config: mode: unknown mode \"dry-run\", expected \"enforce\" or \"shadow\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"decision_header":"x decision"}"#,
            "config: decision_header: \"x decision\" is not a valid HTTP header name"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"decision_header":true}"#,
            "config: decision_header: want a header name or {\"name\": ..., \"match\": condition}"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"decision_header":{"match":{"path":{"prefix":"/"}}}}"#,
            "config: decision_header: missing field `name`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"decision_header":{"name":"x d"}}"#,
            "config: decision_header.name: \"x d\" is not a valid HTTP header name"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"decision_header":{"name":"x-d","when":{}}}"#,
            "config: decision_header.when: unknown field `when`, expected `name` or `match`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"decision_header":{"name":"x-d","match":{"jwt_claim":{"name":"groups"}}}}"#,
            "config: decision_header.match.jwt_claim"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{}}}"#,
            "config: sticky.pin_cookie: missing field `name`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"p","maxage":1}}}"#,
            "config: sticky.pin_cookie.maxage: unknown field `maxage`"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"p","max_age":0}}}"#,
            "config: sticky.pin_cookie.max_age: 0 would delete the pin at once"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"p","max_age":-5}}}"#,
            "config: sticky.pin_cookie.max_age: want a whole number of seconds, got the number -5"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"p","same_site":"lax"}}}"#,
            "config: sticky.pin_cookie.same_site: \"lax\" is not one of \"Strict\", \"Lax\", \"None\""),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"p","same_site":"None","secure":false}}}"#,
            "config: sticky.pin_cookie.same_site: \"None\" needs \"secure\": true"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"p","path":"app"}}}"#,
            "config: sticky.pin_cookie.path: \"app\" is not a cookie path"),
        (r#"{"subsets":[{"name":"v1","weight":100}],"x\nconfig: injected":1}"#,
            "config: \"x\\nconfig: injected\": unknown field `\"x\\nconfig: injected\"`"),
        (r#"{"":0}"#, "config: \"\": unknown field `\"\"`"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v1","start":"2026-12-01T10:00:00Z","steps":[{"weight":100}]}}"#,
            "config: ramp.subset: must be the last of at least two listed subsets"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v3","start":"2026-12-01T10:00:00Z","steps":[{"weight":100}]}}"#,
            "config: ramp.subset: \"v3\" is not a listed subset"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"tomorrow","steps":[{"weight":100}]}}"#,
            "config: ramp.start: \"tomorrow\" is not an RFC 3339 time"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z","steps":[]}}"#,
            "config: ramp.steps: want at least one step"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z","steps":[{"weight":50,"hold":"5m"},{"weight":10}]}}"#,
            "config: ramp.steps[1].weight: steps must not decrease"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z","steps":[{"weight":10,"hold":"5 minutes"},{"weight":100}]}}"#,
            "config: ramp.steps[0].hold: \"5 minutes\" is not a duration"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z","steps":[{"weight":10},{"weight":100}]}}"#,
            "config: ramp.steps[0]: missing field `hold`"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z","steps":[{"weight":100,"hold":"1m"}]}}"#,
            "config: ramp.steps[0].hold: the last step holds forever"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z","steps":[{"weight":101}]}}"#,
            "config: ramp.steps[0].weight: 101 is not a percentage between 0 and 100"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"brake":{"subset":"v1","max_error_rate":0.01}}"#,
            "config: brake.subset: must not be the default subset"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"brake":{"subset":"v2"}}"#,
            "config: brake.max_error_rate: want max_error_rate, max_p99_ms or both"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"brake":{"subset":"v2","max_error_rate":5}}"#,
            "config: brake.max_error_rate: want a fraction from 0 to 1"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"brake":{"subset":"v2","max_error_rate":0.01,"window":"30 s"}}"#,
            "config: brake.window: \"30 s\" is not a duration"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"brake":{"subset":"v2","max_error_rate":0.01,"cooldown":"soon"}}"#,
            "config: brake.cooldown: \"soon\" is not a duration"),
        (r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"brake":{"subset":"v2","max_error_rate":0.01,"windw":"30s"}}"#,
            "config: brake.windw: unknown field `windw`"),
    ];
    for (json, want) in cases {
        let got = err(json);
        assert!(
            got.starts_with(want),
            "config {json}\n got: {got}\nwant: {want}…"
        );
        assert!(!got.contains('\n'), "one line: {got}");
    }
}

#[test]
fn seventeen_subsets_are_refused() {
    let subsets: Vec<String> = (0..17)
        .map(|i| {
            format!(
                r#"{{"name":"s{i}","weight":{}}}"#,
                if i == 0 { 100 } else { 0 }
            )
        })
        .collect();
    let json = format!(r#"{{"subsets":[{}]}}"#, subsets.join(","));
    assert_eq!(err(&json), "config: subsets: want 1 to 16 subsets, got 17");
}

#[test]
fn unverified_claims_warn() {
    let loaded = load(
        br#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"unverified_bearer"},
             "sticky":{"keys":[{"jwt_claim":"sub"}]}}"#,
    )
    .unwrap();
    assert_eq!(loaded.plan.jwt, JwtSource::UnverifiedBearer);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("WITHOUT checking the signature"));
}

#[test]
fn payload_header_source_defaults_to_x_jwt_payload() {
    let source = |json: &str| load(json.as_bytes()).unwrap().plan.jwt;
    assert_eq!(
        source(r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"payload_header"}}"#),
        JwtSource::PayloadHeader {
            header: "x-jwt-payload".into()
        }
    );
    assert_eq!(
        source(
            r#"{"subsets":[{"name":"v1","weight":100}],"jwt":{"source":"payload_header","header":"X-Claims"}}"#
        ),
        JwtSource::PayloadHeader {
            header: "x-claims".into()
        }
    );
}

#[test]
fn issue_3_fields_compile_with_defaults() {
    let r = load(
        br#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"pin_cookie":{"name":"canary_pin"}},
             "decision_header":"X-Canary-Decision","mode":"shadow"}"#,
    )
    .unwrap()
    .plan;
    let header = r.decision_header.unwrap();
    assert_eq!(header.name, "x-canary-decision");
    assert!(header.only_for.is_none());
    assert_eq!(r.mode, crate::plan::Mode::Shadow);
    let pin = r.pin.unwrap();
    let id = crate::pin::PinId::from_random([1; 16]);
    assert_eq!(
        pin.set_cookie(&id),
        format!(
            "canary_pin={}; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax",
            id.as_str()
        )
    );
    let plain = load(br#"{"subsets":[{"name":"v1","weight":100}]}"#)
        .unwrap()
        .plan;
    assert_eq!(
        (plain.pin, plain.decision_header.is_none(), plain.mode),
        (None, true, crate::plan::Mode::Enforce)
    );
}

#[test]
fn brake_defaults_and_reset_key() {
    let r = load(
        br#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"sticky":{"seed":"s"},
             "brake":{"subset":"v2","max_p99_ms":500}}"#,
    )
    .unwrap()
    .plan;
    let b = r.brake.clone().unwrap();
    assert_eq!(
        (b.window_ms, b.min_requests, b.cooldown_ms, b.stop_rules),
        (30_000, 50, None, true)
    );
    assert_eq!((b.max_error_rate, b.max_p99_ms), (1.0, Some(500)));
    let key = r.brake_key().unwrap();
    assert!(key.starts_with("canary-router/brake/canary/v2/"), "{key}");
    // A new seed, new weights or a reset token: another window.
    for other in [
        r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"sticky":{"seed":"t"},"brake":{"subset":"v2","max_p99_ms":500}}"#,
        r#"{"subsets":[{"name":"v1","weight":80},{"name":"v2","weight":20}],"sticky":{"seed":"s"},"brake":{"subset":"v2","max_p99_ms":500}}"#,
        r#"{"subsets":[{"name":"v1","weight":90},{"name":"v2","weight":10}],"sticky":{"seed":"s"},"brake":{"subset":"v2","max_p99_ms":500,"reset":"1"}}"#,
    ] {
        assert_ne!(
            load(other.as_bytes()).unwrap().plan.brake_key().unwrap(),
            key
        );
    }
}

#[test]
fn bad_conditions_name_the_field() {
    let rule = |r: &str| {
        err(&format!(
            r#"{{"subsets":[{{"name":"v1","weight":100}}],"rules":[{{"name":"r","subset":"v1",{r}}}]}}"#
        ))
    };
    let cases = [
        (
            r#""match":{"all":[]}"#,
            "config: rules[0].match.all: empty `all`: want at least one condition",
        ),
        (
            r#""match":{"any":[{"path":{"prefix":"/a"}},{"all":[]}]}"#,
            "config: rules[0].match.any[1].all: empty `all`: want at least one condition",
        ),
        (
            r#""match":{"not":[{"path":{"prefix":"/a"}}]}"#,
            "config: rules[0].match.not: `not` takes one condition, not a list (wrap a list in `any` or `all`)",
        ),
        (
            r#""match":{"all":[{"path":{"prefix":"/a"}},{"uri":{"prefix":"/a"}}]}"#,
            "config: rules[0].match.all[1].uri: unknown field `uri`, expected one of `header`, `cookie`, `jwt_claim`, `path`, `method`, `host`, `query`, `baggage`, `all`, `any`, `not`",
        ),
        (
            r#""match":{"path":{"name":"x","prefix":"/a"}}"#,
            "config: rules[0].match.path.name: unknown field `name`, expected one of `exact`, `prefix`, `present`, `in`, `contains`, `regex`",
        ),
        (
            r#""match":{"query":{"name":"","exact":"1"}}"#,
            "config: rules[0].match.query.name: empty query parameter name",
        ),
        (
            r#""match":{"path":{"prefix":"/a"}},"percent":100.5"#,
            "config: rules[0].percent: 100.5 is outside 0..100",
        ),
        (
            r#""match":{"path":{"prefix":"/a"}},"percent":12.345"#,
            "config: rules[0].percent: 12.345 has more than two decimals (steps are 0.01)",
        ),
        (
            r#""match":{"path":{"prefix":"/a"}},"percent":"20""#,
            "config: rules[0].percent: want a number from 0 to 100, got the string \"20\"",
        ),
    ];
    for (config, want) in cases {
        assert_eq!(rule(config), want, "{config}");
    }
    // Depth: 8 levels are fine, 9 are not.
    let nest = |levels: usize| {
        let mut c = r#"{"path":{"prefix":"/a"}}"#.to_string();
        for _ in 1..levels {
            c = format!(r#"{{"not":{c}}}"#);
        }
        format!(r#""match":{c}"#)
    };
    assert!(load(
        format!(r#"{{"subsets":[{{"name":"v1","weight":100}}],"rules":[{{"name":"r","subset":"v1",{}}}]}}"#, nest(8)).as_bytes()
    )
    .is_ok());
    assert!(
        rule(&nest(9)).ends_with("conditions nest deeper than 8 levels"),
        "{}",
        rule(&nest(9))
    );
    // Size: 64 tests are fine, 65 are not.
    let many = |n: usize| {
        let tests: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"header":{{"name":"x-{i}","present":true}}}}"#))
            .collect();
        format!(r#""match":{{"any":[{}]}}"#, tests.join(","))
    };
    assert!(load(
        format!(r#"{{"subsets":[{{"name":"v1","weight":100}}],"rules":[{{"name":"r","subset":"v1",{}}}]}}"#, many(64)).as_bytes()
    )
    .is_ok());
    assert_eq!(
        rule(&many(65)),
        "config: rules[0].match: 65 tests in one condition; at most 64"
    );
}

#[test]
fn cohort_block_names_its_members_and_trust() {
    let base = r#"{"subsets":[{"name":"v1","weight":100}],"cohort":"#;
    let plan =
        |cohort: &str| crate::config::load(format!("{base}{cohort}}}").as_bytes()).map(|l| l.plan);
    let c = plan("{}").unwrap().cohort.unwrap();
    assert_eq!(
        (c.bucket.as_str(), c.force.as_str(), c.trust_incoming),
        ("canary-bucket", "canary-force", false)
    );
    let c = plan(r#"{"bucket":"b","force":"f","trust_incoming":true}"#)
        .unwrap()
        .cohort
        .unwrap();
    assert_eq!(
        (c.bucket.as_str(), c.force.as_str(), c.trust_incoming),
        ("b", "f", true)
    );
    assert_eq!(
        err(&format!(r#"{base}{{"bucket":"a b"}}}}"#)),
        "config: cohort.bucket: \"a b\" is not a valid HTTP header name"
    );
    assert_eq!(
        err(&format!(r#"{base}{{"force":"canary-bucket"}}}}"#)),
        "config: cohort.force: must differ from `bucket`"
    );
    assert!(err(&format!(r#"{base}{{"incoming":"strip"}}}}"#))
        .starts_with("config: cohort.incoming: unknown field"));
    assert!(err(&format!(r#"{base}{{"trust_incoming":"yes"}}}}"#))
        .starts_with("config: cohort.trust_incoming:"));
    assert_eq!(
        err(r#"{"subsets":[{"name":"v1","weight":100}],"sticky":{"keys":[{"baggage":""}]}}"#),
        "config: sticky.keys[0].baggage: \"\" is not a valid HTTP header name"
    );
}

#[test]
fn grpc_failure_codes_by_name_or_number_with_errors_naming_the_entry() {
    let base = r#"{"subsets":[{"name":"v1","weight":100}]"#;
    let plan =
        |grpc: &str| crate::config::load(format!("{base}{grpc}}}").as_bytes()).map(|l| l.plan);
    let default = plan("").unwrap().grpc;
    assert_eq!(default, crate::grpc::GrpcPolicy::default());
    assert_eq!(plan(r#","grpc":{}"#).unwrap().grpc, default);
    let custom = plan(r#","grpc":{"failure_codes":["NOT_FOUND",14]}"#)
        .unwrap()
        .grpc;
    assert_eq!(custom.failure_codes().collect::<Vec<_>>(), [5, 14]);
    let none = plan(r#","grpc":{"failure_codes":[]}"#).unwrap().grpc;
    assert_eq!(none.failure_codes().count(), 0);
    for (grpc, want) in [
        (
            r#","grpc":{"failure_codes":["UNAVAILABLE","Unavailable"]}"#,
            "grpc.failure_codes[1]: unknown gRPC status \"Unavailable\", expected a name such as \"UNAVAILABLE\"",
        ),
        (
            r#","grpc":{"failure_codes":["OK"]}"#,
            "grpc.failure_codes[0]: OK (0) is a success and cannot count as a failure",
        ),
        (
            r#","grpc":{"failure_codes":[14,"UNAVAILABLE"]}"#,
            "grpc.failure_codes[1]: UNAVAILABLE is listed twice",
        ),
        (
            r#","grpc":{"failure_codes":[17]}"#,
            "grpc.failure_codes[0]: not a gRPC status code",
        ),
        (
            r#","grpc":{"failure_codes":[true]}"#,
            "grpc.failure_codes[0]: want a gRPC status name or number, got a boolean",
        ),
        (r#","grpc":{"failures":[]}"#, "grpc.failures: unknown field `failures`, expected `failure_codes`"),
    ] {
        let got = err(&format!("{base}{grpc}}}"));
        assert!(got.contains(want), "{grpc}: {got}");
    }
}
