//! One Envoy with listeners built by the test (no shipped file), for the tests
//! that compare Envoy's own route matching with the filter's decisions side by
//! side: the pieces of its JSON bootstrap, and the process, killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{envoy_bin, one_shot, temp_dir, wasm_path};

/// A `direct_response` answering 200 with `body`.
pub fn answer(body: &str) -> Value {
    json!({"status": 200, "body": {"inline_string": body}})
}

/// An HTTP connection manager named `name` with these routes, `filters`, then
/// the router. `normalize_path`: Istio's default path normalization.
pub fn hcm(name: &str, routes: Vec<Value>, filters: Vec<Value>, normalize_path: bool) -> Value {
    let mut http_filters = filters;
    http_filters.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {"name": name, "virtual_hosts": [
            {"name": name, "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters,
    });
    if normalize_path {
        config["normalize_path"] = json!(true);
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": config})
}

/// A loopback listener on `port` with one filter chain holding `hcm`.
pub fn listener(name: &str, port: u16, hcm: Value) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [hcm]}],
    })
}

/// The freshly built filter with `plugin_config`, failing closed (a broken
/// filter must fail the comparison, not hide in it).
pub fn wasm_filter(plugin_config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "canary-router",
                "root_id": "canary-router",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "canary-router",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path().to_str().unwrap()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config,
                },
            },
        }
    })
}

/// The test's Envoy, killed on drop.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start Envoy on the JSON bootstrap `config` (admin on `admin`) and wait
/// until it is ready; panics with its log if it exits first.
pub fn start(config: &str, admin: u16) -> Proc {
    let dir = temp_dir();
    let path = dir.join("envoy.json");
    std::fs::write(&path, config).unwrap();
    let log = dir.join("envoy.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(envoy_bin())
        .args(["-c", path.to_str().unwrap(), "--concurrency", "1"])
        .args(["--disable-hot-restart", "--log-level", "warning"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut proc = Proc { child, log };
    let deadline = Instant::now() + Duration::from_secs(90);
    let addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            panic!(
                "Envoy exited ({status}):\n{}",
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            );
        }
        if one_shot(addr, "GET", "/ready", &[]).is_ok_and(|r| r.status == 200) {
            return proc;
        }
        assert!(Instant::now() < deadline, "Envoy not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}
