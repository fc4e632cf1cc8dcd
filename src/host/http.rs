//! The per-request context: adapt the request, decide, write the header, count.

use std::cell::RefCell;
use std::rc::Rc;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::metrics::increment;
use super::Active;
use crate::claims::{self, Claim, ClaimPath};
use crate::config::DEFAULT_HEADER;
use crate::decide::decide;
use crate::metrics::ResponseClass;
use crate::request::{ClaimSource, Headers, Lookup, LookupError, Request};
use crate::rng::SplitMix64;

const JWT_AUTHN_METADATA: &str = "envoy.filters.http.jwt_authn";

pub(crate) struct CanaryHttp {
    active: Option<Rc<Active>>,
    rng: Rc<RefCell<SplitMix64>>,
    /// The subset chosen for this request, for the response counters.
    chosen: Option<usize>,
}

impl CanaryHttp {
    pub fn new(active: Option<Rc<Active>>, rng: Rc<RefCell<SplitMix64>>) -> CanaryHttp {
        CanaryHttp {
            active,
            rng,
            chosen: None,
        }
    }
}

/// Verified claims: jwt_authn's metadata, read with `get_property`.
struct HostClaims;

impl ClaimSource for HostClaims {
    fn verified_claim(&self, metadata_key: &str, path: &ClaimPath) -> Lookup<Claim> {
        let mut property = jwt_payload_path(metadata_key);
        property.extend(path.iter().map(String::as_str));
        let bytes = hostcalls::get_property(property).map_err(|_| LookupError)?;
        Ok(bytes.map(|b| claims::from_envoy_bytes(&b)))
    }

    fn has_verified_payload(&self, metadata_key: &str) -> Result<bool, LookupError> {
        hostcalls::get_property(jwt_payload_path(metadata_key))
            .map(|payload| payload.is_some())
            .map_err(|_| LookupError)
    }
}

fn jwt_payload_path(metadata_key: &str) -> Vec<&str> {
    vec![
        "metadata",
        "filter_metadata",
        JWT_AUTHN_METADATA,
        metadata_key,
    ]
}

fn request_headers() -> Result<Headers, LookupError> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map(Headers::new)
        .map_err(|_| LookupError)
}

impl Context for CanaryHttp {}

impl HttpContext for CanaryHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            // No configuration was ever accepted (Envoy normally refuses the plugin
            // then): still make sure a client cannot pick the subset.
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, DEFAULT_HEADER);
            return Action::Continue;
        };
        let router = &active.router;
        let request = Request::new(request_headers(), &router.jwt, HostClaims);
        let rng = &self.rng;
        let decision = decide(router, &request, || rng.borrow_mut().next_u64());

        // Replacing the header drops every client-sent copy of it.
        let subset = router.subset_name(decision.subset);
        if let Err(status) =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, &router.header, Some(subset))
        {
            warn!(
                "canary-router: cannot set {}: host status {status:?}",
                router.header
            );
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &router.header);
        }
        // Envoy picked the route before this filter ran: make it pick again. On
        // proxies without the function the ABI 0.2.1 header write already does it.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);

        increment(active.metrics.request(decision.subset, decision.reason));
        if let Some(rule) = decision.rule {
            increment(active.metrics.rule_match(rule));
        }
        self.chosen = Some(decision.subset);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(active), Some(subset)) = (&self.active, self.chosen) else {
            return Action::Continue;
        };
        let status = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
        if let Ok(Some(status)) = status {
            if let Some(class) = ResponseClass::from_status(&status) {
                increment(active.metrics.response(subset, class));
            }
        }
        Action::Continue
    }
}
