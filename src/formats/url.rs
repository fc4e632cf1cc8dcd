//! The request attributes rules read from pseudo-headers: the path without its
//! query, the host without its port, and query parameters.

use std::borrow::Cow;

/// `:path` up to the query string (or a fragment), raw: what Envoy's route
/// `path` and `prefix` compare.
pub fn path_only(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// `:authority` without its port: `shop.example.com:8443` -> `shop.example.com`,
/// `[::1]:8080` -> `[::1]`. A trailing `:` with no digits after it is kept.
pub fn host_only(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        // An IPv6 literal: up to its closing bracket.
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let port = authority.get(colon + 1..).unwrap_or_default();
            if !port.is_empty() && port.iter().all(u8::is_ascii_digit) {
                authority.get(..colon).unwrap_or(authority)
            } else {
                authority
            }
        }
        None => authority,
    }
}

/// The `(name, value)` pairs of `path`'s query string, raw (not decoded), in
/// order; a pair without `=` has the empty value; empty pairs are skipped.
pub fn query_pairs(path: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let query = match path.iter().position(|&b| b == b'?') {
        Some(start) => path.get(start + 1..).unwrap_or_default(),
        None => &[],
    };
    let end = query.iter().position(|&b| b == b'#').unwrap_or(query.len());
    query
        .get(..end)
        .unwrap_or_default()
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (
                pair.get(..eq).unwrap_or_default(),
                pair.get(eq + 1..).unwrap_or_default(),
            ),
            None => (pair, &b""[..]),
        })
}

/// `%XX` escapes decoded; `None` for a `%` not followed by two hex digits.
/// Borrowed when there is nothing to decode.
pub fn percent_decode(text: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !text.contains(&b'%') {
        return Some(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hosts() {
        assert_eq!(path_only(b"/api/v1?x=1"), b"/api/v1");
        assert_eq!(path_only(b"/api/v1#top"), b"/api/v1");
        assert_eq!(path_only(b"/"), b"/");
        assert_eq!(path_only(b"?q"), b"");
        assert_eq!(host_only(b"shop.example.com:8443"), b"shop.example.com");
        assert_eq!(host_only(b"shop.example.com"), b"shop.example.com");
        assert_eq!(host_only(b"[::1]:8080"), b"[::1]");
        assert_eq!(host_only(b"[::1]"), b"[::1]");
        assert_eq!(host_only(b"odd:"), b"odd:");
        assert_eq!(host_only(b"a:b"), b"a:b");
    }

    #[test]
    fn query_pairs_and_escapes() {
        let pairs: Vec<_> = query_pairs(b"/p?a=1&&b&c=x%20y=z#frag").collect();
        assert_eq!(
            pairs,
            [(&b"a"[..], &b"1"[..]), (b"b", b""), (b"c", b"x%20y=z")]
        );
        assert_eq!(query_pairs(b"/p").count(), 0);
        assert_eq!(query_pairs(b"/p#a=1").count(), 0);
        assert_eq!(percent_decode(b"x%20y").as_deref(), Some(&b"x y"[..]));
        assert_eq!(percent_decode(b"a+b").as_deref(), Some(&b"a+b"[..]));
        assert_eq!(percent_decode(b"%4a%4A").as_deref(), Some(&b"JJ"[..]));
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%4"), None);
    }
}
