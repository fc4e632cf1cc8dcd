//! The decision: which subset serves a request, and why. Pure: it reads the request
//! only through [`RequestView`] and draws randomness from the caller.

use std::fmt::Write as _;

use crate::bucket::{random_bucket, Split};
use crate::pin::{self, PinId};
use crate::request::{LookupError, RequestView};
use crate::router::{Mode, Router};
use crate::rules::Source;

/// Where randomness comes from: a fast generator for keyless draws, and strong
/// entropy for pin ids (the proxy uses the host's `random_get`).
pub trait Entropy {
    fn next_u64(&mut self) -> u64;
    fn pin_bits(&mut self) -> [u8; 16];
}

/// Why a subset was chosen. Also the `reason` label of the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A rule matched.
    Rule = 0,
    /// A sticky key was hashed against the weights.
    Hash = 1,
    /// No sticky key, but a pin cookie: the pin was hashed.
    Pin = 2,
    /// No sticky key and no pin: a random draw by weight (or a new pin's hash).
    Random = 3,
    /// The decision could not be made (a host read failed): `default_subset`.
    Fallback = 4,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Rule,
        Reason::Hash,
        Reason::Pin,
        Reason::Random,
        Reason::Fallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Hash => "hash",
            Reason::Pin => "pin",
            Reason::Random => "random",
            Reason::Fallback => "fallback",
        }
    }

    /// Position in [`Reason::ALL`] (the layout of the metric tables).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into `Router::subsets`.
    pub subset: usize,
    pub reason: Reason,
    /// The matching rule (reason `Rule`).
    pub rule: Option<usize>,
    /// The sticky key source that was hashed (reason `Hash`).
    pub key: Option<usize>,
    /// The bucket, 0..10000 (reasons `Hash`, `Pin` and `Random`).
    pub bucket: Option<u16>,
    /// A pin id issued with this decision, to be set as a cookie on the response.
    pub new_pin: Option<PinId>,
    /// The ramp step in force (0-based), when a ramp is configured and started.
    pub step: Option<usize>,
    /// A tripped brake sent this request from its subset to the default one.
    pub braked: bool,
}

impl Decision {
    fn fallback(router: &Router) -> Decision {
        Decision {
            subset: router.default_subset,
            reason: Reason::Fallback,
            rule: None,
            key: None,
            bucket: None,
            new_pin: None,
            step: None,
            braked: false,
        }
    }

    /// Apply a tripped brake on `subset`: requests that chose it go to the
    /// default subset instead (rule matches too, unless `stop_rules` is false).
    pub fn brake(&mut self, router: &Router, subset: usize, stop_rules: bool) {
        if self.subset == subset && (stop_rules || self.reason != Reason::Rule) {
            self.subset = router.default_subset;
            self.braked = true;
        }
    }

    /// The decision header value: `subset=v2; reason=rule; rule=staff`,
    /// `subset=v1; reason=hash; key=cookie:session_id; bucket=4711`. It names the
    /// key's source, never its value (which may be personal data).
    pub fn describe(&self, router: &Router) -> String {
        let mut out = String::with_capacity(64);
        let _ = write!(
            out,
            "subset={}; reason={}",
            router.subset_name(self.subset),
            self.reason.as_str()
        );
        if let Some(rule) = self.rule.and_then(|i| router.rules.rules().get(i)) {
            let _ = write!(out, "; rule={}", rule.name);
        }
        if let Some(key) = self.key.and_then(|i| router.sticky_keys.get(i)) {
            let _ = write!(out, "; key={}", key.label);
        } else if self.reason == Reason::Pin {
            out.push_str("; key=pin");
        }
        if let Some(bucket) = self.bucket {
            let _ = write!(out, "; bucket={bucket}");
        }
        if let Some(step) = self.step {
            let _ = write!(out, "; step={}", step + 1);
        }
        if self.braked {
            out.push_str("; brake=tripped");
        }
        // Shadow mode computes a new pin like enforce mode would, but never sets it.
        if self.new_pin.is_some() && router.mode == Mode::Enforce {
            out.push_str("; pin=new");
        }
        if router.mode == Mode::Shadow {
            out.push_str("; mode=shadow");
        }
        out
    }
}

/// Decide for one request: rules in order, else the first present sticky key's
/// bucket, else the pin cookie's bucket, else a random bucket (a new pin's, when
/// pins are on). Any read error yields `default_subset` with reason `Fallback`.
pub fn decide(router: &Router, request: &impl RequestView, entropy: &mut impl Entropy) -> Decision {
    decide_with(router, &router.split, request, entropy)
}

/// [`decide`] with the split in force now (a ramp step), not the configured one.
pub fn decide_with(
    router: &Router,
    split: &Split,
    request: &impl RequestView,
    entropy: &mut impl Entropy,
) -> Decision {
    let rule = match router.rules.first_match(request) {
        Ok(rule) => rule,
        Err(_) => return Decision::fallback(router),
    };
    if let Some(index) = rule {
        return match router.rules.rules().get(index) {
            Some(r) => Decision {
                subset: r.subset,
                reason: Reason::Rule,
                rule: Some(index),
                key: None,
                bucket: None,
                new_pin: None,
                step: split.step(),
                braked: false,
            },
            None => Decision::fallback(router),
        };
    }

    let key = match first_key(router, split, request) {
        Ok(key) => key,
        Err(_) => return Decision::fallback(router),
    };
    let (bucket, reason, key, new_pin) = match key {
        Some((index, bucket)) => (bucket, Reason::Hash, Some(index), None),
        None => match pinned(router, split, request, entropy) {
            Ok(Some(pinned)) => pinned,
            Ok(None) => (
                random_bucket(entropy.next_u64()),
                Reason::Random,
                None,
                None,
            ),
            Err(_) => return Decision::fallback(router),
        },
    };
    match split.subset_of(bucket) {
        Some(subset) => Decision {
            subset,
            reason,
            rule: None,
            key,
            bucket: Some(bucket),
            new_pin,
            step: split.step(),
            braked: false,
        },
        None => Decision::fallback(router),
    }
}

type Pinned = (u16, Reason, Option<usize>, Option<PinId>);

/// With pins on: the pin cookie's bucket, or a new pin's. `None` when pins are off.
fn pinned(
    router: &Router,
    split: &Split,
    request: &impl RequestView,
    entropy: &mut impl Entropy,
) -> Result<Option<Pinned>, LookupError> {
    let Some(pin) = &router.pin else {
        return Ok(None);
    };
    if let Some(value) = request.cookie(pin.slot)? {
        if pin::is_well_formed(value) {
            return Ok(Some((split.bucket(value), Reason::Pin, None, None)));
        }
    }
    let id = PinId::from_random(entropy.pin_bits());
    Ok(Some((
        split.bucket(id.as_bytes()),
        Reason::Random,
        None,
        Some(id),
    )))
}

/// The first present, non-empty sticky key: its index and bucket.
fn first_key(
    router: &Router,
    split: &Split,
    request: &impl RequestView,
) -> Result<Option<(usize, u16)>, LookupError> {
    for (index, key) in router.sticky_keys.iter().enumerate() {
        let claim;
        let value = match key.source {
            Source::Header(slot) => request.header(slot)?,
            Source::Cookie(slot) => request.cookie(slot)?,
            Source::Claim(slot) => {
                claim = request.claim(slot)?;
                claim.as_ref().and_then(|c| c.as_key())
            }
        };
        let bucket = value.filter(|v| !v.is_empty()).map(|v| split.bucket(v));
        if let Some(bucket) = bucket {
            return Ok(Some((index, bucket)));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
