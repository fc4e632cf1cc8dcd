#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The shipped files under envoy/: the demo plugin configuration embedded in
//! envoy.yaml is envoy/canary.json, docker-compose.yaml runs the same files the
//! native tests run, the two bootstraps merge into one Envoy, and the demo
//! configuration routes as docs/configuration.md says.

mod common;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use common::*;

fn python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Parse a YAML file with PyYAML and return it as JSON.
fn yaml_as_json(rel: &str) -> serde_json::Value {
    let out = Command::new(python())
        .arg("-c")
        .arg("import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))")
        .arg(repo_root().join(rel))
        .output()
        .expect("running python3 (with PyYAML)");
    assert!(
        out.status.success(),
        "{rel} does not parse as YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn wasm_filter_config(envoy: &serde_json::Value) -> serde_json::Value {
    let filters = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array()
        .expect("http_filters");
    let wasm = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .expect("a wasm filter");
    wasm["typed_config"]["config"].clone()
}

#[test]
fn canary_json_is_the_configuration_embedded_in_envoy_yaml() {
    let canary = read_repo_file("envoy/canary.json");
    // As the harness reads it (between the plugin_config markers) ...
    assert_eq!(
        embedded_plugin_config(&read_repo_file("envoy/envoy.yaml")),
        canary,
        "the plugin_config block of envoy/envoy.yaml must be envoy/canary.json"
    );
    // ... and as a YAML parser (so Envoy) reads it.
    let envoy = yaml_as_json("envoy/envoy.yaml");
    let config = wasm_filter_config(&envoy);
    assert_eq!(
        config["configuration"]["@type"],
        "type.googleapis.com/google.protobuf.StringValue"
    );
    let value = config["configuration"]["value"].as_str().expect("a string");
    assert_eq!(value, canary);
    // The contract example of docs/configuration.md.
    let c: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(
        c["subsets"][1],
        serde_json::json!({"name": "v2", "weight": 10})
    );
    assert_eq!(c["sticky"]["seed"], "api-2026-11");
    assert_eq!(c["jwt"]["metadata_key"], "payload");
    assert_eq!(c["rules"].as_array().unwrap().len(), 7);
    assert_eq!(
        c["rules"][0]["name"], "internal",
        "the /admin exclusion comes first"
    );
    assert_eq!(c["goals"][0]["name"], "checkout");
}

#[test]
fn envoy_yaml_wires_the_filters_in_order() {
    let envoy = yaml_as_json("envoy/envoy.yaml");
    let hcm = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let names: Vec<&str> = hcm["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.wasm",
            "envoy.filters.http.router"
        ]
    );
    let jwt = &hcm["http_filters"][0]["typed_config"]["providers"]["demo"];
    assert_eq!(jwt["issuer"], "canary-router-demo");
    assert_eq!(jwt["payload_in_metadata"], "payload");
    assert_eq!(jwt["local_jwks"]["filename"], "envoy/jwks.json");
    let wasm = wasm_filter_config(&envoy);
    assert_eq!(wasm["root_id"], "canary-router");
    assert_eq!(wasm["vm_config"]["vm_id"], "canary-router");
    assert_eq!(wasm["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    // The test key is an HS256 oct key with kid demo.
    let jwks: serde_json::Value = serde_json::from_str(&read_repo_file("envoy/jwks.json")).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "demo");
    assert_eq!(jwks["keys"][0]["alg"], "HS256");
    assert!(jwks_key().len() >= 32);
}

#[test]
fn docker_compose_runs_the_tested_files() {
    let compose = yaml_as_json("envoy/docker-compose.yaml");
    let compose_dir = repo_root().join("envoy");
    let envoy_yaml = yaml_as_json("envoy/envoy.yaml");
    let wasm_rel = wasm_filter_config(&envoy_yaml)["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap()
        .to_string();

    let svc = &compose["services"]["envoy"];
    assert_eq!(svc["image"], "envoyproxy/envoy:v1.40-latest");
    let workdir = Path::new(svc["working_dir"].as_str().unwrap()).to_path_buf();
    let command: Vec<&str> = svc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let c = command.iter().position(|a| *a == "-c").expect("-c");
    assert_eq!(command[c + 1], "envoy/envoy.yaml");
    // Mounts: host path (relative to the compose file) -> container path.
    let mounts: Vec<(PathBuf, PathBuf)> = svc["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.as_str().unwrap().split(':').collect();
            (
                normalize(&compose_dir.join(parts[0])),
                normalize(Path::new(parts[1])),
            )
        })
        .collect();
    let host_of = |container: &Path| -> PathBuf {
        // The longest mount that contains `container`.
        let (h, c) = mounts
            .iter()
            .filter(|(_, c)| container.starts_with(c))
            .max_by_key(|(_, c)| c.as_os_str().len())
            .unwrap_or_else(|| panic!("{} is not mounted", container.display()));
        h.join(container.strip_prefix(c).unwrap())
    };
    let root = normalize(&repo_root());
    // The envoy.yaml the container runs is this repository's envoy/envoy.yaml ...
    assert_eq!(
        normalize(&host_of(&workdir.join("envoy/envoy.yaml"))),
        root.join("envoy/envoy.yaml")
    );
    // ... with the JWKS it names ...
    assert_eq!(
        normalize(&host_of(&workdir.join("envoy/jwks.json"))),
        root.join("envoy/jwks.json")
    );
    // ... and the .wasm the native build produces: the one envoy.yaml names
    // natively (from the repository root) and the one these tests load.
    let mounted_wasm = normalize(&host_of(&workdir.join(&wasm_rel)));
    assert_eq!(mounted_wasm, root.join(&wasm_rel));
    assert_eq!(
        mounted_wasm,
        normalize(&std::path::absolute(wasm_path()).unwrap()),
        "CANARY_WASM is not the .wasm docker-compose mounts"
    );
    let ports: Vec<&str> = svc["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        ports.iter().any(|p| p.ends_with("10000:10000")),
        "{ports:?}"
    );
    assert!(ports.iter().any(|p| p.ends_with("9901:9901")), "{ports:?}");

    let b = &compose["services"]["backends"];
    assert_eq!(b["image"], svc["image"]);
    assert_eq!(b["network_mode"], "service:envoy");
    let bcmd: Vec<&str> = b["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let c = bcmd.iter().position(|a| *a == "-c").expect("-c");
    assert_eq!(bcmd[c + 1], "envoy/backends.yaml");
    assert!(bcmd.windows(2).any(|w| w == ["--base-id", "1"]), "{bcmd:?}");
    let bwork = Path::new(b["working_dir"].as_str().unwrap());
    let bmount = b["volumes"][0].as_str().unwrap();
    let (bh, bc) = bmount.split_once(':').unwrap();
    assert_eq!(normalize(&compose_dir.join(bh)), root.join("envoy"));
    assert_eq!(
        normalize(Path::new(bc.trim_end_matches(":ro"))),
        bwork.join("envoy")
    );
}

#[test]
fn run_demo_script_is_valid_bash() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(repo_root().join("envoy/run-demo.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Harness self-check, without the filter (and without the early strip of
/// client routing headers, so a test can set one): the backends merge into the
/// same Envoy and the route table sends each subset header to its cluster.
#[test]
fn backends_merge_into_the_same_envoy_and_routes_follow_the_header() {
    let mut envoy = Envoy::start(
        &demo_config().to_string(),
        Opts::default()
            .without_wasm()
            .without_early_strip()
            .concurrency(1),
    );
    let listeners = envoy.admin_get("/listeners").body_str();
    for name in ["ingress::", "backend_v1::", "backend_v2::"] {
        assert!(listeners.contains(name), "{name} in {listeners}");
    }
    let r = envoy.get("/", &[]);
    assert_eq!(
        (r.status, r.served_by(), r.body_str()),
        (200, "v1".into(), "v1\n".into())
    );
    let r = envoy.get("/", &h(&[("x-canary-subset", "v2")]));
    assert_eq!(
        (r.status, r.served_by(), r.seen_subset()),
        (200, "v2".into(), "v2".into())
    );
    let r = envoy.get("/", &h(&[("x-canary-subset", "v1")]));
    assert_eq!((r.served_by(), r.seen_subset()), ("v1".into(), "v1".into()));
    let r = envoy.get("/", &h(&[("x-canary-subset", "v9")]));
    assert_eq!(
        r.served_by(),
        "v1",
        "unknown subsets go to the stable cluster"
    );
    for (path, status) in [
        ("/status/302", 302),
        ("/status/404", 404),
        ("/status/503", 503),
    ] {
        for sub in ["v1", "v2"] {
            let r = envoy.get(path, &h(&[("x-canary-subset", sub)]));
            assert_eq!(
                (r.status, r.served_by()),
                (status, sub.to_string()),
                "{path}"
            );
        }
    }
    // jwt_authn is in front: a token that does not verify is refused.
    let bad = sign_hs256_bad_signature(&claims(serde_json::json!({"sub": "x"})));
    let r = envoy.get("/", &[("authorization", &bearer(&bad))]);
    assert_eq!(r.status, 401);
    let good = sign_hs256(&claims(serde_json::json!({"sub": "x"})));
    let r = envoy.get("/", &[("authorization", &bearer(&good))]);
    assert_eq!(
        r.status, 200,
        "a token signed with envoy/jwks.json verifies"
    );
}

/// The shipped demo configuration, as `make run` serves it.
#[test]
fn demo_configuration_routes_as_documented() {
    let mut envoy = Envoy::start(&read_repo_file("envoy/canary.json"), Opts::default());
    let d = envoy.decide("/", &h(&[("x-canary", "always")]));
    assert_eq!((d.subset.as_str(), d.rule.as_deref()), ("v2", Some("qa")));
    let d = envoy.decide(
        "/",
        &h(&[("cookie", "theme=dark; beta=true; session_id=s1")]),
    );
    assert_eq!((d.subset.as_str(), d.rule.as_deref()), ("v2", Some("beta")));
    let staff = sign_hs256(&claims(
        serde_json::json!({"sub": "alice", "groups": ["dev", "staff"]}),
    ));
    let d = envoy.decide("/", &[("authorization", &bearer(&staff))]);
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v2", Some("staff"))
    );
    let acme = sign_hs256(&claims(serde_json::json!({"sub": "bob", "tenant": "acme"})));
    let d = envoy.decide("/", &[("authorization", &bearer(&acme))]);
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v2", Some("tenants"))
    );
    let d = envoy.decide("/", &h(&[("user-agent", "LegacyApp/3.1")]));
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v1", Some("legacy"))
    );
    // /admin stays on v1: `internal` is listed first, even before qa.
    let d = envoy.decide("/admin/users", &h(&[("x-canary", "always")]));
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v1", Some("internal"))
    );
    // The composed rule: a ?beta=1 link, except from the legacy app.
    let d = envoy.decide("/products?beta=1", &h(&[("x-user-id", "bob")]));
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v2", Some("beta-link"))
    );
    let d = envoy.decide("/products?beta=1", &h(&[("user-agent", "LegacyApp/3.1")]));
    assert_eq!(
        (d.subset.as_str(), d.rule.as_deref()),
        ("v1", Some("legacy"))
    );
    // First match wins: qa is listed before legacy.
    let d = envoy.decide(
        "/",
        &h(&[("user-agent", "LegacyApp/3.1"), ("x-canary", "always")]),
    );
    assert_eq!((d.subset.as_str(), d.rule.as_deref()), ("v2", Some("qa")));
    let d = envoy.decide("/", &h(&[("x-user-id", "alice")]));
    assert_eq!((d.reason.as_str(), d.rule), ("hash", None));
    // envoy/run-demo.sh shows bob (on v1) failing to force v2.
    let d = envoy.decide("/", &h(&[("x-canary-subset", "v2"), ("x-user-id", "bob")]));
    assert_eq!((d.subset.as_str(), d.reason.as_str()), ("v1", "hash"));
    let d = envoy.decide("/", &[]);
    assert_eq!(d.reason, "random");
}
