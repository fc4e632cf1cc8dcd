//! The `canary-router` command line: each subcommand and exit code, and
//! `explain` agreeing with the filter in a real Envoy on the same requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary-router"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run canary-router")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_config(name: &str, config: &Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("canary-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_config() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let o = cli(&["check", "envoy/canary.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "ok: envoy/canary.json: subsets v1=90% v2=10%, 7 rule(s), 3 sticky key(s), pin cookie, mode enforce"
    );
}

#[test]
fn check_prints_the_line_the_filter_logs() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let bad = json!({"subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 30}]});
    let path = write_config("bad.json", &bad);
    let o = cli(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let line = stderr(&o).trim().to_owned();
    assert_eq!(
        line,
        "canary-router: config: subsets[1].weight: weights sum to 120, want 100"
    );
    // The very same line in a real Envoy's log.
    let log = Envoy::start_expect_failure(&bad.to_string(), Opts::default());
    assert!(log.contains(&line), "Envoy log lacks {line:?}");
}

#[test]
fn exit_codes() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let bad = write_config(
        "typo.json",
        &json!({"subsets": [{"name": "v1", "wieght": 100}]}),
    );
    let bad = bad.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["check", bad],
            1,
            "config: subsets[0].wieght: unknown field",
        ),
        (
            &["check", "/nonexistent.json"],
            1,
            "cannot read /nonexistent.json",
        ),
        (&["explain", "--config", bad], 1, "unknown field"),
        (
            &["simulate", "--config", "envoy/canary.json", "--to", bad],
            1,
            "unknown field",
        ),
        (&[], 2, "no command given"),
        (&["frob"], 2, "unknown command \"frob\""),
        (&["check"], 2, "check needs a CONFIG file"),
        (
            &["check", "a.json", "b.json"],
            2,
            "check takes one CONFIG file",
        ),
        (
            &["explain", "-H", "x-user-id: 1"],
            2,
            "explain needs --config",
        ),
        (
            &["explain", "--config", "envoy/canary.json", "-H", "no-colon"],
            2,
            "-H wants 'name: value'",
        ),
        (
            &[
                "explain",
                "--config",
                "envoy/canary.json",
                "--claims",
                "[1]",
            ],
            2,
            "--claims wants a JSON object",
        ),
        (
            &["explain", "--config", "envoy/canary.json", "--frob"],
            2,
            "unknown argument \"--frob\"",
        ),
        (
            &["simulate", "--config", "envoy/canary.json", "--keys", "0"],
            2,
            "--keys wants 1 to",
        ),
        (&["simulate", "--config"], 2, "--config needs a value"),
    ];
    for (args, code, message) in cases {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        if *code == 2 {
            assert!(stderr(&o).contains("usage:"), "{args:?} prints usage");
        }
    }
    let help = cli(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("canary-router simulate"));
}

#[test]
fn explain_says_why() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let o = cli(&[
        "explain",
        "--config",
        "envoy/canary.json",
        "-H",
        "x-user-id: 42",
        "-b",
        "beta=true",
        "--claims",
        r#"{"sub":"alice"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("subset:   v2\n"), "{text}");
    assert!(text.contains("reason:   rule\n"), "{text}");
    assert!(text.contains("rule:     beta (rule 3 of 7)\n"), "{text}");
    assert!(text.contains("header:   x-canary-subset: v2\n"), "{text}");
    assert!(
        text.contains("decision: subset=v2; reason=rule; rule=beta\n"),
        "{text}"
    );

    // The verified `sub` claim is the first sticky key: it wins over x-user-id.
    let o = cli(&[
        "explain",
        "--config",
        "envoy/canary.json",
        "-H",
        "X-User-Id: 42",
        "--claims",
        r#"{"sub":"alice"}"#,
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let bucket =
        (canary_router::hash::xxh64(b"alice", canary_router::hash::xxh64(b"api-2026-11", 0))
            % 10_000) as u64;
    let subset = if bucket < 9000 { "v1" } else { "v2" };
    assert_eq!(v["reason"], "hash");
    assert_eq!(v["key"], "jwt_claim:sub");
    assert_eq!(v["bucket"], bucket);
    assert_eq!(v["subset"], subset);
    assert_eq!(
        v["decision"],
        format!("subset={subset}; reason=hash; key=jwt_claim:sub; bucket={bucket}")
    );
    assert!(
        !o.stdout.windows(5).any(|w| w == b"alice"),
        "never the key's value"
    );
}

#[test]
fn explain_claims_reach_every_claim_source() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    // --claims goes where the configured source reads claims from.
    for jwt in [
        json!({"source": "verified"}),
        json!({"source": "payload_header", "header": "x-claims"}),
        json!({"source": "unverified_bearer"}),
    ] {
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string("envoy/canary.json").unwrap()).unwrap();
        config["jwt"] = jwt.clone();
        let name = format!("claims-{}.json", jwt["source"].as_str().unwrap());
        let path = write_config(&name, &config);
        let o = cli(&[
            "explain",
            "--config",
            path.to_str().unwrap(),
            "--claims",
            r#"{"sub":"alice","groups":["staff"]}"#,
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{jwt}: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (&v["reason"], &v["rule"]),
            (&json!("rule"), &json!("staff")),
            "{jwt}: {v}"
        );
    }
}

#[test]
fn explain_shows_a_new_pin_and_shadow_mode() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let config = json!({
        "subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
        "sticky": {"pin_cookie": {"name": "canary_pin", "max_age": 60}},
    });
    let path = write_config("pin.json", &config);
    let o = cli(&["explain", "--config", path.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reason"], "random");
    let cookie = v["set_cookie"].as_str().unwrap();
    let id = cookie
        .strip_prefix("canary_pin=")
        .and_then(|c| c.split(';').next())
        .unwrap();
    assert_eq!(id.len(), 32);
    assert!(cookie.ends_with("; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax"));
    assert!(v["decision"].as_str().unwrap().ends_with("; pin=new"));

    // Replaying that pin: reason pin, same subset.
    let replay = cli(&[
        "explain",
        "--config",
        path.to_str().unwrap(),
        "-b",
        &format!("canary_pin={id}"),
        "--json",
    ]);
    let r: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!((&r["reason"], &r["subset"]), (&json!("pin"), &v["subset"]));
    assert_eq!(r["set_cookie"], Value::Null);

    let mut shadow = config.clone();
    shadow["mode"] = "shadow".into();
    let path = write_config("shadow.json", &shadow);
    let o = cli(&[
        "explain",
        "--config",
        path.to_str().unwrap(),
        "-b",
        &format!("canary_pin={id}"),
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("header:   (shadow mode: not set; the route table decides)"),
        "{text}"
    );
    assert!(text.contains("; mode=shadow\n"), "{text}");
}

#[test]
fn simulate_counts_shares_and_moves() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let o = cli(&[
        "simulate",
        "--config",
        "envoy/canary.json",
        "--keys",
        "20000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["from"]["subsets"].as_array().unwrap();
    let keys: u64 = rows.iter().map(|r| r["keys"].as_u64().unwrap()).sum();
    assert_eq!(keys, 20_000);
    let v2 = rows[1]["share"].as_f64().unwrap();
    assert!((v2 - 10.0).abs() < 1.0, "{v2}");
    assert!(v.get("moved").is_none());

    // A monotonic ramp moves keys one way only, and about 40 % of them.
    let half = write_config(
        "half.json",
        &json!({"subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
                "sticky": {"seed": "api-2026-11"}}),
    );
    let o = cli(&[
        "simulate",
        "--config",
        "envoy/canary.json",
        "--to",
        half.to_str().unwrap(),
        "--keys",
        "20000",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let flows = v["moved"]["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(
        (&flows[0]["from"], &flows[0]["to"]),
        (&json!("v1"), &json!("v2"))
    );
    let moved = v["moved"]["keys"].as_u64().unwrap();
    assert!((7_000..9_000).contains(&moved), "{moved}");

    // The same change with another seed moves users both ways.
    let reseeded = write_config(
        "reseeded.json",
        &json!({"subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
                "sticky": {"seed": "another"}}),
    );
    let o = cli(&[
        "simulate",
        "--config",
        "envoy/canary.json",
        "--to",
        reseeded.to_str().unwrap(),
        "--keys",
        "20000",
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("  v1 -> v2: ") && text.contains("  v2 -> v1: "),
        "{text}"
    );
    assert!(text.contains("moved: "), "{text}");
}

const TENANTS: [&str; 3] = ["acme", "x", "globex"];

/// `explain` and the filter decide alike: the decision header Envoy returns
/// equals `explain`'s decision for the same headers, cookies and verified claims.
#[test]
fn explain_agrees_with_the_filter() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let mut config = demo_config();
    config["decision_header"] = "x-canary-decision".into();
    config["sticky"]["pin_cookie"] = json!({"name": "canary_pin"});
    config["subsets"] = json!([{"name": "v1", "weight": 70}, {"name": "v2", "weight": 30}]);
    let path = write_config("agree.json", &config);
    let mut envoy = Envoy::start(&config.to_string(), Opts::default());

    let mut checked = 0;
    for i in 0..300 {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut cookies: Vec<String> = Vec::new();
        let mut claims: Option<Value> = None;
        match i % 6 {
            0 => headers.push(("x-user-id".into(), format!("user-{i}"))),
            1 => cookies.push(format!("theme=dark; session_id=s{i}; lang=en")),
            2 => cookies.push(format!("canary_pin={:032x}", i * 7919)),
            3 => claims = Some(json!({"sub": format!("sub-{i}"), "groups": ["dev"]})),
            4 => claims = Some(json!({"sub": format!("sub-{i}"), "tenant": TENANTS[i % 3]})),
            _ => headers.push(("user-agent".into(), format!("LegacyApp/{i}"))),
        }
        if i % 5 == 0 {
            headers.push(("x-canary".into(), "always".into()));
        }
        if i % 7 == 0 {
            cookies.push("beta=true".into());
        }
        if i % 11 == 0 {
            claims = Some(json!({"sub": format!("staff-{i}"), "groups": ["staff"]}));
        }

        let token = claims
            .as_ref()
            .map(|c| bearer(&sign_hs256(&common::claims(c.clone()))));
        let mut request: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        for c in &cookies {
            request.push(("cookie", c.as_bytes()));
        }
        if let Some(t) = &token {
            request.push(("authorization", t.as_slice()));
        }
        let response = envoy.get("/", &request);
        assert_eq!(response.status, 200);
        let from_envoy = response
            .header("x-canary-decision")
            .expect("decision header");

        let mut args: Vec<String> = vec![
            "explain".into(),
            "--config".into(),
            path.to_str().unwrap().into(),
            "--json".into(),
        ];
        for (n, v) in &headers {
            args.extend(["-H".into(), format!("{n}: {v}")]);
        }
        for c in &cookies {
            args.extend(["-b".into(), c.clone()]);
        }
        if let Some(c) = &claims {
            args.extend(["--claims".into(), c.to_string()]);
        }
        let o = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["decision"], from_envoy, "request {i}: {args:?}");
        assert_eq!(
            response.served_by(),
            v["subset"].as_str().unwrap(),
            "request {i}"
        );
        checked += 1;
    }
    assert_eq!(checked, 300);
}

/// The configuration is taken with `--config` or alone by every subcommand,
/// and an argument that is not UTF-8 is a usage error naming it, not a panic.
#[test]
fn arguments_in_both_forms_and_not_utf8() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let forms: &[&[&str]] = &[
        &["check", "envoy/canary.json"],
        &["check", "--config", "envoy/canary.json"],
        &["check", "-c", "envoy/canary.json"],
    ];
    for args in forms {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).starts_with("ok: envoy/canary.json: subsets v1=90% v2=10%"));
    }
    let o = cli(&["explain", "envoy/canary.json", "-H", "x-canary: always"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("rule:     qa"), "{}", stdout(&o));
    let o = cli(&["simulate", "envoy/canary.json", "--keys", "100"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    use std::os::unix::ffi::OsStrExt;
    let raw = std::ffi::OsStr::from_bytes(b"x-user-id: \xffbad");
    let o = Command::new(env!("CARGO_BIN_EXE_canary-router"))
        .args(["explain", "--config", "envoy/canary.json", "-H"])
        .arg(raw)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(r#"argument "x-user-id: \xFFbad" is not UTF-8"#),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("usage:"));
}

/// `-H` values are trimmed as Envoy trims them: spaces and tabs, not U+00A0.
#[test]
fn explain_trims_header_values_as_envoy_does() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let config = json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "rules": [{"name": "nbsp", "subset": "v2",
                   "match": {"header": {"name": "x-tag", "exact": "\u{a0}beta"}}}],
    });
    let path = write_config("trim.json", &config);
    let path = path.to_str().unwrap();
    for (header, hit) in [
        ("x-tag: \t\u{a0}beta \t", true),
        ("x-tag:\u{a0}beta", true),
        ("x-tag: beta", false),
        ("x-tag: \u{a0}beta\u{a0}", false),
    ] {
        let o = cli(&["explain", path, "--json", "-H", header]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["rule"] == "nbsp", hit, "{header:?}");
    }
}

/// `explain` names the goals a request would count toward and the response
/// class each needs, in text and JSON, from the request line it is given
/// (`-X`, `--path`, `--host`; `GET /` otherwise); a real Envoy running the
/// same configuration counts exactly those goals for the explained subset.
#[test]
fn explain_shows_the_goals_a_request_counts_toward() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let demo = "envoy/canary.json";
    let explain_json = |args: &[&str]| -> Value {
        let mut all = vec!["explain", demo, "--json"];
        all.extend_from_slice(args);
        let o = cli(&all);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let checkout = json!([{"name": "checkout", "status": "2xx"}]);
    // The demo's goal: POST /checkout (the query is not part of the path).
    for (args, want) in [
        (&["-X", "POST", "--path", "/checkout"][..], &checkout),
        (&["-X", "POST", "--path", "/checkout?cart=7"], &checkout),
        (&["--path", "/checkout"], &json!([])),
        (&["-X", "POST", "--path", "/checkout/pay"], &json!([])),
        (&["-X", "POST"], &json!([])),
        (&[], &json!([])),
    ] {
        assert_eq!(&explain_json(args)["goals"], want, "{args:?}");
    }
    // The text form: the goal, the subset it is counted for, the class.
    let o = cli(&[
        "explain",
        demo,
        "-X",
        "POST",
        "--path",
        "/checkout",
        "-H",
        "x-canary: always",
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("goals:    checkout (counted for v2 on a 2xx response)\n"),
        "{text}"
    );
    let o = cli(&["explain", demo, "--path", "/checkout"]);
    assert!(stdout(&o).contains("goals:    none\n"), "{}", stdout(&o));
    // The request line reaches the rules too: /admin stays on v1, even for QA.
    let v = explain_json(&["--path", "/admin/users", "-H", "x-canary: always"]);
    assert_eq!(
        (&v["rule"], &v["subset"]),
        (&json!("internal"), &json!("v1"))
    );

    // Several goals, each with its own class; hosts without their port; shadow
    // mode matches them but counts none.
    let mut config = demo_config();
    config["goals"] = json!([
        {"name": "signup", "status": "3xx", "match": {"all": [
            {"host": {"exact": "shop.example.com"}}, {"path": {"prefix": "/signup"}}]}},
        {"name": "any-post", "status": "2xx", "match": {"method": {"in": ["POST", "PUT"]}}},
        {"name": "errors", "status": "5xx", "match": {"not": {"path": {"prefix": "/admin"}}}}
    ]);
    let path = write_config("goals.json", &config);
    let path = path.to_str().unwrap();
    let o = cli(&[
        "explain",
        path,
        "-X",
        "POST",
        "--path",
        "/signup?ref=mail",
        "--host",
        "shop.example.com:8443",
        "-H",
        "x-user-id: bob",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["goals"],
        json!([{"name": "signup", "status": "3xx"},
               {"name": "any-post", "status": "2xx"},
               {"name": "errors", "status": "5xx"}])
    );
    let o = cli(&[
        "explain",
        path,
        "--path",
        "/signup",
        "--host",
        "other.example.com",
    ]);
    let text = stdout(&o);
    assert!(text.contains("goals:    errors (counted for "), "{text}");
    assert!(!text.contains("signup"), "{text}");
    config["mode"] = "shadow".into();
    let shadow = write_config("goals-shadow.json", &config);
    let o = cli(&["explain", shadow.to_str().unwrap(), "-X", "PUT"]);
    let text = stdout(&o);
    assert!(text.contains("goals:    any-post (counted for "), "{text}");
    assert!(
        text.contains("(shadow mode: goals are not counted)\n"),
        "{text}"
    );

    // The filter in Envoy counts what explain says, under the subset it says.
    let envoy = Envoy::start(&read_repo_file(demo), Opts::default());
    let mut client = envoy.client();
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    /// (method, path, headers)
    type Sent<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let requests: [Sent; 6] = [
        ("POST", "/checkout", &[("x-user-id", "alice")]),
        ("POST", "/checkout?cart=1", &[("x-user-id", "bob")]),
        ("POST", "/checkout", &[("x-canary", "always")]),
        ("GET", "/checkout", &[("x-user-id", "alice")]),
        ("POST", "/checkout/pay", &[("x-user-id", "bob")]),
        ("POST", "/admin/checkout", &[("x-user-id", "alice")]),
    ];
    for (method, target, headers) in requests {
        let mut args = vec!["-X", method, "--path", target];
        let flat: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        for h in &flat {
            args.extend(["-H", h.as_str()]);
        }
        let v = explain_json(&args);
        for goal in v["goals"].as_array().unwrap() {
            assert_eq!(goal["status"], "2xx", "the demo's backends answer 200");
            let name = format!(
                "wasmcustom.canary.goal=.={};.;subset=.={};.;goals",
                goal["name"].as_str().unwrap(),
                v["subset"].as_str().unwrap()
            );
            *want.entry(name).or_default() += 1;
        }
        let request: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let r = client.request(method, target, &request).unwrap();
        assert_eq!(r.status, 200, "{method} {target}");
        assert_eq!(
            r.served_by(),
            v["subset"].as_str().unwrap(),
            "{method} {target}"
        );
    }
    assert_eq!(want.values().sum::<u64>(), 3, "{want:?}");
    let got: std::collections::BTreeMap<String, u64> = envoy
        .wasm_stats()
        .into_iter()
        .filter(|(k, v)| k.ends_with(";.;goals") && *v > 0)
        .collect();
    assert_eq!(got, want);
}

/// Two services' configurations for the cohort questions: api (10 % canary,
/// hashes the user id, writes the cohort) and payments (5 %, reads the bucket
/// from baggage, trusts it).
fn two_services(payments_seed: &str) -> (PathBuf, PathBuf) {
    let api = write_config(
        "cohort-api.json",
        &json!({"subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
                "sticky": {"keys": [{"header": "x-user-id"}], "seed": "mesh"},
                "rules": [{"name": "qa", "subset": "v2",
                           "match": {"header": {"name": "x-canary", "exact": "always"}}}],
                "cohort": {}}),
    );
    let payments = write_config(
        &format!("cohort-payments-{payments_seed}.json"),
        &json!({"subsets": [{"name": "v1", "weight": 95}, {"name": "v2", "weight": 5}],
                "sticky": {"keys": [{"header": "x-user-id"}], "seed": payments_seed},
                "rules": [{"name": "forced", "subset": "v2",
                           "match": {"baggage": {"name": "canary-force", "exact": "v2"}}}],
                "cohort": {"trust_incoming": true}}),
    );
    (api, payments)
}

#[test]
fn simulate_answers_how_many_users_are_on_both_canaries() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let joint = |payments: &PathBuf, extra: &[&str]| -> Value {
        let (api, _) = two_services("mesh");
        let mut args = vec![
            "simulate",
            api.to_str().unwrap(),
            "--with",
            payments.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--keys", "20000", "--json"]);
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // One seed: the 5 % canary lies inside the 10 % one, hashed or carried.
    let (_, same_seed) = two_services("mesh");
    for extra in [&[][..], &["--baggage"][..]] {
        let v = joint(&same_seed, extra);
        let (both, second) = (
            v["on_both"].as_u64().unwrap(),
            v["on_second_canary"].as_u64().unwrap(),
        );
        assert_eq!(both, second, "{v}");
        assert!((800..1200).contains(&both), "{v}");
        assert_eq!(v["nested"], json!(true));
    }
    // Another seed, hashed by each: mostly different users.
    let (_, other_seed) = two_services("other");
    let v = joint(&other_seed, &[]);
    assert!(v["on_both"].as_u64().unwrap() < 300, "{v}");
    assert_eq!(v["nested"], json!(false));
    // Another seed, but the bucket carried in baggage: the first's cohort.
    let v = joint(&other_seed, &["--baggage"]);
    assert_eq!(v["nested"], json!(true), "{v}");
    assert_eq!(v["bucket"], json!("carried in baggage"));
    let o = cli(&["simulate", "envoy/canary.json", "--baggage"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--baggage needs --with"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn explain_shows_the_baggage_the_next_hop_gets() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let (api, payments) = two_services("mesh");
    // At the edge: the client's cohort members are dropped, the user's written.
    let o = cli(&[
        "explain",
        api.to_str().unwrap(),
        "-H",
        "x-user-id: alice",
        "--baggage",
        "a=1, canary-bucket=9999,canary-force=v2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let bucket = v["bucket"].as_u64().unwrap();
    assert_eq!(v["baggage"], json!(format!("a=1,canary-bucket={bucket}")));
    // Forced at the edge: the forced subset travels.
    let o = cli(&[
        "explain",
        api.to_str().unwrap(),
        "-H",
        "x-canary: always",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["baggage"], json!("canary-force=v2"));
    // Inside the mesh: the forced subset decides, and is passed on.
    let o = cli(&[
        "explain",
        payments.to_str().unwrap(),
        "--baggage",
        "canary-force=v2",
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("subset:   v2\nreason:   rule\nrule:     forced"),
        "{text}"
    );
    assert!(
        text.contains("baggage:  canary-force=v2 (to the next hop)"),
        "{text}"
    );
}

/// `explain` says whether the client would see a gated decision header.
#[test]
fn explain_says_who_sees_a_gated_decision_header() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string("envoy/canary.json").unwrap()).unwrap();
    config["decision_header"] = serde_json::json!({
        "name": "x-canary-decision",
        "match": {"jwt_claim": {"name": "groups", "contains": "qa"}}
    });
    let path = write_config("gated-decision-header.json", &config);
    let path = path.to_str().unwrap();
    let explain = |claims: &str, json: bool| {
        let mut args = vec!["explain", "--config", path, "-H", "x-canary: always"];
        args.extend(["--claims", claims]);
        if json {
            args.push("--json");
        }
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o
    };
    let text = stdout(&explain(r#"{"sub":"alice","groups":["dev"]}"#, false));
    assert!(
        text.contains(
            "response: no x-canary-decision (the request does not match decision_header.match)\n"
        ),
        "{text}"
    );
    let text = stdout(&explain(r#"{"sub":"alice","groups":["qa"]}"#, false));
    assert!(
        text.contains("response: x-canary-decision: subset=v2; reason=rule; rule=qa (the request matches decision_header.match)\n"),
        "{text}"
    );
    let v: Value =
        serde_json::from_slice(&explain(r#"{"sub":"alice","groups":["dev"]}"#, true).stdout)
            .unwrap();
    assert_eq!(
        v["decision_header"],
        serde_json::json!({"name": "x-canary-decision", "shown": false})
    );
}

#[test]
fn explain_says_a_request_outside_the_scope_passes_through() {
    if common::wasm_only("the CLI, checked in the Wasm run") {
        return;
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string("envoy/canary.json").unwrap()).unwrap();
    config["scope"] = serde_json::json!({"host": {"exact": "api.example.com"}});
    let path = write_config("scoped.json", &config);
    let path = path.to_str().unwrap();
    let explain = |host: &str, json: bool| {
        let mut args = vec![
            "explain",
            "--config",
            path,
            "--host",
            host,
            "-H",
            "x-canary: always",
        ];
        if json {
            args.push("--json");
        }
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let inside = explain("api.example.com", false);
    assert!(inside.contains("subset:   v2\n"), "{inside}");
    let outside = explain("shop.example.com", false);
    assert_eq!(
        outside,
        "outside scope: passed through untouched (no routing header written or removed; \
         counted in canary_skipped)\n"
    );
    let v: Value = serde_json::from_str(&explain("shop.example.com", true)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"scope": "outside", "counted": "canary_skipped"})
    );
    // A typo in the scope is refused, naming the field.
    config["scope"] = serde_json::json!({"hots": {"exact": "api.example.com"}});
    let bad = write_config("scoped-bad.json", &config);
    let o = cli(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("config: scope"), "{}", stderr(&o));
}
