#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! ns per decision, natively: the pure decision function with the real `Request`
//! adapter, for the typical and the large configuration and for `in` lists of
//! 10, 10,000 and 100,000 entries (which must cost the same). Run: `make bench`
//! or `cargo bench --bench decide`. The std harness is used (no criterion): each
//! case is timed over batches and the median batch is reported.

use std::hint::black_box;
use std::time::Instant;

use serde_json::{json, Value};

use canary_router::claims::{to_envoy_bytes, Payload};
use canary_router::config::load;
use canary_router::decide::decide;
use canary_router::header_map::{serialize, SerializedPairs};
use canary_router::request::{ClaimSource, HeaderList, JwtSource, Lookup, Request};
use canary_router::rng::SplitMix64;
use canary_router::router::Router;

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

fn requests() -> Vec<(HeaderList, Vec<u8>)> {
    (0..1024)
        .map(|i| {
            let headers = vec![
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
            (headers, to_envoy_bytes(&claims))
        })
        .collect()
}

fn router(config: &Value) -> Router {
    match load(config.to_string().as_bytes()) {
        Ok(loaded) => loaded.router,
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
fn measure(router: &Router, requests: &[(HeaderList, Vec<u8>)]) -> (f64, f64) {
    // As the proxy receives them: one serialized header map per request.
    let requests: Vec<(Vec<u8>, &Vec<u8>)> = requests
        .iter()
        .map(|(headers, claims)| {
            let pairs = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice()));
            (serialize(pairs), claims)
        })
        .collect();
    let jwt = JwtSource::Verified {
        metadata_key: "payload".into(),
    };
    let mut entropy = SplitMix64::new(1);
    let mut net: Vec<f64> = Vec::new();
    let mut copies: Vec<f64> = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..PER_BATCH {
            let (headers, claims) = &requests[i % requests.len()];
            black_box((headers.clone(), claims.to_vec()));
        }
        let copy_ns = start.elapsed().as_nanos() as f64 / PER_BATCH as f64;

        let start = Instant::now();
        for i in 0..PER_BATCH {
            let (headers, claims) = &requests[i % requests.len()];
            // The filter builds one Request per HTTP request: include that cost.
            // The host hands over a fresh buffer; the Request reads it in place.
            let headers = headers.clone();
            let request = Request::from_pairs(
                &router.slots,
                &jwt,
                HostLike(claims),
                Ok(SerializedPairs::new(&headers)),
            );
            black_box(decide(black_box(router), &request, &mut entropy));
        }
        let decide_ns = start.elapsed().as_nanos() as f64 / PER_BATCH as f64;
        net.push(decide_ns - copy_ns);
        copies.push(copy_ns);
    }
    (median(net), median(copies))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; other arguments select the cases whose name
    // contains one of them (`cargo bench --bench decide -- typical`).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let requests = requests();
    let cases: Vec<(String, Value)> = vec![
        ("typical (3 rules, 3 sticky keys)".into(), typical()),
        ("large (201 rules, in list of 50,000)".into(), large(50_000)),
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
        let router = router(config);
        let (ns, copies) = measure(&router, &requests);
        println!("  {name:<40} {ns:>8.0} ns   (copies {copies:.0} ns)");
        results.push(json!({"case": name, "ns_per_decision": ns, "copies_ns": copies}));
    }
    let out = json!({"cases": results});
    let dir = std::path::Path::new("target/bench");
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join("decide.json"), out.to_string());
    }
}
