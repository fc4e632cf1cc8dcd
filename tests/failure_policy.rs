//! What happens when the filter is not there to decide: the request must reach
//! the stable subset, never a subset the client picked, and never fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

#[test]
fn without_the_filter_the_route_table_serves_stable() {
    if common::wasm_only("the Wasm VM's failure policy and wasm.* stats") {
        return;
    }
    // The plugin skipped entirely (as FAIL_OPEN does for a failed VM).
    let mut envoy = Envoy::start(&demo_config().to_string(), Opts::default().without_wasm());
    for headers in [
        vec![],
        vec![("x-canary-subset", &b"v2"[..])],
        vec![
            ("X-Canary-Subset", &b"v2"[..]),
            ("x-canary-subset", &b"v2"[..]),
        ],
        vec![("x-canary", &b"always"[..]), ("x-user-id", &b"u1"[..])],
    ] {
        let r = envoy.get("/", &headers);
        assert_eq!(r.status, 200, "{headers:?}");
        assert_eq!(r.served_by(), "v1", "{headers:?}");
        assert_eq!(
            r.seen_subset(),
            "",
            "the client's header was stripped natively"
        );
    }
}

#[test]
fn the_shipped_config_fails_open_and_strips_the_header_first() {
    if common::wasm_only("the Wasm VM's failure policy and wasm.* stats") {
        return;
    }
    let yaml = read_repo_file("envoy/envoy.yaml");
    assert!(yaml.contains("failure_policy: FAIL_OPEN"));
    let strip = yaml
        .find("- remove: x-canary-subset")
        .expect("header_mutation strip");
    let wasm = yaml.find("- name: envoy.filters.http.wasm").unwrap();
    let jwt = yaml.find("- name: envoy.filters.http.jwt_authn").unwrap();
    assert!(
        strip < jwt && jwt < wasm,
        "strip, then jwt_authn, then the filter"
    );
    // And Envoy accepts it with the filter loaded.
    let mut envoy = Envoy::start(&demo_config().to_string(), Opts::default());
    let r = envoy.get("/", &[("x-canary", b"always")]);
    assert_eq!((r.status, r.served_by().as_str()), (200, "v2"));
}
