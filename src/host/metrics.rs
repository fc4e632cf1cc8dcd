//! Metric ids, defined once per configuration in the shape of `MetricNames`.

use std::fmt;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::decide::Reason;
use crate::metrics::{MetricNames, ResponseClass};

pub(crate) struct MetricIds {
    requests: Vec<Vec<u32>>,
    shadow_requests: Vec<Vec<u32>>,
    rule_matches: Vec<u32>,
    responses: Vec<Vec<u32>>,
    durations: Vec<u32>,
    wasm_memory: u32,
    weight_bp: Vec<u32>,
}

pub(crate) struct DefineError {
    name: String,
    status: proxy_wasm::types::Status,
}

impl fmt::Display for DefineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot define metric {}: host status {:?}",
            self.name, self.status
        )
    }
}

fn define(kind: MetricType, name: &str) -> Result<u32, DefineError> {
    hostcalls::define_metric(kind, name).map_err(|status| DefineError {
        name: name.to_owned(),
        status,
    })
}

/// One metric per name, in order. A loop, not `collect::<Result<..>>()`: each
/// such collect is an iterator adapter instance of its own in the .wasm.
fn define_all(kind: MetricType, names: &[String]) -> Result<Vec<u32>, DefineError> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        ids.push(define(kind, name)?);
    }
    Ok(ids)
}

fn counters(names: &[String]) -> Result<Vec<u32>, DefineError> {
    define_all(MetricType::Counter, names)
}

/// A row of counters per subset.
fn counter_rows(rows: &[Vec<String>]) -> Result<Vec<Vec<u32>>, DefineError> {
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(counters(row)?);
    }
    Ok(ids)
}

impl MetricIds {
    pub fn define(names: &MetricNames) -> Result<MetricIds, DefineError> {
        Ok(MetricIds {
            requests: counter_rows(&names.requests)?,
            shadow_requests: counter_rows(&names.shadow_requests)?,
            rule_matches: counters(&names.rule_matches)?,
            wasm_memory: define(MetricType::Gauge, &names.wasm_memory)?,
            // Always: dashboards show the split in force with or without a ramp.
            weight_bp: define_all(MetricType::Gauge, &names.weight_bp)?,
            durations: define_all(MetricType::Histogram, &names.durations)?,
            responses: counter_rows(&names.responses)?,
        })
    }

    /// One response's time from request headers to response headers.
    pub fn record_duration(&self, subset: usize, millis: u64) {
        if let Some(id) = self.durations.get(subset) {
            let _ = hostcalls::record_metric(*id, millis);
        }
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
    pub fn record_weights(&self, weights_bp: &[u16]) {
        for (id, w) in self.weight_bp.iter().zip(weights_bp) {
            let _ = hostcalls::record_metric(*id, u64::from(*w));
        }
    }

    /// Report this VM's linear memory (pages of 64 KiB).
    pub fn record_wasm_memory(&self) {
        let bytes = core::arch::wasm32::memory_size(0) as u64 * 65_536;
        let _ = hostcalls::record_metric(self.wasm_memory, bytes);
    }

    pub fn rule_match(&self, rule: usize) -> Option<u32> {
        self.rule_matches.get(rule).copied()
    }

    pub fn response(&self, subset: usize, class: ResponseClass) -> Option<u32> {
        self.responses.get(subset)?.get(class as usize).copied()
    }
}

/// Add one; a failed increment is not worth failing or logging a request over.
pub(crate) fn increment(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}
