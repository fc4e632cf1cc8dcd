//! JSON objects read in place: checked once, then values found as slices of
//! the text, nothing built or copied.
//!
//! One walker does all of it: it steps through an object or an array member by
//! member, checking the grammar as [`super::from_slice`] reads it (the same
//! escapes, number range and depth limit), and yields where each member's key
//! and value lie. [`check_object`] walks a whole payload once (and checks its
//! UTF-8), indexing the top-level members; the claim lookups then walk only
//! the object or list a path leads into. `tests` compare it with the reader.

use std::borrow::Cow;

use serde_json::Value;

use crate::swar::{flag, HIGHS, ONES};

#[cfg(any(test, feature = "internals"))]
/// `text` as one JSON object that [`super::from_slice`] reads, its top-level
/// members indexed; `None` for anything else.
pub fn check_object(text: &[u8]) -> Option<Index> {
    let mut index = Index::default();
    check_object_into(text, &mut index).then_some(index)
}

/// [`check_object`] into `index`, reusing its allocation: whether `text` is one
/// JSON object that [`super::from_slice`] reads.
pub fn check_object_into(text: &[u8], index: &mut Index) -> bool {
    let members = &mut index.0;
    members.clear();
    let at = skip_whitespace(text, 0);
    if text.get(at) != Some(&b'{') {
        return false;
    }
    let mut walker = Walker::new(text, at);
    walker.walk(Some(members));
    // Only strings may hold bytes past ASCII (the grammar allows none
    // elsewhere), and a string's text is valid UTF-8 exactly when its bytes
    // between the escapes are (an escape is ASCII, and decodes to whole
    // characters): checked once, over everything, if any was seen.
    let utf8 = walker.high & HIGHS == 0 || std::str::from_utf8(text).is_ok();
    let whole = walker.state == State::Closed && skip_whitespace(text, walker.at) == text.len();
    whole && utf8
}

/// A checked object's top-level members, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index(Vec<Member>);

impl Index {
    /// The memory it holds, in bytes.
    pub fn capacity(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Member>()
    }

    /// The value of `key` among the top-level members of `text` (the text this
    /// index was made from); the last of repeated keys wins.
    pub fn get<'a>(&self, text: &'a [u8], key: &[u8]) -> Option<Found<'a>> {
        let member = self.0.iter().rev().find(|m| m.is(text, key))?;
        member.found(text)
    }
}

/// The value of `key` in the object `text` holds (a value inside a checked
/// object); the last of repeated keys wins. `None` when `text` is not an object.
pub fn member<'a>(text: &'a [u8], key: &[u8]) -> Option<Found<'a>> {
    if text.first() != Some(&b'{') {
        return None;
    }
    let mut found = None;
    let mut walker = Walker::new(text, 0);
    while let Some(member) = walker.next() {
        if member.is(text, key) {
            found = Some(member);
        }
    }
    found?.found(text)
}

/// The elements of the array `text` holds (a value inside a checked object).
/// Nothing when `text` is not an array.
pub fn elements(text: &[u8]) -> Elements<'_> {
    let mut walker = Walker::new(text, 0);
    if text.first() != Some(&b'[') {
        walker.state = State::Closed;
    }
    Elements(walker)
}

#[derive(Debug, Clone)]
pub struct Elements<'a>(Walker<'a>);

impl<'a> Iterator for Elements<'a> {
    type Item = Found<'a>;

    fn next(&mut self) -> Option<Found<'a>> {
        let text = self.0.text;
        self.0.next()?.found(text)
    }
}

/// A value found in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A string without escapes: its text, between the quotes.
    Plain(&'a [u8]),
    /// Any other value, as written.
    Value(&'a [u8]),
}

/// A member of an object or an element of an array: where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    /// The key between its quotes; `(0, 0)` in an array.
    key: (usize, usize),
    /// The key holds escapes: it compares unescaped.
    escaped: bool,
    value: (usize, usize),
    /// The value is a string without escapes: its text is as written.
    plain: bool,
}

impl Member {
    fn is(&self, text: &[u8], key: &[u8]) -> bool {
        let (start, end) = self.key;
        // An escape is longer written than unescaped.
        if !self.escaped {
            end - start == key.len() && text.get(start..end) == Some(key)
        } else {
            end - start > key.len()
                && text
                    .get(start.saturating_sub(1)..end + 1)
                    .and_then(string_text)
                    .is_some_and(|k| *k == *key)
        }
    }

    fn found<'a>(&self, text: &'a [u8]) -> Option<Found<'a>> {
        let (start, end) = self.value;
        Some(if self.plain {
            Found::Plain(text.get(start + 1..end.saturating_sub(1))?)
        } else {
            Found::Value(text.get(start..end)?)
        })
    }
}

/// A string's text (from its quoted form, as written in checked text), escapes
/// decoded by the reader.
pub fn string_text(quoted: &[u8]) -> Option<Cow<'_, [u8]>> {
    match super::from_slice(quoted).ok()? {
        Value::String(s) => Some(Cow::Owned(s.into_bytes())),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after the opening `{` or `[`.
    Open,
    /// Just after a member.
    Between,
    /// Past the closing `}` or `]`.
    Closed,
    /// Not JSON as the reader reads it.
    Invalid,
}

/// Steps through the object or array at a `{` or `[`, a member at a time,
/// checking everything in between: one loop, its state in locals, the open
/// arrays and objects as a stack of bits (the reader allows 127 levels; a
/// `u128` holds them).
#[derive(Debug, Clone)]
struct Walker<'a> {
    text: &'a [u8],
    /// The next byte to read.
    at: usize,
    state: State,
    /// The outermost container is an object.
    object: bool,
    /// Any high bit: some byte read in a string is not ASCII.
    high: u64,
}

impl<'a> Walker<'a> {
    /// At the `{` or `[` at `at`.
    fn new(text: &'a [u8], at: usize) -> Walker<'a> {
        Walker {
            text,
            at: at + 1,
            state: State::Open,
            object: text.get(at) == Some(&b'{'),
            high: 0,
        }
    }

    /// The next member (a later call goes on from there).
    fn next(&mut self) -> Option<Member> {
        self.walk(None)
    }

    /// With `all`, every member pushed to it (the walk does not stop between
    /// members); else the next member. One function for both: the walk's
    /// code is the largest part of this module.
    fn walk(&mut self, mut all: Option<&mut Vec<Member>>) -> Option<Member> {
        let text = self.text;
        let closing = if self.object { b'}' } else { b']' };
        let mut at = skip_whitespace(text, self.at);
        match (self.state, text.get(at)) {
            (State::Open | State::Between, Some(&b)) if b == closing => {
                (self.at, self.state) = (at + 1, State::Closed);
                return None;
            }
            (State::Open, _) => {}
            (State::Between, Some(b',')) => at = skip_whitespace(text, at + 1),
            (State::Closed, _) => return None,
            _ => {
                self.state = State::Invalid;
                return None;
            }
        }
        // Until the walk stops where it should: any `None` below is not JSON.
        self.state = State::Invalid;
        let mut high = self.high;
        // Bit 0 is the innermost container: set for an object.
        let mut objects = u128::from(self.object);
        let mut depth = 1u32;
        let mut at_key = self.object;
        let mut member = Member {
            key: (0, 0),
            escaped: false,
            value: (0, 0),
            plain: false,
        };
        loop {
            if at_key {
                if text.get(at) != Some(&b'"') {
                    return None;
                }
                let (end, escaped) = check_string(text, at, &mut high)?;
                if depth == 1 {
                    (member.key, member.escaped) = ((at + 1, end - 1), escaped);
                }
                at = skip_whitespace(text, end);
                if text.get(at) != Some(&b':') {
                    return None;
                }
                at = skip_whitespace(text, at + 1);
            }
            if depth == 1 {
                (member.value.0, member.plain) = (at, false);
            }
            // At a value.
            let byte = *text.get(at)?;
            at = match byte {
                b'"' => {
                    let (end, escaped) = check_string(text, at, &mut high)?;
                    member.plain = depth == 1 && !escaped;
                    end
                }
                b'{' | b'[' => {
                    depth += 1;
                    // The reader's limit, counted from the top-level object.
                    if depth >= 128 {
                        return None;
                    }
                    let object = byte == b'{';
                    objects = (objects << 1) | u128::from(object);
                    at = skip_whitespace(text, at + 1);
                    let closing = if object { b'}' } else { b']' };
                    if text.get(at) != Some(&closing) {
                        at_key = object;
                        continue;
                    }
                    depth -= 1;
                    objects >>= 1;
                    at + 1
                }
                b't' => literal(text, at, b"true")?,
                b'f' => literal(text, at, b"false")?,
                b'n' => literal(text, at, b"null")?,
                b'-' | b'0'..=b'9' => number(text, at)?,
                _ => return None,
            };
            // After a value: the commas and closing brackets that follow it.
            loop {
                if depth == 1 {
                    member.value.1 = at;
                    match all.as_deref_mut() {
                        Some(members) => members.push(member),
                        None => {
                            (self.at, self.high, self.state) = (at, high, State::Between);
                            return Some(member);
                        }
                    }
                }
                at = skip_whitespace(text, at);
                let object = objects & 1 == 1;
                match (text.get(at), object) {
                    (Some(b','), _) => {
                        at = skip_whitespace(text, at + 1);
                        at_key = object;
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        at += 1;
                        depth -= 1;
                        objects >>= 1;
                        if depth == 0 {
                            (self.at, self.high, self.state) = (at, high, State::Closed);
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// The first byte at or after `at` that is not whitespace.
#[inline]
fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = text.get(at) {
        at += 1;
    }
    at
}

/// The eight bytes at `at`, as a little-endian word.
#[inline]
fn word_at(text: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = text.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The string at `at` (its `"`), checked: just after its closing quote, and
/// whether it holds escapes. Its bytes are OR-ed into `high` (UTF-8 is
/// checked at the end), and maybe a few after it.
#[inline(always)]
fn check_string(text: &[u8], at: usize, high: &mut u64) -> Option<(usize, bool)> {
    // Most keys and values: no escape, the closing quote within eight bytes.
    if let Some(word) = word_at(text, at + 1) {
        let found = special(word);
        let end = at + 1 + (found.trailing_zeros() / 8) as usize;
        if found != 0 && text.get(end) == Some(&b'"') {
            *high |= word;
            return Some((end + 1, false));
        }
    }
    check_long_string(text, at, high)
}

/// The bytes of `word` that end a string's plain run: `"`, `\` and control
/// characters, flagged as by [`flag`] (only the lowest flag is exact).
#[inline]
fn special(word: u64) -> u64 {
    let controls = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    flag(word, b'"') | flag(word, b'\\') | controls
}

/// [`check_string`], for any string.
#[inline(never)]
fn check_long_string(text: &[u8], mut at: usize, high: &mut u64) -> Option<(usize, bool)> {
    let mut escaped = false;
    at += 1;
    loop {
        // Eight bytes at a time up to the first `"`, `\` or control character:
        // most keys and values take one word.
        while let Some(word) = word_at(text, at) {
            *high |= word;
            let found = special(word);
            if found != 0 {
                at += (found.trailing_zeros() / 8) as usize;
                break;
            }
            at += 8;
        }
        let byte = *text.get(at)?;
        at += 1;
        match byte {
            b'"' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                at = escape(text, at)?;
            }
            0..=0x1f => return None,
            0x80.. => *high = HIGHS,
            _ => {}
        }
    }
}

/// After a `\` at `at - 1`: just after the escape.
fn escape(text: &[u8], at: usize) -> Option<usize> {
    match *text.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => match hex4(text, at + 1)? {
            0xDC00..=0xDFFF => None,
            // A leading surrogate: a trailing one must follow at once.
            0xD800..=0xDBFF => {
                if text.get(at + 5..at + 7)? != b"\\u" {
                    return None;
                }
                (0xDC00..=0xDFFF)
                    .contains(&hex4(text, at + 7)?)
                    .then_some(at + 11)
            }
            _ => Some(at + 5),
        },
        _ => None,
    }
}

fn hex4(text: &[u8], at: usize) -> Option<u32> {
    text.get(at..at + 4)?
        .iter()
        .try_fold(0, |n, &d| Some((n << 4) | char::from(d).to_digit(16)?))
}

/// The literal `word` at `at`: just after it.
fn literal(text: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (text.get(at..end)? == word).then_some(end)
}

/// The number at `at`: just after it. An integer of up to 19 digits is always
/// in range; anything else (a fraction, an exponent, more digits, a leading
/// zero) is read by the reader itself, so that range and grammar are exactly
/// its own.
fn number(text: &[u8], at: usize) -> Option<usize> {
    let start = at + usize::from(text.get(at) == Some(&b'-'));
    let digits = text.get(start..)?;
    let n = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let plain = (1..=19).contains(&n)
        && (n == 1 || digits.first() != Some(&b'0'))
        && !matches!(digits.get(n), Some(b'.' | b'e' | b'E'));
    if plain {
        Some(start + n)
    } else {
        super::number_end(text, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(found: Option<Found<'_>>) -> Option<String> {
        found.map(|found| match found {
            Found::Plain(text) => format!("plain {}", String::from_utf8_lossy(text)),
            Found::Value(text) => String::from_utf8_lossy(text).into_owned(),
        })
    }

    #[test]
    fn members_and_elements_as_written() {
        let doc = br#" { "a" : 1 , "b\"c":"x\\\"}" ,"l":[ 1,"]",{"k":[]} , null,true ],
            "o":{"p":{"q":-1.5e3}},"":false, "a":"again"} "#;
        let index = check_object(doc).unwrap();
        let get = |key: &str| text(index.get(doc, key.as_bytes()));
        assert_eq!(get("a").as_deref(), Some("plain again"));
        assert_eq!(get("b\"c").as_deref(), Some(r#""x\\\"}""#));
        assert_eq!(get("b\\\"c"), None);
        assert_eq!(
            get("l").as_deref(),
            Some(r#"[ 1,"]",{"k":[]} , null,true ]"#)
        );
        assert_eq!(get("o").as_deref(), Some(r#"{"p":{"q":-1.5e3}}"#));
        assert_eq!(get("").as_deref(), Some("false"));
        assert_eq!(get("x"), None);
        let Some(Found::Value(o)) = index.get(doc, b"o") else {
            panic!("an object");
        };
        let Some(Found::Value(p)) = member(o, b"p") else {
            panic!("an object");
        };
        assert_eq!(p, br#"{"q":-1.5e3}"#);
        assert_eq!(member(p, b"q"), Some(Found::Value(b"-1.5e3")));
        assert_eq!(member(b"[1]", b"p"), None);
        let items: Vec<String> = elements(br#"[ 1,"]",{"k":[]} , null,true ]"#)
            .map(|f| text(Some(f)).unwrap())
            .collect();
        assert_eq!(items, ["1", "plain ]", r#"{"k":[]}"#, "null", "true"]);
        assert!(elements(b"[]").next().is_none());
        assert!(elements(b"[ ]").next().is_none());
        assert!(elements(b"{}").next().is_none());
        assert!(elements(br#"{"a":1}"#).next().is_none());
    }

    #[test]
    fn many_members_and_repeats() {
        for n in [1, 15, 16, 17, 100] {
            // Keys k0..kn, each twice: the second value wins.
            let members: Vec<String> = (0..2 * n)
                .map(|i| format!("\"k{}\": {}", i % n, i))
                .collect();
            let doc = format!("{{{}}}", members.join(" ,\n"));
            let index = check_object(doc.as_bytes()).unwrap();
            for k in 0..n {
                let want = (k + n).to_string();
                let key = format!("k{k}");
                assert_eq!(
                    index.get(doc.as_bytes(), key.as_bytes()),
                    Some(Found::Value(want.as_bytes())),
                    "{key} of {n}"
                );
            }
            assert_eq!(index.get(doc.as_bytes(), b"k"), None);
        }
    }

    #[test]
    fn strings_end_at_their_quote_whatever_the_word_holds() {
        // Quotes, escapes and controls at every place in and past a word.
        for len in 0..20 {
            for at in 0..len {
                for special in [
                    &b"\\\""[..],
                    b"\\n",
                    b"\\u00e9",
                    b"\x1f",
                    b"\xc3\xa9",
                    b"\"x",
                ] {
                    let mut text = vec![b'a'; len];
                    text.splice(at..at, special.iter().copied());
                    for doc in [
                        [&b"{\""[..], &text, b"\":1}"].concat(),
                        [&b"{\"k\":\""[..], &text, b"\"}"].concat(),
                    ] {
                        let index = check_object(&doc);
                        assert_eq!(
                            index.is_some(),
                            matches!(super::super::from_slice(&doc), Ok(Value::Object(_))),
                            "{:?}",
                            String::from_utf8_lossy(&doc)
                        );
                        if let (Some(index), true) = (index, doc.starts_with(b"{\"k\"")) {
                            let value = &doc[6..doc.len() - 2];
                            let found = match index.get(&doc, b"k").unwrap() {
                                Found::Plain(text) => text,
                                Found::Value(text) => &text[1..text.len() - 1],
                            };
                            assert_eq!(found, value);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn any_bytes_end_the_walk_without_a_panic() {
        let mut rng = crate::rng::SplitMix64::new(3);
        let alphabet = b"{}[]\",:\\ an1";
        for _ in 0..100_000 {
            let len = (rng.next_u64() % 24) as usize;
            let mut text: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
                .collect();
            if rng.next_u64() % 2 == 0 {
                text.insert(0, b'[');
            }
            let n = elements(&text).take(100).count();
            assert!(n <= text.len(), "{text:?}");
            let _ = member(&text, b"a");
            let _ = check_object(&text);
        }
    }
}
