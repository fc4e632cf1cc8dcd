//! `istio/rollout.sh` against a fake `kubectl` (a python3 script that logs its
//! arguments and applies merge patches to a WasmPlugin kept in a file) and a fake
//! Prometheus (a local HTTP server answering `/api/v1/query` per scenario): the
//! patches it sends, in order; the rollback on a bad success rate, a bad p99 and
//! missing data; `--dry-run` touching nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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

/// Answers the success-rate query (it names `canary_responses`) from `success`
/// and the latency query (`histogram_quantile`) from `p99`.
fn fake_prometheus(success: Answers, p99: Answers) -> FakePrometheus {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&queries);
    thread::spawn(move || {
        let (mut n_success, mut n_p99) = (0usize, 0usize);
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
            let value = if path != "/api/v1/query" {
                None
            } else if query.contains("canary_responses") {
                n_success += 1;
                success[(n_success - 1).min(success.len() - 1)]
            } else if query.contains("histogram_quantile") {
                n_p99 += 1;
                p99[(n_p99 - 1).min(p99.len() - 1)]
            } else {
                None
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

fn good() -> FakePrometheus {
    fake_prometheus(vec![Some("0.9987")], vec![Some("123.4")])
}

#[test]
fn promotes_through_every_step_with_weights_summing_to_100() {
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
    // Checked between the steps, not after the last: 2 checks x 2 queries.
    let queries = prom.queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 4, "{queries:?}");
    assert_eq!(
        queries[0],
        r#"sum(rate(canary_responses{subset="v2",class!="5xx"}[1m])) / sum(rate(canary_responses{subset="v2"}[1m]))"#
    );
    assert_eq!(
        queries[1],
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{destination_version="v2"}[1m])) by (le))"#
    );
    assert!(
        run.stderr().contains("promoted: v2 at 100%"),
        "{}",
        run.explain()
    );
}

#[test]
fn decimal_steps_and_other_options() {
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
    let prom = fake_prometheus(vec![Some("0.95")], vec![Some("120")]);
    let run = rollout(&prom, &["--steps", "10,50,100", "--min-success", "0.99"]);
    assert_rolled_back(
        &run,
        &[weights("90", "10"), weights("100", "0")],
        "success rate 0.9500 < 0.99",
    );
    assert_rest_untouched(&run);
}

#[test]
fn rolls_back_on_a_bad_p99() {
    let prom = fake_prometheus(vec![Some("1")], vec![Some("812.5")]);
    let run = rollout(&prom, &["--steps", "10,50,100", "--max-p99-ms", "500"]);
    assert_rolled_back(
        &run,
        &[weights("90", "10"), weights("100", "0")],
        "p99 812.5 ms > 500 ms",
    );
}

#[test]
fn rolls_back_at_a_later_step_and_sends_no_further_step() {
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
    // Empty results, and NaN (0/0: no canary responses in the window).
    for success in [None, Some("NaN")] {
        let prom = fake_prometheus(vec![success], vec![Some("100")]);
        let run = rollout(&prom, &["--steps", "10,50,100", "--retries", "1"]);
        assert_rolled_back(
            &run,
            &[weights("90", "10"), weights("100", "0")],
            "no data for v2 after 2 tries",
        );
        assert_eq!(prom.queries.lock().unwrap().len(), 4);
    }
}

#[test]
fn data_arriving_within_the_retries_is_enough() {
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
}

#[test]
fn dry_run_prints_patches_and_queries_and_touches_nothing() {
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
    assert!(
        out.contains(r#"canary_responses{subset="v2",class!="5xx"}[1m]"#),
        "{out}"
    );
    assert!(out.contains("histogram_quantile(0.99"), "{out}");
}

#[test]
fn usage_errors_exit_2_before_touching_the_cluster() {
    let prom = good();
    for bad in [
        &["--steps", "50,10"][..],
        &["--steps", "10.005"],
        &["--pause", "five"],
        &["--canary", "v1"],
        &["--frobnicate", "1"],
    ] {
        let run = rollout(&prom, bad);
        assert_eq!(run.code(), 2, "{bad:?}: {}", run.explain());
        assert!(run.lines("kubectl.log").is_empty(), "{bad:?}");
    }
}

#[test]
fn a_missing_subset_is_an_error_without_patches() {
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
    let prom = good();
    let run = rollout(&prom, &["--rollback"]);
    assert_eq!(run.code(), 0, "{}", run.explain());
    assert_eq!(run.patches(), [weights("100", "0")], "{}", run.explain());
    assert!(prom.queries.lock().unwrap().is_empty());
    assert_rest_untouched(&run);
}
