//! The Proxy-Wasm ABI calls the filter makes, each returning a `Result`.
//!
//! The SDK's `hostcalls` wrappers `panic!` (trap the VM) on any status they do
//! not expect, and under FAIL_OPEN a trapped VM silently stops routing on that
//! worker until a reload. So the filter declares the few ABI functions it uses
//! and turns every status but Ok into a [`HostError`]. The status is taken as a
//! plain u32, so a value no SDK knows is an error too, never an invalid enum.
#![allow(unsafe_code)]

use crate::filter::{
    Host, HostError, HostResult, MetricKind, ResponsePart, SerializedHeaders, Status,
};

// Map and buffer types of the ABI.
const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;
const PLUGIN_CONFIGURATION: u32 = 7;
const OK: u32 = 0;
/// The log levels of the ABI.
pub(crate) const LOG_INFO: u32 = 2;
pub(crate) const LOG_WARN: u32 = 3;
pub(crate) const LOG_ERROR: u32 = 4;
pub(crate) const LOG_CRITICAL: u32 = 5;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
}

fn check(status: u32) -> HostResult<()> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Take ownership of a buffer the host allocated in this module's memory.
fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the host allocated `size` bytes at `data` by calling this module's
    // `proxy_on_memory_allocate` (`abi.rs`, as the SDK's: a boxed slice of
    // exactly `size` bytes, leaked) and hands us ownership; the SDK's own
    // wrappers take such buffers back the same way.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A call that fills a buffer: `Ok(None)` for NotFound or no data.
fn buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    match call(&mut data, &mut size) {
        OK => Ok(owned(data, size)),
        // NotFound: no such header, property or value.
        1 => Ok(None),
        status => Err(HostError(status)),
    }
}

/// Write a log line; a failed write is dropped (there is nowhere to report it).
pub(crate) fn log(level: u32, message: &str) {
    // SAFETY: the pointer and length describe a live string.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The proxy, through the ABI. Holds nothing: every call goes to the host.
pub(crate) struct WasmHost;

impl Host for WasmHost {
    type RequestHeaders = SerializedHeaders;

    fn request_headers(&self) -> HostResult<SerializedHeaders> {
        // SAFETY (all calls below): out pointers point at live locals of the
        // right types; in pointers and lengths describe live slices.
        buffer(|d, s| unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, d, s) })
            .map(|pairs| SerializedHeaders(pairs.unwrap_or_default()))
    }

    fn verified_payload(&self, key: &str) -> HostResult<Option<Vec<u8>>> {
        // The property path, NUL-separated.
        let mut path = Vec::with_capacity(64 + key.len());
        for part in [
            "metadata",
            "filter_metadata",
            "envoy.filters.http.jwt_authn",
            key,
        ] {
            path.extend_from_slice(part.as_bytes());
            path.push(0);
        }
        path.pop();
        buffer(|d, s| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, s) })
    }

    fn has_filter_state(&self, key: &str) -> HostResult<bool> {
        // A one-part path Envoy does not know as an attribute reads the filter
        // state object `wasm.<key>` that `set_property` wrote.
        let value = buffer(|d, s| unsafe { proxy_get_property(key.as_ptr(), key.len(), d, s) })?;
        Ok(value.is_some())
    }

    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()> {
        // SAFETY: both buffers are live strings for the duration of the call.
        check(unsafe { proxy_set_property(key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
    }

    fn set_request_header(&self, name: &str, value: &str) -> HostResult<()> {
        check(unsafe {
            proxy_replace_header_map_value(
                REQUEST_HEADERS,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn remove_request_header(&self, name: &str) -> HostResult<()> {
        check(unsafe { proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()) })
    }

    fn remove_response_header(&self, name: &str) -> HostResult<()> {
        check(unsafe { proxy_remove_header_map_value(RESPONSE_HEADERS, name.as_ptr(), name.len()) })
    }

    fn response_status(&self) -> HostResult<Option<Status>> {
        let key = ":status";
        let text = buffer(|d, s| unsafe {
            proxy_get_header_map_value(RESPONSE_HEADERS, key.as_ptr(), key.len(), d, s)
        })?;
        Ok(text.map(|text| Status::new(&text)))
    }

    fn grpc_status(&self, part: ResponsePart) -> HostResult<Option<Vec<u8>>> {
        let map = match part {
            ResponsePart::Headers => RESPONSE_HEADERS,
            ResponsePart::Trailers => RESPONSE_TRAILERS,
        };
        let key = "grpc-status";
        buffer(|d, s| unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), d, s) })
    }

    fn add_response_header(&self, name: &str, value: &str) -> HostResult<()> {
        check(unsafe {
            proxy_add_header_map_value(
                RESPONSE_HEADERS,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn set_response_header(&self, name: &str, value: &str) -> HostResult<()> {
        check(unsafe {
            proxy_replace_header_map_value(
                RESPONSE_HEADERS,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn now_ns(&self) -> HostResult<u64> {
        let mut t: u64 = 0;
        check(unsafe { proxy_get_current_time_nanoseconds(&mut t) }).map(|()| t)
    }

    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()> {
        // WASI random_get, which Envoy provides.
        getrandom::fill(out).map_err(|_| HostError(10))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let kind = match kind {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        };
        let mut id: u32 = 0;
        check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) }).map(|()| id)
    }

    fn increment_metric(&self, id: u32, by: i64) -> HostResult<()> {
        check(unsafe { proxy_increment_metric(id, by) })
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        check(unsafe { proxy_record_metric(id, value) })
    }

    fn get_metric(&self, id: u32) -> HostResult<u64> {
        let mut value: u64 = 0;
        check(unsafe { proxy_get_metric(id, &mut value) }).map(|()| value)
    }

    fn get_shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        let mut data: *mut u8 = core::ptr::null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        match unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        } {
            OK => Ok((owned(data, size), (cas != 0).then_some(cas))),
            1 => Ok((None, None)),
            status => Err(HostError(status)),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        check(unsafe {
            proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        })
    }

    fn plugin_configuration(&self) -> HostResult<Vec<u8>> {
        buffer(|d, s| unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX, d, s) })
            .map(Option::unwrap_or_default)
    }

    fn set_tick_period_ms(&self, ms: u32) -> HostResult<()> {
        check(unsafe { proxy_set_tick_period_milliseconds(ms) })
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(core::arch::wasm32::memory_size(0) as u64 * 65_536)
    }
}
