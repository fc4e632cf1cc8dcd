//! `wasm-empty`: a Proxy-Wasm filter that does nothing, built with the same SDK
//! (`proxy-wasm`) and release profile as canary-router. `make bench` loads it on
//! its own listener to measure what being a Wasm filter costs at all: a root
//! context, and an HTTP context whose request-headers callback returns Continue.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --example wasm-empty`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
