//! gRPC end to end: a real gRPC server and client (PyPI grpcio,
//! tests/grpc/*.py) over HTTP/2 through a real Envoy running the filter, the
//! v1/v2 upstreams on HTTP/2 clusters chosen by the filter's routing header
//! ([`common::grpc`]).
//!
//! - a v2 that answers UNAVAILABLE to every 5th call shows exactly 80 %
//!   `grpc_ok` and 20 % `grpc_error`, while HTTP/1.1 requests on the same
//!   listener keep their `2xx`/`5xx` classes, exact; the shipped Flagger
//!   success-rate query over a real Prometheus scraping that Envoy says 80 %;
//! - the same v2 under the brake trips it, and v2's users go to v1;
//! - a healthy v2, even one answering NOT_FOUND and INVALID_ARGUMENT, is never
//!   braked over hundreds of calls;
//! - each way a call can end: a trailers-only error (grpc-status in the one
//!   HEADERS frame, as Envoy's access log shows), an error after initial
//!   metadata or after messages (grpc-status in the trailers), every default
//!   failure code, codes that are not failures, `application/grpc+proto` and
//!   `application/grpc;...` requests, gRPC-Web counted as HTTP, and calls the
//!   client cancels (no grpc-status: not counted);
//! - `grpc.failure_codes` in the configuration decides what `grpc_error` is;
//! - the latency histogram times a call to its response headers, not to its
//!   trailers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::grpc::{curl_grpc, Call, GrpcClient, GrpcServers, Outcome};
use common::prometheus::Prometheus;
use common::*;
use serde_json::json;

const PREFIX: &str = "canary";

/// Every request to v2 (weights 0/100), by the hash of `x-user-id`, with
/// `extra`'s top-level fields added.
fn v2_config(extra: serde_json::Value) -> String {
    let mut c = json!({
        "subsets": [{"name": "v1", "weight": 0}, {"name": "v2", "weight": 100}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": "grpc"},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

/// The brake of tests/brake.rs, with a 10 s window: 20 calls of v2 fit in it
/// however slowly a loaded machine makes them.
fn brake() -> serde_json::Value {
    json!({"subset": "v2", "max_error_rate": 0.05, "window": "10s", "min_requests": 20})
}

/// Envoy with the filter and the gRPC routes to `servers`.
fn start(config: &str, servers: &GrpcServers, access_log: Option<&Path>, opts: Opts) -> Envoy {
    Envoy::start(config, opts.grpc(servers.upstreams(access_log)))
}

/// A temporary directory, removed on drop unless the test failed.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("canary-grpc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What moved between two readings of the filter's counters: responses by
/// (subset, class) and requests by (subset, reason).
#[derive(Debug, Default, PartialEq, Eq)]
struct Moved {
    responses: BTreeMap<(String, String), u64>,
    requests: BTreeMap<(String, String), u64>,
}

fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Moved {
    let mut m = Moved::default();
    for (name, n) in delta(before, after) {
        if let Some(k) = parse_responses_name(&name) {
            m.responses.insert(k, n);
        } else if let Some(k) = parse_requests_name(&name) {
            m.requests.insert(k, n);
        }
    }
    m
}

fn counts(pairs: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    pairs
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(a, b, n)| ((a.to_string(), b.to_string()), *n))
        .collect()
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stats().get(name).copied().unwrap_or(0)
}

/// Where Envoy saw each call's grpc-status, from the access log
/// ([`common::grpc::ACCESS_LOG_FORMAT`]): call id -> (in the response headers,
/// in the trailers, :status), `-` for absent. Waits (Envoy flushes the log
/// every second) until `calls` call lines are there.
fn grpc_status_seen(log: &Path, calls: usize) -> BTreeMap<String, (String, String, String)> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let field = |k: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            let call = field("call");
            if call != "-" && !call.is_empty() {
                out.insert(call, (field("headers"), field("trailers"), field("status")));
            }
        }
        if out.len() >= calls {
            return out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} of {calls} calls in the access log {}:\n{text}",
            out.len(),
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// v2's latency histogram at /stats/prometheus: (count, samples under 1 s).
fn v2_latency(envoy: &Envoy) -> (u64, u64) {
    let prom = parse_prometheus(&envoy.prometheus());
    let find = |name: &str, le: Option<&str>| {
        prom.iter()
            .find(|(n, l, _)| {
                n == name
                    && l.get("subset").map(String::as_str) == Some("v2")
                    && l.get("le").map(String::as_str) == le
            })
            .map_or(0, |(_, _, v)| *v as u64)
    };
    (
        find("canary_response_duration_ms_count", None),
        find("canary_response_duration_ms_bucket", Some("1000")),
    )
}

/// [`v2_latency`] once its count is `count` (histograms reach /stats/prometheus
/// on Envoy's stats flush, every second in envoy/envoy.yaml).
fn v2_latency_at(envoy: &Envoy, count: u64) -> (u64, u64) {
    let t0 = Instant::now();
    loop {
        let got = v2_latency(envoy);
        if got.0 == count {
            return got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "canary_response_duration_ms_count{{subset=\"v2\"}} is {}, want {count}",
            got.0
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The shipped success-rate query: the Flagger MetricTemplate
/// `canary-router-success-rate` of istio/flagger-metric-template.yaml.
fn flagger_success_rate_query(interval: &str) -> String {
    let text = read_repo_file("istio/flagger-metric-template.yaml");
    let doc = text
        .split("\n---")
        .find(|d| d.contains("\n  name: canary-router-success-rate\n"))
        .expect("istio/flagger-metric-template.yaml: canary-router-success-rate");
    let at = doc.find("\n  query: |\n").expect("its query") + "\n  query: |\n".len();
    let query: Vec<&str> = doc[at..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(str::trim)
        .collect();
    query.join(" ").trim().replace("{{ interval }}", interval)
}

fn assert_served(o: &Outcome, subset: &str, what: &str) {
    assert_eq!(
        (o.served_by().as_str(), o.seen_subset().as_str()),
        (subset, subset),
        "{what}: served by / routing header seen: {o:?}"
    );
}

/// 1, 4 and 5 of the brief: a v2 failing every 5th call, exact counts beside
/// exact HTTP counts, and the Flagger success rate of it all.
#[test]
fn every_fifth_call_unavailable_is_20_percent_grpc_error_and_http_is_counted_as_before() {
    let servers = GrpcServers::start_failing(5, "UNAVAILABLE");
    let tmp = TempDir::new("fifth");
    let log = tmp.file("access.log");
    let envoy = start(&v2_config(json!({})), &servers, Some(&log), Opts::default());
    let prom = Prometheus::start(&[envoy.admin_addr()]);
    prom.wait_for_scrapes(1);

    let mut client = GrpcClient::connect(envoy.listener_addr(), 1);
    let mut http = envoy.client();
    let before = envoy.wasm_stats();
    let mut outcomes = Vec::new();
    for i in 0..100 {
        let o = client.call(
            &Call::unary()
                .md("x-user-id", &format!("grpc-user-{i}"))
                .md("x-call-id", &format!("c{i}")),
        );
        outcomes.push(o);
        // Every other call, an HTTP/1.1 request; every 5th of those answers 503.
        if i % 2 == 1 {
            let j = i / 2;
            let (path, status) = if j % 5 == 4 {
                ("/status/503", 503)
            } else {
                ("/", 200)
            };
            let key = format!("http-user-{j}");
            // gRPC-Web is HTTP for the filter: its content type must not change the class.
            let ct: &[u8] = if j % 10 == 0 {
                b"application/grpc-web+proto"
            } else {
                b"text/plain"
            };
            let r = http.get(path, &[("x-user-id", key.as_bytes()), ("content-type", ct)]);
            assert_eq!(
                (r.status, r.served_by().as_str()),
                (status, "v2"),
                "HTTP {path}"
            );
        }
    }
    let after = envoy.wasm_stats();

    for (i, o) in outcomes.iter().enumerate() {
        let what = format!("call {i}");
        assert_served(o, "v2", &what);
        if i % 5 == 4 {
            assert_eq!(o.code, "UNAVAILABLE", "{what}: {o:?}");
            assert!(o.initial.is_empty(), "{what}: trailers-only: {o:?}");
        } else {
            assert_eq!((o.code.as_str(), o.messages), ("OK", 1), "{what}: {o:?}");
        }
    }
    // Envoy saw those UNAVAILABLEs in the response headers (trailers-only), the
    // OKs in the trailers.
    let seen = grpc_status_seen(&log, 100);
    for i in 0..100 {
        let want = if i % 5 == 4 { ("14", "-") } else { ("-", "0") };
        let got = &seen[&format!("c{i}")];
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.2.as_str()),
            (want.0, want.1, "200"),
            "call {i}: grpc-status in the headers, in the trailers, :status"
        );
    }

    let m = moved(&before, &after);
    assert_eq!(
        m.responses,
        counts(&[
            ("v2", "grpc_ok", 80),
            ("v2", "grpc_error", 20),
            ("v2", "2xx", 40),
            ("v2", "5xx", 10),
        ]),
        "responses by class"
    );
    assert_eq!(m.requests, counts(&[("v2", "hash", 150)]), "requests");
    // The latency histogram has every counted response, all answered at once.
    assert_eq!(v2_latency_at(&envoy, 150), (150, 150), "latency samples");

    // The shipped success rate (Flagger's template, in percent) over a real
    // Prometheus: 80 + 40 of 150 responses are not failures.
    prom.wait_for(
        r#"sum(canary_responses{subset="v2"})"#,
        Duration::from_secs(60),
        |s| s.len() == 1 && s[0].value == 150.0,
    );
    let query = flagger_success_rate_query("5m");
    let rate = prom.value(&query);
    assert!(
        (75.0..=85.0).contains(&rate),
        "success rate {rate} % by\n  {query}\nwant about 80 % (120 of 150 responses)"
    );
    eprintln!("Flagger success rate: {rate:.2} %");
}

/// 1 of the brief: the brake counts grpc_error as failures.
#[test]
fn grpc_errors_trip_the_brake_and_v2_users_move_to_v1() {
    let servers = GrpcServers::start_failing(5, "UNAVAILABLE");
    let config = json!({
        "subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": "grpc-brake"},
        "brake": brake(),
    })
    .to_string();
    let envoy = start(&config, &servers, None, Opts::default().concurrency(2));
    let (trips, tripped) = brake_stats(PREFIX, "v2");
    // Four HTTP/2 connections, spread over the two workers.
    let mut client = GrpcClient::connect(envoy.listener_addr(), 4);
    let before = envoy.wasm_stats();

    let t0 = Instant::now();
    let mut v2_users = Vec::new();
    let mut n = 0;
    while stat(&envoy, &trips) == 0 {
        let batch: Vec<Call> = (n..n + 20)
            .map(|i| Call::unary().md("x-user-id", &format!("user-{i}")))
            .collect();
        for (i, o) in (n..).zip(client.calls(&batch)) {
            if o.served_by() == "v2" && o.code == "OK" {
                v2_users.push(format!("user-{i}"));
            }
        }
        n += 20;
        // It trips once 20 calls of v2 are in the window, 20 % of them
        // failing; the limits only end a hung test.
        assert!(
            n < 5_000 && t0.elapsed() < Duration::from_secs(90),
            "no trip after {n} calls, {:?}",
            t0.elapsed()
        );
    }
    eprintln!("brake tripped after {n} calls, {:?}", t0.elapsed());
    envoy.wait_for_log("canary-router: brake tripped on v2: error rate");
    let m = moved(&before, &envoy.wasm_stats());
    let on_v2 = |class: &str| {
        m.responses
            .get(&("v2".to_string(), class.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert!(
        on_v2("grpc_error") > 0 && on_v2("5xx") == 0,
        "the failures the brake saw are gRPC ones: {m:?}"
    );
    assert_eq!(stat(&envoy, &trips), 1);
    assert_eq!(stat(&envoy, &tripped), 1);

    // v2's users (those it served before) now get v1, and succeed.
    assert!(v2_users.len() >= 10, "v2 served {} users", v2_users.len());
    let replay: Vec<Call> = v2_users
        .iter()
        .take(100)
        .map(|u| Call::unary().md("x-user-id", u))
        .collect();
    for (u, o) in v2_users.iter().zip(client.calls(&replay)) {
        assert_eq!(o.code, "OK", "{u}: {o:?}");
        assert_served(&o, "v1", u);
    }
    assert_eq!(stat(&envoy, &trips), 1, "one trip");
}

/// 3 of the brief: a healthy v2 (answering some callers' mistakes, which are
/// not failures) is never braked.
#[test]
fn a_healthy_grpc_canary_is_not_braked_and_caller_errors_are_not_failures() {
    let servers = GrpcServers::start();
    let envoy = start(
        &v2_config(json!({"brake": brake()})),
        &servers,
        None,
        Opts::default().concurrency(2),
    );
    let (trips, tripped) = brake_stats(PREFIX, "v2");
    let mut client = GrpcClient::connect(envoy.listener_addr(), 4);
    let before = envoy.wasm_stats();
    let calls: Vec<Call> = (0..400)
        .map(|i| {
            let call = if i % 3 == 0 {
                Call::stream()
            } else {
                Call::unary()
            };
            let call = call.md("x-user-id", &format!("user-{i}"));
            match i % 8 {
                3 | 7 => call.status("NOT_FOUND", "trailers-only"),
                5 => call.status("INVALID_ARGUMENT", "after-metadata"),
                _ => call,
            }
        })
        .collect();
    let outcomes = client.calls(&calls);
    for (i, o) in outcomes.iter().enumerate() {
        let want = match i % 8 {
            3 | 7 => "NOT_FOUND",
            5 => "INVALID_ARGUMENT",
            _ => "OK",
        };
        assert_eq!(o.code, want, "call {i}: {o:?}");
        assert_served(o, "v2", &format!("call {i}"));
    }
    let m = moved(&before, &envoy.wasm_stats());
    assert_eq!(
        m.responses,
        counts(&[("v2", "grpc_ok", 250), ("v2", "grpc_other", 150)]),
        "responses by class"
    );
    assert_eq!(stat(&envoy, &trips), 0, "no trip");
    assert_eq!(stat(&envoy, &tripped), 0, "not tripped");
}

/// One case of [`each_way_a_call_ends_is_counted_in_its_class`].
struct Case {
    call: Call,
    code: &'static str,
    class: &'static str,
    /// Where Envoy sees grpc-status: "headers" (trailers-only) or "trailers".
    status_in: &'static str,
}

fn case(call: Call, code: &'static str, class: &'static str, status_in: &'static str) -> Case {
    Case {
        call,
        code,
        class,
        status_in,
    }
}

/// 2 of the brief, call by call: exactly one responses counter moves, of the
/// expected class, for each way a call can end.
#[test]
fn each_way_a_call_ends_is_counted_in_its_class() {
    let servers = GrpcServers::start();
    let tmp = TempDir::new("each");
    let log = tmp.file("access.log");
    let envoy = start(&v2_config(json!({})), &servers, Some(&log), Opts::default());
    let mut client = GrpcClient::connect(envoy.listener_addr(), 1);
    let (u, s) = (Call::unary, Call::stream);
    let cases = vec![
        case(u(), "OK", "grpc_ok", "trailers"),
        case(s(), "OK", "grpc_ok", "trailers"),
        // Trailers-only: one HEADERS frame with END_STREAM and grpc-status.
        case(
            u().status("UNAVAILABLE", "trailers-only"),
            "UNAVAILABLE",
            "grpc_error",
            "headers",
        ),
        case(
            s().status("UNAVAILABLE", "trailers-only"),
            "UNAVAILABLE",
            "grpc_error",
            "headers",
        ),
        // After initial metadata, and after messages: grpc-status in trailers.
        case(
            u().status("INTERNAL", "after-metadata"),
            "INTERNAL",
            "grpc_error",
            "trailers",
        ),
        case(
            s().status("DATA_LOSS", "after-message"),
            "DATA_LOSS",
            "grpc_error",
            "trailers",
        ),
        // The rest of the default failure codes.
        case(
            u().status("UNKNOWN", "trailers-only"),
            "UNKNOWN",
            "grpc_error",
            "headers",
        ),
        case(
            u().status("DEADLINE_EXCEEDED", "after-metadata"),
            "DEADLINE_EXCEEDED",
            "grpc_error",
            "trailers",
        ),
        case(
            u().status("RESOURCE_EXHAUSTED", "trailers-only"),
            "RESOURCE_EXHAUSTED",
            "grpc_error",
            "headers",
        ),
        // Not failures: the caller's mistakes.
        case(
            u().status("NOT_FOUND", "trailers-only"),
            "NOT_FOUND",
            "grpc_other",
            "headers",
        ),
        case(
            s().status("NOT_FOUND", "after-message"),
            "NOT_FOUND",
            "grpc_other",
            "trailers",
        ),
        case(
            u().status("INVALID_ARGUMENT", "after-metadata"),
            "INVALID_ARGUMENT",
            "grpc_other",
            "trailers",
        ),
        case(
            u().status("PERMISSION_DENIED", "trailers-only"),
            "PERMISSION_DENIED",
            "grpc_other",
            "headers",
        ),
        case(
            u().status("UNAUTHENTICATED", "after-metadata"),
            "UNAUTHENTICATED",
            "grpc_other",
            "trailers",
        ),
        case(
            u().status("FAILED_PRECONDITION", "trailers-only"),
            "FAILED_PRECONDITION",
            "grpc_other",
            "headers",
        ),
    ];
    for (i, c) in cases.iter().enumerate() {
        let call = c
            .call
            .clone()
            .md("x-user-id", &format!("user-{i}"))
            .md("x-call-id", &format!("case{i}"));
        let before = envoy.wasm_stats();
        let o = client.call(&call);
        let m = moved(&before, &envoy.wasm_stats());
        let what = format!("case {i} {:?}", c.call);
        assert_eq!(o.code, c.code, "{what}: {o:?}");
        assert_served(&o, "v2", &what);
        assert_eq!(
            o.initial.is_empty(),
            c.status_in == "headers",
            "{what}: initial metadata only when not trailers-only: {o:?}"
        );
        assert_eq!(
            m,
            Moved {
                responses: counts(&[("v2", c.class, 1)]),
                requests: counts(&[("v2", "hash", 1)]),
            },
            "{what}"
        );
    }
    // Where Envoy itself saw each grpc-status.
    let seen = grpc_status_seen(&log, cases.len());
    for (i, c) in cases.iter().enumerate() {
        let code = grpc_code(c.code).to_string();
        let want = if c.status_in == "headers" {
            (code.as_str(), "-")
        } else {
            ("-", code.as_str())
        };
        let got = &seen[&format!("case{i}")];
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.2.as_str()),
            (want.0, want.1, "200"),
            "case {i} {:?}: grpc-status in the headers, in the trailers, :status",
            c.call
        );
    }

    // Request content types gRPC's client does not send, made by hand with
    // curl: `application/grpc+proto` and `application/grpc;...` are gRPC;
    // gRPC-Web is HTTP (the server answers it as gRPC anyway: :status 200).
    let curl_cases = [
        ("application/grpc+proto", None, "grpc_ok"),
        ("application/grpc+proto", Some("NOT_FOUND"), "grpc_other"),
        (
            "application/grpc;charset=utf-8",
            Some("UNAVAILABLE"),
            "grpc_error",
        ),
        ("application/grpc-web+proto", Some("UNAVAILABLE"), "2xx"),
        ("application/grpc-web", None, "2xx"),
    ];
    for (i, (ct, status, class)) in curl_cases.into_iter().enumerate() {
        let key = format!("curl-user-{i}");
        let mut headers = vec![("x-user-id", key.as_str())];
        if let Some(s) = status {
            headers.push(("x-want-status", s));
        }
        let before = envoy.wasm_stats();
        let r = curl_grpc(envoy.listener_addr(), ct, &headers);
        let m = moved(&before, &envoy.wasm_stats());
        let what = format!("curl {ct} {status:?}: {r:?}");
        assert_eq!(r.status, 200, "{what}");
        let want_code = grpc_code(status.unwrap_or("OK")).to_string();
        assert_eq!(r.get("grpc-status"), Some(want_code.as_str()), "{what}");
        assert_eq!(r.get("x-served-by"), Some("v2"), "{what}");
        assert_eq!(
            m,
            Moved {
                responses: counts(&[("v2", class, 1)]),
                requests: counts(&[("v2", "hash", 1)]),
            },
            "{what}"
        );
    }

    // A call the client cancels ends without any grpc-status: decided, not
    // counted as a response. Once before the server sent anything, once after
    // its headers and messages (the trailers would come 5 s later). The
    // client cancels well inside a 20 s deadline: with a 2 s deadline, the
    // server's own deadline (grpc-timeout) could answer DEADLINE_EXCEEDED
    // first, a real failure response that is rightly counted.
    let before = envoy.wasm_stats();
    for (i, call) in [
        u().md("x-want-delay-ms", "5000"),
        s().md("x-want-tail-delay-ms", "5000"),
    ]
    .into_iter()
    .enumerate()
    {
        let o = client.call(&call.md("x-user-id", &format!("gone-{i}")).cancel_after(2.0));
        assert_eq!(o.code, "CANCELLED", "{o:?}");
        if i == 1 {
            assert_eq!(o.messages, 2, "headers and messages came first: {o:?}");
        }
    }
    // Past the time the last one's trailers would have come.
    std::thread::sleep(Duration::from_millis(4_000));
    let m = moved(&before, &envoy.wasm_stats());
    assert_eq!(
        m,
        Moved {
            responses: BTreeMap::new(),
            requests: counts(&[("v2", "hash", 2)]),
        },
        "calls without grpc-status"
    );
}

/// The number of a gRPC status name.
fn grpc_code(name: &str) -> u8 {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.iter().position(|n| *n == name).unwrap() as u8
}

/// `grpc.failure_codes` replaces the default list, by name or number.
#[test]
fn failure_codes_come_from_the_configuration() {
    let servers = GrpcServers::start();
    let envoy = start(
        &v2_config(json!({"grpc": {"failure_codes": ["NOT_FOUND", 13]}})),
        &servers,
        None,
        Opts::default(),
    );
    let mut client = GrpcClient::connect(envoy.listener_addr(), 1);
    let cases = [
        (None, "grpc_ok"),
        (Some("NOT_FOUND"), "grpc_error"),
        (Some("INTERNAL"), "grpc_error"),
        (Some("UNAVAILABLE"), "grpc_other"),
        (Some("UNKNOWN"), "grpc_other"),
    ];
    for (i, (status, class)) in cases.into_iter().enumerate() {
        let mut call = Call::unary().md("x-user-id", &format!("user-{i}"));
        if let Some(s) = status {
            call = call.status(s, "after-metadata");
        }
        let before = envoy.wasm_stats();
        let o = client.call(&call);
        assert_eq!(o.code, status.unwrap_or("OK"), "{o:?}");
        let m = moved(&before, &envoy.wasm_stats());
        assert_eq!(
            m.responses,
            counts(&[("v2", class, 1)]),
            "{status:?} with failure_codes [NOT_FOUND, 13]"
        );
    }
}

/// The latency of a gRPC call is the time to its response headers: a stream
/// that answers its headers at once and its trailers 1.5 s later is under
/// 1 s, a call that answers nothing for 1.5 s is not.
#[test]
fn grpc_latency_is_the_time_to_response_headers() {
    let servers = GrpcServers::start();
    let envoy = start(&v2_config(json!({})), &servers, None, Opts::default());
    let mut client = GrpcClient::connect(envoy.listener_addr(), 1);
    let (n0, fast0) = v2_latency(&envoy);

    let t0 = Instant::now();
    let o = client.call(
        &Call::stream()
            .md("x-user-id", "late-trailers")
            .md("x-want-tail-delay-ms", "1500"),
    );
    assert_eq!((o.code.as_str(), o.messages), ("OK", 2), "{o:?}");
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    let (n1, fast1) = v2_latency_at(&envoy, n0 + 1);
    assert_eq!(
        fast1,
        fast0 + 1,
        "headers at once, trailers after 1.5 s: under 1 s"
    );

    let o = client.call(
        &Call::unary()
            .md("x-user-id", "late-headers")
            .md("x-want-delay-ms", "1500"),
    );
    assert_eq!(o.code, "OK", "{o:?}");
    let (_, fast2) = v2_latency_at(&envoy, n1 + 1);
    assert_eq!(fast2, fast1, "headers after 1.5 s: not under 1 s");
}
