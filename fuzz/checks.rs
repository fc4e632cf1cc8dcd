//! The invariants of the fuzz targets, shared with the corpus replay test.
//!
//! Each `fuzz/fuzz_targets/<target>.rs` calls the function of the same name here,
//! and `tests/fuzz_corpus.rs` (plain stable `cargo test`) runs every file under
//! `fuzz/seeds/<target>/`, `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/`
//! through the same function, so each corpus entry and crash reproducer is a
//! regression test. A check panics when an invariant breaks.
//!
//! Structured inputs (generated configs, cookie headers, claim trees) are decoded
//! with [`Reader`], a small deterministic byte reader, instead of `arbitrary`: the
//! test then replays them with no dependency beyond the crate's own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use canary_router::bucket::BUCKETS;
use canary_router::claims::{self, Claim, ClaimRef, JsonObject, Payload};
use canary_router::config::{self, ConfigError};
use canary_router::decide::{self, Decision};
use canary_router::formats::pairs;
use canary_router::formats::{cookie, jwt};
use canary_router::labels::Reason;
use canary_router::pin;
use canary_router::plan::{Mode, Plan};
use canary_router::request::{
    HeaderList, JsonClaims, JwtSource, LookupError, Request, RequestView,
};
use canary_router::rng::SplitMix64;
use canary_router::rules::{Condition, Input as RuleInput, Operator, Rule, Source, Test};
use serde_json::{json, Map, Value};

/// A check: panics when an invariant breaks on this input.
pub type Check = fn(&[u8]);

/// Every fuzz target and its check, by the target's name.
pub const TARGETS: &[(&str, Check)] = &[
    ("config", config),
    ("config_structured", config_structured),
    ("cookie", cookie),
    ("jwt", jwt),
    ("decide", decide),
];

// ---------------------------------------------------------------------------
// Structured input

/// Reads choices from fuzzer bytes; an exhausted input reads as zeros, so every
/// input decodes, and all-zero choices pick the plainest option.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A number in `0..n` (0 when `n` is 0 or 1).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => usize::from(self.byte()) % n,
            _ => (usize::from(self.byte()) << 8 | usize::from(self.byte())) % n,
        }
    }

    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Up to `max` raw bytes.
    pub fn take(&mut self, max: usize) -> &'a [u8] {
        let n = self.below(max + 1).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// `min..=max` bytes, each one of `alphabet`.
    pub fn chars(&mut self, alphabet: &[u8], min: usize, max: usize) -> Vec<u8> {
        let n = min + self.below(max - min + 1);
        (0..n).map(|_| self.pick(alphabet)).collect()
    }

    /// An ASCII string over `alphabet`.
    pub fn text(&mut self, alphabet: &[u8], min: usize, max: usize) -> String {
        String::from_utf8(self.chars(alphabet, min, max)).expect("ASCII alphabet")
    }

    /// Any string (arbitrary bytes, read lossily).
    pub fn any_text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.take(max)).into_owned()
    }
}

/// Does `haystack` contain `needle`?
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Is `inner` a subslice of `outer` (same memory)?
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    Some((&data[..nl], &data[nl + 1..]))
}

// ---------------------------------------------------------------------------
// config: arbitrary bytes into config::load

/// `config::load` returns, deterministically; what it accepts is a sound plan,
/// what it refuses has a field path and a problem.
pub fn config(data: &[u8]) {
    let first = config::load(data);
    let again = config::load(data);
    match (&first, &again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                format!("{:?}", a.plan),
                format!("{:?}", b.plan),
                "load is deterministic"
            );
            assert_eq!(a.warnings, b.warnings);
            check_router(&a.plan);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "load is deterministic");
            check_error(a);
        }
        _ => panic!("load is not deterministic: {first:?} then {again:?}"),
    }
    if config::parse(data).is_err() {
        assert!(first.is_err(), "parse refused what load accepted");
    }
}

/// Found by this fuzzer and fixed (src/config/reader.rs): unknown field names were
/// printed raw, so a key holding a newline split the "one line" error, and the key
/// `""` left the field path empty. Now they are escaped; every error is checked.
const UNKNOWN_FIELD_NAMES_ESCAPED: bool = true;

fn check_error(e: &ConfigError) {
    let line = e.to_string();
    assert!(line.starts_with("config: "));
    assert!(
        !e.problem.trim().is_empty(),
        "an error says the problem: {e:?}"
    );
    if UNKNOWN_FIELD_NAMES_ESCAPED || !e.problem.starts_with("unknown field `") {
        assert!(!e.path.is_empty(), "an error names a field: {e:?}");
        assert!(!line.contains(['\n', '\r']), "one log line: {line:?}");
    }
}

/// The subset-name pattern `[a-z0-9][a-z0-9_-]{0,62}`, written independently.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn source_in_range(plan: &Plan, source: Source) {
    let s = &plan.slots;
    match source {
        Source::Header(i) => assert!(i < s.header_count(), "header slot {i}"),
        Source::Cookie(i) => assert!(i < s.cookie_count(), "cookie slot {i}"),
        Source::Claim(i) => {
            assert!(i < s.claim_count(), "claim slot {i}");
            assert!(s.claim_path(i).iter().all(|seg| !seg.is_empty()));
            assert!(!s.claim_path(i).is_empty());
        }
        Source::Baggage(i) => {
            assert!(i < s.baggage_count(), "baggage slot {i}");
            let header = s
                .baggage_header()
                .expect("a baggage member read from `baggage`");
            assert!(header < s.header_count(), "header slot {header}");
        }
    }
}

fn condition_in_range(plan: &Plan, condition: &Condition) {
    match condition {
        Condition::Test(test) => match &test.input {
            RuleInput::Header(i) => source_in_range(plan, Source::Header(*i)),
            RuleInput::Cookie(i) => source_in_range(plan, Source::Cookie(*i)),
            RuleInput::Claim(i) => source_in_range(plan, Source::Claim(*i)),
            RuleInput::Path(i) | RuleInput::Method(i) | RuleInput::Host(i) => {
                assert!(*i < plan.slots.header_count(), "header slot {i}")
            }
            RuleInput::Baggage(i) => source_in_range(plan, Source::Baggage(*i)),
            RuleInput::Query { path, slot } => {
                assert!(*path < plan.slots.header_count(), "header slot {path}");
                assert!(*slot < plan.slots.query_count(), "query slot {slot}");
                assert!(!plan.slots.query_name(*slot).is_empty());
            }
        },
        Condition::All(cs) | Condition::Any(cs) => {
            assert!(!cs.is_empty());
            cs.iter().for_each(|c| condition_in_range(plan, c));
        }
        Condition::Not(c) => condition_in_range(plan, c),
    }
}

/// Everything an accepted configuration promises the request path.
pub fn check_router(r: &Plan) {
    let n = r.subsets.len();
    assert!((1..=16).contains(&n), "{n} subsets");
    assert_eq!(r.weights_bp.len(), n);
    let sum: u32 = r.weights_bp.iter().map(|&w| u32::from(w)).sum();
    assert_eq!(sum, u32::from(BUCKETS), "weights sum to 100 %");
    // Consecutive ranges in subset order covering 0..10000 exactly.
    let ranges = r.split.ranges();
    assert_eq!(ranges.len(), n);
    let mut next = 0u16;
    for (i, range) in ranges.iter().enumerate() {
        assert_eq!(range.subset, i);
        assert_eq!(range.start, next, "ranges are consecutive");
        assert_eq!(range.end - range.start, r.weights_bp[i]);
        if range.end > range.start {
            assert_eq!(r.split.subset_of(range.start), Some(i));
            assert_eq!(r.split.subset_of(range.end - 1), Some(i));
        }
        next = range.end;
    }
    assert_eq!(next, BUCKETS, "ranges cover every bucket");
    assert!(r.split.subset_of(0).is_some() && r.split.subset_of(BUCKETS - 1).is_some());
    assert_eq!(r.split.subset_of(BUCKETS), None);

    for (i, name) in r.subsets.iter().enumerate() {
        assert!(valid_name(name), "subset name {name:?}");
        assert!(!r.subsets[..i].contains(name), "duplicate subset {name:?}");
    }
    assert!(r.default_subset < n);
    let decision_header = r.decision_header.as_ref().map(|h| &h.name);
    for header in std::iter::once(&r.header).chain(decision_header) {
        assert!(!header.is_empty() && *header == header.to_ascii_lowercase());
    }
    let rules = r.rules.rules();
    for (i, rule) in rules.iter().enumerate() {
        assert!(rule.subset < n);
        assert!(valid_name(&rule.name), "rule name {:?}", rule.name);
        assert!(rules[..i].iter().all(|p| p.name != rule.name));
        condition_in_range(r, &rule.condition);
    }
    for key in &r.sticky_keys {
        source_in_range(r, key.source);
        let kind = match key.source {
            Source::Header(_) => "header:",
            Source::Cookie(_) => "cookie:",
            Source::Claim(_) => "jwt_claim:",
            Source::Baggage(_) => "baggage:",
        };
        assert!(key.label.starts_with(kind), "label {:?}", key.label);
    }
    if let Some(pin) = &r.pin {
        assert!(pin.slot < r.slots.cookie_count());
        assert_eq!(r.slots.cookie_name(pin.slot), pin.name);
    }
    if let JwtSource::Verified { metadata_key } = &r.jwt {
        assert!(!metadata_key.is_empty());
    }
    let m = &r.metrics;
    assert_eq!(m.requests.len(), n);
    assert_eq!(m.shadow_requests.len(), n);
    assert_eq!(m.responses.len(), n);
    assert!(m.requests.iter().all(|row| row.len() == Reason::ALL.len()));
    assert!(m
        .shadow_requests
        .iter()
        .all(|row| row.len() == Reason::ALL.len()));
    assert_eq!(m.rule_matches.len(), rules.len());
}

// ---------------------------------------------------------------------------
// config_structured: generated configurations, valid or with one known fault

const NAME_FIRST: &[u8] = b"abcxyz0189";
const NAME_REST: &[u8] = b"abcxyz0189_-";
const TOKEN: &[u8] = b"abcxyzABXZ019-_!#$%&'*+.^`|~";
const COOKIE_NAME: &[u8] = b"abcXYZ09_-.!#$%&'*+^`|~:\"/?";
const CLAIM_SEGMENT: &[u8] = b"abc_-019 :$";
const PREFIX: &[u8] = b"abcXYZ019_";
const CONTAINS_TOKEN: &[u8] = b"abc019:._-/";
const REGEXES: &[&str] = &[
    ".*",
    "2\\.[0-9]+",
    "acme|globex",
    "[a-z]{1,8}",
    "(?i)beta",
    "\\d+",
    "",
    "a*b?c+",
];
const FAULTS: usize = 26;

/// What a valid generated configuration must compile to.
struct Expect {
    subsets: Vec<String>,
    weights: Vec<u16>,
    default_subset: usize,
    header: String,
    decision_header: Option<String>,
    rules: Vec<(String, usize)>,
    key_labels: Vec<String>,
    pin: Option<String>,
    mode: Mode,
    jwt: JwtSource,
    warns: bool,
}

/// A name matching the pattern, unique among `0..` by its `-{i}` suffix.
fn gen_name(r: &mut Reader, i: usize) -> String {
    let first = char::from(r.pick(NAME_FIRST));
    format!("{first}{}-{i}", r.text(NAME_REST, 0, 8))
}

fn weight_json(bp: u16, r: &mut Reader) -> Value {
    if bp % 100 == 0 && r.flag() {
        json!(bp / 100)
    } else {
        json!(f64::from(bp) / 100.0)
    }
}

fn gen_source(r: &mut Reader, kind: &str) -> String {
    match kind {
        "header" => r.text(TOKEN, 1, 12),
        "cookie" => r.text(COOKIE_NAME, 1, 12),
        _ => {
            let segments = 1 + r.below(3);
            (0..segments)
                .map(|_| r.text(CLAIM_SEGMENT, 1, 6))
                .collect::<Vec<_>>()
                .join(".")
        }
    }
}

fn gen_operator(r: &mut Reader) -> (String, Value) {
    let op = r.pick(&["exact", "prefix", "present", "in", "contains", "regex"]);
    let value = match op {
        "exact" | "prefix" => json!(r.any_text(12)),
        "present" => json!(r.flag()),
        "in" => Value::Array((0..1 + r.below(4)).map(|_| json!(r.any_text(8))).collect()),
        "contains" => json!(r.text(CONTAINS_TOKEN, 1, 8)),
        _ => json!(r.pick(REGEXES)),
    };
    (op.to_owned(), value)
}

fn gen_config(r: &mut Reader) -> (Value, Expect) {
    let n = 1 + r.below(5);
    let names: Vec<String> = (0..n).map(|i| gen_name(r, i)).collect();
    let step = r.pick(&[1u16, 100, 500, 2500]);
    let mut left = BUCKETS;
    let mut weights = Vec::with_capacity(n);
    for i in 0..n {
        let w = if i + 1 == n {
            left
        } else {
            (r.below(1 << 16) as u16 % (left / step + 1)) * step
        };
        left -= w;
        weights.push(w);
    }
    let subsets: Vec<Value> = names
        .iter()
        .zip(&weights)
        .map(|(name, &w)| json!({"name": name, "weight": weight_json(w, r)}))
        .collect();
    let mut doc = Map::new();
    doc.insert("subsets".into(), Value::Array(subsets));

    let mut default_subset = 0;
    if r.flag() {
        default_subset = r.below(n);
        doc.insert("default_subset".into(), json!(names[default_subset]));
    }
    let mut header = "x-canary-subset".to_owned();
    if r.flag() {
        let h = r.text(TOKEN, 1, 16);
        header = h.to_ascii_lowercase();
        doc.insert("header".into(), json!(h));
    }
    if r.flag() {
        doc.insert("metrics_prefix".into(), json!(r.text(PREFIX, 1, 12)));
    }
    let payload = JwtSource::Verified {
        metadata_key: "payload".into(),
    };
    let jwt = match r.below(4) {
        0 => payload,
        1 => {
            doc.insert("jwt".into(), json!({"source": "verified"}));
            payload
        }
        2 => {
            let mut key = r.any_text(8);
            if key.is_empty() {
                key.push('k');
            }
            doc.insert("jwt".into(), json!({"metadata_key": key}));
            JwtSource::Verified { metadata_key: key }
        }
        _ => {
            doc.insert("jwt".into(), json!({"source": "unverified_bearer"}));
            JwtSource::UnverifiedBearer
        }
    };

    let mut key_labels = Vec::new();
    let mut pin = None;
    let mut uses_claims = false;
    if r.flag() {
        let mut sticky = Map::new();
        let keys: Vec<Value> = (0..r.below(4))
            .map(|_| {
                let kind = r.pick(&["header", "cookie", "jwt_claim"]);
                let name = gen_source(r, kind);
                uses_claims |= kind == "jwt_claim";
                key_labels.push(format!("{kind}:{name}"));
                json!({ kind: name })
            })
            .collect();
        if !keys.is_empty() || r.flag() {
            sticky.insert("keys".into(), Value::Array(keys));
        }
        if r.flag() {
            sticky.insert("seed".into(), json!(r.any_text(16)));
        }
        if r.flag() {
            let name = r.text(COOKIE_NAME, 1, 12);
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            if r.flag() {
                p.insert("max_age".into(), json!(r.pick(&[1u64, 86_400, 1 << 53])));
            }
            if r.flag() {
                p.insert("path".into(), json!(r.pick(&["/", "/app", "/a-b/c.d"])));
            }
            let secure = match r.below(3) {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            };
            if let Some(secure) = secure {
                p.insert("secure".into(), json!(secure));
            }
            if r.flag() {
                p.insert("http_only".into(), json!(r.flag()));
            }
            if r.flag() {
                let same_site = match r.pick(&["Strict", "Lax", "None"]) {
                    "None" if secure == Some(false) => "Strict",
                    other => other,
                };
                p.insert("same_site".into(), json!(same_site));
            }
            sticky.insert("pin_cookie".into(), Value::Object(p));
            pin = Some(name);
        }
        doc.insert("sticky".into(), Value::Object(sticky));
    }
    let mut decision_header = None;
    if r.flag() {
        let h = r.text(TOKEN, 1, 16);
        decision_header = Some(h.to_ascii_lowercase());
        doc.insert("decision_header".into(), json!(h));
    }
    let mode = match r.below(3) {
        0 => Mode::Enforce,
        1 => {
            doc.insert("mode".into(), json!("enforce"));
            Mode::Enforce
        }
        _ => {
            doc.insert("mode".into(), json!("shadow"));
            Mode::Shadow
        }
    };
    let mut rules = Vec::new();
    let rule_count = r.below(6);
    if rule_count > 0 || r.flag() {
        let list: Vec<Value> = (0..rule_count)
            .map(|i| {
                let name = gen_name(r, i);
                let subset = r.below(n);
                let kind = r.pick(&["header", "cookie", "jwt_claim"]);
                uses_claims |= kind == "jwt_claim";
                let mut operand = Map::new();
                operand.insert("name".into(), json!(gen_source(r, kind)));
                let (op, value) = gen_operator(r);
                operand.insert(op, value);
                rules.push((name.clone(), subset));
                json!({"name": name, "subset": names[subset], "match": { kind: operand }})
            })
            .collect();
        doc.insert("rules".into(), Value::Array(list));
    }
    let warns = jwt == JwtSource::UnverifiedBearer && uses_claims;
    let expect = Expect {
        subsets: names,
        weights,
        default_subset,
        header,
        decision_header,
        rules,
        key_labels,
        pin,
        mode,
        jwt,
        warns,
    };
    (Value::Object(doc), expect)
}

fn push_to(doc: &mut Value, list: &str, item: Value) {
    if !doc[list].is_array() {
        doc[list] = json!([]);
    }
    doc[list].as_array_mut().unwrap().push(item);
}

fn push_key(doc: &mut Value, key: Value) {
    if !doc["sticky"].is_object() {
        doc["sticky"] = json!({});
    }
    push_to(&mut doc["sticky"], "keys", key);
}

fn header_rule(name: &str, operand: Value) -> Value {
    json!({"name": name, "subset": "unlisted", "match": {"header": operand}})
}

/// Break a valid configuration in one known way; each one must be refused.
fn apply_fault(doc: &mut Value, fault: usize, r: &mut Reader, names: &[String], bp0: u16) {
    // Rules added here route to the first subset unless the fault is the subset.
    let rule =
        |name: &str, matcher: Value| json!({"name": name, "subset": names[0], "match": matcher});
    match fault {
        0 => doc["subsets"][0]["weight"] = json!(f64::from(bp0 + 1) / 100.0),
        1 => push_to(doc, "subsets", json!({"name": names[0], "weight": 0})),
        2 => {
            let bad = r
                .pick(&["V1", "", "-a", "a b", "é", &"a".repeat(64)])
                .to_owned();
            doc["subsets"][0]["name"] = json!(bad);
        }
        3 => doc[r.pick(&["wieght", "rule", "Subsets", "sticky_keys"])] = json!(1),
        4 => doc["default_subset"] = json!("unlisted"),
        5 => push_to(
            doc,
            "rules",
            header_rule("zz", json!({"name": "a", "exact": "b"})),
        ),
        6 => push_to(
            doc,
            "rules",
            rule(
                "zz",
                json!({"header": {"name": "a", "exact": "b", "prefix": "c"}}),
            ),
        ),
        7 => push_to(
            doc,
            "rules",
            rule("zz", json!({"header": {"name": "a", "regex": "(unclosed"}})),
        ),
        8 => push_to(
            doc,
            "rules",
            rule("zz", json!({"cookie": {"name": "a", "in": []}})),
        ),
        9 => push_to(
            doc,
            "rules",
            rule(
                "zz",
                json!({"jwt_claim": {"name": "scope", "contains": "a b"}}),
            ),
        ),
        10 => {
            let twin = rule("zz", json!({"header": {"name": "a", "present": true}}));
            push_to(doc, "rules", twin.clone());
            push_to(doc, "rules", twin);
        }
        11 => doc["jwt"] = json!({"source": "unverified_bearer", "metadata_key": "payload"}),
        12 => doc["header"] = json!(r.pick(&["bad header", "", "x:y", "é"])),
        13 => {
            let bad = r.pick(&["a.b", "", "x-y", &"a".repeat(65)]).to_owned();
            doc["metrics_prefix"] = json!(bad);
        }
        14 => doc["mode"] = json!("dry-run"),
        15 => doc["sticky"] = json!({"pin_cookie": {"name": "p", "max_age": 0}}),
        16 => {
            doc["sticky"] =
                json!({"pin_cookie": {"name": "p", "same_site": "None", "secure": false}});
        }
        17 => push_key(doc, json!({"cookie": "a", "header": "b"})),
        18 => push_key(doc, json!({"jwt_claim": r.pick(&["a..b", "", ".a", "a."])})),
        19 => {
            doc["subsets"] = Value::Array(
                (0..17)
                    .map(|i| json!({"name": format!("s{i}"), "weight": if i == 0 { 100 } else { 0 }}))
                    .collect(),
            );
        }
        20 => doc["subsets"][0]["weight"] = json!(f64::from(bp0) / 100.0 + 0.001),
        21 => doc["subsets"] = json!([]),
        22 => push_to(
            doc,
            "rules",
            rule("zz", json!({"cookie": {"name": "a;b", "exact": "x"}})),
        ),
        23 => doc["subsets"][0]["weight"] = json!(format!("{}", bp0 / 100)),
        24 => push_to(
            doc,
            "rules",
            rule("zz", json!({"header": {"name": "a", "exat": "b"}})),
        ),
        _ => doc["mode"] = json!(1),
    }
}

/// Generated configurations: valid ones compile to exactly what was written,
/// each deliberately broken one is refused.
pub fn config_structured(data: &[u8]) {
    let mut r = Reader::new(data);
    let (mut doc, expect) = gen_config(&mut r);
    let fault = r.flag().then(|| r.below(FAULTS));
    if let Some(fault) = fault {
        apply_fault(&mut doc, fault, &mut r, &expect.subsets, expect.weights[0]);
    }
    let bytes = if r.flag() {
        serde_json::to_vec_pretty(&doc).unwrap()
    } else {
        serde_json::to_vec(&doc).unwrap()
    };
    config(&bytes);
    let loaded = config::load(&bytes);
    let shown = String::from_utf8_lossy(&bytes);
    let loaded = match (fault, loaded) {
        (Some(f), Ok(_)) => panic!("fault {f} was accepted: {shown}"),
        (Some(_), Err(_)) => return,
        (None, Err(e)) => panic!("valid config refused ({e}): {shown}"),
        (None, Ok(loaded)) => loaded,
    };
    let plan = &loaded.plan;
    assert_eq!(plan.subsets, expect.subsets, "{shown}");
    assert_eq!(plan.weights_bp, expect.weights, "{shown}");
    assert_eq!(plan.default_subset, expect.default_subset);
    assert_eq!(plan.header, expect.header);
    assert_eq!(
        plan.decision_header.as_ref().map(|h| &h.name),
        expect.decision_header.as_ref()
    );
    assert!(plan
        .decision_header
        .as_ref()
        .is_none_or(|h| h.only_for.is_none()));
    let rules: Vec<(String, usize)> = plan
        .rules
        .rules()
        .iter()
        .map(|r| (r.name.clone(), r.subset))
        .collect();
    assert_eq!(rules, expect.rules);
    let labels: Vec<&str> = plan.sticky_keys.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, expect.key_labels);
    assert_eq!(plan.pin.as_ref().map(|p| p.name.clone()), expect.pin);
    assert_eq!(plan.mode, expect.mode);
    assert_eq!(plan.jwt, expect.jwt);
    assert_eq!(!loaded.warnings.is_empty(), expect.warns, "{shown}");
}

// ---------------------------------------------------------------------------
// cookie: cookie::pairs and cookie::find

const RAW_COOKIE_NAME: &[u8] = b"abXY_-.!#0 \t\"\xc3\xa9\xff";
const RAW_COOKIE_VALUE: &[u8] = b"ab019=\" \t,/\xff";

fn model_trim(mut s: &[u8]) -> &[u8] {
    while let Some((b' ' | b'\t', rest)) = s.split_first() {
        s = rest;
    }
    while let Some((b' ' | b'\t', rest)) = s.split_last() {
        s = rest;
    }
    s
}

fn model_unquote(s: &[u8]) -> &[u8] {
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// `input` is `name\nheader-value` (or a header value, looked up for
/// `session_id`); the same bytes also drive a generated header with known pairs.
pub fn cookie(data: &[u8]) {
    let (name, header) = split_line(data).unwrap_or((b"session_id", data));
    let all: Vec<(&[u8], &[u8])> = cookie::pairs(header).collect();
    let with_eq = header
        .split(|&b| b == b';')
        .filter(|s| s.contains(&b'='))
        .count();
    assert_eq!(all.len(), with_eq, "one pair per `;` segment with `=`");
    for (i, &(n, v)) in all.iter().enumerate() {
        assert!(
            within(header, n) && within(header, v),
            "borrowed from input"
        );
        assert!(!n.contains(&b';') && !n.contains(&b'=') && !v.contains(&b';'));
        assert_eq!(model_trim(n), n, "names are trimmed");
        // `find` agrees with the first pair of that name (bounded: O(n^2)).
        if i < 32 {
            let first = all.iter().find(|(m, _)| *m == n).map(|&(_, v)| v);
            assert_eq!(cookie::find(header, n), first);
        }
    }
    let first = all.iter().find(|(m, _)| *m == name).map(|&(_, v)| v);
    assert_eq!(cookie::find(header, name), first);

    // Round trip: pairs of a header built from known pairs and junk.
    let mut r = Reader::new(data);
    let mut built = Vec::new();
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..r.below(8) {
        if i > 0 {
            built.extend_from_slice(r.pick(&[&b"; "[..], b";", b";  ", b" ;\t", b";;"]));
        }
        if r.below(4) == 3 {
            built.extend(r.chars(RAW_COOKIE_NAME, 0, 6));
            continue;
        }
        let raw_name = r.chars(RAW_COOKIE_NAME, 0, 8);
        let mut raw_value = r.chars(RAW_COOKIE_VALUE, 0, 8);
        if r.flag() {
            raw_value.insert(0, b'"');
            raw_value.push(b'"');
        }
        expected.push((
            model_trim(&raw_name).to_vec(),
            model_unquote(model_trim(&raw_value)).to_vec(),
        ));
        built.extend(raw_name);
        built.push(b'=');
        built.extend(raw_value);
    }
    let got: Vec<(Vec<u8>, Vec<u8>)> = cookie::pairs(&built)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&built));
}

// ---------------------------------------------------------------------------
// jwt: bearer tokens, base64url, claim lookup in JSON and Envoy's serialization

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn check_base64(data: &[u8]) {
    let encoded = jwt::base64url_encode(data);
    assert_eq!(encoded.len(), (data.len() * 4).div_ceil(3));
    assert!(encoded.bytes().all(is_b64));
    assert_eq!(
        jwt::base64url_decode(encoded.as_bytes()).as_deref(),
        Some(data)
    );
    let padded = format!("{encoded}{}", "=".repeat((4 - encoded.len() % 4) % 4));
    assert_eq!(
        jwt::base64url_decode(padded.as_bytes()).as_deref(),
        Some(data)
    );
    // Decoding: accepted exactly when the body (before trailing `=`) is base64url
    // of a possible length; then it re-encodes to a body of the same length.
    let end = data.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = &data[..end];
    let ok = body.iter().all(|&b| is_b64(b)) && body.len() % 4 != 1;
    let decoded = jwt::base64url_decode(data);
    assert_eq!(decoded.is_some(), ok, "{:?}", String::from_utf8_lossy(data));
    if let Some(decoded) = decoded {
        assert_eq!(decoded.len(), body.len() * 3 / 4);
        let again = jwt::base64url_encode(&decoded);
        assert_eq!(again.len(), body.len());
        assert_eq!(
            jwt::base64url_decode(again.as_bytes()).as_deref(),
            Some(&decoded[..])
        );
    }
}

fn as_object(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn check_bearer(input: &[u8]) {
    let scheme = input.len() >= 7 && input[..7].eq_ignore_ascii_case(b"bearer ");
    match jwt::bearer_token(input) {
        Some(token) => {
            assert!(scheme && within(input, token));
            // Spaces (only) around the token are dropped.
            let start = input[7..].iter().position(|&b| b != b' ').unwrap() + 7;
            let end = input.iter().rposition(|&b| b != b' ').unwrap() + 1;
            assert_eq!(token, &input[start..end]);
            assert!(token.first() != Some(&b' ') && token.last() != Some(&b' '));
            assert!(!token.is_empty());
        }
        None => assert!(!scheme || input[7..].iter().all(|&b| b == b' ')),
    }
    // The payload: exactly three segments, the middle one base64url JSON object.
    let parts: Vec<&[u8]> = input.split(|&b| b == b'.').collect();
    let model = match parts.as_slice() {
        [_, payload, _] => jwt::base64url_decode(payload)
            .and_then(|json| serde_json::from_slice(&json).ok())
            .and_then(as_object),
        _ => None,
    };
    assert_eq!(claims::bearer_payload(input).map(|p| p.to_map()), model);
    // Any bytes as a token's payload: decoded exactly when they are a JSON object.
    let token = format!("e30.{}.c2ln", jwt::base64url_encode(input));
    let direct = serde_json::from_slice(input).ok().and_then(as_object);
    assert_eq!(
        claims::bearer_payload(token.as_bytes()).map(|p| p.to_map()),
        direct
    );
}

/// A claim read in place with its exact bytes (no lossy UTF-8).
fn exact_claim(claim: ClaimRef<'_>) -> Claim {
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    match claim {
        ClaimRef::Scalar(s) => Claim::Scalar(text(&s)),
        ClaimRef::List(list) => Claim::List(list.items().map(|i| text(&i)).collect()),
        ClaimRef::Object => Claim::Object,
    }
}

/// JSON text read in place: a claims object exactly when serde_json reads an
/// object from it, and then the claim its map gives, at `path` and at each
/// path the object's own keys make (repeated keys, escapes and spacing as
/// written: what a token carries).
fn check_json_in_place(text: &[u8], path: &[String]) {
    let map = serde_json::from_slice(text).ok().and_then(as_object);
    let object = JsonObject::new(text.to_vec());
    assert_eq!(
        object.is_some(),
        map.is_some(),
        "{:?}",
        String::from_utf8_lossy(text)
    );
    let (Some(object), Some(map)) = (object, map) else {
        return;
    };
    let mut paths = vec![path.to_vec()];
    for (key, value) in &map {
        paths.push(vec![key.clone()]);
        if let Value::Object(inner) = value {
            paths.extend(inner.keys().map(|k| vec![key.clone(), k.clone()]));
        }
    }
    for path in &paths {
        assert_eq!(
            object.claim_ref(path).map(exact_claim),
            claims::lookup(&map, path),
            "{path:?} in {:?}",
            String::from_utf8_lossy(text)
        );
    }
}

/// Independent model of `claims::lookup`: walk objects; null is absent; a list
/// keeps its scalar elements as text.
fn model_lookup(map: &Map<String, Value>, path: &[String]) -> Option<Claim> {
    let (first, rest) = path.split_first()?;
    let mut value = map.get(first)?;
    for segment in rest {
        value = match value {
            Value::Object(inner) => inner.get(segment)?,
            _ => return None,
        };
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Null => None,
        Value::Object(_) => Some(Claim::Object),
        Value::Array(items) => Some(Claim::List(items.iter().filter_map(text).collect())),
        other => text(other).map(Claim::Scalar),
    }
}

/// A claim value of the kinds both claim sources carry unambiguously.
enum Model {
    Text(String),
    Number(f64),
    Bool(bool),
    List(Vec<String>),
    Object(Vec<(String, Model)>),
}

const PRINTABLE: &[u8] = b"abAZ09 -_.:/@+";
const CLAIM_KEYS: &[&str] = &["sub", "groups", "tenant", "realm_access", "roles", "a", ""];

fn gen_claim_text(r: &mut Reader) -> String {
    if r.below(4) == 0 {
        r.pick(&["staff", "dev", "ops", "alice", "é✓"]).to_owned()
    } else {
        r.text(PRINTABLE, 1, 10)
    }
}

fn gen_model(r: &mut Reader, depth: usize) -> Model {
    match r.below(if depth == 0 { 4 } else { 5 }) {
        0 => Model::Text(gen_claim_text(r)),
        // Integers below 2^20 and exact fractions: the f64 bytes hold NULs, so Envoy's
        // bytes never read as text, and JSON prints them as Envoy's reader does.
        1 => Model::Number(if r.flag() {
            f64::from(r.below(1 << 16) as i32 - (1 << 15))
        } else {
            r.pick(&[0.5, 1.5, -2.25, 1e21])
        }),
        2 => Model::Bool(r.flag()),
        3 => Model::List((0..1 + r.below(3)).map(|_| gen_claim_text(r)).collect()),
        _ => Model::Object(gen_entries(r, depth - 1, 1)),
    }
}

fn gen_entries(r: &mut Reader, depth: usize, min: usize) -> Vec<(String, Model)> {
    let mut entries: Vec<(String, Model)> = Vec::new();
    for _ in 0..min + r.below(4) {
        let key = r.pick(CLAIM_KEYS).to_owned();
        let value = gen_model(r, depth);
        if entries.iter().all(|(k, _)| *k != key) {
            entries.push((key, value));
        }
    }
    entries
}

fn model_json(m: &Model) -> Value {
    match m {
        Model::Text(s) => json!(s),
        Model::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => json!(*n as i64),
        Model::Number(n) => json!(n),
        Model::Bool(b) => json!(b),
        Model::List(items) => json!(items),
        Model::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), model_json(v)))
                .collect(),
        ),
    }
}

/// Envoy's pairs map, as Envoy 1.40 serializes a Struct (the crate's one writer).
fn envoy_pairs(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    pairs::serialize(entries)
}

fn model_envoy(m: &Model) -> Vec<u8> {
    match m {
        Model::Text(s) => s.as_bytes().to_vec(),
        Model::Number(n) => n.to_le_bytes().to_vec(),
        Model::Bool(b) => vec![u8::from(*b)],
        Model::List(items) => envoy_pairs(
            &items
                .iter()
                .map(|s| (s.as_bytes().to_vec(), Vec::new()))
                .collect::<Vec<_>>(),
        ),
        Model::Object(entries) => envoy_pairs(
            &entries
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), model_envoy(v)))
                .collect::<Vec<_>>(),
        ),
    }
}

/// Envoy serializes a list as a map from element to empty value, so a map whose
/// values are all empty reads as a list, and a path does not step into it (found
/// by this fuzzer: it used to find `""` where JSON finds nothing; fixed in
/// `envoy_lookup`). What remains different is documented: an object whose values
/// are all empty strings (or that is empty) is indistinguishable from a list.
fn path_is_ambiguous(tree: &Model, path: &[String]) -> bool {
    match (tree, path.split_first()) {
        (Model::Object(entries), Some((first, rest))) => {
            entries.iter().all(|(_, v)| model_envoy(v).is_empty())
                || entries
                    .iter()
                    .find(|(k, _)| k == first)
                    .is_some_and(|(_, value)| path_is_ambiguous(value, rest))
        }
        _ => false,
    }
}

/// `input` is `dotted.path\npayload` (or a payload, looked up for `sub`); the
/// payload is tried as JSON, as a bearer token, and as Envoy's serialization.
/// The same bytes also generate one claim tree read through both claim sources.
pub fn jwt(data: &[u8]) {
    check_base64(data);
    check_bearer(data);
    let (path_text, payload) = split_line(data).unwrap_or((b"sub", data));
    let path: Vec<String> = String::from_utf8_lossy(path_text)
        .split('.')
        .map(str::to_owned)
        .collect();
    if payload.len() != data.len() {
        check_bearer(payload);
    }
    check_json_in_place(payload, &path);
    let object = jwt::bearer_token(payload)
        .and_then(claims::bearer_payload)
        .or_else(|| claims::bearer_payload(payload));
    if let Some(object) = &object {
        check_json_in_place(object.as_bytes(), &path);
    }
    let map = serde_json::from_slice(payload)
        .ok()
        .and_then(as_object)
        .or_else(|| object.map(|o| o.to_map()));
    if let Some(map) = map {
        let claim = claims::lookup(&map, &path);
        assert_eq!(claim, model_lookup(&map, &path));
        let json = Payload::Json(JsonObject::from_map(&map).unwrap());
        assert_eq!(json.claim(&path), claim);
    }
    let envoy = claims::envoy_lookup(payload, &path);
    assert_eq!(Payload::Envoy(payload.to_vec()).claim(&path), envoy);
    assert_eq!(
        claims::envoy_lookup(payload, &[]),
        Some(claims::from_envoy_bytes(payload))
    );

    // Differential: one claim tree, as a decoded token and as jwt_authn's metadata.
    let mut r = Reader::new(data);
    let tree = Model::Object(gen_entries(&mut r, 2, 0));
    let json = as_object(model_json(&tree)).unwrap();
    let envoy = model_envoy(&tree);
    let mut keys: Vec<&str> = CLAIM_KEYS.to_vec();
    keys.extend(["staff", "dev", "x"]);
    for _ in 0..4 {
        let path: Vec<String> = (0..1 + r.below(3))
            .map(|_| r.pick(&keys).to_owned())
            .collect();
        let from_json = claims::lookup(&json, &path);
        assert_eq!(from_json, model_lookup(&json, &path));
        assert_eq!(
            JsonObject::from_map(&json)
                .unwrap()
                .claim_ref(&path)
                .map(exact_claim),
            from_json
        );
        if !path_is_ambiguous(&tree, &path) {
            assert_eq!(
                claims::envoy_lookup(&envoy, &path),
                from_json,
                "path {path:?} in {json:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// decide: fixed configurations, arbitrary requests

/// Every operator on every source, three subsets, all three sticky key kinds.
const EVERY_OPERATOR: &str = r#"{
  "subsets": [{"name": "a", "weight": 33.33}, {"name": "b", "weight": 33.33}, {"name": "c", "weight": 33.34}],
  "default_subset": "b",
  "sticky": {"keys": [{"header": "x-user-id"}, {"cookie": "sid"}, {"jwt_claim": "user.id"}], "seed": "fuzz"},
  "rules": [
    {"name": "h-exact", "subset": "c", "match": {"header": {"name": "x-canary", "exact": "always"}}},
    {"name": "h-prefix", "subset": "b", "match": {"header": {"name": "user-agent", "prefix": "LegacyApp/"}}},
    {"name": "h-in", "subset": "c", "match": {"header": {"name": "x-tenant", "in": ["acme", "globex", "initech"]}}},
    {"name": "h-contains", "subset": "c", "match": {"header": {"name": "x-features", "contains": "dark"}}},
    {"name": "h-regex", "subset": "b", "match": {"header": {"name": "x-version", "regex": "2\\.[0-9]+"}}},
    {"name": "h-present", "subset": "c", "match": {"header": {"name": "x-debug", "present": true}}},
    {"name": "c-exact", "subset": "c", "match": {"cookie": {"name": "beta", "exact": "true"}}},
    {"name": "c-prefix", "subset": "b", "match": {"cookie": {"name": "ab", "prefix": "group-"}}},
    {"name": "c-in", "subset": "a", "match": {"cookie": {"name": "tier", "in": ["gold", "silver"]}}},
    {"name": "c-contains", "subset": "c", "match": {"cookie": {"name": "flags", "contains": "x"}}},
    {"name": "c-regex", "subset": "b", "match": {"cookie": {"name": "v", "regex": "[0-9]{3}"}}},
    {"name": "c-present", "subset": "a", "match": {"cookie": {"name": "optin", "present": true}}},
    {"name": "j-contains", "subset": "c", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
    {"name": "j-in", "subset": "c", "match": {"jwt_claim": {"name": "tenant", "in": ["acme", "globex"]}}},
    {"name": "j-exact", "subset": "b", "match": {"jwt_claim": {"name": "realm_access.roles", "exact": "ops"}}},
    {"name": "j-prefix", "subset": "b", "match": {"jwt_claim": {"name": "email", "prefix": "qa+"}}},
    {"name": "j-regex", "subset": "a", "match": {"jwt_claim": {"name": "level", "regex": "[5-9]"}}},
    {"name": "j-present", "subset": "c", "match": {"jwt_claim": {"name": "beta", "present": true}}},
    {"name": "j-absent", "subset": "a", "match": {"jwt_claim": {"name": "sub", "present": false}}}
  ]
}"#;

/// Pins for keyless requests, claims from an unverified bearer token.
const PINS: &str = r#"{
  "subsets": [{"name": "stable", "weight": 50}, {"name": "canary", "weight": 50}],
  "jwt": {"source": "unverified_bearer"},
  "sticky": {"pin_cookie": {"name": "pin", "max_age": 60}},
  "decision_header": "x-decision",
  "rules": [
    {"name": "staff", "subset": "canary", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
    {"name": "scope", "subset": "canary", "match": {"jwt_claim": {"name": "scope", "contains": "canary:read"}}}
  ]
}"#;

/// Shadow mode with keys and pins, claims from an unverified bearer token.
const SHADOW: &str = r#"{
  "subsets": [{"name": "v1", "weight": 99.99}, {"name": "v2", "weight": 0.01}],
  "mode": "shadow",
  "decision_header": "x-decision",
  "jwt": {"source": "unverified_bearer"},
  "sticky": {"keys": [{"jwt_claim": "sub"}, {"header": "x-user-id"}, {"cookie": "session_id"}],
             "seed": "s", "pin_cookie": {"name": "canary_pin"}},
  "rules": [{"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}}]
}"#;

/// A zero-weight subset, a mixed-case routing header, `present: false`.
const ZERO_WEIGHT: &str = r#"{
  "subsets": [{"name": "stable", "weight": 100}, {"name": "canary", "weight": 0}],
  "default_subset": "stable",
  "header": "X-Route",
  "sticky": {"keys": [{"cookie": "session_id"}, {"header": "x-user-id"}]},
  "rules": [
    {"name": "force", "subset": "canary", "match": {"header": {"name": "x-route", "exact": "canary"}}},
    {"name": "optout", "subset": "stable", "match": {"cookie": {"name": "optout", "present": true}}},
    {"name": "anon", "subset": "canary", "match": {"header": {"name": "x-anon", "present": false}}}
  ]
}"#;

/// Cohorts in baggage: a bucket read from it as a key, baggage rules, members
/// trusted (inside the mesh).
const BAGGAGE: &str = r#"{
  "subsets": [{"name": "v1", "weight": 95}, {"name": "v2", "weight": 5}],
  "sticky": {"keys": [{"baggage": "canary-bucket"}, {"header": "x-user-id"}], "seed": "mesh"},
  "rules": [
    {"name": "forced", "subset": "v2", "match": {"baggage": {"name": "canary-force", "exact": "v2"}}},
    {"name": "tenant", "subset": "v1", "match": {"baggage": {"name": "tenant", "in": ["acme", "a b"]}}}
  ],
  "cohort": {"trust_incoming": true}
}"#;

/// The same at the edge: the filter's own members are read as absent.
const BAGGAGE_EDGE: &str = r#"{
  "subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
  "sticky": {"keys": [{"baggage": "canary-bucket"}, {"header": "x-user-id"}], "seed": "mesh"},
  "rules": [{"name": "forced", "subset": "v2", "match": {"baggage": {"name": "canary-force", "present": true}}}],
  "cohort": {}
}"#;

/// The `decide` configurations, by the input's first byte: the shipped demo
/// config first.
pub const DECIDE_CONFIGS: &[&str] = &[
    include_str!("../envoy/canary.json"),
    EVERY_OPERATOR,
    PINS,
    SHADOW,
    ZERO_WEIGHT,
    BAGGAGE,
    BAGGAGE_EDGE,
];

/// Header names a one-byte name stands for, so short inputs reach the slots.
const KNOWN_HEADERS: &[&str] = &[
    "x-canary",
    "user-agent",
    "cookie",
    "authorization",
    "x-user-id",
    "x-tenant",
    "x-features",
    "x-version",
    "x-debug",
    "x-route",
    "x-anon",
    "x-canary-subset",
    "baggage",
];

fn routers() -> &'static [Plan] {
    static ROUTERS: OnceLock<Vec<Plan>> = OnceLock::new();
    ROUTERS.get_or_init(|| {
        DECIDE_CONFIGS
            .iter()
            .map(|json| config::load(json.as_bytes()).unwrap().plan)
            .collect()
    })
}

/// A request as `decide` inputs describe it.
struct Input {
    plan: &'static Plan,
    seed: u64,
    /// The host could not list the headers.
    broken: bool,
    headers: HeaderList,
    claims: Option<Map<String, Value>>,
}

/// Input layout, line by line: the first byte picks the configuration (`0`..`4`),
/// the rest of the first line seeds the generator (a `!` in it makes the header
/// read fail); then `claims={json object}` lines give verified claims, and other
/// lines are `name: value` headers (a one-byte name stands for a known header;
/// values are raw bytes).
fn parse_input(data: &[u8]) -> Input {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let routers = routers();
    let pick = usize::from(first.first().copied().unwrap_or(b'0').wrapping_sub(b'0'));
    let seed = first.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut input = Input {
        plan: &routers[pick % routers.len()],
        seed,
        broken: first.contains(&b'!'),
        headers: Vec::new(),
        claims: None,
    };
    for line in lines {
        if let Some(json) = line.strip_prefix(b"claims=") {
            input.claims = serde_json::from_slice(json).ok().and_then(as_object);
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let name = match name {
            [b] => KNOWN_HEADERS[usize::from(*b) % KNOWN_HEADERS.len()].to_owned(),
            // Envoy hands the filter lowercase names.
            _ => String::from_utf8_lossy(name).to_lowercase(),
        };
        input.headers.push((name, value.to_vec()));
    }
    input
}

fn request<'r>(plan: &'r Plan, input: &'r Input) -> Request<'r, JsonClaims> {
    let headers = if input.broken {
        Err(LookupError)
    } else {
        Ok(input.headers.as_slice())
    };
    Request::new(
        &plan.slots,
        &plan.jwt,
        JsonClaims(input.claims.clone()),
        headers,
    )
}

/// A sticky key's bucket, if its value is present (and non-empty): the hash
/// of a header, cookie or claim; a baggage member's value as a number below
/// 10,000, written in 1 to 4 decimal digits.
fn key_bucket(plan: &Plan, request: &impl RequestView, source: Source) -> Option<u16> {
    let value = match source {
        Source::Header(slot) => request.header(slot).unwrap().map(<[u8]>::to_vec),
        Source::Cookie(slot) => request.cookie(slot).unwrap().map(<[u8]>::to_vec),
        Source::Claim(slot) => match request.claim(slot).unwrap().map(|c| c.to_claim()) {
            Some(Claim::Scalar(s)) => Some(s.into_bytes()),
            _ => None,
        },
        Source::Baggage(slot) => {
            let text = request.baggage(slot).unwrap()?;
            let text = std::str::from_utf8(&text).ok()?;
            let digits = (1..=4).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
            return text.parse::<u16>().ok().filter(|n| digits && *n < BUCKETS);
        }
    };
    value
        .filter(|v| !v.is_empty())
        .map(|v| plan.split.bucket(&v))
}

/// An independent model of a baggage member as a rule reads it: the first
/// member of that name over all `baggage` headers (joined with `,`), its value
/// up to a `;`, whitespace trimmed, percent-decoded; absent when the filter
/// writes that member and does not trust it.
fn model_baggage(plan: &Plan, input: &Input, name: &[u8]) -> Option<Vec<u8>> {
    if let Some(c) = plan.cohort.as_ref().filter(|c| !c.trust_incoming) {
        if name == c.bucket.as_bytes() || name == c.force.as_bytes() {
            return None;
        }
    }
    let lists: Vec<&[u8]> = input
        .headers
        .iter()
        .filter(|(n, _)| n == "baggage")
        .map(|(_, v)| v.as_slice())
        .collect();
    let joined = lists.join(&b","[..]);
    let ws = |s: &[u8]| -> Vec<u8> {
        let t: &[u8] = s.trim_ascii();
        t.to_vec()
    };
    for member in joined.split(|&b| b == b',') {
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            continue;
        };
        if ws(&member[..eq]) != name {
            continue;
        }
        let value = &member[eq + 1..];
        let value = &value[..value.iter().position(|&b| b == b';').unwrap_or(value.len())];
        return canary_router::formats::url::percent_decode(&ws(value)).map(|v| v.into_owned());
    }
    None
}

fn model_compare(op: &Operator, value: &[u8]) -> bool {
    match op {
        Operator::Exact(want) => value == &**want,
        Operator::Prefix(prefix) => value.get(..prefix.len()) == Some(&**prefix),
        Operator::Present(wanted) => *wanted,
        Operator::In(set) => set.iter().any(|item| **item == *value),
        Operator::Contains(token) => value.split(|b| b" \t,".contains(b)).any(|t| t == &**token),
        // Envoy's RE2 reads bytes as Latin-1: every value, ASCII or not, as
        // one character per byte.
        Operator::Regex(re) => {
            re.is_match(&value.iter().map(|&b| char::from(b)).collect::<String>())
        }
    }
}

/// Independent model of `Rule::matches` over the request's values.
fn model_rule(rule: &Rule, request: &impl RequestView, input: &Input) -> Result<bool, LookupError> {
    model_condition(&rule.condition, request, input)
}

fn model_condition(
    condition: &Condition,
    request: &impl RequestView,
    input: &Input,
) -> Result<bool, LookupError> {
    Ok(match condition {
        Condition::Test(test) => model_test(test, request, input)?,
        Condition::All(cs) => {
            let mut all = true;
            for c in cs.iter() {
                all = all && model_condition(c, request, input)?;
            }
            all
        }
        Condition::Any(cs) => {
            let mut any = false;
            for c in cs.iter() {
                any = any || model_condition(c, request, input)?;
            }
            any
        }
        Condition::Not(c) => !model_condition(c, request, input)?,
    })
}

/// One test: a header test matches when any one value sent under its name
/// does (Envoy's `match_headers_individually`).
fn model_test(test: &Test, request: &impl RequestView, input: &Input) -> Result<bool, LookupError> {
    let on_value = |value: Option<&[u8]>| match (&test.operator, value) {
        (Operator::Present(wanted), value) => value.is_some() == *wanted,
        (_, None) => false,
        (op, Some(value)) => model_compare(op, value),
    };
    let first_of = |slot: usize| -> Option<Vec<u8>> {
        let name = input.plan.slots.header_name(slot);
        input
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    Ok(match &test.input {
        RuleInput::Header(slot) => {
            request.header(*slot)?;
            let name = input.plan.slots.header_name(*slot);
            let mut values = input
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .peekable();
            match values.peek() {
                None => on_value(None),
                Some(_) => values.any(|v| on_value(Some(v))),
            }
        }
        RuleInput::Cookie(slot) => on_value(request.cookie(*slot)?),
        RuleInput::Claim(slot) => {
            let claim = request.claim(*slot)?.map(|c| c.to_claim());
            if claim.is_none() && !request.has_claims()? {
                return Ok(false);
            }
            match (&test.operator, claim) {
                (Operator::Present(wanted), claim) => claim.is_some() == *wanted,
                (_, None | Some(Claim::Object)) => false,
                (Operator::Contains(token), Some(Claim::List(items))) => {
                    items.iter().any(|i| i.as_bytes() == &**token)
                }
                (op, Some(Claim::List(items))) => {
                    items.iter().any(|i| model_compare(op, i.as_bytes()))
                }
                (op, Some(Claim::Scalar(s))) => model_compare(op, s.as_bytes()),
            }
        }
        RuleInput::Path(slot) => {
            request.header(*slot)?;
            let path = first_of(*slot).map(|p| {
                let cut = p.iter().position(|&b| b == b'?' || b == b'#');
                p[..cut.unwrap_or(p.len())].to_vec()
            });
            on_value(path.as_deref())
        }
        RuleInput::Method(slot) => {
            request.header(*slot)?;
            on_value(first_of(*slot).as_deref())
        }
        RuleInput::Host(slot) => {
            request.header(*slot)?;
            let host = first_of(*slot).map(|a| {
                if a.first() == Some(&b'[') {
                    let end = a.iter().position(|&b| b == b']').map_or(a.len(), |e| e + 1);
                    return a[..end].to_vec();
                }
                match a.iter().rposition(|&b| b == b':') {
                    Some(c) if c + 1 < a.len() && a[c + 1..].iter().all(u8::is_ascii_digit) => {
                        a[..c].to_vec()
                    }
                    _ => a,
                }
            });
            on_value(host.as_deref())
        }
        RuleInput::Baggage(slot) => {
            request.baggage(*slot)?;
            let name = input.plan.slots.baggage_member(*slot);
            on_value(model_baggage(input.plan, input, name).as_deref())
        }
        RuleInput::Query { path, slot } => {
            request.header(*path)?;
            let name = input.plan.slots.query_name(*slot);
            let Some(p) = first_of(*path) else {
                return Ok(on_value(None));
            };
            let Some(q) = p.iter().position(|&b| b == b'?') else {
                return Ok(on_value(None));
            };
            let query = &p[q + 1..];
            let query = &query[..query.iter().position(|&b| b == b'#').unwrap_or(query.len())];
            for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                let mut kv = pair.splitn(2, |&b| b == b'=');
                let (k, v) = (kv.next().unwrap_or_default(), kv.next().unwrap_or_default());
                let Some(k) = model_unescape(k) else {
                    return Ok(false);
                };
                if k == name {
                    return Ok(match model_unescape(v) {
                        Some(v) => on_value(Some(&v)),
                        None => false,
                    });
                }
            }
            on_value(None)
        }
    })
}

/// `%XX` decoding, or `None` for a malformed escape.
fn model_unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = std::str::from_utf8(text.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The string values of a claims object, at any depth.
fn strings_of(value: &Value, out: &mut Vec<Vec<u8>>) {
    match value {
        Value::String(s) => out.push(s.as_bytes().to_vec()),
        Value::Array(items) => items.iter().for_each(|v| strings_of(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings_of(v, out)),
        _ => {}
    }
}

/// The decision header names the subset, the rule and the key's source, never a
/// value from the request. Sound check: `describe` is `; `-separated `k=v` fields,
/// so a run of a request value free of `;` and `=` that shows up in it lies
/// within one field, and must then be part of a name the configuration gave.
fn check_no_leak(plan: &Plan, text: &str, values: &[Vec<u8>]) {
    let mut vocabulary: Vec<&str> = plan.subsets.iter().map(String::as_str).collect();
    vocabulary.extend(plan.rules.rules().iter().map(|r| r.name.as_str()));
    vocabulary.extend(plan.sticky_keys.iter().map(|k| k.label.as_str()));
    vocabulary.extend(Reason::ALL.iter().map(|r| r.as_str()));
    vocabulary.extend(["pin", "new", "shadow"]);
    for value in values {
        for run in value.split(|&b| b == b';' || b == b'=') {
            if run.len() > 8 && contains(text.as_bytes(), run) {
                assert!(
                    vocabulary.iter().any(|w| contains(w.as_bytes(), run)),
                    "decision header {text:?} leaks request data {:?}",
                    String::from_utf8_lossy(run)
                );
            }
        }
    }
}

/// Arbitrary requests against fixed configurations: the decision is valid and
/// explained by the request, the same every time, and its description leaks nothing.
pub fn decide(data: &[u8]) {
    let input = parse_input(data);
    let plan = input.plan;
    let req = request(plan, &input);
    let decision = decide::decide(plan, &req, &mut SplitMix64::new(input.seed));

    // Deterministic, on the same request and on a fresh one.
    let again = decide::decide(plan, &req, &mut SplitMix64::new(input.seed));
    assert_eq!(decision, again);
    let fresh = request(plan, &input);
    assert_eq!(
        decision,
        decide::decide(plan, &fresh, &mut SplitMix64::new(input.seed))
    );
    // The proxy's path: the same headers as the host serializes them, read in place.
    if !input.broken {
        let listed: Vec<(&[u8], &[u8])> = input
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_slice()))
            .collect();
        let buffer = pairs::serialize(&listed);
        let pairs: Vec<(&[u8], &[u8])> = pairs::Pairs::new(&buffer).collect();
        assert_eq!(pairs.len(), input.headers.len());
        for ((name, value), (n, v)) in pairs.iter().zip(&input.headers) {
            assert_eq!((*name, *value), (n.as_bytes(), v.as_slice()));
        }
        let in_place = Request::from_pairs(
            &plan.slots,
            &plan.jwt,
            JsonClaims(input.claims.clone()),
            Ok(pairs::Pairs::new(&buffer)),
        );
        assert_eq!(
            decision,
            decide::decide(plan, &in_place, &mut SplitMix64::new(input.seed))
        );
    }
    // Whatever bytes the host hands over, walking them lists slices of them and
    // never reads past the end.
    for (name, value) in pairs::Pairs::new(data) {
        assert!(name.len() + value.len() <= data.len());
    }

    let n = plan.subsets.len();
    assert!(decision.subset < n, "{decision:?}");
    assert!(plan.metrics.requests[decision.subset]
        .get(decision.reason.index())
        .is_some());
    if let Some(bucket) = decision.bucket {
        assert!(bucket < BUCKETS);
        assert_eq!(plan.split.subset_of(bucket), Some(decision.subset));
    }

    if !input.broken {
        check_request_view(plan, &input, &req);
    }
    // Rules: the model agrees with each rule, and the first match decides.
    let mut first = None;
    for (i, rule) in plan.rules.rules().iter().enumerate() {
        let got = rule.matches(&req);
        assert_eq!(got, model_rule(rule, &req, &input), "rule {}", rule.name);
        match got {
            Ok(false) => {}
            Ok(true) => {
                first = Some(Ok(i));
                break;
            }
            Err(e) => {
                first = Some(Err(e));
                break;
            }
        }
    }
    match first {
        Some(Ok(i)) => {
            assert_eq!(decision.reason, Reason::Rule);
            assert_eq!(decision.rule, Some(i));
            assert_eq!(decision.subset, plan.rules.rules()[i].subset);
            assert_eq!((decision.key, decision.bucket), (None, None));
        }
        Some(Err(_)) => assert_eq!(decision.reason, Reason::Fallback),
        None if input.broken => assert_eq!(decision.reason, Reason::Fallback),
        None => check_unruled(plan, &req, &decision),
    }
    if decision.reason == Reason::Fallback {
        assert_eq!(decision.subset, plan.default_subset);
        assert!(input.broken, "only a failed host read falls back");
    }

    let text = decision.describe(plan);
    assert!(text.starts_with(&format!(
        "subset={}; reason=",
        plan.subsets[decision.subset]
    )));
    assert_eq!(text.ends_with("; mode=shadow"), plan.mode == Mode::Shadow);
    let mut values: Vec<Vec<u8>> = input.headers.iter().map(|(_, v)| v.clone()).collect();
    if let Some(claims) = &input.claims {
        claims.values().for_each(|v| strings_of(v, &mut values));
    }
    for (name, value) in &input.headers {
        if name == "authorization" {
            if let Some(payload) = jwt::bearer_token(value).and_then(claims::bearer_payload) {
                payload
                    .to_map()
                    .values()
                    .for_each(|v| strings_of(v, &mut values));
            }
        }
    }
    check_no_leak(plan, &text, &values);
}

/// Header and cookie slots hold what Envoy's header list says.
fn check_request_view(plan: &Plan, input: &Input, req: &impl RequestView) {
    let slots = &plan.slots;
    for slot in 0..slots.header_count() {
        let name = slots.header_name(slot);
        let values: Vec<&[u8]> = input
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect();
        let joined = (!values.is_empty()).then(|| values.join(&b","[..]));
        assert_eq!(req.header(slot), Ok(joined.as_deref()), "header {name}");
    }
    for slot in 0..slots.cookie_count() {
        let name = slots.cookie_name(slot);
        let first = input
            .headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .find_map(|(_, v)| cookie::find(v, name.as_bytes()));
        assert_eq!(req.cookie(slot), Ok(first), "cookie {name}");
    }
}

/// No rule matched and every read worked: a sticky key's hash, else a pin, else
/// a random draw.
fn check_unruled(plan: &Plan, req: &impl RequestView, decision: &Decision) {
    let key = plan
        .sticky_keys
        .iter()
        .enumerate()
        .find_map(|(i, k)| key_bucket(plan, req, k.source).map(|b| (i, b)));
    let bucket = decision.bucket.expect("a bucket without a rule");
    match (decision.reason, key) {
        (Reason::Hash, Some((index, key_bucket))) => {
            assert_eq!(decision.key, Some(index));
            assert_eq!(bucket, key_bucket);
            assert!(decision.new_pin.is_none());
        }
        (Reason::Pin, None) => {
            let pin = plan.pin.as_ref().expect("a pin decision without pins");
            let value = req.cookie(pin.slot).unwrap().expect("a pin cookie");
            assert!(pin::is_well_formed(value));
            assert_eq!(bucket, plan.split.bucket(value));
            assert!(decision.key.is_none() && decision.new_pin.is_none());
        }
        (Reason::Random, None) => {
            assert!(decision.key.is_none());
            match (&plan.pin, decision.new_pin) {
                (Some(_), Some(id)) => {
                    assert!(pin::is_well_formed(id.as_bytes()));
                    assert_eq!(bucket, plan.split.bucket(id.as_bytes()));
                }
                (None, None) => {}
                other => panic!("new pin and pin config disagree: {other:?}"),
            }
        }
        (reason, key) => panic!("{reason:?} with key {key:?}: {decision:?}"),
    }
}
