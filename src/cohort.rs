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
    let mut list = request.header(plan.slots.baggage_header()?).ok()?;
    // W3C baggage is text. A header that is not cannot be rewritten member by
    // member (nor relied on to hold no cohort members): it is replaced by the
    // filter's members, or removed.
    let text = list.is_none_or(|l| std::str::from_utf8(l).is_ok());
    if !text {
        list = None;
    }
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
    (arrived || !add.is_empty() || !text).then(|| baggage::merge(list, &own, &add))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::decide::{decide, Entropy};
    use crate::request::{JsonClaims, Request};

    struct NoRandom;
    impl Entropy for NoRandom {
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn pin_bits(&mut self) -> [u8; 16] {
            [0; 16]
        }
    }

    /// What leaves the edge for `baggage` (raw bytes, as Envoy may hand them over).
    fn leaving(trust: bool, baggage: &[u8]) -> Option<Merged> {
        let json = format!(
            r#"{{"subsets": [{{"name": "v1", "weight": 90}}, {{"name": "v2", "weight": 10}}],
                "sticky": {{"keys": [{{"header": "x-user-id"}}], "seed": "mesh"}},
                "cohort": {{"trust_incoming": {trust}}}}}"#
        );
        let plan = load(json.as_bytes()).unwrap().plan;
        let headers = vec![
            ("x-user-id".to_owned(), b"alice".to_vec()),
            ("baggage".to_owned(), baggage.to_vec()),
        ];
        let request = Request::new(&plan.slots, &plan.jwt, JsonClaims(None), Ok(&headers));
        let decision = decide(&plan, &request, &mut NoRandom);
        let cohort = plan.cohort.as_ref().unwrap();
        outgoing(&plan, cohort, &decision, &request)
    }

    #[test]
    fn a_baggage_header_that_is_not_text_is_replaced_never_passed_on() {
        // A client's cohort member hidden in a header the filter cannot rewrite
        // as text must not reach the next hop, trusted or not.
        for trust in [false, true] {
            let Some(Merged::Write(out)) = leaving(trust, b"canary-force=v2,x=\xff") else {
                panic!("not rewritten");
            };
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.starts_with("canary-bucket=") && !out.contains("force"),
                "{out}"
            );
        }
        let Some(Merged::Write(out)) = leaving(false, b"a=1,canary-force=v2") else {
            panic!("not rewritten");
        };
        assert!(out.starts_with(b"a=1,canary-bucket="));
    }
}
