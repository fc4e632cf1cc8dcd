//! The adapter against a stand-in for Envoy: the callbacks it imports are
//! defined here (test builds only), over one fake stream per test thread.
#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::{Cell, RefCell};
use std::ffi::c_void;

use super::abi::{EnvoyBuffer, EnvoyHttpHeader, ModuleBuffer, CONTINUE, REQUEST_HEADER};
use super::*;
use crate::filter::RequestHeaders;

#[derive(Default)]
struct Fake {
    request: Vec<(Vec<u8>, Vec<u8>)>,
    response: Vec<(Vec<u8>, Vec<u8>)>,
    logs: Vec<String>,
    route_cleared: usize,
    filter_state: Vec<(Vec<u8>, Vec<u8>)>,
    /// (name, value) by id, every kind in one list.
    metrics: Vec<(String, u64)>,
    /// The stream's `response.code` attribute; `None`: Envoy has none.
    response_code: Option<u64>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
    static PANIC_NEXT: Cell<bool> = const { Cell::new(false) };
}

/// Called at the start of the request hook's work: panics once when armed.
pub(super) fn maybe_panic() {
    if PANIC_NEXT.replace(false) {
        panic!("injected panic");
    }
}

unsafe fn bytes(b: ModuleBuffer) -> Option<Vec<u8>> {
    (!b.ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(b.ptr, b.length) }.to_vec())
}

fn map(fake: &mut Fake, header_type: u32) -> &mut Vec<(Vec<u8>, Vec<u8>)> {
    if header_type == REQUEST_HEADER {
        &mut fake.request
    } else {
        &mut fake.response
    }
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_log(_level: u32, message: ModuleBuffer) {
    let line = String::from_utf8(unsafe { bytes(message) }.unwrap_or_default()).unwrap();
    FAKE.with_borrow_mut(|f| f.logs.push(line));
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    _filter: *mut c_void,
    header_type: u32,
) -> usize {
    FAKE.with_borrow_mut(|f| map(f, header_type).len())
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _filter: *mut c_void,
    header_type: u32,
    out: *mut EnvoyHttpHeader,
) -> bool {
    FAKE.with_borrow_mut(|f| {
        for (i, (k, v)) in map(f, header_type).iter().enumerate() {
            unsafe {
                *out.add(i) = EnvoyHttpHeader {
                    key_ptr: k.as_ptr(),
                    key_length: k.len(),
                    value_ptr: v.as_ptr(),
                    value_length: v.len(),
                }
            };
        }
    });
    true
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _filter: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    _optional_size: *mut usize,
) -> bool {
    let key = unsafe { bytes(key) }.unwrap();
    FAKE.with_borrow_mut(|f| {
        let found = map(f, header_type)
            .iter()
            .filter(|(k, _)| *k == key)
            .nth(index)
            .map(|(_, v)| EnvoyBuffer {
                ptr: v.as_ptr(),
                length: v.len(),
            });
        unsafe { *result = found.unwrap_or(EnvoyBuffer::EMPTY) };
        found.is_some()
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
    _filter: *mut c_void,
    attribute_id: u32,
    result: *mut u64,
) -> bool {
    assert_eq!(attribute_id, super::abi::ATTRIBUTE_RESPONSE_CODE);
    FAKE.with_borrow(|f| {
        if let Some(code) = f.response_code {
            unsafe { *result = code };
        }
        f.response_code.is_some()
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _filter: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let key = unsafe { bytes(key) }.unwrap();
    let value = unsafe { bytes(value) };
    FAKE.with_borrow_mut(|f| {
        let m = map(f, header_type);
        m.retain(|(k, _)| *k != key);
        if let Some(value) = value {
            m.push((key, value));
        }
    });
    true
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _filter: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let key = unsafe { bytes(key) }.unwrap();
    let value = unsafe { bytes(value) }.unwrap();
    FAKE.with_borrow_mut(|f| map(f, header_type).push((key, value)));
    true
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
    _filter: *mut c_void,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let key = unsafe { bytes(key) }.unwrap();
    let value = unsafe { bytes(value) }.unwrap();
    FAKE.with_borrow_mut(|f| {
        f.filter_state.retain(|(k, _)| *k != key);
        f.filter_state.push((key, value));
    });
    true
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
    _filter: *mut c_void,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
) -> bool {
    let key = unsafe { bytes(key) }.unwrap();
    FAKE.with_borrow(|f| {
        let found = f
            .filter_state
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| EnvoyBuffer {
                ptr: v.as_ptr(),
                length: v.len(),
            });
        unsafe { *result = found.unwrap_or(EnvoyBuffer::EMPTY) };
        found.is_some()
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(_filter: *mut c_void) {
    FAKE.with_borrow_mut(|f| f.route_cleared += 1);
}

fn define(name: ModuleBuffer, id: *mut usize) -> u32 {
    let name = String::from_utf8(unsafe { bytes(name) }.unwrap()).unwrap();
    FAKE.with_borrow_mut(|f| {
        unsafe { *id = f.metrics.len() };
        f.metrics.push((name, 0));
    });
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _config: *mut c_void,
    name: ModuleBuffer,
    _labels: *const ModuleBuffer,
    _n: usize,
    id: *mut usize,
) -> u32 {
    define(name, id)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
    _config: *mut c_void,
    name: ModuleBuffer,
    _labels: *const ModuleBuffer,
    _n: usize,
    id: *mut usize,
) -> u32 {
    define(name, id)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
    _config: *mut c_void,
    name: ModuleBuffer,
    _labels: *const ModuleBuffer,
    _n: usize,
    id: *mut usize,
) -> u32 {
    define(name, id)
}

fn update(id: usize, f: impl FnOnce(&mut u64)) -> u32 {
    FAKE.with_borrow_mut(|fake| match fake.metrics.get_mut(id) {
        Some((_, v)) => {
            f(v);
            0
        }
        None => 1,
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _config: *mut c_void,
    id: usize,
    _labels: *const ModuleBuffer,
    _n: usize,
    value: u64,
) -> u32 {
    update(id, |v| *v += value)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
    _config: *mut c_void,
    id: usize,
    _labels: *const ModuleBuffer,
    _n: usize,
    value: u64,
) -> u32 {
    update(id, |v| *v = value)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
    _config: *mut c_void,
    id: usize,
    _labels: *const ModuleBuffer,
    _n: usize,
    value: u64,
) -> u32 {
    update(id, |v| *v = value)
}

// ---------------------------------------------------------------------------

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

fn pairs(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn header(list: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    list.iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
}

fn new_config(json: &str) -> *const c_void {
    let envoy_config = std::ptr::NonNull::<u8>::dangling()
        .as_ptr()
        .cast::<c_void>();
    let name = EnvoyBuffer {
        ptr: b"canary-router".as_ptr(),
        length: 13,
    };
    let config = EnvoyBuffer {
        ptr: json.as_ptr(),
        length: json.len(),
    };
    envoy_dynamic_module_on_http_filter_config_new(envoy_config, name, config)
}

const CONFIG: &str = r#"{
  "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
  "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": "native-tests" },
  "decision_header": "x-canary-decision",
  "metrics_prefix": "nt",
  "rules": [ {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}} ]
}"#;

/// One request through the hooks: (request headers after, response headers after).
fn request(config: *const c_void, headers: &[(&str, &str)]) -> (Headers, Headers) {
    let filter_envoy = std::ptr::NonNull::<u8>::dangling()
        .as_ptr()
        .cast::<c_void>();
    FAKE.with_borrow_mut(|f| {
        f.request = pairs(headers);
        f.response = pairs(&[(":status", "200")]);
    });
    let stream = envoy_dynamic_module_on_http_filter_new(config, filter_envoy);
    assert!(!stream.is_null());
    assert_eq!(
        envoy_dynamic_module_on_http_filter_request_headers(filter_envoy, stream, true),
        CONTINUE
    );
    assert_eq!(
        envoy_dynamic_module_on_http_filter_response_headers(filter_envoy, stream, true),
        CONTINUE
    );
    envoy_dynamic_module_on_http_filter_destroy(stream);
    FAKE.with_borrow(|f| (f.request.clone(), f.response.clone()))
}

fn logs() -> Vec<String> {
    FAKE.with_borrow_mut(|f| std::mem::take(&mut f.logs))
}

#[test]
fn guard_returns_the_value_or_none_after_an_injected_panic_without_unwinding_out() {
    assert_eq!(guard("test", || 7), Some(7));
    let caught = guard("test", || -> u32 { panic!("injected") });
    // Reaching this line at all: the panic did not unwind out of `guard`.
    assert_eq!(caught, None);
    let logs = logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].starts_with("canary-router: panic in test") && logs[0].contains("injected"),
        "{logs:?}"
    );
}

#[test]
fn a_panic_in_the_request_hook_continues_the_request_without_the_clients_routing_header() {
    let config = new_config(CONFIG);
    assert!(!config.is_null(), "{:?}", logs());
    logs();
    PANIC_NEXT.set(true);
    let cleared = FAKE.with_borrow(|f| f.route_cleared);
    let (req, resp) = request(
        config,
        &[
            (":path", "/"),
            ("x-canary-subset", "v2"),
            ("x-user-id", "alice"),
        ],
    );
    assert_eq!(
        header(&req, "x-canary-subset"),
        None,
        "client's header removed"
    );
    assert_eq!(
        header(&req, "x-user-id").as_deref(),
        Some("alice"),
        "rest untouched"
    );
    assert!(
        FAKE.with_borrow(|f| f.route_cleared) > cleared,
        "route picked again"
    );
    assert_eq!(
        header(&resp, "x-canary-decision"),
        None,
        "no decision was made"
    );
    let logs = logs();
    assert_eq!(logs.len(), 1, "one line: {logs:?}");
    assert!(
        logs[0].contains("panic in http_filter_request_headers"),
        "{logs:?}"
    );
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn requests_are_decided_like_the_core_and_counted() {
    let config = new_config(CONFIG);
    assert!(!config.is_null(), "{:?}", logs());
    let split = crate::bucket::Split::new(&[5000, 5000], "native-tests");
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let (req, resp) = request(
            config,
            &[
                (":path", "/"),
                ("x-canary-subset", "v1"),
                ("x-user-id", user),
            ],
        );
        let want = match split.subset_of(split.bucket(user.as_bytes())) {
            Some(1) => "v2",
            _ => "v1",
        };
        assert_eq!(
            header(&req, "x-canary-subset").as_deref(),
            Some(want),
            "{user}"
        );
        let decision = header(&resp, "x-canary-decision").unwrap();
        assert!(decision.contains(want), "{decision}");
    }
    let (req, _) = request(config, &[(":path", "/"), ("x-canary", "always")]);
    assert_eq!(header(&req, "x-canary-subset").as_deref(), Some("v2"));
    let metrics = FAKE.with_borrow(|f| f.metrics.clone());
    let total: u64 = metrics
        .iter()
        .filter(|(n, _)| n.starts_with("nt.") && n.ends_with(";.;requests"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 7, "{metrics:?}");
    let rule: u64 = metrics
        .iter()
        .filter(|(n, _)| n.contains("rule=.=qa;.;"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rule, 1, "{metrics:?}");
    // The module shares Envoy's heap: no memory gauge that would always read 0.
    assert!(
        !metrics.iter().any(|(n, _)| n.contains("memory")),
        "{metrics:?}"
    );
    assert!(metrics.iter().any(|(n, _)| n.ends_with("weight_bp")));
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn responses_are_classed_by_the_code_envoy_recorded_else_by_their_status_header() {
    let config = new_config(CONFIG);
    assert!(!config.is_null(), "{:?}", logs());
    let responses = |class: &str| -> u64 {
        FAKE.with_borrow(|f| {
            f.metrics
                .iter()
                .filter(|(n, _)| n.ends_with(&format!(";.;class=.={class};.;responses")))
                .map(|(_, v)| v)
                .sum()
        })
    };
    let headers = [(":path", "/"), ("x-user-id", "alice")];
    // Recorded: the stream's code, whatever the header map holds (`:status` 200).
    for (code, class) in [(503, "5xx"), (404, "4xx"), (200, "2xx")] {
        let before = responses(class);
        FAKE.with_borrow_mut(|f| f.response_code = Some(code));
        request(config, &headers);
        assert_eq!(responses(class), before + 1, "{code}");
    }
    // None recorded, or out of range: the `:status` header (200).
    for code in [None, Some(0), Some(1_000)] {
        let before = (responses("2xx"), responses("5xx"));
        FAKE.with_borrow_mut(|f| f.response_code = code);
        request(config, &headers);
        assert_eq!(
            (responses("2xx"), responses("5xx")),
            (before.0 + 1, before.1),
            "{code:?}"
        );
    }
    FAKE.with_borrow_mut(|f| f.response_code = None);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn a_bad_configuration_is_refused_with_one_line_naming_the_field() {
    logs();
    let config = new_config(r#"{"subsets": [{"name": "v1", "weight": -5}]}"#);
    assert!(config.is_null());
    let logs = logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("subsets[0].weight"), "{logs:?}");
}

#[test]
fn verified_claims_are_refused_and_payload_header_accepted() {
    logs();
    let rules = r#""rules": [{"name": "staff", "subset": "v2", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}}]"#;
    let subsets = r#""subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}]"#;
    let verified = format!("{{{subsets}, {rules}}}");
    assert!(new_config(&verified).is_null());
    let lines = logs();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("jwt.source"), "{lines:?}");
    let header = format!("{{{subsets}, {rules}, \"jwt\": {{\"source\": \"payload_header\"}}}}");
    let config = new_config(&header);
    assert!(!config.is_null(), "{:?}", logs());
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn envoys_header_entries_are_read_in_place_in_order() {
    let list: [(&[u8], &[u8]); 4] = [
        (b":path", b"/a?b=1"),
        (b"x-empty", b""),
        (b"cookie", b"beta=true; session_id=s"),
        (b"", b"v"),
    ];
    let entries: Vec<EnvoyHttpHeader> = list
        .iter()
        .map(|(k, v)| EnvoyHttpHeader {
            key_ptr: k.as_ptr(),
            key_length: k.len(),
            value_ptr: v.as_ptr(),
            value_length: v.len(),
        })
        .collect();
    // SAFETY: every entry points into `list`, which outlives the list.
    let headers = unsafe { host::EnvoyHeaders::from_entries(entries) };
    let read: Vec<(&[u8], &[u8])> = headers.pairs().collect();
    assert_eq!(read, list);
    let value = headers.pairs().nth(2).map(|(_, v)| v.as_ptr());
    assert_eq!(value, Some(list[2].1.as_ptr()), "borrowed, not copied");
}
