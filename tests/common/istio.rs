//! The manifests in `istio/` as Istio would read them: YAML parsed and checked
//! against Istio's CRD schemas by `istio/validate.mjs` (node packages that
//! `make istio-check` installs), so a test can take a WasmPlugin's
//! `pluginConfig` exactly as shipped.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

pub const HINT: &str = "run `make istio-check` (installs node packages into target/istio-check and kubernetes-validate into .venv)";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn node_modules() -> PathBuf {
    std::env::var_os("ISTIO_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/istio-check/node_modules"))
}

pub fn kubernetes_validate() -> PathBuf {
    root().join(".venv/bin/kubernetes-validate")
}

/// One YAML document as `istio/validate.mjs` reported it.
#[derive(Debug, Clone)]
pub struct Doc {
    pub file: String,
    pub status: String,
    pub error: Option<String>,
    pub object: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or("")
    }
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or("")
    }
}

/// Runs the node validator on `files` (paths relative to the repo root).
/// Returns its exit status and the parsed lines.
pub fn run_validator(files: &[PathBuf]) -> (bool, Vec<Doc>) {
    let modules = node_modules();
    assert!(
        modules.join("@kubernetes-models/istio").is_dir() && modules.join("yaml").is_dir(),
        "missing {}: {HINT}",
        modules.display()
    );
    let out = Command::new("node")
        .arg(root().join("istio/validate.mjs"))
        .arg(&modules)
        .args(files)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): {HINT}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(2),
        "istio/validate.mjs could not run: {stderr}\n{HINT}"
    );
    let docs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("validate.mjs printed {line:?}: {e}; stderr: {stderr}"));
            Doc {
                file: v["file"].as_str().unwrap_or("").to_owned(),
                status: v["status"].as_str().unwrap_or("").to_owned(),
                error: v["error"].as_str().map(str::to_owned),
                object: v["object"].clone(),
            }
        })
        .collect();
    (out.status.success(), docs)
}

/// The `pluginConfig` of the one WasmPlugin in `istio/<file>`, as the JSON
/// Istio hands to the filter.
pub fn plugin_config_of(file: &str) -> Value {
    let (ok, docs) = run_validator(&[PathBuf::from("istio").join(file)]);
    assert!(ok, "istio/{file} does not validate: {docs:?}");
    let plugins: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "WasmPlugin").collect();
    assert_eq!(plugins.len(), 1, "want one WasmPlugin in istio/{file}");
    plugins[0].object["spec"]["pluginConfig"].clone()
}
