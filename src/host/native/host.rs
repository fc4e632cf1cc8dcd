//! [`Host`] over Envoy's dynamic-module callbacks, and the state Proxy-Wasm
//! kept in the proxy that a dynamic module keeps itself: metric values the
//! filter reads back and the brake's shared window, process-wide.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use super::abi::{
    self, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, ModuleBuffer,
};
use crate::filter::{
    Host, HostError, HostResult, MetricKind, RequestHeaders, ResponsePart, Status,
};

/// A host call Envoy answered with `false` or a metrics error.
const FAILED: HostError = HostError(2);
/// Asked for something this host cannot do (no stream at hand, no jwt_authn metadata).
const UNSUPPORTED: HostError = HostError(12);

/// One metric of a configuration, as the filter knows it (its id is the index
/// in [`NativeConfig::metrics`]).
pub(crate) struct Metric {
    kind: MetricKind,
    name: String,
    /// The id Envoy returned for it (one id space per kind).
    envoy_id: usize,
    /// Its value, kept here too: Envoy's ABI cannot read a metric back, and the
    /// brake reads the trips counter. Shared by name across configurations, as
    /// Proxy-Wasm's metrics are.
    value: Arc<AtomicU64>,
}

/// Every metric value by name, for the process's life.
static VALUES: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn value_of(name: &str) -> Arc<AtomicU64> {
    match VALUES.lock() {
        Ok(mut values) => values.entry(name.to_owned()).or_default().clone(),
        // A poisoned map: a value of its own, still counting.
        Err(_) => Arc::default(),
    }
}

/// A shared value and its CAS token (never 0 once written).
type Shared = (Vec<u8>, u32);

/// The shared data of Proxy-Wasm, process-wide, by key.
static SHARED: LazyLock<Mutex<HashMap<String, Shared>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

thread_local! {
    /// Room for the header entries of a request, reused from request to request:
    /// [`EnvoyHeaders`] takes it and gives it back.
    static HEADERS: RefCell<Vec<EnvoyHttpHeader>> = const { RefCell::new(Vec::new()) };
}

/// The request headers as Envoy lists them: `(pointer, length)` pairs into its
/// own header map, read in place (copying them out cost ~2,000 instructions per
/// request, make bench-profile). Envoy keeps the map unchanged until the filter
/// writes a header, and the filter drops this list, and every slice borrowed
/// from it, first ([`Host::request_headers`]).
pub(crate) struct EnvoyHeaders {
    entries: Vec<EnvoyHttpHeader>,
}

impl EnvoyHeaders {
    /// Empty, with the thread's reusable room (a new `Vec` if it is in use).
    fn new() -> EnvoyHeaders {
        let entries = HEADERS
            .try_with(|room| room.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        EnvoyHeaders { entries }
    }

    /// Entries already filled in (tests).
    ///
    /// # Safety
    /// Every entry must point at its key and value, readable while the list lives.
    #[cfg(test)]
    pub(super) unsafe fn from_entries(entries: Vec<EnvoyHttpHeader>) -> EnvoyHeaders {
        EnvoyHeaders { entries }
    }
}

impl Drop for EnvoyHeaders {
    fn drop(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.clear();
        let _ = HEADERS.try_with(|room| {
            if let Ok(mut room) = room.try_borrow_mut() {
                if room.capacity() < entries.capacity() {
                    *room = entries;
                }
            }
        });
    }
}

impl RequestHeaders for EnvoyHeaders {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|h| {
            // SAFETY: Envoy's entries point into its header map, unchanged while
            // this list lives (the type's contract).
            unsafe {
                (
                    EnvoyBuffer {
                        ptr: h.key_ptr,
                        length: h.key_length,
                    }
                    .bytes(),
                    EnvoyBuffer {
                        ptr: h.value_ptr,
                        length: h.value_length,
                    }
                    .bytes(),
                )
            }
        })
    }
}

/// `struct timespec` of x86-64 (and aarch64) Linux.
#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    /// libc's, which Envoy links: the wall clock without std's `SystemTime`
    /// and `Duration` arithmetic around it (three reads per request).
    fn clock_gettime(clock: i32, now: *mut Timespec) -> i32;
}

const CLOCK_REALTIME: i32 = 0;

/// One filter configuration, shared by every worker thread.
pub(crate) struct NativeConfig {
    /// Envoy's `DynamicModuleHttpFilterConfig`: valid until `config_destroy`,
    /// and its metric calls are thread-safe. Kept as an address so the
    /// configuration is `Send + Sync`.
    envoy: usize,
    /// The JSON configuration, as `filter_config` carried it.
    pub bytes: Vec<u8>,
    /// The routing header, for the fallback that removes a client's copy.
    pub header: String,
    pub metrics: Vec<Metric>,
    /// Tells configurations apart in each worker's table.
    pub id: u64,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<NativeConfig>();
};

impl NativeConfig {
    pub fn new(
        envoy: ConfigEnvoyPtr,
        bytes: Vec<u8>,
        header: String,
        metrics: Vec<Metric>,
    ) -> NativeConfig {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        NativeConfig {
            envoy: envoy as usize,
            bytes,
            header,
            metrics,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn envoy(&self) -> ConfigEnvoyPtr {
        self.envoy as ConfigEnvoyPtr
    }
}

/// Where metric ids come from: defined now (in `config_new`, the only time
/// Envoy accepts definitions), or looked up in the ones defined then.
pub(crate) enum Metrics<'a> {
    Defining {
        envoy: ConfigEnvoyPtr,
        defined: &'a RefCell<Vec<Metric>>,
    },
    Defined(&'a NativeConfig),
}

/// The proxy as the filter sees it in one hook.
pub(crate) struct NativeHost<'a> {
    pub metrics: Metrics<'a>,
    /// The stream's filter in Envoy; null outside a stream.
    pub filter: FilterEnvoyPtr,
    pub bytes: &'a [u8],
    /// The tick period the filter asked for (there is no timer: see `Worker`).
    pub tick_ms: Cell<u32>,
}

impl<'a> NativeHost<'a> {
    pub fn for_stream(config: &'a NativeConfig, filter: FilterEnvoyPtr) -> NativeHost<'a> {
        NativeHost {
            metrics: Metrics::Defined(config),
            filter,
            bytes: &config.bytes,
            tick_ms: Cell::new(0),
        }
    }

    fn stream(&self) -> HostResult<FilterEnvoyPtr> {
        if self.filter.is_null() {
            Err(UNSUPPORTED)
        } else {
            Ok(self.filter)
        }
    }

    fn metric<T>(&self, id: u32, f: impl FnOnce(ConfigEnvoyPtr, &Metric) -> T) -> HostResult<T> {
        let index = usize::try_from(id).map_err(|_| FAILED)?;
        match &self.metrics {
            Metrics::Defined(config) => {
                let metric = config.metrics.get(index).ok_or(HostError::NOT_FOUND)?;
                Ok(f(config.envoy(), metric))
            }
            Metrics::Defining { envoy, defined } => {
                let defined = defined.borrow();
                let metric = defined.get(index).ok_or(HostError::NOT_FOUND)?;
                Ok(f(*envoy, metric))
            }
        }
    }

    fn set_header(&self, map: u32, name: &str, value: ModuleBuffer) -> HostResult<()> {
        let filter = self.stream()?;
        // SAFETY: `filter` is the live stream of the current hook; the buffers
        // describe live strings for the duration of the call.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                filter,
                map,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        };
        if ok {
            Ok(())
        } else {
            Err(FAILED)
        }
    }

    /// The first value of a response header or trailer, handed to `read` while
    /// Envoy's bytes are valid (within this hook).
    fn response_value<T>(
        &self,
        map: u32,
        name: &[u8],
        read: impl FnOnce(&[u8]) -> T,
    ) -> HostResult<Option<T>> {
        let filter = self.stream()?;
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: the live stream; `value` is a live out-parameter; the count
        // pointer may be null.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                filter,
                map,
                ModuleBuffer::of(name),
                &mut value,
                0,
                std::ptr::null_mut(),
            )
        };
        if !found || value.ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: Envoy's value, valid in this hook; `read` cannot keep it.
        Ok(Some(read(unsafe { value.bytes() })))
    }

    /// Make Envoy pick the route again: a dynamic module's header writes do not
    /// clear the route cache by themselves.
    fn clear_route_cache(&self) {
        if let Ok(filter) = self.stream() {
            // SAFETY: the live stream of the current hook.
            unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(filter) }
        }
    }
}

fn metrics_status(status: u32) -> HostResult<()> {
    if status == abi::METRICS_SUCCESS {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

impl Host for NativeHost<'_> {
    type RequestHeaders = EnvoyHeaders;

    fn request_headers(&self) -> HostResult<EnvoyHeaders> {
        let filter = self.stream()?;
        // SAFETY: the live stream of the current hook.
        let n = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(filter, abi::REQUEST_HEADER)
        };
        let mut headers = EnvoyHeaders::new();
        headers.entries.resize(n, EnvoyHttpHeader::EMPTY);
        if n > 0 {
            // SAFETY: `entries` has room for the `n` entries Envoy reported.
            let ok = unsafe {
                abi::envoy_dynamic_module_callback_http_get_headers(
                    filter,
                    abi::REQUEST_HEADER,
                    headers.entries.as_mut_ptr(),
                )
            };
            if !ok {
                return Err(FAILED);
            }
        }
        Ok(headers)
    }

    fn verified_payload(&self, _key: &str) -> HostResult<Option<Vec<u8>>> {
        // jwt_authn's payload is a nested struct in its metadata, which the ABI
        // cannot read; `config_new` refuses `jwt.source: verified` with claims.
        Err(UNSUPPORTED)
    }

    fn has_filter_state(&self, key: &str) -> HostResult<bool> {
        let filter = self.stream()?;
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: the live stream; `value` is a live out-parameter.
        Ok(unsafe {
            abi::envoy_dynamic_module_callback_http_get_filter_state_bytes(
                filter,
                ModuleBuffer::of(key.as_bytes()),
                &mut value,
            )
        })
    }

    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()> {
        let filter = self.stream()?;
        // SAFETY: the live stream; the buffers describe live strings.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                filter,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
        if ok {
            Ok(())
        } else {
            Err(FAILED)
        }
    }

    fn set_request_header(&self, name: &str, value: &str) -> HostResult<()> {
        let set = self.set_header(
            abi::REQUEST_HEADER,
            name,
            ModuleBuffer::of(value.as_bytes()),
        );
        self.clear_route_cache();
        set
    }

    fn remove_request_header(&self, name: &str) -> HostResult<()> {
        let removed = self.set_header(abi::REQUEST_HEADER, name, ModuleBuffer::NULL);
        self.clear_route_cache();
        removed
    }

    /// The status Envoy recorded for the stream (the upstream's, or its own
    /// reply's): a number read from the stream's info, where looking `:status`
    /// up by name costs Envoy a string build and a map search (~400
    /// instructions). The header is the fallback when none is recorded.
    fn response_status(&self) -> HostResult<Option<Status>> {
        let filter = self.stream()?;
        let mut code = 0u64;
        // SAFETY: the live stream; `code` is a live out-parameter.
        let recorded = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                filter,
                abi::ATTRIBUTE_RESPONSE_CODE,
                &mut code,
            )
        };
        match Status::from_code(code) {
            Some(status) if recorded => Ok(Some(status)),
            _ => self.response_value(abi::RESPONSE_HEADER, b":status", Status::new),
        }
    }

    fn grpc_status(&self, part: ResponsePart) -> HostResult<Option<Vec<u8>>> {
        let map = match part {
            ResponsePart::Headers => abi::RESPONSE_HEADER,
            ResponsePart::Trailers => abi::RESPONSE_TRAILER,
        };
        self.response_value(map, b"grpc-status", <[u8]>::to_vec)
    }

    fn add_response_header(&self, name: &str, value: &str) -> HostResult<()> {
        let filter = self.stream()?;
        // SAFETY: the live stream; buffers describe live strings.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                filter,
                abi::RESPONSE_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
        if ok {
            Ok(())
        } else {
            Err(FAILED)
        }
    }

    fn set_response_header(&self, name: &str, value: &str) -> HostResult<()> {
        self.set_header(
            abi::RESPONSE_HEADER,
            name,
            ModuleBuffer::of(value.as_bytes()),
        )
    }

    fn remove_response_header(&self, name: &str) -> HostResult<()> {
        self.set_header(abi::RESPONSE_HEADER, name, ModuleBuffer::NULL)
    }

    fn now_ns(&self) -> HostResult<u64> {
        let mut now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a live out-parameter.
        if unsafe { clock_gettime(CLOCK_REALTIME, &mut now) } != 0 {
            return Err(FAILED);
        }
        let secs = u64::try_from(now.tv_sec).map_err(|_| FAILED)?;
        let nanos = u64::try_from(now.tv_nsec).map_err(|_| FAILED)?;
        secs.checked_mul(1_000_000_000)
            .and_then(|ns| ns.checked_add(nanos))
            .ok_or(FAILED)
    }

    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()> {
        getrandom::fill(out).map_err(|_| FAILED)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        match &self.metrics {
            Metrics::Defined(config) => config
                .metrics
                .iter()
                .position(|m| m.kind == kind && m.name == name)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or(HostError::NOT_FOUND),
            Metrics::Defining { envoy, defined } => {
                if let Some(i) = defined
                    .borrow()
                    .iter()
                    .position(|m| m.kind == kind && m.name == name)
                {
                    return u32::try_from(i).map_err(|_| FAILED);
                }
                let define = match kind {
                    MetricKind::Counter => {
                        abi::envoy_dynamic_module_callback_http_filter_config_define_counter
                    }
                    MetricKind::Gauge => {
                        abi::envoy_dynamic_module_callback_http_filter_config_define_gauge
                    }
                    MetricKind::Histogram => {
                        abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
                    }
                };
                let mut envoy_id: usize = 0;
                // SAFETY: Envoy's config of the running `config_new`; the name is a
                // live string, no labels, and `envoy_id` a live out-parameter.
                metrics_status(unsafe {
                    define(
                        *envoy,
                        ModuleBuffer::of(name.as_bytes()),
                        std::ptr::null(),
                        0,
                        &mut envoy_id,
                    )
                })?;
                let mut defined = defined.borrow_mut();
                let id = u32::try_from(defined.len()).map_err(|_| FAILED)?;
                defined.push(Metric {
                    kind,
                    name: name.to_owned(),
                    envoy_id,
                    value: value_of(name),
                });
                Ok(id)
            }
        }
    }

    fn increment_metric(&self, id: u32, by: i64) -> HostResult<()> {
        self.metric(id, |envoy, m| {
            let by = u64::try_from(by).unwrap_or(0);
            let now = m.value.fetch_add(by, Ordering::Relaxed).wrapping_add(by);
            // SAFETY (both calls): Envoy's config is valid while this
            // configuration lives; no labels.
            metrics_status(match m.kind {
                MetricKind::Counter => unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        envoy,
                        m.envoy_id,
                        std::ptr::null(),
                        0,
                        by,
                    )
                },
                MetricKind::Gauge => unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                        envoy,
                        m.envoy_id,
                        std::ptr::null(),
                        0,
                        now,
                    )
                },
                MetricKind::Histogram => return Err(UNSUPPORTED),
            })
        })?
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.metric(id, |envoy, m| {
            m.value.store(value, Ordering::Relaxed);
            // SAFETY (both calls): as in `increment_metric`.
            metrics_status(match m.kind {
                MetricKind::Gauge => unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                        envoy,
                        m.envoy_id,
                        std::ptr::null(),
                        0,
                        value,
                    )
                },
                MetricKind::Histogram => unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                        envoy,
                        m.envoy_id,
                        std::ptr::null(),
                        0,
                        value,
                    )
                },
                MetricKind::Counter => return Err(UNSUPPORTED),
            })
        })?
    }

    fn get_metric(&self, id: u32) -> HostResult<u64> {
        self.metric(id, |_, m| m.value.load(Ordering::Relaxed))
    }

    fn get_shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        let shared = SHARED.lock().map_err(|_| FAILED)?;
        Ok(match shared.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        let mut shared = SHARED.lock().map_err(|_| FAILED)?;
        let next = match (shared.get(key), cas) {
            (Some((_, current)), Some(cas)) if *current != cas => {
                return Err(HostError::CAS_MISMATCH)
            }
            (Some((_, current)), _) => current.wrapping_add(1).max(1),
            (None, _) => 1,
        };
        shared.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    fn plugin_configuration(&self) -> HostResult<Vec<u8>> {
        Ok(self.bytes.to_vec())
    }

    fn set_tick_period_ms(&self, ms: u32) -> HostResult<()> {
        self.tick_ms.set(ms);
        Ok(())
    }

    fn memory_bytes(&self) -> Option<u64> {
        // The module shares Envoy's heap: nothing of its own to report.
        None
    }
}
