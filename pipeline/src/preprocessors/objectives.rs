//! T5's unsupervised objectives as named presets over token segments.
//!
//! [`Denoiser::span_corruption`] is T5's pre-training objective (`t5.data.preprocessors.span_corruption`):
//! 512-token inputs from 568 raw tokens, 15% noise in spans of mean length 3,
//! each noise span replaced by a unique sentinel in the inputs and the
//! non-noise spans by sentinels in the targets, then EOS after trimming.
//!
//! ```
//! use t5mix_pipeline::preprocessors::{Denoiser, ExampleRng};
//! let d = Denoiser::span_corruption(512, 114, 32100, 100).unwrap();
//! assert_eq!(d.tokens_length(), 568);
//! let segment: Vec<u32> = (100..668).collect();
//! let (mut inputs, mut targets) = (Vec::new(), Vec::new());
//! d.denoise(&segment, &mut ExampleRng::from_u64(0), &mut inputs, &mut targets).unwrap();
//! assert_eq!((inputs.len(), targets.len()), (512, 114));
//! assert_eq!(targets[0], 32099); // <extra_id_0>
//! assert_eq!(*inputs.last().unwrap(), 1); // EOS
//! ```

use serde::{Deserialize, Serialize};

use super::documents::append_eos_after_trim;
use super::rng::ExampleRng;
use super::spans::{
    drop_noise_tokens, drop_nonnoise_tokens, iid_noise_mask, noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel, random_prefix_noise_mask, random_spans_helper, SpanLayout,
    DEFAULT_MEAN_NOISE_SPAN_LENGTH, DEFAULT_NOISE_DENSITY,
};
use super::PreprocessError;

/// The unsupervised objectives of the T5 paper.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "name")]
pub enum Objective {
    /// Noise spans → unique sentinels (T5's default: 0.15 / 3.0).
    SpanCorruption {
        /// Fraction of noise tokens.
        noise_density: f64,
        /// Mean noise span length.
        mean_noise_span_length: f64,
    },
    /// Independent per-token noise, each noise run → a unique sentinel.
    IidDenoising {
        /// Probability that a token is noise.
        noise_density: f64,
    },
    /// A random prefix as inputs, the rest as targets.
    PrefixLm,
    /// The segment shuffled as inputs, the original as targets.
    Deshuffling,
    /// Empty inputs, the segment as targets.
    FullLm,
}

impl Default for Objective {
    fn default() -> Self {
        Objective::SpanCorruption {
            noise_density: DEFAULT_NOISE_DENSITY,
            mean_noise_span_length: DEFAULT_MEAN_NOISE_SPAN_LENGTH,
        }
    }
}

/// Turns raw token segments into `(inputs, targets)` with an [`Objective`]
/// for given feature lengths, EOS included.
#[derive(Debug, Clone)]
pub struct Denoiser {
    objective: Objective,
    inputs_length: usize,
    targets_length: usize,
    tokens_length: usize,
    vocab_size: u32,
    extra_ids: u32,
    eos_id: u32,
}

thread_local! {
    static LAYOUT: std::cell::RefCell<SpanLayout> = std::cell::RefCell::new(SpanLayout::default());
}

impl Denoiser {
    /// T5's span corruption for `inputs_length` / `targets_length` (512 / 114).
    pub fn span_corruption(
        inputs_length: usize,
        targets_length: usize,
        vocab_size: u32,
        extra_ids: u32,
    ) -> Result<Self, PreprocessError> {
        Self::new(
            Objective::default(),
            inputs_length,
            targets_length,
            vocab_size,
            extra_ids,
        )
    }

    /// A denoiser for any objective. For span corruption the raw segment
    /// length comes from `random_spans_helper`, and, as T5's
    /// `span_corruption`, it fails when `targets_length` is below what that
    /// length produces.
    pub fn new(
        objective: Objective,
        inputs_length: usize,
        targets_length: usize,
        vocab_size: u32,
        extra_ids: u32,
    ) -> Result<Self, PreprocessError> {
        if extra_ids > vocab_size {
            return Err(PreprocessError::Invalid(format!(
                "extra_ids {extra_ids} exceed vocab_size {vocab_size}"
            )));
        }
        let tokens_length = match objective {
            Objective::SpanCorruption {
                noise_density,
                mean_noise_span_length,
            } => {
                let (tokens, targets) = random_spans_helper(
                    inputs_length,
                    noise_density,
                    mean_noise_span_length,
                    1,
                    1,
                )?;
                if targets_length < targets {
                    return Err(PreprocessError::Invalid(format!(
                        "targets length {targets_length} is below the {targets} that span corruption \
                         of {inputs_length} inputs needs (random_spans_helper)"
                    )));
                }
                tokens
            }
            Objective::IidDenoising { noise_density } => {
                if !(0.0..1.0).contains(&noise_density) {
                    return Err(PreprocessError::Invalid(format!(
                        "noise_density must be in [0, 1), got {noise_density}"
                    )));
                }
                inputs_length
            }
            Objective::PrefixLm | Objective::Deshuffling => inputs_length,
            Objective::FullLm => targets_length,
        };
        Ok(Denoiser {
            objective,
            inputs_length,
            targets_length,
            tokens_length,
            vocab_size,
            extra_ids,
            eos_id: 1,
        })
    }

    /// Raw tokens per segment that this denoiser expects.
    pub fn tokens_length(&self) -> usize {
        self.tokens_length
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Denoises one segment into `inputs` and `targets` (cleared first),
    /// each ending with EOS after trimming to its feature length.
    pub fn denoise(
        &self,
        segment: &[u32],
        rng: &mut ExampleRng,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<(), PreprocessError> {
        self.corrupt(segment, rng, inputs, targets)?;
        if !matches!(self.objective, Objective::FullLm) {
            append_eos_after_trim(inputs, self.inputs_length, self.eos_id);
        }
        append_eos_after_trim(targets, self.targets_length, self.eos_id);
        Ok(())
    }

    /// The objective alone (no trimming, no EOS): `inputs` and `targets`
    /// (cleared first) as T5's objective leaves them before
    /// `append_eos_after_trim`.
    pub fn corrupt(
        &self,
        segment: &[u32],
        rng: &mut ExampleRng,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<(), PreprocessError> {
        inputs.clear();
        targets.clear();
        match self.objective {
            Objective::SpanCorruption {
                noise_density,
                mean_noise_span_length,
            } => LAYOUT.with(|l| {
                let mut layout = l.borrow_mut();
                layout.draw(segment.len(), noise_density, mean_noise_span_length, rng);
                self.apply_layout(segment, &layout.spans, inputs, targets)
            })?,
            Objective::IidDenoising { noise_density } => {
                let mask = iid_noise_mask(segment.len(), noise_density, rng);
                noise_span_to_unique_sentinel(
                    segment,
                    &mask,
                    self.vocab_size,
                    self.extra_ids,
                    inputs,
                )?;
                nonnoise_span_to_unique_sentinel(
                    segment,
                    &mask,
                    self.vocab_size,
                    self.extra_ids,
                    targets,
                )?;
            }
            Objective::PrefixLm => {
                let mask = random_prefix_noise_mask(segment.len(), 0.5, rng);
                drop_noise_tokens(segment, &mask, inputs);
                drop_nonnoise_tokens(segment, &mask, targets);
            }
            Objective::Deshuffling => {
                inputs.extend_from_slice(segment);
                rng.shuffle(inputs);
                targets.extend_from_slice(segment);
            }
            Objective::FullLm => targets.extend_from_slice(segment),
        }
        Ok(())
    }

    /// Span corruption without building a mask: walks the alternating runs
    /// (cut to the segment's length, empty runs merged away) and writes the
    /// sentinels of both sides at once — the same as
    /// `noise_span_to_unique_sentinel` / `nonnoise_span_to_unique_sentinel`
    /// on the mask.
    fn apply_layout(
        &self,
        segment: &[u32],
        spans: &[usize],
        inputs: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<(), PreprocessError> {
        let mut pos = 0usize;
        let mut prev: Option<bool> = None;
        let (mut k_in, mut k_tgt) = (0u32, 0u32);
        for (i, &len) in spans.iter().enumerate() {
            let len = len.min(segment.len() - pos);
            if len == 0 {
                continue;
            }
            let noise = i % 2 == 1;
            let run = &segment[pos..pos + len];
            if noise {
                if prev != Some(true) {
                    k_in += 1;
                    if k_in > self.extra_ids {
                        return Err(PreprocessError::TooManySpans {
                            extra_ids: self.extra_ids,
                        });
                    }
                    inputs.push(self.vocab_size - k_in);
                }
                targets.extend_from_slice(run);
            } else {
                if prev != Some(false) {
                    k_tgt += 1;
                    if k_tgt > self.extra_ids {
                        return Err(PreprocessError::TooManySpans {
                            extra_ids: self.extra_ids,
                        });
                    }
                    targets.push(self.vocab_size - k_tgt);
                }
                inputs.extend_from_slice(run);
            }
            prev = Some(noise);
            pos += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocessors::spans::random_spans_noise_mask;

    /// The mask-free path equals the token functions applied to the mask.
    #[test]
    fn layout_path_equals_mask_path() {
        let d = Denoiser::span_corruption(512, 114, 32100, 100).unwrap();
        for (len, seed) in [(568usize, 1u64), (1, 2), (2, 3), (7, 4), (100, 5), (300, 6)] {
            let seg: Vec<u32> = (0..len as u32).map(|i| 100 + i).collect();
            let (mut a_in, mut a_tg) = (Vec::new(), Vec::new());
            d.denoise(&seg, &mut ExampleRng::from_u64(seed), &mut a_in, &mut a_tg)
                .unwrap();
            let mask =
                random_spans_noise_mask(len, 0.15, 3.0, false, &mut ExampleRng::from_u64(seed));
            let (mut b_in, mut b_tg) = (Vec::new(), Vec::new());
            noise_span_to_unique_sentinel(&seg, &mask, 32100, 100, &mut b_in).unwrap();
            nonnoise_span_to_unique_sentinel(&seg, &mask, 32100, 100, &mut b_tg).unwrap();
            append_eos_after_trim(&mut b_in, 512, 1);
            append_eos_after_trim(&mut b_tg, 114, 1);
            assert_eq!((a_in, a_tg), (b_in, b_tg), "length {len}");
        }
    }

    #[test]
    fn targets_too_short_is_an_error() {
        assert!(Denoiser::span_corruption(512, 113, 32100, 100).is_err());
        assert!(Denoiser::span_corruption(512, 114, 32100, 100).is_ok());
    }

    #[test]
    fn other_objectives_shapes() {
        let seg: Vec<u32> = (10..30).collect();
        let mut r = ExampleRng::from_u64(9);
        let (mut i, mut t) = (Vec::new(), Vec::new());
        let d = Denoiser::new(Objective::PrefixLm, 20, 20, 32100, 100).unwrap();
        d.denoise(&seg, &mut r, &mut i, &mut t).unwrap();
        let mut joined = i[..i.len() - 1].to_vec();
        joined.extend_from_slice(&t[..t.len() - 1]);
        assert_eq!(joined, seg, "prefix + rest = segment");
        let d = Denoiser::new(Objective::Deshuffling, 32, 32, 32100, 100).unwrap();
        d.denoise(&seg, &mut r, &mut i, &mut t).unwrap();
        let mut sorted = i[..20].to_vec();
        sorted.sort();
        assert_eq!(sorted, seg);
        assert_eq!(&t[..20], &seg[..]);
        let d = Denoiser::new(Objective::FullLm, 0, 32, 32100, 100).unwrap();
        d.denoise(&seg, &mut r, &mut i, &mut t).unwrap();
        assert!(i.is_empty());
        assert_eq!(t.len(), 21);
        let d = Denoiser::new(
            Objective::IidDenoising {
                noise_density: 0.15,
            },
            32,
            32,
            32100,
            100,
        )
        .unwrap();
        d.denoise(&seg, &mut r, &mut i, &mut t).unwrap();
        assert_eq!(*i.last().unwrap(), 1);
    }
}

/// `(inputs, targets)` of one example.
type Example = (Vec<u32>, Vec<u32>);

/// The whole unsupervised pipeline of one source shard:
/// `select_random_chunk` → `reduce_concat_tokens` → `split_tokens` →
/// denoise → `append_eos_after_trim`.
///
/// Document `i` draws its chunk from `(seed, task, shard, i)` and example `j`
/// its noise from `(seed, task, shard, j)`, so the output depends on the
/// shard's contents only; each group of documents is denoised in parallel.
#[derive(Debug, Clone)]
pub struct ShardCorruptor<'a> {
    /// The objective with its lengths.
    pub denoiser: &'a Denoiser,
    /// The user's seed.
    pub seed: u64,
    /// Task name (part of every example's random key).
    pub task: &'a str,
    /// Source shard index.
    pub shard: u64,
    /// Documents concatenated together (T5: 128).
    pub docs_per_group: usize,
    /// Put EOS after every document (HF/nanoT5) instead of T5's no separator.
    pub eos_between_docs: bool,
    /// `select_random_chunk` maximum (T5: 65536).
    pub max_chunk: usize,
    /// End each feature with EOS after trimming (off when the caller runs
    /// `append_eos_after_trim` itself).
    pub append_eos: bool,
}

impl<'a> ShardCorruptor<'a> {
    /// T5's settings for `denoiser` on shard `shard` of `task`.
    pub fn new(denoiser: &'a Denoiser, seed: u64, task: &'a str, shard: u64) -> Self {
        ShardCorruptor {
            denoiser,
            seed,
            task,
            shard,
            docs_per_group: super::DEFAULT_DOCS_PER_GROUP,
            eos_between_docs: false,
            max_chunk: super::DEFAULT_MAX_CHUNK,
            append_eos: true,
        }
    }

    /// Runs over the shard's tokenized documents, calling `emit(inputs,
    /// targets)` for each example in order.
    pub fn run<'d, I>(
        &self,
        docs: I,
        mut emit: impl FnMut(&[u32], &[u32]),
    ) -> Result<u64, PreprocessError>
    where
        I: IntoIterator<Item = &'d [u32]>,
    {
        use rayon::prelude::*;
        let key = |index: u64| super::ExampleKey {
            seed: self.seed,
            task: self.task,
            shard: self.shard,
            index,
        };
        let mut splitter = super::ConcatSplitter::new(
            self.denoiser.tokens_length(),
            self.docs_per_group,
            self.eos_between_docs,
            self.denoiser.eos_id,
        );
        let mut segments: Vec<Vec<u32>> = Vec::new();
        let mut next_example = 0u64;
        let mut denoise_all = |segments: &mut Vec<Vec<u32>>,
                               emit: &mut dyn FnMut(&[u32], &[u32])|
         -> Result<(), PreprocessError> {
            let base = next_example;
            let out: Vec<Result<Example, PreprocessError>> = segments
                .par_iter()
                .enumerate()
                .map(|(j, seg)| {
                    let mut rng = ExampleRng::new(key(base + j as u64), "denoise");
                    let (mut i, mut t) = (Vec::new(), Vec::new());
                    if self.append_eos {
                        self.denoiser.denoise(seg, &mut rng, &mut i, &mut t)?;
                    } else {
                        self.denoiser.corrupt(seg, &mut rng, &mut i, &mut t)?;
                    }
                    Ok((i, t))
                })
                .collect();
            next_example += segments.len() as u64;
            segments.clear();
            for r in out {
                let (i, t) = r?;
                emit(&i, &t);
            }
            Ok(())
        };
        let mut group_docs = 0;
        for (d, doc) in docs.into_iter().enumerate() {
            let mut rng = ExampleRng::new(key(d as u64), "chunk");
            let Some(chunk) = super::select_random_chunk(doc, self.max_chunk, &mut rng) else {
                continue;
            };
            splitter.push(chunk, &mut |s: &[u32]| segments.push(s.to_vec()));
            group_docs += 1;
            if group_docs == self.docs_per_group {
                group_docs = 0;
                denoise_all(&mut segments, &mut emit)?;
            }
        }
        splitter.flush(&mut |s: &[u32]| segments.push(s.to_vec()));
        denoise_all(&mut segments, &mut emit)?;
        Ok(next_example)
    }
}
