//! The request headers as Envoy 1.40 hands them to the filter.
//!
//! Envoy stores some request headers once (its "inline" headers) and joins
//! their repeats with `,` as they arrive; every other header keeps one entry
//! per copy, and its route matchers (and the filter's rules) then read each
//! copy on its own. `explain` must see the same entries as the filter, so it
//! joins exactly these names. The list was taken from a real Envoy 1.40 (a
//! header sent twice, matched by a route on the joined value);
//! `tests/cli_parity.rs` checks it against the filter in Envoy.

/// Headers Envoy 1.40 joins with `,` when a request repeats them. (Left out:
/// those whose repeats Envoy refuses or consumes itself, such as `host`,
/// `content-length` or `transfer-encoding`.)
pub const JOINED: &[&str] = &[
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "access-control-request-private-network",
    "authorization",
    "cache-control",
    "content-encoding",
    "content-type",
    "grpc-accept-encoding",
    "grpc-timeout",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "origin",
    "pragma",
    "proxy-status",
    "referer",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-external-address",
    "x-envoy-is-timeout-retry",
    "x-envoy-original-host",
    "x-envoy-original-path",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-request-id",
];

/// `headers` (lowercase names, in order) as Envoy lists them: a repeat of a
/// [`JOINED`] header is appended to its first entry after a `,`.
pub fn as_envoy_lists(headers: Vec<(String, String)>) -> Vec<(String, Vec<u8>)> {
    let mut list: Vec<(String, Vec<u8>)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let joined = JOINED.contains(&name.as_str());
        match list.iter_mut().find(|(n, _)| joined && *n == name) {
            Some((_, first)) => {
                first.push(b',');
                first.extend_from_slice(value.as_bytes());
            }
            None => list.push((name, value.into_bytes())),
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_envoys_inline_headers_are_joined() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let listed = as_envoy_lists(pairs(&[
            ("user-agent", "a"),
            ("x-canary", "1"),
            ("user-agent", ""),
            ("x-canary", "2"),
            ("cookie", "a=1"),
            ("user-agent", "c"),
            ("cookie", "b=2"),
        ]));
        let want: Vec<(String, Vec<u8>)> = [
            ("user-agent", "a,,c"),
            ("x-canary", "1"),
            ("x-canary", "2"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(listed, want);
        assert!(JOINED.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    }
}
