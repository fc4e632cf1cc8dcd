//! Weights to bucket ranges: the heart of sticky, monotonic splitting.
//!
//! A key's bucket is `xxh64(key, seed_hash) % 10000`, where `seed_hash =
//! xxh64(seed, 0)`. Subsets own consecutive ranges of the 10,000 buckets in the
//! order they are listed, so raising the LAST subset's weight only grows its range
//! downwards into its neighbour's: a key already in it stays in it.

use crate::hash::xxh64;

/// Number of buckets: weights have 0.01 % granularity.
pub const BUCKETS: u16 = 10_000;

/// Buckets `[start, end)` owned by one subset (empty when its weight is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRange {
    pub start: u16,
    pub end: u16,
    pub subset: usize,
}

/// The compiled split: ranges in subset order, covering `0..BUCKETS` exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    ranges: Vec<BucketRange>,
    seed_hash: u64,
    /// The ramp step these weights come from (0-based), if a ramp is in force.
    step: Option<usize>,
}

impl Split {
    /// `weights_bp` are basis points (1 bp = 0.01 %) that the caller has checked sum
    /// to `BUCKETS`.
    pub fn new(weights_bp: &[u16], seed: &str) -> Split {
        Split::with_seed_hash(weights_bp, seed_hash(seed), None)
    }

    /// Other weights under the same seed (a ramp step).
    pub fn reweighted(&self, weights_bp: &[u16], step: Option<usize>) -> Split {
        Split::with_seed_hash(weights_bp, self.seed_hash, step)
    }

    fn with_seed_hash(weights_bp: &[u16], seed_hash: u64, step: Option<usize>) -> Split {
        let mut start = 0u16;
        let ranges = weights_bp
            .iter()
            .enumerate()
            .map(|(subset, &w)| {
                let end = start.saturating_add(w);
                let range = BucketRange { start, end, subset };
                start = end;
                range
            })
            .collect();
        Split {
            ranges,
            seed_hash,
            step,
        }
    }

    pub fn step(&self) -> Option<usize> {
        self.step
    }

    /// Weights in basis points, in subset order.
    pub fn weights_bp(&self) -> Vec<u16> {
        self.ranges.iter().map(|r| r.end - r.start).collect()
    }

    pub fn ranges(&self) -> &[BucketRange] {
        &self.ranges
    }

    /// The bucket of a sticky key under this split's seed.
    #[inline]
    pub fn bucket(&self, key: &[u8]) -> u16 {
        bucket_of(key, self.seed_hash)
    }

    /// The subset owning `bucket`; `None` only if the ranges do not cover it, which
    /// validation rules out (weights sum to 100 %).
    #[inline]
    pub fn subset_of(&self, bucket: u16) -> Option<usize> {
        self.ranges
            .iter()
            .find(|r| r.start <= bucket && bucket < r.end)
            .map(|r| r.subset)
    }
}

/// `xxh64(seed, 0)`: computed once per configuration.
pub fn seed_hash(seed: &str) -> u64 {
    xxh64(seed.as_bytes(), 0)
}

/// `xxh64(key, seed_hash) % 10000`.
#[inline]
pub fn bucket_of(key: &[u8], seed_hash: u64) -> u16 {
    // The remainder is below 10,000, so the narrowing cannot truncate.
    (xxh64(key, seed_hash) % u64::from(BUCKETS)) as u16
}

/// A uniformly random bucket from 64 random bits (bias below 1e-15).
#[inline]
pub fn random_bucket(random: u64) -> u16 {
    (random % u64::from(BUCKETS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_consecutive_and_cover_everything() {
        let split = Split::new(&[9000, 0, 1000], "s");
        assert_eq!(
            split.ranges(),
            &[
                BucketRange {
                    start: 0,
                    end: 9000,
                    subset: 0
                },
                BucketRange {
                    start: 9000,
                    end: 9000,
                    subset: 1
                },
                BucketRange {
                    start: 9000,
                    end: 10000,
                    subset: 2
                },
            ]
        );
        assert_eq!(split.subset_of(0), Some(0));
        assert_eq!(split.subset_of(8999), Some(0));
        assert_eq!(split.subset_of(9000), Some(2));
        assert_eq!(split.subset_of(9999), Some(2));
        assert_eq!(split.subset_of(10000), None);
    }

    #[test]
    fn raising_the_last_weight_only_moves_keys_into_it() {
        let weights = [[9000u16, 1000], [5000, 5000], [0, 10000]];
        let splits: Vec<Split> = weights.iter().map(|w| Split::new(w, "ramp")).collect();
        for i in 0..20_000 {
            let key = format!("user-{i}");
            let on_canary: Vec<bool> = splits
                .iter()
                .map(|s| s.subset_of(s.bucket(key.as_bytes())) == Some(1))
                .collect();
            for pair in on_canary.windows(2) {
                assert!(!pair[0] || pair[1], "{key} left the canary as it grew");
            }
        }
    }

    #[test]
    fn buckets_are_uniform_enough_for_weights() {
        let split = Split::new(&[9000, 1000], "api-2026-11");
        let n = 100_000;
        let canary = (0..n)
            .filter(|i| split.subset_of(split.bucket(format!("{i}").as_bytes())) == Some(1))
            .count();
        let share = canary as f64 / n as f64;
        assert!((share - 0.10).abs() < 0.005, "share {share}");
    }

    #[test]
    fn the_seed_reshuffles() {
        let a = Split::new(&[5000, 5000], "one");
        let b = Split::new(&[5000, 5000], "two");
        let moved = (0..10_000)
            .filter(|i| {
                let k = format!("k{i}");
                a.subset_of(a.bucket(k.as_bytes())) != b.subset_of(b.bucket(k.as_bytes()))
            })
            .count();
        // Independent shuffles move about half of the keys.
        assert!((4_000..6_000).contains(&moved), "moved {moved}");
    }

    #[test]
    fn bucket_formula_is_the_documented_one() {
        // Documented in docs/configuration.md so other tools can recompute a user's bucket.
        let expected = (xxh64(b"alice", xxh64(b"api-2026-11", 0)) % 10_000) as u16;
        assert_eq!(
            Split::new(&[10000], "api-2026-11").bucket(b"alice"),
            expected
        );
    }
}
