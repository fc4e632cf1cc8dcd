#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The manifests in `istio/`: every document is valid against Istio's
//! published CRD schemas (npm `@kubernetes-models/istio`, run by
//! `istio/validate.mjs`) or the core Kubernetes schemas (PyPI
//! `kubernetes-validate --strict`), and the files agree with each other and with
//! the filter: subset names, the routing header, the default route, the plugin
//! configuration (= `envoy/canary.json`, accepted by `canary-router check`),
//! `failStrategy`, the JWT issuer and keys.
//!
//! Needs node and the packages `make istio-check` installs (into
//! `target/istio-check/node_modules` and `.venv`); without them every test FAILS
//! with that hint, never skips.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::istio::{kubernetes_validate, root, run_validator, Doc, HINT};

use serde_json::{json, Value};

/// The manifests applied by `kustomization.yaml`.
const APPLIED: &[&str] = &[
    "namespace.yaml",
    "deployments.yaml",
    "service.yaml",
    "destination-rule.yaml",
    "gateway.yaml",
    "virtual-service.yaml",
    "request-authentication.yaml",
    "authorization-policy.yaml",
    "wasmplugin-gateway.yaml",
    "wasmplugin-sidecar.yaml",
    "shop.yaml",
    "wasmplugin-gateway-shop.yaml",
];
/// Validated too, but installed with `istioctl install -f`, not applied.
const NOT_APPLIED: &[&str] = &["mesh-stats.yaml", "kustomization.yaml"];

fn istio_file(name: &str) -> PathBuf {
    PathBuf::from("istio").join(name)
}

/// Every document of the files above, validated once per test binary.
fn docs() -> &'static (bool, Vec<Doc>) {
    static DOCS: OnceLock<(bool, Vec<Doc>)> = OnceLock::new();
    DOCS.get_or_init(|| {
        let files: Vec<PathBuf> = APPLIED
            .iter()
            .chain(NOT_APPLIED)
            .map(|f| istio_file(f))
            .collect();
        for f in &files {
            assert!(root().join(f).is_file(), "{} is missing", f.display());
        }
        run_validator(&files)
    })
}

fn find<'a>(kind: &str, file: &str) -> Vec<&'a Value> {
    let want = format!("istio/{file}");
    let found: Vec<&Value> = docs()
        .1
        .iter()
        .filter(|d| d.kind() == kind && d.file == want)
        .map(|d| &d.object)
        .collect();
    assert!(!found.is_empty(), "no {kind} in {want}");
    found
}

fn one<'a>(kind: &str, file: &str) -> &'a Value {
    let found = find(kind, file);
    assert_eq!(found.len(), 1, "want exactly one {kind} in istio/{file}");
    found[0]
}

fn canary_json() -> Value {
    let text = std::fs::read_to_string(root().join("envoy/canary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn plugins() -> Vec<(&'static str, &'static Value)> {
    ["wasmplugin-gateway.yaml", "wasmplugin-sidecar.yaml"]
        .into_iter()
        .map(|f| (f, one("WasmPlugin", f)))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn every_istio_document_matches_the_istio_crd_schemas() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let (ok, docs) = docs();
    let bad: Vec<String> = docs
        .iter()
        .filter(|d| d.status != "ok" && d.status != "other")
        .map(|d| {
            format!(
                "{} {} : {}",
                d.file,
                d.kind(),
                d.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(
        bad.is_empty() && *ok,
        "invalid against Istio's CRD schemas:\n{}",
        bad.join("\n")
    );
    // Every document was checked by one of the two validators (or is the
    // kustomization, checked below).
    for d in docs.iter().filter(|d| d.status == "other") {
        let core = matches!(d.api_version(), "v1" | "apps/v1");
        let kustomize = d.api_version().starts_with("kustomize.config.k8s.io/");
        assert!(
            core || kustomize,
            "{}: {} {} has no schema here",
            d.file,
            d.api_version(),
            d.kind()
        );
    }
    let istio: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d.status == "ok")
        .map(Doc::kind)
        .collect();
    for kind in [
        "WasmPlugin",
        "DestinationRule",
        "VirtualService",
        "Gateway",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "IstioOperator",
    ] {
        assert!(istio.contains(kind), "no {kind} was validated: {istio:?}");
    }
}

#[test]
fn core_documents_match_the_kubernetes_schemas_strictly() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let kv = kubernetes_validate();
    assert!(kv.is_file(), "missing {}: {HINT}", kv.display());
    let files: BTreeSet<&str> = docs()
        .1
        .iter()
        .filter(|d| matches!(d.api_version(), "v1" | "apps/v1"))
        .map(|d| d.file.as_str())
        .collect();
    assert!(files.contains("istio/deployments.yaml") && files.contains("istio/service.yaml"));
    let out = Command::new(&kv)
        .arg("--strict")
        .args(&files)
        .current_dir(root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{text}"
    );
    let passed = text.matches(" passed for resource ").count();
    let core_docs = docs()
        .1
        .iter()
        .filter(|d| matches!(d.api_version(), "v1" | "apps/v1"))
        .count();
    assert_eq!(passed, core_docs, "every core document checked:\n{text}");
}

/// The two validators are not vacuous: they reject a broken WasmPlugin and a
/// Service with an unknown field.
#[test]
fn the_validators_reject_broken_manifests() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("istio-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut plugin = one("WasmPlugin", "wasmplugin-gateway.yaml").clone();
    plugin["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    let bad_plugin = dir.join("bad-plugin.yaml");
    std::fs::write(&bad_plugin, serde_json::to_string(&plugin).unwrap()).unwrap();
    let (ok, docs) = run_validator(&[bad_plugin]);
    assert!(!ok, "a bad failStrategy passed");
    assert!(
        docs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("failStrategy"),
        "{docs:?}"
    );

    let mut service = one("Service", "service.yaml").clone();
    service["spec"]["portz"] = json!([]);
    let bad_service = dir.join("bad-service.yaml");
    std::fs::write(&bad_service, serde_json::to_string(&service).unwrap()).unwrap();
    let kv = kubernetes_validate();
    assert!(kv.is_file(), "missing {}: {HINT}", kv.display());
    let out = Command::new(kv)
        .arg("--strict")
        .arg(&bad_service)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown Service field passed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kustomization_applies_every_manifest() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let k = one("Kustomization", "kustomization.yaml");
    let resources = strings(&k["resources"]);
    for file in APPLIED {
        assert!(
            resources.iter().any(|r| r == file),
            "kustomization.yaml misses {file}"
        );
    }
    for r in &resources {
        assert!(
            root().join("istio").join(r).is_file(),
            "kustomization lists missing {r}"
        );
    }
    assert!(
        !resources.iter().any(|r| r == "mesh-stats.yaml"),
        "mesh-stats.yaml is install-time"
    );
}

/// Whether `condition` can only hold with a verified claim: a `jwt_claim` test
/// (other than `present: false`) under `all`, or in every branch of `any`.
fn needs_verified_claim(condition: &Value) -> bool {
    let object = condition.as_object().unwrap();
    let (kind, operand) = object.iter().next().unwrap();
    match kind.as_str() {
        "jwt_claim" => operand.get("present") != Some(&json!(false)),
        "all" => operand.as_array().unwrap().iter().any(needs_verified_claim),
        "any" => operand.as_array().unwrap().iter().all(needs_verified_claim),
        _ => false,
    }
}

/// The manifests run the demo's configuration (envoy/canary.json) with
/// production's gates, and nothing else differs: every rule that forces a
/// subset other than the default needs a verified claim, and the decision
/// header goes only to verified QA members.
#[test]
fn plugin_config_is_envoy_canary_json_with_production_gates() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let qa = json!({"jwt_claim": {"name": "groups", "contains": "qa"}});
    let signed_in = json!({"jwt_claim": {"name": "sub", "present": true}});
    for (file, plugin) in plugins() {
        let config = &plugin["spec"]["pluginConfig"];
        let default = config["default_subset"].as_str().unwrap();
        for rule in config["rules"].as_array().unwrap() {
            assert!(
                rule["subset"] == default || needs_verified_claim(&rule["match"]),
                "{file}: rule {} forces {} without a verified claim",
                rule["name"],
                rule["subset"]
            );
        }

        let mut want = canary_json();
        want["decision_header"] = json!({"name": "x-canary-decision", "match": qa});
        for rule in want["rules"].as_array_mut().unwrap() {
            let gate = match rule["name"].as_str().unwrap() {
                "qa" => &qa,
                "beta" | "beta-link" => &signed_in,
                _ => continue,
            };
            let mut all = match rule["match"].get("all") {
                Some(list) => list.as_array().unwrap().clone(),
                None => vec![rule["match"].clone()],
            };
            all.push(gate.clone());
            rule["match"] = json!({ "all": all });
        }
        // Each instance decides only for api (shop has its own plugin).
        want["scope"] = if file.contains("sidecar") {
            json!({"host": {"in": ["api", "api.api", "api.api.svc", "api.api.svc.cluster.local"]}})
        } else {
            json!({"host": {"exact": "api.example.com"}})
        };
        if file.contains("sidecar") {
            // Inside the mesh: the gateway's cohort is trusted and read first.
            want["cohort"]["trust_incoming"] = json!(true);
            let keys = want["sticky"]["keys"].as_array_mut().unwrap();
            keys.insert(0, json!({"baggage": "canary-bucket"}));
        }
        assert_eq!(
            config, &want,
            "{file}: pluginConfig must be envoy/canary.json with the production gates \
             (the sidecar: trusting the cohort)"
        );
    }
    // The demo stays open for curl: it is not what ships.
    let demo = canary_json();
    assert!(demo["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["subset"] == "v2" && !needs_verified_claim(&r["match"])));
}

#[test]
fn plugin_config_passes_canary_router_check() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("istio-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, plugin) in plugins() {
        let path = dir.join(file.replace(".yaml", ".json"));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&plugin["spec"]["pluginConfig"]).unwrap(),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_canary-router"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: canary-router check refused the pluginConfig: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plugins_fail_open_after_authentication() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    for (file, plugin) in plugins() {
        let spec = &plugin["spec"];
        assert_eq!(spec["failStrategy"], "FAIL_OPEN", "{file}");
        assert_eq!(spec["phase"], "AUTHZ", "{file}");
        let url = spec["url"].as_str().unwrap();
        assert!(url.starts_with("oci://"), "{file}: {url}");
        if let Some(sha) = spec.get("sha256") {
            let sha = sha.as_str().unwrap();
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{file}: sha256 {sha}"
            );
        }
    }
    let gateway = &one("WasmPlugin", "wasmplugin-gateway.yaml")["spec"];
    assert_eq!(
        gateway["selector"]["matchLabels"],
        json!({"istio": "ingressgateway"})
    );
    assert_eq!(
        one("WasmPlugin", "wasmplugin-gateway.yaml")["metadata"]["namespace"],
        "istio-system",
        "a WasmPlugin selects workloads in its own namespace"
    );
    let sidecar = &one("WasmPlugin", "wasmplugin-sidecar.yaml")["spec"];
    assert_eq!(sidecar["match"], json!([{"mode": "CLIENT"}]));
}

fn plugin_subsets() -> Vec<String> {
    let config = &plugins()[0].1["spec"]["pluginConfig"];
    config["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

fn plugin_default_subset() -> String {
    let config = &plugins()[0].1["spec"]["pluginConfig"];
    config["default_subset"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| plugin_subsets()[0].clone())
}

#[test]
fn subset_names_agree_across_files() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let plugin: BTreeSet<String> = plugin_subsets().into_iter().collect();
    let dr = one("DestinationRule", "destination-rule.yaml");
    let mut dr_subsets = BTreeSet::new();
    for s in dr["spec"]["subsets"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap().to_owned();
        assert_eq!(
            s["labels"],
            json!({"version": name}),
            "subset {name} selects version={name}"
        );
        dr_subsets.insert(name);
    }
    assert_eq!(
        plugin, dr_subsets,
        "pluginConfig subsets = DestinationRule subsets"
    );

    let vs = one("VirtualService", "virtual-service.yaml");
    let mut routed = BTreeSet::new();
    for route in vs["spec"]["http"].as_array().unwrap() {
        for dest in route["route"].as_array().unwrap() {
            routed.insert(dest["destination"]["subset"].as_str().unwrap().to_owned());
            assert_eq!(
                dest["destination"]["host"], dr["spec"]["host"],
                "same host as the DR"
            );
        }
    }
    assert_eq!(
        plugin, routed,
        "pluginConfig subsets = VirtualService route subsets"
    );

    // Each subset has pods: a Deployment labelled app: api, version: <subset>,
    // which the Service selects.
    let service = one("Service", "service.yaml");
    assert_eq!(service["spec"]["selector"], json!({"app": "api"}));
    let svc_host = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    assert_eq!(dr["spec"]["host"], json!(svc_host));
    let deployed: BTreeSet<String> = find("Deployment", "deployments.yaml")
        .into_iter()
        .map(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["app"], "api");
            labels["version"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(plugin, deployed, "a Deployment per subset");
}

#[test]
fn virtual_service_routes_on_the_plugin_header_then_defaults_to_stable() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let config = &plugins()[0].1["spec"]["pluginConfig"];
    let header = config["header"].as_str().unwrap_or("x-canary-subset");
    let vs = one("VirtualService", "virtual-service.yaml");
    let routes = vs["spec"]["http"].as_array().unwrap();
    let (last, matched) = routes.split_last().unwrap();
    let mut seen = BTreeSet::new();
    for route in matched {
        let matches = route["match"].as_array().unwrap();
        assert_eq!(matches.len(), 1, "{route}");
        let headers = matches[0]["headers"].as_object().unwrap();
        assert_eq!(headers.len(), 1, "{route}");
        let value = headers[header]["exact"]
            .as_str()
            .unwrap_or_else(|| panic!("route does not match {header} exactly: {route}"));
        let dests = route["route"].as_array().unwrap();
        assert_eq!(dests.len(), 1, "no weights: {route}");
        assert_eq!(
            dests[0]["destination"]["subset"], value,
            "{header}: {value} -> subset {value}"
        );
        seen.insert(value.to_owned());
    }
    assert_eq!(
        seen,
        plugin_subsets().into_iter().collect(),
        "one route per subset"
    );
    assert!(
        last.get("match").is_none(),
        "the last route matches everything: {last}"
    );
    let dests = last["route"].as_array().unwrap();
    assert_eq!(dests.len(), 1);
    assert_eq!(
        dests[0]["destination"]["subset"],
        json!(plugin_default_subset()),
        "a request without the header goes to the stable subset"
    );
    assert_eq!(plugin_default_subset(), "v1");
    // Bound where the plugins run: the gateway and the client sidecars.
    let gateways = strings(&vs["spec"]["gateways"]);
    let gw = one("Gateway", "gateway.yaml");
    assert!(gateways.contains(&gw["metadata"]["name"].as_str().unwrap().to_owned()));
    assert!(gateways.iter().any(|g| g == "mesh"));
    assert_eq!(gw["spec"]["selector"], json!({"istio": "ingressgateway"}));
}

#[test]
fn jwt_verification_matches_the_demo_and_guards_the_staff_paths() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let ra = one("RequestAuthentication", "request-authentication.yaml");
    assert_eq!(
        ra["spec"]["selector"]["matchLabels"],
        json!({"istio": "ingressgateway"})
    );
    let rule = &ra["spec"]["jwtRules"][0];
    assert_eq!(rule["issuer"], "canary-router-demo");
    let envoy = std::fs::read_to_string(root().join("envoy/envoy.yaml")).unwrap();
    assert!(
        envoy.contains("issuer: canary-router-demo"),
        "same issuer as envoy/envoy.yaml"
    );
    let inline: Value = serde_json::from_str(rule["jwks"].as_str().unwrap()).unwrap();
    let demo: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("envoy/jwks.json")).unwrap())
            .unwrap();
    assert_eq!(
        inline["keys"], demo["keys"],
        "inline jwks = envoy/jwks.json keys"
    );

    let ap = one("AuthorizationPolicy", "authorization-policy.yaml");
    assert_eq!(
        ap["spec"]["selector"], ra["spec"]["selector"],
        "where tokens are verified"
    );
    assert_eq!(ap["spec"]["action"], "DENY");
    let rules = ap["spec"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| {
        r["from"][0]["source"]["notRequestPrincipals"] == json!(["*"])
            && strings(&r["to"][0]["operation"]["paths"])
                .iter()
                .any(|p| p == "/staff/*")
    }));
}

#[test]
fn the_filter_stats_are_kept_and_labelled_for_prometheus() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let op = one("IstioOperator", "mesh-stats.yaml");
    let config = &op["spec"]["meshConfig"]["defaultConfig"];
    let prefixes = strings(&config["proxyStatsMatcher"]["inclusionPrefixes"]);
    assert!(prefixes.iter().any(|p| p == "wasmcustom"), "{prefixes:?}");
    // Exactly the labels the filter encodes in its names, in both places.
    let labels: Vec<String> = canary_router::metrics::LABELS
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(strings(&config["extraStatTags"]), labels);
    for d in find("Deployment", "deployments.yaml") {
        let annotations = &d["spec"]["template"]["metadata"]["annotations"];
        let config = annotations["proxy.istio.io/config"].as_str().unwrap();
        assert!(config.contains("proxyStatsMatcher") && config.contains("- wasmcustom"));
        let tags: Vec<String> = annotations["sidecar.istio.io/extraStatTags"]
            .as_str()
            .unwrap()
            .split(',')
            .map(|t| t.trim().to_string())
            .collect();
        assert_eq!(tags, labels);
    }
}

/// istio/flagger-metric-template.yaml: Flagger's CRDs are not among the schemas
/// above (the file is not applied by the kustomization either), so its two
/// MetricTemplates are parsed by the same validator (status "other": not an
/// Istio kind) and checked here against the fields of Flagger's
/// `flagger.app/v1beta1` MetricTemplate: success rate in percent and p99 in ms
/// of the plugin's canary subset, from the filter's own series only.
#[test]
fn flagger_templates_query_the_filter_series_of_the_canary() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let file = "flagger-metric-template.yaml";
    let (ok, docs) = run_validator(&[istio_file(file)]);
    assert!(ok, "istio/{file} does not parse: {docs:?}");
    let canary: Vec<String> = plugin_subsets()
        .into_iter()
        .filter(|s| *s != plugin_default_subset())
        .collect();
    assert_eq!(
        canary.len(),
        1,
        "one canary subset in the plugin: {canary:?}"
    );
    let canary = &canary[0];
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d.object["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["canary-router-success-rate", "canary-router-latency-p99"],
        "istio/{file}: the two templates"
    );
    for d in docs {
        let name = d.object["metadata"]["name"].as_str().unwrap_or("");
        let what = format!("istio/{file} {name}");
        assert_eq!(d.status, "other", "{what}: {:?}", d.error);
        assert_eq!(d.api_version(), "flagger.app/v1beta1", "{what}: apiVersion");
        assert_eq!(d.kind(), "MetricTemplate", "{what}: kind");
        assert_eq!(
            d.object["metadata"]["namespace"], "istio-system",
            "{what}: metadata.namespace"
        );
        let spec = d.object["spec"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: spec is not a map"));
        let keys: BTreeSet<&str> = spec.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["provider", "query"]),
            "{what}: spec fields (Flagger: provider, query)"
        );
        let provider = spec["provider"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: spec.provider is not a map"));
        for k in provider.keys() {
            assert!(
                ["type", "address", "secretRef", "insecureSkipVerify"].contains(&k.as_str()),
                "{what}: spec.provider.{k} is not a Flagger provider field"
            );
        }
        assert_eq!(provider["type"], "prometheus", "{what}: spec.provider.type");
        let address = provider["address"].as_str().unwrap_or("");
        assert!(
            address.starts_with("http://") || address.starts_with("https://"),
            "{what}: spec.provider.address {address:?}"
        );
        let query = spec["query"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: spec.query is not a string"));
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            query.contains("[{{ interval }}]"),
            "{what}: spec.query uses Flagger's {{{{ interval }}}}: {query}"
        );
        assert!(
            !query.contains("istio_"),
            "{what}: spec.query reads Istio's metrics, which plain Envoy does not export: {query}"
        );
        let want: &[String] = if name.ends_with("success-rate") {
            &[
                format!(
                    r#"100 * sum(rate(canary_responses{{subset="{canary}", class!~"5xx|grpc_error"}}[{{{{ interval }}}}]))"#
                ),
                format!(
                    r#"/ sum(rate(canary_responses{{subset="{canary}"}}[{{{{ interval }}}}]))"#
                ),
            ]
        } else {
            &[format!(
                r#"histogram_quantile(0.99, sum by (le) (rate(canary_response_duration_ms_bucket{{subset="{canary}"}}[{{{{ interval }}}}])))"#
            )]
        };
        for part in want {
            assert!(
                query.contains(part.as_str()),
                "{what}: spec.query lacks {part}: {query}"
            );
        }
    }
}

/// The second service on the shared gateway: its own plugin, scoped to its own
/// host, with its own routing header, counters and weights; its VirtualService
/// routes on that header to the subsets its DestinationRule and Deployments
/// define; and the two gateway plugins' scopes do not overlap.
#[test]
fn a_second_service_is_canaried_independently_on_the_shared_gateway() {
    if common::wasm_only("the Istio manifests, which load the Wasm build") {
        return;
    }
    let api = &one("WasmPlugin", "wasmplugin-gateway.yaml")["spec"];
    let shop = &one("WasmPlugin", "wasmplugin-gateway-shop.yaml")["spec"];
    assert_eq!(api["selector"], shop["selector"], "the same gateway pods");
    assert_eq!(api["phase"], shop["phase"]);
    assert_eq!(api["url"], shop["url"], "the same module");
    let (a, s) = (&api["pluginConfig"], &shop["pluginConfig"]);
    for field in ["header", "metrics_prefix"] {
        assert_ne!(a[field], s[field], "each instance its own {field}");
    }
    assert_eq!(a["scope"], json!({"host": {"exact": "api.example.com"}}));
    assert_eq!(s["scope"], json!({"host": {"exact": "shop.example.com"}}));
    // Forcing rules gated as on api.
    for rule in s["rules"].as_array().unwrap() {
        assert!(
            rule["subset"] == s["default_subset"] || needs_verified_claim(&rule["match"]),
            "shop rule {} forces without a verified claim",
            rule["name"]
        );
    }
    // The filter accepts it.
    let dir = std::env::temp_dir().join(format!("canary-istio-shop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shop.json");
    std::fs::write(&path, s.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canary-router"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);

    let header = s["header"].as_str().unwrap();
    let subsets: BTreeSet<String> = s["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect();
    let dr = one("DestinationRule", "shop.yaml");
    let dr_subsets: BTreeSet<String> = dr["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let name = x["name"].as_str().unwrap().to_owned();
            assert_eq!(x["labels"], json!({"version": name}));
            name
        })
        .collect();
    assert_eq!(
        subsets, dr_subsets,
        "plugin subsets = DestinationRule subsets"
    );
    let service = one("Service", "shop.yaml");
    assert_eq!(service["spec"]["selector"], json!({"app": "shop"}));
    assert_eq!(
        dr["spec"]["host"],
        json!(format!(
            "{}.{}.svc.cluster.local",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        ))
    );
    let deployed: BTreeSet<String> = find("Deployment", "shop.yaml")
        .into_iter()
        .map(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["app"], "shop");
            labels["version"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(subsets, deployed, "a Deployment per subset");

    let vs = one("VirtualService", "shop.yaml");
    assert_eq!(strings(&vs["spec"]["hosts"]), ["shop.example.com"]);
    let gw = one("Gateway", "shop.yaml");
    assert_eq!(gw["spec"]["selector"], json!({"istio": "ingressgateway"}));
    assert_eq!(
        strings(&gw["spec"]["servers"][0]["hosts"]),
        ["shop.example.com"]
    );
    assert_eq!(
        strings(&vs["spec"]["gateways"]),
        [gw["metadata"]["name"].as_str().unwrap()]
    );
    let routes = vs["spec"]["http"].as_array().unwrap();
    let (last, matched) = routes.split_last().unwrap();
    let mut seen = BTreeSet::new();
    for route in matched {
        let value = route["match"][0]["headers"][header]["exact"]
            .as_str()
            .unwrap_or_else(|| panic!("route does not match {header}: {route}"));
        assert_eq!(route["route"][0]["destination"]["subset"], value);
        assert_eq!(route["route"][0]["destination"]["host"], dr["spec"]["host"]);
        seen.insert(value.to_owned());
    }
    assert_eq!(seen, subsets, "one route per subset on {header}");
    assert!(last.get("match").is_none());
    assert_eq!(
        last["route"][0]["destination"]["subset"],
        s["default_subset"]
    );
    // The api side does not claim shop's host, and the other way round.
    let api_gw = one("Gateway", "gateway.yaml");
    assert!(
        !strings(&api_gw["spec"]["servers"][0]["hosts"]).contains(&"shop.example.com".to_owned())
    );
}
