//! The Proxy-Wasm adapter: the contexts Envoy calls, each handing its work to
//! [`crate::filter`] with [`ffi::WasmHost`] as the host. The SDK is used for
//! its dispatcher (contexts, the allocator Envoy fills); every host call goes
//! through `ffi`, which returns errors instead of trapping, and so do the
//! logger and the panic hook installed here.

mod ffi;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::filter::{FilterRoot, FilterStream, Host};
use crate::rng::SplitMix64;

use self::ffi::WasmHost;

/// `log` records to Envoy's log; a failed write is dropped, never a trap.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => ffi::LOG_ERROR,
            log::Level::Warn => ffi::LOG_WARN,
            _ => ffi::LOG_INFO,
        };
        ffi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

proxy_wasm::main! {{
    // Without an SDK logger (its writes unwrap) and with a panic hook that only
    // writes one line and ignores the status: nothing here can fail twice.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        ffi::log(ffi::LOG_CRITICAL, &format!("canary-router: panic{location}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CanaryRoot::new()) });
}}

struct CanaryRoot {
    filter: FilterRoot,
}

impl CanaryRoot {
    fn new() -> CanaryRoot {
        let rng = SplitMix64::from_entropy().unwrap_or_else(|| {
            // Never a fixed seed: fall back to the clock, and say so.
            log::warn!(
                "canary-router: no entropy from the host; seeding random choices from the clock"
            );
            SplitMix64::new(WasmHost.now_ns().unwrap_or(0))
        });
        CanaryRoot {
            filter: FilterRoot::new(rng),
        }
    }
}

impl Context for CanaryRoot {}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.filter.configure(&WasmHost)
    }

    fn on_tick(&mut self) {
        self.filter.tick(&WasmHost);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryHttp(self.filter.stream())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct CanaryHttp(FilterStream);

impl Context for CanaryHttp {}

impl HttpContext for CanaryHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.0.on_request_headers(&WasmHost);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.0.on_response_headers(&WasmHost);
        Action::Continue
    }
}
