//! The compiled configuration: everything the request path reads, prepared once.

use crate::brake::Brake;
use crate::bucket::Split;
use crate::goals::Goal;
use crate::metrics::MetricNames;
use crate::pin::PinCookie;
use crate::ramp::Ramp;
use crate::request::JwtSource;
use crate::request::RequestView;
use crate::rules::{Condition, RuleSet, Source};
use crate::slots::Slots;

/// A ready-to-run configuration. Built only by `config::load`, so every index in it
/// is valid (rule subsets, the default subset, bucket ranges).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Subset names in configuration order; a subset is referred to by index.
    pub subsets: Vec<String>,
    /// Weights in basis points (0.01 %), same order as `subsets`.
    pub weights_bp: Vec<u16>,
    pub split: Split,
    pub default_subset: usize,
    /// Lowercase name of the routing header the filter writes.
    pub header: String,
    pub metrics: MetricNames,
    pub sticky_keys: Vec<StickyKey>,
    pub seed: String,
    pub jwt: JwtSource,
    pub rules: RuleSet,
    /// The headers, cookies and claims the rules and keys read.
    pub slots: Slots,
    /// Pins for keyless requests (`sticky.pin_cookie`).
    pub pin: Option<PinCookie>,
    /// Response header that explains the decision (`decision_header`).
    pub decision_header: Option<DecisionHeader>,
    pub mode: Mode,
    /// The in-proxy ramp of one subset's weight (`ramp`).
    pub ramp: Option<Ramp>,
    /// The local brake on one subset (`brake`).
    pub brake: Option<Brake>,
    /// Outcomes counted per subset (`goals`).
    pub goals: Vec<Goal>,
    /// The cohort written into W3C baggage for the next hops (`cohort`).
    pub cohort: Option<Cohort>,
    /// Which gRPC codes are failures (`grpc`).
    pub grpc: crate::grpc::GrpcPolicy,
    /// The requests this instance decides (`scope`); the others pass through
    /// untouched. `None`: every request.
    pub scope: Option<Scope>,
    /// How instances sharing this routing header tell who routed a request.
    pub mark: RoutingMark,
}

/// Instances that share a routing header and overlap: the first in filter
/// order that decides a request routes it. It leaves a mark in the stream's
/// filter state (which no client can set); a later instance that finds its
/// routing header present and marked passes the request through untouched,
/// as if outside its scope. A header present without the mark is a client's
/// copy, replaced as always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingMark {
    /// The filter state key: `canary_router.routed.<header>`. It is looked
    /// for only when the routing header is present, so a lone instance pays
    /// no host call for it.
    pub key: String,
    /// The value left: this instance's metrics prefix.
    pub by: String,
    /// Whether this instance leaves the mark on what it routes: only a scoped
    /// one (an unscoped instance decides everything it sees, so it can only
    /// be the last on its header; it pays nothing for a mark no one reads).
    pub leave: bool,
}

impl RoutingMark {
    pub const KEY_PREFIX: &'static str = "canary_router.routed.";
}

/// `scope`, with slots of its own: a request outside it is read for the values
/// the scope tests only, not for every rule and key (make bench-profile).
#[derive(Debug, Clone)]
pub struct Scope {
    pub condition: Condition,
    pub slots: Slots,
}

impl Scope {
    /// Whether this instance decides `request` (read with [`Scope::slots`]).
    /// A scope that cannot be read is decided: the fallback then also takes a
    /// client's routing header away.
    pub fn excludes(&self, request: &impl RequestView) -> bool {
        matches!(self.condition.matches(request), Ok(false))
    }
}

/// The baggage members this filter writes: the bucket, and a subset a rule
/// forced. At the edge, members of these names that arrive are removed and
/// read as absent; inside the mesh they are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    pub bucket: String,
    pub force: String,
    pub trust_incoming: bool,
}

/// The response header that explains a decision (`decision_header`).
#[derive(Debug, Clone)]
pub struct DecisionHeader {
    /// Lowercase header name.
    pub name: String,
    /// Only responses to requests matching this (a verified claim, say) carry
    /// the header; the others have it removed, whoever set it upstream. `None`:
    /// every response carries it.
    pub only_for: Option<Condition>,
}

impl DecisionHeader {
    /// Whether the response to `request` may carry the header. A request whose
    /// condition cannot be read gets none.
    pub fn reveals(&self, request: &impl RequestView) -> bool {
        match &self.only_for {
            None => true,
            Some(condition) => matches!(condition.matches(request), Ok(true)),
        }
    }
}

/// `enforce` routes; `shadow` only decides and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

/// A sticky key source, in priority order.
#[derive(Debug, Clone)]
pub struct StickyKey {
    pub source: Source,
    /// `header:x-user-id`, `cookie:session_id`, `jwt_claim:sub`: names the source,
    /// never its value.
    pub label: String,
}

impl Plan {
    /// The split in force at `now_ms` (Unix milliseconds): the configured one,
    /// or the ramp's step.
    pub fn split_at(&self, now_ms: i64) -> Split {
        self.split_at_restarted(now_ms, 0)
    }

    /// [`Plan::split_at`] for a ramp that restarted from its first step at
    /// `restarted_at_ms` (a brake's cooldown ended then; 0: never).
    pub fn split_at_restarted(&self, now_ms: i64, restarted_at_ms: i64) -> Split {
        match &self.ramp {
            None => self.split.clone(),
            Some(ramp) if restarted_at_ms > ramp.start_ms => {
                let restarted = Ramp {
                    start_ms: restarted_at_ms,
                    ..ramp.clone()
                };
                let (weights, step) = restarted.weights_at(&self.weights_bp, now_ms);
                self.split.reweighted(&weights, step)
            }
            Some(ramp) => {
                let (weights, step) = ramp.weights_at(&self.weights_bp, now_ms);
                self.split.reweighted(&weights, step)
            }
        }
    }

    /// The shared-data key of the brake's window: a new seed, new weights or a
    /// new `brake.reset` token start a fresh, untripped window.
    pub fn brake_key(&self) -> Option<String> {
        let brake = self.brake.as_ref()?;
        let mut fingerprint = self.seed.clone().into_bytes();
        for w in &self.weights_bp {
            fingerprint.extend(w.to_le_bytes());
        }
        fingerprint.push(0);
        fingerprint.extend(brake.reset.as_bytes());
        Some(format!(
            "canary-router/brake/{}/{}/{:016x}",
            self.metrics.prefix,
            self.subset_name(brake.subset),
            crate::hash::xxh64(&fingerprint, 0)
        ))
    }

    pub fn subset_name(&self, subset: usize) -> &str {
        self.subsets.get(subset).map_or("", String::as_str)
    }
}
