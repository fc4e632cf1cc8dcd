//! Real gRPC through the filter: PyPI `grpcio` (installed into `.venv` by
//! `make integration`) as the upstreams and the client, over HTTP/2 cleartext.
//!
//! - [`GrpcUpstreams`] ([`Opts::grpc`](super::Opts::grpc)) adds to envoy/envoy.yaml
//!   two HTTP/2 clusters, `grpc_v1` and `grpc_v2`, and in front of the shipped
//!   routes two routes for the test service's paths (`/canarytest.Echo/...`),
//!   chosen by the filter's routing header as the shipped ones are; the
//!   listener (codec AUTO) takes the client's h2c as it is. Optionally an
//!   access log of where Envoy saw each call's `grpc-status`.
//! - [`GrpcServers`]: tests/grpc/server.py, v1 and v2 on their own ports, v2
//!   optionally failing every Nth call.
//! - [`GrpcClient`]: tests/grpc/client.py, calls on request (JSON lines).
//! - [`curl_grpc`]: one hand-made gRPC call by curl, for request content types
//!   gRPC's own client cannot send (`application/grpc+proto`, gRPC-Web).
//!
//! Env var `GRPC_PYTHON`: the Python with grpcio (default `.venv/bin/python`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::{path_of, repo_root, reserve_port};

/// The test service's path prefix (tests/grpc/server.py).
pub const SERVICE_PREFIX: &str = "/canarytest.Echo/";

/// The gRPC upstreams Envoy routes the test service to.
#[derive(Clone, Debug)]
pub struct GrpcUpstreams {
    pub v1: u16,
    pub v2: u16,
    /// Write one access log line per request here: `ACCESS_LOG_FORMAT`.
    pub access_log: Option<PathBuf>,
}

/// Per request: the call id the test sent (`x-call-id`), the `grpc-status` of
/// the response headers, that of the trailers (`-` when absent), `:status`.
pub const ACCESS_LOG_FORMAT: &str =
    "call=%REQ(x-call-id)% headers=%RESP(grpc-status)% trailers=%TRAILER(grpc-status)% status=%RESPONSE_CODE%\n";

/// envoy/envoy.yaml (as the harness built it so far) with the gRPC routes,
/// clusters and access log of `up`.
pub fn add_grpc_upstreams(y: &str, up: &GrpcUpstreams) -> String {
    let file = "envoy/envoy.yaml";
    let count = |s: &str| y.matches(s).count();
    for anchor in [
        "              routes:\n",
        "  clusters:\n",
        "stat_prefix: ingress_http\n",
    ] {
        assert_eq!(count(anchor), 1, "{file}: `{anchor}` exactly once");
    }
    let route = |subset: Option<&str>, cluster: &str| {
        let mut m = serde_json::json!({ "prefix": SERVICE_PREFIX });
        if let Some(s) = subset {
            m["headers"] = serde_json::json!([
                {"name": "x-canary-subset", "string_match": {"exact": s}}
            ]);
        }
        let r = serde_json::json!({ "match": m, "route": { "cluster": cluster } });
        format!("              - {r}\n")
    };
    let routes = format!(
        "              routes:\n{}{}",
        route(Some("v2"), "grpc_v2"),
        route(None, "grpc_v1")
    );
    let cluster = |name: &str, port: u16| {
        let c = serde_json::json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} },
                },
            },
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "socket_address": { "address": "127.0.0.1", "port_value": port },
                }}}]}],
            },
        });
        format!("  - {c}\n")
    };
    let clusters = format!(
        "  clusters:\n{}{}",
        cluster("grpc_v1", up.v1),
        cluster("grpc_v2", up.v2)
    );
    let mut y =
        y.replacen("              routes:\n", &routes, 1)
            .replacen("  clusters:\n", &clusters, 1);
    if let Some(log) = &up.access_log {
        let at = y.find("stat_prefix: ingress_http\n").unwrap();
        let line_start = y[..at].rfind('\n').unwrap() + 1;
        let indent = y[line_start..at].to_string();
        let entry = serde_json::json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": path_of(log),
                "log_format": { "text_format_source": { "inline_string": ACCESS_LOG_FORMAT } },
            },
        }]);
        y.insert_str(line_start, &format!("{indent}access_log: {entry}\n"));
    }
    y
}

/// The Python that has grpcio: `GRPC_PYTHON`, else the project's `.venv`.
pub fn python() -> PathBuf {
    let p = std::env::var_os("GRPC_PYTHON")
        .map_or_else(|| repo_root().join(".venv/bin/python"), PathBuf::from);
    let ok = Command::new(&p)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import grpc (GRPC_PYTHON): run `make grpcio`, or `make integration`",
        p.display()
    );
    p
}

fn script(name: &str) -> String {
    path_of(&repo_root().join("tests/grpc").join(name))
}

/// A child process killed (and reaped) on drop, also on panic.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(mut cmd: Command, what: &'static str) -> (Proc, ChildStdin, BufReader<ChildStdout>) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the gRPC {what}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        (Proc { child, what }, stdin, stdout)
    }

    fn read_line(&mut self, out: &mut BufReader<ChildStdout>) -> String {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap();
        if n == 0 {
            let status = self.child.wait().unwrap();
            panic!(
                "the gRPC {} exited ({status}); its stderr is above",
                self.what
            );
        }
        line
    }
}

/// tests/grpc/server.py: v1 and v2 as two gRPC servers on free ports.
pub struct GrpcServers {
    proc: Proc,
    _stdin: ChildStdin,
    pub v1: u16,
    pub v2: u16,
}

impl GrpcServers {
    /// Healthy servers.
    pub fn start() -> GrpcServers {
        GrpcServers::start_failing(0, "UNAVAILABLE")
    }

    /// v2 ends every `every`th call (that asks for nothing) with `code`,
    /// as a trailers-only response (0: never).
    pub fn start_failing(every: u32, code: &str) -> GrpcServers {
        let (v1, v2) = (reserve_port(), reserve_port());
        let mut cmd = Command::new(python());
        cmd.arg(script("server.py")).args([
            "--v1-port",
            &v1.to_string(),
            "--v2-port",
            &v2.to_string(),
            "--v2-fail-every",
            &every.to_string(),
            "--v2-fail-code",
            code,
        ]);
        let (mut proc, stdin, mut out) = Proc::spawn(cmd, "server");
        let line = proc.read_line(&mut out);
        assert_eq!(line.trim(), format!("ready {v1} {v2}"), "server.py said");
        GrpcServers {
            proc,
            _stdin: stdin,
            v1,
            v2,
        }
    }

    /// The upstreams for [`Opts::grpc`](super::Opts::grpc).
    pub fn upstreams(&self, access_log: Option<&Path>) -> GrpcUpstreams {
        GrpcUpstreams {
            v1: self.v1,
            v2: self.v2,
            access_log: access_log.map(Path::to_path_buf),
        }
    }

    /// Whether the server process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }
}

/// One call for [`GrpcClient`].
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// `Call` (unary, the default) or `Stream` (server streaming).
    pub method: &'static str,
    pub metadata: Vec<(String, String)>,
    /// The client's deadline in seconds (default 20).
    pub timeout: Option<f64>,
    /// Cancel the call from the client after this many seconds.
    pub cancel_after: Option<f64>,
}

impl Call {
    pub fn unary() -> Call {
        Call {
            method: "Call",
            ..Call::default()
        }
    }
    pub fn stream() -> Call {
        Call {
            method: "Stream",
            ..Call::default()
        }
    }
    pub fn md(mut self, key: &str, value: &str) -> Call {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }
    pub fn timeout(mut self, seconds: f64) -> Call {
        self.timeout = Some(seconds);
        self
    }
    pub fn cancel_after(mut self, seconds: f64) -> Call {
        self.cancel_after = Some(seconds);
        self
    }
    /// Ask the server to end with `code` (a gRPC status name), sent as `mode`
    /// (`trailers-only`, `after-metadata`, `after-message`).
    pub fn status(self, code: &str, mode: &str) -> Call {
        self.md("x-want-status", code).md("x-want-mode", mode)
    }
}

/// What a call ended with, as the client saw it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The status code's name (`OK`, `UNAVAILABLE`, ...).
    pub code: String,
    pub details: String,
    /// The response's initial metadata (empty for a trailers-only response).
    pub initial: serde_json::Map<String, serde_json::Value>,
    pub trailing: serde_json::Map<String, serde_json::Value>,
    pub messages: u64,
}

impl Outcome {
    /// The subset whose server answered (`x-served-by` in the trailers).
    pub fn served_by(&self) -> String {
        self.trailing
            .get("x-served-by")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    }
    /// The routing header the server received.
    pub fn seen_subset(&self) -> String {
        self.trailing
            .get("x-seen-subset")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// tests/grpc/client.py, connected to `target` over `channels` HTTP/2 connections.
pub struct GrpcClient {
    proc: Proc,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl GrpcClient {
    pub fn connect(target: SocketAddr, channels: u32) -> GrpcClient {
        let mut cmd = Command::new(python());
        cmd.arg(script("client.py")).args([
            "--target",
            &target.to_string(),
            "--channels",
            &channels.to_string(),
        ]);
        let (proc, stdin, out) = Proc::spawn(cmd, "client");
        GrpcClient { proc, stdin, out }
    }

    pub fn call(&mut self, call: &Call) -> Outcome {
        self.calls(std::slice::from_ref(call)).pop().unwrap()
    }

    /// The calls one after the other, in order (sent in chunks, so neither
    /// pipe fills up).
    pub fn calls(&mut self, calls: &[Call]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(50) {
            let mut text = String::new();
            for c in chunk {
                let req = serde_json::json!({
                    "method": c.method,
                    "metadata": c.metadata.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                    "timeout": c.timeout.unwrap_or(20.0),
                    "cancel_after": c.cancel_after,
                });
                text.push_str(&req.to_string());
                text.push('\n');
            }
            self.stdin.write_all(text.as_bytes()).unwrap();
            self.stdin.flush().unwrap();
            for _ in chunk {
                let line = self.proc.read_line(&mut self.out);
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client.py said {line:?}: {e}"));
                let map = |k: &str| v[k].as_object().cloned().unwrap_or_default();
                outcomes.push(Outcome {
                    code: v["code"].as_str().unwrap().to_string(),
                    details: v["details"].as_str().unwrap_or_default().to_string(),
                    initial: map("initial"),
                    trailing: map("trailing"),
                    messages: v["messages"].as_u64().unwrap(),
                });
            }
        }
        outcomes
    }
}

/// A response as curl saw it over HTTP/2: `:status`, headers, trailers
/// (names lowercased).
#[derive(Debug, Clone)]
pub struct CurlResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
}

impl CurlResponse {
    /// A header's value, else the trailer's.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .chain(&self.trailers)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One unary call of the test service made by hand with curl (h2c, prior
/// knowledge): a POST of one gRPC-framed message `ping` with this
/// `content-type` and the extra headers.
pub fn curl_grpc(
    listener: SocketAddr,
    content_type: &str,
    headers: &[(&str, &str)],
) -> CurlResponse {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "--http2-prior-knowledge",
    ])
    .args(["-H", &format!("content-type: {content_type}")])
    .args(["-H", "te: trailers"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.args(["--data-binary", "@-"])
        .arg(format!("http://{listener}{SERVICE_PREFIX}Call"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\x00\x00\x00\x00\x04ping")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // curl writes the headers, a blank line, then the trailers (if any).
    let mut blocks = text.split("\r\n\r\n");
    let head = blocks.next().unwrap_or_default();
    let tail = blocks.next().unwrap_or_default();
    let pairs = |block: &str| -> Vec<(String, String)> {
        block
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    };
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("curl: no status in {text:?}"));
    CurlResponse {
        status,
        headers: pairs(head.split_once("\r\n").map_or("", |x| x.1)),
        trailers: pairs(tail),
    }
}
