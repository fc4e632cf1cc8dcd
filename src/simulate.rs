//! What a configuration does to a population of keys, and what changing it would
//! move: the operator's question before a weight or seed change. Uses the filter's
//! own bucket function; rules are not involved (the keys carry no headers).

use std::collections::BTreeMap;

use crate::plan::Plan;

/// The synthetic key population: `user-0`, `user-1`, ... The hash makes any set
/// of distinct keys behave alike, so shares carry over to real user ids.
pub fn key(i: u64) -> String {
    format!("user-{i}")
}

/// Keys per subset, in the plan's subset order.
pub fn shares(plan: &Plan, keys: u64) -> Vec<u64> {
    let mut counts = vec![0u64; plan.subsets.len()];
    for i in 0..keys {
        if let Some(count) = subset_of(plan, &key(i)).and_then(|s| counts.get_mut(s)) {
            *count += 1;
        }
    }
    counts
}

/// How many keys move from one subset to another between two configurations,
/// by subset name (the two may list different subsets). Keys that stay are not
/// listed.
pub fn moves(from: &Plan, to: &Plan, keys: u64) -> BTreeMap<(String, String), u64> {
    let mut flows = BTreeMap::new();
    for i in 0..keys {
        let k = key(i);
        let (Some(a), Some(b)) = (subset_of(from, &k), subset_of(to, &k)) else {
            continue;
        };
        let (a, b) = (from.subset_name(a), to.subset_name(b));
        if a != b {
            *flows.entry((a.to_owned(), b.to_owned())).or_insert(0) += 1;
        }
    }
    flows
}

/// Whether `plan`'s first sticky key is a baggage member: it takes the bucket
/// an upstream hop wrote (`cohort`).
pub fn reads_bucket_from_baggage(plan: &Plan) -> bool {
    matches!(
        plan.sticky_keys.first().map(|k| &k.source),
        Some(crate::rules::Source::Baggage(_))
    )
}

/// The same keys through two services, by subset pair (every pair, staying
/// or not). `carried`: the second service takes the first's bucket (a
/// baggage sticky key), else it hashes each key under its own seed.
pub fn joint(
    first: &Plan,
    second: &Plan,
    keys: u64,
    carried: bool,
) -> BTreeMap<(String, String), u64> {
    let mut pairs = BTreeMap::new();
    for i in 0..keys {
        let k = key(i);
        let bucket = first.split.bucket(k.as_bytes());
        let other = if carried {
            bucket
        } else {
            second.split.bucket(k.as_bytes())
        };
        let (Some(a), Some(b)) = (first.split.subset_of(bucket), second.split.subset_of(other))
        else {
            continue;
        };
        let pair = (
            first.subset_name(a).to_owned(),
            second.subset_name(b).to_owned(),
        );
        *pairs.entry(pair).or_insert(0) += 1;
    }
    pairs
}

fn subset_of(plan: &Plan, key: &str) -> Option<usize> {
    plan.split.subset_of(plan.split.bucket(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    fn plan(v1: f64, v2: f64, seed: &str) -> Plan {
        let json = format!(
            r#"{{"subsets":[{{"name":"v1","weight":{v1}}},{{"name":"v2","weight":{v2}}}],"sticky":{{"seed":"{seed}"}}}}"#
        );
        load(json.as_bytes()).unwrap().plan
    }

    #[test]
    fn shares_follow_weights() {
        let counts = shares(&plan(90.0, 10.0, "s"), 100_000);
        assert_eq!(counts.iter().sum::<u64>(), 100_000);
        assert!((counts[1] as f64 / 1000.0 - 10.0).abs() < 0.5, "{counts:?}");
    }

    #[test]
    fn a_monotonic_ramp_only_moves_into_the_canary() {
        let flows = moves(&plan(90.0, 10.0, "s"), &plan(50.0, 50.0, "s"), 100_000);
        assert_eq!(flows.len(), 1, "{flows:?}");
        let moved = flows[&("v1".to_owned(), "v2".to_owned())];
        assert!((moved as f64 / 1000.0 - 40.0).abs() < 1.0, "{moved}");
    }

    #[test]
    fn a_seed_change_moves_both_ways() {
        let flows = moves(&plan(50.0, 50.0, "a"), &plan(50.0, 50.0, "b"), 10_000);
        assert!(flows.contains_key(&("v1".to_owned(), "v2".to_owned())));
        assert!(flows.contains_key(&("v2".to_owned(), "v1".to_owned())));
    }
}
