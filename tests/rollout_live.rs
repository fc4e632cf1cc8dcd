//! `istio/rollout.sh` end to end, with only `kubectl` standing in: a real Envoy
//! running the filter, loaded by ECDS from a watched file (as Istio delivers a
//! WasmPlugin); real upstreams (v2 healthy, failing 20 % with 503, or 300 ms
//! slow: Envoy's fault filter, tests/common/faults.rs); a real Prometheus scraping
//! Envoy every second; and `envoy/kubectl-ecds.py`, the stand-in `make
//! demo-rollout` ships, turning the script's patches into ECDS file rewrites.
//!
//! A load generator sends steady traffic (distinct `x-user-id` keys) during the
//! run and records which upstream answered each request (`x-served-by`), so the
//! test checks what really happened, not only what the script said:
//! - healthy: exit 0, and the real share on v2 follows 10/50/100 within 4 points
//!   in each step (once the patch is in effect);
//! - 20 % 503 on v2: exit 3 at the first check, then no request reaches v2;
//! - v2 300 ms slow against `--max-p99-ms 200`: exit 3, and the log says p99;
//! - the two Flagger MetricTemplates of istio/flagger-metric-template.yaml give
//!   the success rate and p99 of that same traffic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use canary_router::bucket::{bucket_of, seed_hash};
use common::faults::V2Fault;
use common::prometheus::Prometheus;
use common::*;
use serde_json::json;

const SEED: &str = "rollout-live";
/// Requests per second of the load generator, over this many threads (enough
/// that 300 ms answers from v2 do not slow the rest down).
const RATE: f64 = 150.0;
const THREADS: u64 = 8;
/// Hard bounds of one load run.
const LOAD_MAX: Duration = Duration::from_secs(120);
/// How long after the patch command a new weight is surely in effect (ECDS
/// reload, measured under 2 s in tests/reload.rs; margin for a busy machine).
const SETTLE: Duration = Duration::from_millis(2500);
/// The script's short timings: a check 6 s after each patch over a 5 s window.
const SCRIPT_ARGS: &[&str] = &[
    "--steps",
    "10,50,100",
    "--pause",
    "6s",
    "--window",
    "5s",
    "--retries",
    "3",
    "--retry-delay",
    "2s",
    "--min-success",
    "0.99",
    "--max-p99-ms",
    "200",
];

fn plugin_config(v2: u32) -> String {
    json!({
        "subsets": [{"name": "v1", "weight": 100 - v2}, {"name": "v2", "weight": v2}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": SEED},
    })
    .to_string()
}

/// 1,000 distinct users, one per tenth of a percent of the hash space (bucket
/// 10k..10k+9 for the k-th), in an order that spreads every stretch of it
/// evenly over the space (k = i * 649 mod 1000). Any few hundred consecutive
/// requests then carry each weight's share of users to within a point, so a
/// step's measured share is the filter's doing, not the sample's luck.
fn users() -> Vec<String> {
    let seed = seed_hash(SEED);
    let mut by_stratum: Vec<Option<String>> = vec![None; 1000];
    let mut left = 1000;
    let mut n = 0u64;
    while left > 0 {
        let key = format!("user-{n}");
        let stratum = usize::from(bucket_of(key.as_bytes(), seed) / 10);
        if by_stratum[stratum].is_none() {
            by_stratum[stratum] = Some(key);
            left -= 1;
        }
        n += 1;
    }
    (0..1000)
        .map(|i| by_stratum[(i * 649) % 1000].clone().unwrap())
        .collect()
}

/// One request of the load: when it was sent, who answered, its status.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    served_by: String,
    status: u16,
}

struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Steady load on Envoy's listener: request i is due RATE per second after
    /// the start, sent by whichever thread is free; bounded by LOAD_MAX.
    fn start(envoy: &Envoy) -> Load {
        let addr = envoy.listener_addr();
        let users = Arc::new(users());
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let threads = (0..THREADS)
            .map(|_| {
                let (users, stop, samples, errors, next) = (
                    users.clone(),
                    stop.clone(),
                    samples.clone(),
                    errors.clone(),
                    next.clone(),
                );
                thread::spawn(move || {
                    let mut client = Client::new(addr);
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let due = t0 + Duration::from_secs_f64(i as f64 / RATE);
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                        if stop.load(Ordering::SeqCst) || t0.elapsed() > LOAD_MAX {
                            return;
                        }
                        let key = &users[(i % users.len() as u64) as usize];
                        let sent = Instant::now();
                        match client.request("GET", "/", &[("x-user-id", key.as_bytes())]) {
                            Ok(r) => samples.lock().unwrap().push(Sample {
                                sent,
                                served_by: r.served_by(),
                                status: r.status,
                            }),
                            Err(e) => errors.lock().unwrap().push(format!("request {i}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            errors,
            threads,
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    fn stop(mut self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (self.samples(), self.errors.lock().unwrap().clone())
    }
}

/// The requests sent in `[from, to)`.
fn sent_between(samples: &[Sample], from: Instant, to: Instant) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < to)
        .collect()
}

/// Share (percent) of `samples` answered by v2.
fn v2_share(samples: &[&Sample]) -> f64 {
    let v2 = samples.iter().filter(|s| s.served_by == "v2").count();
    100.0 * v2 as f64 / samples.len().max(1) as f64
}

/// One run of the script, its stderr lines timestamped as they came.
struct ScriptRun {
    code: i32,
    lines: Vec<(Instant, String)>,
    started: Instant,
    ended: Instant,
}

impl ScriptRun {
    fn log(&self) -> String {
        self.lines
            .iter()
            .map(|(t, l)| format!("[{:6.2}s] {l}", (*t - self.started).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
    /// (when, weight) of each patch the script sent, from its `canary v2 -> W%:` lines.
    fn patches(&self) -> Vec<(Instant, u32)> {
        self.lines
            .iter()
            .filter_map(|(t, l)| {
                let rest = l.strip_prefix("rollout: canary v2 -> ")?;
                Some((*t, rest.split('%').next()?.parse().ok()?))
            })
            .collect()
    }
    /// The one-line verdicts of the checks (`step i/n v2=W%: ...`).
    fn checks(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|(_, l)| l.strip_prefix("rollout: step "))
            .collect()
    }
}

fn run_script(ecds_dir: &std::path::Path, prom: &Prometheus, extra: &[&str]) -> ScriptRun {
    let root = repo_root();
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(root.join("istio/rollout.sh"))
        .arg("--kubectl")
        .arg(root.join("envoy/kubectl-ecds.py"))
        .arg("--prometheus")
        .arg(prom.url())
        .args(SCRIPT_ARGS)
        .args(extra)
        .env("CANARY_ECDS_FILE", ecds_file(ecds_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash istio/rollout.sh");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        eprintln!("[{:6.2}s] {line}", started.elapsed().as_secs_f64());
        lines.push((Instant::now(), line));
    }
    let status = child.wait().unwrap();
    let ended = Instant::now();
    ScriptRun {
        code: status.code().expect("exit code"),
        lines,
        started,
        ended,
    }
}

/// Everything one scenario needs, running: Envoy (v2 misbehaving as told, the
/// filter by ECDS at v2 0 %), Prometheus scraping it, and the load.
struct Setup {
    envoy: Envoy,
    prom: Prometheus,
    dir: PathBuf,
    load: Load,
    t0: Instant,
}

fn setup(fault: V2Fault) -> Setup {
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "canary-rollout-live-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let envoy =
        Envoy::start_with_v2_fault(&plugin_config(0), Opts::default().ecds(dir.clone()), fault);
    let prom = Prometheus::start(&[envoy.admin_addr()]);
    let load = Load::start(&envoy);
    // The canary's series exist (defined with the configuration) and have been
    // scraped with traffic on v1 before the first step.
    prom.wait_for(
        r#"sum(rate(canary_requests{subset="v1"}[5s]))"#,
        Duration::from_secs(30),
        |s| s.len() == 1 && s[0].value > 0.0,
    );
    Setup {
        envoy,
        prom,
        dir,
        load,
        t0,
    }
}

/// The Flagger templates' queries (the `query:` block scalar of each
/// MetricTemplate in istio/flagger-metric-template.yaml), by metadata.name,
/// with `{{ interval }}` replaced.
fn flagger_queries(interval: &str) -> Vec<(String, String)> {
    let text = read_repo_file("istio/flagger-metric-template.yaml");
    let mut out = Vec::new();
    for doc in text.split("\n---") {
        let name = doc
            .lines()
            .find_map(|l| l.strip_prefix("  name: "))
            .map(str::trim)
            .map(str::to_owned);
        let Some(at) = doc.find("\n  query: |\n") else {
            continue;
        };
        let query: Vec<&str> = doc[at + "\n  query: |\n".len()..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
            .map(str::trim)
            .collect();
        out.push((
            name.expect("a MetricTemplate with a name"),
            query.join(" ").trim().replace("{{ interval }}", interval),
        ));
    }
    assert_eq!(
        out.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["canary-router-success-rate", "canary-router-latency-p99"],
        "istio/flagger-metric-template.yaml: the two templates, in order"
    );
    out
}

/// (success rate in percent, p99 in ms) of v2 by the Flagger templates, over
/// the last minute (the whole scenario).
fn flagger_values(prom: &Prometheus) -> (f64, f64) {
    let q = flagger_queries("1m");
    (prom.value(&q[0].1), prom.value(&q[1].1))
}

/// v2's real success rate (percent) over the run, from the load's own records.
fn real_v2_success(samples: &[Sample]) -> f64 {
    let v2: Vec<&Sample> = samples.iter().filter(|s| s.served_by == "v2").collect();
    let ok = v2.iter().filter(|s| s.status < 500).count();
    100.0 * ok as f64 / v2.len().max(1) as f64
}

/// The check lines say `step i/3 v2=W%: share S%, success X, p99 Y ms: VERDICT`.
fn assert_check_line(line: &str, step: usize, weight: u32, verdict: &str, run: &ScriptRun) {
    let head = format!("{step}/3 v2={weight}%: share ");
    assert!(
        line.starts_with(&head) && line.contains(", success ") && line.contains(" ms: "),
        "check line {line:?}, want {head:?}...\n{}",
        run.log()
    );
    let tail = line.rsplit(" ms: ").next().unwrap();
    assert!(
        tail.starts_with(verdict),
        "check line {line:?}: want verdict {verdict:?}\n{}",
        run.log()
    );
}

#[test]
fn a_healthy_canary_is_promoted_and_real_traffic_follows_the_steps() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin; envoy/kubectl-ecds.py rewrites the Wasm filter's ECDS resource") {
        return;
    }
    let s = setup(V2Fault::None);
    let run = run_script(&s.dir, &s.prom, &[]);
    assert_eq!(run.code, 0, "a healthy canary is promoted:\n{}", run.log());
    let patches = run.patches();
    assert_eq!(
        patches.iter().map(|p| p.1).collect::<Vec<_>>(),
        [10, 50, 100],
        "{}",
        run.log()
    );
    let checks = run.checks();
    assert_eq!(checks.len(), 2, "one line per checked step:\n{}", run.log());
    assert_check_line(checks[0], 1, 10, "ok", &run);
    assert_check_line(checks[1], 2, 50, "ok", &run);
    assert!(run.log().contains("promoted: v2 at 100%"), "{}", run.log());
    // Keep the load on to see the last step in effect.
    let last = patches[2].0;
    while Instant::now() < last + SETTLE + Duration::from_secs(4) {
        thread::sleep(Duration::from_millis(100));
    }
    let (flagger_success, flagger_p99) = flagger_values(&s.prom);
    let (samples, errors) = s.load.stop();
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    let bad: Vec<&Sample> = samples.iter().filter(|x| x.status != 200).collect();
    assert!(
        bad.is_empty(),
        "non-200 answers: {:?}",
        &bad[..bad.len().min(5)]
    );
    let mut shares = Vec::new();
    for (k, (at, weight)) in patches.iter().enumerate() {
        let until = patches
            .get(k + 1)
            .map_or(last + SETTLE + Duration::from_secs(4), |p| p.0);
        let window = sent_between(&samples, *at + SETTLE, until);
        let share = v2_share(&window);
        shares.push((*weight, window.len(), share));
        assert!(
            window.len() >= 150,
            "step {weight}%: only {} requests measured\n{}",
            window.len(),
            run.log()
        );
        assert!(
            (share - f64::from(*weight)).abs() <= 4.0,
            "step {weight}%: v2 answered {share:.1}% of {} requests\n{}",
            window.len(),
            run.log()
        );
    }
    assert!(
        flagger_success > 99.99,
        "Flagger success rate {flagger_success} for an always-200 v2"
    );
    assert!(
        flagger_p99 > 0.0 && flagger_p99 < 100.0,
        "Flagger p99 {flagger_p99} ms for a v2 answering at once"
    );
    eprintln!(
        "healthy: exit {} in {:.1} s (scenario {:.1} s); real v2 share per step (weight, requests, %): {shares:?}; \
         Flagger: success {flagger_success:.2}%, p99 {flagger_p99:.1} ms",
        run.code,
        (run.ended - run.started).as_secs_f64(),
        s.t0.elapsed().as_secs_f64()
    );
    drop(s.envoy);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_canary_failing_20_percent_is_rolled_back_at_the_first_check() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin; envoy/kubectl-ecds.py rewrites the Wasm filter's ECDS resource") {
        return;
    }
    let s = setup(V2Fault::Abort {
        status: 503,
        percent: 20,
    });
    let run = run_script(&s.dir, &s.prom, &[]);
    assert_eq!(run.code, 3, "rolled back:\n{}", run.log());
    assert_eq!(
        run.patches().iter().map(|p| p.1).collect::<Vec<_>>(),
        [10, 0],
        "the first step, then the rollback:\n{}",
        run.log()
    );
    let checks = run.checks();
    assert_eq!(checks.len(), 1, "{}", run.log());
    assert_check_line(checks[0], 1, 10, "bad (success rate 0.", &run);
    let why = checks[0].rsplit(": bad (").next().unwrap();
    assert!(
        !why.contains("p99"),
        "only the success rate failed: {}",
        checks[0]
    );
    // After the rollback: real traffic on v1 only.
    let after = run.ended + SETTLE;
    while Instant::now() < after + Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(100));
    }
    let (flagger_success, _) = flagger_values(&s.prom);
    let (samples, errors) = s.load.stop();
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    let window = sent_between(&samples, after, after + Duration::from_secs(3));
    assert!(
        window.len() >= 150,
        "{} requests after the rollback",
        window.len()
    );
    assert_eq!(
        v2_share(&window),
        0.0,
        "v2 still answers after the rollback\n{}",
        run.log()
    );
    assert!(window
        .iter()
        .all(|x| x.status == 200 && x.served_by == "v1"));
    // The Flagger template sees the same failures as the clients did.
    let real = real_v2_success(&samples);
    let v2_requests = samples.iter().filter(|x| x.served_by == "v2").count();
    assert!(
        v2_requests >= 40 && (60.0..=92.0).contains(&real),
        "v2 answered {v2_requests} requests, {real:.1}% of them not 5xx: the fault is not 20 %"
    );
    assert!(
        (flagger_success - real).abs() <= 5.0,
        "Flagger success rate {flagger_success:.1}%, clients saw {real:.1}% on v2"
    );
    eprintln!(
        "failing: exit {} in {:.1} s (scenario {:.1} s); v2 {v2_requests} requests, {real:.1}% ok; Flagger success {flagger_success:.1}%",
        run.code,
        (run.ended - run.started).as_secs_f64(),
        s.t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_canary_300ms_slow_is_rolled_back_on_latency() {
    if common::wasm_only("istio/rollout.sh patches an Istio WasmPlugin; envoy/kubectl-ecds.py rewrites the Wasm filter's ECDS resource") {
        return;
    }
    let s = setup(V2Fault::Delay { ms: 300 });
    let run = run_script(&s.dir, &s.prom, &[]);
    assert_eq!(run.code, 3, "rolled back:\n{}", run.log());
    assert_eq!(
        run.patches().iter().map(|p| p.1).collect::<Vec<_>>(),
        [10, 0],
        "the first step, then the rollback:\n{}",
        run.log()
    );
    let checks = run.checks();
    assert_eq!(checks.len(), 1, "{}", run.log());
    assert_check_line(checks[0], 1, 10, "bad (p99 ", &run);
    let why = checks[0].rsplit(": bad (").next().unwrap();
    assert!(
        why.ends_with(" ms > 200 ms)") && !why.contains("success"),
        "latency, and only latency, failed: {}",
        checks[0]
    );
    assert!(
        run.log().contains("ROLLBACK: v2 at 10%: p99 "),
        "{}",
        run.log()
    );
    thread::sleep(Duration::from_secs(2));
    let (flagger_success, flagger_p99) = flagger_values(&s.prom);
    let (samples, errors) = s.load.stop();
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    assert!(samples.iter().all(|x| x.status == 200));
    assert!(
        flagger_p99 > 200.0 && flagger_p99 < 1000.0,
        "Flagger p99 {flagger_p99} ms for a v2 answering in 300 ms"
    );
    assert!(flagger_success > 99.99, "Flagger success {flagger_success}");
    eprintln!(
        "delayed: exit {} in {:.1} s (scenario {:.1} s); Flagger p99 {flagger_p99:.1} ms",
        run.code,
        (run.ended - run.started).as_secs_f64(),
        s.t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}
