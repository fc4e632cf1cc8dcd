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
    buffer: &'a [u8],
    /// Position of the next `(name length, value length)` pair.
    sizes: usize,
    /// Position of the next name.
    data: usize,
    remaining: usize,
}

fn u32_at(buffer: &[u8], at: usize) -> Option<usize> {
    let bytes = buffer.get(at..at.checked_add(4)?)?;
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    usize::try_from(u32::from_le_bytes(word)).ok()
}

impl<'a> SerializedPairs<'a> {
    pub fn new(buffer: &'a [u8]) -> SerializedPairs<'a> {
        let count = u32_at(buffer, 0).unwrap_or(0);
        // Each header takes at least 8 bytes of sizes and 2 NULs: a count that
        // cannot fit is damage, not a reason to walk past the end.
        let fits = count
            .checked_mul(10)
            .and_then(|n| n.checked_add(4))
            .is_some_and(|n| n <= buffer.len());
        let remaining = if fits { count } else { 0 };
        SerializedPairs {
            buffer,
            sizes: 4,
            data: 4 + remaining * 8,
            remaining,
        }
    }

    fn next_pair(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let name_len = u32_at(self.buffer, self.sizes)?;
        let value_len = u32_at(self.buffer, self.sizes + 4)?;
        let name_end = self.data.checked_add(name_len)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let name = self.buffer.get(self.data..name_end)?;
        let value = self.buffer.get(value_start..value_end)?;
        self.sizes += 8;
        self.data = value_end.checked_add(1)?;
        Some((name, value))
    }
}

impl<'a> Iterator for SerializedPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.next_pair() {
            Some(pair) => {
                self.remaining -= 1;
                Some(pair)
            }
            None => {
                self.remaining = 0;
                None
            }
        }
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
