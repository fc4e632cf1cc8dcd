#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Bad configurations are refused: the filter logs ONE line
//! `canary-router: config: <field path>: <problem>` and Envoy does not serve
//! with it. With a static listener, Envoy 1.40 refuses the whole bootstrap
//! ("Unable to create Wasm plugin canary-router") and exits with status 1
//! before the admin interface says ready; the harness asserts exactly that.

mod common;

use common::*;
use serde_json::{json, Value};

const MARK: &str = "canary-router: config: ";

enum Path<'a> {
    /// The line names exactly this field path: `canary-router: config: <path>: ...`.
    Exact(&'a str),
    /// The line's path is this field or below it (`<path>` then `.`/`[`/`:`).
    Within(&'a str),
    /// The path is not settled (the document itself); the line must mention this.
    Mentions(&'a str),
}

/// Start Envoy with `config`, expect the refusal, check the one line.
fn refused(config: &str, path: Path<'_>, opts: Opts) -> String {
    let log = Envoy::start_expect_failure(config, opts);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(MARK)).collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one `{MARK}` line for {config:?}, got {lines:#?}"
    );
    let line = lines[0];
    eprintln!("refused: {}", &line[line.find(MARK).unwrap()..]);
    assert!(line.contains("[error]"), "logged as an error: {line}");
    let msg = &line[line.find(MARK).unwrap() + MARK.len()..];
    match path {
        Path::Exact(p) => assert!(
            msg.starts_with(&format!("{p}: ")),
            "want the field path `{p}` in: {line}"
        ),
        Path::Within(p) => {
            let rest = msg
                .strip_prefix(p)
                .unwrap_or_else(|| panic!("want `{p}` in: {line}"));
            assert!(
                rest.starts_with(": ") || rest.starts_with('.') || rest.starts_with('['),
                "want the field path `{p}` (or below it) in: {line}"
            );
        }
        Path::Mentions(word) => assert!(msg.contains(word), "want `{word}` in: {line}"),
    }
    // The problem itself is said, after the path.
    let problem = msg.split_once(": ").map_or("", |(_, p)| p);
    assert!(
        problem.trim().len() >= 5,
        "a problem after the path: {line}"
    );
    // And Envoy refused the plugin rather than serving without it.
    assert!(
        log.contains("Unable to create Wasm plugin canary-router"),
        "Envoy's own refusal line"
    );
    line.to_string()
}

fn base() -> Value {
    json!({
        "subsets": [ {"name": "v1", "weight": 90}, {"name": "v2", "weight": 10} ],
        "rules": [
            {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}}
        ]
    })
}

fn with(f: impl FnOnce(&mut Value)) -> String {
    let mut c = base();
    f(&mut c);
    c.to_string()
}

#[test]
fn the_base_configuration_is_accepted() {
    // The cases below each break one thing of this configuration.
    let mut envoy = Envoy::start(&base().to_string(), Opts::default());
    let d = envoy.decide("/", &h(&[("x-canary", "always")]));
    assert_eq!(d.rule.as_deref(), Some("qa"));
    assert!(!envoy.log().contains(MARK));
}

#[test]
fn weights_summing_to_120() {
    let line = refused(
        &with(|c| c["subsets"][1]["weight"] = json!(30)),
        Path::Exact("subsets[1].weight"),
        Opts::default(),
    );
    assert!(line.contains("120"), "says the sum: {line}");
}

#[test]
fn weights_summing_to_120_with_two_workers() {
    // Still one line: the configuration is refused before any worker loads it.
    refused(
        &with(|c| c["subsets"][1]["weight"] = json!(30)),
        Path::Exact("subsets[1].weight"),
        Opts::default().concurrency(2),
    );
}

#[test]
fn weights_summing_to_99_99() {
    refused(
        &with(|c| c["subsets"][1]["weight"] = json!(9.99)),
        Path::Exact("subsets[1].weight"),
        Opts::default(),
    );
}

#[test]
fn a_weight_finer_than_a_hundredth() {
    refused(
        &with(|c| {
            c["subsets"][0]["weight"] = json!(89.995);
            c["subsets"][1]["weight"] = json!(10.005);
        }),
        Path::Exact("subsets[0].weight"),
        Opts::default(),
    );
}

#[test]
fn a_negative_weight() {
    refused(
        &with(|c| {
            c["subsets"][0]["weight"] = json!(100);
            c["subsets"][1]["weight"] = json!(-10);
        }),
        Path::Exact("subsets[1].weight"),
        Opts::default(),
    );
}

#[test]
fn a_typo_in_a_field_name() {
    let line = refused(
        &json!({"subsets": [ {"name": "v1", "weight": 90}, {"name": "v2", "wieght": 10} ]})
            .to_string(),
        Path::Exact("subsets[1].wieght"),
        Opts::default(),
    );
    assert!(
        line.contains("unknown"),
        "says the field is unknown: {line}"
    );
}

#[test]
fn an_unknown_top_level_field() {
    refused(
        &with(|c| c["rule"] = json!([])),
        Path::Exact("rule"),
        Opts::default(),
    );
}

#[test]
fn a_rule_naming_an_unknown_subset() {
    let line = refused(
        &with(|c| c["rules"][0]["subset"] = json!("v3")),
        Path::Exact("rules[0].subset"),
        Opts::default(),
    );
    assert!(line.contains("v3"), "names the subset: {line}");
}

#[test]
fn an_unknown_default_subset() {
    refused(
        &with(|c| c["default_subset"] = json!("stable")),
        Path::Exact("default_subset"),
        Opts::default(),
    );
}

#[test]
fn an_empty_configuration() {
    refused("", Path::Mentions("subsets"), Opts::default());
}

#[test]
fn an_empty_object() {
    refused("{}", Path::Mentions("subsets"), Opts::default());
}

#[test]
fn no_subsets() {
    refused(
        &with(|c| c["subsets"] = json!([])),
        Path::Exact("subsets"),
        Opts::default(),
    );
}

#[test]
fn seventeen_subsets() {
    let subsets: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("s{i}"), "weight": if i == 0 { 84 } else { 1 }}))
        .collect();
    refused(
        &json!({ "subsets": subsets }).to_string(),
        Path::Exact("subsets"),
        Opts::default(),
    );
}

#[test]
fn invalid_json() {
    refused(
        r#"{"subsets": [ {"name": "v1", "#,
        Path::Mentions("JSON"),
        Opts::default(),
    );
}

#[test]
fn a_subset_name_out_of_the_allowed_alphabet() {
    refused(
        &with(|c| c["subsets"][1]["name"] = json!("V2.beta")),
        Path::Exact("subsets[1].name"),
        Opts::default(),
    );
}

#[test]
fn duplicate_subset_names() {
    refused(
        &with(|c| c["subsets"][1]["name"] = json!("v1")),
        Path::Exact("subsets[1].name"),
        Opts::default(),
    );
}

#[test]
fn a_rule_with_two_operators() {
    refused(
        &with(|c| c["rules"][0]["match"]["header"]["prefix"] = json!("al")),
        Path::Within("rules[0].match.header"),
        Opts::default(),
    );
}

#[test]
fn a_rule_without_an_operator() {
    refused(
        &with(|c| c["rules"][0]["match"]["header"] = json!({"name": "x-canary"})),
        Path::Within("rules[0].match.header"),
        Opts::default(),
    );
}

#[test]
fn a_rule_with_two_sources() {
    refused(
        &with(|c| {
            c["rules"][0]["match"]["cookie"] = json!({"name": "beta", "exact": "true"});
        }),
        Path::Exact("rules[0].match"),
        Opts::default(),
    );
}

#[test]
fn a_bad_regex() {
    refused(
        &with(|c| c["rules"][0]["match"]["header"] = json!({"name": "x-canary", "regex": "([a-z"})),
        Path::Exact("rules[0].match.header.regex"),
        Opts::default(),
    );
}

#[test]
fn an_unknown_jwt_source() {
    refused(
        &with(|c| c["jwt"] = json!({"source": "trust_me"})),
        Path::Exact("jwt.source"),
        Opts::default(),
    );
}

#[test]
fn a_sticky_key_with_no_source() {
    refused(
        &with(|c| c["sticky"] = json!({"keys": [ {"header": "x-user-id"}, {} ]})),
        Path::Within("sticky.keys[1]"),
        Opts::default(),
    );
}

#[test]
fn a_wrong_type() {
    refused(
        &with(|c| c["subsets"][0]["weight"] = json!("90")),
        Path::Exact("subsets[0].weight"),
        Opts::default(),
    );
}
