//! The filter against a test double of the host that fails each host call in
//! turn, with every status: the filter must fall back or go on, never panic,
//! and never leave a client-sent routing header in place when it could remove it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::*;
use crate::formats::pairs::serialize;
use crate::rng::SplitMix64;

/// Statuses a host may answer with: every one the ABI defines but Ok, and one
/// no version defines.
const STATUSES: [u32; 9] = [1, 2, 3, 4, 6, 7, 8, 10, 99];

#[derive(Default)]
struct FakeHost {
    /// Every call, in order.
    calls: RefCell<Vec<&'static str>>,
    /// Fail the call with this index (0-based, over all calls) with this status.
    fail: Option<(usize, u32)>,
    config: Vec<u8>,
    request_headers: RefCell<Vec<(String, String)>>,
    response_status: RefCell<Option<String>>,
    response_headers: RefCell<Vec<(String, String)>>,
    /// `grpc-status` in the response headers, and in the trailers.
    grpc_status: RefCell<(Option<String>, Option<String>)>,
    /// Metric names by id, and values.
    metrics: RefCell<Vec<(String, MetricKind, u64)>>,
    shared: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    /// The stream's filter state (one request at a time).
    filter_state: RefCell<BTreeMap<String, String>>,
    clock_ns: Cell<u64>,
}

impl FakeHost {
    fn new(config: &str) -> FakeHost {
        FakeHost {
            config: config.as_bytes().to_vec(),
            clock_ns: Cell::new(1_700_000_000_000_000_000),
            ..FakeHost::default()
        }
    }

    fn enter(&self, call: &'static str) -> HostResult<()> {
        let mut calls = self.calls.borrow_mut();
        let n = calls.len();
        calls.push(call);
        match self.fail {
            Some((at, status)) if at == n => Err(HostError(status)),
            _ => Ok(()),
        }
    }

    fn request_header(&self, name: &str) -> Vec<String> {
        self.request_headers
            .borrow()
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn metric(&self, name: &str) -> u64 {
        self.metrics
            .borrow()
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0, |(_, _, v)| *v)
    }
}

impl Host for FakeHost {
    type RequestHeaders = SerializedHeaders;

    fn request_headers(&self) -> HostResult<SerializedHeaders> {
        self.enter("request_headers")?;
        let headers = self.request_headers.borrow();
        Ok(SerializedHeaders(serialize(&headers)))
    }

    fn verified_payload(&self, _key: &str) -> HostResult<Option<Vec<u8>>> {
        self.enter("verified_payload")?;
        Ok(None)
    }

    fn set_request_header(&self, name: &str, value: &str) -> HostResult<()> {
        self.enter("set_request_header")?;
        let mut headers = self.request_headers.borrow_mut();
        headers.retain(|(k, _)| k != name);
        headers.push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> HostResult<()> {
        self.enter("remove_request_header")?;
        self.request_headers.borrow_mut().retain(|(k, _)| k != name);
        Ok(())
    }

    fn response_status(&self) -> HostResult<Option<Status>> {
        self.enter("response_status")?;
        Ok(self
            .response_status
            .borrow()
            .as_ref()
            .map(|text| Status::new(text.as_bytes())))
    }

    fn grpc_status(&self, part: ResponsePart) -> HostResult<Option<Vec<u8>>> {
        self.enter(match part {
            ResponsePart::Headers => "grpc_status_headers",
            ResponsePart::Trailers => "grpc_status_trailers",
        })?;
        let (headers, trailers) = &*self.grpc_status.borrow();
        let value = match part {
            ResponsePart::Headers => headers,
            ResponsePart::Trailers => trailers,
        };
        Ok(value.clone().map(String::into_bytes))
    }

    fn add_response_header(&self, name: &str, value: &str) -> HostResult<()> {
        self.enter("add_response_header")?;
        self.response_headers
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    fn set_response_header(&self, name: &str, value: &str) -> HostResult<()> {
        self.enter("set_response_header")?;
        let mut headers = self.response_headers.borrow_mut();
        headers.retain(|(k, _)| k != name);
        headers.push((name.to_owned(), value.to_owned()));
        Ok(())
    }

    fn has_filter_state(&self, key: &str) -> HostResult<bool> {
        self.enter("has_filter_state")?;
        Ok(self.filter_state.borrow().contains_key(key))
    }

    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()> {
        self.enter("set_filter_state")?;
        self.filter_state
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn remove_response_header(&self, name: &str) -> HostResult<()> {
        self.enter("remove_response_header")?;
        self.response_headers
            .borrow_mut()
            .retain(|(k, _)| k != name);
        Ok(())
    }

    fn now_ns(&self) -> HostResult<u64> {
        self.enter("now_ns")?;
        let t = self.clock_ns.get() + 1_000_000;
        self.clock_ns.set(t);
        Ok(t)
    }

    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()> {
        self.enter("random_bytes")?;
        for (i, b) in out.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        Ok(())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        self.enter("define_metric")?;
        let mut metrics = self.metrics.borrow_mut();
        if let Some(i) = metrics.iter().position(|(n, _, _)| n == name) {
            return Ok(i as u32);
        }
        metrics.push((name.to_owned(), kind, 0));
        Ok(metrics.len() as u32 - 1)
    }

    fn increment_metric(&self, id: u32, by: i64) -> HostResult<()> {
        self.enter("increment_metric")?;
        let mut metrics = self.metrics.borrow_mut();
        let m = metrics.get_mut(id as usize).ok_or(HostError::NOT_FOUND)?;
        m.2 = m.2.wrapping_add(by as u64);
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.enter("record_metric")?;
        let mut metrics = self.metrics.borrow_mut();
        let m = metrics.get_mut(id as usize).ok_or(HostError::NOT_FOUND)?;
        m.2 = value;
        Ok(())
    }

    fn get_metric(&self, id: u32) -> HostResult<u64> {
        self.enter("get_metric")?;
        let metrics = self.metrics.borrow();
        metrics
            .get(id as usize)
            .map(|m| m.2)
            .ok_or(HostError::NOT_FOUND)
    }

    fn get_shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        self.enter("get_shared_data")?;
        Ok(match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.enter("set_shared_data")?;
        let mut shared = self.shared.borrow_mut();
        let current = shared.get(key).map_or(0, |(_, c)| *c);
        if cas.is_some_and(|c| c != current) {
            return Err(HostError::CAS_MISMATCH);
        }
        shared.insert(key.to_owned(), (value.to_vec(), current + 1));
        Ok(())
    }

    fn plugin_configuration(&self) -> HostResult<Vec<u8>> {
        self.enter("plugin_configuration")?;
        Ok(self.config.clone())
    }

    fn set_tick_period_ms(&self, _ms: u32) -> HostResult<()> {
        self.enter("set_tick_period_ms")
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(65_536)
    }
}

/// Every feature that makes host calls: rules, sticky keys, a pin cookie, the
/// decision header (shown to the keyed request, removed from the keyless one's
/// response), a ramp and a brake.
const CONFIG: &str = r#"{
  "subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
  "sticky": {"keys": [{"jwt_claim": "sub"}, {"header": "x-user-id"}], "seed": "s",
             "pin_cookie": {"name": "canary_pin"}},
  "decision_header": {"name": "x-canary-decision",
                      "match": {"header": {"name": "x-user-id", "present": true}}},
  "rules": [{"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}}],
  "ramp": {"subset": "v2", "start": "2020-01-01T00:00:00Z",
           "steps": [{"weight": 10, "hold": "1h"}, {"weight": 100}]},
  "brake": {"subset": "v2", "max_error_rate": 0.05, "window": "10s", "min_requests": 1}
}"#;

/// What a proxy does with one instance: configure, tick, one request with a
/// client-sent routing header, its 503 response (which trips the brake), a
/// second request and response.
fn scenario(host: &FakeHost) -> FilterRoot {
    let mut root = FilterRoot::new(SplitMix64::new(7));
    root.configure(host);
    root.tick(host);
    // A keyed request, then a keyless one (it gets a pin cookie).
    for user in ["u1", ""] {
        let mut headers = vec![
            (":path".to_string(), "/".to_string()),
            ("x-canary-subset".to_string(), "forged".to_string()),
        ];
        if !user.is_empty() {
            headers.push(("x-user-id".into(), user.into()));
        }
        *host.request_headers.borrow_mut() = headers;
        let mut stream = root.stream();
        stream.on_request_headers(host);
        // The client's copy never reaches the route table: replaced, or removed
        // when the write fails (one call fails per run here).
        let routed = host.request_header("x-canary-subset");
        assert!(
            routed.len() <= 1 && !routed.contains(&"forged".to_string()),
            "routing header after the request: {routed:?}, calls {:?}",
            host.calls.borrow()
        );
        stream.on_response_headers(host);
    }
    // A gRPC call whose status comes in the trailers: a failure on v2.
    *host.request_headers.borrow_mut() = vec![
        (":path".to_string(), "/pkg.Svc/Call".to_string()),
        ("content-type".to_string(), "application/grpc".to_string()),
        ("x-user-id".to_string(), "u1".to_string()),
    ];
    let status = host.response_status.replace(Some("200".into()));
    *host.grpc_status.borrow_mut() = (None, Some("14".into()));
    let mut stream = root.stream();
    stream.on_request_headers(host);
    stream.on_response_headers(host);
    stream.on_response_trailers(host);
    *host.response_status.borrow_mut() = status;
    root.tick(host);
    root
}

#[test]
fn with_a_healthy_host_the_scenario_routes_counts_and_trips() {
    let host = FakeHost::new(CONFIG);
    *host.response_status.borrow_mut() = Some("503".into());
    let root = scenario(&host);
    assert!(root.is_configured());
    assert_eq!(
        host.metric("canary.subset=.=v2;.;brake_trips"),
        1,
        "the 503s of v2 tripped the brake"
    );
    let counted: u64 = ["v1", "v2"]
        .iter()
        .flat_map(|s| ["hash", "random"].map(|r| (s, r)))
        .map(|(s, r)| host.metric(&format!("canary.subset=.={s};.;reason=.={r};.;requests")))
        .sum();
    assert_eq!(counted, 3);
    let grpc_errors: u64 = ["v1", "v2"]
        .iter()
        .map(|s| {
            host.metric(&format!(
                "canary.subset=.={s};.;class=.=grpc_error;.;responses"
            ))
        })
        .sum();
    assert_eq!(grpc_errors, 1, "the gRPC call's UNAVAILABLE trailer");
    assert!(host
        .response_headers
        .borrow()
        .iter()
        .any(|(k, v)| k == "set-cookie" && v.starts_with("canary_pin=")));
}

/// `decision_header.match`: the header on the responses to matching requests
/// only; the others lose even a copy an upstream hop wrote.
#[test]
fn a_gated_decision_header_reaches_only_matching_requests() {
    let config = r#"{
      "subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
      "sticky": {"keys": [{"header": "x-user-id"}], "seed": "s"},
      "decision_header": {"name": "x-canary-decision",
                          "match": {"header": {"name": "x-debug", "exact": "yes"}}}
    }"#;
    let host = FakeHost::new(config);
    *host.response_status.borrow_mut() = Some("200".into());
    let mut root = FilterRoot::new(SplitMix64::new(7));
    root.configure(&host);
    for (debug, want_header) in [(None, false), (Some("no"), false), (Some("yes"), true)] {
        let mut headers = vec![
            (":path".to_string(), "/".to_string()),
            ("x-user-id".to_string(), "u1".to_string()),
        ];
        if let Some(value) = debug {
            headers.push(("x-debug".into(), value.into()));
        }
        *host.request_headers.borrow_mut() = headers;
        // What a sidecar further down wrote on the way back.
        *host.response_headers.borrow_mut() = vec![(
            "x-canary-decision".into(),
            "subset=v2; reason=rule; rule=qa".into(),
        )];
        let mut stream = root.stream();
        stream.on_request_headers(&host);
        stream.on_response_headers(&host);
        let seen: Vec<String> = host
            .response_headers
            .borrow()
            .iter()
            .filter(|(k, _)| k == "x-canary-decision")
            .map(|(_, v)| v.clone())
            .collect();
        if want_header {
            assert_eq!(seen.len(), 1, "x-debug {debug:?}: {seen:?}");
            assert!(
                seen[0].contains("reason=hash; key=header:x-user-id"),
                "{seen:?}"
            );
        } else {
            assert!(seen.is_empty(), "x-debug {debug:?}: {seen:?}");
        }
    }
}

#[test]
fn every_host_call_may_fail_with_every_status_and_nothing_panics() {
    // How many calls the scenario makes when nothing fails.
    let clean = FakeHost::new(CONFIG);
    *clean.response_status.borrow_mut() = Some("503".into());
    scenario(&clean);
    let total = clean.calls.borrow().len();
    let kinds: std::collections::BTreeSet<&str> = clean.calls.borrow().iter().copied().collect();
    assert!(
        total > 40,
        "the scenario exercises the filter: {total} calls"
    );
    for kind in [
        "plugin_configuration",
        "define_metric",
        "get_shared_data",
        "set_shared_data",
        "set_tick_period_ms",
        "request_headers",
        "set_request_header",
        "increment_metric",
        "record_metric",
        "get_metric",
        "now_ns",
        "response_status",
        "grpc_status_headers",
        "grpc_status_trailers",
        "add_response_header",
        "set_response_header",
        "remove_response_header",
        "random_bytes",
    ] {
        assert!(kinds.contains(kind), "the scenario calls {kind}: {kinds:?}");
    }
    eprintln!(
        "{total} host calls, each failed with {} statuses",
        STATUSES.len()
    );
    let mut runs = 0;
    for at in 0..total {
        for status in STATUSES {
            let mut host = FakeHost::new(CONFIG);
            *host.response_status.borrow_mut() = Some("503".into());
            host.fail = Some((at, status));
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                scenario(&host);
            }));
            let failed = clean.calls.borrow()[at];
            assert!(
                outcome.is_ok(),
                "call {at} ({failed}) failing with status {status} panicked"
            );
            runs += 1;
        }
    }
    assert_eq!(runs, total * STATUSES.len());
}

#[test]
fn a_refused_configuration_read_keeps_the_previous_one() {
    let host = FakeHost::new(CONFIG);
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&host));
    let mut failing = FakeHost::new(CONFIG);
    let read = host
        .calls
        .borrow()
        .iter()
        .position(|c| *c == "plugin_configuration")
        .unwrap();
    failing.fail = Some((read, 10));
    assert!(!root.configure(&failing), "a failed read is a refusal");
    assert!(
        root.is_configured(),
        "the previous configuration still serves"
    );
    let broken = FakeHost::new("{\"subsets\": []}");
    assert!(!root.configure(&broken));
    assert!(root.is_configured());
}

#[test]
fn a_failed_header_write_removes_the_client_copy() {
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&FakeHost::new(CONFIG)));
    let client = vec![("x-canary-subset".to_string(), "v2".to_string())];
    // Where the write comes in the request's calls.
    let probe = FakeHost::new(CONFIG);
    *probe.request_headers.borrow_mut() = client.clone();
    root.stream().on_request_headers(&probe);
    let at = probe
        .calls
        .borrow()
        .iter()
        .position(|c| *c == "set_request_header")
        .unwrap();
    let mut host = FakeHost::new(CONFIG);
    *host.request_headers.borrow_mut() = client;
    host.fail = Some((at, 2));
    root.stream().on_request_headers(&host);
    assert!(host.calls.borrow().contains(&"remove_request_header"));
    assert!(host.request_header("x-canary-subset").is_empty());
}

/// The brake holds on every instance from the moment one trips it, not from
/// each one's next tick.
#[test]
fn a_trip_by_one_worker_holds_on_another_at_once() {
    // Two workers of one proxy: shared data and metrics are the proxy's.
    let host = FakeHost::new(
        r#"{"subsets": [{"name": "v1", "weight": 0}, {"name": "v2", "weight": 100}],
            "brake": {"subset": "v2", "max_error_rate": 0.05, "window": "10s", "min_requests": 1}}"#,
    );
    let mut a = FilterRoot::new(SplitMix64::new(1));
    let mut b = FilterRoot::new(SplitMix64::new(2));
    assert!(a.configure(&host) && b.configure(&host));
    let route = |root: &FilterRoot, status: &str| -> String {
        *host.response_status.borrow_mut() = Some(status.to_string());
        let mut s = root.stream();
        s.on_request_headers(&host);
        let routed = host.request_header("x-canary-subset");
        s.on_response_headers(&host);
        routed.join(",")
    };
    assert_eq!(route(&b, "200"), "v2");
    // Worker a sees a 503 of v2: the shared window trips.
    assert_eq!(route(&a, "503"), "v2");
    assert_eq!(host.metric("canary.subset=.=v2;.;brake_trips"), 1);
    // Worker b has not ticked: its next request already goes to v1.
    assert_eq!(route(&b, "200"), "v1");
    b.tick(&host);
    a.tick(&host);
    assert_eq!(route(&a, "200"), "v1");
    assert_eq!(route(&b, "200"), "v1");
}

#[test]
fn goals_count_the_matching_requests_that_complete_them() {
    let host = FakeHost::new(
        r#"{"subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
            "sticky": {"keys": [{"header": "x-user-id"}], "seed": "g"},
            "goals": [{"name": "checkout", "status": "2xx",
                       "match": {"all": [{"method": {"exact": "POST"}},
                                         {"path": {"prefix": "/checkout"}}]}}]}"#,
    );
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&host));
    let send = |method: &str, path: &str, status: &str| {
        *host.request_headers.borrow_mut() = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            ("x-user-id".to_string(), "u1".to_string()),
        ];
        *host.response_status.borrow_mut() = Some(status.to_string());
        let mut s = root.stream();
        s.on_request_headers(&host);
        s.on_response_headers(&host);
    };
    send("POST", "/checkout?cart=1", "200");
    send("POST", "/checkout", "503");
    send("GET", "/checkout", "200");
    send("POST", "/cart", "200");
    send("POST", "/checkout/pay", "201");
    assert_eq!(
        host.metric("canary.goal=.=checkout;.;subset=.=v1;.;goals"),
        2
    );
    assert_eq!(
        host.metric("canary.goal=.=checkout;.;subset=.=v2;.;goals"),
        0
    );
}

/// One request through a fresh instance of `config`; the `baggage` header the
/// next hop gets.
fn baggage_after(config: &str, headers: &[(&str, &str)]) -> (Vec<String>, FakeHost) {
    let host = FakeHost::new(config);
    let mut root = FilterRoot::new(SplitMix64::new(7));
    root.configure(&host);
    *host.request_headers.borrow_mut() = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    root.stream().on_request_headers(&host);
    (host.request_header("baggage"), host)
}

#[test]
fn the_cohort_travels_in_baggage_and_clients_cannot_choose_it() {
    let edge = r#"{"subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
      "sticky": {"keys": [{"header": "x-user-id"}], "seed": "mesh"},
      "rules": [{"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}}],
      "cohort": {}}"#;
    let plan = crate::config::load(edge.as_bytes()).unwrap().plan;
    let bucket = plan.split.bucket(b"alice");
    // Other members stay byte for byte; the client's own cohort members go.
    let (baggage, _) = baggage_after(
        edge,
        &[
            ("x-user-id", "alice"),
            ("baggage", "a=1;p, canary-bucket=9999,canary-force=v2 , b=2"),
        ],
    );
    assert_eq!(baggage, [format!("a=1;p, b=2,canary-bucket={bucket}")]);
    // A forced request carries the forced subset.
    let (baggage, _) = baggage_after(edge, &[("x-user-id", "alice"), ("x-canary", "always")]);
    assert_eq!(baggage, ["canary-force=v2"]);
    // Trusted inside the mesh: the received bucket is kept, not repeated.
    let mesh = edge.replace(r#""cohort": {}"#, r#""cohort": {"trust_incoming": true}"#);
    let mesh = mesh.replace(
        r#"{"header": "x-user-id"}"#,
        r#"{"baggage": "canary-bucket"}"#,
    );
    let (baggage, _) = baggage_after(&mesh, &[("baggage", "canary-bucket=42,x=1")]);
    assert_eq!(baggage, ["x=1,canary-bucket=42"]);
    // Over a W3C limit: nothing added, counted, the request still routed.
    let full: Vec<String> = (0..180).map(|i| format!("m{i}=1")).collect();
    let full = full.join(",");
    let (baggage, host) = baggage_after(edge, &[("x-user-id", "alice"), ("baggage", &full)]);
    assert_eq!(baggage, [full]);
    assert_eq!(host.metric("canary.cohort_overflows"), 1);
    assert_eq!(host.request_header("x-canary-subset").len(), 1);
}

/// One gRPC call (or HTTP request, without `content_type`) through `root`: its
/// response `:status`, `grpc-status` in the headers and in the trailers.
fn call(
    root: &FilterRoot,
    host: &FakeHost,
    content_type: Option<&str>,
    status: &str,
    grpc_status: (Option<&str>, Option<&str>),
) {
    let mut headers = vec![
        (":path".to_string(), "/pkg.Svc/Call".to_string()),
        ("x-user-id".to_string(), "u1".to_string()),
    ];
    if let Some(ct) = content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    *host.request_headers.borrow_mut() = headers;
    *host.response_status.borrow_mut() = Some(status.into());
    *host.grpc_status.borrow_mut() = (
        grpc_status.0.map(str::to_owned),
        grpc_status.1.map(str::to_owned),
    );
    let mut stream = root.stream();
    stream.on_request_headers(host);
    stream.on_response_headers(host);
    if grpc_status.1.is_some() {
        stream.on_response_trailers(host);
    }
}

const GRPC_V2: &str = r#"{"subsets": [{"name": "v1", "weight": 0}, {"name": "v2", "weight": 100}],
  "sticky": {"keys": [{"header": "x-user-id"}], "seed": "g"}"#;

fn class_counts(host: &FakeHost) -> Vec<(&'static str, u64)> {
    crate::labels::ResponseClass::ALL
        .iter()
        .map(|c| {
            (
                c.as_str(),
                host.metric(&format!(
                    "canary.subset=.=v2;.;class=.={};.;responses",
                    c.as_str()
                )),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn grpc_calls_are_classed_by_grpc_status_from_headers_or_trailers() {
    let host = FakeHost::new(&format!("{GRPC_V2}}}"));
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&host));
    let grpc = Some("application/grpc+proto");
    // Trailers-only: the status in the headers, no trailers hook.
    call(&root, &host, grpc, "200", (Some("14"), None));
    // The usual case: the status in the trailers.
    call(&root, &host, grpc, "200", (None, Some("0")));
    call(&root, &host, grpc, "200", (None, Some("13")));
    call(&root, &host, grpc, "200", (None, Some("5")));
    // A status that is not a number: UNKNOWN, a failure.
    call(&root, &host, grpc, "200", (None, Some("")));
    // A proxy's 503 without grpc-status: UNAVAILABLE.
    call(&root, &host, grpc, "503", (None, None));
    // gRPC-Web and plain HTTP: by `:status`, as before.
    call(
        &root,
        &host,
        Some("application/grpc-web"),
        "200",
        (Some("14"), None),
    );
    call(&root, &host, None, "503", (Some("0"), None));
    assert_eq!(
        class_counts(&host),
        [
            ("2xx", 1),
            ("5xx", 1),
            ("grpc_ok", 1),
            ("grpc_error", 4),
            ("grpc_other", 1)
        ]
    );
    // Trailers without a grpc-status: UNKNOWN, a failure, counted only then.
    let host = FakeHost::new(&format!("{GRPC_V2}}}"));
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&host));
    *host.request_headers.borrow_mut() = vec![
        ("content-type".to_string(), "application/grpc".to_string()),
        ("x-user-id".to_string(), "u1".to_string()),
    ];
    *host.response_status.borrow_mut() = Some("200".into());
    *host.grpc_status.borrow_mut() = (None, None);
    let mut stream = root.stream();
    stream.on_request_headers(&host);
    stream.on_response_headers(&host);
    assert_eq!(
        class_counts(&host),
        [],
        "nothing counted before the trailers"
    );
    stream.on_response_trailers(&host);
    assert_eq!(class_counts(&host), [("grpc_error", 1)]);
    // A second trailers call (none in Envoy) counts nothing more.
    stream.on_response_trailers(&host);
    assert_eq!(class_counts(&host), [("grpc_error", 1)]);
}

#[test]
fn grpc_failure_codes_are_configurable_and_feed_the_brake() {
    let config = format!(
        r#"{GRPC_V2}, "grpc": {{"failure_codes": ["NOT_FOUND", 16]}},
           "brake": {{"subset": "v2", "max_error_rate": 0.05, "window": "10s", "min_requests": 3}}}}"#
    );
    let host = FakeHost::new(&config);
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&host));
    let grpc = Some("application/grpc");
    // UNAVAILABLE is not listed here: no failure, no trip.
    for _ in 0..5 {
        call(&root, &host, grpc, "200", (None, Some("14")));
    }
    assert_eq!(class_counts(&host), [("grpc_other", 5)]);
    assert_eq!(host.metric("canary.subset=.=v2;.;brake_trips"), 0);
    // NOT_FOUND is: one in six is over 5 %, the brake trips, and the next
    // calls go to v1.
    for _ in 0..3 {
        call(&root, &host, grpc, "200", (None, Some("5")));
    }
    assert_eq!(host.metric("canary.subset=.=v2;.;brake_trips"), 1);
    assert_eq!(class_counts(&host), [("grpc_error", 1), ("grpc_other", 5)]);
    assert_eq!(
        host.metric("canary.subset=.=v1;.;class=.=grpc_error;.;responses"),
        2
    );
}

/// `scope`: requests outside it pass through untouched (the client's routing
/// header too, left to the route table) and are counted once, as skipped; two
/// instances with their own headers and prefixes each decide their own.
#[test]
fn each_instance_decides_only_its_scope_and_counts_the_rest_as_skipped() {
    let api = r#"{"subsets": [{"name": "v1", "weight": 0}, {"name": "v2", "weight": 100}],
      "header": "x-api-subset", "metrics_prefix": "api",
      "scope": {"host": {"exact": "api.example.com"}}}"#;
    let shop = r#"{"subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
      "header": "x-shop-subset", "metrics_prefix": "shop",
      "scope": {"any": [{"host": {"exact": "shop.example.com"}}, {"path": {"prefix": "/shop/"}}]}}"#;
    let api_host = FakeHost::new(api);
    let shop_host = FakeHost::new(shop);
    let mut a = FilterRoot::new(SplitMix64::new(1));
    let mut b = FilterRoot::new(SplitMix64::new(2));
    assert!(a.configure(&api_host) && b.configure(&shop_host));
    // One request through both instances, in filter order; the routing headers
    // and the metrics after it.
    let through = |authority: &str, path: &str| {
        let headers = vec![
            (":authority".to_string(), authority.to_string()),
            (":path".to_string(), path.to_string()),
            ("x-api-subset".to_string(), "client".to_string()),
            ("x-shop-subset".to_string(), "client".to_string()),
        ];
        for (root, host) in [(&a, &api_host), (&b, &shop_host)] {
            *host.request_headers.borrow_mut() = headers.clone();
            host.filter_state.borrow_mut().clear();
            *host.response_status.borrow_mut() = Some("200".into());
            let mut stream = root.stream();
            stream.on_request_headers(host);
            stream.on_response_headers(host);
        }
        (
            api_host.request_header("x-api-subset").join(","),
            shop_host.request_header("x-shop-subset").join(","),
        )
    };
    assert_eq!(
        through("api.example.com", "/"),
        ("v2".into(), "client".into())
    );
    assert_eq!(
        through("shop.example.com", "/"),
        ("client".into(), "v1".into())
    );
    assert_eq!(
        through("api.example.com:443", "/shop/cart"),
        ("v2".into(), "v1".into()),
        "overlapping scopes: each instance writes its own header"
    );
    assert_eq!(
        through("other.example.com", "/"),
        ("client".into(), "client".into()),
        "a third host is untouched by both"
    );
    let m = |host: &FakeHost, name: &str| host.metric(name);
    assert_eq!(m(&api_host, "api.skipped"), 2);
    assert_eq!(m(&shop_host, "shop.skipped"), 2);
    assert_eq!(
        m(&api_host, "api.subset=.=v2;.;reason=.=hash;.;requests")
            + m(&api_host, "api.subset=.=v2;.;reason=.=random;.;requests"),
        2
    );
    assert_eq!(
        m(&api_host, "api.subset=.=v2;.;class=.=2xx;.;responses"),
        2,
        "only the decided requests' responses"
    );
    assert_eq!(
        m(&shop_host, "shop.subset=.=v1;.;class=.=2xx;.;responses"),
        2
    );
    // Without a scope the counter exists too (a later instance on a shared
    // header skips what an earlier one routed), and a lone instance never
    // moves it.
    let plain = FakeHost::new(CONFIG);
    let mut root = FilterRoot::new(SplitMix64::new(1));
    assert!(root.configure(&plain));
    *plain.request_headers.borrow_mut() = vec![("x-canary-subset".into(), "client".into())];
    root.stream().on_request_headers(&plain);
    assert_ne!(plain.request_header("x-canary-subset"), ["client"]);
    assert!(plain
        .metrics
        .borrow()
        .iter()
        .any(|(name, _, value)| name == "canary.skipped" && *value == 0));
}

/// Two instances sharing one routing header, their scopes overlapping: the
/// first in filter order that decides a request routes it (it leaves a mark
/// in the stream's filter state); the later one leaves the header as written
/// and counts the request skipped. A client's copy of the header carries no
/// mark, so whichever instance decides replaces it.
#[test]
fn on_a_shared_header_the_first_instance_that_decides_routes() {
    let first = r#"{"subsets": [{"name": "v1", "weight": 0}, {"name": "v2", "weight": 100}],
      "metrics_prefix": "api", "scope": {"host": {"exact": "api.example.com"}}}"#;
    let later = r#"{"subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
      "metrics_prefix": "all"}"#;
    let (a_host, b_host) = (FakeHost::new(first), FakeHost::new(later));
    let (mut a, mut b) = (
        FilterRoot::new(SplitMix64::new(1)),
        FilterRoot::new(SplitMix64::new(2)),
    );
    assert!(a.configure(&a_host) && b.configure(&b_host));
    // One stream through both: its headers and filter state carried from the
    // first instance's host to the second's. Returns what the upstream sees.
    let through = |authority: &str, client_copy: Option<&str>| {
        let mut headers = vec![(":authority".to_string(), authority.to_string())];
        if let Some(v) = client_copy {
            headers.push(("x-canary-subset".into(), v.into()));
        }
        *a_host.request_headers.borrow_mut() = headers;
        a_host.filter_state.borrow_mut().clear();
        a.stream().on_request_headers(&a_host);
        *b_host.request_headers.borrow_mut() = a_host.request_headers.borrow().clone();
        *b_host.filter_state.borrow_mut() = a_host.filter_state.borrow().clone();
        b.stream().on_request_headers(&b_host);
        b_host.request_header("x-canary-subset").join(",")
    };
    assert_eq!(through("api.example.com", None), "v2", "the first decides");
    assert_eq!(
        a_host
            .filter_state
            .borrow()
            .get("canary_router.routed.x-canary-subset"),
        Some(&"api".to_string()),
        "marked with the first instance's prefix"
    );
    assert_eq!(through("api.example.com", Some("v1")), "v2");
    assert_eq!(
        through("www.example.com", None),
        "v1",
        "the later decides the rest"
    );
    assert_eq!(
        through("www.example.com", Some("v2")),
        "v1",
        "a client's copy has no mark: replaced"
    );
    assert_eq!(a_host.metric("api.skipped"), 2);
    assert_eq!(
        a_host.metric("api.subset=.=v2;.;reason=.=random;.;requests"),
        2
    );
    assert_eq!(b_host.metric("all.skipped"), 2);
    assert_eq!(
        b_host.metric("all.subset=.=v1;.;reason=.=random;.;requests"),
        2
    );
    // An instance that cannot read the mark decides: a client cannot keep its
    // copy by making the read fail.
    let probe = FakeHost::new(later);
    assert!(FilterRoot::new(SplitMix64::new(3)).configure(&probe));
    let configure_calls = probe.calls.borrow().len();
    let failing = FakeHost {
        // The request's second call: the mark's read.
        fail: Some((configure_calls + 1, 2)),
        ..FakeHost::new(later)
    };
    let mut root = FilterRoot::new(SplitMix64::new(3));
    assert!(root.configure(&failing));
    failing
        .filter_state
        .borrow_mut()
        .insert("canary_router.routed.x-canary-subset".into(), "api".into());
    *failing.request_headers.borrow_mut() = vec![("x-canary-subset".into(), "v2".into())];
    root.stream().on_request_headers(&failing);
    assert_eq!(
        failing.calls.borrow()[configure_calls + 1],
        "has_filter_state"
    );
    assert_eq!(failing.request_header("x-canary-subset"), ["v1"]);
}

#[test]
fn a_status_kept_inline_reads_as_its_text() {
    use crate::labels::ResponseClass;
    for text in [
        &b"200"[..],
        b"302",
        b"404",
        b"503",
        b"20",
        b"2000",
        b"",
        b"abc",
    ] {
        let status = Status::new(text);
        assert_eq!(
            ResponseClass::from_status(status.as_bytes()),
            ResponseClass::from_status(text),
            "{text:?}"
        );
        assert_eq!(
            crate::grpc::status_from_http(status.as_bytes()),
            crate::grpc::status_from_http(text),
            "{text:?}"
        );
        assert_eq!(status.as_bytes() == b"200", text == b"200");
    }
}

#[test]
fn a_status_code_reads_as_the_text_envoy_would_write() {
    for code in 0..=1_200u64 {
        let expected = (100..=999)
            .contains(&code)
            .then(|| Status::new(code.to_string().as_bytes()));
        assert_eq!(Status::from_code(code), expected, "{code}");
    }
    assert_eq!(Status::from_code(u64::MAX), None);
}
