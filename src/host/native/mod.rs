//! The Envoy dynamic-module adapter (`make native`: a shared library Envoy ≥ 1.38
//! loads as `envoy.filters.http.dynamic_modules`; docs/native.md).
//!
//! Envoy calls the `envoy_dynamic_module_on_*` hooks below; each hands its work
//! to [`crate::filter`] with [`host::NativeHost`] as the host, exactly as the
//! Proxy-Wasm adapter does. What differs from Proxy-Wasm:
//!
//! - One configuration object ([`host::NativeConfig`], `Send + Sync`) serves
//!   every worker thread. The filter's per-instance state is not thread-safe,
//!   so each worker thread builds its own [`FilterRoot`] from that
//!   configuration on its first request (as each Proxy-Wasm worker VM does).
//! - Metrics can only be defined in `config_new`: they are defined there, once,
//!   with the same name-encoded names as the Wasm build (so the same
//!   `stats_tags` give the same labels), and each worker looks its ids up.
//! - There is no timer: a worker runs the filter's tick (the ramp's step, the
//!   brake's cooldown) on the first request after its period has passed.
//! - The brake's shared window and the metric values the filter reads back
//!   live in this process, behind a mutex and atomics (`host.rs`).
//! - A panic must not unwind into Envoy: every hook runs in [`guard`]; a
//!   request whose hook panicked goes on with the client's routing header
//!   removed (the route table's default), and one line is logged.
#![allow(unsafe_code)]

mod abi;
mod host;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};

use self::abi::{ConfigEnvoyPtr, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, CONTINUE};
use self::host::{Metrics, NativeConfig, NativeHost};
use crate::filter::{FilterRoot, FilterStream, Host};
use crate::request::JwtSource;
use crate::rng::SplitMix64;

// ---------------------------------------------------------------------------
// Logging and the panic guard
// ---------------------------------------------------------------------------

/// `log` records to Envoy's log.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => abi::LOG_ERROR,
            log::Level::Warn => abi::LOG_WARN,
            _ => abi::LOG_INFO,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

static LOGGER: EnvoyLogger = EnvoyLogger;

thread_local! {
    /// Where the last panic on this thread happened: the panic hook's note for
    /// [`guard`]'s one line.
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Run one hook's work; a panic is caught (it must never unwind into Envoy),
/// logged in one line, and turned into `None`: the caller falls back.
pub(crate) fn guard<T>(hook: &str, body: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Some(value),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let at = PANIC_AT
                .try_with(|at| at.borrow_mut().take())
                .ok()
                .flatten()
                .map(|at| format!(" at {at}"))
                .unwrap_or_default();
            abi::log(
                abi::LOG_CRITICAL,
                &format!(
                    "canary-router: panic in {hook}{at}: {message}; falling back (request untouched but for the client's routing header)"
                ),
            );
            None
        }
    }
}

/// Seed for keyless draws: the OS's entropy, else the clock (and say so).
fn rng(host: &impl Host) -> SplitMix64 {
    SplitMix64::from_entropy().unwrap_or_else(|| {
        log::warn!("canary-router: no entropy; seeding random choices from the clock");
        SplitMix64::new(host.now_ns().unwrap_or(0))
    })
}

// ---------------------------------------------------------------------------
// Program and configuration
// ---------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let _ = guard("program_init", || {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
        // Only note where: `guard` writes the one line.
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            let _ = PANIC_AT.try_with(|slot| *slot.borrow_mut() = at);
        }));
    });
    abi::ABI_VERSION.as_ptr()
}

/// Why this build refuses a configuration the Wasm build accepts.
fn unsupported(plan: &crate::plan::Plan) -> Option<&'static str> {
    let needs_claims = plan.slots.claim_count() > 0;
    (needs_claims && matches!(plan.jwt, JwtSource::Verified { .. })).then_some(
        "config: jwt.source: \"verified\" reads jwt_authn's metadata, which an Envoy dynamic module cannot read; use \"payload_header\" (jwt_authn's forward_payload_header)",
    )
}

fn config_new(envoy: ConfigEnvoyPtr, config: EnvoyBuffer) -> *const c_void {
    // SAFETY: Envoy's buffer, valid during this hook; copied at once.
    let bytes = unsafe { config.bytes() }.to_vec();
    let loaded = match crate::config::load(&bytes) {
        Ok(loaded) => loaded,
        Err(e) => {
            abi::log(abi::LOG_ERROR, &format!("canary-router: {e}"));
            return std::ptr::null();
        }
    };
    if let Some(why) = unsupported(&loaded.plan) {
        abi::log(abi::LOG_ERROR, &format!("canary-router: {why}"));
        return std::ptr::null();
    }
    // Configure once here, on the main thread: it defines every metric (Envoy
    // accepts definitions only now) and logs the summary and the warnings.
    let defined = RefCell::new(Vec::new());
    let host = NativeHost {
        metrics: Metrics::Defining {
            envoy,
            defined: &defined,
        },
        filter: std::ptr::null_mut(),
        bytes: &bytes,
        tick_ms: Cell::new(0),
    };
    let mut root = FilterRoot::new(rng(&host));
    if !root.configure(&host) {
        // It logged why, in one line.
        return std::ptr::null();
    }
    drop(root);
    let header = loaded.plan.header;
    let config = Arc::new(NativeConfig::new(
        envoy,
        bytes,
        header,
        defined.into_inner(),
    ));
    Box::into_raw(Box::new(config)).cast_const().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard("http_filter_config_new", || {
        config_new(filter_config_envoy_ptr, config)
    })
    .unwrap_or(std::ptr::null())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: *const c_void,
) {
    if filter_config_ptr.is_null() {
        return;
    }
    let _ = guard("http_filter_config_destroy", || {
        // SAFETY: made by `config_new` with Box::into_raw; Envoy destroys it once.
        drop(unsafe { Box::from_raw(filter_config_ptr.cast::<Arc<NativeConfig>>().cast_mut()) });
    });
}

// ---------------------------------------------------------------------------
// Workers and streams
// ---------------------------------------------------------------------------

/// One worker thread's instance of one configuration.
struct Worker {
    id: u64,
    config: Weak<NativeConfig>,
    root: FilterRoot,
    tick_ms: u32,
    next_tick_ms: i64,
}

thread_local! {
    static WORKERS: RefCell<Vec<Worker>> = const { RefCell::new(Vec::new()) };
}

fn now_ms(host: &impl Host) -> i64 {
    i64::try_from(host.now_ns().unwrap_or(0) / 1_000_000).unwrap_or(i64::MAX)
}

/// This worker's instance of `config` (built on first use), ticked when its
/// period has passed; the new request's state.
fn new_stream(config: &Arc<NativeConfig>) -> Option<FilterStream> {
    let host = NativeHost::for_stream(config, std::ptr::null_mut());
    let now = now_ms(&host);
    WORKERS.with_borrow_mut(|workers| {
        let worker = match workers.iter().position(|w| w.id == config.id) {
            Some(i) => workers.get_mut(i),
            None => first_use(workers, config, &host, now),
        }?;
        if now >= worker.next_tick_ms {
            worker.root.tick(&host);
            worker.next_tick_ms = now.saturating_add(i64::from(worker.tick_ms));
        }
        Some(worker.root.stream())
    })
}

/// This worker's first stream of `config`: its instance, configured. Out of
/// line, so that the code of every other stream's start stays compact.
#[cold]
#[inline(never)]
fn first_use<'w>(
    workers: &'w mut Vec<Worker>,
    config: &Arc<NativeConfig>,
    host: &NativeHost<'_>,
    now: i64,
) -> Option<&'w mut Worker> {
    // Instances of configurations Envoy has destroyed go now.
    workers.retain(|w| w.config.strong_count() > 0);
    let mut root = FilterRoot::new(rng(host));
    root.configure(host);
    let tick_ms = host.tick_ms.get().max(1);
    workers.push(Worker {
        id: config.id,
        config: Arc::downgrade(config),
        root,
        tick_ms,
        next_tick_ms: now.saturating_add(i64::from(tick_ms)),
    });
    workers.last_mut()
}

/// One HTTP stream: the filter's state, or `None` after a panic in its creation.
struct Stream {
    config: Arc<NativeConfig>,
    filter: Option<FilterStream>,
}

/// The fallback decision: the request goes on, but never with a routing
/// header the client chose.
fn fallback_request(filter_envoy_ptr: FilterEnvoyPtr, config: &NativeConfig) {
    let host = NativeHost::for_stream(config, filter_envoy_ptr);
    let _ = host.remove_request_header(&config.header);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: *const c_void,
    _filter_envoy_ptr: FilterEnvoyPtr,
) -> *const c_void {
    if filter_config_ptr.is_null() {
        return std::ptr::null();
    }
    // SAFETY: made by `config_new`; Envoy keeps it until every filter is gone.
    let config = unsafe { &*filter_config_ptr.cast::<Arc<NativeConfig>>() };
    let filter = guard("http_filter_new", || new_stream(config)).flatten();
    let stream = Box::new(Stream {
        config: config.clone(),
        filter,
    });
    Box::into_raw(stream).cast_const().cast()
}

/// The stream of a hook, if Envoy handed one.
///
/// # Safety
/// `ptr` must be null or a `Stream` from `http_filter_new` not yet destroyed,
/// used by one thread at a time (Envoy runs a stream on one worker).
unsafe fn stream<'a>(ptr: *const c_void) -> Option<&'a mut Stream> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<Stream>().cast_mut().as_mut() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes the stream it got from `http_filter_new`.
    let Some(stream) = (unsafe { stream(filter_module_ptr) }) else {
        return CONTINUE;
    };
    let decided = guard("http_filter_request_headers", || {
        #[cfg(test)]
        tests::maybe_panic();
        let host = NativeHost::for_stream(&stream.config, filter_envoy_ptr);
        match &mut stream.filter {
            Some(filter) => {
                filter.on_request_headers(&host);
                true
            }
            None => false,
        }
    });
    if decided != Some(true) {
        stream.filter = None;
        let _ = guard("http_filter_request_headers fallback", || {
            fallback_request(filter_envoy_ptr, &stream.config)
        });
    }
    CONTINUE
}

/// Run a response-side hook of the stream's filter under the panic guard; a
/// panic drops the filter for the rest of the stream.
fn on_response(
    hook: &str,
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
    run: impl FnOnce(&mut FilterStream, &NativeHost),
) -> u32 {
    // SAFETY: as in `request_headers`.
    let Some(stream) = (unsafe { stream(filter_module_ptr) }) else {
        return CONTINUE;
    };
    let Some(filter) = &mut stream.filter else {
        return CONTINUE;
    };
    let host = NativeHost::for_stream(&stream.config, filter_envoy_ptr);
    if guard(hook, || run(filter, &host)).is_none() {
        stream.filter = None;
    }
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    on_response(
        "http_filter_response_headers",
        filter_envoy_ptr,
        filter_module_ptr,
        |filter, host| filter.on_response_headers(host),
    )
}

/// A gRPC call's status in the response trailers.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
) -> u32 {
    on_response(
        "http_filter_response_trailers",
        filter_envoy_ptr,
        filter_module_ptr,
        |filter, host| filter.on_response_trailers(host),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module_ptr: *const c_void) {
    if filter_module_ptr.is_null() {
        return;
    }
    let _ = guard("http_filter_destroy", || {
        // SAFETY: made by `http_filter_new` with Box::into_raw; destroyed once.
        drop(unsafe { Box::from_raw(filter_module_ptr.cast::<Stream>().cast_mut()) });
    });
}

// ---------------------------------------------------------------------------
// Hooks Envoy 1.40 requires a module to export, unused by this filter
// ---------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
) {
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: *const c_void,
) {
}
