//! Cookie lookup in `Cookie` request headers (RFC 6265 §5.4 syntax, read leniently).
//!
//! Rules, decided once and documented in docs/configuration.md:
//! - pairs are separated by `;`, optional spaces/tabs around names and values are
//!   ignored, and a value in double quotes is read without them;
//! - a pair without `=` is skipped (garbage never fails a request);
//! - names are case-sensitive, and the FIRST occurrence of a name wins, across all
//!   `cookie` headers in the order Envoy lists them (HTTP/1.1 may send several,
//!   HTTP/2 splits one; both read the same).

use crate::swar::flag;

/// The `(name, value)` pairs of one `Cookie` header value, in order.
pub fn pairs(header_value: &[u8]) -> Pairs<'_> {
    Pairs {
        rest: Some(header_value),
    }
}

/// The iterator of [`pairs`]: one pass over the bytes, per pair a scan for its
/// `=` and then for the `;` that ends it (every request runs this).
pub struct Pairs<'a> {
    /// What follows the last `;` read; `None` once the end was reached.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest?;
            let Some(at) = find_either(rest, b'=', b';') else {
                // The last piece, without `=`: skipped.
                self.rest = None;
                return None;
            };
            let (name, after) = rest.split_at(at);
            let after = after.get(1..).unwrap_or_default();
            if rest.get(at) == Some(&b';') {
                // A piece without `=`: skipped.
                self.rest = Some(skip_spaces(after));
                continue;
            }
            let value = match find_either(after, b';', b';') {
                Some(end) => {
                    let (value, next) = after.split_at(end);
                    // The next name's leading spaces (`; `), which trimming
                    // would drop: skipped here, the name then has none to trim.
                    self.rest = Some(skip_spaces(next.get(1..).unwrap_or_default()));
                    value
                }
                None => {
                    self.rest = None;
                    after
                }
            };
            return Some((trim(name), unquote(trim(value))));
        }
    }
}

/// The first position of `a` or `b` in `bytes`, eight bytes at a time (a cookie
/// header is scanned on every request).
#[inline]
fn find_either(bytes: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        if let Ok(raw) = <[u8; 8]>::try_from(chunk) {
            let word = u64::from_le_bytes(raw);
            let found = flag(word, a) | flag(word, b);
            if found != 0 {
                return Some(at + (found.trailing_zeros() / 8) as usize);
            }
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&c| c == a || c == b).map(|i| at + i)
}

/// The value of cookie `name` in one `Cookie` header value, if present.
pub fn find<'a>(header_value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    pairs(header_value).find_map(|(n, v)| (n == name).then_some(v))
}

#[inline]
fn trim(s: &[u8]) -> &[u8] {
    // Most names and values have no space at either end.
    match s {
        [] => s,
        [first, .., last] if !is_space(*first) && !is_space(*last) => s,
        [only] if !is_space(*only) => s,
        _ => trim_spaces(s),
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[inline]
fn skip_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
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
    use super::{find, pairs, trim_spaces, unquote};
    use crate::rng::SplitMix64;

    /// The straightforward reading of the rules at the top: split on `;`, keep
    /// pieces with `=`, trim, unquote (the implementation before the word scan).
    fn reference(header: &[u8]) -> Vec<(&[u8], &[u8])> {
        header
            .split(|&b| b == b';')
            .filter_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (name, value) = pair.split_at(eq);
                Some((trim_spaces(name), unquote(trim_spaces(&value[1..]))))
            })
            .collect()
    }

    #[test]
    fn word_scan_reads_like_the_reference() {
        const ALPHABET: &[u8] = b"a=; \t\"\xff";
        // Every header of up to 6 bytes over the syntax's bytes...
        let mut headers: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|h| {
                    ALPHABET.iter().map(move |&b| {
                        let mut h = h.clone();
                        h.push(b);
                        h
                    })
                })
                .collect();
            headers.extend(last.iter().cloned());
        }
        // ...and longer ones, where separators fall anywhere in an 8-byte word.
        let mut rng = SplitMix64::new(7);
        for _ in 0..20_000 {
            let len = (rng.next_u64() % 40) as usize;
            let header = (0..len)
                .map(|_| {
                    let r = rng.next_u64() as usize;
                    // Mostly name/value bytes, so that pairs are long.
                    if r % 4 == 0 {
                        ALPHABET[(r >> 8) % ALPHABET.len()]
                    } else {
                        b'x'
                    }
                })
                .collect();
            headers.push(header);
        }
        for header in &headers {
            assert_eq!(
                pairs(header).collect::<Vec<_>>(),
                reference(header),
                "{header:?}"
            );
        }
    }

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
