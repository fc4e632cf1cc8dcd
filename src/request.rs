//! What a decision may read from a request, and nothing else.
//!
//! [`RequestView`] is the seam between the decision and the proxy. [`Request`] is the
//! one implementation: it holds the request headers (fetched from the host in one
//! call) and asks a [`ClaimSource`] for verified JWT claims, the only other host
//! read. Everything here is plain Rust, so the whole request side is tested natively.

use std::borrow::Cow;
use std::cell::OnceCell;

use crate::claims::{self, Claim, ClaimPath};
use crate::cookie;

/// A host call failed: the decision cannot be trusted, so it falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupError;

pub type Lookup<T> = Result<Option<T>, LookupError>;

/// The request values a rule or sticky key can read. Names are lowercase.
pub trait RequestView {
    /// All values of a header, joined with `,` as Envoy joins repeated headers.
    fn header(&self, name: &str) -> Lookup<Cow<'_, [u8]>>;
    /// A cookie's value (first occurrence over all `cookie` headers).
    fn cookie(&self, name: &str) -> Lookup<&[u8]>;
    /// A JWT claim at a dotted path, from the configured claim source.
    fn claim(&self, path: &ClaimPath) -> Lookup<Claim>;
    /// Whether the request carries claims at all (a verified or decodable token),
    /// so that "this claim is absent" can be told from "there is no token".
    fn has_claims(&self) -> Result<bool, LookupError>;
}

/// Where JWT claims come from (configured by `jwt.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSource {
    /// jwt_authn's dynamic metadata under this key (Istio: `payload`).
    Verified { metadata_key: String },
    /// The bearer token's payload, signature NOT checked.
    UnverifiedBearer,
}

/// Reads verified claims: in the proxy, `get_property` on jwt_authn's metadata.
pub trait ClaimSource {
    /// The claim at `metadata_key` + `path`, `None` when absent.
    fn verified_claim(&self, metadata_key: &str, path: &ClaimPath) -> Lookup<Claim>;
    /// Whether jwt_authn left a payload under `metadata_key` (a verified token).
    fn has_verified_payload(&self, metadata_key: &str) -> Result<bool, LookupError>;
}

/// The request headers as Envoy lists them: lowercase names, raw value bytes.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

impl Headers {
    pub fn new(entries: Vec<(String, Vec<u8>)>) -> Headers {
        Headers { entries }
    }

    pub fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let mut values = self.values(name);
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = first.to_vec();
                for value in std::iter::once(second).chain(values) {
                    joined.push(b',');
                    joined.extend_from_slice(value);
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.values("cookie")
            .find_map(|value| cookie::find(value, name.as_bytes()))
    }

    fn values<'h, 'n>(&'h self, name: &'n str) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// One request as the decision sees it.
pub struct Request<'r, C> {
    headers: Result<Headers, LookupError>,
    jwt: &'r JwtSource,
    claims: C,
    bearer: OnceCell<Option<serde_json::Map<String, serde_json::Value>>>,
}

impl<'r, C: ClaimSource> Request<'r, C> {
    /// `headers` is `Err` when the host could not list them: every header, cookie
    /// and unverified-claim read then fails, and the decision falls back.
    pub fn new(headers: Result<Headers, LookupError>, jwt: &'r JwtSource, claims: C) -> Self {
        Request {
            headers,
            jwt,
            claims,
            bearer: OnceCell::new(),
        }
    }

    fn headers(&self) -> Result<&Headers, LookupError> {
        self.headers.as_ref().map_err(|e| *e)
    }
}

impl<C: ClaimSource> RequestView for Request<'_, C> {
    fn header(&self, name: &str) -> Lookup<Cow<'_, [u8]>> {
        Ok(self.headers()?.get(name))
    }

    fn cookie(&self, name: &str) -> Lookup<&[u8]> {
        Ok(self.headers()?.cookie(name))
    }

    fn claim(&self, path: &ClaimPath) -> Lookup<Claim> {
        match self.jwt {
            JwtSource::Verified { metadata_key } => self.claims.verified_claim(metadata_key, path),
            JwtSource::UnverifiedBearer => Ok(self.bearer()?.and_then(|p| claims::lookup(p, path))),
        }
    }

    fn has_claims(&self) -> Result<bool, LookupError> {
        match self.jwt {
            JwtSource::Verified { metadata_key } => self.claims.has_verified_payload(metadata_key),
            JwtSource::UnverifiedBearer => Ok(self.bearer()?.is_some()),
        }
    }
}

impl<C: ClaimSource> Request<'_, C> {
    /// The bearer token's payload, decoded once per request however many claims
    /// the rules read.
    fn bearer(&self) -> Result<Option<&serde_json::Map<String, serde_json::Value>>, LookupError> {
        let headers = self.headers()?;
        Ok(self
            .bearer
            .get_or_init(|| {
                let authorization = headers.get("authorization")?;
                claims::bearer_payload(claims::bearer_token(&authorization)?)
            })
            .as_ref())
    }
}

/// Verified claims given as a JSON object, as jwt_authn would have stored them:
/// what the `explain` tool reads from `--claims`.
pub struct JsonClaims(pub Option<serde_json::Map<String, serde_json::Value>>);

impl ClaimSource for JsonClaims {
    fn verified_claim(&self, _: &str, path: &ClaimPath) -> Lookup<Claim> {
        Ok(self
            .0
            .as_ref()
            .and_then(|payload| claims::lookup(payload, path)))
    }
    fn has_verified_payload(&self, _: &str) -> Result<bool, LookupError> {
        Ok(self.0.is_some())
    }
}

/// A claim source with no claims (no jwt_authn metadata).
pub struct NoClaims;

impl ClaimSource for NoClaims {
    fn verified_claim(&self, _: &str, _: &ClaimPath) -> Lookup<Claim> {
        Ok(None)
    }
    fn has_verified_payload(&self, _: &str) -> Result<bool, LookupError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> Headers {
        Headers::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn repeated_headers_join_with_commas() {
        let h = headers(&[("x-a", b"1"), ("x-b", b"2"), ("x-a", b"3")]);
        assert_eq!(h.get("x-a").unwrap().as_ref(), b"1,3");
        assert_eq!(h.get("x-b").unwrap().as_ref(), b"2");
        assert!(h.get("x-c").is_none());
    }

    #[test]
    fn cookies_across_several_headers() {
        let h = headers(&[("cookie", b"a=1; beta=no"), ("cookie", b"beta=yes; c=3")]);
        assert_eq!(h.cookie("beta"), Some(&b"no"[..]));
        assert_eq!(h.cookie("c"), Some(&b"3"[..]));
    }

    #[test]
    fn host_failure_is_an_error_not_an_absence() {
        let jwt = JwtSource::UnverifiedBearer;
        let r = Request::new(Err(LookupError), &jwt, NoClaims);
        assert_eq!(r.header("x"), Err(LookupError));
        assert_eq!(r.cookie("x"), Err(LookupError));
        assert_eq!(r.claim(&["sub".to_string()]), Err(LookupError));
    }

    #[test]
    fn verified_claims_come_from_the_claim_source() {
        struct One;
        impl ClaimSource for One {
            fn verified_claim(&self, key: &str, path: &ClaimPath) -> Lookup<Claim> {
                Ok((key == "payload" && path == ["sub"]).then(|| Claim::Scalar("alice".into())))
            }
            fn has_verified_payload(&self, key: &str) -> Result<bool, LookupError> {
                Ok(key == "payload")
            }
        }
        let jwt = JwtSource::Verified {
            metadata_key: "payload".into(),
        };
        let r = Request::new(Ok(Headers::default()), &jwt, One);
        assert_eq!(
            r.claim(&["sub".into()]),
            Ok(Some(Claim::Scalar("alice".into())))
        );
        assert_eq!(r.claim(&["other".into()]), Ok(None));
        assert_eq!(r.has_claims(), Ok(true));
    }
}
