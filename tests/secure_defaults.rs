#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The gateway's shipped `pluginConfig` (istio/wasmplugin-gateway.yaml, read as
//! Istio reads it) in a real Envoy with jwt_authn in front, as Istio's
//! RequestAuthentication sets it up: no early strip of any header, tokens
//! optional, bad tokens refused. What production promises:
//! - an anonymous client cannot force the canary with the QA header, the beta
//!   cookie or the beta link: it lands where its weight bucket says;
//! - no response to an anonymous (or non-QA) client carries the decision header;
//! - a verified token in the QA group forces v2 with the header and sees the
//!   decision header (the debug path);
//! - a forged claim (unsigned payload header, bad signature) opens nothing.
//!
//! Istio loads the Wasm build (and `jwt.source: verified` reads jwt_authn's
//! metadata, which the dynamic module cannot), so this runs in the Wasm run.

mod common;

use common::istio::plugin_config_of;
use common::pin::predict;
use common::*;
use serde_json::json;

/// Distinct users per case: enough that a forced v2 (all of them) and the
/// weights' ~10 % cannot be confused.
const USERS: usize = 200;

/// The request headers, for the host the shipped gateway plugin is scoped to.
fn h<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a [u8])> {
    std::iter::once(("host", &b"api.example.com"[..]))
        .chain(pairs.iter().map(|(k, v)| (*k, v.as_bytes())))
        .collect()
}

fn token(claims_json: serde_json::Value) -> String {
    String::from_utf8(bearer(&sign_hs256(&claims(claims_json)))).unwrap()
}

#[test]
fn the_shipped_gateway_config_lets_no_anonymous_client_pick_the_canary_or_read_the_decision() {
    if wasm_only("Istio loads the Wasm build; jwt.source verified reads jwt_authn metadata") {
        return;
    }
    let config = plugin_config_of("wasmplugin-gateway.yaml");
    let seed = config["sticky"]["seed"].as_str().unwrap().to_owned();
    let v1_weight = config["subsets"][0]["weight"].as_f64().unwrap();
    assert_eq!(config["subsets"][0]["name"], "v1");
    let decision_header = config["decision_header"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut envoy = Envoy::start(&config.to_string(), Opts::default().without_early_strip());

    // 1. Anonymous clients with every forcing input the demo honours, and a
    // forged payload header claiming the QA group: the weights decide.
    let forged_payload = {
        let claims = json!({"sub": "mallory", "groups": ["qa", "staff"], "tenant": "acme"});
        b64url_encode(claims.to_string().as_bytes())
    };
    let mut anonymous_v2 = 0;
    let mut predicted_v2 = 0;
    for i in 0..USERS {
        let user = format!("anon-{i}");
        let (_, want) = predict(&user, &seed, v1_weight);
        predicted_v2 += usize::from(want == "v2");
        let headers = [
            ("x-user-id", user.clone()),
            ("x-canary", "always".to_owned()),
            ("cookie", "beta=true".to_owned()),
            ("x-jwt-payload", forged_payload.clone()),
            ("x-canary-subset", "v2".to_owned()),
        ];
        let r = envoy.get("/?beta=1", &h(&headers));
        assert_eq!(r.status, 200, "{user}");
        assert_eq!(
            r.served_by(),
            want,
            "{user}: an anonymous request goes where its bucket says"
        );
        anonymous_v2 += usize::from(r.served_by() == "v2");
        assert_eq!(
            r.header(&decision_header),
            None,
            "{user}: an anonymous client sees no decision header"
        );
    }
    assert_eq!(anonymous_v2, predicted_v2);
    assert!(
        anonymous_v2 < USERS / 4,
        "{anonymous_v2} of {USERS} anonymous users on v2: the weights (10 %), not the rules"
    );

    // 2. Verified users outside QA: the header does not force them, and the
    // decision stays hidden; signed in, the beta opt-in is theirs to use.
    let mut dev_v2 = 0;
    for i in 0..USERS {
        let sub = format!("dev-{i}");
        let (bucket, want) = predict(&sub, &seed, v1_weight);
        let auth = token(json!({"sub": sub, "groups": ["dev"]}));
        let headers = [
            ("authorization", auth.clone()),
            ("x-canary", "always".to_owned()),
        ];
        let r = envoy.get("/", &h(&headers));
        assert_eq!(
            (r.status, r.served_by()),
            (200, want.clone()),
            "{sub} (bucket {bucket})"
        );
        dev_v2 += usize::from(want == "v2");
        assert_eq!(r.header(&decision_header), None, "{sub}: not in QA");
        let opted_in = [("authorization", auth), ("cookie", "beta=true".to_owned())];
        let r = envoy.get("/", &h(&opted_in));
        assert_eq!(
            (r.status, r.served_by()),
            (200, "v2".to_owned()),
            "{sub}: signed in, the beta cookie opts in"
        );
    }
    assert!(dev_v2 < USERS / 4, "{dev_v2} of {USERS} on v2 by weight");

    // 3. QA: a verified token in the qa group with the header is forced to v2
    // and sees why; without the header it follows the weights, still seeing
    // the decision (the debug path).
    for i in 0..USERS {
        let sub = format!("qa-{i}");
        let (bucket, want) = predict(&sub, &seed, v1_weight);
        let auth = token(json!({"sub": sub, "groups": ["dev", "qa"]}));
        let forced = [
            ("authorization", auth.clone()),
            ("x-canary", "always".to_owned()),
        ];
        let r = envoy.get("/", &h(&forced));
        assert_eq!((r.status, r.served_by()), (200, "v2".to_owned()), "{sub}");
        assert_eq!(
            r.header(&decision_header).as_deref(),
            Some("subset=v2; reason=rule; rule=qa"),
            "{sub}"
        );
        let r = envoy.get("/", &h(&[("authorization", auth)]));
        assert_eq!((r.status, r.served_by()), (200, want.clone()), "{sub}");
        assert_eq!(
            r.header(&decision_header),
            Some(format!(
                "subset={want}; reason=hash; key=jwt_claim:sub; bucket={bucket}"
            )),
            "{sub}"
        );
    }

    // 4. A QA token that fails verification never reaches the filter.
    let bad = String::from_utf8(bearer(&sign_hs256_bad_signature(&claims(
        json!({"sub": "mallory", "groups": ["qa"]}),
    ))))
    .unwrap();
    let r = envoy.get(
        "/",
        &h(&[("authorization", bad), ("x-canary", "always".to_owned())]),
    );
    assert_eq!(r.status, 401, "jwt_authn refuses a bad signature");
    assert_eq!(r.header(&decision_header), None);

    // The counters agree: every forced request was a qa or beta rule match by a
    // verified user, none by an anonymous one.
    let stats = envoy.wasm_stats();
    let rule = |name: &str| {
        stats
            .get(&format!(
                "{}canary.rule=.={name};.;rule_matches",
                stats_prefix()
            ))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(rule("qa"), USERS as u64, "{stats:?}");
    assert_eq!(rule("beta"), USERS as u64, "{stats:?}");
    assert_eq!(rule("beta-link"), 0, "{stats:?}");
}
