//! Parsers and encoders of the values a request carries, one of each: cookies,
//! JWTs (bearer tokens, base64url) and Envoy's serialized pairs.

pub mod cookie;
pub mod jwt;
pub mod pairs;
pub mod url;
