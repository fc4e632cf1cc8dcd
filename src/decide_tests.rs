//! Decision tests over the contract's example, through a test double of the
//! request (headers, cookies and claims as a user would send them).

use std::borrow::Cow;

use serde_json::{json, Value};

use super::*;
use crate::claims::{self, Claim, ClaimPath};
use crate::config::load;
use crate::request::{Headers, Lookup, LookupError};

const CONTRACT: &str = include_str!("../envoy/canary.json");

/// A request: headers, and claims as a JWT payload would carry them.
#[derive(Default)]
struct Fake {
    headers: Vec<(String, Vec<u8>)>,
    claims: Option<Value>,
    broken: bool,
}

impl Fake {
    fn new() -> Fake {
        Fake::default()
    }
    fn header(mut self, name: &str, value: &str) -> Fake {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }
    fn claims(mut self, claims: Value) -> Fake {
        self.claims = Some(claims);
        self
    }
    fn broken(mut self) -> Fake {
        self.broken = true;
        self
    }
    fn view(&self) -> Headers {
        Headers::new(self.headers.clone())
    }
}

impl RequestView for Fake {
    fn header(&self, name: &str) -> Lookup<Cow<'_, [u8]>> {
        if self.broken {
            return Err(LookupError);
        }
        Ok(self.view().get(name).map(|v| Cow::Owned(v.into_owned())))
    }
    fn cookie(&self, name: &str) -> Lookup<&[u8]> {
        if self.broken {
            return Err(LookupError);
        }
        Ok(self
            .headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .find_map(|(_, v)| crate::cookie::find(v, name.as_bytes())))
    }
    fn claim(&self, path: &ClaimPath) -> Lookup<Claim> {
        Ok(match &self.claims {
            Some(Value::Object(map)) => claims::lookup(map, path),
            _ => None,
        })
    }
    fn has_claims(&self) -> Result<bool, LookupError> {
        Ok(self.claims.is_some())
    }
}

fn router(json: &str) -> Router {
    load(json.as_bytes()).unwrap().router
}

fn no_random() -> u64 {
    panic!("a random draw was not expected")
}

fn decide_on(router: &Router, request: &Fake) -> (String, Reason, Option<String>) {
    let d = decide(router, request, no_random);
    let rule = d.rule.map(|i| router.rules.rules()[i].name.clone());
    (router.subset_name(d.subset).to_owned(), d.reason, rule)
}

fn rule_hit(router: &Router, request: Fake) -> Option<String> {
    decide_on(router, &request).2
}

#[test]
fn contract_rules_route_and_first_match_wins() {
    let r = router(CONTRACT);
    assert_eq!(
        rule_hit(&r, Fake::new().header("x-canary", "always")).as_deref(),
        Some("qa")
    );
    assert_eq!(
        rule_hit(
            &r,
            Fake::new()
                .header("x-canary", "never")
                .header("x-user-id", "u")
        ),
        None
    );
    assert_eq!(
        rule_hit(&r, Fake::new().header("cookie", "a=1; beta=true; c=2")).as_deref(),
        Some("beta")
    );
    assert_eq!(
        rule_hit(&r, Fake::new().claims(json!({"groups": ["dev", "staff"]}))).as_deref(),
        Some("staff")
    );
    assert_eq!(
        rule_hit(&r, Fake::new().claims(json!({"tenant": "globex"}))).as_deref(),
        Some("tenants")
    );
    assert_eq!(
        rule_hit(&r, Fake::new().header("user-agent", "LegacyApp/2.1")).as_deref(),
        Some("legacy")
    );
    // Several rules match: the first listed wins (qa before legacy).
    let both = Fake::new()
        .header("user-agent", "LegacyApp/2.1")
        .header("x-canary", "always");
    assert_eq!(
        decide_on(&r, &both),
        ("v2".into(), Reason::Rule, Some("qa".into()))
    );
    let legacy = Fake::new()
        .header("user-agent", "LegacyApp/2.1")
        .header("x-user-id", "u1");
    assert_eq!(
        decide_on(&r, &legacy),
        ("v1".into(), Reason::Rule, Some("legacy".into()))
    );
}

#[test]
fn rules_beat_weights() {
    let r = router(
        r#"{"subsets":[{"name":"v1","weight":100},{"name":"v2","weight":0}],
            "sticky":{"keys":[{"header":"x-user-id"}]},
            "rules":[{"name":"qa","subset":"v2","match":{"header":{"name":"x-canary","exact":"always"}}}]}"#,
    );
    let req = Fake::new()
        .header("x-user-id", "u1")
        .header("x-canary", "always");
    assert_eq!(decide_on(&r, &req).0, "v2");
}

fn one_rule(source: &str, op: Value) -> Router {
    let (kind, name) = source.split_once(':').unwrap();
    let mut operand = json!({"name": name});
    for (k, v) in op.as_object().unwrap() {
        operand[k] = v.clone();
    }
    let config = json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "rules": [{"name": "r", "subset": "v2", "match": {kind: operand}}]
    });
    router(&config.to_string())
}

fn hits(r: &Router, req: Fake) -> bool {
    let d = decide(r, &req, || 0);
    d.reason == Reason::Rule
}

#[test]
fn header_operators() {
    let exact = one_rule("header:X-Tenant", json!({"exact": "acme"}));
    assert!(hits(&exact, Fake::new().header("x-tenant", "acme")));
    assert!(!hits(&exact, Fake::new().header("x-tenant", "acme2")));
    assert!(!hits(&exact, Fake::new().header("x-tenant", "ACME")));
    assert!(!hits(&exact, Fake::new()));
    // A header sent twice is matched on its values joined with ",".
    let joined = one_rule("header:x-tenant", json!({"exact": "a,b"}));
    assert!(hits(
        &joined,
        Fake::new().header("x-tenant", "a").header("x-tenant", "b")
    ));
    assert!(!hits(
        &exact,
        Fake::new()
            .header("x-tenant", "acme")
            .header("x-tenant", "b")
    ));

    let prefix = one_rule("header:user-agent", json!({"prefix": "LegacyApp/"}));
    assert!(hits(
        &prefix,
        Fake::new().header("user-agent", "LegacyApp/1")
    ));
    assert!(!hits(
        &prefix,
        Fake::new().header("user-agent", "Mozilla LegacyApp/1")
    ));

    let present = one_rule("header:x-debug", json!({"present": true}));
    assert!(hits(&present, Fake::new().header("x-debug", "")));
    assert!(!hits(&present, Fake::new()));
    let absent = one_rule("header:x-debug", json!({"present": false}));
    assert!(hits(&absent, Fake::new()));
    assert!(!hits(&absent, Fake::new().header("x-debug", "1")));

    let list: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
    let within = one_rule("header:x-tenant", json!({"in": list}));
    assert!(hits(&within, Fake::new().header("x-tenant", "tenant-9999")));
    assert!(!hits(
        &within,
        Fake::new().header("x-tenant", "tenant-10000")
    ));

    let contains = one_rule("header:x-features", json!({"contains": "dark"}));
    assert!(hits(
        &contains,
        Fake::new().header("x-features", "a, dark,b")
    ));
    assert!(!hits(&contains, Fake::new().header("x-features", "darker")));

    let regex = one_rule("header:x-version", json!({"regex": "2\\.[0-9]+"}));
    assert!(hits(&regex, Fake::new().header("x-version", "2.15")));
    // Full match: a substring is not enough.
    assert!(!hits(&regex, Fake::new().header("x-version", "12.15")));
    assert!(!hits(&regex, Fake::new().header("x-version", "2.15-beta")));
}

#[test]
fn cookie_operators() {
    let exact = one_rule("cookie:beta", json!({"exact": "true"}));
    assert!(hits(&exact, Fake::new().header("cookie", "x=1; beta=true")));
    assert!(hits(
        &exact,
        Fake::new()
            .header("cookie", "x=1")
            .header("cookie", "beta=true")
    ));
    assert!(!hits(
        &exact,
        Fake::new().header("cookie", "beta=false; beta=true")
    ));
    assert!(!hits(&exact, Fake::new().header("x-beta", "true")));
    let present = one_rule("cookie:beta", json!({"present": true}));
    assert!(hits(&present, Fake::new().header("cookie", "beta=")));
    assert!(!hits(&present, Fake::new().header("cookie", "betamax=1")));
    let regex = one_rule("cookie:plan", json!({"regex": "(gold|platinum)"}));
    assert!(hits(&regex, Fake::new().header("cookie", "plan=gold")));
    assert!(!hits(&regex, Fake::new().header("cookie", "plan=silver")));
}

#[test]
fn claim_operators() {
    let staff = one_rule("jwt_claim:groups", json!({"contains": "staff"}));
    assert!(hits(
        &staff,
        Fake::new().claims(json!({"groups": ["staff"]}))
    ));
    assert!(!hits(
        &staff,
        Fake::new().claims(json!({"groups": ["staffing"]}))
    ));
    assert!(hits(
        &staff,
        Fake::new().claims(json!({"groups": "dev staff"}))
    ));
    assert!(!hits(
        &staff,
        Fake::new().claims(json!({"groups": {"staff": true}}))
    ));
    assert!(!hits(&staff, Fake::new()));

    let nested = one_rule(
        "jwt_claim:realm_access.roles",
        json!({"in": ["admin", "ops"]}),
    );
    assert!(hits(
        &nested,
        Fake::new().claims(json!({"realm_access": {"roles": ["user", "ops"]}}))
    ));
    assert!(!hits(
        &nested,
        Fake::new().claims(json!({"realm_access": {"roles": ["user"]}}))
    ));
    assert!(!hits(
        &nested,
        Fake::new().claims(json!({"realm_access": "ops"}))
    ));

    let number = one_rule("jwt_claim:level", json!({"exact": "3"}));
    assert!(hits(&number, Fake::new().claims(json!({"level": 3}))));
    let boolean = one_rule("jwt_claim:email_verified", json!({"exact": "true"}));
    assert!(hits(
        &boolean,
        Fake::new().claims(json!({"email_verified": true}))
    ));
    let prefix = one_rule("jwt_claim:email", json!({"prefix": "qa+"}));
    assert!(hits(
        &prefix,
        Fake::new().claims(json!({"email": "qa+1@example.com"}))
    ));
    let absent = one_rule("jwt_claim:employee_id", json!({"present": false}));
    assert!(hits(&absent, Fake::new().claims(json!({"sub": "guest"}))));
    assert!(!hits(
        &absent,
        Fake::new().claims(json!({"employee_id": "e1"}))
    ));
    // No token at all: no claim rule matches, not even `present: false`.
    assert!(!hits(&absent, Fake::new()));
    let present = one_rule("jwt_claim:act", json!({"present": true}));
    assert!(hits(
        &present,
        Fake::new().claims(json!({"act": {"sub": "admin"}}))
    ));
    assert!(!hits(&present, Fake::new().claims(json!({"act": null}))));
    let regex = one_rule("jwt_claim:sub", json!({"regex": "svc-.*"}));
    assert!(hits(
        &regex,
        Fake::new().claims(json!({"sub": "svc-billing"}))
    ));
}

#[test]
fn sticky_keys_in_priority_order() {
    let r = router(CONTRACT);
    let by_header = decide(&r, &Fake::new().header("x-user-id", "alice"), no_random);
    assert_eq!(by_header.reason, Reason::Hash);
    assert_eq!(by_header.key, Some(2));
    assert_eq!(by_header.bucket, Some(r.split.bucket(b"alice")));

    // The claim is listed first, so it wins over the header.
    let both = Fake::new()
        .header("x-user-id", "alice")
        .claims(json!({"sub": "bob"}));
    let d = decide(&r, &both, no_random);
    assert_eq!((d.key, d.bucket), (Some(0), Some(r.split.bucket(b"bob"))));

    let cookie = Fake::new()
        .header("cookie", "session_id=s-1")
        .header("x-user-id", "alice");
    let d = decide(&r, &cookie, no_random);
    assert_eq!((d.key, d.bucket), (Some(1), Some(r.split.bucket(b"s-1"))));

    // Empty values are absent: they fall through to the next key.
    let empty = Fake::new()
        .header("cookie", "session_id=")
        .header("x-user-id", "alice");
    assert_eq!(decide(&r, &empty, no_random).key, Some(2));
    // A list claim is not a key.
    let list = Fake::new()
        .claims(json!({"sub": ["a"]}))
        .header("x-user-id", "alice");
    assert_eq!(decide(&r, &list, no_random).key, Some(2));
}

#[test]
fn the_same_key_always_gets_the_same_subset() {
    let r = router(CONTRACT);
    for i in 0..1000 {
        let key = format!("user-{i}");
        let first = decide(&r, &Fake::new().header("x-user-id", &key), no_random);
        let again = decide(&r, &Fake::new().header("x-user-id", &key), no_random);
        assert_eq!(first, again);
        let expected = r.split.subset_of(r.split.bucket(key.as_bytes())).unwrap();
        assert_eq!(first.subset, expected);
    }
}

#[test]
fn no_key_draws_at_random_by_weight() {
    let r = router(CONTRACT);
    let mut rng = crate::rng::SplitMix64::new(7);
    let n = 50_000;
    let mut canary = 0;
    for _ in 0..n {
        let d = decide(&r, &Fake::new(), || rng.next_u64());
        assert_eq!(d.reason, Reason::Random);
        canary += usize::from(d.subset == 1);
    }
    let share = canary as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.01, "share {share}");
}

#[test]
fn zero_and_full_weights_are_absolute() {
    for (weights, want) in [([100, 0], "v1"), ([0, 100], "v2")] {
        let r = router(&format!(
            r#"{{"subsets":[{{"name":"v1","weight":{}}},{{"name":"v2","weight":{}}}],
                "sticky":{{"keys":[{{"header":"x-user-id"}}]}}}}"#,
            weights[0], weights[1]
        ));
        for i in 0..2000 {
            let req = Fake::new().header("x-user-id", &format!("u{i}"));
            assert_eq!(decide_on(&r, &req).0, want);
        }
        let mut rng = crate::rng::SplitMix64::new(1);
        for _ in 0..2000 {
            assert_eq!(
                r.subset_name(decide(&r, &Fake::new(), || rng.next_u64()).subset),
                want
            );
        }
    }
}

#[test]
fn a_failed_read_falls_back_to_the_default_subset() {
    let r = router(
        r#"{"subsets":[{"name":"v1","weight":0},{"name":"v2","weight":100}],"default_subset":"v1",
            "sticky":{"keys":[{"header":"x-user-id"}]},
            "rules":[{"name":"qa","subset":"v2","match":{"header":{"name":"x-canary","exact":"always"}}}]}"#,
    );
    let d = decide(
        &r,
        &Fake::new().header("x-canary", "always").broken(),
        no_random,
    );
    assert_eq!((d.subset, d.reason), (0, Reason::Fallback));
    let no_rules = router(
        r#"{"subsets":[{"name":"v1","weight":0},{"name":"v2","weight":100}],"default_subset":"v1",
            "sticky":{"keys":[{"header":"x-user-id"}]}}"#,
    );
    let d = decide(
        &no_rules,
        &Fake::new().header("x-user-id", "u").broken(),
        no_random,
    );
    assert_eq!((d.subset, d.reason), (0, Reason::Fallback));
}

#[test]
fn non_utf8_values_never_fail() {
    let r = one_rule("header:x-v", json!({"regex": ".*"}));
    let req = Fake {
        headers: vec![("x-v".into(), vec![0xff, 0xfe])],
        ..Fake::default()
    };
    // A regex cannot read raw bytes: no match, no error; weights decide.
    let d = decide(&r, &req, || 0);
    assert_eq!(d.reason, Reason::Random);
    let sticky = router(CONTRACT);
    let req = Fake {
        headers: vec![("x-user-id".into(), vec![0xff, 0x00, 0x80])],
        ..Fake::default()
    };
    assert_eq!(decide(&sticky, &req, no_random).reason, Reason::Hash);
}
