#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Every PromQL query the project ships, evaluated by a real Prometheus scraping a
//! real Envoy (the shipped envoy/envoy.yaml, demo upstreams) after known traffic,
//! must give the number that traffic implies.
//!
//! The queries come from the files at run time: each ```promql block of
//! istio/prometheus-queries.md (under its `### <id>` heading), each panel `expr` of
//! dashboards/canary-router.json, the `query:` of each Flagger MetricTemplate in
//! istio/flagger-metric-template.yaml, the queries `istio/rollout.sh --dry-run`
//! prints, and every ```promql block of README.md and docs/*.md.
//!
//! The rule tying them together: a query shipped anywhere but the document must be
//! one of the document's queries, the same text up to whitespace and the window
//! (`[5m]`, Grafana's `[$__rate_interval]`, Flagger's `[{{ interval }}]`, the
//! script's `[$WINDOW]`, any `[<duration>]`), optionally times 100 (a percentage).
//! Each document id has its expectation here; a query with no expectation fails the
//! test, as does any query Prometheus refuses.
//!
//! Why ratios come out exact: Prometheus scrapes every series of the one Envoy in
//! the same scrape (same timestamps), and it has scraped every counter at 0 before
//! the first request. Over a window covering the whole test, `rate()` then scales
//! every counter's increase by the same factor (no extrapolation before a first
//! sample of 0; the same one after the shared last sample), so a ratio of rates is
//! the ratio of the counts sent. Absolute rates are checked as count times that one
//! factor, which itself must lie within what extrapolation allows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::*;
use serde_json::json;

/// The window every query is evaluated with: longer than the test, so that each
/// series' first sample in it is the 0 scraped before any traffic.
const WINDOW: &str = "10m";
const WINDOW_SECS: f64 = 600.0;

const SUBSETS: [&str; 2] = ["v1", "v2"];
const RULES: [&str; 3] = ["qa", "legacy", "unused"];
/// The ramp's step in force (see `config`): v2 at 25 %, v1 the rest.
const WEIGHT_PERCENT: [(&str, f64); 2] = [("v1", 75.0), ("v2", 25.0)];
/// The response classes the success rates count as failures: a 5xx, or a gRPC
/// call that ended with a failing code.
const FAILURES: [&str; 2] = ["5xx", "grpc_error"];
/// The gRPC outcome classes. Each subset has them at 0 from the moment the
/// configuration is accepted, like the status classes; this test's traffic is
/// plain HTTP, so they must stay at 0.
const GRPC_CLASSES: [&str; 3] = ["grpc_ok", "grpc_error", "grpc_other"];

/// Every `class` of `canary_responses`: the status classes and the gRPC outcomes.
fn all_classes() -> Vec<&'static str> {
    CLASSES
        .iter()
        .chain(GRPC_CLASSES.iter().filter(|c| !CLASSES.contains(c)))
        .copied()
        .collect()
}

/// Gateway selector of the document, and what stands for it in this test's scrape
/// configuration (one proxy, scraped as `job="envoy"`).
const GATEWAY_SELECTOR: &str = "app=\"istio-ingressgateway\"";
const TEST_SELECTOR: &str = "job=\"envoy\"";

fn config() -> String {
    json!({
        "subsets": [ {"name": "v1", "weight": 90}, {"name": "v2", "weight": 10} ],
        "default_subset": "v1",
        "metrics_prefix": "canary",
        "sticky": { "keys": [ {"header": "x-user-id"} ], "seed": "prometheus-queries" },
        "decision_header": "x-canary-decision",
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
            {"name": "legacy", "subset": "v1", "match": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}},
            {"name": "unused", "subset": "v2", "match": {"cookie": {"name": "never", "present": true}}}
        ],
        // Step 1 in force for the whole test: weight_bp shows 2500 / 7500, not the
        // configured 90/10.
        "ramp": { "subset": "v2", "start": "2020-01-01T00:00:00Z",
                  "steps": [ {"weight": 25, "hold": "999999h"}, {"weight": 100} ] },
        "brake": { "subset": "v2", "max_error_rate": 0.5, "window": "10s", "min_requests": 20 },
        // A keyed user's successful request: the goal-conversion query's numerator.
        "goals": [ {"name": "checkout", "status": "2xx",
                    "match": {"all": [ {"method": {"exact": "GET"}},
                                       {"header": {"name": "x-user-id", "present": true}} ]}} ]
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// What was sent
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Traffic {
    /// (subset, reason) -> requests
    requests: BTreeMap<(String, String), u64>,
    /// (subset, class) -> responses
    responses: BTreeMap<(String, String), u64>,
    /// rule -> matches
    rules: BTreeMap<String, u64>,
    /// subset -> checkout goals completed (keyed requests answered 2xx)
    goals: BTreeMap<String, u64>,
}

impl Traffic {
    fn total(&self) -> u64 {
        self.requests.values().sum()
    }
    fn requests_of(&self, subset: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((s, _), _)| s == subset)
            .map(|(_, n)| n)
            .sum()
    }
    /// Responses of `subset` whose class is one of `class` (any when None) and
    /// none of `not_class`.
    fn responses_of(
        &self,
        subset: &str,
        class: Option<&[&str]>,
        not_class: Option<&[&str]>,
    ) -> u64 {
        self.responses
            .iter()
            .filter(|((s, c), _)| {
                s == subset
                    && class.is_none_or(|want| want.contains(&c.as_str()))
                    && not_class.is_none_or(|skip| !skip.contains(&c.as_str()))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// `subset=v2; reason=rule; rule=qa; ...` -> (subset, reason, rule, braked).
fn parse_decision(value: &str) -> (String, String, Option<String>, bool) {
    let mut fields = BTreeMap::new();
    let mut braked = false;
    for part in value.split(';').map(str::trim) {
        if part == "brake=tripped" {
            braked = true;
        }
        if let Some((k, v)) = part.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    (
        fields.get("subset").cloned().unwrap_or_default(),
        fields.get("reason").cloned().unwrap_or_default(),
        fields.get("rule").cloned(),
        braked,
    )
}

/// Send one request and record it from what the response says: the subset (the
/// decision header, and the backend that answered must be of that subset), the
/// reason and rule (the decision header), the status class. Returns whether the
/// brake sent it to the default subset.
fn send(
    envoy: &mut Envoy,
    traffic: &mut Traffic,
    path: &str,
    headers: &[(&str, &str)],
    want_reason: &str,
) -> (String, bool) {
    let r = envoy.get(path, &h(headers));
    let want_status: u16 = path
        .strip_prefix("/status/")
        .map_or(200, |s| s.parse().unwrap());
    assert_eq!(r.status, want_status, "{path} {headers:?}: {r:?}");
    let decision = r
        .header("x-canary-decision")
        .unwrap_or_else(|| panic!("no decision header: {r:?}"));
    let (subset, reason, rule, braked) = parse_decision(&decision);
    assert_eq!(
        r.served_by(),
        subset,
        "served by the subset decided: {decision}"
    );
    assert_eq!(reason, want_reason, "{path} {headers:?}: {decision}");
    assert_eq!(rule.is_some(), reason == "rule", "{decision}");
    *traffic
        .requests
        .entry((subset.clone(), reason))
        .or_default() += 1;
    *traffic
        .responses
        .entry((subset.clone(), status_class(r.status).to_string()))
        .or_default() += 1;
    if let Some(rule) = rule {
        *traffic.rules.entry(rule).or_default() += 1;
    }
    if headers.iter().any(|(k, _)| *k == "x-user-id") && (200..300).contains(&r.status) {
        *traffic.goals.entry(subset.clone()).or_default() += 1;
    }
    (subset, braked)
}

/// Known traffic over both subsets: hashed keys, two rules (one forcing each
/// subset), keyless random picks, a known mix of 302/404/503; then a burst of
/// canary 503s until the brake trips. Interleaved so that the brake's window
/// stays well under its limit until the burst.
fn send_traffic(envoy: &mut Envoy) -> Traffic {
    let mut t = Traffic::default();
    for i in 0..360usize {
        match i % 9 {
            0 => {
                let path = if (i / 9) % 10 == 0 {
                    "/status/503"
                } else {
                    "/"
                };
                let (subset, _) = send(
                    envoy,
                    &mut t,
                    path,
                    &[("x-canary", "always"), ("x-user-id", &format!("qa{i}"))],
                    "rule",
                );
                assert_eq!(subset, "v2", "the qa rule forces v2");
            }
            4 => {
                let path = if (i / 9) % 4 == 0 { "/status/302" } else { "/" };
                let (subset, _) = send(
                    envoy,
                    &mut t,
                    path,
                    &[
                        ("user-agent", "LegacyApp/2.0"),
                        ("x-user-id", &format!("l{i}")),
                    ],
                    "rule",
                );
                assert_eq!(subset, "v1", "the legacy rule forces v1");
            }
            7 => {
                let path = if (i / 9) % 5 == 0 { "/status/404" } else { "/" };
                send(envoy, &mut t, path, &[], "random");
            }
            _ => {
                let path = match i % 8 {
                    1 => "/status/503",
                    3 => "/status/404",
                    _ => "/",
                };
                send(
                    envoy,
                    &mut t,
                    path,
                    &[("x-user-id", &format!("u{i}"))],
                    "hash",
                );
            }
        }
    }
    // Both subsets got hashed keys, errors and successes.
    for s in SUBSETS {
        assert!(
            t.requests
                .get(&(s.into(), "hash".into()))
                .copied()
                .unwrap_or(0)
                > 20,
            "{t:?}"
        );
        assert!(t.responses_of(s, Some(&["5xx"]), None) > 0, "{t:?}");
    }
    // The brake (50 % of 5xx over 10 s, at least 20 responses): canary errors
    // until a request is sent to the default subset instead.
    let mut tripped = false;
    for i in 0..2000 {
        let (subset, braked) = send(
            envoy,
            &mut t,
            "/status/503",
            &[("x-canary", "always"), ("x-user-id", &format!("burst{i}"))],
            "rule",
        );
        if braked {
            assert_eq!(subset, "v1", "a braked request goes to the default subset");
            tripped = true;
            break;
        }
        assert_eq!(subset, "v2");
    }
    assert!(tripped, "the brake never tripped on 2000 canary 503s");
    t
}

// ---------------------------------------------------------------------------
// The queries the project ships
// ---------------------------------------------------------------------------

/// `### <id>` headings each directly followed by a ```promql block: (id, query).
/// Every promql block must have its heading; every `### ` heading must head one.
fn doc_queries(file: &str, text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(id) = line.strip_prefix("### ") {
            let id = id.trim();
            assert!(
                !id.is_empty()
                    && id.split('-').all(|w| {
                        !w.is_empty()
                            && w.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    }),
                "{file}: heading `### {id}` is not a kebab-case query id"
            );
            assert_eq!(
                lines.get(i + 1).map(|l| l.trim_end()),
                Some("```promql"),
                "{file}: `### {id}` must be directly followed by a ```promql block"
            );
            let body: Vec<&str> = lines[i + 2..]
                .iter()
                .take_while(|l| l.trim_end() != "```")
                .copied()
                .collect();
            assert!(
                i + 2 + body.len() < lines.len(),
                "{file}: unterminated block under `### {id}`"
            );
            let query = body.join("\n").trim().to_string();
            assert!(!query.is_empty(), "{file}: empty block under `### {id}`");
            assert!(
                out.iter().all(|(other, _)| other != id),
                "{file}: id {id} used twice"
            );
            out.push((id.to_string(), query));
            i += 3 + body.len();
            continue;
        }
        assert!(
            line.trim_end() != "```promql",
            "{file} line {}: a ```promql block without a `### <id>` heading right above",
            i + 1
        );
        i += 1;
    }
    out
}

/// The queries in README.md's ```promql blocks: a block may hold several, one
/// starting on each line where the lines before it are complete (brackets
/// balanced, no binary operator or modifier dangling at the seam).
fn readme_queries(text: &str) -> Vec<String> {
    const JOINERS: [&str; 10] = [
        "/", "*", "+", "-", "and", "or", "unless", "ignoring", "on", "group_",
    ];
    let ends_open = |s: &str| {
        let s = s.trim_end();
        ["/", "*", "+", "-", "(", ",", "and", "or", "unless"]
            .iter()
            .any(|op| s.ends_with(op))
            || s.ends_with("group_left")
            || s.ends_with("group_right")
    };
    let starts_open = |s: &str| {
        let s = s.trim_start();
        JOINERS.iter().any(|op| s.starts_with(op)) || s.starts_with(')')
    };
    let mut out = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    let mut depth = 0i32;
    for line in text.lines() {
        if !in_block {
            in_block = line.trim_end() == "```promql";
            continue;
        }
        if line.trim_end() == "```" {
            if !current.trim().is_empty() {
                out.push(current.trim().to_string());
            }
            current.clear();
            depth = 0;
            in_block = false;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if !current.trim().is_empty() && depth == 0 && !ends_open(&current) && !starts_open(line) {
            out.push(current.trim().to_string());
            current.clear();
        }
        depth += line.matches(['(', '{', '[']).count() as i32;
        depth -= line.matches([')', '}', ']']).count() as i32;
        current.push_str(line);
        current.push('\n');
    }
    assert!(!in_block, "README.md: unterminated ```promql block");
    // Inline code that is a query: `sum(rate(...))`.
    for (n, span) in text.split('`').enumerate() {
        let is_query = ["rate(", "histogram_quantile(", "sum(", "count("]
            .iter()
            .any(|f| span.starts_with(f) || span.starts_with(&format!("100 * {f}")));
        if n % 2 == 1 && is_query && balanced(span) {
            out.push(span.to_string());
        }
    }
    out
}

/// Every panel target's `expr` of the dashboard: (panel title, expr).
fn dashboard_exprs(text: &str) -> Vec<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(text).expect("dashboards/canary-router.json is JSON");
    assert!(
        doc["schemaVersion"].as_u64().is_some(),
        "the dashboard has a schemaVersion"
    );
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in doc["panels"].as_array().expect("panels") {
        panels.push(p);
        // Rows may nest panels.
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
    }
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        if let Some(targets) = p["targets"].as_array() {
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title}: a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
        }
    }
    assert!(!out.is_empty(), "the dashboard has no queries");
    out
}

/// The `query:` of each MetricTemplate (block scalar or one-line value).
fn flagger_queries(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(at) = line.find("query:") else {
            continue;
        };
        if !line[..at].trim().is_empty() {
            continue;
        }
        let indent = at;
        let rest = line[at + "query:".len()..].trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(body.join("\n").trim().to_string());
        } else {
            let unquoted = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .map(|r| r.replace("\\\"", "\"").replace("\\\\", "\\"))
                .or_else(|| {
                    rest.strip_prefix('\'')
                        .and_then(|r| r.strip_suffix('\''))
                        .map(|r| r.replace("''", "'"))
                })
                .unwrap_or_else(|| rest.to_string());
            out.push(unquoted);
        }
    }
    let templates = text
        .lines()
        .filter(|l| l.trim() == "kind: MetricTemplate")
        .count();
    assert!(templates > 0, "no MetricTemplate in the Flagger file");
    assert_eq!(
        out.len(),
        templates,
        "one query per MetricTemplate: {out:?}"
    );
    out
}

/// The queries `istio/rollout.sh --dry-run` prints (it cannot read the WasmPlugin
/// with `false` as kubectl, and assumes subsets v1 and v2 in a dry run).
fn rollout_queries() -> Vec<String> {
    let out = Command::new("bash")
        .current_dir(repo_root())
        .args([
            "istio/rollout.sh",
            "--dry-run",
            "--kubectl",
            "false",
            "--window",
            WINDOW,
            "--canary",
            "v2",
            "--stable",
            "v1",
        ])
        .output()
        .expect("run istio/rollout.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rollout.sh --dry-run failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Comment lines `#   <label>: <query>`; a line that describes queries in prose
    // (`count(A) or count(B) tells ...`) gives each `count(...)` in it.
    let mut queries: Vec<String> = Vec::new();
    let mut push = |q: String| {
        if !queries.contains(&q) {
            queries.push(q);
        }
    };
    for line in stdout.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            continue;
        };
        let text = comment.trim();
        if !["canary_", "istio_", "rate(", "histogram_quantile("]
            .iter()
            .any(|m| text.contains(m))
        {
            continue;
        }
        let candidate = text
            .split_once(": ")
            .filter(|(label, _)| !label.contains(['{', '[', '"']) && !label.contains("rate("))
            .map_or(text, |(_, rest)| rest)
            .trim();
        if balanced(candidate) && candidate.ends_with([')', ']', '}']) {
            push(candidate.to_string());
            continue;
        }
        let calls = calls_of(candidate, "count(");
        assert!(
            !calls.is_empty(),
            "rollout.sh --dry-run: cannot read a query from the line {line:?}"
        );
        calls.into_iter().for_each(&mut push);
    }
    assert!(
        !queries.is_empty(),
        "rollout.sh --dry-run printed no query:\n{stdout}"
    );
    queries
}

/// Brackets balanced (string literals aside).
fn balanced(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && quote.is_none()
}

/// Each `<call>...)` in `text`, its parentheses balanced.
fn calls_of(text: &str, call: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(call).map(|i| i + from) {
        let end = (at + call.len()..=text.len())
            .find(|&e| text.is_char_boundary(e) && balanced(&text[at..e]))
            .unwrap_or(text.len());
        out.push(text[at..end].to_string());
        from = end.max(at + 1);
    }
    out
}

/// The query with whitespace removed and every range window written `[W]`
/// (string literals kept as they are): the form queries are compared in.
fn normalize(query: &str) -> String {
    rewrite(query, "W", false)
}

/// The query as sent to Prometheus: as shipped, with the test's window.
fn with_window(query: &str) -> String {
    rewrite(query, WINDOW, true)
}

/// Every range window of `query` replaced by `window`; whitespace outside string
/// literals kept or dropped.
fn rewrite(query: &str, window: &str, keep_whitespace: bool) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = query.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                out.push(c);
            }
            '[' => {
                let mut inner = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == ']' {
                        closed = true;
                        break;
                    }
                    if !n.is_whitespace() {
                        inner.push(n);
                    }
                }
                assert!(closed, "unbalanced [ in {query}");
                out.push('[');
                out.push_str(if is_window(&inner) { window } else { &inner });
                out.push(']');
            }
            c if c.is_whitespace() && !keep_whitespace => {}
            c => out.push(c),
        }
    }
    out
}

/// `5m`, `1h30m`, `$__rate_interval`, `{{interval}}`, `$WINDOW`.
fn is_window(inner: &str) -> bool {
    if ["$__rate_interval", "{{interval}}", "$WINDOW", "${WINDOW}"].contains(&inner) {
        return true;
    }
    let mut rest = inner;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// A query shipped outside the document: which document id it is, and the scale
/// (1, or 100 for a percentage).
fn match_doc(query: &str, doc: &[(String, String)]) -> Option<(String, f64)> {
    let n = normalize(query);
    for (id, q) in doc {
        let d = normalize(q);
        if n == d {
            return Some((id.clone(), 1.0));
        }
        let scaled = [
            format!("100*{d}"),
            format!("100*({d})"),
            format!("({d})*100"),
        ];
        if scaled.contains(&n) {
            return Some((id.clone(), 100.0));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------

type Labels = BTreeMap<String, String>;

/// The document's ids `expectation` knows.
const EXPECTED_IDS: [&str; 21] = [
    "request-share",
    "request-share-gateway",
    "requests-by-reason",
    "reason-share",
    "rule-matches",
    "goal-conversion",
    "success-rate",
    "responses-by-class",
    "grpc-outcomes",
    "latency-p99",
    "latency-p50",
    "weight-in-force",
    "brake-tripped",
    "brake-trips",
    "wasm-memory",
    "canary-success-rate",
    "canary-error-rate",
    "canary-p99",
    "canary-share",
    "canary-response-series",
    "canary-latency-series",
];

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Equal within 1e-6 (relative to max(1, |value|)).
    Close(f64),
    /// lo <= value < hi, and not NaN.
    Within(f64, f64),
    /// A positive whole number of 64 KiB pages, at most 1 GiB.
    Pages,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the document's query `id` must return for `t`, as (labels, expectation)
/// for each series, all series listed. `k` is the factor rate() applies to every
/// counter's increase (see the module comment). `None`: the test knows no such id.
fn expectation(id: &str, t: &Traffic, k: f64, instance: &str) -> Option<Vec<(Labels, Expect)>> {
    let total = t.total() as f64;
    let req = |s: &str, r: &str| {
        t.requests
            .get(&(s.to_string(), r.to_string()))
            .copied()
            .unwrap_or(0) as f64
    };
    let resp = |s: &str, c: &str| {
        t.responses
            .get(&(s.to_string(), c.to_string()))
            .copied()
            .unwrap_or(0) as f64
    };
    let per_subset = |f: &dyn Fn(&str) -> Expect| -> Vec<(Labels, Expect)> {
        SUBSETS
            .iter()
            .map(|s| (labels(&[("subset", s)]), f(s)))
            .collect()
    };
    let single = |e: Expect| vec![(Labels::new(), e)];
    // Envoy's first bucket is 0.5 ms and the demo answers locally: anything at or
    // above the 5 ms bucket is a broken histogram or query.
    let fast = Expect::Within(0.0, 5.0);
    let v2_total = t.responses_of("v2", None, None) as f64;
    Some(match id {
        "request-share" | "request-share-gateway" => {
            per_subset(&|s| Expect::Close(t.requests_of(s) as f64 / total))
        }
        "requests-by-reason" => SUBSETS
            .iter()
            .flat_map(|s| {
                REASONS.iter().map(move |r| {
                    (
                        labels(&[("subset", s), ("reason", r)]),
                        Expect::Close(req(s, r) * k),
                    )
                })
            })
            .collect(),
        "reason-share" => SUBSETS
            .iter()
            .flat_map(|s| {
                REASONS.iter().map(move |r| {
                    (
                        labels(&[("subset", s), ("reason", r)]),
                        Expect::Close(req(s, r) / t.requests_of(s) as f64),
                    )
                })
            })
            .collect(),
        "rule-matches" => RULES
            .iter()
            .map(|r| {
                let n = t.rules.get(*r).copied().unwrap_or(0) as f64;
                (labels(&[("rule", r)]), Expect::Close(n * k))
            })
            .collect(),
        "goal-conversion" => SUBSETS
            .iter()
            .map(|s| {
                let done = t.goals.get(*s).copied().unwrap_or(0) as f64;
                (
                    labels(&[("goal", "checkout"), ("subset", s)]),
                    Expect::Close(done / t.requests_of(s) as f64),
                )
            })
            .collect(),
        "success-rate" => per_subset(&|s| {
            Expect::Close(
                t.responses_of(s, None, Some(&FAILURES)) as f64
                    / t.responses_of(s, None, None) as f64,
            )
        }),
        "responses-by-class" => SUBSETS
            .iter()
            .flat_map(|s| {
                all_classes().into_iter().map(move |c| {
                    (
                        labels(&[("subset", s), ("class", c)]),
                        Expect::Close(resp(s, c) * k),
                    )
                })
            })
            .collect(),
        // Every subset's gRPC outcome series, all at 0 with this HTTP-only traffic.
        "grpc-outcomes" => SUBSETS
            .iter()
            .flat_map(|s| {
                GRPC_CLASSES.iter().map(move |c| {
                    (
                        labels(&[("subset", s), ("class", c)]),
                        Expect::Close(resp(s, c) * k),
                    )
                })
            })
            .collect(),
        "latency-p99" | "latency-p50" => per_subset(&|_| fast),
        "weight-in-force" => WEIGHT_PERCENT
            .iter()
            .map(|(s, w)| (labels(&[("subset", s)]), Expect::Close(*w)))
            .collect(),
        // Only v2 has a brake; it tripped once and stays tripped.
        "brake-tripped" | "brake-trips" => vec![(labels(&[("subset", "v2")]), Expect::Close(1.0))],
        "wasm-memory" => vec![(labels(&[("instance", instance)]), Expect::Pages)],
        "canary-success-rate" => single(Expect::Close(
            t.responses_of("v2", None, Some(&FAILURES)) as f64 / v2_total,
        )),
        "canary-error-rate" => single(Expect::Close(
            t.responses_of("v2", Some(&FAILURES), None) as f64 / v2_total,
        )),
        "canary-p99" => single(fast),
        "canary-share" => single(Expect::Close(t.requests_of("v2") as f64 / total)),
        // One proxy: a series per status class and gRPC outcome; a bucket per
        // bound of Envoy's default histogram (0.5 ms ... 3600000 ms, 19 bounds)
        // and +Inf.
        "canary-response-series" => single(Expect::Close(all_classes().len() as f64)),
        "canary-latency-series" => single(Expect::Close(20.0)),
        _ => return None,
    })
}

fn scaled(e: Expect, by: f64) -> Expect {
    match e {
        Expect::Close(v) => Expect::Close(v * by),
        Expect::Within(lo, hi) => Expect::Within(lo * by, hi * by),
        Expect::Pages => Expect::Pages,
    }
}

fn holds(e: Expect, v: f64) -> bool {
    match e {
        Expect::Close(want) => (v - want).abs() <= 1e-6 * want.abs().max(1.0),
        Expect::Within(lo, hi) => v >= lo && v < hi,
        Expect::Pages => {
            v > 0.0 && v <= 1_073_741_824.0 && v.fract() == 0.0 && (v as u64) % 65_536 == 0
        }
    }
}

/// An instant query evaluated at `at` (Unix seconds): every query of the test at
/// the same instant sees the same samples.
fn query_at(prom: &Prometheus, query: &str, at: f64) -> serde_json::Value {
    let path = format!(
        "/api/v1/query?query={}&time={at:.3}",
        common::prometheus::url_encode(query)
    );
    let r = one_shot(prom.addr, "GET", &path, &[]).expect("query prometheus");
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("prometheus answered {} {:?}: {e}", r.status, r.body_str()))
}

/// The one value of a query that must answer one sample, at `at`.
fn value_at(prom: &Prometheus, query: &str, at: f64) -> f64 {
    let doc = query_at(prom, query, at);
    assert_eq!(doc["status"], "success", "{query}: {doc}");
    let result = doc["data"]["result"].as_array().expect("a vector");
    assert_eq!(result.len(), 1, "one sample for {query}: {doc}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

/// Evaluate one query; compare its series (all of them, no more, no fewer) with
/// the expectation. An error message, or None when it holds.
fn check(
    prom: &Prometheus,
    what: &str,
    query: &str,
    want: &[(Labels, Expect)],
    scale: f64,
    at: f64,
) -> Option<String> {
    let doc = query_at(prom, query, at);
    if doc["status"] != "success" {
        return Some(format!(
            "{what}: Prometheus refused\n    {query}\n  : {doc}"
        ));
    }
    let data = &doc["data"];
    let parse = |v: &serde_json::Value| -> f64 {
        match v[1].as_str().unwrap_or("?") {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().unwrap_or(f64::NAN),
        }
    };
    let got: Vec<(Labels, f64)> = if data["resultType"] == "scalar" {
        vec![(Labels::new(), parse(&data["result"]))]
    } else {
        data["result"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let l: Labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| *k != "__name__")
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                (l, parse(&r["value"]))
            })
            .collect()
    };
    let got_map: BTreeMap<Labels, f64> = got.iter().cloned().collect();
    let want_sets: BTreeSet<&Labels> = want.iter().map(|(l, _)| l).collect();
    let got_sets: BTreeSet<&Labels> = got_map.keys().collect();
    if got_map.len() != got.len() || want_sets != got_sets {
        return Some(format!(
            "{what}: series\n    {query}\n  got {got:?}\n  want {want:?}"
        ));
    }
    let bad: Vec<String> = want
        .iter()
        .filter_map(|(l, e)| {
            let e = scaled(*e, scale);
            let v = got_map[l];
            (!holds(e, v)).then(|| format!("{l:?}: got {v}, want {e:?}"))
        })
        .collect();
    (!bad.is_empty()).then(|| format!("{what}:\n    {query}\n  {}", bad.join("\n  ")))
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

/// The shipped files' queries, before any Envoy starts: the document's structure
/// and the dashboard's rule fail fast.
#[test]
fn every_shipped_query_is_a_query_of_the_document() {
    let doc = doc_queries(
        "istio/prometheus-queries.md",
        &read_repo_file("istio/prometheus-queries.md"),
    );
    let mut problems = Vec::new();
    for (title, expr) in dashboard_exprs(&read_repo_file("dashboards/canary-router.json")) {
        match match_doc(&expr, &doc) {
            Some((_, 1.0)) => {}
            _ => problems.push(format!(
                "dashboard panel {title:?}: not a query of the document (modulo whitespace and window): {expr}"
            )),
        }
        if expr.matches('[').count() != expr.matches("[$__rate_interval]").count() {
            problems.push(format!(
                "dashboard panel {title:?}: every window is [$__rate_interval]: {expr}"
            ));
        }
    }
    // Each id the test has an expectation for is still in the document.
    for id in EXPECTED_IDS {
        if !doc.iter().any(|(d, _)| d == id) {
            problems.push(format!(
                "istio/prometheus-queries.md: no query `### {id}` (the test expects it)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_shipped_query_gives_what_the_traffic_implies() {
    // Read everything first: a file without queries fails before any process runs.
    let doc_text = read_repo_file("istio/prometheus-queries.md");
    let doc = doc_queries("istio/prometheus-queries.md", &doc_text);
    let dashboard = dashboard_exprs(&read_repo_file("dashboards/canary-router.json"));
    let flagger = flagger_queries(&read_repo_file("istio/flagger-metric-template.yaml"));
    let rollout = rollout_queries();
    // README.md and every docs/*.md: any PromQL a user may copy.
    let mut prose = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    docs.sort();
    prose.extend(docs);
    let readme: Vec<(String, String)> = prose
        .iter()
        .flat_map(|file| {
            readme_queries(&read_repo_file(file))
                .into_iter()
                .map(move |q| (file.clone(), q))
        })
        .collect();

    // (where, query text as sent, doc id, scale)
    let mut to_run: Vec<(String, String, String, f64)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for (id, q) in &doc {
        let sent = with_window(q).replace(GATEWAY_SELECTOR, TEST_SELECTOR);
        to_run.push((
            format!("istio/prometheus-queries.md#{id}"),
            sent,
            id.clone(),
            1.0,
        ));
    }
    let others = dashboard
        .iter()
        .map(|(title, q)| (format!("dashboards/canary-router.json panel {title:?}"), q))
        .chain(
            flagger
                .iter()
                .map(|q| ("istio/flagger-metric-template.yaml".to_string(), q)),
        )
        .chain(
            rollout
                .iter()
                .map(|q| ("istio/rollout.sh --dry-run".to_string(), q)),
        )
        .chain(readme.iter().map(|(file, q)| (file.clone(), q)));
    for (place, q) in others {
        match match_doc(q, &doc) {
            Some((id, scale)) => {
                let sent = with_window(q).replace(GATEWAY_SELECTOR, TEST_SELECTOR);
                to_run.push((format!("{place} (as {id})"), sent, id, scale));
            }
            None => problems.push(format!(
                "{place}: no expectation for this query (it is none of istio/prometheus-queries.md's, modulo whitespace, window and a 100x scale):\n    {q}"
            )),
        }
    }

    let mut envoy = Envoy::start(&config(), Opts::default());
    let admin = envoy.admin_addr().to_string();
    let prom = Prometheus::start(&[envoy.admin_addr()]);
    let t0 = Instant::now();
    // Every counter scraped at 0 before the first request (the premise of exact
    // ratios): 10 request series, 14 response series (7 classes per subset), 3
    // rules, the brake's counter.
    let zero = "sum(canary_requests) + sum(canary_responses) + sum(canary_rule_matches) + sum(canary_brake_trips)";
    prom.wait_for(zero, Duration::from_secs(60), |s| {
        s.len() == 1 && s[0].value == 0.0
    });
    let counts = "count(canary_requests) + count(canary_responses) + count(canary_rule_matches)";
    let series = SUBSETS.len() * (REASONS.len() + all_classes().len()) + RULES.len();
    assert_eq!(
        prom.value(counts),
        series as f64,
        "every counter series exists at 0"
    );

    let traffic = send_traffic(&mut envoy);
    let total = traffic.total();

    // Wait until Prometheus holds all of it: counters, histograms (merged on
    // Envoy's 1 s flush), the brake.
    let limit = Duration::from_secs(90);
    prom.wait_for("sum(canary_requests)", limit, |s| {
        s.len() == 1 && s[0].value == total as f64
    });
    prom.wait_for("sum(canary_responses)", limit, |s| {
        s.len() == 1 && s[0].value == total as f64
    });
    for s in SUBSETS {
        let n = traffic.responses_of(s, None, None) as f64;
        prom.wait_for(
            &format!("sum(canary_response_duration_ms_count{{subset=\"{s}\"}})"),
            limit,
            |x| x.len() == 1 && x[0].value == n,
        );
    }
    prom.wait_for(
        "sum(canary_brake_tripped) + sum(canary_brake_trips)",
        limit,
        |s| s.len() == 1 && s[0].value == 2.0,
    );
    assert!(
        t0.elapsed() < Duration::from_secs(WINDOW_SECS as u64 - 60),
        "the test outlived its window ({WINDOW}): ratios would no longer be exact"
    );

    // One instant for every query, in the past by more than any scrape takes to be
    // stored: later scrapes (same values) would move rate()'s extrapolation
    // between two queries. The scrape holding all the traffic is at or before it.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));

    // The one factor rate() applies to every counter here: between 1/W (no
    // extrapolation) and 1.5/W (at most half a scrape interval over a run of
    // several seconds).
    let k = value_at(&prom, &format!("sum(rate(canary_requests[{WINDOW}]))"), at) / total as f64;
    assert!(
        (1.0..1.5).contains(&(k * WINDOW_SECS)),
        "rate factor {} x window: the first samples were not 0, or extrapolation is off",
        k * WINDOW_SECS
    );

    let ids: BTreeSet<&str> = doc.iter().map(|(id, _)| id.as_str()).collect();
    for (id, _) in &doc {
        if expectation(id, &traffic, k, &admin).is_none() {
            problems.push(format!(
                "istio/prometheus-queries.md#{id}: the test has no expectation for this query"
            ));
        }
    }
    for (place, query, id, scale) in &to_run {
        if !ids.contains(id.as_str()) {
            continue;
        }
        if id == "wasm-memory" && common::wasm_only("#wasm-memory reads the Wasm VM's memory gauge")
        {
            continue;
        }
        if let Some(want) = expectation(id, &traffic, k, &admin) {
            if let Some(p) = check(&prom, place, query, &want, *scale, at) {
                problems.push(p);
            }
        }
    }
    // p50 <= p99 per subset.
    let by_subset = |id: &str| -> BTreeMap<String, f64> {
        let text = &doc.iter().find(|(i, _)| i == id).unwrap().1;
        let answer = query_at(&prom, &with_window(text), at);
        answer["data"]["result"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["metric"]["subset"].as_str().unwrap_or("").to_string(),
                    r["value"][1]
                        .as_str()
                        .unwrap_or("NaN")
                        .parse()
                        .unwrap_or(f64::NAN),
                )
            })
            .collect()
    };
    if ids.contains("latency-p50") && ids.contains("latency-p99") {
        let (p50, p99) = (by_subset("latency-p50"), by_subset("latency-p99"));
        for s in SUBSETS {
            let (lo, hi) = (p50.get(s), p99.get(s));
            if !lo.zip(hi).is_some_and(|(lo, hi)| lo <= hi) {
                problems.push(format!("{s}: p50 {lo:?} not at or below p99 {hi:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with the shipped queries (traffic: {traffic:?}, rate factor x window {}):\n{}",
        problems.len(),
        k * WINDOW_SECS,
        problems.join("\n")
    );
    eprintln!(
        "checked {} queries ({} in the document) against {total} requests",
        to_run.len(),
        doc.len()
    );
}
