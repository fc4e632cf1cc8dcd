//! Metric ids, defined once per configuration in the shape of `MetricNames`.

use std::fmt;

use super::{Host, HostError, MetricKind};
use crate::labels::Reason;
use crate::labels::ResponseClass;
use crate::metrics::MetricNames;

pub(crate) struct MetricIds {
    requests: Vec<Vec<u32>>,
    shadow_requests: Vec<Vec<u32>>,
    rule_matches: Vec<u32>,
    responses: Vec<Vec<u32>>,
    /// `[goal][subset]`
    goals: Vec<Vec<u32>>,
    durations: Vec<u32>,
    /// Only where the host can tell its memory (a Wasm VM's own): a gauge
    /// that would always read 0 is not defined at all.
    wasm_memory: Option<u32>,
    weight_bp: Vec<u32>,
    cohort_overflows: Option<u32>,
    skipped: Option<u32>,
}

pub(crate) struct DefineError {
    name: String,
    status: HostError,
}

impl fmt::Display for DefineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot define metric {}: {}", self.name, self.status)
    }
}

pub(crate) fn define(host: &impl Host, kind: MetricKind, name: &str) -> Result<u32, DefineError> {
    host.define_metric(kind, name)
        .map_err(|status| DefineError {
            name: name.to_owned(),
            status,
        })
}

/// One metric per name, in order. A loop, not `collect::<Result<..>>()`: each
/// such collect is an iterator adapter instance of its own in the .wasm.
fn define_all(
    host: &impl Host,
    kind: MetricKind,
    names: &[String],
) -> Result<Vec<u32>, DefineError> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        ids.push(define(host, kind, name)?);
    }
    Ok(ids)
}

/// A row of counters per subset.
fn counter_rows(host: &impl Host, rows: &[Vec<String>]) -> Result<Vec<Vec<u32>>, DefineError> {
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(define_all(host, MetricKind::Counter, row)?);
    }
    Ok(ids)
}

impl MetricIds {
    pub fn define(host: &impl Host, names: &MetricNames) -> Result<MetricIds, DefineError> {
        Ok(MetricIds {
            requests: counter_rows(host, &names.requests)?,
            shadow_requests: counter_rows(host, &names.shadow_requests)?,
            rule_matches: define_all(host, MetricKind::Counter, &names.rule_matches)?,
            wasm_memory: match host.memory_bytes() {
                Some(_) => Some(define(host, MetricKind::Gauge, &names.wasm_memory)?),
                None => None,
            },
            // Always: dashboards show the split in force with or without a ramp.
            weight_bp: define_all(host, MetricKind::Gauge, &names.weight_bp)?,
            durations: define_all(host, MetricKind::Histogram, &names.durations)?,
            responses: counter_rows(host, &names.responses)?,
            goals: counter_rows(host, &names.goals)?,
            cohort_overflows: match &names.cohort_overflows {
                Some(name) => Some(define(host, MetricKind::Counter, name)?),
                None => None,
            },
            skipped: match &names.skipped {
                Some(name) => Some(define(host, MetricKind::Counter, name)?),
                None => None,
            },
        })
    }

    pub fn request(&self, subset: usize, reason: Reason) -> Option<u32> {
        self.requests.get(subset)?.get(reason.index()).copied()
    }

    pub fn shadow_request(&self, subset: usize, reason: Reason) -> Option<u32> {
        self.shadow_requests
            .get(subset)?
            .get(reason.index())
            .copied()
    }

    /// Report the weights in force (a ramp's step).
    pub fn record_weights(&self, host: &impl Host, weights_bp: &[u16]) {
        for (id, w) in self.weight_bp.iter().zip(weights_bp) {
            let _ = host.record_metric(*id, u64::from(*w));
        }
    }

    /// Report this instance's memory.
    pub fn record_memory(&self, host: &impl Host) {
        if let (Some(id), Some(bytes)) = (self.wasm_memory, host.memory_bytes()) {
            let _ = host.record_metric(id, bytes);
        }
    }

    /// One response's time from request headers to response headers.
    pub fn record_duration(&self, host: &impl Host, subset: usize, millis: u64) {
        if let Some(id) = self.durations.get(subset) {
            let _ = host.record_metric(*id, millis);
        }
    }

    pub fn cohort_overflow(&self) -> Option<u32> {
        self.cohort_overflows
    }

    pub fn skipped(&self) -> Option<u32> {
        self.skipped
    }

    pub fn rule_match(&self, rule: usize) -> Option<u32> {
        self.rule_matches.get(rule).copied()
    }

    pub fn goal(&self, goal: usize, subset: usize) -> Option<u32> {
        self.goals.get(goal)?.get(subset).copied()
    }

    pub fn response(&self, subset: usize, class: ResponseClass) -> Option<u32> {
        self.responses.get(subset)?.get(class as usize).copied()
    }
}

/// Add one; a failed increment is not worth failing or logging a request over.
pub(crate) fn increment(host: &impl Host, id: Option<u32>) {
    if let Some(id) = id {
        let _ = host.increment_metric(id, 1);
    }
}
