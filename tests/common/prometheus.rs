//! A real Prometheus server (Debian's `prometheus`, installed by `make integration`)
//! owned by a test: loopback only, a free port, a 1 s scrape of the given Envoy
//! admin endpoints at `/stats/prometheus`, its own temporary TSDB; killed and
//! removed on drop (also on panic).
//!
//! Env var `PROMETHEUS_BIN` overrides the binary (default: `prometheus` on PATH).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{one_shot, reserve_port, temp_dir};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

/// One sample of an instant vector: its labels (with `__name__` when kept) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub fn prometheus_bin() -> String {
    std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".to_string())
}

/// Percent-encode a query string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Prometheus {
    /// Start Prometheus scraping each admin address (`job="envoy"`, one target
    /// each) every second, and wait until it is ready.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = temp_dir();
        let port = reserve_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  \
             static_configs:\n  - targets: [{}]\n",
            list.join(", "),
        );
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); `make integration` installs Debian's prometheus",
                    prometheus_bin()
                )
            });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut prom = Prometheus { child, dir, addr };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = prom.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prom.log());
            }
            if let Ok(r) = one_shot(addr, "GET", "/-/ready", &[]) {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                t0.elapsed() < STARTUP_TIMEOUT,
                "prometheus not ready in {STARTUP_TIMEOUT:?}:\n{}",
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prom
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The raw JSON answer of an instant query.
    pub fn query_json(&self, promql: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let r = one_shot(self.addr, "GET", &path, &[]).expect("query prometheus");
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("prometheus answered {} {:?}: {e}", r.status, r.body_str()))
    }

    /// An instant query that must succeed: its samples (a scalar comes back as
    /// one sample without labels). Panics with Prometheus' error otherwise.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let doc = self.query_json(promql);
        assert_eq!(
            doc["status"], "success",
            "prometheus refused\n  {promql}\n: {doc}"
        );
        let data = &doc["data"];
        let value = |v: &serde_json::Value| -> f64 {
            let s = v[1].as_str().unwrap();
            match s {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                _ => s.parse().unwrap(),
            }
        };
        if data["resultType"] == "scalar" {
            return vec![Sample {
                labels: BTreeMap::new(),
                value: value(&data["result"]),
            }];
        }
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Sample {
                labels: r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: value(&r["value"]),
            })
            .collect()
    }

    /// The one value of a query whose answer must be a single sample.
    pub fn value(&self, promql: &str) -> f64 {
        let samples = self.query(promql);
        assert_eq!(
            samples.len(),
            1,
            "one sample for\n  {promql}\ngot {samples:?}"
        );
        samples[0].value
    }

    /// Wait until `pred` holds for the query's samples (scrapes are every second;
    /// a loaded machine may lag: generous limit, polled every 250 ms).
    pub fn wait_for(
        &self,
        promql: &str,
        limit: Duration,
        pred: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let t0 = Instant::now();
        loop {
            let samples = self.query(promql);
            if pred(&samples) {
                return samples;
            }
            assert!(
                t0.elapsed() < limit,
                "within {limit:?}, no answer as expected to\n  {promql}\nlast: {samples:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Wait until every target has been scraped at least once since `since`
    /// scrapes (the `up` series per target is 1 and has `n` samples).
    pub fn wait_for_scrapes(&self, targets: usize) {
        self.wait_for(
            "count_over_time(up[1m]) >= 2",
            Duration::from_secs(30),
            |s| s.len() == targets,
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
