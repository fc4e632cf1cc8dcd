//! `native-empty` and `native-floor`: the floor of an Envoy dynamic-module HTTP
//! filter, for the benchmarks (`make bench-simultaneous`, `make bench-profile`),
//! as `wasm-empty` and `wasm-floor` are for Proxy-Wasm.
//!
//! With the filter configuration `empty`, every hook returns Continue: what
//! being a dynamic-module filter costs at all. With `floor`, the request hook
//! also does the one thing a routing filter cannot avoid: it writes the routing
//! header (`x-canary-subset: v1`) and clears the route cache, so Envoy picks the
//! route again. What canary-router's module adds above `floor` is its decision.
//!
//! Built by the benchmark with `cargo build --profile native --example
//! native-empty` (a cdylib, `libnative_empty.so`); Envoy 1.40, ABI `v0.2.0`.
// The hooks are Envoy's entry points: the stream pointer they get is handed
// straight back to Envoy, never dereferenced here.
#![allow(
    unsafe_code,
    clippy::missing_safety_doc,
    clippy::not_unsafe_ptr_arg_deref
)]

use std::ffi::{c_char, c_void};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const u8,
    length: usize,
}

impl Buffer {
    fn of(s: &[u8]) -> Buffer {
        Buffer {
            ptr: s.as_ptr(),
            length: s.len(),
        }
    }
}

const CONTINUE: u32 = 0;
const REQUEST_HEADER: u32 = 0;

extern "C" {
    fn envoy_dynamic_module_callback_http_set_header(
        filter: *mut c_void,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: *mut c_void);
}

/// The two configurations, as the config pointer Envoy hands back per stream.
static EMPTY: u8 = 0;
static FLOOR: u8 = 1;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    _name: Buffer,
    config: Buffer,
) -> *const c_void {
    // SAFETY: Envoy's configuration bytes, valid for this call.
    let bytes = if config.ptr.is_null() {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(config.ptr, config.length) }
    };
    match bytes {
        b"empty" => (&raw const EMPTY).cast(),
        b"floor" => (&raw const FLOOR).cast(),
        _ => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    // The stream's pointer is its configuration's: nothing per stream.
    config
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    if std::ptr::eq(filter, (&raw const FLOOR).cast()) {
        // SAFETY: the live stream of this hook; the buffers are static.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                filter_envoy,
                REQUEST_HEADER,
                Buffer::of(b"x-canary-subset"),
                Buffer::of(b"v1"),
            );
            envoy_dynamic_module_callback_http_clear_route_cache(filter_envoy);
        }
    }
    CONTINUE
}

/// The hooks Envoy 1.40 requires that neither configuration uses.
macro_rules! continue_hooks {
    ($($name:ident ( $($arg:ident : $ty:ty),* );)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($(_: $ty),*) -> u32 {
            CONTINUE
        }
    )*};
}

macro_rules! unit_hooks {
    ($($name:ident ( $($arg:ident : $ty:ty),* );)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($(_: $ty),*) {}
    )*};
}

continue_hooks! {
    envoy_dynamic_module_on_http_filter_request_body(a: *mut c_void, b: *const c_void, c: bool);
    envoy_dynamic_module_on_http_filter_request_trailers(a: *mut c_void, b: *const c_void);
    envoy_dynamic_module_on_http_filter_response_headers(a: *mut c_void, b: *const c_void, c: bool);
    envoy_dynamic_module_on_http_filter_response_body(a: *mut c_void, b: *const c_void, c: bool);
    envoy_dynamic_module_on_http_filter_response_trailers(a: *mut c_void, b: *const c_void);
}

unit_hooks! {
    envoy_dynamic_module_on_http_filter_stream_complete(a: *mut c_void, b: *const c_void);
    envoy_dynamic_module_on_http_filter_http_callout_done(
        a: *mut c_void, b: *const c_void, c: u64, d: u32, e: *const c_void, f: usize,
        g: *const c_void, h: usize);
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        a: *mut c_void, b: *const c_void, c: u64, d: *const c_void, e: usize, f: bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(
        a: *mut c_void, b: *const c_void, c: u64, d: *const c_void, e: usize, f: bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(
        a: *mut c_void, b: *const c_void, c: u64, d: *const c_void, e: usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(a: *mut c_void, b: *const c_void, c: u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(
        a: *mut c_void, b: *const c_void, c: u64, d: u32);
    envoy_dynamic_module_on_http_filter_scheduled(a: *mut c_void, b: *const c_void, c: u64);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
        a: *mut c_void, b: *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
        a: *mut c_void, b: *const c_void);
}
