//! Compiled rules: what a rule reads and how it compares, ready to run.
//!
//! Everything that can be prepared is prepared at configure time: header names
//! lowercased, claim paths split, `in` lists turned into hash sets (O(1) per
//! request whatever their size), regexes compiled and anchored for a full match.

use crate::claims::ClaimRef;
use crate::request::{LookupError, RequestView};
use crate::slots::ByteSet;

/// What a rule or sticky key reads: a slot numbered at configure time (names in
/// [`crate::slots::Slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A request header; repeated headers joined with `,`.
    Header(usize),
    /// A cookie (case-sensitive name).
    Cookie(usize),
    /// A JWT claim; a dotted name is a path into nested objects.
    Claim(usize),
}

/// How a rule compares. Byte-wise: header values need not be UTF-8.
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
    /// Anchored at compile time: the whole value must match.
    Regex(regex_lite::Regex),
}

/// One compiled rule: when `source` satisfies `operator`, route to `subset`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub subset: usize,
    pub source: Source,
    pub operator: Operator,
}

impl Rule {
    /// Does the request satisfy this rule? `Err` when the value could not be read.
    pub fn matches(&self, request: &impl RequestView) -> Result<bool, LookupError> {
        Ok(match self.source {
            Source::Header(slot) => self.on_value(request.header(slot)?),
            Source::Cookie(slot) => self.on_value(request.cookie(slot)?),
            Source::Claim(slot) => {
                let claim = request.claim(slot)?;
                // Without a token there are no claims to judge: `present: false`
                // means "a token without this claim", never "no token".
                if claim.is_none() && !request.has_claims()? {
                    return Ok(false);
                }
                self.on_claim(claim.as_ref())
            }
        })
    }

    /// Most rules of a long list read an absent header or cookie: that answer is
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
        Operator::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        Operator::Contains(token) => tokens(value).any(|t| t == &**token),
        Operator::Present(wanted) => *wanted,
    }
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
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        RuleSet { rules }
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
    pub fn first_match(&self, request: &impl RequestView) -> Result<Option<usize>, LookupError> {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.matches(request)? {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }
}
