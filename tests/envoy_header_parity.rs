//! Header rules decide as Envoy 1.40's own route header matchers do.
//!
//! ONE real Envoy, two listeners side by side: one routes with Envoy's native
//! route `headers` matchers (`string_match` exact/prefix/contains/safe_regex,
//! `present_match`, and `invert_match`), one runs the filter with the
//! equivalent rules and says which rule matched in its decision header. A
//! generated corpus (single and repeated headers, empty values, non-ASCII and
//! non-UTF-8 bytes, headers Envoy stores once and joins) goes to both; they
//! must agree on every request, except for the documented deliberate
//! differences, which must differ exactly as documented.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use canary_router::rng::SplitMix64;
use common::side_by_side::{answer, hcm, listener, start, wasm_filter};
use common::*;
use serde_json::{json, Value};

const DECISION: &str = "x-canary-decision";

/// How a native route relates to the filter's rule on the same request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    /// The native matcher is the rule's equivalent: the same answer.
    Same,
    /// The native matcher inverted (`invert_match`): matches when the header
    /// is present and the rule does not match.
    Inverted,
    /// Envoy's `contains` is a substring, the filter's a token (documented):
    /// they may differ only where a value holds the text but not as a token.
    Substring,
}

struct Case {
    /// The header the rule reads.
    header: String,
    /// The rule's operand (`{"exact": ...}`), on `header`.
    operand: Value,
    /// Native matchers on `header` (without the name) and how each relates.
    natives: Vec<(Value, Relation)>,
}

fn case(header: &str, operand: Value, natives: Vec<(Value, Relation)>) -> Case {
    Case {
        header: header.to_owned(),
        operand,
        natives,
    }
}

fn exact(v: &str) -> Value {
    json!({"string_match": {"exact": v}})
}

fn regex(p: &str) -> Value {
    json!({"string_match": {"safe_regex": {"regex": p}}})
}

fn inverted(mut m: Value) -> Value {
    m["invert_match"] = json!(true);
    m
}

/// RE2 syntax for the literal `s`.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `in` as Envoy says it: an alternation of literals.
fn one_of(list: &[&str]) -> Value {
    let alternatives: Vec<String> = list.iter().map(|s| escape(s)).collect();
    regex(&format!("(?:{})", alternatives.join("|")))
}

/// A token of a value split at spaces, tabs and commas, as Envoy says it.
fn token(t: &str) -> Value {
    regex(&format!("(?:.*[ \\t,])?{}(?:[ \\t,].*)?", escape(t)))
}

fn cases() -> Vec<Case> {
    use Relation::*;
    let x = |i: usize| format!("x-p{i}");
    let mut n = 0;
    let mut next = || {
        n += 1;
        x(n)
    };
    vec![
        case(
            &next(),
            json!({"exact": "always"}),
            vec![
                (exact("always"), Same),
                (inverted(exact("always")), Inverted),
            ],
        ),
        case(&next(), json!({"exact": ""}), vec![(exact(""), Same)]),
        case(&next(), json!({"exact": "a,b"}), vec![(exact("a,b"), Same)]),
        case(&next(), json!({"exact": "é"}), vec![(exact("é"), Same)]),
        case(
            &next(),
            json!({"prefix": "Leg"}),
            vec![
                (json!({"string_match": {"prefix": "Leg"}}), Same),
                (
                    inverted(json!({"string_match": {"prefix": "Leg"}})),
                    Inverted,
                ),
            ],
        ),
        case(
            &next(),
            json!({"prefix": "a,"}),
            vec![(json!({"string_match": {"prefix": "a,"}}), Same)],
        ),
        case(
            &next(),
            json!({"present": true}),
            vec![
                (json!({"present_match": true}), Same),
                (json!({"present_match": false, "invert_match": true}), Same),
            ],
        ),
        case(
            &next(),
            json!({"present": false}),
            vec![
                (json!({"present_match": false}), Same),
                (json!({"present_match": true, "invert_match": true}), Same),
            ],
        ),
        case(
            &next(),
            json!({"in": ["always", "a", "é"]}),
            vec![(one_of(&["always", "a", "é"]), Same)],
        ),
        case(
            &next(),
            json!({"in": ["", "ab", "a.b"]}),
            vec![(one_of(&["", "ab", "a.b"]), Same)],
        ),
        case(
            &next(),
            json!({"contains": "dark"}),
            vec![
                (token("dark"), Same),
                (json!({"string_match": {"contains": "dark"}}), Substring),
            ],
        ),
        case(
            &next(),
            json!({"regex": ".{3,8}"}),
            vec![
                (regex(".{3,8}"), Same),
                (inverted(regex(".{3,8}")), Inverted),
            ],
        ),
        case(
            &next(),
            json!({"regex": "caf."}),
            vec![(regex("caf."), Same)],
        ),
        case(&next(), json!({"regex": "a.*"}), vec![(regex("a.*"), Same)]),
        case(
            &next(),
            json!({"regex": "[^a]*"}),
            vec![(regex("[^a]*"), Same)],
        ),
        case(&next(), json!({"regex": "é+"}), vec![(regex("é+"), Same)]),
        case(
            &next(),
            json!({"regex": "(?i)always"}),
            vec![(regex("(?i)always"), Same)],
        ),
        case(
            &next(),
            json!({"regex": "\\xE9.*"}),
            vec![(regex("\\xE9.*"), Same)],
        ),
        case(
            &next(),
            json!({"regex": "[a-z]*"}),
            vec![(regex("[a-z]*"), Same)],
        ),
        case(
            &next(),
            json!({"regex": "\\w+"}),
            vec![(regex("\\w+"), Same)],
        ),
        case(
            &next(),
            json!({"regex": "[^,]*,[^,]*"}),
            vec![(regex("[^,]*,[^,]*"), Same)],
        ),
        // Headers Envoy stores once, joining repeats with ",": one value for
        // Envoy's matchers and for the filter alike.
        case(
            "user-agent",
            json!({"prefix": "Leg"}),
            vec![(json!({"string_match": {"prefix": "Leg"}}), Same)],
        ),
        case("referer", json!({"exact": "a"}), vec![(exact("a"), Same)]),
        case(
            "x-forwarded-for",
            json!({"regex": ".{3,8}"}),
            vec![(regex(".{3,8}"), Same)],
        ),
        case(
            "accept",
            json!({"in": ["a", "ab"]}),
            vec![(one_of(&["a", "ab"]), Same)],
        ),
        case(
            "authorization",
            json!({"present": false}),
            vec![(json!({"present_match": false}), Same)],
        ),
        case(
            "content-type",
            json!({"exact": ""}),
            vec![(exact(""), Same)],
        ),
        case(
            "cache-control",
            json!({"contains": "dark"}),
            vec![(token("dark"), Same)],
        ),
        case(
            "origin",
            json!({"regex": "[^,]*,[^,]*"}),
            vec![(regex("[^,]*,[^,]*"), Same)],
        ),
    ]
}

/// Header values sent (Envoy trims spaces and tabs at both ends of each).
const VALUES: &[&[u8]] = &[
    b"",
    b"a",
    b"ab",
    b"a.b",
    b"always",
    b"Always",
    b"ALWAYS",
    b"a,b",
    b"always,always",
    b"a b",
    b"Legacy/1",
    b"Leg",
    b"Mozilla Legacy",
    b"dark",
    b"darker",
    b"x dark",
    b"a,dark",
    b"x,darkish",
    b"\xc3\xa9",
    b"\xc3\xa9\xc3\xa9",
    b"caf\xc3\xa9",
    b"caf\xe9",
    b"\xe9",
    b"\xe9abc",
    b"\xff",
    b"ab\xffcd",
    b"\xc3\x28",
    b"2.15",
    b"abcdefghij",
    b"z",
    b"a\tb",
    b"  padded  ",
    b"\xa0a",
    b"\xc2\xa0a",
    b"\t a \t",
];

/// Cookie cases for the rule `{"cookie": {"name": "beta", "exact": "true"}}`
/// and its native equivalent, a regex on each `cookie` header: the cookie
/// headers sent, and (filter, Envoy) as documented.
fn cookie_cases() -> Vec<(Vec<&'static [u8]>, bool, bool, &'static str)> {
    vec![
        (vec![b"beta=true"], true, true, "agree"),
        (vec![b"a=1; beta=true; b=2"], true, true, "agree"),
        (vec![b"a=1;beta=true ;b=2"], true, true, "agree"),
        (vec![b"beta=truex"], false, false, "agree"),
        (vec![b"xbeta=true"], false, false, "agree"),
        (vec![b""], false, false, "agree"),
        (vec![b"a=1", b"beta=true"], true, true, "agree"),
        (vec![b"beta=true; beta=false"], true, true, "agree"),
        (
            vec![b"beta=\"true\""],
            true,
            false,
            "quoted value read unquoted",
        ),
        (vec![b"beta = true"], true, false, "blanks around = trimmed"),
        (
            vec![b"a=1; beta\t=\ttrue"],
            true,
            false,
            "blanks around = trimmed",
        ),
        (
            vec![b"beta=false; beta=true"],
            false,
            true,
            "first cookie wins",
        ),
        (
            vec![b"beta=false", b"beta=true"],
            false,
            true,
            "first cookie wins",
        ),
    ]
}

const COOKIE_NATIVE: &str = "(?:.*;[ \\t]*)?beta=true(?:[ \\t]*;.*)?";

/// The filter's plugin configuration: rule `r{i}` for case `i`, `ck` for the
/// cookie, all routing to v2 (weight 0: only a rule can pick it).
fn plugin_config(cases: &[Case]) -> String {
    let mut rules: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut operand = c.operand.clone();
            operand["name"] = json!(c.header);
            json!({"name": format!("r{i}"), "subset": "v2", "match": {"header": operand}})
        })
        .collect();
    rules.push(json!({"name": "ck", "subset": "v2",
        "match": {"cookie": {"name": "beta", "exact": "true"}}}));
    json!({
        "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
        "rules": rules,
        "decision_header": DECISION,
    })
    .to_string()
}

/// The bootstrap: admin, the native listener (`/r/<case>/<native>` answers
/// "match" when that native matcher matches) and the filter's listener.
fn bootstrap(cases: &[Case], admin: u16, native: u16, filter: u16) -> String {
    let mut routes = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for (k, (matcher, _)) in c.natives.iter().enumerate() {
            let mut matcher = matcher.clone();
            matcher["name"] = json!(c.header);
            routes.push(json!({
                "match": {"path": format!("/r/{i}/{k}"), "headers": [matcher]},
                "direct_response": answer("match"),
            }));
        }
    }
    routes.push(json!({
        "match": {"path": "/cookie", "headers": [{"name": "cookie",
            "string_match": {"safe_regex": {"regex": COOKIE_NATIVE}}}]},
        "direct_response": answer("match"),
    }));
    routes.push(json!({"match": {"prefix": "/"}, "direct_response": answer("no")}));
    let wasm = wasm_filter(&plugin_config(cases));
    let filter_routes = vec![json!({"match": {"prefix": "/"}, "direct_response": answer("ok")})];
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [
            listener("native", native, hcm("native", routes, vec![], false)),
            listener("filter", filter, hcm("filter", filter_routes, vec![wasm], false)),
        ]},
    })
    .to_string()
}

/// The rule named in the filter's decision header, if any.
fn matched_rule(response: &Response) -> Option<String> {
    let decision = response
        .header(DECISION)
        .unwrap_or_else(|| panic!("no decision header: {response:?}"));
    decision
        .split("; ")
        .find_map(|f| f.strip_prefix("rule="))
        .map(str::to_owned)
}

fn native_matched(response: &Response) -> bool {
    assert_eq!(response.status, 200, "{response:?}");
    match response.body_str().as_str() {
        "match" => true,
        "no" => false,
        other => panic!("native listener answered {other:?}"),
    }
}

/// The value as Envoy keeps it: spaces and tabs at both ends removed.
fn trimmed(v: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !blank(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

#[test]
fn header_rules_decide_as_envoys_route_matchers() {
    if common::wasm_only("builds its own Wasm listener beside Envoy's native header routing") {
        return;
    }
    let cases = cases();
    let (admin, native_port, filter_port) = (reserve_port(), reserve_port(), reserve_port());
    let _envoy = start(&bootstrap(&cases, admin, native_port, filter_port), admin);
    let mut native = Client::new(([127, 0, 0, 1], native_port).into());
    let mut filter = Client::new(([127, 0, 0, 1], filter_port).into());
    // Every `present: false` rule but the one under test sees its header, so
    // that only the rule under test can match.
    let blockers: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].operand.get("present") == Some(&json!(false)))
        .collect();

    let mut rng = SplitMix64::new(0x5eed_2026);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    const PER_CASE: usize = 100;
    let (mut requests, mut compared, mut agreed) = (0usize, 0usize, 0usize);
    let mut substring_differences = 0usize;
    let mut repeated = 0usize;
    let mut disagreements = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for n in 0..PER_CASE {
            // 0 to 3 copies; a few in upper case (Envoy lowercases names).
            let copies = [0, 1, 1, 2, 2, 3][pick(6)];
            let name = if n % 9 == 4 {
                case.header.to_ascii_uppercase()
            } else {
                case.header.clone()
            };
            let values: Vec<&[u8]> = (0..copies).map(|_| VALUES[pick(VALUES.len())]).collect();
            repeated += usize::from(copies > 1);
            let mut headers: Vec<(&str, &[u8])> =
                values.iter().map(|v| (name.as_str(), *v)).collect();
            for &b in blockers.iter().filter(|&&b| b != i) {
                headers.push((cases[b].header.as_str(), b"z"));
            }
            let response = filter.get("/", &headers);
            assert_eq!(response.status, 200, "{response:?}");
            let rule = matched_rule(&response);
            let filter_says = rule.as_deref() == Some(format!("r{i}").as_str());
            assert!(
                filter_says || rule.is_none(),
                "only the rule under test can match: {rule:?} on case {i}"
            );
            requests += 1;
            for (k, (_, relation)) in case.natives.iter().enumerate() {
                let envoy_says = native_matched(&native.get(&format!("/r/{i}/{k}"), &headers));
                requests += 1;
                let present = copies > 0;
                let want = match relation {
                    Relation::Same | Relation::Substring => filter_says,
                    Relation::Inverted => present && !filter_says,
                };
                if envoy_says == want {
                    compared += 1;
                    agreed += 1;
                    continue;
                }
                if *relation == Relation::Substring {
                    // Documented: Envoy finds the text inside a value, the
                    // filter only a whole token; never the other way round.
                    let token = case.operand["contains"].as_str().unwrap().as_bytes();
                    let inside = values
                        .iter()
                        .any(|v| trimmed(v).windows(token.len()).any(|w| w == token));
                    assert!(envoy_says && !filter_says && inside, "{values:?}");
                    substring_differences += 1;
                    continue;
                }
                compared += 1;
                disagreements.push(format!(
                    "case {i} {}: {} sent {:?}: filter {filter_says}, Envoy {envoy_says} ({relation:?})",
                    case.header,
                    case.operand,
                    values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect::<Vec<_>>(),
                ));
            }
        }
    }

    // Cookies: the rule against a regex on each cookie header.
    let mut cookie_differences = 0usize;
    for (sent, filter_want, envoy_want, what) in cookie_cases() {
        let mut headers: Vec<(&str, &[u8])> = sent.iter().map(|v| ("cookie", *v)).collect();
        for &b in &blockers {
            headers.push((cases[b].header.as_str(), b"z"));
        }
        let filter_says = matched_rule(&filter.get("/", &headers)).as_deref() == Some("ck");
        let envoy_says = native_matched(&native.get("/cookie", &headers));
        requests += 2;
        assert_eq!(
            (filter_says, envoy_says),
            (filter_want, envoy_want),
            "cookies {sent:?}: {what}"
        );
        if filter_want == envoy_want {
            compared += 1;
            agreed += 1;
        } else {
            cookie_differences += 1;
        }
    }

    println!(
        "Envoy vs filter: {agreed}/{compared} comparisons agree outside the documented differences ({} requests, {repeated} with a repeated header); \
         documented differences: {substring_differences} contains-as-substring, {cookie_differences} cookie",
        requests
    );
    assert!(
        disagreements.is_empty(),
        "{} of {compared} comparisons disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert_eq!(agreed, compared);
    assert!(
        substring_differences > 0,
        "the contains difference was exercised"
    );
    assert!(compared > 3000);
}
