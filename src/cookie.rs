//! Cookie lookup in `Cookie` request headers (RFC 6265 §5.4 syntax, read leniently).
//!
//! Rules, decided once and documented in the README:
//! - pairs are separated by `;`, optional spaces/tabs around names and values are
//!   ignored, and a value in double quotes is read without them;
//! - a pair without `=` is skipped (garbage never fails a request);
//! - names are case-sensitive, and the FIRST occurrence of a name wins, across all
//!   `cookie` headers in the order Envoy lists them (HTTP/1.1 may send several,
//!   HTTP/2 splits one; both read the same).

/// The `(name, value)` pairs of one `Cookie` header value, in order.
pub fn pairs(header_value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header_value.split(|&b| b == b';').filter_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (raw_name, raw_value) = pair.split_at(eq);
        // `split_at` keeps the `=` at the start of the value part.
        Some((
            trim(raw_name),
            unquote(trim(raw_value.get(1..).unwrap_or_default())),
        ))
    })
}

/// The value of cookie `name` in one `Cookie` header value, if present.
pub fn find<'a>(header_value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    pairs(header_value).find_map(|(n, v)| (n == name).then_some(v))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn finds_a_cookie_among_others() {
        let h = b"theme=dark; session_id=abc123; beta=true";
        assert_eq!(find(h, b"session_id"), Some(&b"abc123"[..]));
        assert_eq!(find(h, b"beta"), Some(&b"true"[..]));
        assert_eq!(find(h, b"theme"), Some(&b"dark"[..]));
        assert_eq!(find(h, b"missing"), None);
    }

    #[test]
    fn names_are_exact_and_case_sensitive() {
        assert_eq!(find(b"xbeta=1; beta=2", b"beta"), Some(&b"2"[..]));
        assert_eq!(find(b"Beta=1", b"beta"), None);
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(
            find(b"beta=first; beta=second", b"beta"),
            Some(&b"first"[..])
        );
    }

    #[test]
    fn lenient_syntax() {
        assert_eq!(find(b"  beta = true ;x=1", b"beta"), Some(&b"true"[..]));
        assert_eq!(find(b"beta=\"quoted\"", b"beta"), Some(&b"quoted"[..]));
        assert_eq!(find(b"beta=", b"beta"), Some(&b""[..]));
        assert_eq!(find(b"a=b=c", b"a"), Some(&b"b=c"[..]));
        assert_eq!(find(b"\"", b"beta"), None);
    }

    #[test]
    fn garbage_never_fails() {
        for junk in [
            &b""[..],
            b";",
            b";;;",
            b"===",
            b"novalue",
            b"\xff\xfe=\x00",
            b"beta",
        ] {
            assert_eq!(find(junk, b"beta"), None, "{junk:?}");
        }
        assert_eq!(find(b"\xff; beta=\xfe", b"beta"), Some(&b"\xfe"[..]));
    }
}
