//! Eight bytes at a time: the byte search the cookie scan and the JSON walk share.

/// `0x01` in every byte.
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte.
pub(crate) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` equal to `byte`, flagged by their high bit. A byte above
/// a true match may be flagged falsely, so only the lowest flag is exact.
#[inline]
pub(crate) fn flag(word: u64, byte: u8) -> u64 {
    let x = word ^ ONES.wrapping_mul(u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}
