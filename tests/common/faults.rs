//! Real upstreams that misbehave on purpose: envoy/backends.yaml with Envoy's own
//! fault filter (`envoy.filters.http.fault`) in front of the v2 backend, and an
//! [`Envoy`] started with those backends instead of the shipped ones (everything
//! else as [`Envoy::start`]).
//!
//! An aborted request is answered by the fault filter itself, not by the v2
//! route, so the listener's `local_reply_config` adds `x-served-by: v2` to those
//! replies: a test still sees which upstream answered.

use super::{build_backends_config, Envoy, Opts, Ports};

/// What the v2 upstream does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Fault {
    /// Nothing: the shipped backends.
    None,
    /// Answer `status` to `percent` % of the requests (chosen at random).
    Abort { status: u16, percent: u32 },
    /// Delay every request by `ms` milliseconds before answering.
    Delay { ms: u32 },
}

/// envoy/backends.yaml with the test's ports and `fault` on the v2 listener.
pub fn backends_with_fault(ports: Ports, fault: V2Fault) -> String {
    let y = build_backends_config(ports);
    let fault_config = match fault {
        V2Fault::None => return y,
        V2Fault::Abort { status, percent } => format!(
            "abort: {{ http_status: {status}, percentage: {{ numerator: {percent}, denominator: HUNDRED }} }}"
        ),
        V2Fault::Delay { ms } => format!(
            "delay: {{ fixed_delay: {}.{:03}s, percentage: {{ numerator: 100, denominator: HUNDRED }} }}",
            ms / 1000,
            ms % 1000
        ),
    };
    let file = "envoy/backends.yaml";
    let v2 = y
        .find("- name: backend_v2")
        .unwrap_or_else(|| panic!("{file}: no backend_v2 listener"));
    let (head, tail) = y.split_at(v2);
    // The replies the fault filter makes itself still say who answered.
    let prefix = "stat_prefix: backend_v2\n";
    let at = tail
        .find(prefix)
        .unwrap_or_else(|| panic!("{file}: backend_v2 has no `{prefix}`"))
        + prefix.len();
    let indent = line_indent(tail, at - prefix.len());
    let local_reply = format!(
        "{indent}local_reply_config: {{ mappers: [ {{ filter: {{ response_flag_filter: {{ flags: [FI] }} }}, \
         headers_to_add: [ {{ header: {{ key: x-served-by, value: v2 }} }} ] }} ] }}\n"
    );
    let tail = format!("{}{local_reply}{}", &tail[..at], &tail[at..]);
    // The fault filter first, before the router.
    let filters = "http_filters:\n";
    let at = tail
        .find(filters)
        .unwrap_or_else(|| panic!("{file}: backend_v2 has no `{filters}`"))
        + filters.len();
    let indent = line_indent(&tail, at);
    let fault_filter = format!(
        "{indent}- name: envoy.filters.http.fault\n\
         {indent}  typed_config:\n\
         {indent}    \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n\
         {indent}    {fault_config}\n"
    );
    format!("{head}{}{fault_filter}{}", &tail[..at], &tail[at..])
}

/// The leading spaces of the line holding byte `at`.
fn line_indent(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..].chars().take_while(|c| *c == ' ').collect()
}

impl Envoy {
    /// [`Envoy::start`], with the v2 upstream misbehaving as `fault` says.
    pub fn start_with_v2_fault(plugin_config: &str, opts: Opts, fault: V2Fault) -> Envoy {
        Envoy::start(plugin_config, opts.v2_fault(fault))
    }
}
