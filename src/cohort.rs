//! One cohort across the services of a mesh: the `baggage` header a request
//! leaves with, carrying this hop's bucket and a forced subset to the next hops
//! (docs/configuration.md, "Cohorts across services").

use crate::decide::Decision;
use crate::formats::baggage::{self, Merged};
use crate::labels::Reason;
use crate::plan::{Cohort, Mode, Plan};
use crate::request::RequestView;

/// The `baggage` header for the next hop: the cohort members written (enforce
/// mode), untrusted copies of them removed; `None` to leave it as it came.
pub fn outgoing(
    plan: &Plan,
    cohort: &Cohort,
    decision: &Decision,
    request: &impl RequestView,
) -> Option<Merged> {
    let list = request.header(plan.slots.baggage_header()?).ok()?;
    let mut digits = [0u8; 4];
    let mut add: Vec<(&str, &[u8])> = Vec::new();
    if plan.mode == Mode::Enforce {
        if let Some(bucket) = decision.bucket {
            add.push((&cohort.bucket, crate::formats::decimal(bucket, &mut digits)));
        }
        if decision.reason == Reason::Rule {
            add.push((&cohort.force, plan.subset_name(decision.subset).as_bytes()));
        }
    }
    // Untrusted members of both names go; trusted ones of a name written are
    // replaced, not repeated.
    let mut own: Vec<&str> = add.iter().map(|(name, _)| *name).collect();
    if !cohort.trust_incoming {
        own = vec![&cohort.bucket, &cohort.force];
    }
    let arrived = own.iter().any(|o| {
        list.and_then(|l| baggage::member(l, o.as_bytes()))
            .is_some()
    });
    (arrived || !add.is_empty()).then(|| baggage::merge(list, &own, &add))
}
