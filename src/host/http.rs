//! The per-request context: adapt the request, decide, write the header, count.

use std::cell::RefCell;
use std::rc::Rc;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::metrics::increment;
use super::Active;
use crate::claims::Payload;
use crate::config::DEFAULT_HEADER;
use crate::decide::{decide_with, Decision, Entropy};
use crate::header_map::SerializedPairs;
use crate::metrics::ResponseClass;
use crate::request::{ClaimSource, Lookup, LookupError, Request};
use crate::rng::SplitMix64;
use crate::router::Mode;

const JWT_AUTHN_METADATA: &str = "envoy.filters.http.jwt_authn";

pub(crate) struct CanaryHttp {
    active: Option<Rc<Active>>,
    rng: Rc<RefCell<SplitMix64>>,
    /// This request's decision, for the response side (counters, pin, header).
    decision: Option<Decision>,
    /// When the request reached the filter, in host nanoseconds (enforce mode
    /// only): the latency histogram and the brake's p99 limit.
    started_ns: Option<u64>,
}

impl CanaryHttp {
    pub fn new(active: Option<Rc<Active>>, rng: Rc<RefCell<SplitMix64>>) -> CanaryHttp {
        CanaryHttp {
            active,
            rng,
            decision: None,
            started_ns: None,
        }
    }
}

/// Keyless draws from the VM's generator; pin ids from the host's entropy
/// (WASI `random_get`), so ids cannot be predicted from one another.
struct HostEntropy<'a>(&'a RefCell<SplitMix64>);

impl Entropy for HostEntropy<'_> {
    fn next_u64(&mut self) -> u64 {
        self.0.borrow_mut().next_u64()
    }

    fn pin_bits(&mut self) -> [u8; 16] {
        let mut bits = [0u8; 16];
        if getrandom::fill(&mut bits).is_err() {
            bits = Entropy::pin_bits(&mut *self.0.borrow_mut());
        }
        bits
    }
}

/// Verified claims: jwt_authn's metadata, read with `get_property`.
struct HostClaims;

impl ClaimSource for HostClaims {
    fn verified_payload(&self, metadata_key: &str) -> Lookup<Payload> {
        let path = vec![
            "metadata",
            "filter_metadata",
            JWT_AUTHN_METADATA,
            metadata_key,
        ];
        let bytes = hostcalls::get_property(path).map_err(|_| LookupError)?;
        Ok(bytes.map(Payload::Envoy))
    }
}

fn request_headers() -> Result<Vec<u8>, LookupError> {
    super::raw::header_map_bytes(MapType::HttpRequestHeaders).map_err(|_| LookupError)
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
        // The request borrows the host's buffer: it lives until the decision is made.
        let headers = request_headers();
        let request = Request::from_pairs(
            &router.slots,
            &router.jwt,
            HostClaims,
            headers.as_deref().map(SerializedPairs::new).map_err(|&e| e),
        );
        let mut decision = decide_with(
            router,
            &active.split.borrow(),
            &request,
            &mut HostEntropy(&self.rng),
        );
        if let (Some(brake), Some(state)) = (&router.brake, &active.brake) {
            if state.tripped.get() {
                decision.brake(router, brake.subset, brake.stop_rules);
            }
        }

        match router.mode {
            Mode::Enforce => {
                // Replacing the header drops every client-sent copy of it.
                let subset = router.subset_name(decision.subset);
                if let Err(status) = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    &router.header,
                    Some(subset),
                ) {
                    warn!(
                        "canary-router: cannot set {}: host status {status:?}",
                        router.header
                    );
                    let _ =
                        hostcalls::remove_map_value(MapType::HttpRequestHeaders, &router.header);
                }
                increment(active.metrics.request(decision.subset, decision.reason));
                self.started_ns = Some(super::now_ns());
            }
            Mode::Shadow => {
                // The route table decides; a client still cannot pick the subset.
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &router.header);
                increment(
                    active
                        .metrics
                        .shadow_request(decision.subset, decision.reason),
                );
            }
        }
        // Envoy picked the route before this filter ran and must pick it again.
        // The SDK exports ABI 0.2.1, under which Envoy clears the route cache on
        // every request-header write or removal above, so no `clear_route_cache`
        // foreign call is made: it cost ~10 us per request (make bench, variant
        // A/B). If the SDK ever exports a newer ABI, the routing tests (a client
        // header overridden by the filter must change the route) fail, and the
        // call has to come back.

        if let Some(rule) = decision.rule {
            increment(active.metrics.rule_match(rule));
        }
        self.decision = Some(decision);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(active), Some(decision)) = (&self.active, &self.decision) else {
            return Action::Continue;
        };
        let router = &active.router;
        if router.mode == Mode::Enforce {
            let status = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
            if let Ok(Some(status)) = status {
                if let Some(class) = ResponseClass::from_status(&status) {
                    increment(active.metrics.response(decision.subset, class));
                    let now_ns = super::now_ns();
                    let latency_ms = self
                        .started_ns
                        .map(|t| now_ns.saturating_sub(t) / 1_000_000);
                    if let Some(ms) = latency_ms {
                        active.metrics.record_duration(decision.subset, ms);
                    }
                    if let (Some(brake), Some(state)) = (&router.brake, &active.brake) {
                        if decision.subset == brake.subset && !decision.braked {
                            state.record(
                                brake,
                                router.subset_name(brake.subset),
                                super::ns_to_ms(now_ns),
                                class == ResponseClass::ServerError,
                                latency_ms.filter(|_| brake.max_p99_ms.is_some()),
                            );
                        }
                    }
                }
            }
            if let (Some(pin), Some(id)) = (&router.pin, &decision.new_pin) {
                // Added, not set: the upstream's own Set-Cookie headers stay.
                let _ = hostcalls::add_map_value(
                    MapType::HttpResponseHeaders,
                    "set-cookie",
                    &pin.set_cookie(id),
                );
            }
        }
        if let Some(header) = &router.decision_header {
            let _ = hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                header,
                Some(&decision.describe(router)),
            );
        }
        Action::Continue
    }
}
