//! Compiled rules: what a rule reads and how it compares, ready to run.
//!
//! Everything that can be prepared is prepared at configure time: header names
//! lowercased, claim paths split, `in` lists turned into hash sets (O(1) per
//! request whatever their size), regexes compiled and anchored for a full match.
//!
//! Header rules decide as Envoy's own route header matchers do (Envoy 1.40,
//! `envoy.reloadable_features.match_headers_individually`): a header sent
//! several times matches when ANY one of its values does. Envoy stores some
//! headers once (its inline headers: `user-agent`, `authorization`,
//! `x-forwarded-for`, `content-type`, `accept`, `referer`, ...) and joins their
//! repeats with `,` as they arrive; the filter is handed that one entry, so for
//! those headers Envoy's matchers and the filter both see the joined value.
//! Regexes compare bytes, as Envoy's RE2 does (Latin-1: one character per
//! byte), see [`regex_matches`].

use crate::claims::ClaimRef;
use crate::request::{LookupError, PresentSlots, QueryValue, RequestView};
use crate::slots::ByteSet;
use crate::slots::SlotList;

/// What a sticky key or a condition reads: a slot numbered at configure time
/// (names in [`crate::slots::Slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A request header. A rule reads each value sent on its own; a sticky
    /// key reads all of them joined with `,` (see [`RequestView::header`]).
    Header(usize),
    /// A cookie (case-sensitive name).
    Cookie(usize),
    /// A JWT claim; a dotted name is a path into nested objects.
    Claim(usize),
    /// A W3C baggage member (a baggage slot). As a sticky key, its value is
    /// the bucket itself (`0`..`9999`, written by this filter upstream).
    Baggage(usize),
}

/// What one test of a condition reads: a source, or a request attribute read
/// from the pseudo-headers the filter already has (each holds the slot of its
/// pseudo-header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A header (each value on its own), a cookie or a claim, as [`Source`].
    Header(usize),
    Cookie(usize),
    Claim(usize),
    /// `:path` up to the query string, raw, as Envoy's route `path`/`prefix` see it.
    Path(usize),
    /// `:method`.
    Method(usize),
    /// `:authority` without its port.
    Host(usize),
    /// A query parameter of `:path` (a query slot; `path` is `:path`'s header
    /// slot): the first occurrence, percent-decoded; one that does not decode
    /// does not match.
    Query {
        path: usize,
        slot: usize,
    },
    /// A W3C baggage member (a baggage slot), percent-decoded; a member that
    /// does not parse or decode is absent.
    Baggage(usize),
}

/// How a test compares. Byte-wise: header values need not be UTF-8.
#[derive(Debug, Clone)]
pub enum Operator {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Matches when the source's presence equals the flag.
    Present(bool),
    In(ByteSet),
    /// A list claim holding the value, or a token of a space- (or comma-)
    /// separated value such as a `scope` claim.
    Contains(Box<[u8]>),
    /// Anchored at compile time: the whole value must match. Built by
    /// [`compile_regex`], read by [`regex_matches`]: bytes, as Envoy reads them.
    Regex(regex_lite::Regex),
}

/// One single-source test: `input` satisfies `operator`.
#[derive(Debug, Clone)]
pub struct Test {
    pub input: Input,
    pub operator: Operator,
}

/// A rule's (or a goal's) condition: tests composed as Istio composes a
/// match (all of a match's conditions, any of its matches, `withoutHeaders`).
#[derive(Debug, Clone)]
pub enum Condition {
    Test(Test),
    /// Every one (non-empty).
    All(Box<[Condition]>),
    /// At least one (non-empty).
    Any(Box<[Condition]>),
    Not(Box<Condition>),
}

/// A slot a condition can need a value in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKey {
    Header(usize),
    Cookie(usize),
    Query(usize),
}

/// How deep conditions may nest, and how many tests one rule may hold.
pub const MAX_DEPTH: usize = 8;
pub const MAX_TESTS: usize = 64;

/// One compiled rule: when the request satisfies `condition` (and, with a
/// percent, its sticky bucket is in the rule's share), route to `subset`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub subset: usize,
    pub condition: Condition,
    /// The share of the matching requests this rule takes, in basis points
    /// (`None`: all of them); see [`in_share`].
    pub percent_bp: Option<u16>,
}

/// Is a request with sticky `bucket` in a share of `percent_bp`? The share is
/// the top of the bucket range, where the last subset's weight sits: raising a
/// percent only adds users, and with the canary listed last, a user the
/// weights put on the canary is in every share at least that large.
pub fn in_share(bucket: u16, percent_bp: u16) -> bool {
    u32::from(bucket) + u32::from(percent_bp) >= u32::from(crate::bucket::BUCKETS)
}

impl Rule {
    /// Does the request satisfy this rule's condition? `Err` when a value could
    /// not be read.
    #[inline]
    pub fn matches(&self, request: &impl RequestView) -> Result<bool, LookupError> {
        // Most rules are one test: read it without the composition's recursion.
        match &self.condition {
            Condition::Test(test) => test.matches(request),
            composed => composed.matches(request),
        }
    }
}

impl Condition {
    pub fn matches(&self, request: &impl RequestView) -> Result<bool, LookupError> {
        match self {
            Condition::Test(test) => test.matches(request),
            Condition::All(all) => {
                for c in all.iter() {
                    if !c.matches(request)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Any(any) => {
                for c in any.iter() {
                    if c.matches(request)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::Not(c) => Ok(!c.matches(request)?),
        }
    }

    /// Slots of which at least one must hold a value for this condition to
    /// match (the rule index lists the rule under each); `None` when it can
    /// match without any. A test needs its own slot; an `all` the slots of one
    /// of its parts; an `any` one slot of each part.
    fn required_slots(&self, out: &mut Vec<SlotKey>) -> bool {
        match self {
            Condition::Test(test) => match test.required_slot() {
                Some(key) => {
                    out.push(key);
                    true
                }
                None => false,
            },
            Condition::All(all) => all.iter().any(|c| {
                let before = out.len();
                let found = c.required_slots(out);
                if !found {
                    out.truncate(before);
                }
                found
            }),
            Condition::Any(any) => {
                let before = out.len();
                let all_need = any.iter().all(|c| c.required_slots(out));
                if !all_need {
                    out.truncate(before);
                }
                all_need
            }
            Condition::Not(_) => false,
        }
    }

    /// Whether any test reads a JWT claim.
    pub fn reads_claims(&self) -> bool {
        match self {
            Condition::Test(test) => matches!(test.input, Input::Claim(_)),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().any(Condition::reads_claims),
            Condition::Not(c) => c.reads_claims(),
        }
    }
}

impl Test {
    /// Does the request satisfy this test? `Err` when the value could not be read.
    #[inline(always)]
    pub fn matches(&self, request: &impl RequestView) -> Result<bool, LookupError> {
        Ok(match &self.input {
            Input::Header(slot) => {
                // Each value on its own (Envoy's `match_headers_individually`):
                // a repeated header matches when any of its values does.
                let mut values = request.header_values(*slot)?;
                match values.next() {
                    None => self.on_value(None),
                    Some(first) => self.on_present(first) || values.any(|v| self.on_present(v)),
                }
            }
            Input::Cookie(slot) => self.on_value(request.cookie(*slot)?),
            Input::Claim(slot) => {
                let claim = request.claim(*slot)?;
                // Without a token there are no claims to judge: `present: false`
                // means "a token without this claim", never "no token".
                if claim.is_none() && !request.has_claims()? {
                    return Ok(false);
                }
                self.on_claim(claim.as_ref())
            }
            attribute => self.matches_attribute(attribute, request)?,
        })
    }

    /// The request attributes (path, method, host, query): apart, so that the
    /// common header, cookie and claim tests stay small enough to inline.
    fn matches_attribute(
        &self,
        input: &Input,
        request: &impl RequestView,
    ) -> Result<bool, LookupError> {
        Ok(match input {
            Input::Path(slot) => {
                let path = request.header(*slot)?;
                self.on_value(path.map(crate::formats::url::path_only))
            }
            Input::Method(slot) => self.on_value(request.header(*slot)?),
            Input::Host(slot) => {
                let authority = request.header(*slot)?;
                self.on_value(authority.map(crate::formats::url::host_only))
            }
            Input::Query { slot, .. } => match request.query(*slot)? {
                QueryValue::Absent => self.on_value(None),
                QueryValue::Value(value) => self.on_present(value),
                // Undecodable: matches nothing, not even `present: false`.
                QueryValue::Undecodable => false,
            },
            Input::Baggage(slot) => self.on_value(request.baggage(*slot)?.as_deref()),
            Input::Header(_) | Input::Cookie(_) | Input::Claim(_) => false,
        })
    }

    fn required_slot(&self) -> Option<SlotKey> {
        if matches!(self.operator, Operator::Present(false)) {
            return None;
        }
        match &self.input {
            Input::Header(slot)
            | Input::Path(slot)
            | Input::Method(slot)
            | Input::Host(slot) => Some(SlotKey::Header(*slot)),
            Input::Query { slot, .. } => Some(SlotKey::Query(*slot)),
            Input::Cookie(slot) => Some(SlotKey::Cookie(*slot)),
            Input::Claim(_) | Input::Baggage(_) => None,
        }
    }

    /// Most tests of a long list read an absent header or cookie: that answer is
    /// inlined into the walk, the comparison is not.
    #[inline]
    fn on_value(&self, value: Option<&[u8]>) -> bool {
        match value {
            None => matches!(self.operator, Operator::Present(false)),
            Some(value) => self.on_present(value),
        }
    }

    fn on_present(&self, value: &[u8]) -> bool {
        match &self.operator {
            Operator::Present(wanted) => *wanted,
            Operator::Contains(token) => tokens(value).any(|t| t == &**token),
            op => compare(op, value),
        }
    }

    fn on_claim(&self, claim: Option<&ClaimRef<'_>>) -> bool {
        match (&self.operator, claim) {
            (Operator::Present(wanted), claim) => claim.is_some() == *wanted,
            (_, None | Some(ClaimRef::Object)) => false,
            (Operator::Contains(token), Some(ClaimRef::List(list))) => {
                list.items().any(|i| *i == **token)
            }
            (Operator::Contains(token), Some(ClaimRef::Scalar(s))) => {
                tokens(s).any(|t| t == &**token)
            }
            // A list claim matches a scalar operator when any element does
            // (Istio's semantics for `request.auth.claims`).
            (op, Some(ClaimRef::List(list))) => list.items().any(|i| compare(op, &i)),
            (op, Some(ClaimRef::Scalar(s))) => compare(op, s),
        }
    }
}

fn compare(operator: &Operator, value: &[u8]) -> bool {
    match operator {
        Operator::Exact(want) => value == &**want,
        Operator::Prefix(prefix) => value.starts_with(prefix),
        Operator::In(set) => set.contains(value),
        Operator::Regex(re) => regex_matches(re, value),
        Operator::Contains(token) => tokens(value).any(|t| t == &**token),
        Operator::Present(wanted) => *wanted,
    }
}

/// Compile a rule's regex for a full match, with Envoy's byte semantics.
///
/// Envoy's RE2 reads a header value as Latin-1, one character per byte: `.`
/// is one byte, so `caf.` does not match the UTF-8 `café` (5 bytes) and
/// `.{3,8}` matches `éé` (4 bytes). RE2 reads the pattern the same way, so a
/// non-ASCII character in the pattern stands for its UTF-8 bytes in turn. The
/// pattern is therefore decoded byte by byte into characters U+0000..U+00FF,
/// and [`regex_matches`] decodes the value alike: an ASCII pattern is
/// unchanged, and a regex on any bytes (UTF-8 or not) decides as Envoy does.
pub fn compile_regex(pattern: &str) -> Result<regex_lite::Regex, regex_lite::Error> {
    let mut anchored = String::with_capacity(pattern.len() + 8);
    anchored.push_str("^(?:");
    anchored.extend(pattern.bytes().map(char::from));
    anchored.push_str(")$");
    regex_lite::Regex::new(&anchored)
}

/// Does `value` fully match a regex built by [`compile_regex`]? An ASCII
/// value is read in place; any other is decoded as Latin-1 (one character per
/// byte) into a copy, so every byte string can match, as in Envoy.
pub fn regex_matches(re: &regex_lite::Regex, value: &[u8]) -> bool {
    if value.is_ascii() {
        if let Ok(text) = std::str::from_utf8(value) {
            return re.is_match(text);
        }
    }
    let latin1: String = value.iter().copied().map(char::from).collect();
    re.is_match(&latin1)
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b' ' || b == b'\t' || b == b',')
        .filter(|t| !t.is_empty())
}

/// The rules in configuration order: the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: RuleIndex,
}

/// The rules by what they need to match, each list in configuration order. A
/// rule that cannot match without a value in some header or cookie slot (a test
/// other than `present: false`, alone or in an `all`) is listed under that slot
/// and read only when the slot holds a value; every other rule (claims, `any`,
/// `not`, `present: false`) is read on each request.
#[derive(Debug, Clone, Default)]
struct RuleIndex {
    by_header: Vec<Vec<usize>>,
    by_cookie: Vec<Vec<usize>>,
    by_query: Vec<Vec<usize>>,
    always: Vec<usize>,
}

impl RuleIndex {
    fn new(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex::default();
        let mut keys = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            keys.clear();
            if !rule.condition.required_slots(&mut keys) {
                index.always.push(i);
                continue;
            }
            // Each slot once (a plain scan: a sort would cost the .wasm ~5 KiB).
            for (n, key) in keys.iter().enumerate() {
                if keys.get(..n).is_some_and(|seen| seen.contains(key)) {
                    continue;
                }
                let (lists, slot) = match *key {
                    SlotKey::Header(slot) => (&mut index.by_header, slot),
                    SlotKey::Cookie(slot) => (&mut index.by_cookie, slot),
                    SlotKey::Query(slot) => (&mut index.by_query, slot),
                };
                if lists.len() <= slot {
                    lists.resize_with(slot + 1, Vec::new);
                }
                if let Some(list) = lists.get_mut(slot) {
                    list.push(i);
                }
            }
        }
        index
    }
}

/// The candidate lists of one request: `always` and one per present slot.
const MAX_LISTS: usize = 1 + 3 * SlotList::MAX;

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let index = RuleIndex::new(&rules);
        RuleSet { rules, index }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Index of the first matching rule. A read error stops the walk: a later rule
    /// must not win when an earlier one could not be evaluated.
    ///
    /// When the request says which header and cookie slots hold a value, only
    /// the rules that can match are read, in configuration order: the rules
    /// skipped read an absent value, which cannot fail and cannot match. A
    /// config of hundreds of rules on headers that a request does not carry
    /// then costs what its few candidates cost.
    pub fn first_match(&self, request: &impl RequestView) -> Result<Option<usize>, LookupError> {
        self.first_accepted(request, |_| Ok(true))
    }

    /// [`RuleSet::first_match`], skipping matching rules that `accept` declines
    /// (a rule whose percent leaves this request out falls through).
    pub fn first_accepted(
        &self,
        request: &impl RequestView,
        mut accept: impl FnMut(&Rule) -> Result<bool, LookupError>,
    ) -> Result<Option<usize>, LookupError> {
        let mut candidates = if self.rules.len() > Self::WALK_UP_TO {
            request
                .present_slots()
                .map(|present| Candidates::new(&self.index, present))
        } else {
            None
        };
        let mut next = 0;
        loop {
            let index = match &mut candidates {
                Some(candidates) => match candidates.next() {
                    Some(index) => index,
                    None => return Ok(None),
                },
                None => next,
            };
            next += 1;
            let Some(rule) = self.rules.get(index) else {
                return Ok(None);
            };
            if rule.matches(request)? && accept(rule)? {
                return Ok(Some(index));
            }
        }
    }

    /// A few rules cost less to read in turn than to select.
    const WALK_UP_TO: usize = 8;
}

/// The rules one request can match, in configuration order: the candidate
/// lists (`always`, and the list of each present slot) merged. An `any` rule
/// may be in several lists: it is returned once.
struct Candidates<'s> {
    lists: [&'s [usize]; MAX_LISTS],
    count: usize,
    last: Option<usize>,
}

impl<'s> Candidates<'s> {
    fn new(index: &'s RuleIndex, present: PresentSlots) -> Candidates<'s> {
        let by_slot = |lists: &'s [Vec<usize>], slot: usize| -> &'s [usize] {
            lists.get(slot).map_or(&[], Vec::as_slice)
        };
        let lists = std::iter::once(index.always.as_slice())
            .chain(present.headers.iter().map(|s| by_slot(&index.by_header, s)))
            .chain(present.cookies.iter().map(|s| by_slot(&index.by_cookie, s)))
            .chain(present.queries.iter().map(|s| by_slot(&index.by_query, s)))
            .filter(|list| !list.is_empty());
        let mut candidates = Candidates {
            lists: [&[]; MAX_LISTS],
            count: 0,
            last: None,
        };
        for (slot, list) in candidates.lists.iter_mut().zip(lists) {
            *slot = list;
            candidates.count += 1;
        }
        candidates
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            // The list whose next rule comes first.
            let next = self
                .lists
                .get_mut(..self.count)?
                .iter_mut()
                .filter(|list| !list.is_empty())
                .min_by_key(|list| list.first().copied())?;
            let (&index, rest) = next.split_first()?;
            *next = rest;
            if self.last != Some(index) {
                self.last = Some(index);
                return Some(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::claims::{ClaimRef, Payload};
    use crate::config::load;
    use crate::request::{
        ClaimSource, HeaderValues, JsonClaims, JwtSource, Lookup, LookupError, QueryValue, Request,
        RequestView,
    };
    use crate::rng::SplitMix64;

    /// The same request, without the present slots: every rule is read.
    struct Unindexed<'a, R>(&'a R);

    impl<R: RequestView> RequestView for Unindexed<'_, R> {
        fn header(&self, slot: usize) -> Lookup<&[u8]> {
            self.0.header(slot)
        }
        fn header_values(&self, slot: usize) -> Result<HeaderValues<'_>, LookupError> {
            self.0.header_values(slot)
        }
        fn cookie(&self, slot: usize) -> Lookup<&[u8]> {
            self.0.cookie(slot)
        }
        fn query(&self, slot: usize) -> Result<QueryValue<'_>, LookupError> {
            self.0.query(slot)
        }
        fn claim(&self, slot: usize) -> Lookup<ClaimRef<'_>> {
            self.0.claim(slot)
        }
        fn has_claims(&self) -> Result<bool, LookupError> {
            self.0.has_claims()
        }
    }

    /// Claims that can also fail, as a host read can.
    struct MaybeClaims(Option<Value>, bool);

    impl ClaimSource for MaybeClaims {
        fn verified_payload(&self, key: &str) -> Lookup<Payload> {
            if self.1 {
                return Err(LookupError);
            }
            JsonClaims(self.0.as_ref().and_then(|c| c.as_object().cloned())).verified_payload(key)
        }
    }

    const HEADERS: [&str; 10] = [
        "x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "x-g", "x-h", "x-i", "x-j",
    ];
    const VALUES: [&str; 4] = ["on", "off", "o", ""];

    #[test]
    fn the_candidate_walk_picks_what_the_full_walk_picks() {
        let rng = std::cell::RefCell::new(SplitMix64::new(42));
        let pick = |n: usize| (rng.borrow_mut().next_u64() % n as u64) as usize;
        for _ in 0..40 {
            // A random rule list over headers, cookies and a claim, every operator.
            let rules: Vec<Value> = (0..1 + pick(30))
                .map(|i| {
                    let operand = match pick(6) {
                        0 => json!({"exact": "on"}),
                        1 => json!({"prefix": "o"}),
                        2 => json!({"present": true}),
                        3 => json!({"present": false}),
                        4 => json!({"in": ["on", "x"]}),
                        _ => json!({"regex": "o.*"}),
                    };
                    let source = match pick(4) {
                        0 | 1 => "header",
                        2 => "cookie",
                        _ => "jwt_claim",
                    };
                    let name = match source {
                        "header" => HEADERS[pick(HEADERS.len())].to_owned(),
                        "cookie" => format!("c{}", pick(10)),
                        _ => ["groups", "sub"][pick(2)].to_owned(),
                    };
                    let mut operand = operand;
                    operand["name"] = json!(name);
                    json!({"name": format!("r{i}"), "subset": "v2", "match": {source: operand}})
                })
                .collect();
            let config = json!({
                "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
                "sticky": {"keys": [{"header": "x-user-id"}], "seed": "s"},
                "jwt": {"source": "verified", "metadata_key": "payload"},
                "rules": rules,
            });
            let plan = load(config.to_string().as_bytes()).unwrap().plan;
            let jwt = JwtSource::Verified {
                metadata_key: "payload".into(),
            };
            for _ in 0..200 {
                // Up to all ten headers (past eight present slots: not known).
                let mut headers: Vec<(String, Vec<u8>)> = HEADERS
                    .iter()
                    .filter(|_| pick(3) == 0)
                    .map(|h| (h.to_string(), VALUES[pick(4)].as_bytes().to_vec()))
                    .collect();
                let cookies: Vec<String> = (0..pick(12))
                    .map(|_| format!("c{}={}", pick(10), VALUES[pick(4)]))
                    .collect();
                headers.push(("cookie".into(), cookies.join("; ").into_bytes()));
                let claims = match pick(3) {
                    0 => None,
                    _ => Some(json!({"groups": [VALUES[pick(4)]], "sub": VALUES[pick(4)]})),
                };
                let failing = pick(10) == 0;
                let listed = if pick(10) == 0 {
                    Err(LookupError)
                } else {
                    Ok(headers.as_slice())
                };
                let request = Request::new(&plan.slots, &jwt, MaybeClaims(claims, failing), listed);
                assert_eq!(
                    plan.rules.first_match(&request),
                    plan.rules.first_match(&Unindexed(&request)),
                    "{config}\n{headers:?}"
                );
            }
        }
    }

    /// Does the one rule `{source: operand}` match `headers`?
    fn matching(m: &Value, headers: &[(&str, &[u8])]) -> bool {
        let config = json!({
            "subsets": [{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}],
            "rules": [{"name": "r", "subset": "v2", "match": m}],
        });
        let plan = load(config.to_string().as_bytes()).unwrap().plan;
        let list: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        let jwt = JwtSource::UnverifiedBearer;
        let request = Request::new(&plan.slots, &jwt, JsonClaims(None), Ok(&list));
        plan.rules.first_match(&request).unwrap() == Some(0)
    }

    type Headers = Vec<(&'static str, &'static [u8])>;

    fn header_rule(operand: Value) -> Value {
        let mut operand = operand;
        operand["name"] = json!("x-t");
        json!({"header": operand})
    }

    #[test]
    fn a_repeated_header_matches_when_any_one_value_does() {
        let twice =
            |a: &'static str, b: &'static str| vec![("x-t", a.as_bytes()), ("x-t", b.as_bytes())];
        // (operand, values sent, matches?) for every operator, as Envoy 1.40
        // decides with match_headers_individually.
        let cases: Vec<(Value, Headers, bool)> = vec![
            (json!({"exact": "always"}), twice("always", "always"), true),
            (json!({"exact": "always"}), twice("never", "always"), true),
            (
                json!({"exact": "always,always"}),
                twice("always", "always"),
                false,
            ),
            (json!({"exact": ""}), twice("a", ""), true),
            (json!({"prefix": "Leg"}), twice("Mozilla", "Legacy"), true),
            (json!({"prefix": "a,b"}), twice("a", "b"), false),
            (
                json!({"in": ["acme", "globex"]}),
                twice("x", "globex"),
                true,
            ),
            (json!({"in": ["a,b"]}), twice("a", "b"), false),
            (json!({"contains": "dark"}), twice("light", "a, dark"), true),
            (json!({"contains": "dark"}), twice("da", "rk"), false),
            (json!({"regex": ".{3,8}"}), twice("ab", "ab"), false),
            (json!({"regex": "a.*"}), twice("b", "ab"), true),
            (json!({"present": true}), twice("", ""), true),
            (json!({"present": false}), twice("", ""), false),
            (json!({"present": false}), vec![("x-other", b"1")], true),
        ];
        for (operand, headers, want) in cases {
            let got = matching(&header_rule(operand.clone()), &headers);
            assert_eq!(got, want, "{operand} on {headers:?}");
        }
    }

    /// A sticky header key hashes all values joined with `,`: what it always
    /// did (a user sending the header twice keeps the bucket), and what Envoy
    /// itself holds for a header it stores once (`user-agent`, ...).
    #[test]
    fn a_sticky_header_key_is_the_joined_value() {
        let config = json!({
            "subsets": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
            "sticky": {"keys": [{"header": "x-user-id"}], "seed": "s"},
        });
        let plan = load(config.to_string().as_bytes()).unwrap().plan;
        let jwt = JwtSource::UnverifiedBearer;
        let list: Vec<(String, Vec<u8>)> = vec![
            ("x-user-id".into(), b"alice".to_vec()),
            ("x-user-id".into(), b"bob".to_vec()),
        ];
        let request = Request::new(&plan.slots, &jwt, JsonClaims(None), Ok(&list));
        let d = crate::decide::decide(&plan, &request, &mut SplitMix64::new(1));
        assert_eq!(d.bucket, Some(plan.split.bucket(b"alice,bob")));
    }

    #[test]
    fn a_regex_reads_bytes_as_envoys_re2_does() {
        // (pattern, value, matches?) as a real Envoy 1.40's route matcher
        // decided them: RE2 reads pattern and value as Latin-1.
        let cases: &[(&str, &[u8], bool)] = &[
            ("caf.", "café".as_bytes(), false),
            ("caf..", "café".as_bytes(), true),
            (".{3,8}", "éé".as_bytes(), true),
            ("é", "é".as_bytes(), true),
            ("[é]", "é".as_bytes(), false),
            ("[é]+", "é".as_bytes(), true),
            ("\\xE9", b"\xe9", true),
            (".", b"\xff", true),
            ("[^a]", b"\xff", true),
            ("(?i)é", "É".as_bytes(), false),
            ("\\w", b"\xe9", false),
            ("\\W", b"\xe9", true),
            ("a.b", "aéb".as_bytes(), false),
            ("a..b", "aéb".as_bytes(), true),
            ("Legacy[A-Za-z]*/[0-9.]+", b"Legacy\xff/1.0", false),
            (".*", b"\xff\xfe", true),
            ("2\\.[0-9]+", b"2.15", true),
        ];
        for (pattern, value, want) in cases {
            let got = matching(&header_rule(json!({"regex": pattern})), &[("x-t", value)]);
            assert_eq!(got, *want, "{pattern:?} on {value:?}");
        }
    }

    /// The documented differences from Envoy's own matchers, kept on purpose.
    #[test]
    fn deliberate_differences_from_envoys_matchers() {
        // `contains` looks for a token (spaces, tabs, commas), not a substring.
        let contains = header_rule(json!({"contains": "dark"}));
        assert!(!matching(&contains, &[("x-t", b"darker")]));
        assert!(matching(&contains, &[("x-t", b"a,dark b")]));
        // Cookies: a quoted value is read without its quotes, blanks around
        // `=` are trimmed, and the first occurrence of a name wins, also
        // across two `cookie` headers.
        let beta = json!({"cookie": {"name": "beta", "exact": "true"}});
        assert!(matching(&beta, &[("cookie", b"beta=\"true\"")]));
        assert!(matching(&beta, &[("cookie", b"beta = true")]));
        assert!(matching(&beta, &[("cookie", b"a=1;beta\t=\ttrue ;b=2")]));
        assert!(!matching(&beta, &[("cookie", b"beta=false; beta=true")]));
        let two: Headers = vec![("cookie", b"beta=false"), ("cookie", b"beta=true")];
        assert!(!matching(&beta, &two));
    }
}
