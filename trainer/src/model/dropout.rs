//! Dropout masks keyed by (seed, step, micro-batch), drawn in parallel chunks
//! at their own word of the stream, and `fork` for tensors used twice.

use dfdx::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

#[allow(unused_imports)]
use super::*;

/// Dropout state for one forward pass: a counter-keyed stream, so a resumed
/// run draws the same masks as an uninterrupted one.
pub struct Dropout {
    pub(crate) rate: f32,
    pub(super) rng: ChaCha8Rng,
}

impl Dropout {
    /// No dropout (evaluation).
    pub fn off() -> Self {
        Dropout {
            rate: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }
    /// Dropout at `rate`, seeded by (seed, step, micro-batch).
    pub fn new(rate: f32, seed: u64, step: u64, micro: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&step.to_le_bytes());
        key[16..24].copy_from_slice(&micro.to_le_bytes());
        key[24..].copy_from_slice(b"dropout!");
        Dropout {
            rate,
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    /// The next `n` mask values (0, or 1 / keep with probability keep), as
    /// drawn one `u32` at a time from the stream.
    pub(crate) fn mask(&mut self, n: usize) -> Vec<f32> {
        self.draw(n).values()
    }

    /// The next `n` mask values' place in the stream and their rule, the
    /// stream moved past them: made on the CPU by [`MaskDraw::values`], on
    /// the GPU by `device::elementwise`.
    pub fn draw(&mut self, n: usize) -> MaskDraw {
        let keep = 1.0 - self.rate;
        let start = self.rng.get_word_pos();
        self.rng.set_word_pos(start + n as u128);
        MaskDraw {
            seed: self.rng.get_seed(),
            start,
            n,
            threshold: (keep as f64 * u32::MAX as f64) as u32,
            scale: 1.0 / keep,
        }
    }

    pub(super) fn apply<S: Shape, D: Device<f32>, T: Tape<f32, D> + 'static>(
        &mut self,
        x: Tensor<S, f32, D, T>,
    ) -> Tensor<S, f32, D, T> {
        if self.rate <= 0.0 {
            return x;
        }
        let mask = self.mask(x.shape().num_elements());
        crate::kernels::mul_mask(x, mask)
    }
}

/// `n` dropout mask values: the ChaCha8 stream of `seed` from word
/// `start`; a word `<= threshold` keeps its value (`scale`), others drop it (0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskDraw {
    /// The stream's seed (`ChaCha8Rng::from_seed`).
    pub seed: [u8; 32],
    /// The first word's position in the stream.
    pub start: u128,
    /// The number of values.
    pub n: usize,
    /// The largest word that keeps its value.
    pub threshold: u32,
    /// A kept value (1 / keep).
    pub scale: f32,
}

impl MaskDraw {
    /// The mask, generated in parallel chunks that each start at their own
    /// word of the stream.
    pub fn values(&self) -> Vec<f32> {
        use rayon::prelude::*;
        const WORDS: usize = 1 << 16;
        let stream = ChaCha8Rng::from_seed(self.seed);
        let mut mask = vec![0f32; self.n];
        mask.par_chunks_mut(WORDS).enumerate().for_each(|(i, c)| {
            let mut rng = stream.clone();
            rng.set_word_pos(self.start + (i * WORDS) as u128);
            for x in c {
                *x = if rng.next_u32() <= self.threshold {
                    self.scale
                } else {
                    0.0
                };
            }
        });
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Masks generated in parallel chunks are the values drawn one at a time
    /// from the stream, and the stream goes on after them.
    #[test]
    fn dropout_masks_follow_the_stream() {
        let mut d = Dropout::new(0.25, 3, 5, 1);
        let mut serial = d.rng.clone();
        let threshold = (0.75f64 * u32::MAX as f64) as u32;
        for n in [1, 70_000, 200_000, 3] {
            let mask = d.mask(n);
            let want: Vec<f32> = (0..n)
                .map(|_| {
                    if serial.next_u32() <= threshold {
                        1.0 / 0.75
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_eq!(mask, want, "n {n}");
        }
        let dropped = d.mask(10_000).iter().filter(|&&x| x == 0.0).count();
        assert!(
            (2_200..2_800).contains(&dropped),
            "{dropped} of 10000 dropped"
        );
    }
}
