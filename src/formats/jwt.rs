//! Bearer tokens and base64url: the text formats a JWT arrives in.

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(authorization: &[u8]) -> Option<&[u8]> {
    let scheme = authorization.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = authorization.get(7..)?;
    let start = token.iter().position(|&b| b != b' ')?;
    let token = token.get(start..)?;
    let end = token.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    token.get(..end).filter(|t| !t.is_empty())
}

/// base64url without padding (RFC 4648 §5).
pub fn base64url_encode(data: &[u8]) -> String {
    let digit = |six: u32| -> char {
        let six = (six & 63) as u8;
        char::from(match six {
            0..=25 => b'A' + six,
            26..=51 => b'a' + (six - 26),
            52..=61 => b'0' + (six - 52),
            62 => b'-',
            _ => b'_',
        })
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(digit(n >> (18 - 6 * i)));
        }
    }
    out
}

/// base64url (RFC 4648 §5), padding optional; `None` on any other byte.
///
/// The hot path of `payload_header` claims: four digits at a time through a
/// table, into a buffer sized once (about 6 instructions a digit, where pushing
/// bit by bit took 35). Bits past the last whole byte are ignored.
pub fn base64url_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    base64url_decode_into(input, &mut out).then_some(out)
}

/// [`base64url_decode`] into `out` (its allocation reused): whether `input` is
/// base64url. `out` holds the data, or anything when it is not.
pub fn base64url_decode_into(input: &[u8], out: &mut Vec<u8>) -> bool {
    // Any number of trailing `=`; one anywhere else is not a digit (rejected below).
    let end = input.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = input.get(..end).unwrap_or_default();
    if body.len() % 4 == 1 {
        return false;
    }
    out.clear();
    out.resize(body.len() / 4 * 3 + (body.len() % 4).saturating_sub(1), 0);
    // Invalid digits are 0xff in the table: any one sets bits above the low six.
    let mut invalid = 0u32;
    let quads = body.chunks_exact(4);
    let tail = quads.remainder();
    let mut bytes = out.chunks_exact_mut(3);
    for (quad, three) in quads.zip(&mut bytes) {
        if let ([a, b, c, d], [x, y, z]) = (quad, three) {
            let (a, b, c, d) = (b64_digit(*a), b64_digit(*b), b64_digit(*c), b64_digit(*d));
            invalid |= a | b | c | d;
            let n = (a << 18) | (b << 12) | (c << 6) | d;
            (*x, *y, *z) = ((n >> 16) as u8, (n >> 8) as u8, n as u8);
        }
    }
    // 2 or 3 digits left: 1 or 2 bytes, in the buffer's last bytes.
    let mut n = 0u32;
    for &c in tail {
        let v = b64_digit(c);
        invalid |= v;
        n = (n << 6) | v;
    }
    let n = n << (6 * (4 - tail.len() as u32) % 24);
    for (out, byte) in bytes.into_remainder().iter_mut().zip(&n.to_be_bytes()[1..]) {
        *out = *byte;
    }
    invalid < 64
}

fn b64_digit(c: u8) -> u32 {
    B64_DIGITS
        .get(usize::from(c))
        .map_or(0xff, |&v| u32::from(v))
}

/// Each byte's base64url value; 0xff for a byte that is not a digit.
static B64_DIGITS: [u8; 256] = b64_digits();

// Evaluated at compile time, where an index out of bounds would fail the build.
#[allow(clippy::indexing_slicing)]
const fn b64_digits() -> [u8; 256] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(data: &[u8]) -> String {
        base64url_encode(data)
    }

    #[test]
    fn base64url_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\xfd\x00"] {
            assert_eq!(base64url_decode(b64(data).as_bytes()).unwrap(), data);
        }
        assert_eq!(base64url_decode(b"Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64url_encode(b"foob"), "Zm9vYg");
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode(b"Zm9v+g"), None);
        assert_eq!(base64url_decode(b"Z"), None);
        assert_eq!(base64url_decode(b"Zm=9"), None);
    }

    /// The decoder before the table: one digit at a time, bit by bit.
    fn reference_base64url_decode(input: &[u8]) -> Option<Vec<u8>> {
        let input = match input.iter().position(|&b| b == b'=') {
            Some(pad) if input.get(pad..)?.iter().all(|&b| b == b'=') => input.get(..pad)?,
            Some(_) => return None,
            None => input,
        };
        if input.len() % 4 == 1 {
            return None;
        }
        let mut out = Vec::with_capacity(input.len() * 3 / 4);
        let mut acc = 0u32;
        let mut bits = 0u32;
        for &c in input {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }

    #[test]
    fn base64url_decodes_like_the_reference() {
        let same = |input: &[u8]| {
            assert_eq!(
                base64url_decode(input),
                reference_base64url_decode(input),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        };
        // Every input of up to 2 bytes.
        same(b"");
        for a in 0..=255u8 {
            same(&[a]);
            for b in 0..=255u8 {
                same(&[a, b]);
            }
        }
        // Every input of up to 5 bytes over the digits' range edges, padding,
        // and bytes next to the ranges.
        let alphabet = b"AZaz09-_=+/.@[`{ \x00\xff";
        let n = alphabet.len();
        for len in 3..=5u32 {
            for mut code in 0..n.pow(len) {
                let input: Vec<u8> = (0..len)
                    .map(|_| {
                        let c = alphabet[code % n];
                        code /= n;
                        c
                    })
                    .collect();
                same(&input);
            }
        }
        // Random lengths and bytes: mostly digits, some padding, some garbage.
        let mut rng = crate::rng::SplitMix64::new(11);
        let digits = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for _ in 0..200_000 {
            let len = (rng.next_u64() % 64) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| digits[(rng.next_u64() % 64) as usize])
                .collect();
            match rng.next_u64() % 8 {
                0 => input.extend(std::iter::repeat_n(b'=', (rng.next_u64() % 4) as usize)),
                1 if len > 0 => {
                    let at = (rng.next_u64() % len as u64) as usize;
                    input[at] = rng.next_u64() as u8;
                }
                2 if len > 0 => {
                    let at = (rng.next_u64() % len as u64) as usize;
                    input.insert(at, b'=');
                }
                _ => {}
            }
            same(&input);
            // Encoded data, padded or not, decodes back.
            let data = &input[..len.min(input.len()) / 2];
            let encoded = b64(data);
            assert_eq!(base64url_decode(encoded.as_bytes()).as_deref(), Some(data));
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
