//! Proxy-Wasm's serialized header map, read in place.
//!
//! `proxy_get_header_map_pairs` returns one buffer: a little-endian `u32` count,
//! then a `(name length, value length)` pair of `u32`s per header, then each name
//! and value followed by a NUL byte. The SDK turns it into a `String` and a `Vec`
//! per header (two allocations each, about twenty per request); the decision only
//! needs slices, so the filter walks the buffer instead.

/// The headers in a serialized map, as `(name, value)` slices of the buffer.
/// A truncated or inconsistent buffer ends the iteration early: the headers
/// before the damage are still listed, nothing past the buffer is read.
#[derive(Debug, Clone)]
pub struct SerializedPairs<'a> {
    /// The `(name length, value length)` pairs still to read, 8 bytes each.
    sizes: std::slice::ChunksExact<'a, u8>,
    /// The names and values still to read.
    data: &'a [u8],
}

fn le_u32(bytes: &[u8; 4]) -> usize {
    u32::from_le_bytes(*bytes) as usize
}

impl<'a> SerializedPairs<'a> {
    pub fn new(buffer: &'a [u8]) -> SerializedPairs<'a> {
        let (sizes, data) = buffer
            .split_first_chunk::<4>()
            .and_then(|(count, rest)| rest.split_at_checked(le_u32(count).checked_mul(8)?))
            // A count that cannot fit is damage: list nothing.
            .unwrap_or((&[], &[]));
        SerializedPairs {
            sizes: sizes.chunks_exact(8),
            data,
        }
    }

    fn next_pair(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let (name_len, value_len) = self.sizes.next()?.split_first_chunk::<4>()?;
        let value_len = le_u32(value_len.first_chunk::<4>()?);
        let (name, rest) = self.data.split_at_checked(le_u32(name_len))?;
        let (value, rest) = rest.get(1..)?.split_at_checked(value_len)?;
        self.data = rest.get(1..).unwrap_or_default();
        Some((name, value))
    }
}

impl<'a> Iterator for SerializedPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.next_pair();
        if pair.is_none() {
            // Damaged: stop for good, even if sizes remain.
            self.sizes = [].chunks_exact(8);
        }
        pair
    }
}

/// The serialization the host produces, for tests, benchmarks and the fuzzer.
pub fn serialize<'p>(pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().into_iter().count();
    let mut out = Vec::new();
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (name, value) in pairs.clone() {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(buffer: &[u8]) -> Vec<(String, String)> {
        SerializedPairs::new(buffer)
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn reads_what_the_host_writes() {
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/"),
            (b"cookie", b"a=1; b=2"),
            (b"x-empty", b""),
            (b"x-user-id", b"alice"),
        ];
        let buffer = serialize(headers.iter().copied());
        let read: Vec<(&[u8], &[u8])> = SerializedPairs::new(&buffer).collect();
        assert_eq!(read, headers);
        assert!(SerializedPairs::new(&serialize(std::iter::empty()))
            .next()
            .is_none());
        assert!(SerializedPairs::new(&[]).next().is_none());
    }

    #[test]
    fn damage_stops_the_walk_never_reads_past_the_end() {
        let buffer = serialize([(&b"x-a"[..], &b"1"[..]), (&b"x-b"[..], &b"22"[..])]);
        // Every truncation lists a prefix of the headers, never garbage.
        for cut in 0..buffer.len() {
            let got = pairs(buffer.get(..cut).unwrap());
            assert!(got.len() <= 2, "cut {cut}: {got:?}");
            for (g, want) in got.iter().zip([("x-a", "1"), ("x-b", "22")]) {
                assert_eq!((g.0.as_str(), g.1.as_str()), want, "cut {cut}");
            }
        }
        // A count far larger than the buffer, and sizes that overflow.
        let mut huge = buffer.clone();
        huge.get_mut(..4)
            .unwrap()
            .copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(pairs(&huge).is_empty());
        let mut overflow = buffer.clone();
        overflow
            .get_mut(4..8)
            .unwrap()
            .copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(pairs(&overflow).is_empty());
    }
}
