//! W3C Baggage (`baggage` request header): read a member, and merge the
//! filter's own members into the header without touching anyone else's.
//!
//! A list is `member *( OWS "," OWS member )`, a member `key OWS "=" OWS value
//! *( OWS ";" OWS property )`, values percent-encoded. Neither values nor
//! properties may hold a `,`, so members are split on commas; a member that
//! does not parse is kept as it came and matches nothing.

/// The W3C limits a propagated `baggage` header must stay within.
pub const MAX_BYTES: usize = 8192;
pub const MAX_MEMBERS: usize = 180;

/// `(key, raw value)` of each member, in order, whitespace trimmed; a member
/// without `=` has an empty key. Keys are compared with configured names,
/// which are valid keys, so a malformed key matches nothing.
pub fn members(list: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    list.split(|&b| b == b',').map(|member| {
        let mut parts = member.splitn(2, |&b| b == b'=');
        let key = parts.next().unwrap_or_default().trim_ascii();
        match parts.next() {
            Some(rest) => (
                key,
                rest.split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii(),
            ),
            None => (&[][..], &[][..]),
        }
    })
}

/// The first member named `key`: its value as sent (still percent-encoded).
pub fn member<'a>(list: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    if key.is_empty() {
        return None;
    }
    members(list).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// What [`merge`] made of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The header to send on.
    Write(Vec<u8>),
    /// Adding the filter's members would break a W3C limit: `removed` is the
    /// list without the filter's own members (the header to send on when it
    /// differs from the one received), and nothing is added.
    Overflow { removed: Option<Vec<u8>> },
}

/// `list` (the received header, if any) with every member named in `own`
/// removed and `add` appended, others kept byte for byte and in order.
pub fn merge(list: Option<&[u8]>, own: &[&str], add: &[(&str, &[u8])]) -> Merged {
    let mut out = Vec::new();
    let mut count = 0;
    let mut removed_any = false;
    if let Some(list) = list.filter(|l| !l.trim_ascii().is_empty()) {
        for piece in list.split(|&b| b == b',') {
            let key = members(piece).next().map_or(&[][..], |(k, _)| k);
            if own.iter().any(|o| o.as_bytes() == key) {
                removed_any = true;
                continue;
            }
            if count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(piece);
            count += 1;
        }
    }
    let kept = out.len();
    for (key, value) in add {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
    }
    if out.len() > MAX_BYTES || count + add.len() > MAX_MEMBERS {
        out.truncate(kept);
        return Merged::Overflow {
            removed: removed_any.then_some(out),
        };
    }
    Merged::Write(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_with_ows_and_properties() {
        let list = b"a=1, canary-bucket = 4711 ;p=q;flag,bad member,k=%41b,x y=1";
        let got: Vec<_> = members(list).collect();
        assert_eq!(
            got,
            [
                (&b"a"[..], &b"1"[..]),
                (b"canary-bucket", b"4711"),
                (b"", b""),
                (b"k", b"%41b"),
                (b"x y", b"1"),
            ]
        );
        assert_eq!(member(list, b"canary-bucket"), Some(&b"4711"[..]));
        assert_eq!(member(list, b"missing"), None);
        assert_eq!(member(b"", b"a"), None);
        assert_eq!(member(b"=x", b""), None, "an empty key names nothing");
    }

    #[test]
    fn merge_keeps_others_byte_for_byte_and_replaces_its_own() {
        let own = ["canary-bucket", "canary-force"];
        let list = b"userId=alice;prop=1, canary-bucket=1,  x=%20y ,canary-force=v2";
        assert_eq!(
            merge(Some(list), &own, &[("canary-bucket", b"4711")]),
            Merged::Write(b"userId=alice;prop=1,  x=%20y ,canary-bucket=4711".to_vec())
        );
        assert_eq!(
            merge(
                None,
                &own,
                &[("canary-bucket", b"7"), ("canary-force", b"v2")]
            ),
            Merged::Write(b"canary-bucket=7,canary-force=v2".to_vec())
        );
        assert_eq!(
            merge(Some(b"a=1"), &own, &[]),
            Merged::Write(b"a=1".to_vec())
        );
    }

    #[test]
    fn merge_respects_the_w3c_limits() {
        let own = ["canary-bucket"];
        let many: Vec<String> = (0..180).map(|i| format!("m{i}=1")).collect();
        let list = many.join(",");
        assert_eq!(
            merge(Some(list.as_bytes()), &own, &[("canary-bucket", b"1")]),
            Merged::Overflow { removed: None }
        );
        let with_own = format!("{list},canary-bucket=9");
        assert_eq!(
            merge(Some(with_own.as_bytes()), &own, &[("canary-bucket", b"1")]),
            Merged::Overflow {
                removed: Some(list.clone().into_bytes())
            }
        );
        let long = format!("big={}", "x".repeat(MAX_BYTES - 10));
        assert!(matches!(
            merge(Some(long.as_bytes()), &own, &[("canary-bucket", b"1")]),
            Merged::Overflow { .. }
        ));
        let fits = format!("big={}", "x".repeat(MAX_BYTES - 4 - 16));
        assert!(matches!(
            merge(Some(fits.as_bytes()), &own, &[("canary-bucket", b"1")]),
            Merged::Write(w) if w.len() == MAX_BYTES
        ));
    }
}
