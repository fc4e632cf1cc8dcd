//! Decision tests over the contract's example, through a test double of the
//! request (headers, cookies and claims as a user would send them).

use serde_json::{json, Value};

use super::{Conditions, Decision, Entropy, Plan, Reason};
use crate::bucket::Split;

/// A split in force, brake released.
fn at(split: &Split) -> Conditions<'_, fn() -> bool> {
    Conditions {
        split,
        brake_holds: || false,
    }
}
use crate::config::load;
use crate::request::{JsonClaims, LookupError, Request};

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
}

/// Decide through the real `Request` adapter, as the filter does.
fn decide(plan: &Plan, fake: &Fake, entropy: &mut impl Entropy) -> Decision {
    decide_under(plan, Conditions::configured(plan), fake, entropy)
}

/// [`decide`] under `conditions`.
fn decide_under(
    plan: &Plan,
    conditions: Conditions<'_, impl FnOnce() -> bool>,
    fake: &Fake,
    entropy: &mut impl Entropy,
) -> Decision {
    let headers = if fake.broken {
        Err(LookupError)
    } else {
        Ok(fake.headers.as_slice())
    };
    let claims = match &fake.claims {
        Some(Value::Object(map)) => JsonClaims(Some(map.clone())),
        _ => JsonClaims(None),
    };
    let request = Request::new(&plan.slots, &plan.jwt, claims, headers);
    super::decide_with(plan, conditions, &request, entropy)
}

fn plan(json: &str) -> Plan {
    load(json.as_bytes()).unwrap().plan
}

/// Entropy for decisions that must not draw anything.
struct NoRandom;

impl Entropy for NoRandom {
    fn next_u64(&mut self) -> u64 {
        panic!("a random draw was not expected")
    }
    fn pin_bits(&mut self) -> [u8; 16] {
        panic!("a new pin was not expected")
    }
}

/// Entropy that always answers the same.
struct Fixed(u64);

impl Entropy for Fixed {
    fn next_u64(&mut self) -> u64 {
        self.0
    }
    fn pin_bits(&mut self) -> [u8; 16] {
        [self.0 as u8; 16]
    }
}

fn decide_on(plan: &Plan, request: &Fake) -> (String, Reason, Option<String>) {
    let d = decide(plan, request, &mut NoRandom);
    let rule = d.rule.map(|i| plan.rules.rules()[i].name.clone());
    (plan.subset_name(d.subset).to_owned(), d.reason, rule)
}

fn rule_hit(plan: &Plan, request: Fake) -> Option<String> {
    decide_on(plan, &request).2
}

#[test]
fn contract_rules_route_and_first_match_wins() {
    let r = plan(CONTRACT);
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
    let r = plan(
        r#"{"subsets":[{"name":"v1","weight":100},{"name":"v2","weight":0}],
            "sticky":{"keys":[{"header":"x-user-id"}]},
            "rules":[{"name":"qa","subset":"v2","match":{"header":{"name":"x-canary","exact":"always"}}}]}"#,
    );
    let req = Fake::new()
        .header("x-user-id", "u1")
        .header("x-canary", "always");
    assert_eq!(decide_on(&r, &req).0, "v2");
}

fn one_rule(source: &str, op: Value) -> Plan {
    let (kind, name) = source.split_once(':').unwrap();
    let mut operand = json!({"name": name});
    for (k, v) in op.as_object().unwrap() {
        operand[k] = v.clone();
    }
    let config = json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "rules": [{"name": "r", "subset": "v2", "match": {kind: operand}}]
    });
    plan(&config.to_string())
}

fn hits(r: &Plan, req: Fake) -> bool {
    let d = decide(r, &req, &mut Fixed(0));
    d.reason == Reason::Rule
}

#[test]
fn header_operators() {
    let exact = one_rule("header:X-Tenant", json!({"exact": "acme"}));
    assert!(hits(&exact, Fake::new().header("x-tenant", "acme")));
    assert!(!hits(&exact, Fake::new().header("x-tenant", "acme2")));
    assert!(!hits(&exact, Fake::new().header("x-tenant", "ACME")));
    assert!(!hits(&exact, Fake::new()));
    // A header sent twice is matched on each value, as Envoy 1.40's route
    // matchers do: any one value matching is enough, the joined text is not
    // a value.
    let joined = one_rule("header:x-tenant", json!({"exact": "a,b"}));
    assert!(!hits(
        &joined,
        Fake::new().header("x-tenant", "a").header("x-tenant", "b")
    ));
    assert!(hits(&joined, Fake::new().header("x-tenant", "a,b")));
    for order in [["acme", "b"], ["b", "acme"]] {
        let [one, two] = order;
        let twice = Fake::new().header("x-tenant", one).header("x-tenant", two);
        assert!(hits(&exact, twice), "{order:?}");
    }

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
    let r = plan(CONTRACT);
    let by_header = decide(&r, &Fake::new().header("x-user-id", "alice"), &mut NoRandom);
    assert_eq!(by_header.reason, Reason::Hash);
    assert_eq!(by_header.key, Some(2));
    assert_eq!(by_header.bucket, Some(r.split.bucket(b"alice")));

    // The claim is listed first, so it wins over the header.
    let both = Fake::new()
        .header("x-user-id", "alice")
        .claims(json!({"sub": "bob"}));
    let d = decide(&r, &both, &mut NoRandom);
    assert_eq!((d.key, d.bucket), (Some(0), Some(r.split.bucket(b"bob"))));

    let cookie = Fake::new()
        .header("cookie", "session_id=s-1")
        .header("x-user-id", "alice");
    let d = decide(&r, &cookie, &mut NoRandom);
    assert_eq!((d.key, d.bucket), (Some(1), Some(r.split.bucket(b"s-1"))));

    // Empty values are absent: they fall through to the next key.
    let empty = Fake::new()
        .header("cookie", "session_id=")
        .header("x-user-id", "alice");
    assert_eq!(decide(&r, &empty, &mut NoRandom).key, Some(2));
    // A list claim is not a key.
    let list = Fake::new()
        .claims(json!({"sub": ["a"]}))
        .header("x-user-id", "alice");
    assert_eq!(decide(&r, &list, &mut NoRandom).key, Some(2));
}

#[test]
fn the_same_key_always_gets_the_same_subset() {
    let r = plan(CONTRACT);
    for i in 0..1000 {
        let key = format!("user-{i}");
        let first = decide(&r, &Fake::new().header("x-user-id", &key), &mut NoRandom);
        let again = decide(&r, &Fake::new().header("x-user-id", &key), &mut NoRandom);
        assert_eq!(first, again);
        let expected = r.split.subset_of(r.split.bucket(key.as_bytes())).unwrap();
        assert_eq!(first.subset, expected);
    }
}

#[test]
fn no_key_draws_at_random_by_weight() {
    let r = plan(CONTRACT);
    let mut rng = crate::rng::SplitMix64::new(7);
    let n = 50_000;
    let mut canary = 0;
    for _ in 0..n {
        let d = decide(&r, &Fake::new(), &mut rng);
        assert_eq!(d.reason, Reason::Random);
        canary += usize::from(d.subset == 1);
    }
    let share = canary as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.01, "share {share}");
}

#[test]
fn zero_and_full_weights_are_absolute() {
    for (weights, want) in [([100, 0], "v1"), ([0, 100], "v2")] {
        let r = plan(&format!(
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
                r.subset_name(decide(&r, &Fake::new(), &mut rng).subset),
                want
            );
        }
    }
}

#[test]
fn a_failed_read_falls_back_to_the_default_subset() {
    let r = plan(
        r#"{"subsets":[{"name":"v1","weight":0},{"name":"v2","weight":100}],"default_subset":"v1",
            "sticky":{"keys":[{"header":"x-user-id"}]},
            "rules":[{"name":"qa","subset":"v2","match":{"header":{"name":"x-canary","exact":"always"}}}]}"#,
    );
    let d = decide(
        &r,
        &Fake::new().header("x-canary", "always").broken(),
        &mut NoRandom,
    );
    assert_eq!((d.subset, d.reason), (0, Reason::Fallback));
    let no_rules = plan(
        r#"{"subsets":[{"name":"v1","weight":0},{"name":"v2","weight":100}],"default_subset":"v1",
            "sticky":{"keys":[{"header":"x-user-id"}]}}"#,
    );
    let d = decide(
        &no_rules,
        &Fake::new().header("x-user-id", "u").broken(),
        &mut NoRandom,
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
    // A regex reads bytes as Envoy's RE2 does (Latin-1): any bytes can match.
    let d = decide(&r, &req, &mut Fixed(0));
    assert_eq!(d.reason, Reason::Rule);
    let r = one_rule("header:x-v", json!({"regex": "[a-z]*"}));
    assert_eq!(decide(&r, &req, &mut Fixed(0)).reason, Reason::Random);
    let sticky = plan(CONTRACT);
    let req = Fake {
        headers: vec![("x-user-id".into(), vec![0xff, 0x00, 0x80])],
        ..Fake::default()
    };
    assert_eq!(decide(&sticky, &req, &mut NoRandom).reason, Reason::Hash);
}

const PINNED: &str = r#"{"subsets":[{"name":"v1","weight":50},{"name":"v2","weight":50}],
    "sticky":{"keys":[{"header":"x-user-id"}],"seed":"s1",
              "pin_cookie":{"name":"canary_pin","max_age":86400}},
    "decision_header":"x-canary-decision"}"#;

#[test]
fn a_keyless_request_gets_a_pin_hashed_like_a_key() {
    let r = plan(PINNED);
    let d = decide(&r, &Fake::new(), &mut Fixed(0xab));
    let id = d.new_pin.expect("a new pin");
    assert_eq!(id.as_str(), "ab".repeat(16));
    assert_eq!(d.reason, Reason::Random);
    assert_eq!(d.bucket, Some(r.split.bucket(id.as_bytes())));
    assert_eq!(Some(d.subset), r.split.subset_of(d.bucket.unwrap()));

    // Replaying the pin routes by it: same bucket, reason pin, no new pin.
    let cookie = format!("other=1; canary_pin={}", id.as_str());
    let again = decide(&r, &Fake::new().header("cookie", &cookie), &mut NoRandom);
    assert_eq!(again.reason, Reason::Pin);
    assert_eq!((again.subset, again.bucket), (d.subset, d.bucket));
    assert_eq!(again.new_pin, None);
}

#[test]
fn identity_wins_over_the_pin() {
    let r = plan(PINNED);
    let req = Fake::new()
        .header("cookie", "canary_pin=0123456789abcdef0123456789abcdef")
        .header("x-user-id", "alice");
    let d = decide(&r, &req, &mut NoRandom);
    assert_eq!((d.reason, d.key, d.new_pin), (Reason::Hash, Some(0), None));
    assert_eq!(d.bucket, Some(r.split.bucket(b"alice")));
}

#[test]
fn malformed_pins_are_replaced() {
    let r = plan(PINNED);
    for bad in [
        "",
        "short",
        "0123456789ABCDEF0123456789ABCDEF",
        "zz23456789abcdef",
        "\"\"",
    ] {
        let req = Fake::new().header("cookie", &format!("canary_pin={bad}"));
        let d = decide(&r, &req, &mut Fixed(7));
        assert_eq!(d.reason, Reason::Random, "{bad}");
        assert!(d.new_pin.is_some(), "{bad}");
    }
}

#[test]
fn pins_hold_both_subsets_and_follow_the_seed() {
    let r = plan(PINNED);
    let reseeded = plan(&PINNED.replace("\"s1\"", "\"s2\""));
    let mut rng = crate::rng::SplitMix64::new(3);
    let mut per_subset = [0usize; 2];
    let mut moved = 0;
    for _ in 0..2000 {
        let id = decide(&r, &Fake::new(), &mut rng).new_pin.unwrap();
        let cookie = format!("canary_pin={}", id.as_str());
        let d = decide(&r, &Fake::new().header("cookie", &cookie), &mut NoRandom);
        per_subset[d.subset] += 1;
        let e = decide(
            &reseeded,
            &Fake::new().header("cookie", &cookie),
            &mut NoRandom,
        );
        moved += usize::from(d.subset != e.subset);
    }
    assert!(per_subset.iter().all(|&n| n > 800), "{per_subset:?}");
    assert!((800..1200).contains(&moved), "moved {moved}");
}

#[test]
fn decision_header_values() {
    let r = plan(CONTRACT);
    let describe = |req: Fake| decide(&r, &req, &mut NoRandom).describe(&r);
    assert_eq!(
        describe(Fake::new().header("x-canary", "always")),
        "subset=v2; reason=rule; rule=qa"
    );
    let b = r.split.bucket(b"alice");
    let subset = r.subset_name(r.split.subset_of(b).unwrap());
    let text = describe(Fake::new().header("cookie", "session_id=alice"));
    assert_eq!(
        text,
        format!("subset={subset}; reason=hash; key=cookie:session_id; bucket={b}")
    );
    assert!(!text.contains("alice=") && !text.contains("=alice"));

    let pinned = plan(PINNED);
    let d = decide(&pinned, &Fake::new(), &mut Fixed(0));
    let b = d.bucket.unwrap();
    let s = pinned.subset_name(d.subset);
    assert_eq!(
        d.describe(&pinned),
        format!("subset={s}; reason=random; bucket={b}; pin=new")
    );
    let cookie = format!("canary_pin={}", d.new_pin.unwrap().as_str());
    let again = decide(
        &pinned,
        &Fake::new().header("cookie", &cookie),
        &mut NoRandom,
    );
    assert_eq!(
        again.describe(&pinned),
        format!("subset={s}; reason=pin; key=pin; bucket={b}")
    );

    let fallback = decide(&r, &Fake::new().broken(), &mut NoRandom);
    assert_eq!(fallback.describe(&r), "subset=v1; reason=fallback");

    let plain = plan(r#"{"subsets":[{"name":"v1","weight":100}]}"#);
    let d = decide(&plain, &Fake::new(), &mut Fixed(42));
    assert_eq!(d.describe(&plain), "subset=v1; reason=random; bucket=42");
}

#[test]
fn shadow_mode_decides_the_same_and_says_so() {
    let enforce = plan(PINNED);
    let shadow = plan(&PINNED.replace(
        "\"decision_header\"",
        "\"mode\":\"shadow\",\"decision_header\"",
    ));
    assert_eq!(shadow.mode, crate::plan::Mode::Shadow);
    for req in [Fake::new().header("x-user-id", "u1"), Fake::new()] {
        let a = decide(&enforce, &req, &mut Fixed(5));
        let b = decide(&shadow, &req, &mut Fixed(5));
        assert_eq!(a, b);
        assert_eq!(
            b.describe(&shadow),
            format!(
                "{}; mode=shadow",
                a.describe(&enforce).trim_end_matches("; pin=new")
            )
        );
    }
}

#[test]
fn a_ramp_step_shows_in_the_decision_header() {
    let r = plan(
        r#"{"subsets":[{"name":"v1","weight":100},{"name":"v2","weight":0}],
            "sticky":{"keys":[{"header":"x-user-id"}],"seed":"ramp"},
            "ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z",
                    "steps":[{"weight":10,"hold":"5m"},{"weight":100}]}}"#,
    );
    let start = crate::ramp::parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
    let before = r.split_at(start - 1);
    let first = r.split_at(start + 1);
    let last = r.split_at(start + 300_000);
    assert_eq!(
        (before.weights_bp(), before.step()),
        (vec![10_000, 0], None)
    );
    assert_eq!(
        (first.weights_bp(), first.step()),
        (vec![9_000, 1_000], Some(0))
    );
    assert_eq!((last.weights_bp(), last.step()), (vec![0, 10_000], Some(1)));
    let req = Fake::new().header("x-user-id", "alice");
    let request = Request::new(&r.slots, &r.jwt, JsonClaims(None), Ok(&req.headers));
    let d = super::decide_with(&r, at(&first), &request, &mut NoRandom);
    assert!(d.describe(&r).ends_with("; step=1"), "{}", d.describe(&r));
    let d = super::decide_with(&r, at(&last), &request, &mut NoRandom);
    assert_eq!(
        d.describe(&r),
        format!(
            "subset=v2; reason=hash; key=header:x-user-id; bucket={}; step=2",
            d.bucket.unwrap()
        )
    );
    let d = super::decide_with(&r, at(&before), &request, &mut NoRandom);
    assert_eq!(d.subset, 0);
    assert!(!d.describe(&r).contains("step="));
}

/// The contract with a brake on v2.
fn braked_plan(stop_rules: bool) -> Plan {
    let mut config: serde_json::Value = serde_json::from_str(CONTRACT).unwrap();
    config["brake"] =
        serde_json::json!({"subset": "v2", "max_error_rate": 0.05, "stop_rules": stop_rules});
    plan(&config.to_string())
}

#[test]
fn a_tripped_brake_sends_the_subset_to_the_default() {
    let asked = std::cell::Cell::new(0);
    let holds = || {
        asked.set(asked.get() + 1);
        true
    };
    let r = braked_plan(true);
    let qa = Fake::new().header("x-canary", "always");
    let by_rule = decide_under(
        &r,
        Conditions {
            split: &r.split,
            brake_holds: holds,
        },
        &qa,
        &mut NoRandom,
    );
    assert_eq!((by_rule.subset, by_rule.braked), (0, true));
    assert!(by_rule.describe(&r).ends_with("; brake=tripped"));
    assert_eq!(asked.get(), 1);
    // stop_rules false: a rule that forces the canary still does, and the
    // brake is not even asked.
    let r = braked_plan(false);
    let kept = decide_under(
        &r,
        Conditions {
            split: &r.split,
            brake_holds: holds,
        },
        &qa,
        &mut NoRandom,
    );
    assert_eq!((kept.subset, kept.braked), (1, false));
    assert_eq!(asked.get(), 1);
    // Hashed users of the canary go to the default subset; others stay, and
    // the brake is asked only for the canary's.
    asked.set(0);
    let mut on_canary = 0;
    for i in 0..500 {
        let req = Fake::new().header("x-user-id", &format!("u{i}"));
        let before = decide(&r, &req, &mut NoRandom);
        let after = decide_under(
            &r,
            Conditions {
                split: &r.split,
                brake_holds: holds,
            },
            &req,
            &mut NoRandom,
        );
        assert_eq!(after.subset, 0);
        assert_eq!(after.braked, before.subset == 1);
        on_canary += usize::from(before.subset == 1);
    }
    assert!(on_canary > 0);
    assert_eq!(asked.get(), on_canary);
}

#[test]
fn after_a_cooldown_the_ramp_restarts_from_its_first_step() {
    let r = plan(
        r#"{"subsets":[{"name":"v1","weight":100},{"name":"v2","weight":0}],
            "ramp":{"subset":"v2","start":"2026-12-01T10:00:00Z",
                    "steps":[{"weight":10,"hold":"5m"},{"weight":100}]},
            "brake":{"subset":"v2","max_error_rate":0.01,"cooldown":"10m"}}"#,
    );
    let start = crate::ramp::parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
    let later = start + 3_600_000;
    assert_eq!(
        r.split_at(later).weights_bp(),
        vec![0, 10_000],
        "the ramp is done"
    );
    // The brake's cooldown ended a minute ago: step 1 again, for its hold.
    let restarted = later - 60_000;
    let split = r.split_at_restarted(later, restarted);
    assert_eq!(
        (split.weights_bp(), split.step()),
        (vec![9_000, 1_000], Some(0))
    );
    let split = r.split_at_restarted(restarted + 300_000, restarted);
    assert_eq!(
        (split.weights_bp(), split.step()),
        (vec![0, 10_000], Some(1))
    );
    // A restart before the configured start changes nothing.
    assert_eq!(
        r.split_at_restarted(start - 1, start - 10),
        r.split_at(start - 1)
    );
}

/// A plan with these rules over v1 (default, 100 %) and v2.
fn with_rules(rules: serde_json::Value) -> Plan {
    plan(
        &serde_json::json!({
            "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
            "sticky": {"keys": [{"header": "x-user-id"}], "seed": "s"},
            "rules": rules,
        })
        .to_string(),
    )
}

fn request(method: &str, authority: &str, path: &str) -> Fake {
    Fake::new()
        .header(":method", method)
        .header(":authority", authority)
        .header(":path", path)
        .header("x-user-id", "u1")
}

#[test]
fn request_attributes_and_composition_decide_as_written() {
    let r = with_rules(serde_json::json!([
        // Keep /admin and /healthz on the stable subset, whatever follows.
        {"name": "internal", "subset": "v1", "match": {"any": [
            {"path": {"prefix": "/admin"}}, {"path": {"exact": "/healthz"}}]}},
        // Writes to the API of one shop, not from the legacy app.
        {"name": "writes", "subset": "v2", "match": {"all": [
            {"method": {"in": ["POST", "PUT"]}},
            {"host": {"exact": "shop.example.com"}},
            {"path": {"prefix": "/api/"}},
            {"not": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}}]}},
        {"name": "beta", "subset": "v2", "match": {"query": {"name": "beta", "exact": "1"}}}
    ]));
    let on = |req: Fake| decide_on(&r, &req).2;
    let rule = |name: &str| Some(name.to_owned());
    assert_eq!(
        on(request("GET", "shop.example.com", "/admin/users?beta=1")),
        rule("internal")
    );
    assert_eq!(
        on(request("GET", "shop.example.com", "/healthz")),
        rule("internal")
    );
    assert_eq!(
        on(request("GET", "shop.example.com", "/healthz/deep")),
        None
    );
    assert_eq!(
        on(request("POST", "shop.example.com:8443", "/api/cart?x=1")),
        rule("writes")
    );
    assert_eq!(on(request("POST", "other.example.com", "/api/cart")), None);
    assert_eq!(on(request("GET", "shop.example.com", "/api/cart")), None);
    assert_eq!(
        on(request("PUT", "shop.example.com", "/api/cart").header("user-agent", "LegacyApp/2")),
        None
    );
    assert_eq!(on(request("GET", "a", "/x?beta=1")), rule("beta"));
    assert_eq!(on(request("GET", "a", "/x?beta=%31")), rule("beta"));
    assert_eq!(
        on(request("GET", "a", "/x?beta=2&beta=1")),
        None,
        "the first wins"
    );
    assert_eq!(on(request("GET", "a", "/x?beta=%G1")), None, "undecodable");
    assert_eq!(on(request("GET", "a", "/x#beta=1")), None);
}

#[test]
fn a_percent_takes_a_sticky_growing_share_of_its_segment() {
    let plan_at = |percent: f64| {
        with_rules(serde_json::json!([
            {"name": "acme", "subset": "v2", "percent": percent,
             "match": {"header": {"name": "x-tenant", "exact": "acme"}}}
        ]))
    };
    let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let on_v2 = |r: &Plan| -> std::collections::BTreeSet<usize> {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| {
                let req = Fake::new()
                    .header("x-tenant", "acme")
                    .header("x-user-id", k);
                decide(r, &req, &mut NoRandom).subset == 1
            })
            .map(|(i, _)| i)
            .collect()
    };
    let mut previous = std::collections::BTreeSet::new();
    for percent in [0.0, 20.0, 50.0, 100.0] {
        let r = plan_at(percent);
        let now = on_v2(&r);
        let share = now.len() as f64 * 100.0 / keys.len() as f64;
        assert!((share - percent).abs() <= 2.0, "{percent} %: {share:.2} %");
        assert!(
            previous.is_subset(&now),
            "raising the percent moved users out"
        );
        // Sticky: the same answer again.
        assert_eq!(on_v2(&r), now);
        previous = now;
    }
    // Outside the segment the rule never applies; inside it, the rest falls
    // through to the weights (100 % v1 here).
    let r = plan_at(50.0);
    let other = Fake::new()
        .header("x-tenant", "globex")
        .header("x-user-id", "user-1");
    assert_eq!(decide(&r, &other, &mut NoRandom).subset, 0);
}

fn two_services(canary_percent: f64, cohort: &str) -> Plan {
    let json = format!(
        r#"{{"subsets": [{{"name": "v1", "weight": {}}}, {{"name": "v2", "weight": {canary_percent}}}],
            "sticky": {{"keys": [{{"baggage": "canary-bucket"}}, {{"header": "x-user-id"}}], "seed": "mesh"}},
            "rules": [{{"name": "forced", "subset": "v2",
                        "match": {{"baggage": {{"name": "canary-force", "exact": "v2"}}}}}}],
            "cohort": {cohort}}}"#,
        100.0 - canary_percent
    );
    load(json.as_bytes()).unwrap().plan
}

#[test]
fn smaller_canaries_nest_inside_larger_ones_under_one_seed() {
    // Two services, the same seed and key: every user on the 5 % canary of one
    // is on the 10 % canary of the other (the canary owns the top buckets).
    let (api, payments) = (two_services(10.0, "{}"), two_services(5.0, "{}"));
    let (mut on_api, mut on_payments) = (0, 0);
    for i in 0..4000 {
        let user = format!("user-{i}");
        let req = Fake::new().header("x-user-id", &user);
        let a = decide(&api, &req, &mut NoRandom);
        let p = decide(&payments, &req, &mut NoRandom);
        assert_eq!(a.bucket, p.bucket, "one bucket per user on every proxy");
        on_api += usize::from(a.subset == 1);
        on_payments += usize::from(p.subset == 1);
        if p.subset == 1 {
            assert_eq!(a.subset, 1, "{user} is on the 5 % canary only");
        }
    }
    assert!((300..500).contains(&on_api), "{on_api}");
    assert!((120..280).contains(&on_payments), "{on_payments}");
}

#[test]
fn a_bucket_from_baggage_is_used_as_is_when_trusted() {
    let trusted = two_services(10.0, r#"{"trust_incoming": true}"#);
    let edge = two_services(10.0, "{}");
    let with = |baggage: &str| {
        Fake::new()
            .header("baggage", baggage)
            .header("x-user-id", "u")
    };
    let own_bucket = decide(
        &trusted,
        &Fake::new().header("x-user-id", "u"),
        &mut NoRandom,
    )
    .bucket
    .unwrap();
    // Trusted: the bucket as written upstream, not rehashed; key index 0.
    for (baggage, bucket) in [
        ("canary-bucket=9950", 9950),
        ("a=1, canary-bucket = 0012 ;p", 12),
        ("canary-bucket=%39%39%39%39", 9999),
    ] {
        let d = decide(&trusted, &with(baggage), &mut NoRandom);
        assert_eq!(
            (d.bucket, d.key, d.reason),
            (Some(bucket), Some(0), Reason::Hash),
            "{baggage}"
        );
    }
    assert_eq!(
        decide(&trusted, &with("canary-bucket=9950"), &mut NoRandom).subset,
        1
    );
    // Malformed or out of range: the next key decides.
    for baggage in [
        "canary-bucket=10000",
        "canary-bucket=-1",
        "canary-bucket=",
        "canary-bucket",
        "canary-bucket=12a",
        "canary-bucket=%zz",
        ",,,",
    ] {
        let d = decide(&trusted, &with(baggage), &mut NoRandom);
        assert_eq!((d.bucket, d.key), (Some(own_bucket), Some(1)), "{baggage}");
    }
    // At the edge the client's members are read as absent.
    let d = decide(
        &edge,
        &with("canary-bucket=9950, canary-force=v2"),
        &mut NoRandom,
    );
    assert_eq!(
        (d.bucket, d.key, d.reason),
        (Some(own_bucket), Some(1), Reason::Hash)
    );
    // Trusted, a forced subset matches its rule.
    let d = decide(&trusted, &with("canary-force=v2"), &mut NoRandom);
    assert_eq!((d.subset, d.reason), (1, Reason::Rule));
}
