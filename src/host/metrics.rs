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
    wasm_memory: u32,
    /// Defined only when a ramp is configured.
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

fn counter(name: &str) -> Result<u32, DefineError> {
    hostcalls::define_metric(MetricType::Counter, name).map_err(|status| DefineError {
        name: name.to_owned(),
        status,
    })
}

fn counters(names: &[String]) -> Result<Vec<u32>, DefineError> {
    names.iter().map(|n| counter(n)).collect()
}

impl MetricIds {
    pub fn define(names: &MetricNames, ramp: bool) -> Result<MetricIds, DefineError> {
        Ok(MetricIds {
            requests: names
                .requests
                .iter()
                .map(|row| counters(row))
                .collect::<Result<_, _>>()?,
            shadow_requests: names
                .shadow_requests
                .iter()
                .map(|row| counters(row))
                .collect::<Result<_, _>>()?,
            rule_matches: counters(&names.rule_matches)?,
            wasm_memory: hostcalls::define_metric(MetricType::Gauge, &names.wasm_memory).map_err(
                |status| DefineError {
                    name: names.wasm_memory.clone(),
                    status,
                },
            )?,
            weight_bp: if ramp {
                names
                    .weight_bp
                    .iter()
                    .map(|n| {
                        hostcalls::define_metric(MetricType::Gauge, n).map_err(|status| {
                            DefineError {
                                name: n.clone(),
                                status,
                            }
                        })
                    })
                    .collect::<Result<_, _>>()?
            } else {
                Vec::new()
            },
            responses: names
                .responses
                .iter()
                .map(|row| counters(row))
                .collect::<Result<_, _>>()?,
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
