//! What a decision may read from a request, and nothing else.
//!
//! [`RequestView`] is the seam between the decision and the proxy; values are read
//! by the slots the configuration numbered (see `slots.rs`). [`Request`] is
//! the one implementation: built from the request headers (fetched from the host
//! in one call) in one pass that keeps only the slots in use, it asks a
//! [`ClaimSource`] for verified JWT claims, the only other host read. Everything
//! here is plain Rust, so the whole request side is tested natively.

use std::cell::OnceCell;

use crate::claims::{self, ClaimRef, Payload};
use crate::formats::{cookie, url};
use crate::slots::{length_bit, SlotList, SlotValues, Slots};

/// A host call failed: the decision cannot be trusted, so it falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupError;

pub type Lookup<T> = Result<Option<T>, LookupError>;

/// The request values a rule or sticky key can read, by slot.
pub trait RequestView {
    /// All values of a header, joined with `,` (what a sticky key hashes):
    /// the value Envoy itself shows for a header it stores once.
    fn header(&self, slot: usize) -> Lookup<&[u8]>;
    /// Each value of a header as Envoy lists it, in order (what a rule reads:
    /// Envoy's route matchers match a repeated header's values one by one).
    /// Empty when the header is absent. By default, the one joined value.
    fn header_values(&self, slot: usize) -> Result<HeaderValues<'_>, LookupError> {
        Ok(HeaderValues::one(self.header(slot)?))
    }
    /// A cookie's value (first occurrence over all `cookie` headers).
    fn cookie(&self, slot: usize) -> Lookup<&[u8]>;
    /// A query parameter of `:path` (its first occurrence, percent-decoded).
    fn query(&self, slot: usize) -> Result<QueryValue<'_>, LookupError>;
    /// A JWT claim, from the configured claim source, borrowed from its payload.
    fn claim(&self, slot: usize) -> Lookup<ClaimRef<'_>>;
    /// A W3C baggage member (its first occurrence), percent-decoded; `None`
    /// when absent, malformed or read as absent (`cohort.incoming: strip`).
    fn baggage(&self, _slot: usize) -> Lookup<std::borrow::Cow<'_, [u8]>> {
        Ok(None)
    }
    /// Whether the request carries claims at all (a verified or decodable token),
    /// so that "this claim is absent" can be told from "there is no token".
    fn has_claims(&self) -> Result<bool, LookupError>;
    /// The header and cookie slots that hold a value, when known, so that the
    /// rule walk can skip the rules on absent values (see
    /// `RuleSet::first_match`). `None` (every rule is read)
    /// when not known, and when the headers could not be listed.
    fn present_slots(&self) -> Option<PresentSlots> {
        None
    }
}

/// A query parameter as a rule reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryValue<'a> {
    Absent,
    Value(&'a [u8]),
    /// Its value, or a name before it, is not valid percent-encoding.
    Undecodable,
}

/// A query slot's state, parsed once per request.
#[derive(Debug, Clone)]
enum QueryState<'r> {
    Absent,
    Value(std::borrow::Cow<'r, [u8]>),
    Undecodable,
}

/// The header and cookie slots of one request that hold a value, each once.
#[derive(Debug, Clone, Copy)]
pub struct PresentSlots {
    pub headers: SlotList,
    pub cookies: SlotList,
    /// The query slots whose parameter the request carries (decodable or not).
    pub queries: SlotList,
}

/// The values of one header, in the order Envoy lists them: the first, then
/// the later copies of the same slot. Borrowed; nothing is copied.
#[derive(Debug, Clone)]
pub struct HeaderValues<'a> {
    first: Option<&'a [u8]>,
    slot: usize,
    more: std::slice::Iter<'a, (usize, &'a [u8])>,
}

impl<'a> HeaderValues<'a> {
    /// Just `value` (or nothing).
    pub fn one(value: Option<&'a [u8]>) -> HeaderValues<'a> {
        HeaderValues {
            first: value,
            slot: 0,
            more: [].iter(),
        }
    }
}

impl<'a> Iterator for HeaderValues<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let slot = self.slot;
        self.more.find(|(s, _)| *s == slot).map(|&(_, v)| v)
    }
}

/// Where JWT claims come from (configured by `jwt.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSource {
    /// jwt_authn's dynamic metadata under this key (Istio: `payload`).
    Verified { metadata_key: String },
    /// jwt_authn's `forward_payload_header` (Istio `outputPayloadToHeader`): the
    /// verified payload as base64url JSON in this request header. No host call,
    /// but only sound when client copies of the header are removed before
    /// jwt_authn (the shipped envoy.yaml does it in `early_header_mutation`).
    PayloadHeader { header: String },
    /// The bearer token's payload, signature NOT checked.
    UnverifiedBearer,
}

/// Reads verified claims: in the proxy, one `get_property` on jwt_authn's metadata.
pub trait ClaimSource {
    /// The payload jwt_authn left under `metadata_key`; `None` without a token.
    fn verified_payload(&self, metadata_key: &str) -> Lookup<Payload>;
}

const CONTENT_TYPE: &[u8] = b"content-type";

/// The request headers as Envoy lists them: lowercase names, raw value bytes.
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// One request as the decision sees it. Header and cookie values are borrowed
/// from the host's header list, which must outlive it; only a repeated header
/// is copied (joined with `,`, for a sticky key), into `joined`.
pub struct Request<'r, C> {
    slots: &'r Slots,
    jwt: &'r JwtSource,
    claims: C,
    /// `false` when the host could not list the headers: every header, cookie
    /// and unverified-claim read then fails, and the decision falls back.
    listed: bool,
    /// A `content-type` says gRPC ([`crate::grpc::is_grpc_content_type`]),
    /// whatever the configuration reads.
    grpc: bool,
    /// The first value of each header slot.
    headers: SlotValues<'r>,
    /// The later values of the headers that occur more than once, by slot, in
    /// the order listed. Usually empty, which costs nothing.
    repeats: Vec<(usize, &'r [u8])>,
    /// The same headers' values all joined with `,`, by slot.
    joined: Vec<(usize, Vec<u8>)>,
    cookies: SlotValues<'r>,
    /// The claims, read or decoded at most once per request.
    payload: OnceCell<Option<Payload>>,
    /// The query parameters the configuration reads, parsed at most once.
    queries: OnceCell<Vec<QueryState<'r>>>,
    /// The header carrying the claims: `authorization` for `unverified_bearer`,
    /// jwt_authn's payload header for `payload_header`; `None` otherwise.
    claims_header: Option<&'r str>,
    /// That header's value (borrowed), and how many copies the request carried.
    claims_value: Option<&'r [u8]>,
    claims_copies: u32,
    /// The routing header is present ([`Slots::watch_routing_header`]).
    routing_header: bool,
}

impl<'r, C: ClaimSource> Request<'r, C> {
    /// Index `headers` into the configuration's slots, in one pass.
    pub fn new(
        slots: &'r Slots,
        jwt: &'r JwtSource,
        claims: C,
        headers: Result<&'r [(String, Vec<u8>)], LookupError>,
    ) -> Self {
        let pairs = headers.map(|list| {
            list.iter()
                .map(|(name, value)| (name.as_bytes(), value.as_slice()))
        });
        Self::from_pairs(slots, jwt, claims, pairs)
    }

    /// [`Request::new`] over `(name, value)` slices, as the proxy reads them in
    /// place from the host's serialized header map ([`crate::formats::pairs`]).
    pub fn from_pairs(
        slots: &'r Slots,
        jwt: &'r JwtSource,
        claims: C,
        headers: Result<impl Iterator<Item = (&'r [u8], &'r [u8])>, LookupError>,
    ) -> Self {
        let mut request = Request {
            slots,
            jwt,
            claims,
            listed: headers.is_ok(),
            grpc: false,
            headers: SlotValues::default(),
            repeats: Vec::new(),
            joined: Vec::new(),
            cookies: SlotValues::default(),
            payload: OnceCell::new(),
            queries: OnceCell::new(),
            claims_header: match jwt {
                JwtSource::UnverifiedBearer => Some("authorization"),
                JwtSource::PayloadHeader { header } => Some(header),
                JwtSource::Verified { .. } => None,
            },
            claims_value: None,
            claims_copies: 0,
            routing_header: false,
        };
        let Ok(headers) = headers else {
            return request;
        };
        let routing = slots.routing_header();
        let mut routing_header = false;
        // Every length a name read below can have: most of a request's
        // headers have none of them, and are passed over by one test.
        let mut lengths = slots.header_lengths()
            | length_bit(CONTENT_TYPE.len())
            | length_bit(routing.len())
            | request.claims_header.map_or(0, |h| length_bit(h.len()));
        if slots.cookie_count() > 0 {
            lengths |= length_bit(b"cookie".len());
        }
        for (name, value) in headers {
            if lengths & length_bit(name.len()) == 0 {
                continue;
            }
            if name == b"cookie" && slots.cookie_count() > 0 {
                request.index_cookies(value);
            }
            if request.claims_header.map(str::as_bytes) == Some(name) {
                request.claims_copies += 1;
                if request.claims_value.is_none() {
                    request.claims_value = Some(value);
                }
            }
            if name.len() == CONTENT_TYPE.len() && crate::slots::same_name(name, CONTENT_TYPE) {
                request.grpc |= crate::grpc::is_grpc_content_type(value);
            }
            if let Some(slot) = slots.header_slot(name) {
                request.index_header(slot, value);
            }
            // Most names differ in length, told by one compare.
            if name.len() == routing.len() && crate::slots::same_name(name, routing) {
                routing_header = true;
            }
        }
        request.routing_header = routing_header;
        request
    }

    /// Whether the request carries the routing header (read when the plan's
    /// slots watch it).
    pub fn has_routing_header(&self) -> bool {
        self.routing_header
    }

    /// Whether the request is a gRPC call (its `content-type`).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    fn index_header(&mut self, slot: usize, value: &'r [u8]) {
        let Some(first) = self.headers.get(slot) else {
            self.headers.insert(slot, value, self.slots.header_count());
            return;
        };
        self.index_repeat(slot, first, value);
    }

    /// A header read a second time: rare, and out of the header walk's line.
    #[cold]
    #[inline(never)]
    fn index_repeat(&mut self, slot: usize, first: &'r [u8], value: &'r [u8]) {
        self.repeats.push((slot, value));
        match self.joined.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, joined)) => {
                joined.push(b',');
                joined.extend_from_slice(value);
            }
            None => {
                let mut joined = Vec::with_capacity(first.len() + 1 + value.len());
                joined.extend_from_slice(first);
                joined.push(b',');
                joined.extend_from_slice(value);
                self.joined.push((slot, joined));
            }
        }
    }

    fn index_cookies(&mut self, header_value: &'r [u8]) {
        for (name, value) in cookie::pairs(header_value) {
            if let Some(slot) = self.slots.cookie_slot(name) {
                // The first occurrence of a name wins.
                if self.cookies.get(slot).is_none() {
                    self.cookies.insert(slot, value, self.slots.cookie_count());
                }
            }
        }
    }

    fn listed(&self) -> Result<(), LookupError> {
        if self.listed {
            Ok(())
        } else {
            Err(LookupError)
        }
    }

    /// Every query slot's value, from one pass over `:path`'s query string: the
    /// first occurrence of a name wins; a name that does not decode makes every
    /// parameter not found before it undecodable (it could have been any).
    fn queries(&self) -> &[QueryState<'r>] {
        self.queries.get_or_init(|| {
            // No query string (most requests): nothing to allocate.
            let Some(path) = self
                .slots
                .path_slot()
                .and_then(|s| self.headers.get(s))
                .filter(|p| p.contains(&b'?'))
            else {
                return Vec::new();
            };
            let mut states = vec![QueryState::Absent; self.slots.query_count()];
            for (name, value) in url::query_pairs(path) {
                let Some(name) = url::percent_decode(name) else {
                    for state in states.iter_mut() {
                        if matches!(state, QueryState::Absent) {
                            *state = QueryState::Undecodable;
                        }
                    }
                    break;
                };
                if let Some(state) = self.slots.query_slot(&name).and_then(|s| states.get_mut(s)) {
                    if matches!(state, QueryState::Absent) {
                        *state = match url::percent_decode(value) {
                            Some(value) => QueryState::Value(value),
                            None => QueryState::Undecodable,
                        };
                    }
                }
            }
            states
        })
    }

    /// The claims: jwt_authn's payload, or the bearer token's; fetched once.
    fn payload(&self) -> Result<Option<&Payload>, LookupError> {
        if let Some(payload) = self.payload.get() {
            return Ok(payload.as_ref());
        }
        let payload = match self.jwt {
            JwtSource::Verified { metadata_key } => self.claims.verified_payload(metadata_key)?,
            JwtSource::UnverifiedBearer => {
                self.listed()?;
                self.claims_value
                    .and_then(crate::formats::jwt::bearer_token)
                    .and_then(claims::bearer_payload)
                    .map(Payload::Json)
            }
            JwtSource::PayloadHeader { .. } => {
                self.listed()?;
                // jwt_authn appends its copy; a second one came from the client
                // (the early strip is missing): trust neither.
                if self.claims_copies == 1 {
                    self.claims_value
                        .and_then(claims::forwarded_payload)
                        .map(Payload::Json)
                } else {
                    None
                }
            }
        };
        Ok(self.payload.get_or_init(|| payload).as_ref())
    }
}

impl<C: ClaimSource> RequestView for Request<'_, C> {
    fn header(&self, slot: usize) -> Lookup<&[u8]> {
        self.listed()?;
        if let Some((_, joined)) = self.joined.iter().find(|(s, _)| *s == slot) {
            return Ok(Some(joined));
        }
        Ok(self.headers.get(slot))
    }

    fn header_values(&self, slot: usize) -> Result<HeaderValues<'_>, LookupError> {
        self.listed()?;
        Ok(HeaderValues {
            first: self.headers.get(slot),
            slot,
            more: self.repeats.iter(),
        })
    }

    fn cookie(&self, slot: usize) -> Lookup<&[u8]> {
        self.listed()?;
        Ok(self.cookies.get(slot))
    }

    fn query(&self, slot: usize) -> Result<QueryValue<'_>, LookupError> {
        self.listed()?;
        Ok(match self.queries().get(slot) {
            None | Some(QueryState::Absent) => QueryValue::Absent,
            Some(QueryState::Value(value)) => QueryValue::Value(value),
            Some(QueryState::Undecodable) => QueryValue::Undecodable,
        })
    }

    fn baggage(&self, slot: usize) -> Lookup<std::borrow::Cow<'_, [u8]>> {
        let (Some(header), Some(name)) =
            (self.slots.baggage_header(), self.slots.baggage_name(slot))
        else {
            return Ok(None);
        };
        Ok(self
            .header(header)?
            .and_then(|list| crate::formats::baggage::member(list, name))
            .and_then(url::percent_decode))
    }

    fn claim(&self, slot: usize) -> Lookup<ClaimRef<'_>> {
        if slot >= self.slots.claim_count() {
            return Ok(None);
        }
        // Looked up in the payload on every read: a walk over a few keys in
        // place, cheaper than keeping a copy of each claim per request.
        Ok(self
            .payload()?
            .and_then(|p| p.claim_ref(self.slots.claim_path(slot))))
    }

    fn has_claims(&self) -> Result<bool, LookupError> {
        Ok(self.payload()?.is_some())
    }

    fn present_slots(&self) -> Option<PresentSlots> {
        if !self.listed {
            return None;
        }
        let mut queries = SlotList::default();
        if self.slots.query_count() > 0 {
            for (slot, state) in self.queries().iter().enumerate() {
                if !matches!(state, QueryState::Absent) && !queries.push(slot) {
                    return None;
                }
            }
        }
        Some(PresentSlots {
            headers: self.headers.present()?,
            cookies: self.cookies.present()?,
            queries,
        })
    }
}

/// Verified claims given as a JSON object, handed to the decision in Envoy's
/// serialization (as jwt_authn's metadata reaches the proxy): what the `explain`
/// tool reads from `--claims`, decoded by the same code as in the proxy.
pub struct JsonClaims(pub Option<serde_json::Map<String, serde_json::Value>>);

impl ClaimSource for JsonClaims {
    fn verified_payload(&self, _: &str) -> Lookup<Payload> {
        Ok(self.0.as_ref().map(|map| {
            Payload::Envoy(claims::to_envoy_bytes(&serde_json::Value::Object(
                map.clone(),
            )))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Slots {
        let mut s = Slots::default();
        s.intern_header("x-a");
        s.intern_header("x-b");
        s.intern_cookie("beta");
        s.intern_cookie("c");
        s.intern_claim(vec!["sub".into()]);
        s.intern_claim(vec!["groups".into()]);
        s
    }

    fn list(pairs: &[(&str, &[u8])]) -> HeaderList {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn repeated_headers_join_with_commas_and_list_each_value() {
        let (s, jwt) = (slots(), JwtSource::UnverifiedBearer);
        let headers = list(&[("x-a", b"1"), ("x-b", b"2"), ("x-a", b"3"), ("x-a", b"")]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        assert_eq!(r.header(0), Ok(Some(&b"1,3,"[..])));
        assert_eq!(r.header(1), Ok(Some(&b"2"[..])));
        assert_eq!(r.header(7), Ok(None));
        let values = |slot| r.header_values(slot).unwrap().collect::<Vec<_>>();
        assert_eq!(values(0), [&b"1"[..], b"3", b""]);
        assert_eq!(values(1), [&b"2"[..]]);
        assert!(values(7).is_empty());
        // Each value is borrowed from the list, not from the joined copy.
        for (value, (_, listed)) in values(0)
            .iter()
            .zip(headers.iter().filter(|h| h.0 == "x-a"))
        {
            assert_eq!(value.as_ptr(), listed.as_ptr());
        }
        let broken = Request::new(&s, &jwt, JsonClaims(None), Err(LookupError));
        assert!(broken.header_values(0).is_err());
    }

    #[test]
    fn many_slots_and_many_values_read_the_same() {
        let mut s = Slots::default();
        let n = SlotValues::INLINE + 4;
        for i in 0..n {
            s.intern_header(&format!("x-h{i}"));
            s.intern_cookie(&format!("c{i}"));
        }
        let jwt = JwtSource::UnverifiedBearer;
        // A few values of many slots: kept inline, listed as present.
        let headers = list(&[
            ("x-h1", b"a"),
            ("x-h10", b"b"),
            ("cookie", b"c11=z; c0=y"),
            ("x-h10", b"c"),
        ]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        assert_eq!(r.header(1), Ok(Some(&b"a"[..])));
        assert_eq!(r.header(10), Ok(Some(&b"b,c"[..])));
        assert_eq!(r.header(11), Ok(None));
        assert_eq!(r.header(n), Ok(None));
        assert_eq!(r.cookie(11), Ok(Some(&b"z"[..])));
        assert_eq!(r.cookie(0), Ok(Some(&b"y"[..])));
        assert_eq!(r.cookie(9), Ok(None));
        let present = r.present_slots().unwrap();
        assert_eq!(present.headers.iter().collect::<Vec<_>>(), [1, 10]);
        assert_eq!(present.cookies.iter().collect::<Vec<_>>(), [11, 0]);

        // Every slot filled (more than fit inline), in reverse, one repeated.
        let mut headers: HeaderList = (0..n)
            .rev()
            .map(|i| (format!("x-h{i}"), format!("v{i}").into_bytes()))
            .collect();
        headers.push(("x-h3".into(), b"again".to_vec()));
        let cookies: Vec<String> = (0..n).map(|i| format!("c{i}=w{i}")).collect();
        headers.push(("cookie".into(), cookies.join("; ").into_bytes()));
        headers.push(("cookie".into(), b"c5=late".to_vec()));
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        for i in 0..n {
            let want = if i == 3 {
                "v3,again".to_owned()
            } else {
                format!("v{i}")
            };
            assert_eq!(r.header(i), Ok(Some(want.as_bytes())), "x-h{i}");
            assert_eq!(r.cookie(i), Ok(Some(format!("w{i}").as_bytes())), "c{i}");
        }
        assert_eq!(r.header(n), Ok(None));
        assert!(r.present_slots().is_none(), "too many to list");
    }

    #[test]
    fn names_passed_over_by_length_are_only_the_unread_ones() {
        // Names of 63 bytes and more share one length bit: each is still told
        // apart by its bytes.
        let long = "x-".to_owned() + &"l".repeat(70);
        let longer = "x-".to_owned() + &"m".repeat(90);
        let mut s = Slots::default();
        s.intern_header("x-a");
        s.intern_header(&long);
        s.intern_cookie("beta");
        s.watch_routing_header("x-canary-subset");
        let jwt = JwtSource::PayloadHeader {
            header: "x-jwt-payload".into(),
        };
        let headers = list(&[
            // Unread names, of lengths read and not read.
            ("x-b", b"no"),
            (&longer, b"no"),
            ("authorization", b"no"),
            ("x-forwarded-proto", b"no"),
            // Every kind of name read.
            ("x-a", b"a"),
            (&long, b"long"),
            ("cookie", b"beta=yes"),
            ("content-type", b"application/grpc"),
            ("x-canary-subset", b"v2"),
            ("x-jwt-payload", b"e30"),
        ]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        assert_eq!(r.header(0), Ok(Some(&b"a"[..])));
        assert_eq!(r.header(1), Ok(Some(&b"long"[..])));
        assert_eq!(r.cookie(0), Ok(Some(&b"yes"[..])));
        assert!(r.is_grpc());
        assert!(r.has_routing_header());
        assert_eq!((r.claims_copies, r.claims_value), (1, Some(&b"e30"[..])));

        // Without them: nothing read, whatever the lengths.
        let headers = list(&[("x-b", b"1"), (&longer, b"2"), ("authorization", b"3")]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        assert_eq!((r.header(0), r.header(1)), (Ok(None), Ok(None)));
        assert!(!r.is_grpc() && !r.has_routing_header());
        assert_eq!(r.claims_copies, 0);
    }

    #[test]
    fn values_are_borrowed_from_the_header_list() {
        let (s, jwt) = (slots(), JwtSource::UnverifiedBearer);
        let headers = list(&[("x-a", b"1"), ("cookie", b"beta=yes")]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        let in_list = |v: &[u8]| {
            headers
                .iter()
                .any(|(_, h)| h.as_ptr_range().contains(&v.as_ptr()))
        };
        assert!(in_list(r.header(0).unwrap().unwrap()));
        assert!(in_list(r.cookie(0).unwrap().unwrap()));
    }

    #[test]
    fn cookies_across_several_headers_first_wins() {
        let (s, jwt) = (slots(), JwtSource::UnverifiedBearer);
        let headers = list(&[("cookie", b"a=1; beta=no"), ("cookie", b"beta=yes; c=3")]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        assert_eq!(r.cookie(0), Ok(Some(&b"no"[..])));
        assert_eq!(r.cookie(1), Ok(Some(&b"3"[..])));
    }

    #[test]
    fn host_failure_is_an_error_not_an_absence() {
        let (s, jwt) = (slots(), JwtSource::UnverifiedBearer);
        let r = Request::new(&s, &jwt, JsonClaims(None), Err(LookupError));
        assert_eq!(r.header(0), Err(LookupError));
        assert_eq!(r.cookie(0), Err(LookupError));
        assert_eq!(r.claim(0), Err(LookupError));
    }

    #[test]
    fn verified_claims_come_from_the_claim_source_once() {
        use std::cell::Cell;
        struct Counting(Cell<u32>);
        impl ClaimSource for &Counting {
            fn verified_payload(&self, key: &str) -> Lookup<Payload> {
                self.0.set(self.0.get() + 1);
                let payload = serde_json::json!({"sub": "alice"});
                Ok((key == "payload").then(|| {
                    Payload::Json(
                        claims::JsonObject::from_map(payload.as_object().unwrap()).unwrap(),
                    )
                }))
            }
        }
        let s = slots();
        let jwt = JwtSource::Verified {
            metadata_key: "payload".into(),
        };
        let source = Counting(Cell::new(0));
        let r = Request::new(&s, &jwt, &source, Ok(&[]));
        let alice = ClaimRef::Scalar(b"alice"[..].into());
        assert_eq!(r.claim(0), Ok(Some(alice.clone())));
        assert_eq!(r.claim(0), Ok(Some(alice)));
        assert_eq!(r.claim(1), Ok(None));
        assert_eq!(source.0.get(), 1, "one host read per request");
        assert_eq!(r.has_claims(), Ok(true));
    }

    use crate::claims::Claim;

    fn forwarded(json: &str) -> Vec<u8> {
        crate::formats::jwt::base64url_encode(json.as_bytes()).into_bytes()
    }

    #[test]
    fn payload_header_claims_are_decoded_from_the_one_copy() {
        let s = slots();
        let jwt = JwtSource::PayloadHeader {
            header: "x-jwt-payload".into(),
        };
        let value = forwarded(r#"{"sub":"alice","groups":["dev","staff"]}"#);
        let headers = list(&[("x-jwt-payload", &value)]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        let claim = |slot| r.claim(slot).map(|c| c.map(|c| c.to_claim()));
        assert_eq!(claim(0), Ok(Some(Claim::Scalar("alice".into()))));
        assert_eq!(
            claim(1),
            Ok(Some(Claim::List(vec!["dev".into(), "staff".into()])))
        );
        assert_eq!(r.has_claims(), Ok(true));

        // jwt_authn may pad the value (pad_forward_payload_header).
        let mut padded = forwarded(r#"{"sub":"bob"}"#);
        while padded.len() % 4 != 0 {
            padded.push(b'=');
        }
        let headers = list(&[("x-jwt-payload", &padded)]);
        let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
        assert_eq!(r.claim(0), Ok(Some(ClaimRef::Scalar(b"bob"[..].into()))));
    }

    #[test]
    fn payload_header_with_a_second_copy_or_garbage_gives_no_claims() {
        let s = slots();
        let jwt = JwtSource::PayloadHeader {
            header: "x-jwt-payload".into(),
        };
        let forged = forwarded(r#"{"sub":"mallory","groups":["staff"]}"#);
        let real = forwarded(r#"{"sub":"alice"}"#);
        for headers in [
            list(&[("x-jwt-payload", &forged), ("x-jwt-payload", &real)]),
            list(&[("x-jwt-payload", b"not base64!")]),
            list(&[("x-jwt-payload", &forwarded("[1,2]"))]),
            list(&[("authorization", b"Bearer e30.e30.x")]),
        ] {
            let r = Request::new(&s, &jwt, JsonClaims(None), Ok(&headers));
            assert_eq!(r.claim(0), Ok(None), "{headers:?}");
            assert_eq!(r.has_claims(), Ok(false), "{headers:?}");
        }
        // The claims header is never a verified source when it is not configured.
        let verified = JwtSource::Verified {
            metadata_key: "payload".into(),
        };
        let headers = list(&[("x-jwt-payload", &forged)]);
        let r = Request::new(&s, &verified, JsonClaims(None), Ok(&headers));
        assert_eq!(r.claim(0), Ok(None));
    }
}
