//! Shared harness of the integration tests: a real Envoy running the shipped
//! `envoy/envoy.yaml` (+ `envoy/backends.yaml` merged into the same process) with
//! the freshly built filter, a small HTTP/1.1 client, admin helpers and HS256
//! token signing.
//!
//! Env vars: `ENVOY_BIN` (the Envoy binary) and `CANARY_WASM` (absolute path of
//! the built `.wasm`); `make integration` sets both. When unset, the harness falls
//! back to the project's `.venv` Envoy and the `.wasm` envoy.yaml names.
//! `CANARY_HOST=native` runs the same tests against the Envoy dynamic module
//! instead of the Wasm module ([`host`]).
//!
//! Only what a test needs differently is substituted in the shipped files: the
//! four ports, the `.wasm` path, the plugin configuration (between the
//! `BEGIN/END plugin_config` markers) and, on request, the `jwt_authn` filter
//! (between the `BEGIN/END jwt_authn` markers) is dropped. A test that needs
//! more (tests/scopes.rs: its own route table) edits the final text of either
//! file ([`Opts::edit_main`], [`Opts::edit_backends`]).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod faults;
pub mod grpc;
pub mod host;
pub mod istio;
pub mod pin;
pub mod prometheus;
pub mod side_by_side;

#[allow(unused_imports)]
pub use host::{is_native, stats_prefix, wasm_only};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long Envoy may take to become ready (V8 compiles the module at start).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused configuration may take to make Envoy exit.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout of every HTTP exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Paths and shipped files
// ---------------------------------------------------------------------------

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read_repo_file(rel: &str) -> String {
    let path = repo_root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/lib");
    if let Ok(entries) = fs::read_dir(&venv) {
        for e in entries.flatten() {
            let cand = e.path().join("site-packages/envoy/_bin/envoy");
            if cand.is_file() {
                return cand;
            }
        }
    }
    panic!("ENVOY_BIN is not set and no Envoy in .venv: run `make integration` (it installs one)");
}

pub fn wasm_path() -> PathBuf {
    let p = std::env::var_os("CANARY_WASM").map_or_else(
        || repo_root().join(shipped_wasm_path(&read_repo_file("envoy/envoy.yaml"))),
        PathBuf::from,
    );
    assert!(
        p.is_file(),
        "no filter at {} (CANARY_WASM): run `make wasm`, or `make integration`",
        p.display()
    );
    p
}

/// The demo plugin configuration shipped in envoy/canary.json.
pub fn demo_config() -> serde_json::Value {
    serde_json::from_str(&read_repo_file("envoy/canary.json")).expect("envoy/canary.json is JSON")
}

/// A minimal two-subset configuration keyed on `x-user-id` only.
pub fn weights_config(v1: f64, v2: f64, seed: &str) -> serde_json::Value {
    serde_json::json!({
        "subsets": [ {"name": "v1", "weight": v1}, {"name": "v2", "weight": v2} ],
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": seed }
    })
}

// ---------------------------------------------------------------------------
// Configuration building
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Opts {
    /// Envoy `--concurrency` (worker threads).
    pub concurrency: u32,
    /// Keep the `jwt_authn` filter of envoy.yaml (Istio RequestAuthentication).
    pub with_jwt_authn: bool,
    /// Keep the Wasm filter (false only for harness self-checks).
    pub with_wasm: bool,
    /// Keep envoy.yaml's early header mutation that strips a client-sent routing
    /// header before routing. Without it (as in Istio, which has no such hook)
    /// the filter alone must replace the header and make Envoy re-pick the route.
    pub with_early_strip: bool,
    /// Deliver the plugin configuration by ECDS from a watched file in this
    /// directory (as Istio delivers WasmPlugins) instead of inline; see
    /// [`write_ecds`] to push a new configuration while Envoy serves.
    pub ecds_dir: Option<PathBuf>,
    /// Replace envoy.yaml's whole `stats_config` (between the BEGIN/END
    /// stats_config markers) with this YAML block, e.g. the one Istio generates.
    pub stats_config: Option<String>,
    /// Make the v2 upstream misbehave ([`faults::V2Fault`]).
    pub v2_fault: faults::V2Fault,
    /// Route the gRPC test service to these HTTP/2 upstreams ([`grpc`]).
    pub grpc: Option<grpc::GrpcUpstreams>,
    /// A second instance of the filter, right after the first in the HTTP
    /// filter chain: (its name, its plugin configuration). Delivered by ECDS
    /// only (needs [`Opts::ecds`]), as its own resource in its own file of the
    /// same directory ([`ecds_file_named`]); push a new configuration with
    /// [`write_ecds_named`].
    pub second_instance: Option<(String, String)>,
    /// Applied last to the main configuration (after every substitution above).
    pub edit_main: Option<fn(String) -> String>,
    /// Applied last to the backends' configuration.
    pub edit_backends: Option<fn(String) -> String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            concurrency: 1,
            with_jwt_authn: true,
            with_wasm: true,
            with_early_strip: true,
            ecds_dir: None,
            stats_config: None,
            v2_fault: faults::V2Fault::None,
            grpc: None,
            second_instance: None,
            edit_main: None,
            edit_backends: None,
        }
    }
}

impl Opts {
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }
    pub fn without_jwt_authn(mut self) -> Self {
        self.with_jwt_authn = false;
        self
    }
    pub fn without_wasm(mut self) -> Self {
        self.with_wasm = false;
        self
    }
    pub fn without_early_strip(mut self) -> Self {
        self.with_early_strip = false;
        self
    }
    pub fn ecds(mut self, dir: PathBuf) -> Self {
        self.ecds_dir = Some(dir);
        self
    }
    pub fn v2_fault(mut self, fault: faults::V2Fault) -> Self {
        self.v2_fault = fault;
        self
    }
    pub fn stats_config(mut self, yaml: String) -> Self {
        self.stats_config = Some(yaml);
        self
    }
    pub fn grpc(mut self, upstreams: grpc::GrpcUpstreams) -> Self {
        self.grpc = Some(upstreams);
        self
    }
    pub fn second_instance(mut self, name: &str, plugin_config: &str) -> Self {
        self.second_instance = Some((name.to_string(), plugin_config.to_string()));
        self
    }
    pub fn edit_main(mut self, edit: fn(String) -> String) -> Self {
        self.edit_main = Some(edit);
        self
    }
    pub fn edit_backends(mut self, edit: fn(String) -> String) -> Self {
        self.edit_backends = Some(edit);
        self
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub admin: u16,
    pub listener: u16,
    pub v1: u16,
    pub v2: u16,
}

fn free_ports() -> Ports {
    Ports {
        admin: reserve_port(),
        listener: reserve_port(),
        v1: reserve_port(),
        v2: reserve_port(),
    }
}

/// A loopback port no other test process will hand out while this one runs.
///
/// A port from `bind(":0")` is free only until the socket closes, and Envoy
/// binds its listeners with SO_REUSEPORT: two Envoys of two concurrent tests
/// given the same port would both bind it and share its connections, each
/// answering the other's requests. So ports come from 20000..32000 (below
/// Linux's ephemeral range, where no client socket lands), each claimed by a
/// lock file created exclusively and naming this process; a file whose process
/// is gone is reclaimed.
pub fn reserve_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join("canary-router-test-ports");
    fs::create_dir_all(&dir).unwrap();
    let pid = std::process::id();
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize
        ^ (pid as usize).wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + ((start.wrapping_add(n.wrapping_mul(7_001))) % 12_000) as u16;
        let lock = dir.join(port.to_string());
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                f.write_all(pid.to_string().as_bytes()).unwrap();
                if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    return port;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&lock).unwrap_or_default();
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
                // An empty file is being written by its creator right now.
                if !alive && !owner.is_empty() {
                    let _ = fs::remove_file(&lock);
                }
            }
            Err(e) => panic!("cannot create {}: {e}", lock.display()),
        }
    }
    panic!("no free port in 20000..32000")
}

/// Replace `from` by `to`, insisting that `from` occurs exactly once (so a change
/// to the shipped file cannot silently make a substitution miss).
fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(n, 1, "{file}: expected `{from}` exactly once, found {n}");
    text.replacen(from, to, 1)
}

/// The lines from the one containing `# BEGIN <name>` to the one containing
/// `# END <name>`, both included: (start byte, end byte, indentation of BEGIN).
fn marked_block(text: &str, name: &str, file: &str) -> (usize, usize, String) {
    let begin = format!("# BEGIN {name}");
    let end = format!("# END {name}");
    assert_eq!(text.matches(&begin).count(), 1, "{file}: `{begin}` once");
    assert_eq!(text.matches(&end).count(), 1, "{file}: `{end}` once");
    let b = text.find(&begin).unwrap();
    let line_start = text[..b].rfind('\n').map_or(0, |i| i + 1);
    let indent = text[line_start..b].to_string();
    assert!(
        indent.trim().is_empty(),
        "{file}: `{begin}` starts its line"
    );
    let e = text.find(&end).unwrap();
    assert!(e > b, "{file}: `{end}` after `{begin}`");
    let line_end = text[e..].find('\n').map_or(text.len(), |i| e + i + 1);
    (line_start, line_end, indent)
}

/// A YAML double-quoted scalar holding `s` exactly.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text of the plugin configuration embedded in envoy/envoy.yaml (the block
/// scalar between the plugin_config markers), unindented.
pub fn embedded_plugin_config(envoy_yaml: &str) -> String {
    let (start, end, indent) = marked_block(envoy_yaml, "plugin_config", "envoy/envoy.yaml");
    let block = &envoy_yaml[start..end];
    let mut lines = block.lines();
    let mut out = String::new();
    let mut in_value = false;
    let body_indent = format!("{indent}  ");
    for line in lines.by_ref() {
        if !in_value {
            if line.trim() == "value: |" {
                in_value = true;
            }
            continue;
        }
        if line.trim_start().starts_with("# END plugin_config") {
            break;
        }
        let l = line
            .strip_prefix(&body_indent)
            .unwrap_or_else(|| panic!("plugin_config line not indented as the block: {line:?}"));
        out.push_str(l);
        out.push('\n');
    }
    assert!(
        in_value,
        "envoy/envoy.yaml: plugin_config block has no `value: |`"
    );
    out
}

/// The `filename:` line of the Wasm filter's code in envoy.yaml: (start, end
/// after its newline).
fn wasm_filename_line(y: &str) -> (usize, usize) {
    let filter = y
        .find("- name: envoy.filters.http.wasm")
        .expect("envoy/envoy.yaml has the wasm filter");
    let at = filter + y[filter..].find("filename: ").expect("a code filename");
    let start = y[..at].rfind('\n').unwrap() + 1;
    let end = at + y[at..].find('\n').unwrap() + 1;
    (start, end)
}

/// The `.wasm` path envoy/envoy.yaml loads (relative to the repository root).
pub fn shipped_wasm_path(envoy_yaml: &str) -> String {
    let (s, e) = wasm_filename_line(envoy_yaml);
    envoy_yaml[s..e]
        .trim()
        .strip_prefix("filename: ")
        .unwrap()
        .to_string()
}

/// envoy/envoy.yaml with the test's ports, wasm path and plugin configuration.
pub fn build_main_config(plugin_config: &str, opts: &Opts, ports: Ports) -> String {
    let file = "envoy/envoy.yaml";
    let mut y = read_repo_file(file);
    y = replace_once(
        &y,
        "port_value: 9901 }",
        &format!("port_value: {} }}", ports.admin),
        file,
    );
    y = replace_once(
        &y,
        "port_value: 10000 }",
        &format!("port_value: {} }}", ports.listener),
        file,
    );
    y = replace_once(
        &y,
        "port_value: 10001 }",
        &format!("port_value: {} }}", ports.v1),
        file,
    );
    y = replace_once(
        &y,
        "port_value: 10002 }",
        &format!("port_value: {} }}", ports.v2),
        file,
    );
    // Without the filter (harness self-checks), or with the dynamic module in
    // its place, the .wasm need not exist.
    let wasm = if opts.with_wasm && !is_native() {
        path_of(&wasm_path())
    } else {
        "/nonexistent/canary-router.wasm".to_string()
    };
    let (s, e) = wasm_filename_line(&y);
    let indent = y[s..s + y[s..].find("filename:").unwrap()].to_string();
    y = format!(
        "{}{indent}filename: {}\n{}",
        &y[..s],
        yaml_quote(&wasm),
        &y[e..]
    );
    let (s, e, indent) = marked_block(&y, "plugin_config", file);
    y = format!(
        "{}{indent}value: {}\n{}",
        &y[..s],
        yaml_quote(plugin_config),
        &y[e..]
    );
    if let Some(stats) = &opts.stats_config {
        let (s, e, _) = marked_block(&y, "stats_config", file);
        y = format!("{}{stats}\n{}", &y[..s], &y[e..]);
    }
    if !opts.with_early_strip {
        let (s, e, _) = marked_block(&y, "early_strip", file);
        y = format!("{}{}", &y[..s], &y[e..]);
    }
    if !opts.with_jwt_authn {
        let (s, e, _) = marked_block(&y, "jwt_authn", file);
        y = format!("{}{}", &y[..s], &y[e..]);
    }
    assert!(
        opts.second_instance.is_none() || (opts.with_wasm && opts.ecds_dir.is_some()),
        "a second instance of the filter is delivered by ECDS only (Opts::ecds)"
    );
    if !opts.with_wasm || opts.ecds_dir.is_some() || is_native() {
        // Cut the inline Wasm filter entry (from its `- name:` line up to the
        // router's): for harness self-checks, to load the filter by ECDS
        // instead, or to put the dynamic module in its place.
        let s = y.find("- name: envoy.filters.http.wasm").unwrap();
        let s = y[..s].rfind('\n').unwrap() + 1;
        let e = y.find("- name: envoy.filters.http.router").unwrap();
        let e = y[..e].rfind('\n').unwrap() + 1;
        let entry = match &opts.ecds_dir {
            Some(dir) if opts.with_wasm => {
                write_ecds(dir, plugin_config);
                let indent = &y[s..y[s..].find('-').unwrap() + s];
                let mut entry = ecds_filter_entry(dir, ECDS_NAME, indent);
                if let Some((name, config)) = &opts.second_instance {
                    write_ecds_named(dir, name, config);
                    entry.push_str(&ecds_filter_entry(dir, name, indent));
                }
                entry
            }
            None if opts.with_wasm => {
                let indent = &y[s..y[s..].find('-').unwrap() + s];
                let entry = serde_json::json!({
                    "name": "envoy.filters.http.dynamic_modules",
                    "typed_config": host::dynamic_module_filter(plugin_config),
                });
                format!("{indent}- {entry}\n")
            }
            _ => String::new(),
        };
        y = format!("{}{entry}{}", &y[..s], &y[e..]);
    }
    if let Some(up) = &opts.grpc {
        y = grpc::add_grpc_upstreams(&y, up);
    }
    y.push_str(host::bootstrap_extra());
    if let Some(edit) = opts.edit_main {
        y = edit(y);
    }
    y
}

/// The name of the (first) filter instance's ECDS resource.
const ECDS_NAME: &str = "canary-router";

/// The ECDS resource file in `dir`.
pub fn ecds_file(dir: &Path) -> PathBuf {
    ecds_file_named(dir, ECDS_NAME)
}

/// The file of the ECDS resource `name` in `dir` (one file per instance).
pub fn ecds_file_named(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// The HTTP filter entry that loads the filter by ECDS (resource `name`) from
/// a watched file.
fn ecds_filter_entry(dir: &Path, name: &str, indent: &str) -> String {
    let entry = serde_json::json!({
        "name": name,
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": path_of(&ecds_file_named(dir, name)),
                    "watched_directory": {"path": path_of(dir)},
                },
                "resource_api_version": "V3",
            },
            "type_urls": [host::filter_type_url()],
        }
    });
    format!("{indent}- {entry}\n")
}

/// Write (atomically: a temporary file renamed over the watched one) the ECDS
/// resource holding the filter with `plugin_config`, as a control plane
/// would push it. Envoy picks the change up from the watched directory.
pub fn write_ecds(dir: &Path, plugin_config: &str) {
    write_ecds_named(dir, ECDS_NAME, plugin_config);
}

/// [`write_ecds`] for the instance whose ECDS resource is `name`
/// ([`Opts::second_instance`]).
pub fn write_ecds_named(dir: &Path, name: &str, plugin_config: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let resource = if is_native() {
        serde_json::json!({
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": name,
                "typed_config": host::dynamic_module_filter(plugin_config),
            }]
        })
    } else {
        wasm_ecds_resource(name, plugin_config)
    };
    let tmp = dir.join(format!(".{name}.json.tmp"));
    std::fs::write(&tmp, resource.to_string()).unwrap();
    std::fs::rename(&tmp, ecds_file_named(dir, name)).unwrap();
}

/// The ECDS resource `name` of the Wasm filter: every instance has the same
/// Wasm settings (plugin name, `root_id`, `vm_id`, code); only the plugin
/// configuration differs.
fn wasm_ecds_resource(name: &str, plugin_config: &str) -> serde_json::Value {
    serde_json::json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "canary-router",
                    "root_id": "canary-router",
                    "failure_policy": "FAIL_OPEN",
                    "vm_config": {
                        "vm_id": "canary-router",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": path_of(&wasm_path())}},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_config,
                    },
                },
            },
        }]
    })
}

/// envoy/backends.yaml with the test's backend ports.
pub fn build_backends_config(ports: Ports) -> String {
    let file = "envoy/backends.yaml";
    let y = read_repo_file(file);
    let y = replace_once(
        &y,
        "port_value: 10001 }",
        &format!("port_value: {} }}", ports.v1),
        file,
    );
    replace_once(
        &y,
        "port_value: 10002 }",
        &format!("port_value: {} }}", ports.v2),
        file,
    )
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!(
        "canary-router-it-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        nanos
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------
// Envoy
// ---------------------------------------------------------------------------

/// A running Envoy owned by the test: killed on drop (also on panic).
pub struct Envoy {
    child: Option<Child>,
    dir: PathBuf,
    pub ports: Ports,
    pub plugin_config: String,
    pub opts: Opts,
    log_path: PathBuf,
    client: Option<Client>,
    starts: u32,
}

enum Outcome {
    Ready,
    Exited(ExitStatus),
    Timeout,
}

impl Envoy {
    /// Start Envoy with `plugin_config` as the filter's configuration and wait
    /// until the admin `/ready` says LIVE. Panics (with the log) on failure.
    pub fn start(plugin_config: &str, opts: Opts) -> Envoy {
        let mut envoy = Envoy {
            child: None,
            dir: temp_dir(),
            ports: free_ports(),
            plugin_config: plugin_config.to_string(),
            opts,
            log_path: PathBuf::new(),
            client: None,
            starts: 0,
        };
        envoy.launch_until_ready();
        envoy
    }

    /// Start Envoy with a configuration the filter must refuse. Asserts that
    /// Envoy exits with a failure status before it ever reports ready, and
    /// returns the whole log.
    pub fn start_expect_failure(plugin_config: &str, opts: Opts) -> String {
        for _attempt in 0..5 {
            let mut envoy = Envoy {
                child: None,
                dir: temp_dir(),
                ports: free_ports(),
                plugin_config: plugin_config.to_string(),
                opts: opts.clone(),
                log_path: PathBuf::new(),
                client: None,
                starts: 0,
            };
            envoy.spawn();
            match envoy.wait_outcome(FAILURE_TIMEOUT) {
                Outcome::Ready => panic!(
                    "Envoy became ready (serves) with a configuration the filter must refuse:\n{}\nlog tail:\n{}",
                    plugin_config,
                    envoy.log_tail(40)
                ),
                Outcome::Timeout => panic!(
                    "Envoy neither exited nor became ready within {FAILURE_TIMEOUT:?} with a bad configuration; log tail:\n{}",
                    envoy.log_tail(40)
                ),
                Outcome::Exited(status) => {
                    let log = envoy.log();
                    if is_port_clash(&log) {
                        continue;
                    }
                    assert!(
                        !status.success(),
                        "Envoy exited successfully with a bad configuration: {status}"
                    );
                    return host::refusal_log(log);
                }
            }
        }
        panic!("could not get free ports for Envoy in 5 attempts");
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let main = build_main_config(&self.plugin_config, &self.opts, self.ports);
        let mut backends = faults::backends_with_fault(self.ports, self.opts.v2_fault);
        if let Some(edit) = self.opts.edit_backends {
            backends = edit(backends);
        }
        let main_path = self.dir.join(format!("envoy-{}.yaml", self.starts));
        fs::write(&main_path, main).unwrap();
        self.log_path = self.dir.join(format!("envoy-{}.log", self.starts));
        let log = fs::File::create(&self.log_path).unwrap();
        let mut command = Command::new(envoy_bin());
        if is_native() {
            command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", host::native_dir());
        }
        let child = command
            .current_dir(repo_root())
            .arg("-c")
            .arg(&main_path)
            .arg("--config-yaml")
            .arg(backends)
            .arg("--concurrency")
            .arg(self.opts.concurrency.to_string())
            .arg("--disable-hot-restart")
            // ECDS (Opts::ecds) needs a node identity; harmless otherwise.
            .args([
                "--service-node",
                "canary-router-test",
                "--service-cluster",
                "canary-router-test",
            ])
            .arg("--log-level")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", envoy_bin().display()));
        self.child = Some(child);
    }

    fn wait_outcome(&mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let admin: SocketAddr = ([127, 0, 0, 1], self.ports.admin).into();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Outcome::Exited(status);
            }
            if let Ok(r) = one_shot(admin, "GET", "/ready", &[]) {
                if r.status == 200 {
                    return Outcome::Ready;
                }
            }
            if Instant::now() > deadline {
                return Outcome::Timeout;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launch_until_ready(&mut self) {
        for _attempt in 0..5 {
            self.spawn();
            match self.wait_outcome(STARTUP_TIMEOUT) {
                Outcome::Ready => return,
                Outcome::Timeout => panic!(
                    "Envoy not ready within {STARTUP_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail(60)
                ),
                Outcome::Exited(status) => {
                    let log = self.log();
                    if is_port_clash(&log) {
                        self.ports = free_ports();
                        continue;
                    }
                    panic!(
                        "Envoy exited ({status}) before becoming ready; log tail:\n{}",
                        self.log_tail(60)
                    );
                }
            }
        }
        panic!("could not get free ports for Envoy in 5 attempts");
    }

    fn kill(&mut self) {
        self.client = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop Envoy and start it again with the same configuration and options.
    /// (Ports are kept when possible.)
    pub fn restart(&mut self) {
        self.kill();
        self.launch_until_ready();
    }

    /// The Envoy process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn listener_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.ports.listener).into()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.ports.admin).into()
    }

    /// A new keep-alive client to the listener.
    pub fn client(&self) -> Client {
        Client::new(self.listener_addr())
    }

    /// GET through the listener on this Envoy's shared keep-alive connection.
    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        let addr = self.listener_addr();
        self.client
            .get_or_insert_with(|| Client::new(addr))
            .get(path, headers)
    }

    /// GET through the listener on a fresh connection (closed afterwards).
    pub fn get_new_conn(&self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        one_shot(self.listener_addr(), "GET", path, headers)
            .unwrap_or_else(|e| panic!("GET {path} on a new connection: {e}"))
    }

    pub fn admin_get(&self, path: &str) -> Response {
        one_shot(self.admin_addr(), "GET", path, &[])
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// Every counter and gauge at /stats, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let r = self.admin_get("/stats");
        assert_eq!(r.status, 200);
        parse_stats(&r.body_str())
    }

    /// The filter's counters only (names under `wasmcustom.`, or
    /// `dynamicmodulescustom.` for the dynamic module), missing ones absent.
    /// The filter's counters (its gauges, the VM memory and a ramp's weights,
    /// move on their own timer and are left out: see [`Envoy::wasm_memory_gauge`]).
    pub fn wasm_stats(&self) -> BTreeMap<String, u64> {
        let prefix = stats_prefix();
        let r = self.admin_get(&format!(
            "/stats?filter=%5E{}%5C.",
            prefix.trim_end_matches('.')
        ));
        assert_eq!(r.status, 200);
        parse_stats(&r.body_str())
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(prefix)
                    && !k.ends_with(".wasm_memory_bytes")
                    && !k.ends_with(";.;weight_bp")
            })
            .collect()
    }

    /// The filter's `<prefix>.wasm_memory_bytes` gauge.
    pub fn wasm_memory_gauge(&self, prefix: &str) -> Option<u64> {
        self.stats()
            .get(&format!("{}{prefix}.wasm_memory_bytes", stats_prefix()))
            .copied()
    }

    /// The text at /stats/prometheus.
    pub fn prometheus(&self) -> String {
        let r = self.admin_get("/stats/prometheus");
        assert_eq!(r.status, 200);
        r.body_str()
    }

    /// Everything Envoy wrote so far (stdout and stderr) since the last start.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The log once it contains `needle`. Envoy writes its log asynchronously
    /// (and worker VMs configure after /ready), so a line the filter logged can
    /// land a moment after the event a test waited for.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no {needle:?} in the log within 10 s:\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` lines of the log, without Envoy's start-up inventory.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("][info][main]"))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- Envoy log kept at {} (tail) ---\n{}\n--- end ---",
                self.log_path.display(),
                self.log_tail(30)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_port_clash(log: &str) -> bool {
    log.contains("Address already in use")
}

pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(": ")?;
            Some((k.to_string(), v.trim().parse::<u64>().ok()?))
        })
        .collect()
}

/// Lines `canary_requests{subset="v2",reason="rule"} 5` of a Prometheus text:
/// (metric name, labels, value).
pub fn parse_prometheus(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or(rest);
                let mut m = BTreeMap::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        m.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                }
                (n.to_string(), m)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, values as received, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `x-served-by` of the backend that answered ("" if none).
    pub fn served_by(&self) -> String {
        self.header("x-served-by").unwrap_or_default()
    }
    /// `x-seen-subset`: the x-canary-subset header the backend received.
    pub fn seen_subset(&self) -> String {
        self.header("x-seen-subset").unwrap_or_default()
    }
}

/// A keep-alive HTTP/1.1 client over one TCP connection (reconnects when the
/// server closed it). Header values are raw bytes, names may repeat.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        self.request("GET", path, headers)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> std::io::Result<Response> {
        let req = encode_request(method, path, headers);
        let reused = self.conn.is_some();
        match self.exchange(&req) {
            Ok(r) => Ok(r),
            // The server may have closed an idle keep-alive connection: once more
            // on a fresh one.
            Err(_) if reused => {
                self.conn = None;
                self.exchange(&req)
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(&mut self, req: &[u8]) -> std::io::Result<Response> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(connect(self.addr)?));
        }
        let conn = self.conn.as_mut().unwrap();
        let result = (|| {
            conn.get_mut().write_all(req)?;
            read_response(conn)
        })();
        match result {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request on a new connection, closed afterwards.
pub fn one_shot(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> std::io::Result<Response> {
    let mut conn = BufReader::new(connect(addr)?);
    conn.get_mut()
        .write_all(&encode_request(method, path, headers))?;
    let (resp, _) = read_response(&mut conn)?;
    let _ = conn.get_mut().shutdown(Shutdown::Both);
    Ok(resp)
}

fn encode_request(method: &str, path: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.extend_from_slice(b"host: localhost\r\n");
    }
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

fn io_err(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Read one response; the bool says whether the connection stays usable.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(Response, bool)> {
    let status_line = read_line(r)?;
    let status_line = String::from_utf8_lossy(&status_line).into_owned();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io_err(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| io_err("header line without ':'".into()))?;
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let mut value = &line[colon + 1..];
        while value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            value = &value[1..];
        }
        headers.push((name, value.to_vec()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let mut keep = version == "HTTP/1.1" && get("connection").as_deref() != Some("close");
    let mut body = Vec::new();
    if status < 200 || status == 204 || status == 304 {
        // no body
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let size_line = String::from_utf8_lossy(&read_line(r)?).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io_err(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // trailers
                while !read_line(r)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            read_line(r)?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| io_err(format!("bad content-length {len:?}")))?;
        body = vec![0; len];
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
        keep = false;
    }
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep,
    ))
}

// ---------------------------------------------------------------------------
// JWT (HS256 with the key of envoy/jwks.json)
// ---------------------------------------------------------------------------

pub fn b64url_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => panic!("not base64url: {c:?}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The HS256 key of envoy/jwks.json (kid `demo`).
pub fn jwks_key() -> Vec<u8> {
    let jwks: serde_json::Value =
        serde_json::from_str(&read_repo_file("envoy/jwks.json")).expect("jwks.json is JSON");
    let k = jwks["keys"][0]["k"].as_str().expect("keys[0].k");
    assert_eq!(jwks["keys"][0]["kty"], "oct");
    b64url_decode(k)
}

/// Claims accepted by the demo provider: `iss` and a future `exp` added to `extra`.
pub fn claims(extra: serde_json::Value) -> String {
    let mut c = extra;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    c["iss"] = "canary-router-demo".into();
    if c.get("exp").is_none() {
        c["exp"] = (now + 3600).into();
    }
    c.to_string()
}

fn sign_with(claims_json: &str, key: &[u8]) -> String {
    let header = r#"{"alg":"HS256","typ":"JWT","kid":"demo"}"#;
    let signing_input = format!(
        "{}.{}",
        b64url_encode(header.as_bytes()),
        b64url_encode(claims_json.as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    let sig = mac.finalize().into_bytes();
    format!("{signing_input}.{}", b64url_encode(&sig))
}

/// An HS256 JWT over `claims_json`, signed with the key of envoy/jwks.json.
pub fn sign_hs256(claims_json: &str) -> String {
    sign_with(claims_json, &jwks_key())
}

/// The same token shape, but signed with another key: jwt_authn must reject it.
pub fn sign_hs256_bad_signature(claims_json: &str) -> String {
    let mut key = jwks_key();
    key[0] ^= 0x55;
    sign_with(claims_json, &key)
}

pub fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

// ---------------------------------------------------------------------------
// Filter counters
// ---------------------------------------------------------------------------

pub const REASONS: [&str; 5] = ["rule", "hash", "pin", "random", "fallback"];
/// Every `class` of the responses counters: the HTTP status classes, then the
/// gRPC outcomes (src/labels.rs); each subset has all of them from configure time.
pub const CLASSES: [&str; 7] = [
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "grpc_ok",
    "grpc_error",
    "grpc_other",
];

/// The filter's names encode labels as Istio does (`subset=.=v2;.;`, src/metrics.rs),
/// under [`stats_prefix`] (`wasmcustom.` for the Wasm build).
pub fn requests_counter(prefix: &str, subset: &str, reason: &str) -> String {
    format!(
        "{}{prefix}.subset=.={subset};.;reason=.={reason};.;requests",
        stats_prefix()
    )
}

pub fn shadow_requests_counter(prefix: &str, subset: &str, reason: &str) -> String {
    format!(
        "{}{prefix}.shadow.subset=.={subset};.;reason=.={reason};.;requests",
        stats_prefix()
    )
}

pub fn responses_counter(prefix: &str, subset: &str, class: &str) -> String {
    format!(
        "{}{prefix}.subset=.={subset};.;class=.={class};.;responses",
        stats_prefix()
    )
}

pub fn rule_counter(prefix: &str, rule: &str) -> String {
    format!("{}{prefix}.rule=.={rule};.;rule_matches", stats_prefix())
}

pub fn weight_gauge(prefix: &str, subset: &str) -> String {
    format!("{}{prefix}.subset=.={subset};.;weight_bp", stats_prefix())
}

/// The brake's trip counter and tripped gauge.
pub fn brake_stats(prefix: &str, subset: &str) -> (String, String) {
    (
        format!("{}{prefix}.subset=.={subset};.;brake_trips", stats_prefix()),
        format!(
            "{}{prefix}.subset=.={subset};.;brake_tripped",
            stats_prefix()
        ),
    )
}

/// The value of one `name=.=value;.;` label in a stat name.
fn label_in<'a>(name: &'a str, label: &str) -> Option<&'a str> {
    let start = name.find(&format!("{label}=.="))? + label.len() + 3;
    let rest = name.get(start..)?;
    rest.get(..rest.find(";.;")?)
}

/// `after - before` for every name in either map (missing = 0), zeros omitted.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, a) in after {
        let b = before.get(k).copied().unwrap_or(0);
        assert!(*a >= b, "counter {k} went down: {b} -> {a}");
        if *a > b {
            out.insert(k.clone(), a - b);
        }
    }
    out
}

/// Assert a response was served by a backend of the subset the filter chose,
/// and return that subset.
pub fn routed_subset(r: &Response) -> String {
    assert_eq!(r.status, 200, "status; body {:?}", r.body_str());
    let seen = r.seen_subset();
    let served = r.served_by();
    assert!(!seen.is_empty(), "the upstream saw no x-canary-subset");
    // Route table: v2 -> cluster v2, anything else -> cluster v1.
    let want = if seen == "v2" { "v2" } else { "v1" };
    assert_eq!(
        served, want,
        "served by {served} with x-canary-subset {seen}"
    );
    seen
}

pub fn path_of(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// What the filter decided for one request, read from the change of its counters
/// around that request (the test must be the only client of this Envoy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub subset: String,
    pub reason: String,
    pub rule: Option<String>,
    pub status: u16,
    pub served_by: String,
}

/// `(subset, reason)` of a name `wasmcustom.<prefix>.subset=.=<s>;.;reason=.=<r>;.;requests`.
pub fn parse_requests_name(name: &str) -> Option<(String, String)> {
    let rest = name
        .strip_prefix(stats_prefix())?
        .strip_suffix(";.;requests")?;
    let (prefix, _) = rest.split_once(".subset=.=")?;
    // metrics_prefix is one segment: `<prefix>.shadow.subset...` is a shadow counter.
    if prefix.contains('.') {
        return None;
    }
    Some((
        label_in(name, "subset")?.to_string(),
        label_in(name, "reason")?.to_string(),
    ))
}

/// `(subset, reason)` of a shadow-mode name
/// `wasmcustom.<prefix>.shadow.subset=.=<s>;.;reason=.=<r>;.;requests`.
pub fn parse_shadow_requests_name(name: &str) -> Option<(String, String)> {
    let rest = name
        .strip_prefix(stats_prefix())?
        .strip_suffix(";.;requests")?;
    let (prefix, _) = rest.split_once(".shadow.subset=.=")?;
    if prefix.contains('.') {
        return None;
    }
    Some((
        label_in(name, "subset")?.to_string(),
        label_in(name, "reason")?.to_string(),
    ))
}

/// `(subset, class)` of a name `wasmcustom.<prefix>.subset=.=<s>;.;class=.=<c>;.;responses`.
pub fn parse_responses_name(name: &str) -> Option<(String, String)> {
    name.strip_prefix(stats_prefix())?
        .strip_suffix(";.;responses")?;
    Some((
        label_in(name, "subset")?.to_string(),
        label_in(name, "class")?.to_string(),
    ))
}

/// The rule of a name `wasmcustom.<prefix>.rule=.=<rule>;.;rule_matches`.
pub fn parse_rule_name(name: &str) -> Option<String> {
    name.strip_prefix(stats_prefix())?
        .strip_suffix(";.;rule_matches")?;
    Some(label_in(name, "rule")?.to_string())
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Envoy {
    /// Send one request and read the filter's decision from its counters: exactly
    /// one `requests` counter and one `responses` counter move by one, a rule
    /// counter moves iff the reason is `rule`, and the upstream saw that subset.
    pub fn decide(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Decision {
        self.decide_with_response(path, headers).0
    }

    /// [`Envoy::decide`], also returning the response (its headers).
    pub fn decide_with_response(
        &mut self,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> (Decision, Response) {
        let before = self.wasm_stats();
        let r = self.get(path, headers);
        let after = self.wasm_stats();
        let d = delta(&before, &after);
        let what = format!(
            "request {path} {:?}: status {}, counters moved {d:?}",
            headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>(),
            r.status
        );
        let reqs: Vec<(String, String)> = d
            .iter()
            .filter_map(|(k, v)| parse_requests_name(k).map(|x| (x, *v)))
            .map(|(x, v)| {
                assert_eq!(v, 1, "{what}");
                x
            })
            .collect();
        assert_eq!(reqs.len(), 1, "one requests counter must move: {what}");
        let (subset, reason) = reqs[0].clone();
        let rules: Vec<String> = d
            .iter()
            .filter_map(|(k, v)| {
                let rule = parse_rule_name(k)?;
                assert_eq!(*v, 1, "{what}");
                Some(rule)
            })
            .collect();
        assert!(rules.len() <= 1, "at most one rule matches: {what}");
        let rule = rules.first().cloned();
        assert_eq!(
            rule.is_some(),
            reason == "rule",
            "a rule counter moves iff the reason is rule: {what}"
        );
        let resp: Vec<(String, String)> =
            d.keys().filter_map(|k| parse_responses_name(k)).collect();
        assert_eq!(
            resp,
            vec![(subset.clone(), status_class(r.status).to_string())],
            "one responses counter, of the chosen subset and the status class: {what}"
        );
        assert_eq!(d.len(), 2 + rules.len(), "no other counter moves: {what}");
        if r.status < 500 && !r.served_by().is_empty() {
            assert_eq!(
                r.seen_subset(),
                subset,
                "the upstream saw the subset that was counted: {what}"
            );
        }
        let decision = Decision {
            subset,
            reason,
            rule,
            status: r.status,
            served_by: r.served_by(),
        };
        (decision, r)
    }
}

/// Header list helper: `h(&[("x-user-id", "alice")])` -> `Vec<(&str, &[u8])>`.
pub fn h<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
    pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
}
