//! Envoy's serialized pairs: one strict reader and one writer.
//!
//! Proxy-Wasm hands header maps over in this format
//! (`proxy_get_header_map_pairs`), and Envoy serializes a JWT payload's objects
//! and lists in it too (a list is a map of elements to empty values): a
//! little-endian `u32` count, then a `(key length, value length)` pair of `u32`s
//! per entry, then each key and each value followed by a NUL byte.
//!
//! The reader walks the buffer in place (the SDK's version allocates a `String`
//! and a `Vec` per header, about twenty per request). It is strict: a count the
//! buffer cannot hold lists nothing, and an entry that runs past the buffer or
//! is not NUL-terminated ends the walk (the entries before it are still listed,
//! nothing past the buffer is read); [`Pairs::is_complete`] tells whether the
//! whole buffer was exactly one well-formed map.

/// The entries of a serialized map, as `(key, value)` slices of the buffer.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    /// The `(key length, value length)` pairs still to read, 8 bytes each.
    sizes: std::slice::ChunksExact<'a, u8>,
    /// The keys and values still to read.
    data: &'a [u8],
    /// The count the buffer declares (0 when it cannot hold that many).
    count: usize,
    damaged: bool,
}

fn le_u32(bytes: &[u8; 4]) -> usize {
    u32::from_le_bytes(*bytes) as usize
}

impl<'a> Pairs<'a> {
    pub fn new(buffer: &'a [u8]) -> Pairs<'a> {
        let parsed = buffer.split_first_chunk::<4>().and_then(|(count, rest)| {
            let count = le_u32(count);
            let (sizes, data) = rest.split_at_checked(count.checked_mul(8)?)?;
            Some((count, sizes, data))
        });
        // A count that cannot fit is damage: list nothing.
        let (count, sizes, data, damaged) = match parsed {
            Some((count, sizes, data)) => (count, sizes, data, false),
            None => (0, &[][..], &[][..], true),
        };
        Pairs {
            sizes: sizes.chunks_exact(8),
            data,
            count,
            damaged,
        }
    }

    /// The number of entries the buffer declares.
    pub fn declared_count(&self) -> usize {
        self.count
    }

    /// Every declared entry was read, well-formed, and the last one ends the
    /// buffer: it was exactly one map.
    pub fn is_complete(&self) -> bool {
        !self.damaged && self.sizes.len() == 0 && self.data.is_empty()
    }

    /// The entry whose sizes are `sizes`; `None` when it runs past the buffer
    /// or is not NUL-terminated.
    #[inline(always)]
    fn entry(&mut self, sizes: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let (key_len, value_len) = sizes.split_first_chunk::<4>()?;
        let value_len = le_u32(value_len.first_chunk::<4>()?);
        let (key, rest) = nul_terminated(self.data, le_u32(key_len))?;
        let (value, rest) = nul_terminated(rest, value_len)?;
        self.data = rest;
        Some((key, value))
    }
}

/// `len` bytes followed by a NUL, and what follows it.
fn nul_terminated(data: &[u8], len: usize) -> Option<(&[u8], &[u8])> {
    let (value, rest) = data.split_at_checked(len)?;
    match rest.split_first() {
        Some((0, rest)) => Some((value, rest)),
        _ => None,
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.damaged {
            return None;
        }
        let sizes = self.sizes.next()?;
        let pair = self.entry(sizes);
        // An entry that does not read is damage: stop for good.
        self.damaged = pair.is_none();
        pair
    }
}

/// The serialization Envoy produces: for tests, benchmarks, the fuzzers, the
/// CLI (claims as the proxy would hand them over) and a test host.
pub fn serialize<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let size: usize = pairs
        .iter()
        .map(|(k, v)| 10 + k.as_ref().len() + v.as_ref().len())
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(buffer: &[u8]) -> Vec<(&[u8], &[u8])> {
        Pairs::new(buffer).collect()
    }

    #[test]
    fn round_trips_and_is_complete() {
        let pairs: [(&[u8], &[u8]); 3] = [(b":path", b"/"), (b"x-a", b""), (b"", b"v")];
        let buffer = serialize(&pairs);
        assert_eq!(read(&buffer), pairs);
        let mut walk = Pairs::new(&buffer);
        assert_eq!(walk.declared_count(), 3);
        walk.by_ref().for_each(drop);
        assert!(walk.is_complete());
        assert!(Pairs::new(&serialize::<&[u8], &[u8]>(&[])).is_complete());
    }

    #[test]
    fn damage_ends_the_walk_and_never_reads_past_the_buffer() {
        let buffer = serialize(&[("a", "1"), ("b", "2")]);
        // Truncated anywhere: a prefix of the entries, never a panic.
        for cut in 0..buffer.len() {
            let head = &buffer[..cut];
            let got = read(head);
            assert!(got.len() <= 2);
            assert!(!Pairs::new(head).is_complete() || cut == buffer.len());
        }
        // A missing NUL terminator is damage, not a longer value.
        let mut bad = buffer.clone();
        let nul = bad.len() - 1;
        bad[nul] = b'x';
        let mut walk = Pairs::new(&bad);
        assert_eq!(walk.next(), Some((&b"a"[..], &b"1"[..])));
        assert_eq!(walk.next(), None);
        assert!(!walk.is_complete());
        // A count the buffer cannot hold lists nothing.
        let mut huge = buffer.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&huge).is_empty());
        // Trailing bytes: the entries are read, but it is not exactly one map.
        let mut longer = buffer;
        longer.push(7);
        let mut walk = Pairs::new(&longer);
        assert_eq!(walk.by_ref().count(), 2);
        assert!(!walk.is_complete());
    }
}
