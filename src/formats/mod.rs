//! Parsers and encoders of the values a request carries, one of each: cookies,
//! JWTs (bearer tokens, base64url), W3C baggage and Envoy's serialized pairs.

pub mod baggage;
pub mod cookie;
pub mod jwt;
pub mod pairs;
pub mod url;

/// `n` (below 10,000) in decimal, without the formatting machinery.
pub fn decimal(n: u16, out: &mut [u8; 4]) -> &[u8] {
    let mut n = n.min(9_999);
    let mut at = out.len();
    while at > 0 {
        at -= 1;
        if let Some(d) = out.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.get(at..).unwrap_or_default()
}
