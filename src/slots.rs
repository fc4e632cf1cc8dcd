//! The request values a configuration reads, numbered once at configure time.
//!
//! Rules and sticky keys refer to slots, not names. Per request, one pass over
//! the headers (and one over the cookie pairs) fills exactly the slots the
//! configuration uses; every rule then reads its value by index, so 500 rules
//! cost 500 comparisons, not 500 header scans.

use crate::hash::FastMap;

/// `a == b` for the short names compared per request (header, cookie and claim
/// names): most candidates differ in length or at an end, which is told first,
/// and names of up to 16 bytes are compared as two overlapping words, without
/// a call to `memcmp`.
#[inline]
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.first() != b.first() || a.last() != b.last() {
        return false;
    }
    fn ends<const N: usize>(s: &[u8]) -> Option<(&[u8; N], &[u8; N])> {
        Some((s.first_chunk()?, s.last_chunk()?))
    }
    match a.len() {
        // The first and the last byte are all of it.
        0..=2 => true,
        3 => a.get(1) == b.get(1),
        4..=7 => ends::<4>(a) == ends::<4>(b),
        8..=16 => ends::<8>(a) == ends::<8>(b),
        _ => a == b,
    }
}

/// A name length as one bit of a mask: lengths up to 62 each their own bit,
/// longer ones all bit 63.
#[inline]
pub(crate) fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// A set of byte strings, as a `FastMap` (see `Slots`: one map type in the .wasm).
#[derive(Debug, Clone, Default)]
pub struct ByteSet(FastMap<Box<[u8]>, usize>);

impl ByteSet {
    pub fn contains(&self, value: &[u8]) -> bool {
        self.0.contains_key(value)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Box<[u8]>> {
        self.0.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Box<[u8]>> for ByteSet {
    fn from_iter<I: IntoIterator<Item = Box<[u8]>>>(items: I) -> Self {
        ByteSet(items.into_iter().map(|k| (k, 0)).collect())
    }
}

/// The lengths and first bytes of a set of names: most names a request carries
/// that are not in the set (`:path`, `user-agent`, most cookies) are told apart
/// by these, without hashing them.
#[derive(Debug, Clone, Default)]
struct NameFilter {
    /// Bit `n`: a name of length `n` (63: of 63 or more).
    lengths: u64,
    /// Bit `b`: a name starting with byte `b`.
    first_bytes: [u64; 4],
}

impl NameFilter {
    fn add(&mut self, name: &[u8]) {
        self.lengths |= 1 << name.len().min(63);
        if let Some(&b) = name.first() {
            if let Some(word) = self.first_bytes.get_mut(usize::from(b / 64)) {
                *word |= 1 << (b % 64);
            }
        }
    }

    /// `false` only if `name` is certainly not in the set.
    #[inline]
    fn may_hold(&self, name: &[u8]) -> bool {
        if self.lengths >> name.len().min(63) & 1 == 0 {
            return false;
        }
        name.first().is_none_or(|&b| {
            self.first_bytes
                .get(usize::from(b / 64))
                .is_some_and(|word| word >> (b % 64) & 1 == 1)
        })
    }
}

/// Header, cookie and claim slots of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    headers: Vec<String>,
    // Every table of the crate is a `FastMap<Box<[u8]>, usize>`: one hash map
    // instance in the .wasm instead of one per key and value type.
    header_index: FastMap<Box<[u8]>, usize>,
    header_filter: NameFilter,
    /// The lengths of the header slots' names ([`length_bit`]): most request
    /// headers are told apart from all of them by their length alone.
    header_lengths: u64,
    cookies: Vec<String>,
    cookie_index: FastMap<Box<[u8]>, usize>,
    cookie_filter: NameFilter,
    claims: Vec<Vec<String>>,
    /// Query parameter names (as the decoded name reads), and `:path`'s slot,
    /// where they are parsed from.
    queries: Vec<Box<[u8]>>,
    query_index: FastMap<Box<[u8]>, usize>,
    path: Option<usize>,
    /// Baggage member names, and the `baggage` header's slot they are read from.
    baggage: Vec<Box<[u8]>>,
    baggage_header: Option<usize>,
    /// Members this filter writes that a client must not choose (`cohort`
    /// with `incoming: strip`): read as absent.
    baggage_ignored: Vec<Box<[u8]>>,
    /// The routing header, looked for without a slot (a slot more can tip a
    /// typical configuration from the linear name scan into hashing): only its
    /// presence is wanted. Empty: not looked for.
    routing: Box<[u8]>,
}

impl Slots {
    /// Note whether requests carry the (lowercase) routing header `name`.
    pub fn watch_routing_header(&mut self, name: &str) {
        self.routing = name.as_bytes().into();
    }

    pub fn routing_header(&self) -> &[u8] {
        &self.routing
    }

    /// The slot of a (lowercase) header name, added when new.
    pub fn intern_header(&mut self, name: &str) -> usize {
        if let Some(&slot) = self.header_index.get(name.as_bytes()) {
            return slot;
        }
        let slot = self.headers.len();
        self.headers.push(name.to_owned());
        self.header_index.insert(name.as_bytes().into(), slot);
        self.header_filter.add(name.as_bytes());
        self.header_lengths |= length_bit(name.len());
        slot
    }

    pub fn intern_cookie(&mut self, name: &str) -> usize {
        if let Some(&slot) = self.cookie_index.get(name.as_bytes()) {
            return slot;
        }
        let slot = self.cookies.len();
        self.cookies.push(name.to_owned());
        self.cookie_index.insert(name.as_bytes().into(), slot);
        self.cookie_filter.add(name.as_bytes());
        slot
    }

    pub fn intern_claim(&mut self, path: Vec<String>) -> usize {
        if let Some(slot) = self.claims.iter().position(|p| *p == path) {
            return slot;
        }
        self.claims.push(path);
        self.claims.len() - 1
    }

    /// The slot of a query parameter name; `:path` becomes a header slot.
    pub fn intern_query(&mut self, name: &[u8]) -> usize {
        self.path = Some(self.intern_header(":path"));
        if let Some(&slot) = self.query_index.get(name) {
            return slot;
        }
        let slot = self.queries.len();
        self.queries.push(name.into());
        self.query_index.insert(name.into(), slot);
        slot
    }

    #[inline]
    pub fn query_slot(&self, name: &[u8]) -> Option<usize> {
        self.query_index.get(name).copied()
    }

    pub fn query_name(&self, slot: usize) -> &[u8] {
        self.queries.get(slot).map_or(&[], |q| &**q)
    }

    pub fn query_count(&self) -> usize {
        self.queries.len()
    }

    /// The slot of a baggage member name; `baggage` becomes a header slot.
    pub fn intern_baggage(&mut self, name: &[u8]) -> usize {
        self.baggage_header = Some(self.intern_header("baggage"));
        if let Some(slot) = self.baggage.iter().position(|b| **b == *name) {
            return slot;
        }
        self.baggage.push(name.into());
        self.baggage.len() - 1
    }

    /// A baggage member's name as configured, read as absent or not.
    pub fn baggage_member(&self, slot: usize) -> &[u8] {
        self.baggage.get(slot).map_or(&[], |b| &**b)
    }

    pub fn baggage_count(&self) -> usize {
        self.baggage.len()
    }

    /// The `baggage` header's slot, when a member is read.
    pub fn baggage_header(&self) -> Option<usize> {
        self.baggage_header
    }

    /// A baggage member's name, unless it is one to read as absent.
    pub fn baggage_name(&self, slot: usize) -> Option<&[u8]> {
        let name = self.baggage.get(slot)?;
        (!self.baggage_ignored.contains(name)).then_some(&**name)
    }

    /// Read the member `name` as absent from now on.
    pub fn ignore_baggage(&mut self, name: &[u8]) {
        self.baggage_ignored.push(name.into());
    }

    /// `:path`'s header slot, when a query parameter is read.
    pub fn path_slot(&self) -> Option<usize> {
        self.path
    }

    /// Most configurations read a handful of names: comparing lengths first and
    /// then bytes beats hashing every header name of every request.
    const LINEAR_UP_TO: usize = 8;

    #[inline]
    pub fn header_slot(&self, name: &[u8]) -> Option<usize> {
        if self.headers.len() <= Self::LINEAR_UP_TO {
            return self
                .headers
                .iter()
                .position(|h| same_name(h.as_bytes(), name));
        }
        if !self.header_filter.may_hold(name) {
            return None;
        }
        self.header_index.get(name).copied()
    }

    #[inline]
    pub fn cookie_slot(&self, name: &[u8]) -> Option<usize> {
        if self.cookies.len() <= Self::LINEAR_UP_TO {
            return self
                .cookies
                .iter()
                .position(|c| same_name(c.as_bytes(), name));
        }
        if !self.cookie_filter.may_hold(name) {
            return None;
        }
        self.cookie_index.get(name).copied()
    }

    pub fn header_name(&self, slot: usize) -> &str {
        self.headers.get(slot).map_or("", String::as_str)
    }

    pub fn cookie_name(&self, slot: usize) -> &str {
        self.cookies.get(slot).map_or("", String::as_str)
    }

    pub fn claim_path(&self, slot: usize) -> &[String] {
        self.claims.get(slot).map_or(&[], Vec::as_slice)
    }

    /// The lengths of the header slots' names, as [`length_bit`]s.
    pub fn header_lengths(&self) -> u64 {
        self.header_lengths
    }

    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    pub fn cookie_count(&self) -> usize {
        self.cookies.len()
    }

    pub fn claim_count(&self) -> usize {
        self.claims.len()
    }
}

/// One request's values for a configuration's header (or cookie) slots.
///
/// The first [`SlotValues::INLINE`] slots to receive a value are kept inline
/// (their numbers in `slots`, their values in `values`), which is also the list
/// of the slots present (see [`crate::request::RequestView::present_slots`]); a
/// request that fills more moves them into a table by slot on the heap. Most
/// requests fill a few, so they allocate nothing, whatever the configuration's
/// number of slots. (Kept small: the request is moved once per request.)
#[derive(Debug, Default)]
pub(crate) struct SlotValues<'r> {
    slots: [u32; SlotValues::INLINE],
    /// `Option` only so that a new table is all zeroes.
    values: [Option<&'r [u8]>; SlotValues::INLINE],
    len: usize,
    /// By slot, once more than `INLINE` slots were filled (the inline ones are
    /// then stale).
    spilled: Vec<Option<&'r [u8]>>,
}

impl<'r> SlotValues<'r> {
    pub const INLINE: usize = 8;

    #[inline]
    pub fn get(&self, slot: usize) -> Option<&'r [u8]> {
        if !self.spilled.is_empty() {
            return self.spilled.get(slot).copied().flatten();
        }
        let at = self
            .slots
            .get(..self.len)?
            .iter()
            .position(|&s| s as usize == slot)?;
        self.values.get(at).copied().flatten()
    }

    /// Give `slot` its value; the caller checked that it has none. `count` is the
    /// configuration's number of slots of this kind.
    #[inline]
    pub fn insert(&mut self, slot: usize, value: &'r [u8], count: usize) {
        if let (true, Ok(number)) = (self.spilled.is_empty(), u32::try_from(slot)) {
            if let (Some(s), Some(v)) =
                (self.slots.get_mut(self.len), self.values.get_mut(self.len))
            {
                (*s, *v) = (number, Some(value));
                self.len += 1;
                return;
            }
        }
        self.insert_spilled(slot, value, count);
    }

    fn insert_spilled(&mut self, slot: usize, value: &'r [u8], count: usize) {
        if self.spilled.is_empty() {
            self.spilled = vec![None; count.max(slot + 1)];
            let inline = self.slots.iter().zip(&self.values).take(self.len);
            for (&s, &v) in inline {
                if let Some(entry) = self.spilled.get_mut(s as usize) {
                    *entry = v;
                }
            }
        }
        if self.spilled.len() <= slot {
            self.spilled.resize(slot + 1, None);
        }
        if let Some(entry) = self.spilled.get_mut(slot) {
            *entry = Some(value);
        }
    }

    /// The slots holding a value, unless there are too many to list.
    pub fn present(&self) -> Option<SlotList> {
        if !self.spilled.is_empty() {
            return None;
        }
        let mut list = SlotList::default();
        for (entry, &slot) in list.slots.iter_mut().zip(self.slots.get(..self.len)?) {
            *entry = slot as usize;
        }
        list.len = self.len;
        Some(list)
    }
}

/// Up to `SlotValues::INLINE` slot numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotList {
    slots: [usize; SlotValues::INLINE],
    len: usize,
}

impl SlotList {
    /// At most this many.
    pub const MAX: usize = SlotValues::INLINE;

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots.iter().take(self.len).copied()
    }

    /// Add a slot number; `false` when the list is full.
    pub fn push(&mut self, slot: usize) -> bool {
        match self.slots.get_mut(self.len) {
            Some(entry) => {
                *entry = slot;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_values_inline_then_spilled() {
        let data: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
        let listed = |v: &SlotValues| v.present().map(|l| l.iter().collect::<Vec<_>>());
        let mut values = SlotValues::default();
        assert_eq!(values.get(3), None);
        assert_eq!(listed(&values), Some(vec![]));
        for (slot, value) in data.iter().enumerate().take(SlotValues::INLINE) {
            values.insert(slot * 2, value, 40);
        }
        assert_eq!(values.get(2), Some(&[1u8][..]));
        assert_eq!(values.get(3), None);
        assert_eq!(listed(&values), Some((0..8).map(|i| i * 2).collect()));
        // One more: the values move to the heap, the list of slots is gone.
        values.insert(39, &data[19], 40);
        assert_eq!(listed(&values), None);
        for (slot, value) in data.iter().enumerate().take(SlotValues::INLINE) {
            assert_eq!(values.get(slot * 2), Some(&value[..]));
            assert_eq!(values.get(slot * 2 + 1), None);
        }
        assert_eq!(values.get(39), Some(&[19u8][..]));
        values.insert(41, &data[0], 40);
        assert_eq!(values.get(41), Some(&[0u8][..]));
        assert_eq!(values.get(400), None);
    }

    #[test]
    fn same_name_is_equality() {
        let names: Vec<Vec<u8>> = (0..=20)
            .flat_map(|len| {
                let base: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
                // The name, and the name with each byte changed in turn.
                let changed = (0..len).map(move |at| {
                    let mut n: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
                    n[at] = b'Z';
                    n
                });
                std::iter::once(base).chain(changed)
            })
            .collect();
        for a in &names {
            for b in &names {
                assert_eq!(same_name(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn interning_is_stable() {
        let mut slots = Slots::default();
        assert_eq!(slots.intern_header("x-a"), 0);
        assert_eq!(slots.intern_header("x-b"), 1);
        assert_eq!(slots.intern_header("x-a"), 0);
        assert_eq!(slots.intern_cookie("beta"), 0);
        assert_eq!(slots.intern_claim(vec!["a".into(), "b".into()]), 0);
        assert_eq!(slots.intern_claim(vec!["a".into(), "b".into()]), 0);
        assert_eq!(slots.header_slot(b"x-b"), Some(1));
        assert_eq!(slots.header_slot(b"x-c"), None);
        assert_eq!(slots.cookie_slot(b"beta"), Some(0));
        assert_eq!(slots.cookie_slot(b"bet"), None);
        // Past the linear range the hash index answers the same.
        let mut many = Slots::default();
        for i in 0..20 {
            assert_eq!(many.intern_header(&format!("x-h{i}")), i);
            assert_eq!(many.intern_cookie(&format!("c{i}")), i);
        }
        assert_eq!(many.header_slot(b"x-h17"), Some(17));
        assert_eq!(many.cookie_slot(b"c19"), Some(19));
        assert_eq!(many.header_slot(b"x-h20"), None);
        // Names the filter rules out, and names it lets through to the index.
        for name in [":path", "y-h1", "x-h1000000000000", ""] {
            assert_eq!(many.header_slot(name.as_bytes()), None, "{name}");
        }
        assert_eq!(many.cookie_slot(b"c5"), Some(5));
        assert_eq!(many.cookie_slot(b"c55"), None);
        assert_eq!(many.cookie_slot(b"d5"), None);
        let mut long = Slots::default();
        let name = "x-".repeat(40);
        for i in 0..10 {
            long.intern_header(&format!("{name}{i}"));
        }
        assert_eq!(long.header_slot(format!("{name}7").as_bytes()), Some(7));
        assert_eq!(long.header_slot(format!("{name}77").as_bytes()), None);
        assert_eq!(
            (slots.header_name(1), slots.cookie_name(0)),
            ("x-b", "beta")
        );
        assert_eq!(slots.claim_path(0), ["a", "b"]);
    }
}
