//! Goals: business outcomes counted per subset (a checkout, a signup), so a
//! conversion rate per subset is one PromQL expression. A goal counts a
//! request that matched its condition and got a response of its class.

use crate::labels::ResponseClass;
use crate::request::{LookupError, RequestView};
use crate::rules::Condition;

/// At most this many goals: which ones a request matched is one `u64`.
pub const MAX_GOALS: usize = 64;

#[derive(Debug, Clone)]
pub struct Goal {
    pub name: String,
    pub condition: Condition,
    /// The response class that completes the goal.
    pub class: ResponseClass,
}

/// The goals `request` matches, as bits (goal `i` is bit `i`). A goal whose
/// condition cannot be read is not counted.
pub fn matched(goals: &[Goal], request: &impl RequestView) -> u64 {
    let mut bits = 0u64;
    for (i, goal) in goals.iter().enumerate().take(MAX_GOALS) {
        if let Ok(true) = goal.condition.matches(request).map_err(|LookupError| ()) {
            bits |= 1 << i;
        }
    }
    bits
}

/// The goals among `bits` that a response of `class` completes.
pub fn completed(
    goals: &[Goal],
    bits: u64,
    class: ResponseClass,
) -> impl Iterator<Item = usize> + '_ {
    goals
        .iter()
        .enumerate()
        .take(MAX_GOALS)
        .filter(move |(i, g)| bits & (1 << i) != 0 && g.class == class)
        .map(|(i, _)| i)
}
