//! The Proxy-Wasm ABI 0.2.1 callbacks this module exports, by the names Envoy
//! looks up: each hands its work to the functions of `super`. `make wasm`
//! keeps these exports (WASM_EXPORTS in the Makefile) and drops any other.
#![allow(unsafe_code)]

/// The ABI version marker Envoy looks for.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

extern "C" {
    fn __wasm_call_ctors();
}

/// The WASI reactor's start: static constructors, then the logger and the
/// panic hook.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: called once, by the host, before any other export.
    unsafe { __wasm_call_ctors() };
    super::start();
}

/// Memory for a buffer the host hands to the module: a boxed slice of exactly
/// `size` bytes, leaked; `ffi` takes it back as a `Vec` of that capacity.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut bytes: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialization; the host writes the bytes.
    unsafe { bytes.set_len(size) };
    Box::into_raw(bytes.into_boxed_slice()).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    super::context_create(context_id, root_context_id);
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> bool {
    super::vm_start(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    super::configure(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    super::tick(context_id);
}

/// `Action::Continue`: the filter never pauses a request.
const CONTINUE: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: bool,
) -> u32 {
    super::request_headers(context_id);
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: bool,
) -> u32 {
    super::response_headers(context_id);
    CONTINUE
}

/// Envoy calls it only for a response that has trailers (a gRPC call's status),
/// so plain HTTP responses make no extra call into the VM.
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    super::response_trailers(context_id);
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    super::delete(context_id);
}
