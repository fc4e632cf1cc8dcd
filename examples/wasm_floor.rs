//! `wasm-floor`: the least a header-routing Proxy-Wasm filter can do, priced by
//! `make bench-profile`. Per request it reads the request header list once and
//! writes `x-canary-subset: v1`, the two host calls any filter that routes on
//! request headers must make. With the plugin configuration `count` it also does
//! what per-subset counters need: one counter per request, and on the response
//! the `:status` read and one more counter.
//!
//! It decides nothing. Its cost over `wasm-empty` is the floor under which no
//! Proxy-Wasm implementation of canary-router's job can go in this Envoy.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot { counters: None }) });
}}

struct FloorRoot {
    /// (requests, responses) counter ids, with the `count` configuration.
    counters: Option<(u32, u32)>,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX);
        if matches!(config, Ok(Some(ref c)) if c.as_slice() == b"count") {
            let define = |name| hostcalls::define_metric(MetricType::Counter, name).ok();
            self.counters = define("floor.requests").zip(define("floor.responses"));
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorHttp {
            counters: self.counters,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FloorHttp {
    counters: Option<(u32, u32)>,
}

impl Context for FloorHttp {}

impl HttpContext for FloorHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
        std::hint::black_box(&headers);
        let _ =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-canary-subset", Some("v1"));
        if let Some((requests, _)) = self.counters {
            let _ = hostcalls::increment_metric(requests, 1);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some((_, responses)) = self.counters {
            let status = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
            std::hint::black_box(&status);
            let _ = hostcalls::increment_metric(responses, 1);
        }
        Action::Continue
    }
}
