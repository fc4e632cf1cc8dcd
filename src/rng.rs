//! A small, fast PRNG for requests that carry no sticky key.
//!
//! Seeded from the host's entropy (`getrandom`) once per VM; never a fixed seed.

/// SplitMix64: 64-bit state, full period, passes BigCrush; plenty for choosing a
/// subset by weight, and one multiply-xorshift chain per draw.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the OS / host entropy source. `None` when the host
    /// refuses entropy; the caller decides what to mix in instead.
    pub fn from_entropy() -> Option<Self> {
        let mut buf = [0u8; 8];
        getrandom::fill(&mut buf).ok()?;
        Some(SplitMix64::new(u64::from_le_bytes(buf)))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Pin ids drawn from the generator: for tools and tests. The filter draws them
/// from the host's entropy instead (see the host adapter).
impl crate::decide::Entropy for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        SplitMix64::next_u64(self)
    }

    fn pin_bits(&mut self) -> [u8; 16] {
        let (a, b) = (SplitMix64::next_u64(self), SplitMix64::next_u64(self));
        let mut bits = [0u8; 16];
        for (dst, src) in bits
            .iter_mut()
            .zip(a.to_le_bytes().into_iter().chain(b.to_le_bytes()))
        {
            *dst = src;
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_seeds_differ() {
        let a = SplitMix64::from_entropy().unwrap().next_u64();
        let b = SplitMix64::from_entropy().unwrap().next_u64();
        assert_ne!(a, b);
    }

    #[test]
    fn draws_are_uniform_over_buckets() {
        let mut rng = SplitMix64::new(42);
        let n = 100_000;
        let low = (0..n)
            .filter(|_| crate::bucket::random_bucket(rng.next_u64()) < 1000)
            .count();
        let share = low as f64 / n as f64;
        assert!((share - 0.10).abs() < 0.005, "share {share}");
    }
}
