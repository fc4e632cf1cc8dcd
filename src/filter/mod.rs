//! The filter as a proxy runs it, over one seam: the [`Host`] trait.
//!
//! Everything a proxy asks of the filter (configure, tick, request headers,
//! response headers) lives here as plain Rust: [`FilterRoot`] per configuration,
//! [`FilterStream`] per request. Everything the filter asks of a proxy (headers,
//! metrics, shared data, the clock) goes through [`Host`], whose every call can
//! fail: the filter then falls back (the default subset, no counting) or goes on
//! without it, and never panics. The Proxy-Wasm adapter (`src/host/wasm/`,
//! wasm32 only) implements `Host` over the ABI; the tests here implement it with
//! a double that fails each call in turn.

mod brake;
mod metric_ids;
mod root;
mod stream;
#[cfg(test)]
mod tests;

pub use root::FilterRoot;
pub use stream::FilterStream;

/// A host call that did not succeed: the ABI's status code (any value but Ok).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    /// The status a compare-and-swap write gets when the value changed meanwhile.
    pub const CAS_MISMATCH: HostError = HostError(8);
    pub const NOT_FOUND: HostError = HostError(1);
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host status {}", self.0)
    }
}

pub type HostResult<T> = Result<T, HostError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What the filter needs from the proxy. Methods take `&self`: a host is a
/// handle (the Wasm one holds nothing), so a request may borrow it for claims
/// while the filter writes headers through it.
pub trait Host {
    /// How this host lists the request headers.
    type RequestHeaders: RequestHeaders;
    /// The request headers, read in place where the host allows it. Valid until
    /// the filter writes a request header: [`FilterStream`] drops them, and
    /// everything borrowed from them, before its first write.
    fn request_headers(&self) -> HostResult<Self::RequestHeaders>;
    /// jwt_authn's verified payload under its metadata `key`; `None` without one.
    fn verified_payload(&self, key: &str) -> HostResult<Option<Vec<u8>>>;
    /// Replace every value of a request header with `value`.
    fn set_request_header(&self, name: &str, value: &str) -> HostResult<()>;
    fn remove_request_header(&self, name: &str) -> HostResult<()>;
    /// The response's `:status`; `None` when there is none.
    fn response_status(&self) -> HostResult<Option<Status>>;
    /// The response's `grpc-status`, from its headers or its trailers.
    fn grpc_status(&self, part: ResponsePart) -> HostResult<Option<Vec<u8>>>;
    fn add_response_header(&self, name: &str, value: &str) -> HostResult<()>;
    fn set_response_header(&self, name: &str, value: &str) -> HostResult<()>;
    fn remove_response_header(&self, name: &str) -> HostResult<()>;

    /// Whether this stream's filter state holds `key`. Filter state is shared
    /// by every filter of one stream and no client can set it: the mark an
    /// earlier instance leaves on a routing header it decided.
    fn has_filter_state(&self, key: &str) -> HostResult<bool>;
    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()>;

    /// Wall-clock time, Unix nanoseconds.
    fn now_ns(&self) -> HostResult<u64>;
    /// Unpredictable bytes (pin ids).
    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()>;

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32>;
    fn increment_metric(&self, id: u32, by: i64) -> HostResult<()>;
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()>;
    fn get_metric(&self, id: u32) -> HostResult<u64>;

    /// A value shared by every worker of the proxy, and its CAS token.
    fn get_shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)>;
    /// Write it; with a token, fail with [`HostError::CAS_MISMATCH`] if it changed.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()>;

    /// The plugin configuration as the proxy hands it over.
    fn plugin_configuration(&self) -> HostResult<Vec<u8>>;
    fn set_tick_period_ms(&self, ms: u32) -> HostResult<()>;
    /// This instance's memory in bytes (a gauge for soak tests), if it can tell.
    fn memory_bytes(&self) -> Option<u64>;
}

/// Where a response value is read: the headers, or the trailers (in the
/// trailers hook only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePart {
    Headers,
    Trailers,
}

/// A response's `:status`, kept inline (a native host reads it without a copy
/// on the heap). Anything but three bytes reads as `000`: no class, and
/// gRPC's `UNKNOWN`, exactly as its text would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status([u8; 3]);

impl Status {
    pub fn new(text: &[u8]) -> Status {
        Status(text.try_into().unwrap_or(*b"000"))
    }

    /// The status `code` as its three digits; `None` outside 100..=999.
    pub fn from_code(code: u64) -> Option<Status> {
        if !(100..=999).contains(&code) {
            return None;
        }
        let digit = |n: u64| b'0' + (n % 10) as u8;
        Some(Status([digit(code / 100), digit(code / 10), digit(code)]))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A host's list of request headers.
pub trait RequestHeaders {
    /// Each `(name, value)` in Envoy's order: lowercase names, raw values.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
}

/// Headers in Envoy's serialized pairs format ([`crate::formats::pairs`]), as
/// Proxy-Wasm hands them over in one copy.
pub struct SerializedHeaders(pub Vec<u8>);

impl RequestHeaders for SerializedHeaders {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        crate::formats::pairs::Pairs::new(&self.0)
    }
}

/// The host's clock in Unix milliseconds (0 if the host cannot tell).
fn now_ms(host: &impl Host) -> i64 {
    ns_to_ms(host.now_ns().unwrap_or(0))
}

fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}
