//! Istio VirtualService `match` blocks, written as the filter's conditions one
//! to one, decide as Envoy 1.40 does with the routes Istio's pilot generates.
//!
//! A set of VirtualService-style HTTP routes (each an ordered list of `match`
//! blocks: `uri`, `method`, `authority`, `headers`, `queryParams`,
//! `withoutHeaders`; the conditions of a block are ANDed, the blocks ORed, the
//! routes tried in order) is translated by [`native_routes`] into Envoy routes
//! as pilot writes them (one route per block, in order: `path` / `prefix` /
//! `safe_regex`, `headers` matchers sorted by name, then `:method` and
//! `:authority`, `invert_match` for `withoutHeaders`, `query_parameters`), and
//! by [`filter_rule`] into one canary-router rule per route,
//! `{"any": [{"all": [...]} per block]}`. ONE real Envoy runs both: a listener
//! routing natively (each route answers its name) and a listener running the
//! filter (its decision header names the rule). Both listeners normalize the
//! path as Istio's default `pathNormalization: BASE` does, so the filter sees
//! the same `:path` the native routes see. A few thousand generated requests go
//! to both; the decisions must be the same.
//!
//! One translation is not the literal `not`, to be exact: Envoy's
//! `invert_match` never matches a request WITHOUT the header (only a present
//! value that does not match), so `withoutHeaders: {h: M}` is
//! `{"all": [{"header": {"name": h, "present": true}}, {"not": {"header": M}}]}`.
//! Pilot's catch-all (`prefix: ""`) becomes `present_match` inverted, which
//! matches exactly when the header is absent: `{"not": {"header": present}}`.
//!
//! Differences by design, each asserted precisely: when the two listeners
//! disagree, the request is rewritten, for the filter or for Envoy, by the
//! documented difference that applies, and then the filter must decide on its
//! version what Envoy decides on its version (a rewrite for Envoy must also
//! leave the filter's own decision unchanged). Each disagreement is so shown
//! to be exactly that difference (alone, or several together) and nothing else:
//! - authority WITH a port (`shop.example.com:8443`): Envoy, like Istio,
//!   matches the raw `:authority`; the filter's `host` drops the port (a
//!   `header` test cannot name `:authority`). Rewrite for Envoy: no port.
//! - percent-escapes in the query (`beta=%31`, `b%65ta=1`, `q=a%20b`): Envoy's
//!   route `query_parameters` match the raw name and value, NOT decoded; the
//!   filter decodes them. Rewrite for the filter: each `%` written `%25`, so
//!   that it decodes to the raw text Envoy reads. (So an Istio `queryParams`
//!   value with a space or any byte a request line cannot carry raw never
//!   matches in Envoy; the filter matches its percent-encoded form.)
//! - a bad percent-escape in the query (`%zz=1&beta=1`, `beta=1%`): Envoy keeps
//!   it as text and reads on; the filter's lookup is undecodable and never
//!   matches. Rewrite for the filter: that `%` written `%25`.
//!
//! Refused by both: a `#` in the request target. Envoy's HTTP/1 codec answers
//! 400 before any route or filter runs, so a `uri` never holds a fragment in
//! Envoy (the filter's cut at `#` is never reached); asserted for every such
//! request, and only those.
//!
//! Found to agree (no difference): regex on `uri` (Envoy's `safe_regex` path
//! matcher reads the path without its query, a full match, as the filter's
//! `path` does); `+` in a query (neither reads it as a space); repeated query
//! parameters (the first one decides on both); a query parameter without `=`
//! (the empty value on both); path normalization (both see the normalized
//! `:path`); repeated headers and headers with several comma-separated values.
//!
//! The literal `{"not": {"header": M}}` for `withoutHeaders` was measured on
//! this corpus too: it differs from Envoy on requests WITHOUT the header (the
//! filter matches, Envoy does not), hence the translation above.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use canary_router::rng::SplitMix64;
use common::side_by_side::{answer, hcm, listener, start, wasm_filter};
use common::{reserve_port, Client, Response};
use serde_json::{json, Value};

const DECISION: &str = "x-canary-decision";
/// The native listener's answer when no Istio route matched.
const NONE: &str = "none";

// ---------------------------------------------------------------------------
// Istio's model
// ---------------------------------------------------------------------------

/// Istio's `StringMatch`.
#[derive(Clone, Copy, Debug)]
enum Sm {
    Exact(&'static str),
    Prefix(&'static str),
    Regex(&'static str),
}

/// One `HTTPMatchRequest`.
#[derive(Clone, Debug, Default)]
struct Block {
    uri: Option<Sm>,
    method: Option<Sm>,
    authority: Option<Sm>,
    headers: Vec<(&'static str, Sm)>,
    query_params: Vec<(&'static str, Sm)>,
    without_headers: Vec<(&'static str, Sm)>,
}

impl Block {
    fn uri(mut self, m: Sm) -> Self {
        self.uri = Some(m);
        self
    }
    fn method(mut self, m: Sm) -> Self {
        self.method = Some(m);
        self
    }
    fn authority(mut self, m: Sm) -> Self {
        self.authority = Some(m);
        self
    }
    fn header(mut self, name: &'static str, m: Sm) -> Self {
        self.headers.push((name, m));
        self
    }
    fn query(mut self, name: &'static str, m: Sm) -> Self {
        assert!(
            !matches!(m, Sm::Prefix(_)),
            "Istio's queryParams take exact or regex"
        );
        self.query_params.push((name, m));
        self
    }
    fn without(mut self, name: &'static str, m: Sm) -> Self {
        self.without_headers.push((name, m));
        self
    }
}

fn block() -> Block {
    Block::default()
}

/// One `HTTPRoute`: its name and its `match` blocks.
struct IstioRoute {
    name: &'static str,
    blocks: Vec<Block>,
}

fn istio_routes() -> Vec<IstioRoute> {
    use Sm::*;
    let route = |name, blocks| IstioRoute { name, blocks };
    vec![
        route(
            "internal",
            vec![
                block().uri(Prefix("/admin")),
                block().uri(Exact("/healthz")),
            ],
        ),
        route(
            "writes",
            vec![block()
                .method(Regex("POST|PUT|PATCH"))
                .authority(Exact("shop.example.com"))
                .uri(Prefix("/api/"))
                .without("user-agent", Prefix("LegacyApp/"))],
        ),
        route(
            "beta",
            vec![
                block().query("beta", Exact("1")),
                block()
                    .query("beta", Regex("yes|on|true"))
                    .without("x-debug", Exact("1")),
            ],
        ),
        route(
            "search",
            vec![
                block()
                    .uri(Exact("/search"))
                    .query("q", Regex("[a-z ]+"))
                    .query("lang", Exact("en")),
                block().uri(Exact("/find")).query("q", Exact("a+b")),
            ],
        ),
        route(
            "tenant",
            vec![
                block()
                    .header("x-tenant", Exact("acme"))
                    .method(Exact("GET")),
                block()
                    .header("x-tenant", Prefix("acme-"))
                    .authority(Prefix("api.")),
            ],
        ),
        route(
            "mobile",
            vec![
                block().header("user-agent", Regex(".*(Android|iPhone).*")),
                block()
                    .header("x-client", Exact("mobile"))
                    .without("x-debug", Exact("1")),
            ],
        ),
        route(
            "items",
            vec![
                block().uri(Regex("/items/[0-9]+")),
                block().uri(Regex("/v[12]/.*")).method(Prefix("G")),
            ],
        ),
        route(
            "hosts",
            vec![
                block().authority(Regex("(www\\.)?example\\.org")),
                block()
                    .authority(Prefix("canary."))
                    .without("x-stable", Prefix("")),
            ],
        ),
        route(
            "legacy",
            vec![
                block()
                    .header("user-agent", Prefix("LegacyApp/"))
                    .uri(Prefix("/api/")),
                block()
                    .method(Exact("DELETE"))
                    .without("x-tenant", Regex("acme.*")),
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------
// The translator
// ---------------------------------------------------------------------------

fn string_match(m: Sm) -> Value {
    match m {
        Sm::Exact(v) => json!({"exact": v}),
        Sm::Prefix(v) => json!({"prefix": v}),
        Sm::Regex(v) => json!({"safe_regex": {"regex": v}}),
    }
}

/// Pilot's catch-all header match: an empty prefix is `present_match`.
fn catch_all(m: Sm) -> bool {
    matches!(m, Sm::Prefix(""))
}

fn header_matcher(name: &str, m: Sm) -> Value {
    if catch_all(m) {
        json!({"name": name, "present_match": true})
    } else {
        json!({"name": name, "string_match": string_match(m)})
    }
}

/// (a) The Envoy routes pilot generates: one per block, in order, each
/// answering the Istio route's name.
fn native_routes(routes: &[IstioRoute]) -> Vec<Value> {
    let mut out = Vec::new();
    for route in routes {
        for b in &route.blocks {
            let mut headers: Vec<Value> = b
                .headers
                .iter()
                .map(|(n, m)| header_matcher(n, *m))
                .collect();
            for (n, m) in &b.without_headers {
                let mut h = header_matcher(n, *m);
                h["invert_match"] = json!(true);
                headers.push(h);
            }
            headers.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
            if let Some(m) = b.method {
                headers.push(header_matcher(":method", m));
            }
            if let Some(m) = b.authority {
                headers.push(header_matcher(":authority", m));
            }
            let mut matcher = match b.uri {
                None => json!({"prefix": "/"}),
                Some(Sm::Exact(p)) => json!({"path": p}),
                Some(Sm::Prefix(p)) => json!({"prefix": p}),
                Some(Sm::Regex(r)) => json!({"safe_regex": {"regex": r}}),
            };
            matcher["case_sensitive"] = json!(true);
            if !headers.is_empty() {
                matcher["headers"] = json!(headers);
            }
            if !b.query_params.is_empty() {
                let q: Vec<Value> = b
                    .query_params
                    .iter()
                    .map(|(n, m)| json!({"name": n, "string_match": string_match(*m)}))
                    .collect();
                matcher["query_parameters"] = json!(q);
            }
            out.push(json!({"match": matcher, "direct_response": answer(route.name)}));
        }
    }
    out.push(json!({"match": {"prefix": "/"}, "direct_response": answer(NONE)}));
    out
}

/// The filter's operator for a `StringMatch`.
fn operand(m: Sm) -> Value {
    match m {
        Sm::Exact(v) => json!({"exact": v}),
        Sm::Prefix(v) => json!({"prefix": v}),
        Sm::Regex(v) => json!({"regex": v}),
    }
}

fn test(source: &str, name: Option<&str>, m: Sm) -> Value {
    let mut op = operand(m);
    if let Some(name) = name {
        op["name"] = json!(name);
    }
    json!({ source: op })
}

/// (b) The filter's rule for one Istio route: any block, all of its tests.
fn filter_rule(route: &IstioRoute) -> Value {
    let blocks: Vec<Value> = route
        .blocks
        .iter()
        .map(|b| {
            let mut all = Vec::new();
            if let Some(m) = b.uri {
                all.push(test("path", None, m));
            }
            if let Some(m) = b.method {
                all.push(test("method", None, m));
            }
            if let Some(m) = b.authority {
                all.push(test("host", None, m));
            }
            for (n, m) in &b.headers {
                all.push(test("header", Some(n), *m));
            }
            for (n, m) in &b.query_params {
                all.push(test("query", Some(n), *m));
            }
            for (n, m) in &b.without_headers {
                if catch_all(*m) {
                    // `present_match` inverted: the header is absent.
                    all.push(json!({"not": {"header": {"name": n, "present": true}}}));
                } else {
                    // `invert_match` needs the header present.
                    all.push(json!({"header": {"name": n, "present": true}}));
                    all.push(json!({"not": test("header", Some(n), *m)}));
                }
            }
            assert!(!all.is_empty(), "an empty block matches everything");
            json!({ "all": all })
        })
        .collect();
    json!({
        "name": route.name,
        "subset": route.name,
        "match": {"any": blocks},
    })
}

fn plugin_config(routes: &[IstioRoute]) -> String {
    let mut subsets: Vec<Value> = routes
        .iter()
        .map(|r| json!({"name": r.name, "weight": 0}))
        .collect();
    subsets.push(json!({"name": "default", "weight": 100}));
    let rules: Vec<Value> = routes.iter().map(filter_rule).collect();
    json!({"subsets": subsets, "rules": rules, "decision_header": DECISION}).to_string()
}

// ---------------------------------------------------------------------------
// Envoy
// ---------------------------------------------------------------------------

fn bootstrap(routes: &[IstioRoute], admin: u16, native: u16, filter: u16) -> String {
    let wasm = wasm_filter(&plugin_config(routes));
    let filter_routes = vec![json!({"match": {"prefix": "/"}, "direct_response": answer("ok")})];
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [
            listener("native", native, hcm("native", native_routes(routes), vec![], true)),
            listener("filter", filter, hcm("filter", filter_routes, vec![wasm], true)),
        ]},
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    authority: String,
    /// The request target as sent: path, query, maybe a fragment.
    target: String,
    headers: Vec<(&'static str, &'static str)>,
}

/// What a listener decided: the Istio route (or rule) that matched, or
/// `None`; `Err(status)` when Envoy refused the request.
type Outcome = Result<Option<String>, u16>;

fn send(client: &mut Client, req: &Req) -> Response {
    let mut headers: Vec<(&str, &[u8])> = vec![("host", req.authority.as_bytes())];
    headers.extend(req.headers.iter().map(|(k, v)| (*k, v.as_bytes())));
    client
        .request(req.method, &req.target, &headers)
        .unwrap_or_else(|e| panic!("{req:?}: {e}"))
}

fn native_outcome(client: &mut Client, req: &Req) -> Outcome {
    let r = send(client, req);
    if r.status != 200 {
        return Err(r.status);
    }
    let body = r.body_str();
    Ok((body != NONE).then_some(body))
}

fn filter_outcome(client: &mut Client, req: &Req) -> Outcome {
    let r = send(client, req);
    if r.status != 200 {
        return Err(r.status);
    }
    let decision = r
        .header(DECISION)
        .unwrap_or_else(|| panic!("no decision header: {r:?}"));
    let rule = decision
        .split("; ")
        .find_map(|f| f.strip_prefix("rule="))
        .map(str::to_owned);
    let subset = decision
        .split("; ")
        .find_map(|f| f.strip_prefix("subset="))
        .unwrap_or_default();
    // The rule's subset is named after it; no rule means the default.
    assert_eq!(
        subset,
        rule.as_deref().unwrap_or("default"),
        "{decision} for {req:?}"
    );
    Ok(rule)
}

const METHODS: &[&str] = &[
    "GET", "GET", "POST", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
];

const AUTHORITIES: &[&str] = &[
    "shop.example.com",
    "shop.example.com",
    "shop.example.com",
    "api.shop.example.com",
    "Shop.example.com",
    "example.org",
    "www.example.org",
    "wwwxexample.org",
    "example.org.evil",
    "canary.example.com",
    "canary.",
    "localhost",
    "api.",
    "[::1]",
];

const PORTS: &[&str] = &[":8443", ":80", ":9000", ":", ""];

const PATHS: &[&str] = &[
    "/",
    "/admin",
    "/admin/users",
    "/adminx",
    "/Admin",
    "/healthz",
    "/healthz/",
    "/api/cart",
    "/api/cart",
    "/api/orders/7",
    "/api/",
    "/api",
    "/API/cart",
    "/items/42",
    "/items/",
    "/items/4a",
    "/items/0/x",
    "/v1/a",
    "/v2/",
    "/v3/a",
    "/search",
    "/search",
    "/search",
    "/Search",
    "/search/",
    "/find",
    "/find",
    "/a/../admin",
    "/api/./cart",
    "/%61dmin",
    "/items/%34%32",
];

const PARAMS: &[&str] = &[
    "beta=1",
    "beta=%31",
    "beta=2",
    "beta=yes",
    "beta=true",
    "beta=on",
    "beta=ON",
    "beta",
    "beta=",
    "b%65ta=1",
    "beta=%zz",
    "beta=1%",
    "%zz=1",
    "x=%G1",
    "q=abc",
    "q=abc",
    "q=a+b",
    "q=a%20b",
    "q=a%2Bb",
    "q=ABC",
    "q=a+b+c",
    "q=",
    "lang=en",
    "lang=en",
    "lang=fr",
    "lang=e%6E",
    "lang=en+",
    "x=1",
    "",
];

const FRAGMENTS: &[&str] = &["#top", "#beta=1", "#x?q=abc"];

fn header_values(name: &str) -> &'static [&'static str] {
    match name {
        "x-tenant" => &["acme", "acme-eu", "Acme", "acme,acme-eu", "other", ""],
        "user-agent" => &[
            "LegacyApp/2.1",
            "Mozilla/5.0 (Linux; Android 14)",
            "Mozilla/5.0 (iPhone)",
            "curl/8",
            "LegacyApp/1 (iPhone)",
        ],
        "x-client" => &["mobile", "web", "mobile,web", "Mobile"],
        "x-debug" => &["1", "0", "1,0", ""],
        "x-stable" => &["1", "", "yes"],
        other => panic!("no values for {other}"),
    }
}

const HEADERS: &[&str] = &["x-tenant", "user-agent", "x-client", "x-debug", "x-stable"];

/// Requests written by hand, sent before the generated ones, with the
/// decisions expected of the filter and of Envoy (`-`: no route, `400`:
/// refused): each documented difference and each agreement the module comment
/// names, at least once.
fn fixed_requests() -> Vec<(Req, Outcome, Outcome)> {
    let outcome = |s: &str| match s {
        "-" => Ok(None),
        "400" => Err(400),
        route => Ok(Some(route.to_owned())),
    };
    let req = |method, authority: &str, target: &str, headers, filter, envoy| {
        let r = Req {
            method,
            authority: authority.to_owned(),
            target: target.to_owned(),
            headers,
        };
        (r, outcome(filter), outcome(envoy))
    };
    let mobile = ("x-client", "mobile");
    let curl = ("user-agent", "curl/8");
    vec![
        // Query parameters: raw on Envoy, decoded by the filter; the first
        // of a name decides; a bad escape.
        req("GET", "localhost", "/x?beta=1", vec![], "beta", "beta"),
        req("GET", "localhost", "/x?beta=%31", vec![], "beta", "-"),
        req("GET", "localhost", "/x?b%65ta=1", vec![], "beta", "-"),
        req("GET", "localhost", "/x?beta=2&beta=1", vec![], "-", "-"),
        req(
            "GET",
            "localhost",
            "/x?beta=1&beta=2",
            vec![],
            "beta",
            "beta",
        ),
        req("GET", "localhost", "/x?beta", vec![], "-", "-"),
        req("GET", "localhost", "/x?%zz=1&beta=1", vec![], "-", "beta"),
        req("GET", "localhost", "/x?beta=1%", vec![], "-", "-"),
        req(
            "GET",
            "localhost",
            "/x?x=%G1&beta=1",
            vec![],
            "beta",
            "beta",
        ),
        req(
            "GET",
            "localhost",
            "/search?q=abc&lang=en",
            vec![],
            "search",
            "search",
        ),
        req(
            "GET",
            "localhost",
            "/search?lang=en&q=a%20b",
            vec![],
            "search",
            "-",
        ),
        req(
            "GET",
            "localhost",
            "/find?q=a+b",
            vec![],
            "search",
            "search",
        ),
        req("GET", "localhost", "/find?q=a%2Bb", vec![], "search", "-"),
        req("GET", "localhost", "/find?q=a%20b", vec![], "-", "-"),
        // The authority: raw on Envoy, without its port for the filter.
        // (`writes` wants a user-agent: `withoutHeaders` needs the header.)
        req("POST", "shop.example.com", "/api/cart", vec![], "-", "-"),
        req(
            "POST",
            "shop.example.com",
            "/api/cart",
            vec![curl],
            "writes",
            "writes",
        ),
        req(
            "POST",
            "shop.example.com:8443",
            "/api/cart",
            vec![curl],
            "writes",
            "-",
        ),
        req("GET", "www.example.org:80", "/", vec![], "hosts", "-"),
        req(
            "GET",
            "canary.example.com:80",
            "/",
            vec![],
            "hosts",
            "hosts",
        ),
        req("GET", "[::1]:8080", "/", vec![], "-", "-"),
        req("GET", "example.org:", "/", vec![], "-", "-"),
        // uri: regex without the query, normalization; a fragment is refused.
        req(
            "GET",
            "localhost",
            "/items/42?x=1",
            vec![],
            "items",
            "items",
        ),
        req("GET", "localhost", "/items/42x", vec![], "-", "-"),
        req(
            "GET",
            "localhost",
            "/a/../admin",
            vec![],
            "internal",
            "internal",
        ),
        req("GET", "localhost", "/items/7#top", vec![], "400", "400"),
        // withoutHeaders: the header absent, present and matching, present
        // and not, repeated, one value holding a comma.
        req("DELETE", "localhost", "/x", vec![], "-", "-"),
        req(
            "DELETE",
            "localhost",
            "/x",
            vec![("x-tenant", "acme-eu")],
            "-",
            "-",
        ),
        req(
            "DELETE",
            "localhost",
            "/x",
            vec![("x-tenant", "other")],
            "legacy",
            "legacy",
        ),
        req(
            "DELETE",
            "localhost",
            "/x",
            vec![("x-tenant", "other"), ("x-tenant", "acme")],
            "-",
            "-",
        ),
        req("GET", "canary.example.com", "/", vec![], "hosts", "hosts"),
        req(
            "GET",
            "canary.example.com",
            "/",
            vec![("x-stable", "")],
            "-",
            "-",
        ),
        req("GET", "localhost", "/", vec![mobile], "-", "-"),
        req(
            "GET",
            "localhost",
            "/",
            vec![mobile, ("x-debug", "0")],
            "mobile",
            "mobile",
        ),
        req(
            "GET",
            "localhost",
            "/",
            vec![mobile, ("x-debug", "1")],
            "-",
            "-",
        ),
        req(
            "GET",
            "localhost",
            "/",
            vec![mobile, ("x-debug", "1,0")],
            "mobile",
            "mobile",
        ),
        req(
            "GET",
            "localhost",
            "/",
            vec![mobile, ("x-debug", "0"), ("x-debug", "1")],
            "-",
            "-",
        ),
    ]
}

fn generate(rng: &mut SplitMix64) -> Req {
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let method = METHODS[pick(METHODS.len())];
    let mut authority = AUTHORITIES[pick(AUTHORITIES.len())].to_owned();
    // A quarter with a port (or a bare `:`).
    if pick(4) == 0 {
        authority.push_str(PORTS[pick(PORTS.len())]);
    }
    let mut target = PATHS[pick(PATHS.len())].to_owned();
    if pick(5) < 3 {
        let n = 1 + pick(3);
        let params: Vec<&str> = (0..n).map(|_| PARAMS[pick(PARAMS.len())]).collect();
        target.push('?');
        target.push_str(&params.join("&"));
    }
    if pick(20) == 0 {
        target.push_str(FRAGMENTS[pick(FRAGMENTS.len())]);
    }
    let mut headers = Vec::new();
    for name in HEADERS {
        let copies = [0, 0, 1, 1, 2][pick(5)];
        let values = header_values(name);
        for _ in 0..copies {
            headers.push((*name, values[pick(values.len())]));
        }
    }
    Req {
        method,
        authority,
        target,
        headers,
    }
}

// ---------------------------------------------------------------------------
// The documented differences, as rewrites that remove them
// ---------------------------------------------------------------------------

/// The authority without its port, as the filter's `host` reads it.
fn without_port(req: &Req) -> Option<Req> {
    let a = &req.authority;
    let host = if a.starts_with('[') {
        &a[..a.find(']').map_or(a.len(), |e| e + 1)]
    } else {
        match a.rfind(':') {
            Some(c) if c + 1 < a.len() && a[c + 1..].bytes().all(|b| b.is_ascii_digit()) => &a[..c],
            _ => a,
        }
    };
    (host != a).then(|| Req {
        authority: host.to_owned(),
        ..req.clone()
    })
}

/// Split a target into (path, query with its `?`, fragment with its `#`).
fn split_target(target: &str) -> (&str, &str, &str) {
    let (before, fragment) = target.split_at(target.find('#').unwrap_or(target.len()));
    let (path, query) = before.split_at(before.find('?').unwrap_or(before.len()));
    (path, query, fragment)
}

/// Is the `%` at `i` followed by two hex digits?
fn valid_escape(b: &[u8], i: usize) -> bool {
    matches!((b.get(i + 1), b.get(i + 2)),
        (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
}

/// The query with each `%` that `which` picks written `%25`: the filter then
/// decodes it back to the `%` Envoy reads as text. `None` when none is picked.
fn escape_percents(req: &Req, which: fn(bool) -> bool) -> Option<Req> {
    let (path, query, fragment) = split_target(&req.target);
    let b = query.as_bytes();
    let mut out = String::with_capacity(query.len() + 8);
    let mut changed = false;
    for (i, c) in query.char_indices() {
        if c == '%' && which(valid_escape(b, i)) {
            out.push_str("%25");
            changed = true;
        } else {
            out.push(c);
        }
    }
    changed.then(|| Req {
        target: format!("{path}{out}{fragment}"),
        ..req.clone()
    })
}

/// Valid escapes (`%31`) kept as text for the filter.
fn raw_escapes(req: &Req) -> Option<Req> {
    escape_percents(req, |valid| valid)
}

/// Bad escapes (`%zz`, a trailing `%`) kept as text for the filter.
fn raw_bad_escapes(req: &Req) -> Option<Req> {
    escape_percents(req, |valid| !valid)
}

type Rewrite = fn(&Req) -> Option<Req>;

/// One documented difference: what it is, and how to rewrite a request for
/// the filter and for Envoy (`None`: sent as is) so that both read the same. A
/// rewrite returns `None` where the difference cannot show.
struct Difference {
    what: &'static str,
    for_filter: Option<Rewrite>,
    for_envoy: Option<Rewrite>,
}

const DIFFERENCES: &[Difference] = &[
    Difference {
        what: "authority with a port: Envoy matches the raw :authority, the filter's host drops the port",
        for_filter: None,
        for_envoy: Some(without_port),
    },
    Difference {
        what: "percent-escapes in the query: Envoy's query_parameters match the raw text, the filter decodes",
        for_filter: Some(raw_escapes),
        for_envoy: None,
    },
    Difference {
        what: "a bad percent-escape in the query: Envoy reads it as text, the filter's lookup never matches",
        for_filter: Some(raw_bad_escapes),
        for_envoy: None,
    },
];

/// The request as `d` rewrites it for each side, if `d` applies to it.
fn rewritten(d: &Difference, req: &Req) -> Option<(Req, Req)> {
    let f = d.for_filter.and_then(|r| r(req));
    let e = d.for_envoy.and_then(|r| r(req));
    if f.is_none() && e.is_none() {
        return None;
    }
    Some((
        f.unwrap_or_else(|| req.clone()),
        e.unwrap_or_else(|| req.clone()),
    ))
}

#[test]
fn istio_virtual_service_matches_decide_as_pilots_envoy_routes() {
    if common::wasm_only("builds its own Wasm listener beside Envoy's native matching") {
        return;
    }
    let routes = istio_routes();
    let (admin, native_port, filter_port) = (reserve_port(), reserve_port(), reserve_port());
    let _envoy = start(&bootstrap(&routes, admin, native_port, filter_port), admin);
    let mut native = Client::new(([127, 0, 0, 1], native_port).into());
    let mut filter = Client::new(([127, 0, 0, 1], filter_port).into());

    let mut rng = SplitMix64::new(0x0001_5710_2026);
    let fixed = fixed_requests();
    for (req, filter_want, envoy_want) in &fixed {
        assert_eq!(
            (
                &filter_outcome(&mut filter, req),
                &native_outcome(&mut native, req)
            ),
            (filter_want, envoy_want),
            "(filter, Envoy) on {req:?}"
        );
    }
    let mut requests: Vec<Req> = fixed.into_iter().map(|(r, _, _)| r).collect();
    requests.extend((0..3000).map(|_| generate(&mut rng)));
    let total = requests.len();
    let mut agreed = 0usize;
    let mut refused = 0usize;
    let mut per_route: BTreeMap<String, usize> = BTreeMap::new();
    let mut differences: BTreeMap<String, usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for req in requests {
        let on_filter = filter_outcome(&mut filter, &req);
        let on_envoy = native_outcome(&mut native, &req);
        if req.target.contains('#') {
            assert_eq!(on_envoy, Err(400), "a fragment is refused: {req:?}");
        }
        if on_filter == on_envoy {
            agreed += 1;
            match &on_envoy {
                Ok(route) => {
                    *per_route
                        .entry(route.clone().unwrap_or_else(|| NONE.to_owned()))
                        .or_default() += 1
                }
                Err(status) => {
                    // Only a fragment is refused, with 400, by Envoy itself.
                    assert!(
                        *status == 400 && req.target.contains('#'),
                        "refused {status}: {req:?}"
                    );
                    refused += 1;
                }
            }
            continue;
        }
        // The documented difference that explains it: each alone first, then
        // all that apply together.
        let mut candidates: Vec<(String, Req, Req)> = DIFFERENCES
            .iter()
            .filter_map(|d| rewritten(d, &req).map(|(f, e)| (d.what.to_owned(), f, e)))
            .collect();
        if candidates.len() > 1 {
            let (mut f, mut e) = (req.clone(), req.clone());
            let mut names = Vec::new();
            for d in DIFFERENCES {
                if let Some(r) = d.for_filter.and_then(|r| r(&f)) {
                    f = r;
                }
                if let Some(r) = d.for_envoy.and_then(|r| r(&e)) {
                    e = r;
                }
                if rewritten(d, &req).is_some() {
                    names.push(d.what);
                }
            }
            candidates.push((names.join(" AND "), f, e));
        }
        let mut explained = None;
        for (what, f, e) in candidates {
            // Envoy's side of a rewrite leaves the filter's decision as it is.
            assert_eq!(
                filter_outcome(&mut filter, &e),
                on_filter,
                "{what}: the rewrite {e:?} changed the filter's decision on {req:?}"
            );
            if filter_outcome(&mut filter, &f) == native_outcome(&mut native, &e) {
                explained = Some(what);
                break;
            }
        }
        match explained {
            Some(what) => *differences.entry(what).or_default() += 1,
            None => disagreements.push(format!(
                "{} {} authority {:?} headers {:?}: filter {on_filter:?}, Envoy {on_envoy:?}",
                req.method, req.target, req.authority, req.headers
            )),
        }
    }
    let documented: usize = differences.values().sum();
    println!(
        "Istio matches, Envoy vs filter: {total} requests, {agreed} agree \
         ({refused} of them a fragment refused by both), {documented} documented differences, {} unexplained",
        disagreements.len()
    );
    println!("decisions where both agree: {per_route:?}");
    for (what, n) in &differences {
        println!("  documented difference ({n}): {what}");
    }
    assert!(
        disagreements.is_empty(),
        "{} of {total} requests decided differently:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert_eq!(agreed + documented, total);
    // Every documented difference was met, and every route matched often.
    for d in DIFFERENCES {
        assert!(
            differences.keys().any(|k| k.contains(d.what)),
            "never exercised: {}",
            d.what
        );
    }
    for r in &routes {
        assert!(
            per_route.get(r.name).copied().unwrap_or(0) >= 10,
            "route {} rarely matched: {per_route:?}",
            r.name
        );
    }
    assert!(refused > 0, "a fragment was sent");
    assert!(agreed > total * 3 / 4, "{agreed} of {total}");
}
