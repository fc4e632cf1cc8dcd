//! `canary-router`: the filter's decision outside the proxy. The same crate, the
//! same config loader and the same `decide` as the .wasm; no second implementation.

mod args;
mod envoy_headers;

use std::process::ExitCode;

use serde_json::{json, Value};

use canary_router::config::{self, Loaded};
use canary_router::decide::{decide_with, Conditions};
use canary_router::formats::baggage::Merged;
use canary_router::formats::jwt::base64url_encode;
use canary_router::goals::{self, Goal};
use canary_router::labels::Reason;
use canary_router::plan::{Mode, Plan};
use canary_router::request::{HeaderList, JsonClaims, JwtSource, Request};
use canary_router::rng::SplitMix64;
use canary_router::simulate;

use args::{Command, RequestLine, UsageError};

const INVALID_CONFIG: u8 = 1;
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", args::USAGE);
            Ok(())
        }
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            request_line,
            headers,
            cookies,
            claims,
            brake_tripped,
            json,
        } => explain(
            &config,
            &request_line,
            headers,
            &cookies,
            claims.as_deref(),
            brake_tripped,
            json,
        ),
        Command::Simulate {
            config,
            to,
            with,
            baggage,
            keys,
            json,
        } => match with {
            Some(with) => run_joint(&config, &with, baggage, keys, json),
            None => run_simulate(&config, to.as_deref(), keys, json),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(line)) => {
            eprintln!("{line}");
            ExitCode::from(INVALID_CONFIG)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("{e}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}

enum Failure {
    /// The line the filter would log, or why the file could not be read.
    Config(String),
    Usage(UsageError),
}

fn load(path: &str) -> Result<Loaded, Failure> {
    let bytes = if path == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Failure::Config(format!("canary-router: cannot read stdin: {e}")))?;
        buf
    } else {
        std::fs::read(path)
            .map_err(|e| Failure::Config(format!("canary-router: cannot read {path}: {e}")))?
    };
    let loaded =
        config::load(&bytes).map_err(|e| Failure::Config(format!("canary-router: {e}")))?;
    for warning in &loaded.warnings {
        eprintln!("canary-router: warning: {warning}");
    }
    Ok(loaded)
}

fn weights(plan: &Plan) -> String {
    plan.subsets
        .iter()
        .zip(&plan.weights_bp)
        .map(|(s, w)| format!("{s}={}%", percent(*w)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn percent(bp: u16) -> String {
    if bp % 100 == 0 {
        format!("{}", bp / 100)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
    }
}

fn check(path: &str) -> Result<(), Failure> {
    let plan = load(path)?.plan;
    println!(
        "ok: {path}: subsets {}, {} rule(s), {} sticky key(s){}, mode {}",
        weights(&plan),
        plan.rules.len(),
        plan.sticky_keys.len(),
        if plan.pin.is_some() {
            ", pin cookie"
        } else {
            ""
        },
        mode_name(plan.mode),
    );
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

fn explain(
    path: &str,
    request_line: &RequestLine,
    headers: Vec<(String, String)>,
    cookies: &[String],
    claims: Option<&str>,
    brake_tripped: bool,
    as_json: bool,
) -> Result<(), Failure> {
    let plan = load(path)?.plan;
    let claims = match claims {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => {
                return Err(Failure::Usage(UsageError(format!(
                    "--claims wants a JSON object, got {text:?}"
                ))))
            }
        },
    };
    // The pseudo-headers first, as Envoy lists them, then the regular ones.
    let mut headers = [request_line.headers(), headers].concat();
    headers.extend(cookies.iter().map(|c| ("cookie".to_owned(), c.clone())));
    // Where the filter reads claims from a header, put them there.
    let verified_claims = match (&plan.jwt, claims) {
        (JwtSource::UnverifiedBearer, Some(map)) => {
            let payload = base64url_encode(Value::Object(map).to_string().as_bytes());
            headers.push((
                "authorization".to_owned(),
                format!("Bearer e30.{payload}.unsigned"),
            ));
            None
        }
        // As jwt_authn forwards a verified payload.
        (JwtSource::PayloadHeader { header }, Some(map)) => {
            let payload = base64url_encode(Value::Object(map).to_string().as_bytes());
            headers.push((header.clone(), payload));
            None
        }
        (_, claims) => claims,
    };
    // As Envoy lists them to the filter: its inline headers' repeats joined.
    let header_list: HeaderList = envoy_headers::as_envoy_lists(headers);
    // Outside the instance's `scope`: the filter passes it through untouched.
    let outside = plan.scope.as_ref().is_some_and(|scope| {
        scope.excludes(&Request::new(
            &scope.slots,
            &plan.jwt,
            JsonClaims(verified_claims.clone()),
            Ok(&header_list),
        ))
    });
    let request = Request::new(
        &plan.slots,
        &plan.jwt,
        JsonClaims(verified_claims),
        Ok(&header_list),
    );
    if outside {
        let skipped = format!("{}_skipped", plan.metrics.prefix);
        if as_json {
            println!("{}", json!({"scope": "outside", "counted": skipped}));
        } else {
            println!(
                "outside scope: passed through untouched (no routing header written or \
                 removed; counted in {skipped})"
            );
        }
        return Ok(());
    }
    let mut entropy = SplitMix64::from_entropy().unwrap_or_else(|| SplitMix64::new(0x5eed));
    // The split in force now: a ramp's current step, as the proxy computes it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let split = plan.split_at(now_ms);
    let conditions = Conditions {
        split: &split,
        brake_holds: || brake_tripped,
    };
    let decision = decide_with(&plan, conditions, &request, &mut entropy);
    // The goals this request would count toward, each on a response of its
    // class, under the decided subset (as the filter counts them).
    let matched = goals::matched(&plan.goals, &request);
    let goals: Vec<&Goal> = plan
        .goals
        .iter()
        .enumerate()
        .filter(|(i, _)| matched & (1u64 << i) != 0)
        .map(|(_, g)| g)
        .collect();

    let subset = plan.subset_name(decision.subset);
    let rule = decision.rule.and_then(|i| plan.rules.rules().get(i));
    let key = decision.key.and_then(|i| plan.sticky_keys.get(i));
    let set_cookie = match (&plan.pin, &decision.new_pin, plan.mode) {
        (Some(pin), Some(id), Mode::Enforce) => Some(pin.set_cookie(id)),
        _ => None,
    };
    let routing_header = (plan.mode == Mode::Enforce).then(|| format!("{}: {subset}", plan.header));
    let description = decision.describe(&plan);
    // Whether this client would see the decision header (`decision_header.match`).
    let shown_to_client = plan
        .decision_header
        .as_ref()
        .map(|header| (header.name.as_str(), header.reveals(&request)));
    // The baggage the next hop gets (`cohort`): None when left as it came.
    let baggage = plan.cohort.as_ref().and_then(|cohort| {
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        match canary_router::cohort::outgoing(&plan, cohort, &decision, &request)? {
            Merged::Write(list) => Some(text(list)),
            Merged::Overflow { removed } => removed.map(text),
        }
    });

    if as_json {
        let out = json!({
            "subset": subset,
            "reason": decision.reason.as_str(),
            "rule": rule.map(|r| r.name.as_str()),
            "key": key.map(|k| k.label.as_str()).or((decision.reason == Reason::Pin).then_some("pin")),
            "bucket": decision.bucket,
            "mode": mode_name(plan.mode),
            "routing_header": routing_header,
            "set_cookie": set_cookie,
            "decision": description,
            "decision_header": shown_to_client.map(|(name, shown)| json!({"name": name, "shown": shown})),
            "baggage": baggage,
            "goals": goals
                .iter()
                .map(|g| json!({"name": g.name, "status": g.class.as_str()}))
                .collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("subset:   {subset}");
    println!("reason:   {}", decision.reason.as_str());
    if let Some(rule) = rule {
        println!(
            "rule:     {} (rule {} of {})",
            rule.name,
            decision.rule.unwrap_or(0) + 1,
            plan.rules.len()
        );
    }
    if let Some(key) = key {
        println!("key:      {}", key.label);
    }
    if let Some(bucket) = decision.bucket {
        let owner = split
            .ranges()
            .iter()
            .find(|r| r.start <= bucket && bucket < r.end)
            .map(|r| format!(" ({subset} owns buckets {}..{})", r.start, r.end - 1))
            .unwrap_or_default();
        println!("bucket:   {bucket}{owner}");
    }
    match &routing_header {
        Some(h) => println!("header:   {h}"),
        None => println!("header:   (shadow mode: not set; the route table decides)"),
    }
    if let Some(cookie) = &set_cookie {
        println!("response: set-cookie: {cookie}");
    }
    println!("decision: {description}");
    // Said only where a condition decides it; otherwise every response has it.
    let gated = plan
        .decision_header
        .as_ref()
        .is_some_and(|header| header.only_for.is_some());
    match shown_to_client {
        Some((name, true)) if gated => {
            println!("response: {name}: {description} (the request matches decision_header.match)")
        }
        Some((name, false)) => {
            println!("response: no {name} (the request does not match decision_header.match)")
        }
        _ => {}
    }
    if let Some(baggage) = &baggage {
        println!("baggage:  {baggage} (to the next hop)");
    }
    if !plan.goals.is_empty() {
        print_goals(&goals, subset, plan.mode);
    }
    if decision.reason == Reason::Random {
        println!("note:     no sticky key: a random draw by weight; another run may differ");
    }
    Ok(())
}

/// `goals:` one line per goal the request matched, with the response class
/// that completes it; `none` when it matched none.
fn print_goals(goals: &[&Goal], subset: &str, mode: Mode) {
    if goals.is_empty() {
        println!("goals:    none");
        return;
    }
    for (i, goal) in goals.iter().enumerate() {
        let label = if i == 0 { "goals:" } else { "" };
        println!(
            "{label:<10}{} (counted for {subset} on a {} response)",
            goal.name,
            goal.class.as_str()
        );
    }
    if mode == Mode::Shadow {
        println!("          (shadow mode: goals are not counted)");
    }
}

/// `simulate --with`: the same users through two services' configurations.
fn run_joint(
    path: &str,
    with: &str,
    baggage: bool,
    keys: u64,
    as_json: bool,
) -> Result<(), Failure> {
    let first = load(path)?.plan;
    let second = load(with)?.plan;
    let carried = baggage || simulate::reads_bucket_from_baggage(&second);
    let pairs = simulate::joint(&first, &second, keys, carried);
    let canary = |plan: &Plan| plan.subsets.last().cloned().unwrap_or_default();
    let (a, b) = (canary(&first), canary(&second));
    let count = |f: &dyn Fn(&str, &str) -> bool| -> u64 {
        pairs
            .iter()
            .filter(|((x, y), _)| f(x, y))
            .map(|(_, n)| n)
            .sum()
    };
    let both = count(&|x, y| x == a && y == b);
    let on_first = count(&|x, _| x == a);
    let on_second = count(&|_, y| y == b);
    let pct = |n: u64| n as f64 * 100.0 / keys as f64;
    let bucket = if carried {
        "carried in baggage"
    } else {
        "hashed by each"
    };
    if as_json {
        let pairs: Vec<Value> = pairs
            .iter()
            .map(|((x, y), n)| json!({"first": x, "second": y, "keys": n}))
            .collect();
        let out = json!({
            "keys": keys, "first": path, "second": with, "bucket": bucket,
            "canary": {"first": a, "second": b},
            "on_first_canary": on_first, "on_second_canary": on_second, "on_both": both,
            "nested": both == on_first.min(on_second),
            "pairs": pairs,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{keys} keys (user-0 .. user-{}); bucket {bucket}:",
        keys - 1
    );
    println!("  on {a} of {path}: {on_first} ({:.2}%)", pct(on_first));
    println!("  on {b} of {with}: {on_second} ({:.2}%)", pct(on_second));
    println!("  on both canaries: {both} ({:.2}%)", pct(both));
    let smaller = on_first.min(on_second);
    if both == smaller {
        println!("  nested: every user on the smaller canary is on the larger one");
    } else {
        println!(
            "  not nested: {} users on the smaller canary are not on the larger one \
             (different seeds, or the canary is not the last subset)",
            smaller - both
        );
    }
    for ((x, y), n) in &pairs {
        println!("  {x} -> {y}: {n}");
    }
    Ok(())
}

fn run_simulate(path: &str, to: Option<&str>, keys: u64, as_json: bool) -> Result<(), Failure> {
    let from = load(path)?.plan;
    let target = to.map(load).transpose()?.map(|l| l.plan);

    let table = |plan: &Plan| -> Vec<Value> {
        let counts = simulate::shares(plan, keys);
        plan.subsets
            .iter()
            .zip(&plan.weights_bp)
            .zip(counts)
            .map(|((name, bp), count)| {
                json!({
                    "subset": name,
                    "weight": f64::from(*bp) / 100.0,
                    "keys": count,
                    "share": count as f64 * 100.0 / keys as f64,
                })
            })
            .collect()
    };
    let from_table = table(&from);
    let to_table = target.as_ref().map(table);
    let flows = target
        .as_ref()
        .map(|t| simulate::moves(&from, t, keys))
        .unwrap_or_default();
    let moved: u64 = flows.values().sum();

    if as_json {
        let mut out = serde_json::Map::new();
        out.insert("keys".into(), json!(keys));
        out.insert(
            "from".into(),
            json!({"config": path, "subsets": from_table}),
        );
        if let (Some(to), Some(to_table)) = (to, to_table) {
            out.insert("to".into(), json!({"config": to, "subsets": to_table}));
            let flows: Vec<Value> = flows
                .iter()
                .map(|((a, b), n)| json!({"from": a, "to": b, "keys": n}))
                .collect();
            out.insert(
                "moved".into(),
                json!({"keys": moved, "share": moved as f64 * 100.0 / keys as f64, "flows": flows}),
            );
        }
        let out = Value::Object(out);
        println!("{out}");
        return Ok(());
    }
    let print_table = |title: String, rows: &[Value]| {
        println!("{title}");
        println!(
            "  {:<16} {:>10} {:>9} {:>9}",
            "subset", "keys", "share", "weight"
        );
        for row in rows {
            println!(
                "  {:<16} {:>10} {:>8.2}% {:>8.2}%",
                row["subset"].as_str().unwrap_or_default(),
                row["keys"].as_u64().unwrap_or_default(),
                row["share"].as_f64().unwrap_or_default(),
                row["weight"].as_f64().unwrap_or_default(),
            );
        }
    };
    print_table(
        format!(
            "{keys} keys (user-0 .. user-{}) with {path} (seed {:?}):",
            keys - 1,
            from.seed
        ),
        &from_table,
    );
    if let (Some(to), Some(target), Some(to_table)) = (to, &target, &to_table) {
        print_table(format!("with {to} (seed {:?}):", target.seed), to_table);
        println!(
            "moved: {moved} of {keys} keys ({:.2}%)",
            moved as f64 * 100.0 / keys as f64
        );
        for ((a, b), n) in &flows {
            println!("  {a} -> {b}: {n}");
        }
    }
    Ok(())
}
