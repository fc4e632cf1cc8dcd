//! The decision: which subset serves a request, and why. Pure: it reads the request
//! only through [`RequestView`] and draws randomness from the caller.

use std::fmt::Write as _;

use crate::bucket::{random_bucket, Split};
use crate::labels::Reason;
use crate::pin::{self, PinId};
use crate::plan::{Mode, Plan};
use crate::request::{LookupError, RequestView};
use crate::rules::Source;

/// Where randomness comes from: a fast generator for keyless draws, and strong
/// entropy for pin ids (the proxy uses the host's `random_get`).
pub trait Entropy {
    fn next_u64(&mut self) -> u64;
    fn pin_bits(&mut self) -> [u8; 16];
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into `Plan::subsets`.
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
    fn fallback(plan: &Plan) -> Decision {
        Decision {
            subset: plan.default_subset,
            reason: Reason::Fallback,
            rule: None,
            key: None,
            bucket: None,
            new_pin: None,
            step: None,
            braked: false,
        }
    }

    /// The decision header value: `subset=v2; reason=rule; rule=staff`,
    /// `subset=v1; reason=hash; key=cookie:session_id; bucket=4711`. It names the
    /// key's source, never its value (which may be personal data).
    pub fn describe(&self, plan: &Plan) -> String {
        let mut out = String::with_capacity(64);
        let _ = write!(
            out,
            "subset={}; reason={}",
            plan.subset_name(self.subset),
            self.reason.as_str()
        );
        if let Some(rule) = self.rule.and_then(|i| plan.rules.rules().get(i)) {
            let _ = write!(out, "; rule={}", rule.name);
        }
        if let Some(key) = self.key.and_then(|i| plan.sticky_keys.get(i)) {
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
        if self.new_pin.is_some() && plan.mode == Mode::Enforce {
            out.push_str("; pin=new");
        }
        if plan.mode == Mode::Shadow {
            out.push_str("; mode=shadow");
        }
        out
    }
}

/// What a decision depends on besides the plan and the request: the split in
/// force (the configured one, or the ramp's step now: [`Plan::split_at`]) and
/// whether the brake holds. The filter keeps the split current on its tick and
/// asks the proxy about the brake only when a decision lands on the braked
/// subset; `explain` and `simulate` pass what they are told.
pub struct Conditions<'a, B: FnOnce() -> bool> {
    pub split: &'a Split,
    /// Asked at most once, and only for a decision the brake would change.
    pub brake_holds: B,
}

impl<'a> Conditions<'a, fn() -> bool> {
    /// The configured split, brake released.
    pub fn configured(plan: &'a Plan) -> Self {
        Conditions {
            split: &plan.split,
            brake_holds: || false,
        }
    }
}

/// Decide for one request: rules in order, else the first present sticky key's
/// bucket, else the pin cookie's bucket, else a random bucket (a new pin's, when
/// pins are on); then, when the brake holds, its subset's requests go to the
/// default subset (rule matches too, unless `stop_rules` is false). Any read
/// error yields `default_subset` with reason `Fallback`.
pub fn decide(plan: &Plan, request: &impl RequestView, entropy: &mut impl Entropy) -> Decision {
    decide_with(plan, Conditions::configured(plan), request, entropy)
}

/// [`decide`] under `conditions` (a ramp's step, a tripped brake).
pub fn decide_with(
    plan: &Plan,
    conditions: Conditions<'_, impl FnOnce() -> bool>,
    request: &impl RequestView,
    entropy: &mut impl Entropy,
) -> Decision {
    let mut decision = decide_split(plan, conditions.split, request, entropy);
    if let Some(brake) = &plan.brake {
        if decision.subset == brake.subset
            && (brake.stop_rules || decision.reason != Reason::Rule)
            && (conditions.brake_holds)()
        {
            decision.subset = plan.default_subset;
            decision.braked = true;
        }
    }
    decision
}

/// A request's sticky bucket and where it came from.
#[derive(Clone, Copy)]
struct Sticky {
    bucket: u16,
    reason: Reason,
    key: Option<usize>,
    new_pin: Option<PinId>,
}

/// The first present sticky key's bucket, else the pin cookie's, else a new
/// pin's (pins on) or a random bucket.
#[inline(always)]
fn sticky(
    plan: &Plan,
    split: &Split,
    request: &impl RequestView,
    entropy: &mut impl Entropy,
) -> Result<Sticky, LookupError> {
    if let Some((index, bucket)) = first_key(plan, split, request)? {
        return Ok(Sticky {
            bucket,
            reason: Reason::Hash,
            key: Some(index),
            new_pin: None,
        });
    }
    Ok(match pinned(plan, split, request, entropy)? {
        Some((bucket, reason, key, new_pin)) => Sticky {
            bucket,
            reason,
            key,
            new_pin,
        },
        None => Sticky {
            bucket: random_bucket(entropy.next_u64()),
            reason: Reason::Random,
            key: None,
            new_pin: None,
        },
    })
}

/// The decision before the brake.
fn decide_split(
    plan: &Plan,
    split: &Split,
    request: &impl RequestView,
    entropy: &mut impl Entropy,
) -> Decision {
    // Computed at most once: by a rule with a percent, else by the weights.
    let mut cached: Option<Sticky> = None;
    let rule = plan.rules.first_accepted(request, |rule| {
        let Some(percent_bp) = rule.percent_bp else {
            return Ok(true);
        };
        let s = match cached {
            Some(s) => s,
            None => {
                let s = sticky(plan, split, request, entropy)?;
                cached = Some(s);
                s
            }
        };
        Ok(crate::rules::in_share(s.bucket, percent_bp))
    });
    let rule = match rule {
        Ok(rule) => rule,
        Err(_) => return Decision::fallback(plan),
    };
    if let Some(index) = rule {
        return match plan.rules.rules().get(index) {
            Some(r) => {
                // A rule with a percent decided by the sticky bucket: show it,
                // and keep a new pin so the user stays in (or out of) the share.
                let share = cached.filter(|_| r.percent_bp.is_some());
                Decision {
                    subset: r.subset,
                    reason: Reason::Rule,
                    rule: Some(index),
                    key: share.and_then(|s| s.key),
                    bucket: share.map(|s| s.bucket),
                    new_pin: share.and_then(|s| s.new_pin),
                    step: split.step(),
                    braked: false,
                }
            }
            None => Decision::fallback(plan),
        };
    }
    let s = match cached {
        Some(s) => s,
        None => match sticky(plan, split, request, entropy) {
            Ok(s) => s,
            Err(_) => return Decision::fallback(plan),
        },
    };
    match split.subset_of(s.bucket) {
        Some(subset) => Decision {
            subset,
            reason: s.reason,
            rule: None,
            key: s.key,
            bucket: Some(s.bucket),
            new_pin: s.new_pin,
            step: split.step(),
            braked: false,
        },
        None => Decision::fallback(plan),
    }
}

type Pinned = (u16, Reason, Option<usize>, Option<PinId>);

/// With pins on: the pin cookie's bucket, or a new pin's. `None` when pins are off.
fn pinned(
    plan: &Plan,
    split: &Split,
    request: &impl RequestView,
    entropy: &mut impl Entropy,
) -> Result<Option<Pinned>, LookupError> {
    let Some(pin) = &plan.pin else {
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
#[inline(always)]
fn first_key(
    plan: &Plan,
    split: &Split,
    request: &impl RequestView,
) -> Result<Option<(usize, u16)>, LookupError> {
    for (index, key) in plan.sticky_keys.iter().enumerate() {
        let claim;
        let value = match key.source {
            Source::Header(slot) => request.header(slot)?,
            Source::Cookie(slot) => request.cookie(slot)?,
            Source::Claim(slot) => {
                claim = request.claim(slot)?;
                claim.as_ref().and_then(|c| c.as_key())
            }
            Source::Baggage(slot) => {
                // The bucket an upstream hop wrote: the same cohort, not rehashed.
                if let Some(bucket) = request.baggage(slot)?.as_deref().and_then(parse_bucket) {
                    return Ok(Some((index, bucket)));
                }
                continue;
            }
        };
        let bucket = value.filter(|v| !v.is_empty()).map(|v| split.bucket(v));
        if let Some(bucket) = bucket {
            return Ok(Some((index, bucket)));
        }
    }
    Ok(None)
}

/// A bucket as this filter writes it into baggage: `0`..`9999`, in decimal.
fn parse_bucket(text: &[u8]) -> Option<u16> {
    if text.is_empty() || text.len() > 4 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = text.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (value < crate::bucket::BUCKETS).then_some(value)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
