#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The shipped Docker setup of the dynamic module (envoy/docker-compose-native.yaml
//! and envoy/envoy-native.yaml, docs/native.md), proved without a Docker engine:
//! the compose file mounts the library where its search path says, into the
//! Envoy image of the minor the module is built for, and runs envoy-native.yaml;
//! that file, run as the demo runs (the Envoy in use, envoy/backends.yaml merged
//! in, the library from target/native/), routes and decides a request, reads a
//! verified claim from jwt_authn's payload header, and its stats_tags give the
//! module's counters the Wasm build's labels (under Envoy's prefix for module
//! metrics: docs/native.md, "Metrics").

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const COMPOSE: &str = "envoy/docker-compose-native.yaml";
const CONFIG: &str = "envoy/envoy-native.yaml";

/// The `key: value` lines of the `envoy` service, trimmed (the file is plain
/// block YAML; PyYAML parses it, and this keeps the test free of a YAML crate).
fn envoy_service(compose: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in compose.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            inside = line.trim() == "envoy:";
            continue;
        }
        if inside && !line.trim_start().starts_with('#') && !line.trim().is_empty() {
            lines.push(line.trim().to_owned());
        }
    }
    lines
}

#[test]
fn compose_file_mounts_the_module_on_its_search_path_in_the_matching_envoy() {
    let compose = read_repo_file(COMPOSE);
    let service = envoy_service(&compose);
    assert!(!service.is_empty(), "{COMPOSE}: no `envoy` service");

    // The image: the official Envoy of the minor the Makefile builds and tests for.
    let makefile = read_repo_file("Makefile");
    let version = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION := "))
        .expect("ENVOY_VERSION in the Makefile")
        .trim();
    let minor = version.rsplit_once('.').unwrap().0;
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert_eq!(images.len(), 2, "{COMPOSE}: envoy and backends");
    for image in images {
        let tag = image
            .strip_prefix("envoyproxy/envoy:v")
            .unwrap_or_else(|| panic!("{COMPOSE}: not the official image: {image}"));
        assert!(
            tag == format!("{minor}-latest") || tag == version,
            "{COMPOSE}: {image} is not Envoy {minor} (the module is built for {version})"
        );
    }

    // The search path holds the library, mounted from where `make native` writes it.
    let search = service
        .iter()
        .find_map(|l| l.strip_prefix("ENVOY_DYNAMIC_MODULES_SEARCH_PATH: "))
        .expect("ENVOY_DYNAMIC_MODULES_SEARCH_PATH in the envoy service");
    let mount = format!("- ../target/native/libcanary_router.so:{search}/libcanary_router.so:ro");
    assert!(
        service.contains(&mount),
        "{COMPOSE}: no `{mount}` in {service:?}"
    );
    assert!(service.contains(&"- ./:/work/envoy:ro".to_owned()));
    assert!(service.contains(&"working_dir: /work".to_owned()));

    // It runs envoy-native.yaml, which loads the module by the library's name.
    let at = service.iter().position(|l| l == "- -c").expect("-c");
    assert_eq!(service[at + 1], format!("- {CONFIG}"));
    let config = read_repo_file(CONFIG);
    assert!(config.contains("dynamic_module_config: { name: canary_router }"));
    assert!(!config.contains("envoy.filters.http.wasm"), "{CONFIG}");
    // The demo's ports.
    for port in ["9901", "10000", "10001", "10002"] {
        assert!(
            config.contains(&format!("port_value: {port} }}"))
                || read_repo_file("envoy/backends.yaml")
                    .contains(&format!("port_value: {port} }}")),
            "port {port}"
        );
    }
    assert!(compose.contains("\"10000:10000\"") && compose.contains("\"127.0.0.1:9901:9901\""));
}

/// envoy-native.yaml as shipped, with the backends merged in as `make run` does,
/// on free ports; killed on drop.
struct Demo {
    child: Child,
    ports: Ports,
    dir: PathBuf,
}

impl Demo {
    fn start() -> Demo {
        let native = repo_root().join("target/native");
        assert!(
            native.join("libcanary_router.so").is_file(),
            "no target/native/libcanary_router.so: run `make native`"
        );
        let ports = Ports {
            admin: reserve_port(),
            listener: reserve_port(),
            v1: reserve_port(),
            v2: reserve_port(),
        };
        let mut config = read_repo_file(CONFIG);
        for (from, to) in [
            (9901, ports.admin),
            (10000, ports.listener),
            (10001, ports.v1),
            (10002, ports.v2),
        ] {
            let from = format!("port_value: {from} }}");
            assert_eq!(config.matches(&from).count(), 1, "{CONFIG}: `{from}` once");
            config = config.replacen(&from, &format!("port_value: {to} }}"), 1);
        }
        let dir = std::env::temp_dir().join(format!(
            "canary-router-native-compose-{}-{}",
            std::process::id(),
            ports.listener
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("envoy-native.yaml");
        fs::write(&path, config).unwrap();
        let log = fs::File::create(dir.join("envoy.log")).unwrap();
        // From the repository root, as the demo: envoy/jwks.json is relative.
        let child = Command::new(envoy_bin())
            .current_dir(repo_root())
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native)
            .arg("-c")
            .arg(&path)
            .arg("--config-yaml")
            .arg(build_backends_config(ports))
            .args(["--concurrency", "2", "--disable-hot-restart"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut demo = Demo { child, ports, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                demo.child.try_wait().unwrap().is_none(),
                "Envoy exited with {CONFIG}:\n{}",
                demo.log()
            );
            if one_shot(demo.admin(), "GET", "/ready", &[]).is_ok_and(|r| r.status == 200) {
                return demo;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in 30 s:\n{}",
                demo.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.ports.admin).into()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Demo {
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

#[test]
fn shipped_native_config_routes_decides_and_labels_its_series() {
    let demo = Demo::start();
    let mut client = Client::new(([127, 0, 0, 1], demo.ports.listener).into());

    // A header rule, with a client trying to force the stable subset.
    let r = client.get("/", &[("x-canary", b"always"), ("x-canary-subset", b"v1")]);
    assert_eq!(routed_subset(&r), "v2");
    let decision = r.header("x-canary-decision").unwrap_or_default();
    assert!(
        decision.contains("subset=v2") && decision.contains("reason=rule"),
        "{decision}"
    );

    // A verified claim, read from jwt_authn's payload header: rule "staff".
    let token = sign_hs256(&claims(serde_json::json!({
        "sub": "bob", "groups": ["dev", "staff"]
    })));
    let r = client.get("/", &[("authorization", &bearer(&token))]);
    assert_eq!(routed_subset(&r), "v2");
    assert!(r
        .header("x-canary-decision")
        .is_some_and(|d| d.contains("rule=staff")));

    // The Wasm build's series: its labels by the shipped stats_tags, and its
    // names, since the shipped runtime flag drops the `dynamicmodulescustom.`
    // namespace at /stats/prometheus as Envoy drops `wasmcustom.`.
    let text = one_shot(demo.admin(), "GET", "/stats/prometheus", &[])
        .unwrap()
        .body_str();
    let series = parse_prometheus(&text);
    let requests = series
        .iter()
        .find(|(name, labels, _)| {
            name == "canary_requests"
                && labels.get("subset").map(String::as_str) == Some("v2")
                && labels.get("reason").map(String::as_str) == Some("rule")
        })
        .unwrap_or_else(|| {
            panic!(
                "no canary_requests{{subset=\"v2\",reason=\"rule\"}}:\n{}",
                text.lines()
                    .filter(|l| l.contains("canary"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    assert_eq!(requests.2, 2.0);
    assert!(
        !text.contains("dynamicmodulescustom"),
        "the module's namespace left in a series name:\n{text}"
    );
    assert!(series
        .iter()
        .any(|(name, labels, v)| name == "canary_rule_matches"
            && labels.get("rule").map(String::as_str) == Some("staff")
            && *v == 1.0));
}
