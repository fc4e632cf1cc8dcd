#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The Envoy dynamic module (`make native`, docs/native.md) in a real Envoy
//! 1.40: loaded from `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, configured by
//! `filter_config` (a `google.protobuf.StringValue` holding the same JSON as
//! the Wasm filter's), in front of the demo upstreams. It must route as the
//! Wasm build does, replace a client's routing header, count, add the decision
//! header and the pin cookie, and refuse a bad configuration in one line.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canary_router::hash::xxh64;
use common::*;

fn native_dir() -> PathBuf {
    let dir = repo_root().join("target/native");
    assert!(
        dir.join("libcanary_router.so").is_file(),
        "no target/native/libcanary_router.so: run `make native` (make integration builds it first)"
    );
    dir
}

/// The demo configuration (envoy/canary.json) with claims from jwt_authn's
/// forwarded payload header: `verified` needs metadata the module cannot read.
fn native_demo_config() -> serde_json::Value {
    let mut config = demo_config();
    config["jwt"] = serde_json::json!({ "source": "payload_header" });
    config
}

/// The main Envoy configuration: envoy.yaml's route table, the module instead
/// of the Wasm filter, and no early strip of the routing header (the module
/// alone must replace a client's copy and make Envoy pick the route again).
fn main_config(ports: Ports, filter_config: &str) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
stats_flush_interval: 1s
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listener} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: canary
            virtual_hosts:
            - name: canary
              domains: ["*"]
              routes:
              - match: {{ prefix: /, headers: [ {{ name: x-canary-subset, string_match: {{ exact: v1 }} }} ] }}
                route: {{ cluster: v1 }}
              - match: {{ prefix: /, headers: [ {{ name: x-canary-subset, string_match: {{ exact: v2 }} }} ] }}
                route: {{ cluster: v2 }}
              - match: {{ prefix: / }}
                route: {{ cluster: v1 }}
          http_filters:
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: canary_router }}
              filter_name: canary-router
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {config}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: v1
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: v1
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {v1} }} }} }} }} ] }} ]
  - name: v2
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: v2
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {v2} }} }} }} }} ] }} ]
"#,
        admin = ports.admin,
        listener = ports.listener,
        v1 = ports.v1,
        v2 = ports.v2,
        config = yaml_quote(filter_config),
    )
}

/// An Envoy running the module, owned by the test (killed on drop).
struct NativeEnvoy {
    child: Child,
    ports: Ports,
    dir: PathBuf,
}

enum Started {
    Ready(NativeEnvoy),
    /// Envoy exited before it was ready: its log.
    Exited(String),
}

fn start(filter_config: &str) -> Started {
    let ports = Ports {
        admin: reserve_port(),
        listener: reserve_port(),
        v1: reserve_port(),
        v2: reserve_port(),
    };
    let dir = std::env::temp_dir().join(format!(
        "canary-router-native-{}-{}",
        std::process::id(),
        ports.listener
    ));
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("envoy.yaml");
    fs::write(&config, main_config(ports, filter_config)).unwrap();
    let log = fs::File::create(dir.join("envoy.log")).unwrap();
    let child = Command::new(envoy_bin())
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native_dir())
        .arg("-c")
        .arg(&config)
        .arg("--config-yaml")
        .arg(build_backends_config(ports))
        .args([
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "info",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut envoy = NativeEnvoy { child, ports, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if envoy.child.try_wait().unwrap().is_some() {
            return Started::Exited(envoy.log());
        }
        if one_shot(envoy.admin(), "GET", "/ready", &[]).is_ok_and(|r| r.status == 200) {
            return Started::Ready(envoy);
        }
        assert!(
            Instant::now() < deadline,
            "Envoy not ready in 30 s:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_ready(filter_config: &str) -> NativeEnvoy {
    match start(filter_config) {
        Started::Ready(envoy) => envoy,
        Started::Exited(log) => panic!("Envoy exited with the module:\n{log}"),
    }
}

impl NativeEnvoy {
    fn admin(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.ports.admin).into()
    }

    fn client(&self) -> Client {
        Client::new(([127, 0, 0, 1], self.ports.listener).into())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The module's counters (`dynamicmodulescustom.` + the Wasm build's names).
    fn counters(&self) -> BTreeMap<String, u64> {
        let r = one_shot(
            self.admin(),
            "GET",
            "/stats?filter=dynamicmodulescustom",
            &[],
        )
        .unwrap();
        parse_stats(&r.body_str())
    }
}

impl Drop for NativeEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Envoy log ---\n{}", self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `x-canary-decision` and the subset the upstream saw, per key.
fn decisions(client: &mut Client, keys: &[String]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            let r = client.get("/", &[("x-user-id", k.as_bytes())]);
            (
                routed_subset(&r),
                r.header("x-canary-decision").unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn sticky_keys_route_as_the_wasm_build_and_the_documented_hash() {
    if common::wasm_only("runs the dynamic module itself beside the Wasm build, in the Wasm run") {
        return;
    }
    let config = native_demo_config().to_string();
    let native = start_ready(&config);
    let wasm = Envoy::start(&config, Opts::default());
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i:04}")).collect();
    let from_native = decisions(&mut native.client(), &keys);
    let from_wasm = decisions(&mut wasm.client(), &keys);
    assert_eq!(
        from_native, from_wasm,
        "same keys, same subsets and decisions"
    );
    let seed = xxh64(b"api-2026-11", 0);
    for (key, (subset, _)) in keys.iter().zip(&from_native) {
        let want = if xxh64(key.as_bytes(), seed) % 10_000 < 9_000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(subset, want, "{key}");
    }
    let v2 = from_native.iter().filter(|(s, _)| s == "v2").count();
    assert!((20..=60).contains(&v2), "about 10 % of 400 on v2: {v2}");
}

#[test]
fn rules_client_headers_counters_decision_header_and_pin_cookie() {
    if common::wasm_only("runs the dynamic module itself beside the Wasm build, in the Wasm run") {
        return;
    }
    let envoy = start_ready(&native_demo_config().to_string());
    let mut client = envoy.client();
    let before = envoy.counters();

    // A header rule forces v2.
    let r = client.get("/", &[("x-canary", b"always"), ("x-user-id", b"user-0000")]);
    assert_eq!(routed_subset(&r), "v2");
    let decision = r.header("x-canary-decision").unwrap();
    assert!(
        decision.contains("subset=v2") && decision.contains("rule"),
        "{decision}"
    );

    // A client's routing header is replaced and the route picked again: a key
    // hashing to v1 sent with `x-canary-subset: v2` reaches v1, and the other
    // way round.
    let seed = xxh64(b"api-2026-11", 0);
    let bucket = |k: &str| xxh64(k.as_bytes(), seed) % 10_000;
    let on_v1 = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| bucket(k) < 9_000)
        .unwrap();
    let on_v2 = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| bucket(k) >= 9_000)
        .unwrap();
    let r = client.get(
        "/",
        &[("x-user-id", on_v1.as_bytes()), ("x-canary-subset", b"v2")],
    );
    assert_eq!(routed_subset(&r), "v1", "client header v2 replaced");
    let r = client.get(
        "/",
        &[("x-user-id", on_v2.as_bytes()), ("x-canary-subset", b"v1")],
    );
    assert_eq!(routed_subset(&r), "v2", "client header v1 replaced");

    // A keyless request: a random draw, pinned by a cookie added next to the
    // upstream's own.
    let r = client.get("/", &[]);
    routed_subset(&r);
    let cookies = r.header_all("set-cookie");
    assert!(
        cookies.iter().any(|c| c.starts_with("canary_pin=")),
        "{cookies:?}"
    );
    assert!(
        cookies.iter().any(|c| c.starts_with("served_by=")),
        "{cookies:?}"
    );
    assert!(r
        .header("x-canary-decision")
        .is_some_and(|d| d.contains("reason=random")));

    // Counters: the Wasm build's names under Envoy's dynamic-module prefix.
    let after = envoy.counters();
    let grew =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let name = |rest: &str| format!("dynamicmodulescustom.canary.{rest}");
    assert_eq!(
        grew(&name("subset=.=v2;.;reason=.=rule;.;requests")),
        1,
        "{after:?}"
    );
    assert_eq!(grew(&name("rule=.=qa;.;rule_matches")), 1, "{after:?}");
    let hashed = grew(&name("subset=.=v1;.;reason=.=hash;.;requests"))
        + grew(&name("subset=.=v2;.;reason=.=hash;.;requests"));
    assert_eq!(hashed, 2, "{after:?}");
    let ok = grew(&name("subset=.=v1;.;class=.=2xx;.;responses"))
        + grew(&name("subset=.=v2;.;class=.=2xx;.;responses"));
    assert_eq!(ok, 4, "{after:?}");
}

/// The lines the module logged (Envoy's `[dynamic_modules]` logger).
fn module_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("canary-router:"))
        .collect()
}

#[test]
fn a_bad_configuration_is_refused_with_one_line_naming_the_field() {
    if common::wasm_only("runs the dynamic module itself beside the Wasm build, in the Wasm run") {
        return;
    }
    let bad = r#"{"subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": -5}]}"#;
    let Started::Exited(log) = start(bad) else {
        panic!("Envoy served with a configuration the module must refuse");
    };
    let lines = module_lines(&log);
    assert_eq!(lines.len(), 1, "one line:\n{log}");
    assert!(
        lines[0].contains("canary-router: config: subsets[1].weight"),
        "{}",
        lines[0]
    );

    // The demo configuration as the Wasm filter takes it (claims from
    // jwt_authn's metadata): refused, saying what to use instead.
    let Started::Exited(log) = start(&demo_config().to_string()) else {
        panic!("Envoy served with jwt.source verified");
    };
    let lines = module_lines(&log);
    assert_eq!(lines.len(), 1, "one line:\n{log}");
    assert!(
        lines[0].contains("jwt.source") && lines[0].contains("payload_header"),
        "{}",
        lines[0]
    );
}
