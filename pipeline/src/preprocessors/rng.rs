//! Per-example random streams that depend only on what the example *is*.
//!
//! seqio zips a random stream with the element stream, so an example's masks
//! depend on its position and on how the data was sharded (google/seqio#243). Here the stream of every example is derived from
//! `(seed, task name, source shard, example index)` alone, so the same inputs
//! give byte-identical outputs with any number of threads or workers.
//!
//! The generator is ChaCha8 (`rand_chacha`, a specified cipher, stable across
//! versions); the sampling helpers on top of it are our own and fixed, so
//! outputs never change with a crate upgrade.

use md5::{Digest, Md5};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Identifies one example for seeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleKey<'a> {
    /// The user's seed.
    pub seed: u64,
    /// Task name (or any stream name).
    pub task: &'a str,
    /// Source shard (input file) index.
    pub shard: u64,
    /// Example index within the shard.
    pub index: u64,
}

/// A deterministic random stream for one example.
#[derive(Debug, Clone)]
pub struct ExampleRng(ChaCha8Rng);

impl ExampleRng {
    /// The stream of `key`, for the preprocessing step `salt` (so that two
    /// steps of one example draw independent numbers).
    pub fn new(key: ExampleKey<'_>, salt: &str) -> Self {
        let mut h = Md5::new();
        h.update(key.seed.to_le_bytes());
        h.update((key.task.len() as u64).to_le_bytes());
        h.update(key.task.as_bytes());
        h.update(key.shard.to_le_bytes());
        h.update(key.index.to_le_bytes());
        h.update(salt.as_bytes());
        let a: [u8; 16] = h.clone().finalize().into();
        h.update([1u8]);
        let b: [u8; 16] = h.finalize().into();
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(&a);
        seed[16..].copy_from_slice(&b);
        ExampleRng(ChaCha8Rng::from_seed(seed))
    }

    /// A stream from a plain 64-bit seed (tests, benchmarks).
    pub fn from_u64(seed: u64) -> Self {
        ExampleRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, n)` (Lemire's nearly-divisionless method); `n > 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        let mut low = m as u64;
        if low < n {
            let t = n.wrapping_neg() % n;
            while low < t {
                m = (self.next_u64() as u128) * (n as u128);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// `k` distinct values of `[0, n)` in increasing order (Floyd's
    /// algorithm); `k <= n`. `out` is cleared first.
    pub fn sorted_sample(&mut self, n: usize, k: usize, out: &mut Vec<usize>) {
        out.clear();
        debug_assert!(k <= n);
        for j in n - k..n {
            let t = self.below(j as u64 + 1) as usize;
            match out.binary_search(&t) {
                Ok(_) => {
                    let pos = out.binary_search(&j).unwrap_err();
                    out.insert(pos, j);
                }
                Err(pos) => out.insert(pos, t),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_the_key_only() {
        let k = ExampleKey {
            seed: 7,
            task: "c4",
            shard: 3,
            index: 11,
        };
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = ExampleRng::new(k, "mask");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = ExampleRng::new(k, "mask");
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let mut other = ExampleRng::new(ExampleKey { index: 12, ..k }, "mask");
        assert_ne!(a[0], other.next_u64());
        let mut salted = ExampleRng::new(k, "chunk");
        assert_ne!(a[0], salted.next_u64());
    }

    #[test]
    fn sorted_sample_is_distinct_and_sorted() {
        let mut r = ExampleRng::from_u64(1);
        let mut v = Vec::new();
        for (n, k) in [(10, 10), (10, 0), (84, 27), (1, 1)] {
            r.sorted_sample(n, k, &mut v);
            assert_eq!(v.len(), k);
            assert!(v.windows(2).all(|w| w[0] < w[1]));
            assert!(v.iter().all(|&x| x < n));
        }
    }
}
