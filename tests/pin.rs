#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The pin cookie: an anonymous visitor gets a random id in a cookie on its first
//! response and is routed by the hash of that id from then on, on both subsets,
//! across restarts; a sticky key wins over it; a malformed pin is replaced; a
//! seed change reshuffles pinned users; the upstream's own cookies are kept.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::pin::*;
use common::*;
use serde_json::json;

/// First requests without any key or pin until `per_side` pins landed on each
/// of v1 and v2 (50/50): `(id, bucket, subset)`. Each first request is checked:
/// reason random, a fresh pin with the exact attributes, served where the
/// hash of the new id says, and (when `decision` is on) the decision header.
fn mint_pins(
    envoy: &mut Envoy,
    seed: &str,
    per_side: usize,
    decision: bool,
) -> Vec<(String, u16, String)> {
    let mut pins = Vec::new();
    let mut on = BTreeMap::from([("v1".to_string(), 0usize), ("v2".to_string(), 0usize)]);
    while on.values().any(|n| *n < per_side) {
        assert!(
            pins.len() < 40 * per_side,
            "{} anonymous requests and still fewer than {per_side} on a side: {on:?}",
            pins.len()
        );
        let (d, r) = envoy.decide_with_response("/", &[]);
        let id = new_pin(&r, PIN, PIN_ATTRS)
            .unwrap_or_else(|| panic!("an anonymous first request gets a pin: {r:?}"));
        let (b, want) = predict(&id, seed, 50.0);
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str()),
            (want.as_str(), "random"),
            "first request of pin {id} (bucket {b}): routed by the hash of the new id, counted as random"
        );
        if decision {
            assert_eq!(
                decision_of(&r),
                format!("subset={want}; reason=random; bucket={b}; pin=new")
            );
        } else {
            assert_eq!(decision_of(&r), "", "no decision_header configured");
        }
        *on.get_mut(&want).unwrap() += 1;
        pins.push((id, b, want));
    }
    pins
}

fn counter(stats: &BTreeMap<String, u64>, subset: &str, reason: &str) -> u64 {
    let name = requests_counter("canary", subset, reason);
    *stats
        .get(&name)
        .unwrap_or_else(|| panic!("{name} is defined: {stats:?}"))
}

#[test]
fn a_replayed_pin_stays_on_one_subset_for_fifty_requests() {
    let seed = "pin-replay";
    let mut envoy = Envoy::start(&pin_config(50.0, 50.0, seed).to_string(), Opts::default());
    let pins = mint_pins(&mut envoy, seed, 4, true);
    let n_on = |s: &str| pins.iter().filter(|(_, _, w)| w == s).count() as u64;

    // Each client replays its pin 50 times on its own keep-alive connection, the
    // way a browser sends cookies: alone, among others, in a second cookie header.
    for (i, (id, b, want)) in pins.iter().enumerate() {
        let mut client = envoy.client();
        let alone = pin_cookie(id);
        let among = format!("theme=dark; {}; lang=en", pin_cookie(id));
        for n in 0..50 {
            let headers: Vec<(&str, &[u8])> = match n % 3 {
                0 => vec![("cookie", alone.as_bytes())],
                1 => vec![("cookie", among.as_bytes())],
                _ => vec![("cookie", b"theme=dark"), ("cookie", alone.as_bytes())],
            };
            let r = client.get("/", &headers);
            assert_eq!(
                (r.status, r.served_by(), r.seen_subset()),
                (200, want.clone(), want.clone()),
                "client {i} (pin {id}), replay {n}"
            );
            assert_eq!(
                set_cookies_named(&r, PIN),
                Vec::<String>::new(),
                "a pinned request gets no new pin"
            );
            assert_eq!(
                decision_of(&r),
                format!("subset={want}; reason=pin; key=pin; bucket={b}")
            );
        }
    }

    let stats = envoy.wasm_stats();
    for s in ["v1", "v2"] {
        assert_eq!(counter(&stats, s, "pin"), 50 * n_on(s), "{s} pin");
        assert_eq!(counter(&stats, s, "random"), n_on(s), "{s} random");
        assert_eq!(counter(&stats, s, "hash"), 0, "{s} hash");
        assert_eq!(
            stats[&responses_counter("canary", s, "2xx")],
            51 * n_on(s),
            "{s} 2xx"
        );
        // The shipped stats tags label the new reason like the others.
        let line = format!(
            "canary_requests{{subset=\"{s}\",reason=\"pin\"}} {}",
            50 * n_on(s)
        );
        let prom = envoy.prometheus();
        assert!(prom.lines().any(|l| l == line), "`{line}` in\n{prom}");
    }
}

#[test]
fn ten_thousand_first_requests_follow_the_weights_each_with_its_own_pin() {
    let seed = "pin-share";
    let envoy = Envoy::start(
        &pin_config(90.0, 10.0, seed).to_string(),
        Opts::default().concurrency(2),
    );
    const N: usize = 10_000;
    const THREADS: usize = 2;
    // (id, served_by, decision header)
    let results: Vec<(String, String, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let mut client = envoy.client();
                scope.spawn(move || {
                    (0..N / THREADS)
                        .map(|_| {
                            let r = client.get("/", &[]);
                            assert_eq!(r.status, 200, "{r:?}");
                            let id = new_pin(&r, PIN, PIN_ATTRS)
                                .unwrap_or_else(|| panic!("no pin on a first request: {r:?}"));
                            assert_eq!(r.seen_subset(), r.served_by());
                            (id, r.served_by(), decision_of(&r))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), N);

    let distinct: HashSet<&str> = results.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(distinct.len(), N, "every first request gets its own id");
    let mut served: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, by, decision) in &results {
        let (b, want) = predict(id, seed, 90.0);
        assert_eq!(*by, want, "pin {id} (bucket {b})");
        assert_eq!(
            *decision,
            format!("subset={want}; reason=random; bucket={b}; pin=new")
        );
        *served.entry(by.as_str()).or_default() += 1;
    }
    let v2 = served.get("v2").copied().unwrap_or(0);
    let share = 100.0 * v2 as f64 / N as f64;
    assert!(
        (8.5..=11.5).contains(&share),
        "v2 share {share:.2} % of {N} first requests, want 10 ± 1.5"
    );

    let stats = envoy.wasm_stats();
    for s in ["v1", "v2"] {
        let n = served.get(s).copied().unwrap_or(0);
        assert_eq!(counter(&stats, s, "random"), n, "{s} random");
        for r in ["rule", "hash", "pin", "fallback"] {
            assert_eq!(counter(&stats, s, r), 0, "{s} {r}");
        }
        assert_eq!(stats[&responses_counter("canary", s, "2xx")], n, "{s} 2xx");
    }
    assert_eq!(
        counter(&stats, "v1", "random") + counter(&stats, "v2", "random"),
        N as u64
    );
}

#[test]
fn pins_survive_a_restart() {
    let seed = "pin-restart";
    // No decision_header here: the header is off when absent.
    let mut config = pin_config(50.0, 50.0, seed);
    config.as_object_mut().unwrap().remove("decision_header");
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());
    let pins = mint_pins(&mut envoy, seed, 8, false);
    envoy.restart();
    for (id, b, want) in &pins {
        let (d, r) = envoy.decide_with_response("/", &h(&[("cookie", &pin_cookie(id))]));
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str()),
            (want.as_str(), "pin"),
            "pin {id} (bucket {b}) after a restart"
        );
        assert_eq!(set_cookies_named(&r, PIN), Vec::<String>::new());
        assert_eq!(decision_of(&r), "");
    }
}

#[test]
fn a_malformed_pin_is_replaced_and_the_new_pin_routes() {
    let seed = "pin-malformed";
    let mut envoy = Envoy::start(&pin_config(50.0, 50.0, seed).to_string(), Opts::default());
    let hex32 = "0123456789abcdef0123456789abcdef";
    let malformed: Vec<(&str, String)> = vec![
        ("empty", format!("{PIN}=")),
        ("15 hex chars", format!("{PIN}={}", &hex32[..15])),
        ("65 hex chars", format!("{PIN}={hex32}{hex32}0")),
        ("uppercase", format!("{PIN}={}", hex32.to_ascii_uppercase())),
        ("one uppercase char", format!("{PIN}=A{}", &hex32[1..])),
        ("non-hex letter", format!("{PIN}=g{}", &hex32[1..])),
        ("dash", format!("{PIN}={}-{}", &hex32[..16], &hex32[17..])),
        ("0x prefix", format!("{PIN}=0x{}", &hex32[2..])),
        (
            "inner space",
            format!("{PIN}={} {}", &hex32[..16], &hex32[16..]),
        ),
        ("no `=`", PIN.to_string()),
        ("name in another case", format!("Canary_Pin={hex32}")),
    ];
    for (what, cookie) in &malformed {
        let (d, r) = envoy.decide_with_response("/", &h(&[("cookie", cookie)]));
        let id = new_pin(&r, PIN, PIN_ATTRS)
            .unwrap_or_else(|| panic!("{what} ({cookie:?}): a new pin replaces it; {r:?}"));
        assert!(!cookie.contains(&id), "{what}: a new id, not the old value");
        let (b, want) = predict(&id, seed, 50.0);
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str()),
            (want.as_str(), "random"),
            "{what} ({cookie:?}): treated as absent"
        );
        assert_eq!(
            decision_of(&r),
            format!("subset={want}; reason=random; bucket={b}; pin=new"),
            "{what}"
        );
        // The replacement then routes, as a pin.
        for _ in 0..3 {
            let (d, r) = envoy.decide_with_response("/", &h(&[("cookie", &pin_cookie(&id))]));
            assert_eq!(
                (d.subset.as_str(), d.reason.as_str()),
                (want.as_str(), "pin"),
                "{what}: the replacement pin {id}"
            );
            assert_eq!(set_cookies_named(&r, PIN), Vec::<String>::new());
            assert_eq!(
                decision_of(&r),
                format!("subset={want}; reason=pin; key=pin; bucket={b}")
            );
        }
    }
    // The bounds of a well-formed pin: 16 and 64 lowercase hex characters route
    // as pins (they are not replaced).
    for len in [16usize, 17, 40, 63, 64] {
        let mut side = BTreeMap::new();
        for n in 0u64..40 {
            let id: String = format!(
                "{:016x}{hex32}{hex32}",
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
            .chars()
            .take(len)
            .collect();
            let (b, want) = predict(&id, seed, 50.0);
            if side.insert(want.clone(), ()).is_some() {
                continue; // one id per side per length is enough
            }
            let (d, r) = envoy.decide_with_response("/", &h(&[("cookie", &pin_cookie(&id))]));
            assert_eq!(
                (d.subset.as_str(), d.reason.as_str()),
                (want.as_str(), "pin"),
                "a {len}-character pin {id} (bucket {b})"
            );
            assert_eq!(set_cookies_named(&r, PIN), Vec::<String>::new(), "{id}");
            assert_eq!(
                decision_of(&r),
                format!("subset={want}; reason=pin; key=pin; bucket={b}")
            );
        }
        assert_eq!(side.len(), 2, "{len}-character ids on both sides");
    }
}

#[test]
fn a_sticky_key_wins_over_the_pin_and_gets_no_new_pin() {
    let seed = "pin-vs-key";
    let mut envoy = Envoy::start(&pin_config(50.0, 50.0, seed).to_string(), Opts::default());
    let pins = mint_pins(&mut envoy, seed, 3, true);
    let users: Vec<(String, u16, String)> = (0..40)
        .map(|i| {
            let u = format!("user-{i}-q7");
            let (b, s) = predict(&u, seed, 50.0);
            (u, b, s)
        })
        .collect();
    let mut crossed = 0;
    for (pin, pin_b, pin_side) in &pins {
        // Keys on the other side than the pin, so the key visibly wins.
        for (user, b, side) in users.iter().filter(|(_, _, s)| s != pin_side).take(3) {
            let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
                (
                    "header:x-user-id",
                    vec![("x-user-id", user.clone()), ("cookie", pin_cookie(pin))],
                ),
                (
                    "cookie:session_id",
                    vec![("cookie", format!("{}; session_id={user}", pin_cookie(pin)))],
                ),
            ];
            for (key, headers) in &cases {
                let hs: Vec<(&str, &[u8])> =
                    headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
                let (d, r) = envoy.decide_with_response("/", &hs);
                assert_eq!(
                    (d.subset.as_str(), d.reason.as_str()),
                    (side.as_str(), "hash"),
                    "key {key}={user} (bucket {b}) with pin {pin} (bucket {pin_b}, {pin_side})"
                );
                assert_eq!(
                    set_cookies_named(&r, PIN),
                    Vec::<String>::new(),
                    "a keyed request gets no pin: {headers:?}"
                );
                assert_eq!(
                    decision_of(&r),
                    format!("subset={side}; reason=hash; key={key}; bucket={b}")
                );
                crossed += 1;
            }
        }
        // An empty key value counts as absent: the pin routes.
        let (d, r) = envoy.decide_with_response(
            "/",
            &h(&[
                ("x-user-id", ""),
                ("cookie", &format!("session_id=; {}", pin_cookie(pin))),
            ]),
        );
        assert_eq!(
            (d.subset.as_str(), d.reason.as_str()),
            (pin_side.as_str(), "pin"),
            "empty keys, pin {pin}"
        );
        assert_eq!(set_cookies_named(&r, PIN), Vec::<String>::new());
    }
    assert!(crossed >= 30, "{crossed} key-vs-pin requests");
    // A key with no pin, or with a malformed one: no new pin either.
    for (user, _, side) in users.iter().take(10) {
        for cookie in [None, Some(format!("{PIN}=XYZ")), Some(format!("{PIN}="))] {
            let mut hs = vec![("x-user-id", user.as_bytes())];
            if let Some(c) = &cookie {
                hs.push(("cookie", c.as_bytes()));
            }
            let (d, r) = envoy.decide_with_response("/", &hs);
            assert_eq!(
                (d.subset.as_str(), d.reason.as_str()),
                (side.as_str(), "hash")
            );
            assert_eq!(
                set_cookies_named(&r, PIN),
                Vec::<String>::new(),
                "key {user}, cookie {cookie:?}: no pin"
            );
        }
    }
}

#[test]
fn a_seed_change_reshuffles_pinned_users() {
    let (seed_a, seed_b) = ("pin-seed-a", "pin-seed-b");
    let mut envoy = Envoy::start(&pin_config(50.0, 50.0, seed_a).to_string(), Opts::default());
    let mut client = envoy.client();
    let pins: Vec<(String, String)> = (0..300)
        .map(|_| {
            let r = client.get("/", &[]);
            let id = new_pin(&r, PIN, PIN_ATTRS).expect("a pin");
            let (_, want) = predict(&id, seed_a, 50.0);
            assert_eq!(r.served_by(), want, "pin {id} under seed A");
            (id, want)
        })
        .collect();
    drop(client);

    envoy.plugin_config = pin_config(50.0, 50.0, seed_b).to_string();
    envoy.restart();
    let mut client = envoy.client();
    let mut moved = BTreeMap::<(String, String), u64>::new();
    for (id, before) in &pins {
        let r = client.get("/", &h(&[("cookie", &pin_cookie(id))]));
        let (b, want) = predict(id, seed_b, 50.0);
        assert_eq!(
            (r.status, r.served_by()),
            (200, want.clone()),
            "pin {id} under seed B (bucket {b})"
        );
        assert_eq!(set_cookies_named(&r, PIN), Vec::<String>::new(), "{id}");
        assert_eq!(
            decision_of(&r),
            format!("subset={want}; reason=pin; key=pin; bucket={b}")
        );
        *moved.entry((before.clone(), want)).or_default() += 1;
    }
    let switched: u64 = moved
        .iter()
        .filter(|((a, b), _)| a != b)
        .map(|(_, n)| n)
        .sum();
    // At 50/50 an independent reshuffle moves about half (sd about 9 of 300).
    assert!(
        (100..=200).contains(&switched),
        "{switched} of 300 pinned users moved with the new seed: {moved:?}"
    );
    for dir in [("v1", "v2"), ("v2", "v1")] {
        let n = moved
            .get(&(dir.0.to_string(), dir.1.to_string()))
            .copied()
            .unwrap_or(0);
        assert!(n >= 30, "{n} moved {} -> {}: {moved:?}", dir.0, dir.1);
    }
    let stats = envoy.wasm_stats();
    assert_eq!(
        counter(&stats, "v1", "pin") + counter(&stats, "v2", "pin"),
        300,
        "all routed as pins"
    );
}

#[test]
fn the_upstreams_set_cookie_is_kept_next_to_the_pin() {
    let seed = "pin-upstream-cookie";
    let mut envoy = Envoy::start(&pin_config(50.0, 50.0, seed).to_string(), Opts::default());
    let mut pinned: Vec<String> = Vec::new();
    for round in 0..10 {
        for (path, status) in [
            ("/", 200),
            ("/status/302", 302),
            ("/status/404", 404),
            ("/status/503", 503),
        ] {
            // Anonymous: the backend's cookie and the new pin, as two headers.
            let (d, r) = envoy.decide_with_response(path, &[]);
            assert_eq!(d.status, status, "{path}");
            let cookies = r.header_all("set-cookie");
            let id = new_pin(&r, PIN, PIN_ATTRS)
                .unwrap_or_else(|| panic!("{path} round {round}: a pin; {cookies:?}"));
            let mut want = vec![
                format!("served_by={}; Path=/", d.subset),
                format!("{PIN}={id}{PIN_ATTRS}"),
            ];
            let mut got = cookies.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{path}: both Set-Cookie headers, unmerged");
            pinned.push(id.clone());

            // Pinned, and keyed: only the backend's cookie.
            for headers in [
                vec![("cookie", pin_cookie(&id))],
                vec![("x-user-id", format!("cookie-user-{round}"))],
            ] {
                let hs: Vec<(&str, &[u8])> =
                    headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
                let (d, r) = envoy.decide_with_response(path, &hs);
                assert_eq!(
                    r.header_all("set-cookie"),
                    vec![format!("served_by={}; Path=/", d.subset)],
                    "{path} {headers:?}"
                );
            }
        }
    }
    let sides: HashSet<String> = pinned.iter().map(|id| predict(id, seed, 50.0).1).collect();
    assert_eq!(sides.len(), 2, "pins set by both subsets' responses");
}

#[test]
fn pin_cookie_attributes_follow_the_configuration() {
    let cases = [
        (
            json!({"name": "canary_pin"}),
            "canary_pin",
            "; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax",
        ),
        (
            json!({"name": "cp", "max_age": 60, "path": "/app", "secure": false,
                   "http_only": false, "same_site": "Strict"}),
            "cp",
            "; Max-Age=60; Path=/app; SameSite=Strict",
        ),
        (
            json!({"name": "cp2", "secure": true, "http_only": false, "same_site": "None"}),
            "cp2",
            "; Max-Age=2592000; Path=/; Secure; SameSite=None",
        ),
    ];
    for (pin_cookie_json, name, attrs) in cases {
        let seed = "pin-attrs";
        let config = json!({
            "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
            "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": seed,
                        "pin_cookie": pin_cookie_json }
        });
        let mut envoy = Envoy::start(&config.to_string(), Opts::default());
        for _ in 0..5 {
            let (d, r) = envoy.decide_with_response("/", &[]);
            let id = new_pin(&r, name, attrs)
                .unwrap_or_else(|| panic!("{pin_cookie_json}: a pin named {name}; {r:?}"));
            assert_eq!(d.subset, predict(&id, seed, 50.0).1);
            let (d, r) =
                envoy.decide_with_response("/", &h(&[("cookie", &format!("{name}={id}"))]));
            assert_eq!(d.reason, "pin", "{pin_cookie_json}");
            assert_eq!(set_cookies_named(&r, name), Vec::<String>::new());
        }
    }
}

#[test]
fn a_bad_pin_cookie_configuration_is_refused() {
    let mark = "canary-router: config: ";
    for pin_cookie_json in [
        json!({"name": "p", "same_site": "None", "secure": false}),
        json!({"max_age": 60}),
        json!({"name": "p", "same_site": "lax"}),
    ] {
        let config = json!({
            "subsets": [ {"name": "v1", "weight": 50}, {"name": "v2", "weight": 50} ],
            "sticky": { "keys": [ {"header": "x-user-id"} ], "pin_cookie": pin_cookie_json }
        });
        let log = Envoy::start_expect_failure(&config.to_string(), Opts::default());
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(mark)).collect();
        assert_eq!(
            lines.len(),
            1,
            "{pin_cookie_json}: one config line: {lines:#?}"
        );
        let msg = &lines[0][lines[0].find(mark).unwrap() + mark.len()..];
        assert!(
            msg.starts_with("sticky.pin_cookie"),
            "{pin_cookie_json}: the line names sticky.pin_cookie: {msg}"
        );
    }
}
