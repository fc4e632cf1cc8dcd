//! The decision: which subset serves a request, and why. Pure: it reads the request
//! only through [`RequestView`] and draws randomness from the caller.

use crate::bucket::random_bucket;
use crate::request::RequestView;
use crate::router::Router;
use crate::rules::Source;

/// Why a subset was chosen. Also the `reason` label of the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A rule matched.
    Rule = 0,
    /// A sticky key was hashed against the weights.
    Hash = 1,
    /// No sticky key: a random draw by weight.
    Random = 2,
    /// The decision could not be made (a host read failed): `default_subset`.
    Fallback = 3,
}

impl Reason {
    pub const ALL: [Reason; 4] = [Reason::Rule, Reason::Hash, Reason::Random, Reason::Fallback];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Hash => "hash",
            Reason::Random => "random",
            Reason::Fallback => "fallback",
        }
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
    /// The bucket, 0..10000 (reasons `Hash` and `Random`).
    pub bucket: Option<u16>,
}

impl Decision {
    fn fallback(router: &Router) -> Decision {
        Decision {
            subset: router.default_subset,
            reason: Reason::Fallback,
            rule: None,
            key: None,
            bucket: None,
        }
    }
}

/// Decide for one request: rules in order, else the first present sticky key's
/// bucket, else a random bucket (`random` is only called then). Any read error
/// yields `default_subset` with reason `Fallback`.
pub fn decide(
    router: &Router,
    request: &impl RequestView,
    random: impl FnOnce() -> u64,
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
            },
            None => Decision::fallback(router),
        };
    }

    let key = match first_key(router, request) {
        Ok(key) => key,
        Err(_) => return Decision::fallback(router),
    };
    let (bucket, reason, key) = match key {
        Some((index, bucket)) => (bucket, Reason::Hash, Some(index)),
        None => (random_bucket(random()), Reason::Random, None),
    };
    match router.split.subset_of(bucket) {
        Some(subset) => Decision {
            subset,
            reason,
            rule: None,
            key,
            bucket: Some(bucket),
        },
        None => Decision::fallback(router),
    }
}

/// The first present, non-empty sticky key: its index and bucket.
fn first_key(
    router: &Router,
    request: &impl RequestView,
) -> Result<Option<(usize, u16)>, crate::request::LookupError> {
    for (index, key) in router.sticky_keys.iter().enumerate() {
        let bucket = match &key.source {
            Source::Header(name) => request
                .header(name)?
                .filter(|v| !v.is_empty())
                .map(|v| router.split.bucket(&v)),
            Source::Cookie(name) => request
                .cookie(name)?
                .filter(|v| !v.is_empty())
                .map(|v| router.split.bucket(v)),
            Source::Claim(path) => request
                .claim(path)?
                .and_then(|c| c.as_key().map(|k| router.split.bucket(k))),
        };
        if let Some(bucket) = bucket {
            return Ok(Some((index, bucket)));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
