//! One request: read it, decide, write the routing header, count; then count
//! the response, feed the brake, set the pin cookie and the decision header.

use std::cell::RefCell;
use std::rc::Rc;

use log::warn;

use super::metric_ids::increment;
use super::root::Active;
use super::{ns_to_ms, Host, RequestHeaders, ResponsePart};
use crate::claims::Payload;
use crate::config::DEFAULT_HEADER;
use crate::decide::{decide_with, Conditions, Decision, Entropy};
use crate::formats::baggage::Merged;
use crate::labels::ResponseClass;
use crate::plan::Mode;
use crate::request::{ClaimSource, Lookup, LookupError, Request};
use crate::rng::SplitMix64;

pub struct FilterStream {
    active: Option<Rc<Active>>,
    rng: Rc<RefCell<SplitMix64>>,
    /// This request's decision, for the response side (counters, pin, header).
    decision: Option<Decision>,
    /// When the request reached the filter, host nanoseconds (enforce mode
    /// only): the latency histogram and the brake's p99 limit. While a gRPC
    /// call waits for its status in the trailers: the latency in ms measured at
    /// its response headers (one field, so plain HTTP requests carry no more
    /// state than before).
    started_ns: Option<u64>,
    /// The goals this request matched (bit `i`: goal `i`), counted when the
    /// response completes them.
    goals: u64,
    /// The response may carry the decision header (`decision_header.match`).
    reveal: bool,
    /// Whether the request is a gRPC call, and whether its status is awaited
    /// in the trailers.
    grpc: GrpcCall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcCall {
    No,
    Yes,
    AwaitingTrailers,
}

/// Keyless draws from the instance's generator; pin ids from the host's
/// entropy, so ids cannot be predicted from one another.
struct HostEntropy<'a, H: Host> {
    rng: &'a RefCell<SplitMix64>,
    host: &'a H,
}

impl<H: Host> Entropy for HostEntropy<'_, H> {
    fn next_u64(&mut self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }

    fn pin_bits(&mut self) -> [u8; 16] {
        let mut bits = [0u8; 16];
        if self.host.random_bytes(&mut bits).is_err() {
            bits = Entropy::pin_bits(&mut *self.rng.borrow_mut());
        }
        bits
    }
}

/// Verified claims: jwt_authn's metadata, read from the host when a rule or key
/// needs them.
struct HostClaims<'a, H: Host>(&'a H);

impl<H: Host> ClaimSource for HostClaims<'_, H> {
    fn verified_payload(&self, metadata_key: &str) -> Lookup<Payload> {
        let bytes = self
            .0
            .verified_payload(metadata_key)
            .map_err(|_| LookupError)?;
        Ok(bytes.map(Payload::Envoy))
    }
}

/// Send `list` on as the `baggage` header (none when empty). Its bytes came
/// from the request or from this filter, so they are text; anything else is
/// left as it came.
fn set_baggage(host: &impl Host, list: &[u8]) {
    match std::str::from_utf8(list) {
        Ok("") => {
            let _ = host.remove_request_header("baggage");
        }
        Ok(list) => {
            let _ = host.set_request_header("baggage", list);
        }
        Err(_) => {}
    }
}

/// Pass a request through untouched (outside the scope, or routed by an
/// earlier instance on the same header): counted once, nothing written.
fn skip(host: &impl Host, active: &Active) {
    increment(host, active.metrics.skipped());
}

impl FilterStream {
    pub(crate) fn new(active: Option<Rc<Active>>, rng: Rc<RefCell<SplitMix64>>) -> FilterStream {
        FilterStream {
            active,
            rng,
            decision: None,
            started_ns: None,
            goals: 0,
            reveal: false,
            grpc: GrpcCall::No,
        }
    }

    /// The request headers arrived: decide and write the routing header.
    pub fn on_request_headers(&mut self, host: &impl Host) {
        let Some(active) = self.active.clone() else {
            // No configuration was ever accepted (Envoy normally refuses the plugin
            // then): still make sure a client cannot pick the subset.
            let _ = host.remove_request_header(DEFAULT_HEADER);
            return;
        };
        let plan = &active.plan;
        // The request borrows the host's headers, which a native host reads in
        // place from Envoy's header map: both are gone before the first write.
        let decided = {
            let headers = host.request_headers();
            let pairs = || {
                headers
                    .as_ref()
                    .map(RequestHeaders::pairs)
                    .map_err(|_| LookupError)
            };
            // Outside this instance's scope: untouched, counted once. The scope
            // reads its own few values first, so such a request costs this
            // instance the scope test, not the rules' and keys' reading.
            let outside = plan.scope.as_ref().is_some_and(|scope| {
                scope.excludes(&Request::from_pairs(
                    &scope.slots,
                    &plan.jwt,
                    HostClaims(host),
                    pairs(),
                ))
            });
            if outside {
                None
            } else {
                let request =
                    Request::from_pairs(&plan.slots, &plan.jwt, HostClaims(host), pairs());
                // An earlier instance on this routing header routed it: its
                // decision stands (see `RoutingMark`).
                if request.has_routing_header()
                    && host.has_filter_state(&plan.mark.key).unwrap_or(false)
                {
                    return skip(host, &active);
                }
                let brake_holds = || {
                    active
                        .brake
                        .as_ref()
                        .is_some_and(|state| state.is_tripped(host))
                };
                let decision = decide_with(
                    plan,
                    Conditions {
                        split: &active.split.borrow(),
                        brake_holds,
                    },
                    &request,
                    &mut HostEntropy {
                        rng: &self.rng,
                        host,
                    },
                );
                let goals = if plan.mode == Mode::Enforce && !plan.goals.is_empty() {
                    crate::goals::matched(&plan.goals, &request)
                } else {
                    0
                };
                let baggage = plan
                    .cohort
                    .as_ref()
                    .and_then(|cohort| crate::cohort::outgoing(plan, cohort, &decision, &request));
                let reveal = plan
                    .decision_header
                    .as_ref()
                    .is_some_and(|header| header.reveals(&request));
                let grpc = if request.is_grpc() {
                    GrpcCall::Yes
                } else {
                    GrpcCall::No
                };
                Some((decision, goals, baggage, reveal, grpc))
            }
        };
        let Some((decision, goals, baggage, reveal, grpc)) = decided else {
            return skip(host, &active);
        };
        self.reveal = reveal;
        self.grpc = grpc;
        match baggage {
            Some(Merged::Write(list)) => set_baggage(host, &list),
            Some(Merged::Overflow { removed }) => {
                increment(host, active.metrics.cohort_overflow());
                if let Some(list) = removed {
                    set_baggage(host, &list);
                }
            }
            None => {}
        }

        match plan.mode {
            Mode::Enforce => {
                // Replacing the header drops every client-sent copy of it.
                let subset = plan.subset_name(decision.subset);
                if let Err(status) = host.set_request_header(&plan.header, subset) {
                    warn!("canary-router: cannot set {}: {status}", plan.header);
                    // At least no client-sent copy reaches the route table.
                    let _ = host.remove_request_header(&plan.header);
                } else if plan.mark.leave {
                    // Unmarked, a later instance on this header would take the
                    // decision for a client's copy and replace it: the request
                    // is still routed, by that instance.
                    let _ = host.set_filter_state(&plan.mark.key, &plan.mark.by);
                }
                increment(
                    host,
                    active.metrics.request(decision.subset, decision.reason),
                );
                self.goals = goals;
                self.started_ns = host.now_ns().ok();
            }
            Mode::Shadow => {
                // The route table decides; a client still cannot pick the subset.
                let _ = host.remove_request_header(&plan.header);
                increment(
                    host,
                    active
                        .metrics
                        .shadow_request(decision.subset, decision.reason),
                );
            }
        }
        // Envoy picked the route before this filter ran and must pick it again.
        // The Wasm module exports ABI 0.2.1, under which Envoy clears the route
        // cache on every request-header write or removal above, so no
        // `clear_route_cache` foreign call is made: it cost ~10 us per request
        // (make bench, variant A/B). If the module ever exports a newer ABI, the
        // routing tests (a client header overridden by the filter must change
        // the route) fail, and the call has to come back. The native host clears
        // it explicitly on each write.

        if let Some(rule) = decision.rule {
            increment(host, active.metrics.rule_match(rule));
        }
        self.decision = Some(decision);
    }

    /// The response headers arrived: count, time, feed the brake, add the pin
    /// cookie and the decision header. A gRPC call whose status is not in these
    /// headers is counted when its trailers arrive.
    pub fn on_response_headers(&mut self, host: &impl Host) {
        let (Some(active), Some(decision)) = (&self.active, &self.decision) else {
            return;
        };
        let plan = &active.plan;
        if plan.mode == Mode::Enforce {
            if let Ok(Some(status)) = host.response_status() {
                let grpc = self.grpc != GrpcCall::No;
                let status = status.as_bytes();
                let class = if grpc {
                    self.grpc_class_at_headers(host, active, status)
                } else {
                    ResponseClass::from_status(status)
                };
                if class.is_some() || grpc {
                    let now_ns = host.now_ns().ok();
                    let latency_ms = self
                        .started_ns
                        .zip(now_ns)
                        .map(|(start, now)| now.saturating_sub(start) / 1_000_000);
                    if let Some(ms) = latency_ms {
                        active.metrics.record_duration(host, decision.subset, ms);
                    }
                    match class {
                        Some(class) => self.count_outcome(host, active, class, now_ns, latency_ms),
                        None => {
                            self.grpc = GrpcCall::AwaitingTrailers;
                            self.started_ns = latency_ms;
                        }
                    }
                }
            }
            if let (Some(pin), Some(id)) = (&plan.pin, &decision.new_pin) {
                // Added, not set: the upstream's own Set-Cookie headers stay.
                let _ = host.add_response_header("set-cookie", &pin.set_cookie(id));
            }
        }
        if let Some(header) = &plan.decision_header {
            if self.reveal {
                let _ = host.set_response_header(&header.name, &decision.describe(plan));
            } else {
                // Not for this client: nor a copy an upstream hop wrote.
                let _ = host.remove_response_header(&header.name);
            }
        }
    }

    /// The response trailers arrived: a gRPC call's status, when its headers
    /// had none.
    pub fn on_response_trailers(&mut self, host: &impl Host) {
        if self.grpc != GrpcCall::AwaitingTrailers {
            return;
        }
        self.grpc = GrpcCall::Yes;
        let latency_ms = self.started_ns.take();
        let Some(active) = &self.active else {
            return;
        };
        // Trailers without a status read as UNKNOWN, as a gRPC client reads them.
        let code = match host.grpc_status(ResponsePart::Trailers) {
            Ok(Some(value)) => crate::grpc::parse_status(&value),
            Ok(None) => crate::grpc::UNKNOWN,
            Err(_) => return,
        };
        let class = active.plan.grpc.class(code);
        let now_ns = host.now_ns().ok();
        self.count_outcome(host, active, class, now_ns, latency_ms);
    }

    /// A gRPC call's class from its response headers: the `grpc-status` of a
    /// trailers-only response, or the code a client derives from a `:status`
    /// other than 200; `None` while the status is still to come in trailers.
    fn grpc_class_at_headers(
        &self,
        host: &impl Host,
        active: &Active,
        status: &[u8],
    ) -> Option<ResponseClass> {
        let code = match host.grpc_status(ResponsePart::Headers) {
            Ok(Some(value)) => crate::grpc::parse_status(&value),
            Ok(None) if status == b"200" => return None,
            Ok(None) => crate::grpc::status_from_http(status),
            // Unreadable: count it by `:status` rather than lose it.
            Err(_) => return ResponseClass::from_status(status),
        };
        Some(active.plan.grpc.class(code))
    }

    /// Count a response of `class`: the response counter, the goals it
    /// completes, and the brake's window.
    fn count_outcome(
        &self,
        host: &impl Host,
        active: &Active,
        class: ResponseClass,
        now_ns: Option<u64>,
        latency_ms: Option<u64>,
    ) {
        let (plan, Some(decision)) = (&active.plan, &self.decision) else {
            return;
        };
        increment(host, active.metrics.response(decision.subset, class));
        for goal in crate::goals::completed(&plan.goals, self.goals, class) {
            increment(host, active.metrics.goal(goal, decision.subset));
        }
        if let (Some(brake), Some(state), Some(now_ns)) = (&plan.brake, &active.brake, now_ns) {
            if decision.subset == brake.subset && !decision.braked {
                state.record(
                    host,
                    brake,
                    plan.subset_name(brake.subset),
                    ns_to_ms(now_ns),
                    class.is_failure(),
                    latency_ms.filter(|_| brake.max_p99_ms.is_some()),
                );
            }
        }
    }
}
