//! Live configuration reload the way Istio delivers it (ECDS, here from a watched
//! file), under continuous load: weight changes take effect within 2 s with zero
//! failed requests, a bad configuration is refused while the previous one keeps
//! serving, and the counters stay exact across reloads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canary_router::bucket::{bucket_of, seed_hash};
use common::*;
use serde_json::json;

const SEED: &str = "reload-test";
const PROBES: usize = 300;

fn config(v2: u32) -> String {
    json!({
        "subsets": [{"name": "v1", "weight": 100 - v2}, {"name": "v2", "weight": v2}],
        "sticky": {"keys": [{"header": "x-user-id"}], "seed": SEED},
    })
    .to_string()
}

/// Where each probe key must go at a weight: buckets 0..(100-v2)% are v1's.
fn expected(v2: u32) -> Vec<&'static str> {
    let seed = seed_hash(SEED);
    (0..PROBES)
        .map(|i| {
            let b = bucket_of(format!("probe-{i}").as_bytes(), seed);
            if u32::from(b) < (100 - v2) * 100 {
                "v1"
            } else {
                "v2"
            }
        })
        .collect()
}

fn unique_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("canary-ecds-{}-{nanos}", std::process::id()))
}

/// Probe every key once; true when all are served where `want` says.
fn probe(client: &mut Client, want: &[&str], sent: &AtomicU64) -> bool {
    let mut all = true;
    for (i, w) in want.iter().enumerate() {
        let key = format!("probe-{i}");
        let r = client.get("/", &[("x-user-id", key.as_bytes())]);
        sent.fetch_add(1, Ordering::SeqCst);
        assert_eq!(r.status, 200, "probe {key}");
        all &= r.served_by() == *w;
    }
    all
}

#[test]
fn weights_change_under_load_bad_configs_are_refused_counters_stay_exact() {
    let dir = unique_dir();
    let envoy = Envoy::start(&config(10), Opts::default().ecds(dir.clone()));
    let addr = envoy.listener_addr();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));

    // Continuous load: keep-alive, and a new connection every 10th request;
    // bounded in count and time.
    let load = {
        let (sent, stop, failures) = (sent.clone(), stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut client = Client::new(addr);
            let started = Instant::now();
            for i in 0..200_000u64 {
                if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let key = format!("load-{i}");
                let headers: [(&str, &[u8]); 1] = [("x-user-id", key.as_bytes())];
                let result = if i % 10 == 0 {
                    one_shot(addr, "GET", "/", &headers)
                } else {
                    client.request("GET", "/", &headers)
                };
                sent.fetch_add(1, Ordering::SeqCst);
                match result {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("request {i}: status {}", r.status)),
                    Err(e) => failures.lock().unwrap().push(format!("request {i}: {e}")),
                }
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };

    let mut probes = Client::new(addr);
    assert!(
        probe(&mut probes, &expected(10), &sent),
        "the initial config serves"
    );
    let mut timings = Vec::new();
    for (step, v2) in [50u32, 0, 100, 0].into_iter().enumerate() {
        if step == 1 {
            // A bad configuration in the middle: refused, 50/50 keeps serving.
            let bad =
                json!({"subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 30}]});
            write_ecds(&dir, &bad.to_string());
            let line = "canary-router: config: subsets[1].weight: weights sum to 120, want 100";
            envoy.wait_for_log(line);
            for _ in 0..3 {
                assert!(
                    probe(&mut probes, &expected(50), &sent),
                    "50/50 still serves"
                );
            }
            continue;
        }
        write_ecds(&dir, &config(v2));
        let t0 = Instant::now();
        while !probe(&mut probes, &expected(v2), &sent) {
            assert!(
                // Typically 0.1-0.3 s; the margin is for a loaded 2-core machine.
                t0.elapsed() < Duration::from_secs(5),
                "weight {v2} not in effect after 5 s"
            );
        }
        timings.push((v2, t0.elapsed()));
    }
    // Let the load reach several thousand requests across the reloads.
    let t0 = Instant::now();
    while sent.load(Ordering::SeqCst) < 6_000 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    eprintln!("reload timings: {timings:?}");

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let total = sent.load(Ordering::SeqCst);
    assert!(total >= 6_000, "the load ran: {total} requests");
    let stats = envoy.stats();
    let counted: u64 = stats
        .iter()
        .filter(|(k, _)| parse_requests_name(k).is_some())
        .map(|(_, v)| v)
        .sum();
    assert_eq!(counted, total, "every request counted once across reloads");
    let _ = std::fs::remove_dir_all(&dir);
}
