//! `istio/rollout.sh` against a fake `kubectl` (a python3 script that logs its
//! arguments and applies merge patches to a WasmPlugin kept in a file) and a fake
//! Prometheus (a local HTTP server answering `/api/v1/query` per scenario): the
//! patches it sends, in order; the queries (the filter's own series, with
//! `--selector` in every one); the one line per checked step; the rollback on a
//! bad success rate, a bad p99 and missing data, saying which metric was missing
//! and why (no series vs no traffic); `--dry-run` touching nothing.
//! tests/rollout_live.rs runs the same script against a real Envoy and Prometheus.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// The WasmPlugin the fake cluster starts with: v1 90 / v2 10 and other fields.
const PLUGIN: &str = r#"{
  "apiVersion": "extensions.istio.io/v1alpha1",
  "kind": "WasmPlugin",
  "metadata": {"name": "canary-router", "namespace": "istio-system", "resourceVersion": "4711"},
  "spec": {
    "url": "oci://registry.example/canary-router:0.1.0",
    "phase": "AUTHZ",
    "failStrategy": "FAIL_OPEN",
    "pluginConfig": {
      "subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
      "default_subset": "v1",
      "header": "x-canary-subset",
      "sticky": {"keys": [{"header": "x-user-id"}], "seed": "api-2026-11"},
      "rules": [{"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}}]
    }
  }
}"#;

/// (After a `#!` line naming python3.) Logs each call (arguments joined by spaces) to kubectl.log; `get ... -o json`
/// prints the state; `patch --type merge -p P` applies P (RFC 7386) to the state
/// and logs P with sorted keys to patches.log. Anything else fails.
const FAKE_KUBECTL: &str = r#"
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "kubectl.log"), "a") as f:
    f.write(" ".join(args) + "\n")
state_path = os.path.join(here, "state.json")
with open(state_path) as f:
    state = json.load(f)

def merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge(target.get(k), v)
    return target

def opt(name):
    return args[args.index(name) + 1] if name in args else None

if args[:3] == ["get", "wasmplugin", "canary-router"] and opt("-n") == "istio-system" and opt("-o") == "json":
    print(json.dumps(state, indent=2))
    sys.exit(0)
if args[:3] == ["patch", "wasmplugin", "canary-router"] and opt("-n") == "istio-system" and opt("--type") == "merge":
    patch = json.loads(opt("-p"))
    state = merge(state, patch)
    with open(state_path, "w") as f:
        json.dump(state, f, sort_keys=True, separators=(",", ":"))
    with open(os.path.join(here, "patches.log"), "a") as f:
        f.write(json.dumps(patch, sort_keys=True, separators=(",", ":")) + "\n")
    print("wasmplugin.extensions.istio.io/canary-router patched")
    sys.exit(0)
print("fake kubectl: unexpected call: %r" % args, file=sys.stderr)
sys.exit(1)
"#;

/// One value per query, in order (the last one repeats); `None` is an empty result.
type Answers = Vec<Option<&'static str>>;

/// What the fake Prometheus answers, per kind of query.
#[derive(Clone)]
struct Scenario {
    success: Answers,
    p99: Answers,
    share: Answers,
    /// `count(canary_responses{...})`: whether the success rate's series exist.
    success_series: Answers,
    /// `count(canary_response_duration_ms_bucket{...})`: the p99's.
    latency_series: Answers,
}

impl Scenario {
    fn new(success: Answers, p99: Answers) -> Scenario {
        Scenario {
            success,
            p99,
            share: vec![Some("0.1012")],
            success_series: vec![Some("4")],
            latency_series: vec![Some("20")],
        }
    }
}

struct FakePrometheus {
    url: String,
    /// Every query received, decoded.
    queries: Arc<Mutex<Vec<String>>>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Answers each query from the scenario's list for its kind, told apart by how
/// it starts; anything else gets an empty result.
fn fake_prometheus(success: Answers, p99: Answers) -> FakePrometheus {
    fake_prometheus_with(Scenario::new(success, p99))
}

fn fake_prometheus_with(scenario: Scenario) -> FakePrometheus {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&queries);
    thread::spawn(move || {
        let kinds: [(&str, &Answers); 5] = [
            ("sum(rate(canary_responses{", &scenario.success),
            ("histogram_quantile(0.99, ", &scenario.p99),
            ("sum(rate(canary_requests{", &scenario.share),
            ("count(canary_responses{", &scenario.success_series),
            (
                "count(canary_response_duration_ms_bucket{",
                &scenario.latency_series,
            ),
        ];
        let mut asked = [0usize; 5];
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let target = request_line.split(' ').nth(1).unwrap_or("");
            let (path, qs) = target.split_once('?').unwrap_or((target, ""));
            let query = qs
                .split('&')
                .find_map(|kv| kv.strip_prefix("query="))
                .map(percent_decode)
                .unwrap_or_default();
            seen.lock().unwrap().push(query.clone());
            // A second instance's series (--metrics-prefix shop) answer as
            // the default prefix's.
            let normalized = query.replace("shop_", "canary_");
            let kind = kinds
                .iter()
                .position(|(start, _)| normalized.starts_with(start));
            let value = match kind {
                Some(k) if path == "/api/v1/query" => {
                    asked[k] += 1;
                    let answers = kinds[k].1;
                    answers[(asked[k] - 1).min(answers.len() - 1)]
                }
                _ => None,
            };
            let result = match value {
                Some(v) => format!(r#"[{{"metric":{{}},"value":[1767225600.123,"{v}"]}}]"#),
                None => "[]".to_string(),
            };
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    FakePrometheus { url, queries }
}

struct Run {
    out: Output,
    dir: PathBuf,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.status.code().expect("exit code")
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn lines(&self, file: &str) -> Vec<String> {
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
    /// The merge patches sent, with sorted keys, in order.
    fn patches(&self) -> Vec<String> {
        self.lines("patches.log")
    }
    fn state(&self) -> String {
        fs::read_to_string(self.dir.join("state.json")).unwrap()
    }
    fn explain(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}--- kubectl calls\n{}",
            self.out.status.code(),
            self.stdout(),
            self.stderr(),
            self.lines("kubectl.log").join("\n")
        )
    }
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "canary-rollout-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The python3 interpreter's real path (not a version manager's shim, which
/// costs ~0.1 s a call), for the fake kubectl's shebang.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("istio/rollout.sh")
}

/// Runs the script against a fresh fake cluster and `prom`, with no pauses.
fn rollout(prom: &FakePrometheus, extra: &[&str]) -> Run {
    let dir = temp_dir();
    let kubectl = dir.join("kubectl");
    fs::write(&kubectl, format!("#!{}{FAKE_KUBECTL}", python())).unwrap();
    fs::set_permissions(&kubectl, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("state.json"), PLUGIN).unwrap();
    let out = Command::new("bash")
        .arg(script())
        .arg("--kubectl")
        .arg(&kubectl)
        .args([
            "--prometheus",
            &prom.url,
            "--pause",
            "0s",
            "--retry-delay",
            "0",
        ])
        .args(extra)
        .output()
        .expect("run bash istio/rollout.sh");
    Run { out, dir }
}

fn weights(v1: &str, v2: &str) -> String {
    format!(
        r#"{{"spec":{{"pluginConfig":{{"subsets":[{{"name":"v1","weight":{v1}}},{{"name":"v2","weight":{v2}}}]}}}}}}"#
    )
}

/// Everything but the weights is as the cluster started.
/// Exit 3, exactly these patches (the last one the rollback), and the reason
/// in the log.
fn assert_rolled_back(run: &Run, patches: &[String], reason: &str) {
    assert_eq!(run.code(), 3, "{}", run.explain());
    assert_eq!(run.patches(), patches, "{}", run.explain());
    assert!(run.stderr().contains(reason), "{}", run.explain());
}

fn assert_rest_untouched(run: &Run) {
    let state = run.state();
    for kept in [
        r#""url":"oci://registry.example/canary-router:0.1.0""#,
        r#""phase":"AUTHZ""#,
        r#""failStrategy":"FAIL_OPEN""#,
        r#""default_subset":"v1""#,
        r#""header":"x-canary-subset""#,
        r#""sticky":{"keys":[{"header":"x-user-id"}],"seed":"api-2026-11"}"#,
        r#""rules":[{"match":{"header":{"exact":"always","name":"x-canary"}},"name":"qa","subset":"v2"}]"#,
    ] {
        assert!(
            state.contains(kept),
            "{kept} lost:\n{state}\n{}",
            run.explain()
        );
    }
}

const SUCCESS_QUERY: &str = r#"sum(rate(canary_responses{subset="v2",class!~"5xx|grpc_error"}[1m])) / sum(rate(canary_responses{subset="v2"}[1m]))"#;
const LATENCY_QUERY: &str = r#"histogram_quantile(0.99, sum by (le) (rate(canary_response_duration_ms_bucket{subset="v2"}[1m])))"#;
const SHARE_QUERY: &str =
    r#"sum(rate(canary_requests{subset="v2"}[1m])) / sum(rate(canary_requests[1m]))"#;

/// The stderr lines of the checks (`rollout: step ...`).
fn check_lines(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.starts_with("rollout: step "))
        .map(str::to_owned)
        .collect()
}

fn good() -> FakePrometheus {
    fake_prometheus(vec![Some("0.9987")], vec![Some("123.4")])
}

#[test]
fn promotes_through_every_step_with_weights_summing_to_100() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    let run = rollout(&prom, &["--steps", "10,50,100"]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    assert_eq!(
        run.patches(),
        [
            weights("90", "10"),
            weights("50", "50"),
            weights("0", "100")
        ],
        "{}",
        run.explain()
    );
    // Every call names the plugin and namespace; the patches are merge patches.
    let calls = run.lines("kubectl.log");
    assert_eq!(calls.len(), 4, "{}", run.explain());
    assert_eq!(
        calls[0],
        "get wasmplugin canary-router -n istio-system -o json"
    );
    for call in &calls[1..] {
        assert!(
            call.starts_with("patch wasmplugin canary-router -n istio-system --type merge -p {"),
            "{call}"
        );
    }
    assert_rest_untouched(&run);
    // Checked between the steps, not after the last: 2 checks x 3 queries,
    // all from the filter's own series.
    let queries = prom.queries.lock().unwrap().clone();
    assert_eq!(
        queries,
        [
            SUCCESS_QUERY,
            LATENCY_QUERY,
            SHARE_QUERY,
            SUCCESS_QUERY,
            LATENCY_QUERY,
            SHARE_QUERY
        ]
    );
    // One line per checked step: weight, share, success rate, p99, verdict.
    assert_eq!(
        check_lines(&run),
        [
            "rollout: step 1/3 v2=10%: share 10.1%, success 0.9987, p99 123.4 ms: ok",
            "rollout: step 2/3 v2=50%: share 10.1%, success 0.9987, p99 123.4 ms: ok",
        ],
        "{}",
        run.explain()
    );
    assert!(
        run.stderr().contains("promoted: v2 at 100%"),
        "{}",
        run.explain()
    );
}

#[test]
fn decimal_steps_and_other_options() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    let run = rollout(
        &prom,
        &[
            "--steps=2.5,33.33",
            "--window",
            "5m",
            "--namespace",
            "istio-system",
            "--plugin",
            "canary-router",
            "--stable",
            "v1",
            "--canary",
            "v2",
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.explain());
    assert_eq!(
        run.patches(),
        [weights("97.5", "2.5"), weights("66.67", "33.33")],
        "{}",
        run.explain()
    );
    let queries = prom.queries.lock().unwrap().clone();
    assert!(queries.iter().all(|q| q.contains("[5m]")), "{queries:?}");
}

#[test]
fn rolls_back_on_a_bad_success_rate() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = fake_prometheus(vec![Some("0.95")], vec![Some("120")]);
    let run = rollout(&prom, &["--steps", "10,50,100", "--min-success", "0.99"]);
    assert_rolled_back(
        &run,
        &[weights("90", "10"), weights("100", "0")],
        "success rate 0.9500 < 0.99",
    );
    assert_eq!(
        check_lines(&run),
        ["rollout: step 1/3 v2=10%: share 10.1%, success 0.9500, p99 120.0 ms: bad (success rate 0.9500 < 0.99)"],
        "{}",
        run.explain()
    );
    assert_rest_untouched(&run);
}

#[test]
fn rolls_back_on_a_bad_p99() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = fake_prometheus(vec![Some("1")], vec![Some("812.5")]);
    let run = rollout(&prom, &["--steps", "10,50,100", "--max-p99-ms", "500"]);
    assert_rolled_back(
        &run,
        &[weights("90", "10"), weights("100", "0")],
        "p99 812.5 ms > 500 ms",
    );
    assert_eq!(
        check_lines(&run),
        ["rollout: step 1/3 v2=10%: share 10.1%, success 1.0000, p99 812.5 ms: bad (p99 812.5 ms > 500 ms)"],
        "{}",
        run.explain()
    );
}

#[test]
fn rolls_back_at_a_later_step_and_sends_no_further_step() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = fake_prometheus(vec![Some("0.999"), Some("0.97")], vec![Some("100")]);
    let run = rollout(&prom, &["--steps", "10,50,100"]);
    assert_eq!(run.code(), 3, "{}", run.explain());
    assert_eq!(
        run.patches(),
        [
            weights("90", "10"),
            weights("50", "50"),
            weights("100", "0")
        ],
        "{}",
        run.explain()
    );
}

#[test]
fn no_data_fails_safe_after_the_retries() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    // Empty results, and NaN (0/0: no canary responses in the window).
    for success in [None, Some("NaN")] {
        let prom = fake_prometheus(vec![success], vec![Some("100")]);
        let run = rollout(&prom, &["--steps", "10,50,100", "--retries", "1"]);
        assert_rolled_back(
            &run,
            &[weights("90", "10"), weights("100", "0")],
            "no data for v2 after 2 tries",
        );
        // Per try: the three queries, and whether the success rate's series exist.
        assert_eq!(
            prom.queries.lock().unwrap().clone(),
            [
                SUCCESS_QUERY,
                LATENCY_QUERY,
                SHARE_QUERY,
                r#"count(canary_responses{subset="v2"})"#
            ]
            .repeat(2)
        );
        let lines = check_lines(&run);
        assert_eq!(lines.len(), 2, "{}", run.explain());
        assert!(
            lines[0].starts_with("rollout: step 1/3 v2=10%: share 10.1%, success n/a, p99 100.0 ms: no data (success rate: ")
                && lines[0].ends_with("; retry 1/1 in 0"),
            "{}",
            run.explain()
        );
    }
}

#[test]
fn missing_data_says_which_metric_and_why() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    // No series at all for the success rate (stats config or scrape), the
    // latency's series there but no responses in the window.
    let prom = fake_prometheus_with(Scenario {
        success_series: vec![None],
        latency_series: vec![Some("20")],
        share: vec![None],
        ..Scenario::new(vec![None], vec![Some("NaN")])
    });
    let run = rollout(&prom, &["--steps", "10,100", "--retries", "0"]);
    assert_rolled_back(
        &run,
        &[weights("90", "10"), weights("100", "0")],
        "no data for v2 after 1 tries",
    );
    let no_series = r#"success rate: canary_responses{subset="v2"}: no series (none in Prometheus for this subset: check"#;
    let no_traffic = r#"p99: canary_response_duration_ms_bucket{subset="v2"}: no traffic (20 series, no responses in the last 1m)"#;
    let lines = check_lines(&run);
    assert_eq!(lines.len(), 1, "{}", run.explain());
    assert!(
        lines[0].starts_with(&format!(
            "rollout: step 1/2 v2=10%: share n/a, success n/a, p99 n/a: no data ({no_series}"
        )) && lines[0].contains(&format!("; {no_traffic})")),
        "{}",
        run.explain()
    );
    // The rollback line names both too.
    let rollback = run
        .stderr()
        .lines()
        .find(|l| l.starts_with("rollout: ROLLBACK: "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        rollback.contains(no_series) && rollback.contains(no_traffic),
        "{}",
        run.explain()
    );
    assert_eq!(
        prom.queries.lock().unwrap()[3..],
        [
            r#"count(canary_responses{subset="v2"})"#,
            r#"count(canary_response_duration_ms_bucket{subset="v2"})"#
        ]
    );

    // Series there, traffic there for the p99 only: "no traffic" for the success rate.
    let prom = fake_prometheus_with(Scenario {
        success_series: vec![Some("4")],
        ..Scenario::new(vec![Some("NaN")], vec![Some("3.5")])
    });
    let run = rollout(&prom, &["--steps", "10,100", "--retries", "0"]);
    assert_eq!(run.code(), 3, "{}", run.explain());
    assert!(
        run.stderr().contains(r#"success rate: canary_responses{subset="v2"}: no traffic (4 series, no responses in the last 1m)"#)
            && !run.stderr().contains("no series"),
        "{}",
        run.explain()
    );
}

#[test]
fn selector_goes_into_every_query() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let sel = r#"app="istio-ingressgateway",namespace=~"istio-.*""#;
    // No data at first, so the series checks run too.
    let prom = fake_prometheus_with(Scenario {
        latency_series: vec![None],
        ..Scenario::new(vec![None, Some("0.999")], vec![None, Some("80")])
    });
    let run = rollout(
        &prom,
        &["--steps", "10,100", "--retries", "1", "--selector", sel],
    );
    assert_eq!(run.code(), 0, "{}", run.explain());
    let queries = prom.queries.lock().unwrap().clone();
    let success = format!(
        r#"sum(rate(canary_responses{{subset="v2",class!~"5xx|grpc_error",{sel}}}[1m])) / sum(rate(canary_responses{{subset="v2",{sel}}}[1m]))"#
    );
    let latency = format!(
        r#"histogram_quantile(0.99, sum by (le) (rate(canary_response_duration_ms_bucket{{subset="v2",{sel}}}[1m])))"#
    );
    let share = format!(
        r#"sum(rate(canary_requests{{subset="v2",{sel}}}[1m])) / sum(rate(canary_requests{{{sel}}}[1m]))"#
    );
    // The first try has no data: both series checks; the second has all.
    assert_eq!(
        queries,
        [
            success.clone(),
            latency.clone(),
            share.clone(),
            format!(r#"count(canary_responses{{subset="v2",{sel}}})"#),
            format!(r#"count(canary_response_duration_ms_bucket{{subset="v2",{sel}}})"#),
            success,
            latency,
            share,
        ]
    );
    // Every selector of every query carries it.
    for q in &queries {
        for selector in q.split('{').skip(1) {
            assert!(selector.contains(sel), "{selector:?} in {q}");
        }
    }
    assert!(
        run.stderr().contains(&format!(
            "p99: canary_response_duration_ms_bucket{{subset=\"v2\",{sel}}}: no series"
        )),
        "{}",
        run.explain()
    );
    // And in the dry run's printout.
    let run = rollout(&prom, &["--dry-run", "--selector", sel]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    let printed: Vec<&str> = run
        .out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| l.starts_with("#   "))
        .collect();
    assert!(!printed.is_empty(), "{}", run.explain());
    for line in printed {
        for selector in line.split('{').skip(1) {
            assert!(selector.contains(sel), "{selector:?} in {line}");
        }
    }
}

#[test]
fn data_arriving_within_the_retries_is_enough() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = fake_prometheus(vec![None, None, Some("0.999")], vec![Some("100")]);
    let run = rollout(&prom, &["--steps", "10,100", "--retries", "3"]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    assert_eq!(
        run.patches(),
        [weights("90", "10"), weights("0", "100")],
        "{}",
        run.explain()
    );
}

#[test]
fn an_unreachable_prometheus_fails_safe() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = FakePrometheus {
        // Bound then dropped: nothing listens there.
        url: format!(
            "http://127.0.0.1:{}",
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        ),
        queries: Arc::default(),
    };
    let run = rollout(&prom, &["--steps", "10,100", "--retries", "0"]);
    assert_eq!(run.code(), 3, "{}", run.explain());
    assert_eq!(run.patches(), [weights("90", "10"), weights("100", "0")]);
    assert!(
        run.stderr().contains(&format!(
            r#"success rate: canary_responses{{subset="v2"}}: query failed ({}: "#,
            prom.url
        )),
        "{}",
        run.explain()
    );
}

#[test]
fn dry_run_prints_patches_and_queries_and_touches_nothing() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    let run = rollout(&prom, &["--steps", "10,50,100", "--dry-run"]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    assert!(run.patches().is_empty(), "{}", run.explain());
    assert!(
        run.lines("kubectl.log")
            .iter()
            .all(|c| c.starts_with("get ")),
        "{}",
        run.explain()
    );
    assert!(prom.queries.lock().unwrap().is_empty());
    let out = run.stdout();
    for step in [
        weights("50", "50"),
        weights("0", "100"),
        weights("100", "0"),
    ] {
        assert!(
            out.contains(&step),
            "{step} not printed:\n{}",
            run.explain()
        );
    }
    assert!(out.contains("patch wasmplugin canary-router -n istio-system --type merge -p"));
    for q in [SUCCESS_QUERY, LATENCY_QUERY, SHARE_QUERY] {
        assert!(out.contains(q), "{q} not printed:\n{out}");
    }
}

#[test]
fn usage_errors_exit_2_before_touching_the_cluster() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    for bad in [
        &["--steps", "50,10"][..],
        &["--steps", "10.005"],
        &["--pause", "five"],
        &["--canary", "v1"],
        &["--frobnicate", "1"],
        &["--selector", "app=gateway"],
        &["--selector", r#"app="gw"}"#],
        &["--selector", r#"subset="v1""#],
    ] {
        let run = rollout(&prom, bad);
        assert_eq!(run.code(), 2, "{bad:?}: {}", run.explain());
        assert!(run.lines("kubectl.log").is_empty(), "{bad:?}");
    }
}

#[test]
fn a_missing_subset_is_an_error_without_patches() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    let run = rollout(&prom, &["--canary", "v3"]);
    assert_eq!(run.code(), 1, "{}", run.explain());
    assert!(run.patches().is_empty());
    assert!(
        run.stderr().contains("subset 'v3' appears 0 times"),
        "{}",
        run.explain()
    );
}

#[test]
fn rollback_on_request() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    let run = rollout(&prom, &["--rollback"]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    assert_eq!(run.patches(), [weights("100", "0")], "{}", run.explain());
    assert!(prom.queries.lock().unwrap().is_empty());
    assert_rest_untouched(&run);
}

/// A second service's instance on the same gateway has its own
/// metrics_prefix: every query reads that prefix's series (its WasmPlugin is
/// named by --plugin, as any).
#[test]
fn another_instance_is_read_by_its_own_metrics_prefix() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin (no Envoy involved)") {
        return;
    }
    let prom = good();
    let run = rollout(&prom, &["--steps", "20,100", "--metrics-prefix", "shop"]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    let queries = prom.queries.lock().unwrap().clone();
    assert!(!queries.is_empty());
    for q in &queries {
        assert!(!q.contains("canary_"), "{q}");
        assert!(q.contains("shop_"), "{q}");
    }
    assert!(queries
        .iter()
        .any(|q| q
            .starts_with(r#"sum(rate(shop_responses{subset="v2",class!~"5xx|grpc_error"}[1m]))"#)));
    let bad = rollout(&prom, &["--dry-run", "--metrics-prefix", "shop-x"]);
    assert_eq!(bad.code(), 2, "{}", bad.explain());
    assert!(bad
        .stderr()
        .contains("--metrics-prefix: want 1-64 of [A-Za-z0-9_]"));
}
