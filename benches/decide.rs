#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! ns per decision, natively: the pure decision function with the real `Request`
//! adapter, for the typical configuration (claims from jwt_authn's metadata or
//! from its payload header), the large one, and `in` lists of 10, 10,000 and
//! 100,000 entries (which must cost the same). Run: `make bench`
//! or `cargo bench --bench decide`. The std harness is used (no criterion): each
//! case is timed over batches and the median batch is reported.

use std::hint::black_box;
use std::time::Instant;

use serde_json::{json, Value};

use canary_router::claims::{to_envoy_bytes, Payload};
use canary_router::config::load;
use canary_router::decide::decide;
use canary_router::formats::jwt::base64url_encode;
use canary_router::formats::pairs::{serialize, Pairs};
use canary_router::plan::Plan;
use canary_router::request::{ClaimSource, HeaderList, JwtSource, Lookup, Request};
use canary_router::rng::SplitMix64;

fn typical() -> Value {
    json!({
        "subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
        "sticky": {"keys": [{"jwt_claim": "sub"}, {"cookie": "session_id"}, {"header": "x-user-id"}],
                   "seed": "bench"},
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "beta", "subset": "v2", "match": {"cookie": {"name": "beta", "exact": "true"}}},
            {"name": "staff", "subset": "v2", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}}
        ]
    })
}

/// The typical configuration with claims from jwt_authn's `forward_payload_header`.
fn typical_payload_header() -> Value {
    let mut config = typical();
    config["jwt"] = json!({"source": "payload_header"});
    config
}

/// 197 rules that never match the benchmark requests, one `in` rule of
/// `in_size` tenants, then the typical three: every request walks all of them.
fn large(in_size: usize) -> Value {
    many_rules(197, in_size)
}

/// `filler` never-matching rules, the `in` rule, then the typical three.
fn many_rules(filler: usize, in_size: usize) -> Value {
    let mut config = typical();
    let mut rules: Vec<Value> = (0..filler)
        .map(|i| {
            if i % 2 == 0 {
                json!({"name": format!("h{i}"), "subset": "v2",
                       "match": {"header": {"name": format!("x-flag-{i}"), "exact": "on"}}})
            } else {
                json!({"name": format!("c{i}"), "subset": "v2",
                       "match": {"cookie": {"name": format!("flag{i}"), "prefix": "on"}}})
            }
        })
        .collect();
    let tenants: Vec<String> = (0..in_size).map(|i| format!("tenant-{i}")).collect();
    rules.push(json!({"name": "tenants", "subset": "v2",
                      "match": {"header": {"name": "x-tenant", "in": tenants}}}));
    rules.extend(config["rules"].as_array().cloned().unwrap_or_default());
    config["rules"] = Value::Array(rules);
    config
}

/// The benchmark request mix: a user key header, several cookies, verified
/// claims; no rule matches, so the sticky hash decides.
/// The host's answer: a fresh copy of the payload bytes, as `get_property` gives.
struct HostLike<'a>(&'a [u8]);

impl ClaimSource for HostLike<'_> {
    fn verified_payload(&self, _: &str) -> Lookup<Payload> {
        Ok(Some(Payload::Envoy(self.0.to_vec())))
    }
}

/// With `payload_header`, the claims come as jwt_authn forwards them: base64url
/// of the token's payload JSON, in the last header (jwt_authn appends it).
fn requests(payload_header: bool) -> Vec<(HeaderList, Vec<u8>)> {
    (0..1024)
        .map(|i| {
            let mut headers: HeaderList = vec![
                (":authority".into(), b"api.example.com".to_vec()),
                (":path".into(), b"/orders".to_vec()),
                (":method".into(), b"GET".to_vec()),
                ("user-agent".into(), b"wrk".to_vec()),
                ("x-user-id".into(), format!("user-{i}").into_bytes()),
                ("x-tenant".into(), format!("other-{i}").into_bytes()),
                (
                    "cookie".into(),
                    format!("theme=dark; lang=en; session_id=s{i}; consent=1").into_bytes(),
                ),
            ];
            let claims = json!({"iss": "canary-router-demo", "sub": format!("sub-{i}"),
                                "groups": ["dev"], "exp": 4102444800u64});
            if payload_header {
                let value = base64url_encode(claims.to_string().as_bytes());
                headers.push(("x-jwt-payload".into(), value.into_bytes()));
                return (headers, Vec::new());
            }
            (headers, to_envoy_bytes(&claims))
        })
        .collect()
}

fn plan(config: &Value) -> Plan {
    match load(config.to_string().as_bytes()) {
        Ok(loaded) => loaded.plan,
        Err(e) => panic!("bench config: {e}"),
    }
}

/// Batches per case and decisions per batch.
const ROUNDS: usize = 15;
const PER_BATCH: usize = 20_000;

/// Median ns per decision, net of the per-request copies (the header list and the
/// claim bytes, as the host hands them over), and the median copy cost itself.
///
/// Each round times a batch of copies alone and, right after it, a batch of
/// decisions that includes the same copies; the round's result is the difference.
/// Measuring the two side by side cancels most of this VM's drift in CPU speed
/// (a copy cost measured once, minutes before the cases, moved each case by
/// ±70 ns from run to run).
fn measure(plan: &Plan, requests: &[(HeaderList, Vec<u8>)]) -> (f64, f64) {
    // As the proxy receives them: one serialized header map per request.
    let requests: Vec<(Vec<u8>, Vec<u8>)> = requests
        .iter()
        .map(|(headers, claims)| {
            let pairs: Vec<(&[u8], &[u8])> = headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice()))
                .collect();
            (serialize(&pairs), claims.clone())
        })
        .collect();
    let requests = requests.as_slice();
    let mut entropy = SplitMix64::new(1);
    let mut net: Vec<f64> = Vec::new();
    let mut copies: Vec<f64> = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        copy_batch(requests);
        let copy_ns = start.elapsed().as_nanos() as f64 / PER_BATCH as f64;

        let start = Instant::now();
        decide_batch(plan, requests, &mut entropy);
        let decide_ns = start.elapsed().as_nanos() as f64 / PER_BATCH as f64;
        net.push(decide_ns - copy_ns);
        copies.push(copy_ns);
    }
    (median(net), median(copies))
}

// The two batches are functions of their own, so that callgrind counts each one's
// instructions (`callgrind_annotate --inclusive=yes`): per decision, net of the
// copies, is (decide_batch - copy_batch) / (ROUNDS * PER_BATCH).

#[inline(never)]
fn copy_batch(requests: &[(Vec<u8>, Vec<u8>)]) {
    for i in 0..PER_BATCH {
        let (headers, claims) = &requests[i % requests.len()];
        black_box((headers.clone(), claims.to_vec()));
    }
}

#[inline(never)]
fn decide_batch(plan: &Plan, requests: &[(Vec<u8>, Vec<u8>)], entropy: &mut SplitMix64) {
    for i in 0..PER_BATCH {
        let (headers, claims) = &requests[i % requests.len()];
        // The filter builds one Request per HTTP request: include that cost.
        // The host hands over a fresh buffer; the Request reads it in place.
        let headers = headers.clone();
        let request = Request::from_pairs(
            &plan.slots,
            &plan.jwt,
            HostLike(claims),
            Ok(Pairs::new(&headers)),
        );
        black_box(decide(black_box(plan), &request, entropy));
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// 200 composed rules that never match, in the shapes of benches/envoy/run.py's
/// `canary-router-composed` listener, then the typical three.
fn composed() -> Value {
    let mut config = typical();
    let mut rules: Vec<Value> = (0..200)
        .map(|i| {
            let m = match i % 4 {
                0 | 1 => json!({"all": [{"header": {"name": format!("x-flag-{i}"), "exact": "on"}},
                                        {"path": {"prefix": format!("/svc-{i}/")}}]}),
                2 => json!({"all": [{"cookie": {"name": format!("flag{i}"), "prefix": "on"}},
                                    {"method": {"in": ["POST", "PUT"]}}]}),
                _ => json!({"any": [{"header": {"name": format!("x-team-{i}"), "exact": "blue"}},
                                    {"query": {"name": format!("variant{i}"), "exact": "b"}}]}),
            };
            json!({"name": format!("composed{i}"), "subset": "v2", "match": m})
        })
        .collect();
    rules.extend(config["rules"].as_array().cloned().unwrap_or_default());
    config["rules"] = Value::Array(rules);
    config
}

fn main() {
    // `cargo bench` passes --bench; other arguments select the cases whose name
    // contains one of them (`cargo bench --bench decide -- typical`).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let with_metadata = requests(false);
    let with_payload_header = requests(true);
    let cases: Vec<(String, Value)> = vec![
        ("typical (3 rules, 3 sticky keys)".into(), typical()),
        (
            "typical, claims from the payload header".into(),
            typical_payload_header(),
        ),
        ("large (201 rules, in list of 50,000)".into(), large(50_000)),
        ("composed (200 composed rules)".into(), composed()),
        ("in list of 10".into(), large(10)),
        ("in list of 10,000".into(), large(10_000)),
        ("in list of 100,000".into(), large(100_000)),
        (
            "500 rules, in list of 100,000".into(),
            many_rules(496, 100_000),
        ),
    ];
    println!("decide(): median ns per decision, net of the per-request copies (median)");
    let mut results = Vec::new();
    for (name, config) in &cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let plan = plan(config);
        let requests = match plan.jwt {
            JwtSource::PayloadHeader { .. } => &with_payload_header,
            _ => &with_metadata,
        };
        let (ns, copies) = measure(&plan, requests);
        println!("  {name:<40} {ns:>8.0} ns   (copies {copies:.0} ns)");
        results.push(json!({"case": name, "ns_per_decision": ns, "copies_ns": copies}));
    }
    let out = json!({"cases": results});
    let dir = std::path::Path::new("target/bench");
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join("decide.json"), out.to_string());
    }
}
