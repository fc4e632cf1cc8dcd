#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! One user, one cohort across two services, end to end with two real Envoys:
//!
//! ```text
//! client -> gateway Envoy (filter A: v1 90 / v2 10, key x-user-id, rules qa + staff, cohort {})
//!        -> api v1 | api v2   (the app stub below, twice; it forwards ONLY `baggage`)
//!        -> sidecar Envoy (filter B: v1 95 / v2 5, key baggage canary-bucket,
//!                          rule forced: baggage canary-force = v2, cohort {trust_incoming: true})
//!        -> payments v1 | payments v2   (stubs echoing what they received)
//! ```
//!
//! It proves what the `cohort` block promises to a mesh, with the sidecar seeing
//! no user id, no token and no QA header, only the baggage the gateway wrote:
//!
//! - (a) nested cohorts: everyone on payments v2 (5 %) is on api v2 (10 %), each
//!   user on the buckets the documented hash gives, the sidecar deciding by the
//!   carried bucket (reason `hash`, never at random);
//! - (b) a subset forced at the gateway (QA header, JWT `staff` claim) is kept on
//!   the next hop by a baggage rule;
//! - (c) a client cannot choose its cohort: client-sent `canary-bucket` /
//!   `canary-force` members change nothing and never reach the next hop;
//! - (d) everyone else's baggage members pass byte for byte and in order;
//! - and, as a negative control, that these checks do fail when the sidecar does
//!   not trust the gateway's members (`trust_incoming: false`): cohorts no longer
//!   nest and forced requests are no longer forced downstream.
//!
//! Everything listens on ports from the harness's `reserve_port()`; Envoys and
//! stubs are stopped on drop, also when an assertion fails.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canary_router::bucket::{bucket_of, seed_hash};
use common::*;
use serde_json::{json, Value};

const SEED: &str = "mesh";
const USERS: usize = 2000;
/// How long an Envoy may take to become ready (V8 compiles the module).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stub waits on an idle keep-alive connection before closing it.
const STUB_IDLE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The two filter configurations
// ---------------------------------------------------------------------------

/// Config A, the gateway's: users by `x-user-id`, QA and staff forced onto v2,
/// cohort members written (client copies stripped: the defaults).
fn gateway_config() -> Value {
    json!({
        "subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": SEED},
        "rules": [
            {"name": "qa", "subset": "v2",
             "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "staff", "subset": "v2",
             "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
        ],
        "cohort": {},
    })
}

/// Config B, the payments sidecar's: the bucket the gateway wrote, a subset it
/// forced, trusted (`trust_incoming`) or not (the negative control).
fn sidecar_config(trust_incoming: bool) -> Value {
    json!({
        "subsets": [{"name": "v1", "weight": 95}, {"name": "v2", "weight": 5}],
        "sticky": {"keys": [{"baggage": "canary-bucket"}], "seed": SEED},
        "rules": [
            {"name": "forced", "subset": "v2",
             "match": {"baggage": {"name": "canary-force", "exact": "v2"}}},
        ],
        "cohort": {"trust_incoming": trust_incoming},
    })
}

/// The model: a user's bucket under the shared seed (docs/configuration.md).
fn bucket(user: &str) -> u16 {
    bucket_of(user.as_bytes(), seed_hash(SEED))
}

/// The subset owning `bucket` when the canary v2 has `v2_percent` %: the top
/// buckets `[10000 - 100 * v2_percent, 10000)`.
fn by_weight(bucket: u16, v2_percent: u16) -> &'static str {
    if bucket >= 10_000 - 100 * v2_percent {
        "v2"
    } else {
        "v1"
    }
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

// ---------------------------------------------------------------------------
// Stub HTTP/1.1 servers (std::net, a thread per connection)
// ---------------------------------------------------------------------------

/// One request as a stub received it: lowercase names, values as sent (after
/// the separator's leading whitespace), in order, repeats kept.
struct StubRequest {
    target: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl StubRequest {
    fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    fn first(&self, name: &str) -> Option<String> {
        self.values(name).into_iter().next()
    }
}

fn bad_request(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Read one request; `None` when the peer closed the connection between requests.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<StubRequest>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let request_line = String::from_utf8_lossy(&line).trim_end().to_string();
    let target = request_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| bad_request(format!("bad request line {request_line:?}")))?
        .to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(bad_request("connection closed inside the headers".into()));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| bad_request(format!("header line without ':': {line:?}")))?;
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let mut value = &line[colon + 1..];
        while value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            value = &value[1..];
        }
        headers.push((name, value.to_vec()));
    }
    let request = StubRequest { target, headers };
    if request.first("transfer-encoding").is_some() {
        return Err(bad_request(
            "a chunked request body: not expected here".into(),
        ));
    }
    if let Some(len) = request.first("content-length") {
        let len: u64 = len
            .trim()
            .parse()
            .map_err(|_| bad_request(format!("bad content-length {len:?}")))?;
        std::io::copy(&mut r.by_ref().take(len), &mut std::io::sink())?;
    }
    Ok(Some(request))
}

fn write_json(stream: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// What a stub does with a request.
#[derive(Clone)]
enum Role {
    /// A payments backend: answers with what it received.
    Payments { name: &'static str },
    /// The api app: calls payments through the sidecar Envoy listening on
    /// port `sidecar`, forwarding ONLY the `baggage` header(s) it received, and
    /// answers with what it and payments saw.
    App { name: &'static str, sidecar: u16 },
}

/// What one stub received: its name, the routing header, the `baggage` lines,
/// every header name.
fn seen(name: &str, req: &StubRequest) -> Value {
    json!({
        "served_by": name,
        "subset": req.first("x-canary-subset"),
        "baggage": req.values("baggage"),
        "header_names": req.headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "target": req.target,
    })
}

/// A stub server on a reserved port, stopped (and its port closed) on drop.
struct Stub {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Stub {
    fn start(role: Role) -> Stub {
        let port = reserve_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("stub: binding reserved port {port}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let role = role.clone();
                std::thread::spawn(move || serve_connection(conn, &role));
            }
        });
        Stub {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and closes the port.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Serve requests on one connection until the peer closes it. An error is
/// answered 502 with its text (the test shows it), never a silent drop.
fn serve_connection(conn: TcpStream, role: &Role) {
    let _ = conn.set_read_timeout(Some(STUB_IDLE));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    // The app's keep-alive connection to the sidecar.
    let mut to_sidecar = match role {
        Role::App { sidecar, .. } => Some(Client::new(([127, 0, 0, 1], *sidecar).into())),
        Role::Payments { .. } => None,
    };
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let _ = write_json(&mut out, 502, &json!({"stub_error": e.to_string()}));
                return;
            }
        };
        let (status, body) = match role {
            Role::Payments { name } => (200, seen(name, &req)),
            Role::App { name, .. } => {
                let client = to_sidecar.as_mut().unwrap();
                let baggage: Vec<(&str, &[u8])> = req
                    .headers
                    .iter()
                    .filter(|(k, _)| k == "baggage")
                    .map(|(_, v)| ("baggage", v.as_slice()))
                    .collect();
                let mut body = seen(name, &req);
                match client.request("GET", "/pay", &baggage) {
                    Ok(r) if r.status == 200 => {
                        body["payments"] = serde_json::from_slice(&r.body).unwrap_or_else(
                            |e| json!({"bad_json": e.to_string(), "body": r.body_str()}),
                        );
                        (200, body)
                    }
                    Ok(r) => {
                        body["payments_error"] =
                            format!("status {}: {}", r.status, r.body_str()).into();
                        (502, body)
                    }
                    Err(e) => {
                        body["payments_error"] = format!("calling the sidecar: {e}").into();
                        (502, body)
                    }
                }
            }
        };
        if write_json(&mut out, status, &body).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The Envoys: the harness's envoy/envoy.yaml, upstreams on the stubs' ports
// ---------------------------------------------------------------------------

/// An Envoy on the shipped envoy.yaml (built by the harness, with the build
/// under test: `.wasm` or dynamic module) whose v1/v2 clusters are the stubs.
/// Without envoy/backends.yaml: the stubs are the upstreams. Killed on drop.
struct ChainEnvoy {
    name: &'static str,
    child: Child,
    dir: PathBuf,
    ports: Ports,
}

impl ChainEnvoy {
    fn start(
        name: &'static str,
        plugin_config: &Value,
        opts: &Opts,
        v1: &Stub,
        v2: &Stub,
    ) -> ChainEnvoy {
        let ports = Ports {
            admin: reserve_port(),
            listener: reserve_port(),
            v1: v1.port,
            v2: v2.port,
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "canary-router-cohort-{name}-{}-{}-{nanos}",
            std::process::id(),
            ports.listener
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let config = dir.join("envoy.yaml");
        fs::write(
            &config,
            build_main_config(&plugin_config.to_string(), opts, ports),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = fs::File::create(dir.join("envoy.log")).unwrap();
        let mut command = Command::new(envoy_bin());
        if is_native() {
            command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", host::native_dir());
        }
        let child = command
            // envoy.yaml names envoy/jwks.json relative to the repository.
            .current_dir(repo_root())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", envoy_bin().display()));
        let mut envoy = ChainEnvoy {
            name,
            child,
            dir,
            ports,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                panic!(
                    "{name} Envoy exited ({status}) before it was ready:\n{}",
                    envoy.log_tail(60)
                );
            }
            if one_shot(envoy.admin(), "GET", "/ready", &[]).is_ok_and(|r| r.status == 200) {
                return envoy;
            }
            assert!(
                Instant::now() < deadline,
                "{name} Envoy not ready within {STARTUP_TIMEOUT:?}:\n{}",
                envoy.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.ports.admin).into()
    }

    fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("][info][main]"))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The filter's counters (`wasmcustom.` or `dynamicmodulescustom.` names).
    fn counters(&self) -> BTreeMap<String, u64> {
        let prefix = stats_prefix();
        let path = format!("/stats?filter=%5E{}%5C.", prefix.trim_end_matches('.'));
        let r = one_shot(self.admin(), "GET", &path, &[])
            .unwrap_or_else(|e| panic!("{} admin GET {path}: {e}", self.name));
        assert_eq!(r.status, 200, "{} admin {path}", self.name);
        parse_stats(&r.body_str())
    }
}

impl Drop for ChainEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} Envoy log kept in {} (tail) ---\n{}\n--- end ---",
                self.name,
                self.dir.display(),
                self.log_tail(30)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Per (subset, reason), how many `requests` moved; and per rule, its matches.
fn decisions(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> (BTreeMap<(String, String), u64>, BTreeMap<String, u64>) {
    let moved = delta(before, after);
    let requests = moved
        .iter()
        .filter_map(|(k, v)| parse_requests_name(k).map(|sr| (sr, *v)))
        .collect();
    let rules = moved
        .iter()
        .filter_map(|(k, v)| parse_rule_name(k).map(|r| (r, *v)))
        .collect();
    (requests, rules)
}

fn counts(pairs: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    pairs
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(s, r, n)| ((s.to_string(), r.to_string()), *n))
        .collect()
}

// ---------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------

/// Both Envoys and the four stubs. Fields drop in order: the Envoys first
/// (their upstream connections close), then the stubs.
struct Chain {
    gateway: ChainEnvoy,
    sidecar: ChainEnvoy,
    _apps: [Stub; 2],
    _payments: [Stub; 2],
    client: Client,
}

impl Chain {
    fn start(sidecar: &Value) -> Chain {
        let t0 = Instant::now();
        let payments = [
            Stub::start(Role::Payments { name: "v1" }),
            Stub::start(Role::Payments { name: "v2" }),
        ];
        // Inside the mesh there is no end-user token: no jwt_authn.
        let sidecar = ChainEnvoy::start(
            "sidecar",
            sidecar,
            &Opts::default().without_jwt_authn(),
            &payments[0],
            &payments[1],
        );
        let app = |name| {
            Stub::start(Role::App {
                name,
                sidecar: sidecar.ports.listener,
            })
        };
        let apps = [app("v1"), app("v2")];
        // The edge verifies tokens (jwt_authn with envoy/jwks.json).
        let gateway = ChainEnvoy::start(
            "gateway",
            &gateway_config(),
            &Opts::default(),
            &apps[0],
            &apps[1],
        );
        let client = Client::new(([127, 0, 0, 1], gateway.ports.listener).into());
        println!(
            "[{}] chain up in {:.1?}: gateway :{} -> api v1 :{} / v2 :{} -> sidecar :{} -> payments v1 :{} / v2 :{}",
            if is_native() { "native" } else { "wasm" },
            t0.elapsed(),
            gateway.ports.listener,
            apps[0].port,
            apps[1].port,
            sidecar.ports.listener,
            payments[0].port,
            payments[1].port
        );
        Chain {
            gateway,
            sidecar,
            _apps: apps,
            _payments: payments,
            client,
        }
    }

    /// One request through the whole chain, with what each hop saw.
    fn send(&mut self, headers: &[(&str, &[u8])]) -> Trip {
        let shown: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
            .collect();
        let r = self
            .client
            .request("GET", "/checkout", headers)
            .unwrap_or_else(|e| panic!("request {shown:?} to the gateway: {e}"));
        assert_eq!(r.status, 200, "request {shown:?}: body {}", r.body_str());
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "request {shown:?}: app answered no JSON ({e}): {}",
                r.body_str()
            )
        });
        let hop = |v: &Value, what: &str| -> Hop {
            let text = |k: &str| v[k].as_str().map(str::to_string);
            let hop = Hop {
                served_by: text("served_by")
                    .unwrap_or_else(|| panic!("{what}: no served_by in {body}")),
                subset: text("subset").unwrap_or_else(|| {
                    panic!("{what} received no x-canary-subset (request {shown:?}): {body}")
                }),
                baggage: v["baggage"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: no baggage list in {body}"))
                    .iter()
                    .map(|b| b.as_str().unwrap().to_string())
                    .collect(),
                header_names: v["header_names"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: no header names in {body}"))
                    .iter()
                    .map(|b| b.as_str().unwrap().to_string())
                    .collect(),
            };
            // The route table: x-canary-subset v2 -> cluster v2, else v1.
            let want = if hop.subset == "v2" { "v2" } else { "v1" };
            assert_eq!(
                hop.served_by, want,
                "{what} served by {} with x-canary-subset {} (request {shown:?})",
                hop.served_by, hop.subset
            );
            hop
        };
        let trip = Trip {
            api: hop(&body, "api"),
            payments: hop(&body["payments"], "payments"),
        };
        // The sidecar decided from the baggage alone: nothing else reached it.
        for name in [
            "x-user-id",
            "authorization",
            "x-canary",
            "x-jwt-payload",
            "cookie",
        ] {
            assert!(
                !trip.payments.header_names.contains(&name.to_string()),
                "{name} reached payments (request {shown:?}): {:?}",
                trip.payments.header_names
            );
        }
        trip
    }
}

/// What one hop's upstream saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    served_by: String,
    subset: String,
    /// Each `baggage` header line it received, as received.
    baggage: Vec<String>,
    header_names: Vec<String>,
}

#[derive(Debug, Clone)]
struct Trip {
    api: Hop,
    payments: Hop,
}

fn keyed(user: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![("x-user-id", user.as_bytes().to_vec())]
}

fn as_refs<'a>(headers: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    headers.iter().map(|(k, v)| (*k, v.as_slice())).collect()
}

/// Users on payments v2 who are not on api v2.
fn nesting_violations(trips: &[(String, Trip)]) -> Vec<String> {
    trips
        .iter()
        .filter(|(_, t)| t.payments.subset == "v2" && t.api.subset != "v2")
        .map(|(u, _)| u.clone())
        .collect()
}

fn share(n: usize, of: usize) -> f64 {
    100.0 * n as f64 / of as f64
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn one_cohort_from_the_gateway_to_payments() {
    let mut chain = Chain::start(&sidecar_config(true));

    // (a) 2,000 users, keyed by x-user-id at the gateway only.
    let g0 = chain.gateway.counters();
    let s0 = chain.sidecar.counters();
    let t0 = Instant::now();
    let mut trips: Vec<(String, Trip)> = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let u = user(i);
        let trip = chain.send(&as_refs(&keyed(&u)));
        let b = bucket(&u);
        assert_eq!(
            (trip.api.subset.as_str(), trip.payments.subset.as_str()),
            (by_weight(b, 10), by_weight(b, 5)),
            "{u} (bucket {b}): (api, payments) subsets"
        );
        // The gateway writes the bucket; the sidecar, trusting it, writes the
        // same value back in its place (one member, not two).
        let member = format!("canary-bucket={b}");
        assert_eq!(trip.api.baggage, [member.as_str()], "{u}: baggage at api");
        assert_eq!(
            trip.payments.baggage,
            [member.as_str()],
            "{u}: baggage at payments"
        );
        trips.push((u, trip));
    }
    let took = t0.elapsed();
    let api_v2 = trips.iter().filter(|(_, t)| t.api.subset == "v2").count();
    let pay_v2 = trips
        .iter()
        .filter(|(_, t)| t.payments.subset == "v2")
        .count();
    let both_v2 = trips
        .iter()
        .filter(|(_, t)| t.api.subset == "v2" && t.payments.subset == "v2")
        .count();
    let violations = nesting_violations(&trips);
    println!(
        "(a) {USERS} users in {took:.1?} ({:.2} ms per chained request): \
         api v1 {} / v2 {api_v2} ({:.2} %), payments v1 {} / v2 {pay_v2} ({:.2} %), \
         on both canaries {both_v2}, nested violations {}",
        took.as_secs_f64() * 1000.0 / USERS as f64,
        USERS - api_v2,
        share(api_v2, USERS),
        USERS - pay_v2,
        share(pay_v2, USERS),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "on payments v2 but not on api v2: {violations:?}"
    );
    assert!(
        (share(api_v2, USERS) - 10.0).abs() <= 2.0,
        "api v2 share {:.2} % (want 10 ± 2)",
        share(api_v2, USERS)
    );
    assert!(
        (share(pay_v2, USERS) - 5.0).abs() <= 2.0,
        "payments v2 share {:.2} % (want 5 ± 2)",
        share(pay_v2, USERS)
    );
    // Both filters counted every user by hash: the sidecar keyed on the carried
    // bucket for all of them, never drew one at random.
    let (g, g_rules) = decisions(&g0, &chain.gateway.counters());
    let (s, s_rules) = decisions(&s0, &chain.sidecar.counters());
    let api_v2 = api_v2 as u64;
    let pay_v2 = pay_v2 as u64;
    let n = USERS as u64;
    assert_eq!(
        g,
        counts(&[("v1", "hash", n - api_v2), ("v2", "hash", api_v2)]),
        "gateway decisions"
    );
    assert_eq!(
        s,
        counts(&[("v1", "hash", n - pay_v2), ("v2", "hash", pay_v2)]),
        "sidecar decisions"
    );
    assert!(g_rules.is_empty() && s_rules.is_empty(), "no rule matched");

    // (b) Forced at the gateway, kept at payments: 50 users by the QA header,
    // 50 by a verified `staff` token, all of them off the 10 % canary by hash.
    let off_canary: Vec<String> = trips
        .iter()
        .filter(|(_, t)| t.api.subset == "v1")
        .map(|(u, _)| u.clone())
        .take(100)
        .collect();
    assert_eq!(off_canary.len(), 100);
    let g0 = chain.gateway.counters();
    let s0 = chain.sidecar.counters();
    let t0 = Instant::now();
    for (k, u) in off_canary.iter().enumerate() {
        let mut headers = keyed(u);
        let how = if k < 50 {
            headers.push(("x-canary", b"always".to_vec()));
            "qa"
        } else {
            let token = sign_hs256(&claims(json!({"sub": u, "groups": ["dev", "staff"]})));
            headers.push(("authorization", bearer(&token)));
            "staff"
        };
        let trip = chain.send(&as_refs(&headers));
        assert_eq!(
            (trip.api.subset.as_str(), trip.payments.subset.as_str()),
            ("v2", "v2"),
            "{u} forced by {how}: (api, payments)"
        );
        // A rule decision has no bucket ("when the decision has one"): only
        // the forced subset travels, and the sidecar's own rule writes it again.
        assert_eq!(trip.api.baggage, ["canary-force=v2"], "{u} ({how}) at api");
        assert_eq!(
            trip.payments.baggage,
            ["canary-force=v2"],
            "{u} ({how}) at payments"
        );
    }
    let (g, g_rules) = decisions(&g0, &chain.gateway.counters());
    let (s, s_rules) = decisions(&s0, &chain.sidecar.counters());
    println!(
        "(b) 50 QA + 50 staff users off the canary by hash, forced onto v2 on both hops in {:.1?}: \
         gateway rules {g_rules:?}, sidecar rules {s_rules:?}",
        t0.elapsed()
    );
    assert_eq!(g, counts(&[("v2", "rule", 100)]), "gateway decisions");
    assert_eq!(
        g_rules,
        BTreeMap::from([("qa".to_string(), 50), ("staff".to_string(), 50)])
    );
    assert_eq!(s, counts(&[("v2", "rule", 100)]), "sidecar decisions");
    assert_eq!(s_rules, BTreeMap::from([("forced".to_string(), 100)]));

    // (c) A client's own cohort members change nothing: the gateway removes
    // them and reads them as absent; only its own bucket reaches payments.
    let g0 = chain.gateway.counters();
    let s0 = chain.sidecar.counters();
    let t0 = Instant::now();
    let mut forged_api_v2 = 0;
    for (i, (u, without)) in trips[..200].iter().enumerate() {
        let mut headers = keyed(u);
        // Every other one hides them in a header that is not text (Envoy
        // passes bytes over 0x7F on): it is replaced, never passed on.
        let forged: &[u8] = if i % 2 == 0 {
            b"canary-bucket=9999,canary-force=v2"
        } else {
            b"canary-force=v2,x=\xff,canary-bucket=9999"
        };
        headers.push(("baggage", forged.to_vec()));
        let trip = chain.send(&as_refs(&headers));
        assert_eq!(
            (&trip.api.subset, &trip.payments.subset),
            (&without.api.subset, &without.payments.subset),
            "{u} with a client-sent cohort: (api, payments) as without it"
        );
        let member = format!("canary-bucket={}", bucket(u));
        assert_eq!(trip.api.baggage, [member.as_str()], "{u}: baggage at api");
        assert_eq!(
            trip.payments.baggage,
            [member.as_str()],
            "{u}: baggage at payments"
        );
        forged_api_v2 += usize::from(trip.api.subset == "v2");
    }
    let (g, g_rules) = decisions(&g0, &chain.gateway.counters());
    let (s, s_rules) = decisions(&s0, &chain.sidecar.counters());
    println!(
        "(c) 200 users sending `canary-bucket=9999,canary-force=v2` (half in a header that is not text): {forged_api_v2} on api v2, \
         as without it; payments saw only the gateway's bucket ({:.1?})",
        t0.elapsed()
    );
    assert!(g_rules.is_empty() && s_rules.is_empty(), "no rule matched");
    assert!(
        g.keys().chain(s.keys()).all(|(_, reason)| reason == "hash"),
        "every decision by hash: gateway {g:?}, sidecar {s:?}"
    );

    // (d) Everyone else's members, byte for byte and in order, ours appended.
    let u = "user-7";
    let ours = format!("canary-bucket={}", bucket(u));
    let cases: [(&str, Vec<&str>, String); 4] = [
        (
            "OWS, properties and percent-encoding kept",
            vec!["userId=alice;prop=1,  x=%20y ,tenant=acme"],
            format!("userId=alice;prop=1,  x=%20y ,tenant=acme,{ours}"),
        ),
        (
            "a client's cohort members cut out from among them",
            vec!["userId=alice;prop=1,canary-bucket=9999,  x=%20y ,canary-force=v2;p,tenant=acme"],
            format!("userId=alice;prop=1,  x=%20y ,tenant=acme,{ours}"),
        ),
        // Envoy's HTTP/1 codec drops the OWS around a field value (RFC 9110
        // 5.5): these leading/trailing spaces never reach the filter; the
        // spaces inside the list do.
        (
            "OWS around the whole value",
            vec!["   a=1 ,  b=2   "],
            format!("a=1 ,  b=2,{ours}"),
        ),
        // A list split over two header lines is one list (RFC 9110 5.3): the
        // filter reads the lines joined with `,` in the order sent, and sends
        // the merged list on as ONE line. (Envoy alone forwards the two lines
        // as two, each trimmed of OWS; it does not coalesce `baggage`.)
        (
            "a list over two header lines",
            vec![
                "userId=alice;prop=1",
                "canary-force=v2,  x=%20y ,tenant=acme",
            ],
            format!("userId=alice;prop=1,  x=%20y ,tenant=acme,{ours}"),
        ),
    ];
    for (what, lines, want) in &cases {
        let mut headers = keyed(u);
        for line in lines {
            headers.push(("baggage", line.as_bytes().to_vec()));
        }
        let trip = chain.send(&as_refs(&headers));
        assert_eq!(
            trip.api.baggage,
            [want.as_str()],
            "{what}: client sent {lines:?}, api received"
        );
        assert_eq!(
            trip.payments.baggage,
            [want.as_str()],
            "{what}: client sent {lines:?}, payments received"
        );
        println!(
            "(d) {what}: {lines:?} -> payments got {:?}",
            trip.payments.baggage[0]
        );
    }
}

/// The negative control: the same chain with a sidecar that does not trust the
/// gateway's members (`trust_incoming: false`, the edge's setting). The bucket
/// and the force are then removed and read as absent, so the sidecar draws a
/// random bucket: the checks above must fail, and do.
#[test]
fn without_trust_the_cohort_does_not_carry_over() {
    let mut chain = Chain::start(&sidecar_config(false));
    let s0 = chain.sidecar.counters();
    let t0 = Instant::now();
    let mut trips = Vec::new();
    // Users off the api canary by hash (model), on payments v1 if nested.
    let users: Vec<String> = (0..USERS)
        .map(user)
        .filter(|u| by_weight(bucket(u), 10) == "v1")
        .take(500)
        .collect();
    for u in &users {
        let trip = chain.send(&as_refs(&keyed(u)));
        assert_eq!(trip.api.subset, "v1", "{u} at api");
        trips.push((u.clone(), trip));
    }
    let violations = nesting_violations(&trips);
    // Forced at the gateway: no longer forced at the sidecar.
    let mut forced_pay_v2 = 0;
    for u in &users[..50] {
        let mut headers = keyed(u);
        headers.push(("x-canary", b"always".to_vec()));
        let trip = chain.send(&as_refs(&headers));
        assert_eq!(trip.api.subset, "v2", "{u} forced by qa at api");
        assert_eq!(trip.api.baggage, ["canary-force=v2"], "{u} at api");
        assert!(
            !trip
                .payments
                .baggage
                .iter()
                .any(|l| l.contains("canary-force")),
            "{u}: the untrusting sidecar removes the force: {:?}",
            trip.payments.baggage
        );
        forced_pay_v2 += usize::from(trip.payments.subset == "v2");
    }
    let (s, s_rules) = decisions(&s0, &chain.sidecar.counters());
    println!(
        "(negative) untrusting sidecar: of {} api-v1 users {} on payments v2 (nesting broken), \
         of 50 QA-forced {forced_pay_v2} on payments v2; sidecar decisions {s:?} ({:.1?})",
        users.len(),
        violations.len(),
        t0.elapsed()
    );
    assert!(
        !violations.is_empty(),
        "a sidecar that ignores the carried bucket must break the nesting for someone"
    );
    assert!(
        s_rules.is_empty(),
        "the force rule must not match: {s_rules:?}"
    );
    assert!(
        forced_pay_v2 < 50,
        "without trust, QA-forced requests must not all reach payments v2"
    );
    assert!(
        s.keys().all(|(_, reason)| reason == "random"),
        "the untrusting sidecar has no key: every decision random, got {s:?}"
    );
}
