//! Soak (`make soak`, not part of `make test`): steady load for SOAK_SECONDS
//! (default 120) on Envoy with --concurrency 2, a configuration push by ECDS every
//! 10 s; Envoy's RSS and the Wasm VM's linear memory must not grow beyond a small
//! bound after warm-up, and no `wasm.*` failure counter may rise. Prints start,
//! peak and end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// After warm-up, RSS may move this much (allocator noise, stats) at most.
const RSS_BOUND_MIB: f64 = 8.0;
/// The VM's linear memory may grow by at most this much after warm-up.
const WASM_BOUND_BYTES: u64 = 1 << 20;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn config(step: u64) -> String {
    let v2 = [10, 50, 90, 30][(step % 4) as usize];
    json!({
        "subsets": [{"name": "v1", "weight": 100 - v2}, {"name": "v2", "weight": v2}],
        "sticky": {"keys": [{"header": "x-user-id"}, {"cookie": "session_id"}], "seed": format!("soak-{step}"),
                   "pin_cookie": {"name": "canary_pin"}},
        "decision_header": "x-canary-decision",
        "rules": [{"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
                  {"name": "tenants", "subset": "v2", "match": {"header": {"name": "x-tenant",
                   "in": (0..5000).map(|i| format!("t{i}")).collect::<Vec<_>>()}}}],
    })
    .to_string()
}

fn failure_counters(envoy: &Envoy) -> Vec<(String, u64)> {
    envoy
        .stats()
        .into_iter()
        .filter(|(k, _)| k.starts_with("wasm.") && k.contains("fail"))
        .collect()
}

#[test]
#[ignore = "soak: run with make soak"]
fn soak_memory_stays_flat_across_config_pushes() {
    if common::wasm_only("the Wasm VM's linear memory and wasm.* failure stats") {
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let warmup = Duration::from_secs(seconds.min(120) / 6);
    let dir = std::env::temp_dir().join(format!("canary-soak-{}", std::process::id()));
    let envoy = Envoy::start(&config(0), Opts::default().concurrency(2).ecds(dir.clone()));
    let pid = envoy.pid().unwrap();
    let addr = envoy.listener_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..2)
        .map(|t| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(addr);
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("user-{t}-{i}");
                    let cookie = format!("theme=dark; session_id=s{i}");
                    let headers: [(&str, &[u8]); 2] = if i % 3 == 0 {
                        [("cookie", cookie.as_bytes()), ("x-tenant", b"t42")]
                    } else {
                        [("x-user-id", key.as_bytes()), ("cookie", cookie.as_bytes())]
                    };
                    let ok = if i % 20 == 0 {
                        one_shot(addr, "GET", "/", &headers).is_ok_and(|r| r.status == 200)
                    } else {
                        client
                            .request("GET", "/", &headers)
                            .is_ok_and(|r| r.status == 200)
                    };
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
        })
        .collect();

    let failures_before = failure_counters(&envoy);
    let started = Instant::now();
    let (mut start_rss, mut start_wasm) = (0.0, 0);
    let (mut peak_rss, mut peak_wasm) = (0.0f64, 0u64);
    let mut pushes = 0;
    let mut next_push = Duration::from_secs(10);
    let mut warmed = false;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(500));
        if started.elapsed() >= next_push {
            pushes += 1;
            write_ecds(&dir, &config(pushes));
            next_push += Duration::from_secs(10);
        }
        let rss = rss_mib(pid);
        let wasm = envoy.wasm_memory_gauge("canary").unwrap_or(0);
        if !warmed && started.elapsed() >= warmup {
            warmed = true;
            (start_rss, start_wasm) = (rss, wasm);
        }
        if warmed {
            peak_rss = peak_rss.max(rss);
            peak_wasm = peak_wasm.max(wasm);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for l in loaders {
        l.join().unwrap();
    }
    let (end_rss, end_wasm) = (rss_mib(pid), envoy.wasm_memory_gauge("canary").unwrap_or(0));
    println!(
        "soak {seconds} s, {} requests ({} failed), {pushes} config pushes\n\
         Envoy RSS MiB  start {start_rss:.1}  peak {peak_rss:.1}  end {end_rss:.1}\n\
         Wasm memory    start {start_wasm}  peak {peak_wasm}  end {end_wasm} bytes",
        sent.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests");
    assert_eq!(
        failure_counters(&envoy),
        failures_before,
        "wasm failure counters rose"
    );
    assert!(
        peak_rss - start_rss < RSS_BOUND_MIB,
        "RSS grew {start_rss:.1} -> {peak_rss:.1} MiB"
    );
    assert!(
        peak_wasm - start_wasm <= WASM_BOUND_BYTES,
        "Wasm memory grew {start_wasm} -> {peak_wasm}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
