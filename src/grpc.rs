//! gRPC outcomes. A gRPC call that fails usually answers `:status 200` and
//! carries the failure in `grpc-status` (in the trailers, or in the headers of
//! a trailers-only response), so its response class comes from that code:
//! `grpc_ok`, `grpc_error` (a code the configuration counts as a failure) or
//! `grpc_other`.

use crate::labels::ResponseClass;

/// The gRPC status codes by number, as gRPC spells them.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const OK: u8 = 0;
pub const UNKNOWN: u8 = 2;
const INTERNAL: u8 = 13;
const UNAVAILABLE: u8 = 14;
const PERMISSION_DENIED: u8 = 7;
const UNIMPLEMENTED: u8 = 12;
const UNAUTHENTICATED: u8 = 16;

/// The codes that count as failures unless `grpc.failure_codes` says otherwise:
/// the server-side and availability failures, as Flagger's and Argo's gRPC
/// analyses count them; a caller's mistake (NOT_FOUND, INVALID_ARGUMENT, ...)
/// or a cancellation is not the canary's failure.
pub const DEFAULT_FAILURE_CODES: [u8; 6] = [2, 4, 8, 13, 14, 15];

/// Which gRPC codes are failures (for the success rate and the brake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPolicy {
    /// Bit `n`: code `n` is a failure.
    failures: u32,
}

impl Default for GrpcPolicy {
    fn default() -> Self {
        GrpcPolicy::failing(&DEFAULT_FAILURE_CODES)
    }
}

impl GrpcPolicy {
    /// A policy where exactly `codes` (each 1..=16) are failures.
    pub fn failing(codes: &[u8]) -> GrpcPolicy {
        let failures = codes
            .iter()
            .filter(|&&c| usize::from(c) < CODE_NAMES.len())
            .fold(0u32, |bits, &c| bits | 1 << c);
        GrpcPolicy { failures }
    }

    pub fn is_failure(&self, code: u8) -> bool {
        code < 32 && self.failures >> code & 1 == 1
    }

    /// The codes counted as failures, in order.
    pub fn failure_codes(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..17).filter(|&c| self.is_failure(c))
    }

    /// The response class of a call that ended with `code`.
    pub fn class(&self, code: u8) -> ResponseClass {
        if code == OK {
            ResponseClass::GrpcOk
        } else if self.is_failure(code) {
            ResponseClass::GrpcError
        } else {
            ResponseClass::GrpcOther
        }
    }
}

/// The number of a code name, or of a number 0..=16 written as text.
pub fn code_of(name: &str) -> Option<u8> {
    CODE_NAMES
        .iter()
        .position(|&n| n == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// The display name of a code (codes past 16 read as UNKNOWN, as clients do).
pub fn code_name(code: u8) -> &'static str {
    CODE_NAMES
        .get(usize::from(code))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Whether a request `content-type` is gRPC's: `application/grpc`, optionally
/// followed by `+format` or parameters. gRPC-Web (`application/grpc-web...`)
/// is not: its status travels in the body, which the filter does not read, so
/// it is counted by `:status` like any HTTP request.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(prefix) = value.get(..GRPC.len()) else {
        return false;
    };
    prefix.eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// The code a `grpc-status` value carries. A value that is not a number reads
/// as UNKNOWN, and so does a number past 16, as gRPC clients treat them.
pub fn parse_status(value: &[u8]) -> u8 {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return UNKNOWN;
    }
    let n = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match u8::try_from(n) {
        Ok(code) if usize::from(code) < CODE_NAMES.len() => code,
        _ => UNKNOWN,
    }
}

/// The code a gRPC client reports for a response whose `:status` is not 200 and
/// that carries no `grpc-status` (gRPC's "HTTP to gRPC status code mapping"):
/// a proxy's 503, say, is UNAVAILABLE.
pub fn status_from_http(status: &[u8]) -> u8 {
    match status {
        b"400" => INTERNAL,
        b"401" => UNAUTHENTICATED,
        b"403" => PERMISSION_DENIED,
        b"404" => UNIMPLEMENTED,
        b"429" | b"502" | b"503" | b"504" => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_and_not_grpc_web() {
        for yes in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc;charset=utf-8",
            b"Application/GRPC",
        ] {
            assert!(is_grpc_content_type(yes), "{yes:?}");
        }
        for no in [
            &b"application/grpc-web"[..],
            b"application/grpc-web-text+proto",
            b"application/json",
            b"application/grp",
            b"",
            b"application/grpcx",
        ] {
            assert!(!is_grpc_content_type(no), "{no:?}");
        }
    }

    #[test]
    fn statuses_read_as_clients_read_them() {
        assert_eq!(parse_status(b"0"), 0);
        assert_eq!(parse_status(b"14"), 14);
        assert_eq!(parse_status(b" 16 "), 16);
        assert_eq!(parse_status(b"17"), UNKNOWN);
        assert_eq!(parse_status(b"999"), UNKNOWN);
        assert_eq!(parse_status(b"1000"), UNKNOWN);
        assert_eq!(parse_status(b"-1"), UNKNOWN);
        assert_eq!(parse_status(b"UNAVAILABLE"), UNKNOWN);
        assert_eq!(parse_status(b""), UNKNOWN);
        assert_eq!(status_from_http(b"503"), UNAVAILABLE);
        assert_eq!(status_from_http(b"404"), UNIMPLEMENTED);
        assert_eq!(status_from_http(b"500"), UNKNOWN);
    }

    #[test]
    fn the_default_policy_fails_server_and_availability_codes_only() {
        let policy = GrpcPolicy::default();
        let failing: Vec<&str> = policy.failure_codes().map(code_name).collect();
        assert_eq!(
            failing,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "RESOURCE_EXHAUSTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        assert_eq!(policy.class(0), ResponseClass::GrpcOk);
        assert_eq!(policy.class(14), ResponseClass::GrpcError);
        assert_eq!(policy.class(5), ResponseClass::GrpcOther);
        assert_eq!(policy.class(1), ResponseClass::GrpcOther);
        let custom = GrpcPolicy::failing(&[5]);
        assert_eq!(custom.class(5), ResponseClass::GrpcError);
        assert_eq!(custom.class(14), ResponseClass::GrpcOther);
        assert_eq!(code_of("NOT_FOUND"), Some(5));
        assert_eq!(code_of("not_found"), None);
    }
}
