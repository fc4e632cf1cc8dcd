#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The decision header explains every decision in the documented format, names
//! the subset that actually served the request (counted and seen by the
//! upstream), and never carries a key's value.

mod common;

use common::pin::*;
use common::*;
use serde_json::json;

const SEED: &str = "explain-2026";
const V1: f64 = 70.0;

fn config() -> String {
    json!({
        "subsets": [ {"name": "v1", "weight": V1}, {"name": "v2", "weight": 100.0 - V1} ],
        "sticky": {
            "keys": [ {"jwt_claim": "sub"}, {"cookie": "session_id"}, {"header": "x-user-id"} ],
            "seed": SEED,
            "pin_cookie": pin_cookie_config()
        },
        "jwt": { "source": "verified", "metadata_key": "payload" },
        "rules": [
            {"name": "qa",      "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "beta",    "subset": "v2", "match": {"cookie": {"name": "beta", "exact": "true"}}},
            {"name": "staff",   "subset": "v2", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
            {"name": "tenants", "subset": "v2", "match": {"jwt_claim": {"name": "tenant", "in": ["acme", "globex"]}}},
            {"name": "legacy",  "subset": "v1", "match": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}}
        ],
        "decision_header": DECISION
    })
    .to_string()
}

/// The expected decision header, or None for a random decision (checked by
/// shape, with its bucket tied to the new pin).
enum Want {
    Exact(String),
    RandomNewPin,
}

fn hashed(key: &str, value: &str) -> Want {
    let (b, s) = predict(value, SEED, V1);
    Want::Exact(format!("subset={s}; reason=hash; key={key}; bucket={b}"))
}

fn rule(name: &str, subset: &str) -> Want {
    Want::Exact(format!("subset={subset}; reason=rule; rule={name}"))
}

#[test]
fn the_decision_header_names_the_served_subset_and_never_a_key_value() {
    let mut envoy = Envoy::start(&config(), Opts::default());
    let mut pins: Vec<String> = Vec::new();
    let mut seen_reasons = std::collections::BTreeMap::<String, u32>::new();
    const KINDS: usize = 14;
    let total = 25 * KINDS;
    for n in 0..total {
        // Distinctive key values: any of them in the header would be a leak.
        let secret = format!("secret{n}zq");
        let secret2 = format!("other{n}zq");
        let path = if n % 7 == 3 { "/status/404" } else { "/" };
        let jwt = |extra: serde_json::Value| bearer(&sign_hs256(&claims(extra)));
        let mut secrets = vec![secret.clone(), secret2.clone()];
        let (headers, want): (Vec<(&str, Vec<u8>)>, Want) = match n % KINDS {
            0 => (
                vec![
                    ("x-canary", b"always".to_vec()),
                    ("x-user-id", secret.clone().into_bytes()),
                ],
                rule("qa", "v2"),
            ),
            1 => (
                vec![(
                    "cookie",
                    format!("beta=true; session_id={secret}").into_bytes(),
                )],
                rule("beta", "v2"),
            ),
            2 => (
                vec![(
                    "authorization",
                    jwt(json!({"sub": secret, "groups": ["dev", "staff"]})),
                )],
                rule("staff", "v2"),
            ),
            3 => (
                vec![(
                    "authorization",
                    jwt(json!({"sub": secret, "tenant": "globex"})),
                )],
                rule("tenants", "v2"),
            ),
            4 => (
                vec![
                    ("user-agent", b"LegacyApp/9".to_vec()),
                    ("x-user-id", secret.clone().into_bytes()),
                    ("x-canary-subset", b"v2".to_vec()),
                ],
                rule("legacy", "v1"),
            ),
            5 => (
                vec![(
                    "authorization",
                    jwt(json!({"sub": secret, "tenant": "initech"})),
                )],
                hashed("jwt_claim:sub", &secret),
            ),
            6 => (
                vec![(
                    "cookie",
                    format!("theme=dark; session_id={secret}").into_bytes(),
                )],
                hashed("cookie:session_id", &secret),
            ),
            7 => (
                vec![("x-user-id", secret.clone().into_bytes())],
                hashed("header:x-user-id", &secret),
            ),
            8 => (
                vec![
                    ("x-user-id", secret2.clone().into_bytes()),
                    ("cookie", format!("session_id={secret2}").into_bytes()),
                    ("authorization", jwt(json!({"sub": secret}))),
                ],
                hashed("jwt_claim:sub", &secret),
            ),
            9 => (vec![], Want::RandomNewPin),
            10 => {
                let id = pins[n % pins.len()].clone();
                let (b, s) = predict(&id, SEED, V1);
                secrets.push(id.clone());
                (
                    vec![(
                        "cookie",
                        format!("lang=en; {}", pin_cookie(&id)).into_bytes(),
                    )],
                    Want::Exact(format!("subset={s}; reason=pin; key=pin; bucket={b}")),
                )
            }
            11 => {
                let id = pins[(n * 7) % pins.len()].clone();
                secrets.push(id.clone());
                (
                    vec![
                        ("x-user-id", secret.clone().into_bytes()),
                        ("cookie", pin_cookie(&id).into_bytes()),
                    ],
                    hashed("header:x-user-id", &secret),
                )
            }
            12 => (
                vec![("x-canary-subset", b"v2".to_vec())],
                Want::RandomNewPin,
            ),
            _ => (
                vec![("cookie", format!("{PIN}=NOT-A-PIN-{n}").into_bytes())],
                Want::RandomNewPin,
            ),
        };
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let (d, r) = envoy.decide_with_response(path, &hs);
        let what = format!("request {n} ({path}, kind {}): {d:?}", n % KINDS);
        let header = decision_of(&r);
        assert!(!header.is_empty(), "{what}: a decision header");
        // The header names the subset that served (and was counted).
        let fields = decision_fields(&header);
        assert_eq!(
            fields[0],
            ("subset".to_string(), d.subset.clone()),
            "{what}: {header}"
        );
        assert_eq!(
            fields[1],
            ("reason".to_string(), d.reason.clone()),
            "{what}: {header}"
        );
        assert_eq!(d.served_by, d.subset, "{what}");
        match want {
            Want::Exact(w) => {
                assert_eq!(header, w, "{what}");
                assert_eq!(set_cookies_named(&r, PIN), Vec::<String>::new(), "{what}");
            }
            Want::RandomNewPin => {
                let id = new_pin(&r, PIN, PIN_ATTRS)
                    .unwrap_or_else(|| panic!("{what}: a new pin; {r:?}"));
                let (b, s) = predict(&id, SEED, V1);
                assert_eq!(
                    header,
                    format!("subset={s}; reason=random; bucket={b}; pin=new"),
                    "{what}"
                );
                secrets.push(id.clone());
                pins.push(id);
            }
        }
        for s in &secrets {
            assert!(
                !header.contains(s.as_str()),
                "{what}: the header {header:?} carries the key value {s:?}"
            );
        }
        *seen_reasons.entry(d.reason.clone()).or_default() += 1;
    }
    for reason in ["rule", "hash", "pin", "random"] {
        assert!(
            seen_reasons.get(reason).copied().unwrap_or(0) >= 25,
            "{reason}: {seen_reasons:?}"
        );
    }
}
