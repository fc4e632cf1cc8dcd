//! The metric schema, in one place. Defined once per configuration (never per
//! request); Envoy shows them under `wasmcustom.` at `/stats`.
//!
//! Labels are encoded in the names the way Istio encodes its own (`name=.=value;.;`),
//! so one tag regex per label, `(name=\.=(.*?);\.;)`, turns them into Prometheus
//! labels: Istio writes exactly that regex for each of its `extraStatTags`, and
//! `envoy/envoy.yaml` lists the same five. Both proxies then show the same series:
//!
//! | name at `/stats` (prefix `canary`)                          | at `/stats/prometheus`                           |
//! |-------------------------------------------------------------|--------------------------------------------------|
//! | `canary.subset=.=v2;.;reason=.=hash;.;requests`             | `canary_requests{subset,reason}`                 |
//! | `canary.shadow.subset=.=v2;.;reason=.=hash;.;requests`      | `canary_shadow_requests{subset,reason}`          |
//! | `canary.subset=.=v2;.;class=.=5xx;.;responses`              | `canary_responses{subset,class}`                 |
//! | `canary.subset=.=v2;.;response_duration_ms` (histogram)     | `canary_response_duration_ms_bucket{subset,le}`  |
//! | `canary.rule=.=staff;.;rule_matches`                        | `canary_rule_matches{rule}`                      |
//! | `canary.goal=.=checkout;.;subset=.=v2;.;goals`              | `canary_goals{goal,subset}`                      |
//! | `canary.subset=.=v2;.;weight_bp` (gauge)                    | `canary_weight_bp{subset}`                       |
//! | `canary.subset=.=v2;.;brake_trips`                          | `canary_brake_trips{subset}`                     |
//! | `canary.subset=.=v2;.;brake_tripped` (gauge)                | `canary_brake_tripped{subset}`                   |
//! | `canary.wasm_memory_bytes` (gauge)                          | `canary_wasm_memory_bytes`                       |
//! | `canary.cohort_overflows`                                   | `canary_cohort_overflows`                        |
//! | `canary.skipped`                                            | `canary_skipped`                                 |

use crate::labels::{Reason, ResponseClass};

/// The labels the names carry: each needs one tag regex in the proxy's bootstrap
/// (`envoy/envoy.yaml`'s `stats_tags`, Istio's `extraStatTags`).
pub const LABELS: [&str; 5] = ["subset", "reason", "class", "rule", "goal"];

/// One label in Istio's in-name encoding: `subset=.=v2;.;`.
fn label(name: &str, value: &str) -> String {
    format!("{name}=.={value};.;")
}

/// Every metric name of one configuration, laid out so the host can keep ids in the
/// same shape and index them without formatting anything per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    /// `[subset][reason]`
    pub requests: Vec<Vec<String>>,
    /// `[subset][reason]`, counted instead of `requests` in shadow mode.
    pub shadow_requests: Vec<Vec<String>>,
    /// `[rule]`
    pub rule_matches: Vec<String>,
    /// `[subset][class]`
    pub responses: Vec<Vec<String>>,
    /// `[goal][subset]`
    pub goals: Vec<Vec<String>>,
    /// Histograms `[subset]`: request headers to response headers, in milliseconds.
    pub durations: Vec<String>,
    /// Gauge: the VM's linear memory in bytes.
    pub wasm_memory: String,
    /// Gauges `[subset]`: the weight in force, in basis points (a ramp moves it).
    pub weight_bp: Vec<String>,
    /// Requests whose cohort was not written into baggage: it would have broken
    /// a W3C limit (8,192 bytes, 180 members). Only with a `cohort` block.
    pub cohort_overflows: Option<String>,
    /// Requests outside the instance's `scope`, passed through untouched. Only
    /// with a `scope`.
    pub skipped: Option<String>,
    /// The stats prefix itself.
    pub prefix: String,
}

impl MetricNames {
    /// Counter `<prefix>.subset=.=<subset>;.;brake_trips` and gauge
    /// `<prefix>.subset=.=<subset>;.;brake_tripped`.
    pub fn brake(&self, subset: &str) -> (String, String) {
        let s = label("subset", subset);
        (
            format!("{}.{s}brake_trips", self.prefix),
            format!("{}.{s}brake_tripped", self.prefix),
        )
    }
}

impl MetricNames {
    // Plain loops: each `map(..).collect()` here was an iterator instance of its
    // own in the .wasm.
    pub fn new(
        prefix: &str,
        subsets: &[String],
        rules: &[String],
        goals: &[String],
    ) -> MetricNames {
        let requests = |scope: &str| -> Vec<Vec<String>> {
            let mut rows = Vec::with_capacity(subsets.len());
            for s in subsets {
                let s = label("subset", s);
                let mut row = Vec::with_capacity(Reason::ALL.len());
                for r in Reason::ALL {
                    row.push(format!("{scope}{s}{}requests", label("reason", r.as_str())));
                }
                rows.push(row);
            }
            rows
        };
        let mut weight_bp = Vec::with_capacity(subsets.len());
        let mut durations = Vec::with_capacity(subsets.len());
        let mut responses = Vec::with_capacity(subsets.len());
        for s in subsets {
            let s = label("subset", s);
            weight_bp.push(format!("{prefix}.{s}weight_bp"));
            durations.push(format!("{prefix}.{s}response_duration_ms"));
            let mut row = Vec::with_capacity(ResponseClass::ALL.len());
            for c in ResponseClass::ALL {
                row.push(format!(
                    "{prefix}.{s}{}responses",
                    label("class", c.as_str())
                ));
            }
            responses.push(row);
        }
        let mut goal_rows = Vec::with_capacity(goals.len());
        for g in goals {
            let g = label("goal", g);
            let mut row = Vec::with_capacity(subsets.len());
            for s in subsets {
                row.push(format!("{prefix}.{g}{}goals", label("subset", s)));
            }
            goal_rows.push(row);
        }
        let mut rule_matches = Vec::with_capacity(rules.len());
        for r in rules {
            rule_matches.push(format!("{prefix}.{}rule_matches", label("rule", r)));
        }
        MetricNames {
            prefix: prefix.to_owned(),
            wasm_memory: format!("{prefix}.wasm_memory_bytes"),
            cohort_overflows: Some(format!("{prefix}.cohort_overflows")),
            skipped: Some(format!("{prefix}.skipped")),
            weight_bp,
            durations,
            requests: requests(&format!("{prefix}.")),
            shadow_requests: requests(&format!("{prefix}.shadow.")),
            rule_matches,
            responses,
            goals: goal_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let names = MetricNames::new(
            "canary",
            &["v1".into(), "v2".into()],
            &["qa".into()],
            &["checkout".into()],
        );
        assert_eq!(
            names.goals[0][1],
            "canary.goal=.=checkout;.;subset=.=v2;.;goals"
        );
        assert_eq!(
            names.requests[1][Reason::Rule.index()],
            "canary.subset=.=v2;.;reason=.=rule;.;requests"
        );
        assert_eq!(
            names.requests[0][Reason::Hash.index()],
            "canary.subset=.=v1;.;reason=.=hash;.;requests"
        );
        assert_eq!(
            names.requests[0][Reason::Pin.index()],
            "canary.subset=.=v1;.;reason=.=pin;.;requests"
        );
        assert_eq!(
            names.shadow_requests[1][Reason::Random.index()],
            "canary.shadow.subset=.=v2;.;reason=.=random;.;requests"
        );
        assert_eq!(names.rule_matches, ["canary.rule=.=qa;.;rule_matches"]);
        assert_eq!(names.wasm_memory, "canary.wasm_memory_bytes");
        assert_eq!(names.weight_bp[1], "canary.subset=.=v2;.;weight_bp");
        assert_eq!(
            names.durations[1],
            "canary.subset=.=v2;.;response_duration_ms"
        );
        assert_eq!(
            names.responses[1][3],
            "canary.subset=.=v2;.;class=.=5xx;.;responses"
        );
        assert_eq!(
            names.brake("v2"),
            (
                "canary.subset=.=v2;.;brake_trips".to_owned(),
                "canary.subset=.=v2;.;brake_tripped".to_owned()
            )
        );
        assert_eq!(names.requests[0].len(), Reason::ALL.len());
    }
}
