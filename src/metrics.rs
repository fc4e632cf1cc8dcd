//! Metric names, in one place. Defined once per configuration (never per request);
//! Envoy shows them under `wasmcustom.` at `/stats`.
//!
//! - `<prefix>.subset.<subset>.reason.<reason>.requests`
//! - `<prefix>.shadow.subset.<subset>.reason.<reason>.requests` (shadow mode)
//! - `<prefix>.rule.<rule>.matches`
//! - `<prefix>.subset.<subset>.responses.<class>`
//! - `<prefix>.subset.<subset>.weight_bp` (gauge, with a ramp): the weight in force
//! - `<prefix>.wasm_memory_bytes` (gauge): the reporting VM's linear memory, for
//!   soak tests and leak alerts

use crate::decide::Reason;

/// A response status class, as counted per subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    // Discriminants are positions in `ALL` (the layout of the metric tables).
    Success = 0,
    Redirect = 1,
    ClientError = 2,
    ServerError = 3,
}

impl ResponseClass {
    pub const ALL: [ResponseClass; 4] = [
        ResponseClass::Success,
        ResponseClass::Redirect,
        ResponseClass::ClientError,
        ResponseClass::ServerError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseClass::Success => "2xx",
            ResponseClass::Redirect => "3xx",
            ResponseClass::ClientError => "4xx",
            ResponseClass::ServerError => "5xx",
        }
    }

    /// The class of an HTTP `:status` value; `None` for 1xx and anything unreadable.
    pub fn from_status(status: &[u8]) -> Option<ResponseClass> {
        match status {
            [b'2', _, _] => Some(ResponseClass::Success),
            [b'3', _, _] => Some(ResponseClass::Redirect),
            [b'4', _, _] => Some(ResponseClass::ClientError),
            [b'5', _, _] => Some(ResponseClass::ServerError),
            _ => None,
        }
    }
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
    /// Gauge: the VM's linear memory in bytes.
    pub wasm_memory: String,
    /// Gauges `[subset]`: the weight in force, in basis points (ramp only).
    pub weight_bp: Vec<String>,
    /// The stats prefix itself.
    pub prefix: String,
}

impl MetricNames {
    /// Counter `<prefix>.brake.<subset>.trips` and gauge `<prefix>.brake.<subset>.tripped`.
    pub fn brake(&self, subset: &str) -> (String, String) {
        (
            format!("{}.brake.{subset}.trips", self.prefix),
            format!("{}.brake.{subset}.tripped", self.prefix),
        )
    }
}

impl MetricNames {
    // Plain loops: each `map(..).collect()` here was an iterator instance of its
    // own in the .wasm.
    pub fn new(prefix: &str, subsets: &[String], rules: &[String]) -> MetricNames {
        let requests = |scope: &str| -> Vec<Vec<String>> {
            let mut rows = Vec::with_capacity(subsets.len());
            for s in subsets {
                let mut row = Vec::with_capacity(Reason::ALL.len());
                for r in Reason::ALL {
                    row.push(format!("{scope}subset.{s}.reason.{}.requests", r.as_str()));
                }
                rows.push(row);
            }
            rows
        };
        let mut weight_bp = Vec::with_capacity(subsets.len());
        let mut responses = Vec::with_capacity(subsets.len());
        for s in subsets {
            weight_bp.push(format!("{prefix}.subset.{s}.weight_bp"));
            let mut row = Vec::with_capacity(ResponseClass::ALL.len());
            for c in ResponseClass::ALL {
                row.push(format!("{prefix}.subset.{s}.responses.{}", c.as_str()));
            }
            responses.push(row);
        }
        let mut rule_matches = Vec::with_capacity(rules.len());
        for r in rules {
            rule_matches.push(format!("{prefix}.rule.{r}.matches"));
        }
        MetricNames {
            prefix: prefix.to_owned(),
            wasm_memory: format!("{prefix}.wasm_memory_bytes"),
            weight_bp,
            requests: requests(&format!("{prefix}.")),
            shadow_requests: requests(&format!("{prefix}.shadow.")),
            rule_matches,
            responses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let names = MetricNames::new("canary", &["v1".into(), "v2".into()], &["qa".into()]);
        assert_eq!(
            names.requests[1][Reason::Rule.index()],
            "canary.subset.v2.reason.rule.requests"
        );
        assert_eq!(
            names.requests[0][Reason::Hash.index()],
            "canary.subset.v1.reason.hash.requests"
        );
        assert_eq!(
            names.requests[0][Reason::Pin.index()],
            "canary.subset.v1.reason.pin.requests"
        );
        assert_eq!(
            names.shadow_requests[1][Reason::Random.index()],
            "canary.shadow.subset.v2.reason.random.requests"
        );
        assert_eq!(names.rule_matches, ["canary.rule.qa.matches"]);
        assert_eq!(names.wasm_memory, "canary.wasm_memory_bytes");
        assert_eq!(names.weight_bp[1], "canary.subset.v2.weight_bp");
        assert_eq!(names.responses[1][3], "canary.subset.v2.responses.5xx");
        assert_eq!(names.requests[0].len(), Reason::ALL.len());
    }

    #[test]
    fn status_classes() {
        assert_eq!(
            ResponseClass::from_status(b"200"),
            Some(ResponseClass::Success)
        );
        assert_eq!(
            ResponseClass::from_status(b"302"),
            Some(ResponseClass::Redirect)
        );
        assert_eq!(
            ResponseClass::from_status(b"404"),
            Some(ResponseClass::ClientError)
        );
        assert_eq!(
            ResponseClass::from_status(b"503"),
            Some(ResponseClass::ServerError)
        );
        assert_eq!(ResponseClass::from_status(b"101"), None);
        assert_eq!(ResponseClass::from_status(b"20"), None);
        assert_eq!(ResponseClass::from_status(b""), None);
    }
}
