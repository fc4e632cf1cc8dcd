#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Two instances of the filter on one listener, each deciding only the requests
//! of its `scope` (a host): `api.example.com` routed by `x-api-subset` (90/10,
//! counters `api.*`), `shop.example.com` by `x-shop-subset` (70/30, `shop.*`),
//! and a third host neither decides. Each instance is its own ECDS resource.
//!
//! - each service's users split by its own weights, every user exactly where
//!   the documented bucket formula puts them;
//! - a weight pushed to one instance moves no user of the other service, and
//!   only v1 -> v2 on its own;
//! - the counters are exact per instance: decided requests under its own
//!   prefix, every other request once in its `<prefix>.skipped`;
//! - a request outside an instance's scope is untouched by it: a client-sent
//!   routing header reaches the upstream as sent, and only `skipped` moves.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use canary_router::bucket::{bucket_of, seed_hash};
use common::*;
use serde_json::json;

const USERS: usize = 2_000;
/// The second instance's ECDS resource (the first is the harness's own).
const SHOP_RESOURCE: &str = "canary-router-shop";
/// A host outside both scopes; the route table sends it to v1.
const OTHER: &str = "other.example.com";

/// One service: its host, its instance's routing header, metrics prefix and seed.
struct Service {
    host: &'static str,
    header: &'static str,
    /// The response header on which the upstreams echo `header` as received.
    echo: &'static str,
    prefix: &'static str,
    seed: &'static str,
}

const API: Service = Service {
    host: "api.example.com",
    header: "x-api-subset",
    echo: "x-seen-api-subset",
    prefix: "api",
    seed: "scopes-api",
};
const SHOP: Service = Service {
    host: "shop.example.com",
    header: "x-shop-subset",
    echo: "x-seen-shop-subset",
    prefix: "shop",
    seed: "scopes-shop",
};

impl Service {
    /// The instance's configuration: v2 takes `v2` %, users keyed by `x-user-id`.
    fn config(&self, v2: u32) -> String {
        json!({
            "scope": {"host": {"exact": self.host}},
            "header": self.header,
            "metrics_prefix": self.prefix,
            "subsets": [{"name": "v1", "weight": 100 - v2}, {"name": "v2", "weight": v2}],
            "sticky": {"keys": [{"header": "x-user-id"}], "seed": self.seed},
        })
        .to_string()
    }

    /// Where each user must be at weight `v2`: buckets 0..(100-v2)% are v1's.
    fn expected(&self, users: &[String], v2: u32) -> Vec<String> {
        let seed = seed_hash(self.seed);
        users
            .iter()
            .map(|u| {
                let b = u32::from(bucket_of(u.as_bytes(), seed));
                if b < (100 - v2) * 100 { "v1" } else { "v2" }.to_string()
            })
            .collect()
    }

    fn other(&self) -> &'static Service {
        if self.prefix == API.prefix {
            &SHOP
        } else {
            &API
        }
    }
}

/// The route table: each service's host routed on its own header (v2 -> v2,
/// anything else -> v1), any other host to v1. A port in the host is ignored,
/// as the scopes ignore it.
fn route_by_host(y: String) -> String {
    let vhost = |s: &Service| {
        let on = |subset: &str| {
            json!({"match": {"prefix": "/", "headers": [
                {"name": s.header, "string_match": {"exact": subset}}]},
                "route": {"cluster": subset}})
        };
        json!({"name": s.prefix, "domains": [s.host], "routes": [
            on("v1"), on("v2"), {"match": {"prefix": "/"}, "route": {"cluster": "v1"}}]})
    };
    let routes = json!({
        "name": "scopes",
        "ignore_port_in_host_matching": true,
        "virtual_hosts": [vhost(&API), vhost(&SHOP), {"name": "other", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "v1"}}]}],
    });
    // Replace the whole `route_config:` block (up to the next line indented no
    // deeper than it).
    let key = "route_config:\n";
    assert_eq!(
        y.matches(key).count(),
        1,
        "envoy/envoy.yaml: one route_config"
    );
    let at = y.find(key).unwrap();
    let start = y[..at].rfind('\n').unwrap() + 1;
    let indent = &y[start..at];
    assert!(indent.trim().is_empty(), "route_config starts its line");
    let mut end = at + key.len();
    while let Some(len) = y[end..].find('\n').map(|i| i + 1) {
        let line = &y[end..end + len];
        let depth = line.len() - line.trim_start_matches(' ').len();
        if !line.trim().is_empty() && depth <= indent.len() {
            break;
        }
        end += len;
    }
    format!(
        "{}{indent}route_config: {routes}\n{}",
        &y[..start],
        &y[end..]
    )
}

/// The upstreams also echo both routing headers as they received them.
fn echo_routing_headers(y: String) -> String {
    let line = "- header: { key: x-seen-subset, value: \"%REQ(x-canary-subset)%\" }\n";
    assert_eq!(
        y.matches(line).count(),
        2,
        "envoy/backends.yaml: `{line}` twice"
    );
    let mut out = String::new();
    let mut rest = y.as_str();
    while let Some(at) = rest.find(line) {
        let start = rest[..at].rfind('\n').unwrap() + 1;
        let indent = &rest[start..at];
        out.push_str(&rest[..at + line.len()]);
        for s in [&API, &SHOP] {
            out.push_str(&format!(
                "{indent}- header: {{ key: {}, value: \"%REQ({})%\" }}\n",
                s.echo, s.header
            ));
        }
        rest = &rest[at + line.len()..];
    }
    out.push_str(rest);
    out
}

/// The test's own account of what it sent: requests per host, and the subset
/// each decided request was served by, per instance.
#[derive(Default)]
struct Sent {
    per_host: BTreeMap<&'static str, u64>,
    decided: BTreeMap<(&'static str, String), u64>,
}

impl Sent {
    fn host(&self, host: &str) -> u64 {
        self.per_host.get(host).copied().unwrap_or(0)
    }
}

/// Every user once on `s`'s host (over two keep-alive connections); the subset
/// each was served by. The upstream saw the instance's decision in its header,
/// and no header of the other instance (the client sent none, and the other
/// instance, outside its scope, wrote none).
fn visit(envoy: &Envoy, s: &'static Service, users: &[String], sent: &mut Sent) -> Vec<String> {
    let chunk = users.len().div_ceil(2);
    let got: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                let mut client = envoy.client();
                scope.spawn(move || {
                    part.iter()
                        .map(|u| {
                            let r = client.get(
                                "/",
                                &[("host", s.host.as_bytes()), ("x-user-id", u.as_bytes())],
                            );
                            assert_eq!(r.status, 200, "{} user {u}: {}", s.host, r.body_str());
                            let seen = r.header(s.echo).unwrap_or_default();
                            assert!(
                                seen == "v1" || seen == "v2",
                                "{} user {u}: the upstream saw {}: {seen:?}",
                                s.host,
                                s.header
                            );
                            assert_eq!(r.served_by(), seen, "{} user {u}: served by", s.host);
                            assert_eq!(
                                r.header(s.other().echo),
                                None,
                                "{} user {u}: the other instance wrote {}",
                                s.host,
                                s.other().header
                            );
                            seen
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    *sent.per_host.entry(s.host).or_default() += got.len() as u64;
    for subset in &got {
        *sent.decided.entry((s.prefix, subset.clone())).or_default() += 1;
    }
    got
}

/// The v2 share of a pass, in percent.
fn v2_share(subsets: &[String]) -> f64 {
    subsets.iter().filter(|s| *s == "v2").count() as f64 * 100.0 / subsets.len() as f64
}

/// Push `v2` to `s`'s instance only (its own ECDS resource), then visit its
/// users until every one is where the new weight puts them (within 60 s: a
/// loaded 2-core machine). On every pass each user is where the old or the new
/// weight puts them: users only move v1 -> v2. Returns the final pass.
fn push_weight(
    envoy: &Envoy,
    dir: &std::path::Path,
    s: &'static Service,
    users: &[String],
    (from, to): (u32, u32),
    sent: &mut Sent,
) -> Vec<String> {
    let before = s.expected(users, from);
    let after = s.expected(users, to);
    for (b, a) in before.iter().zip(&after) {
        assert!(
            b == a || (b == "v1" && a == "v2"),
            "the formula moves v1 -> v2 only"
        );
    }
    if s.prefix == API.prefix {
        write_ecds(dir, &s.config(to));
    } else {
        write_ecds_named(dir, SHOP_RESOURCE, &s.config(to));
    }
    let t0 = Instant::now();
    let mut passes = 0;
    loop {
        let got = visit(envoy, s, users, sent);
        passes += 1;
        for (i, g) in got.iter().enumerate() {
            assert!(
                *g == before[i] || *g == after[i],
                "{} {}: on {g}, neither {} ({from} %) nor {} ({to} %)",
                s.host,
                users[i],
                before[i],
                after[i]
            );
        }
        if got == after {
            eprintln!(
                "{}: {from} % -> {to} % in effect after {passes} pass(es), {:?}",
                s.host,
                t0.elapsed()
            );
            return got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{}: weight {to} not in effect after 60 s",
            s.host
        );
    }
}

/// The counters that moved around one request, and its response.
fn one(envoy: &Envoy, host: &str, headers: &[(&str, &str)]) -> (BTreeMap<String, u64>, Response) {
    let before = envoy.wasm_stats();
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    let r = envoy.get_new_conn("/", &h(&all));
    assert_eq!(r.status, 200, "{host} {headers:?}: {}", r.body_str());
    (delta(&before, &envoy.wasm_stats()), r)
}

fn skipped(prefix: &str) -> String {
    format!("{}{prefix}.skipped", stats_prefix())
}

/// Removes the ECDS directory however the test ends (after Envoy, declared later,
/// is stopped).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn two_instances_scoped_by_host_decide_count_and_reload_independently() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("canary-scopes-{}-{nanos}", std::process::id()));
    let _cleanup = RemoveDir(dir.clone());
    let mut envoy = Envoy::start(
        &API.config(10),
        Opts::default()
            .concurrency(2)
            .ecds(dir.clone())
            .second_instance(SHOP_RESOURCE, &SHOP.config(30))
            .edit_main(route_by_host)
            .edit_backends(echo_routing_headers),
    );
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i:04}")).collect();
    let mut sent = Sent::default();

    // 1. Each service follows its own weights, user by user.
    let api_1 = visit(&envoy, &API, &users, &mut sent);
    let shop_1 = visit(&envoy, &SHOP, &users, &mut sent);
    for (s, got, v2) in [(&API, &api_1, 10u32), (&SHOP, &shop_1, 30)] {
        assert_eq!(
            *got,
            s.expected(&users, v2),
            "{}: every user in their bucket",
            s.host
        );
        let share = v2_share(got);
        assert!(
            (share - f64::from(v2)).abs() <= 2.0,
            "{}: v2 share {share:.2} % of {USERS} users, want {v2} ± 2",
            s.host
        );
        eprintln!("{}: v2 share {share:.2} % (weight {v2})", s.host);
    }

    // 4. A third host: untouched by both instances. Client-sent routing headers
    // reach the upstream as sent; only the two skipped counters move.
    for _ in 0..100 {
        let r = envoy.get("/", &h(&[("host", OTHER), ("x-user-id", "someone")]));
        assert_eq!(
            (r.status, r.served_by()),
            (200, "v1".to_string()),
            "{OTHER}"
        );
        assert_eq!((r.header(API.echo), r.header(SHOP.echo)), (None, None));
    }
    *sent.per_host.entry(OTHER).or_default() += 100;
    let (moved, r) = one(
        &envoy,
        OTHER,
        &[
            ("x-api-subset", "v2"),
            ("x-shop-subset", "v2"),
            ("x-user-id", "mallory"),
        ],
    );
    *sent.per_host.entry(OTHER).or_default() += 1;
    assert_eq!(r.served_by(), "v1", "{OTHER}: the default route");
    assert_eq!(
        (r.header(API.echo), r.header(SHOP.echo)),
        (Some("v2".to_string()), Some("v2".to_string())),
        "{OTHER}: the client's routing headers reach the upstream unchanged"
    );
    assert_eq!(
        moved,
        BTreeMap::from([(skipped("api"), 1), (skipped("shop"), 1)]),
        "{OTHER}: nothing but the two skipped counters moves"
    );

    // Inside a scope (with a port in the host, which the scope ignores): the
    // instance replaces a forged copy of its header and counts; the other
    // instance leaves the client's copy of its own header alone and counts it
    // skipped.
    for s in [&API, &SHOP] {
        let (i, _) = s
            .expected(&users, if s.prefix == API.prefix { 10 } else { 30 })
            .into_iter()
            .enumerate()
            .find(|(_, sub)| sub == "v1")
            .unwrap();
        let host = format!("{}:8443", s.host);
        let (moved, r) = one(
            &envoy,
            &host,
            &[
                ("x-api-subset", "v2"),
                ("x-shop-subset", "v2"),
                ("x-user-id", &users[i]),
            ],
        );
        *sent.per_host.entry(s.host).or_default() += 1;
        *sent.decided.entry((s.prefix, "v1".into())).or_default() += 1;
        assert_eq!(r.served_by(), "v1", "{host} {}", users[i]);
        assert_eq!(
            r.header(s.echo).as_deref(),
            Some("v1"),
            "{host}: forged copy replaced"
        );
        assert_eq!(
            r.header(s.other().echo).as_deref(),
            Some("v2"),
            "{host}: {} untouched by the other instance",
            s.other().header
        );
        assert_eq!(
            moved,
            BTreeMap::from([
                (requests_counter(s.prefix, "v1", "hash"), 1),
                (responses_counter(s.prefix, "v1", "2xx"), 1),
                (skipped(s.other().prefix), 1),
            ]),
            "{host}: its instance decides, the other skips"
        );
    }

    // 2. A weight pushed to one instance moves no user of the other service;
    // its own users move only v1 -> v2. First api 10 -> 25, then shop 30 -> 50.
    let api_2 = push_weight(&envoy, &dir, &API, &users, (10, 25), &mut sent);
    let shop_2 = visit(&envoy, &SHOP, &users, &mut sent);
    assert_eq!(
        shop_2, shop_1,
        "no shop user moved when api's weight changed"
    );
    let moved_api = (0..USERS).filter(|&i| api_1[i] != api_2[i]).count();
    assert!(
        (0..USERS).all(|i| api_1[i] == api_2[i] || (api_1[i] == "v1" && api_2[i] == "v2")),
        "api users move v1 -> v2 only"
    );
    let share = v2_share(&api_2);
    assert!(
        (share - 25.0).abs() <= 2.0,
        "api v2 share {share:.2} % at 25"
    );

    let shop_3 = push_weight(&envoy, &dir, &SHOP, &users, (30, 50), &mut sent);
    let api_3 = visit(&envoy, &API, &users, &mut sent);
    assert_eq!(api_3, api_2, "no api user moved when shop's weight changed");
    let moved_shop = (0..USERS).filter(|&i| shop_2[i] != shop_3[i]).count();
    let share_shop = v2_share(&shop_3);
    assert!(
        (share_shop - 50.0).abs() <= 2.0,
        "shop v2 share {share_shop:.2} % at 50"
    );
    eprintln!(
        "api 10 -> 25 %: {moved_api} of {USERS} api users moved v1 -> v2 (share {share:.2} %), \
         0 shop users moved; shop 30 -> 50 %: {moved_shop} shop users moved v1 -> v2 \
         (share {share_shop:.2} %), 0 api users moved"
    );

    // 3. The counters, exact per instance over the whole run (ECDS reloads
    // included): each instance's requests and responses are the requests to its
    // host, all keyed (reason hash) and 2xx, per subset as served; its skipped
    // counter the requests to the two other hosts; no other counter moved.
    let stats = envoy.wasm_stats();
    let mut by_instance: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (name, value) in stats.iter().filter(|(_, v)| **v > 0) {
        let rest = name.strip_prefix(stats_prefix()).unwrap();
        let prefix = [&API, &SHOP]
            .into_iter()
            .map(|s| s.prefix)
            .find(|p| rest.starts_with(&format!("{p}.")))
            .unwrap_or_else(|| panic!("a counter of neither instance moved: {name} {value}"));
        if let Some((subset, reason)) = parse_requests_name(name) {
            assert_eq!(reason, "hash", "{name}");
            assert_eq!(
                *value,
                sent.decided.get(&(prefix, subset)).copied().unwrap_or(0),
                "{name}: the requests served by that subset"
            );
            *by_instance.entry((prefix, "requests")).or_default() += value;
        } else if let Some((subset, class)) = parse_responses_name(name) {
            assert_eq!(class, "2xx", "{name}");
            assert_eq!(
                *value,
                sent.decided.get(&(prefix, subset)).copied().unwrap_or(0),
                "{name}"
            );
            *by_instance.entry((prefix, "responses")).or_default() += value;
        } else if *name == skipped(prefix) {
            *by_instance.entry((prefix, "skipped")).or_default() += value;
        } else {
            panic!("an unexpected counter moved: {name} {value}");
        }
    }
    let (api_n, shop_n, other_n) = (sent.host(API.host), sent.host(SHOP.host), sent.host(OTHER));
    let want = BTreeMap::from([
        (("api", "requests"), api_n),
        (("api", "responses"), api_n),
        (("api", "skipped"), shop_n + other_n),
        (("shop", "requests"), shop_n),
        (("shop", "responses"), shop_n),
        (("shop", "skipped"), api_n + other_n),
    ]);
    assert_eq!(by_instance, want, "per-instance counters");
    eprintln!(
        "sent: {api_n} to {}, {shop_n} to {}, {other_n} to {OTHER}; counters {by_instance:?}",
        API.host, SHOP.host
    );

    // The skipped counters as Prometheus series.
    let prom = parse_prometheus(&envoy.prometheus());
    for (series, want) in [
        ("api_skipped", shop_n + other_n),
        ("shop_skipped", api_n + other_n),
    ] {
        let got: Vec<f64> = prom
            .iter()
            .filter(|(n, l, _)| n == series && l.is_empty())
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(got, vec![want as f64], "{series} at /stats/prometheus");
    }
}

/// Two instances on ONE routing header (`x-canary-subset`, the shipped route
/// table), scopes overlapping: `api`, scoped to `api.example.com` (v2 30 %),
/// first in filter order; `all`, unscoped (v2 70 %, another seed), after it.
/// No early strip, as in Istio: client copies reach the filters.
///
/// - on `api.example.com` every user is where `api`'s weights put them, not
///   `all`'s, with or without a forged copy of the header: the first instance
///   that decides routes, and `all` counts the request skipped;
/// - on any other host `all` decides, and replaces a forged copy although
///   `api` (outside its scope) left it in place: a client cannot pass for the
///   earlier instance;
/// - each instance's counters are exact.
#[test]
fn on_a_shared_routing_header_the_first_instance_that_decides_routes() {
    const USERS: usize = 500;
    const ALL_RESOURCE: &str = "canary-router-all";
    let config = |scope: Option<&str>, prefix: &str, v2: u32, seed: &str| {
        let mut c = json!({
            "metrics_prefix": prefix,
            "subsets": [{"name": "v1", "weight": 100 - v2}, {"name": "v2", "weight": v2}],
            "sticky": {"keys": [{"header": "x-user-id"}], "seed": seed},
        });
        if let Some(host) = scope {
            c["scope"] = json!({"host": {"exact": host}});
        }
        c.to_string()
    };
    let expected = |user: &str, v2: u32, seed: &str| {
        let b = u32::from(bucket_of(user.as_bytes(), seed_hash(seed)));
        if b < (100 - v2) * 100 {
            "v1"
        } else {
            "v2"
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("canary-shared-{}-{nanos}", std::process::id()));
    let _cleanup = RemoveDir(dir.clone());
    let envoy = Envoy::start(
        &config(Some(API.host), "api", 30, "shared-api"),
        Opts::default()
            .concurrency(2)
            .without_early_strip()
            .ecds(dir.clone())
            .second_instance(ALL_RESOURCE, &config(None, "all", 70, "shared-all")),
    );
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i:04}")).collect();
    let before = envoy.wasm_stats();
    let mut client = envoy.client();
    let mut disagree = 0;
    let mut sent = BTreeMap::<(&str, &str), u64>::new();
    for (i, u) in users.iter().enumerate() {
        let forged = ["v1", "v2", "bogus"][i % 3];
        for (host, prefix, v2, seed) in [
            (API.host, "api", 30, "shared-api"),
            (OTHER, "all", 70, "shared-all"),
        ] {
            let want = expected(u, v2, seed);
            for copy in [None, Some(forged)] {
                let mut headers = vec![("host", host), ("x-user-id", u.as_str())];
                if let Some(v) = copy {
                    headers.push(("x-canary-subset", v));
                }
                let r = client.get("/", &h(&headers));
                assert_eq!(r.status, 200, "{host} {u}: {}", r.body_str());
                assert_eq!(
                    (r.served_by(), r.header("x-seen-subset").unwrap_or_default()),
                    (want.to_string(), want.to_string()),
                    "{host} {u} (client copy {copy:?}): routed by {prefix}'s weights"
                );
                *sent.entry((prefix, want)).or_default() += 1;
            }
        }
        if expected(u, 30, "shared-api") != expected(u, 70, "shared-all") {
            disagree += 1;
        }
    }
    // The two instances' weights disagree for many users: the test tells which
    // instance routed.
    assert!(
        disagree > USERS / 4,
        "{disagree} of {USERS} users told apart"
    );
    let moved = delta(&before, &envoy.wasm_stats());
    let per_host = 2 * USERS as u64;
    let mut want = BTreeMap::from([(skipped("api"), per_host), (skipped("all"), per_host)]);
    for ((prefix, subset), n) in &sent {
        want.insert(requests_counter(prefix, subset, "hash"), *n);
        want.insert(responses_counter(prefix, subset, "2xx"), *n);
    }
    assert_eq!(
        moved, want,
        "each instance counts what it routed, skips the rest"
    );
    eprintln!(
        "shared header: {disagree} of {USERS} users on which the two instances' weights \
         disagree; every request routed by the first instance that decided it; counters {moved:?}"
    );
}
