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

/// One query parameter, as a rule reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Param<'a> {
    Absent,
    Value(Cow<'a, [u8]>),
    /// The parameter (or the query before it) is not valid percent-encoding.
    Undecodable,
}

/// The first parameter of `path`'s query string whose percent-decoded name is
/// `name`, its value percent-decoded (`+` stays `+`; a parameter without `=`
/// has the empty value). A bad escape in a name read before the match, or in
/// the matching value, makes the whole lookup undecodable.
pub fn query_param<'a>(path: &'a [u8], name: &[u8]) -> Param<'a> {
    let Some(start) = path.iter().position(|&b| b == b'?') else {
        return Param::Absent;
    };
    let query = path.get(start + 1..).unwrap_or_default();
    let query = query
        .get(..query.iter().position(|&b| b == b'#').unwrap_or(query.len()))
        .unwrap_or(query);
    for pair in query.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (
                pair.get(..eq).unwrap_or_default(),
                pair.get(eq + 1..).unwrap_or_default(),
            ),
            None => (pair, &b""[..]),
        };
        let Some(key) = percent_decode(key) else {
            return Param::Undecodable;
        };
        if *key == *name {
            return match percent_decode(value) {
                Some(value) => Param::Value(value),
                None => Param::Undecodable,
            };
        }
    }
    Param::Absent
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
    fn query_parameters_first_wins_and_decode() {
        let v = |s: &str| Param::Value(Cow::Owned(s.as_bytes().to_vec()));
        assert_eq!(query_param(b"/p?beta=1&beta=2", b"beta"), v("1"));
        assert_eq!(query_param(b"/p?a=1&b%65ta=x%20y", b"beta"), v("x y"));
        assert_eq!(query_param(b"/p?beta", b"beta"), v(""));
        assert_eq!(query_param(b"/p?beta=a+b", b"beta"), v("a+b"));
        assert_eq!(query_param(b"/p?other=1", b"beta"), Param::Absent);
        assert_eq!(query_param(b"/p", b"beta"), Param::Absent);
        assert_eq!(query_param(b"/p?beta=%zz", b"beta"), Param::Undecodable);
        assert_eq!(query_param(b"/p?%zz=1&beta=1", b"beta"), Param::Undecodable);
        assert_eq!(query_param(b"/p?x=%zz&beta=1", b"beta"), v("1"));
        assert_eq!(query_param(b"/p?beta=1#frag", b"beta"), v("1"));
    }
}
