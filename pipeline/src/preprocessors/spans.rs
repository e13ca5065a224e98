//! Noise masks and the token functions of T5's denoising objectives
//! (`t5.data.preprocessors`).
//!
//! Masks are `&[bool]` (true = noise). Token functions read `&[u32]` and
//! append to a caller's buffer, so a hot loop reuses its allocations.

use super::rng::ExampleRng;
use super::PreprocessError;

/// T5's default noise density for span corruption (`t5.data.preprocessors.span_corruption`).
pub const DEFAULT_NOISE_DENSITY: f64 = 0.15;
/// T5's default mean noise span length (`t5.data.preprocessors.span_corruption`).
pub const DEFAULT_MEAN_NOISE_SPAN_LENGTH: f64 = 3.0;

/// TF's `tf.round` (half to even) in float32, as the mask code computes it.
#[inline]
fn round_f32(x: f32) -> f32 {
    x.round_ties_even()
}

/// `random_spans_helper`: the raw token length that, after span
/// corruption with this density and mean span length, gives inputs of exactly
/// `inputs_length` (EOS included), and the resulting targets length.
///
/// ```
/// use t5mix_pipeline::preprocessors::random_spans_helper;
/// assert_eq!(random_spans_helper(512, 0.15, 3.0, 1, 1).unwrap(), (568, 114));
/// assert_eq!(random_spans_helper(128, 0.15, 3.0, 1, 1).unwrap(), (141, 29));
/// assert_eq!(random_spans_helper(512, 0.5, 3.0, 1, 1).unwrap(), (766, 512));
/// ```
pub fn random_spans_helper(
    inputs_length: usize,
    noise_density: f64,
    mean_noise_span_length: f64,
    extra_tokens_per_span_inputs: usize,
    extra_tokens_per_span_targets: usize,
) -> Result<(usize, usize), PreprocessError> {
    if !(noise_density > 0.0 && noise_density < 1.0) {
        return Err(PreprocessError::Invalid(format!(
            "noise_density must be in (0, 1), got {noise_density}"
        )));
    }
    if !(mean_noise_span_length >= 1.0 && mean_noise_span_length.is_finite()) {
        return Err(PreprocessError::Invalid(format!(
            "mean_noise_span_length must be >= 1, got {mean_noise_span_length}"
        )));
    }
    if inputs_length < 2 {
        return Err(PreprocessError::Invalid(format!(
            "inputs_length must be >= 2, got {inputs_length}"
        )));
    }
    // Python floats: f64, `round` half to even.
    let lengths = |tokens_length: usize| {
        let noise = (tokens_length as f64 * noise_density).round_ties_even() as usize;
        let nonnoise = tokens_length - noise;
        let spans = (noise as f64 / mean_noise_span_length).round_ties_even() as usize;
        (
            nonnoise + spans * extra_tokens_per_span_inputs + 1,
            noise + spans * extra_tokens_per_span_targets + 1,
        )
    };
    let mut tokens_length = inputs_length - 1;
    while lengths(tokens_length + 1).0 <= inputs_length {
        tokens_length += 1;
    }
    let (_, mut targets_length) = lengths(tokens_length);
    // T5's "minor hack" so that targets equal a round inputs length.
    if noise_density == 0.5 && targets_length > inputs_length {
        tokens_length -= 1;
        targets_length -= 1;
    }
    Ok((tokens_length, targets_length))
}

/// The counts `random_spans_noise_mask` derives from the length:
/// `(num_noise_tokens, num_noise_spans)` for a (guarded) length.
pub fn noise_span_counts(
    length: usize,
    noise_density: f64,
    mean_noise_span_length: f64,
) -> (usize, usize) {
    let length = length.max(2);
    let noise = round_f32(length as f32 * noise_density as f32) as usize;
    let noise = noise.clamp(1, length - 1);
    let spans = (round_f32(noise as f32 / mean_noise_span_length as f32) as usize).max(1);
    (noise, spans)
}

/// Appends a uniformly random composition of `num_items` into `num_segments`
/// positive parts (`_random_segmentation`).
fn random_segmentation(
    num_items: usize,
    num_segments: usize,
    rng: &mut ExampleRng,
    cuts: &mut Vec<usize>,
    out: &mut Vec<usize>,
) {
    if num_segments > num_items {
        // TF's indicator vector is then all ones: the first num_items
        // segments hold one item each and the rest are empty.
        out.extend(std::iter::repeat_n(1, num_items));
        out.extend(std::iter::repeat_n(0, num_segments - num_items));
        return;
    }
    // Choose num_segments-1 of the num_items-1 gaps between items.
    rng.sorted_sample(num_items - 1, num_segments - 1, cuts);
    let mut prev = 0;
    for &c in cuts.iter() {
        out.push(c + 1 - prev);
        prev = c + 1;
    }
    out.push(num_items - prev);
}

/// Span lengths of a `random_spans_noise_mask`: alternating non-noise and
/// noise runs, starting with non-noise and ending with noise, before the cut
/// back to the real length. Reuses `spans`' allocation.
#[derive(Debug, Default, Clone)]
pub struct SpanLayout {
    /// `[nonnoise_1, noise_1, nonnoise_2, noise_2, …]`.
    pub spans: Vec<usize>,
    cuts: Vec<usize>,
    scratch: Vec<usize>,
}

impl SpanLayout {
    /// Draws the layout for `length` tokens (the steps of `random_spans_noise_mask`).
    pub fn draw(
        &mut self,
        length: usize,
        noise_density: f64,
        mean_noise_span_length: f64,
        rng: &mut ExampleRng,
    ) {
        self.spans.clear();
        if noise_density == 0.0 {
            self.spans.push(length);
            return;
        }
        let guarded = length.max(2);
        let (noise, num_spans) = noise_span_counts(length, noise_density, mean_noise_span_length);
        let nonnoise = guarded - noise;
        self.scratch.clear();
        random_segmentation(noise, num_spans, rng, &mut self.cuts, &mut self.scratch);
        let noise_lengths = std::mem::take(&mut self.scratch);
        let mut nonnoise_lengths = Vec::with_capacity(num_spans);
        random_segmentation(
            nonnoise,
            num_spans,
            rng,
            &mut self.cuts,
            &mut nonnoise_lengths,
        );
        for (a, b) in nonnoise_lengths.iter().zip(&noise_lengths) {
            self.spans.push(*a);
            self.spans.push(*b);
        }
        self.scratch = noise_lengths;
    }
}

/// `random_spans_noise_mask(length, noise_density, mean_noise_span_length)`
/// `round(length·d)` noise tokens (float32, half to even, clamped
/// to `[1, length-1]` after `length = max(length, 2)`) in
/// `max(1, round(noise/μ))` spans, span lengths uniformly random
/// compositions, non-noise first, ending in noise, cut to `length`.
/// `random_roll` rotates the mask by a uniform offset.
pub fn random_spans_noise_mask(
    length: usize,
    noise_density: f64,
    mean_noise_span_length: f64,
    random_roll: bool,
    rng: &mut ExampleRng,
) -> Vec<bool> {
    let mut layout = SpanLayout::default();
    layout.draw(length, noise_density, mean_noise_span_length, rng);
    let mut mask = Vec::with_capacity(length.max(2));
    for (i, &n) in layout.spans.iter().enumerate() {
        mask.extend(std::iter::repeat_n(i % 2 == 1, n));
    }
    if random_roll {
        let offset = rng.below(mask.len() as u64) as usize;
        mask.rotate_right(offset);
    }
    mask.truncate(length);
    mask
}

/// `random_prefix_noise_mask`: everything after a random split is noise (the
/// prefix-LM objective). The split is uniform in `[1, length-1]` around the
/// density (T5: `noise_density` 0.5 means a uniform split).
pub fn random_prefix_noise_mask(
    length: usize,
    noise_density: f64,
    rng: &mut ExampleRng,
) -> Vec<bool> {
    if length < 2 {
        return vec![false; length];
    }
    let max_input = ((2.0 - 2.0 * noise_density) * length as f64).round() as usize;
    let max_input = max_input.clamp(1, length - 1);
    let num_nonnoise = 1 + rng.below(max_input as u64) as usize;
    let num_nonnoise = num_nonnoise.min(length - 1);
    (0..length).map(|i| i >= num_nonnoise).collect()
}

/// `iid_noise_mask`: each token is noise with probability `noise_density`.
pub fn iid_noise_mask(length: usize, noise_density: f64, rng: &mut ExampleRng) -> Vec<bool> {
    (0..length)
        .map(|_| rng.unit_f64() < noise_density)
        .collect()
}

/// `noise_span_to_unique_sentinel`: each noise run becomes one
/// sentinel, `vocab_size - k` for the k-th run (k from 1); other tokens stay.
/// Fails if there are more runs than `extra_ids` sentinels.
pub fn noise_span_to_unique_sentinel(
    tokens: &[u32],
    noise_mask: &[bool],
    vocab_size: u32,
    extra_ids: u32,
    out: &mut Vec<u32>,
) -> Result<(), PreprocessError> {
    let mut k = 0u32;
    let mut prev_noise = false;
    for (&t, &noise) in tokens.iter().zip(noise_mask) {
        if noise {
            if !prev_noise {
                k += 1;
                if k > extra_ids {
                    return Err(PreprocessError::TooManySpans { extra_ids });
                }
                out.push(vocab_size - k);
            }
        } else {
            out.push(t);
        }
        prev_noise = noise;
    }
    Ok(())
}

/// `nonnoise_span_to_unique_sentinel`: the same with the mask negated.
pub fn nonnoise_span_to_unique_sentinel(
    tokens: &[u32],
    noise_mask: &[bool],
    vocab_size: u32,
    extra_ids: u32,
    out: &mut Vec<u32>,
) -> Result<(), PreprocessError> {
    let neg: Vec<bool> = noise_mask.iter().map(|m| !m).collect();
    noise_span_to_unique_sentinel(tokens, &neg, vocab_size, extra_ids, out)
}

/// `noise_token_to_sentinel`: every noise token becomes the sentinel
/// `vocab_size - 1`.
pub fn noise_token_to_sentinel(
    tokens: &[u32],
    noise_mask: &[bool],
    vocab_size: u32,
    out: &mut Vec<u32>,
) {
    out.extend(
        tokens
            .iter()
            .zip(noise_mask)
            .map(|(&t, &n)| if n { vocab_size - 1 } else { t }),
    );
}

/// `noise_span_to_sentinel`: each noise run becomes the single sentinel
/// `vocab_size - 1`.
pub fn noise_span_to_sentinel(
    tokens: &[u32],
    noise_mask: &[bool],
    vocab_size: u32,
    out: &mut Vec<u32>,
) {
    let mut prev = false;
    for (&t, &n) in tokens.iter().zip(noise_mask) {
        if !n {
            out.push(t);
        } else if !prev {
            out.push(vocab_size - 1);
        }
        prev = n;
    }
}

/// `drop_noise_tokens`: keeps the non-noise tokens.
pub fn drop_noise_tokens(tokens: &[u32], noise_mask: &[bool], out: &mut Vec<u32>) {
    out.extend(
        tokens
            .iter()
            .zip(noise_mask)
            .filter(|(_, &n)| !n)
            .map(|(&t, _)| t),
    );
}

/// `drop_nonnoise_tokens`: keeps the noise tokens.
pub fn drop_nonnoise_tokens(tokens: &[u32], noise_mask: &[bool], out: &mut Vec<u32>) {
    out.extend(
        tokens
            .iter()
            .zip(noise_mask)
            .filter(|(_, &n)| n)
            .map(|(&t, _)| t),
    );
}

/// `permute_noise_tokens`: the noise tokens are shuffled among the noise
/// positions; the rest stay.
pub fn permute_noise_tokens(
    tokens: &[u32],
    noise_mask: &[bool],
    rng: &mut ExampleRng,
    out: &mut Vec<u32>,
) {
    let mut noise: Vec<u32> = tokens
        .iter()
        .zip(noise_mask)
        .filter(|(_, &n)| n)
        .map(|(&t, _)| t)
        .collect();
    rng.shuffle(&mut noise);
    let mut it = noise.into_iter();
    out.extend(
        tokens
            .iter()
            .zip(noise_mask)
            .map(|(&t, &n)| if n { it.next().unwrap() } else { t }),
    );
}

/// `noise_token_to_random_token`: every noise token becomes a uniform id in
/// `[num_reserved_tokens, vocab_size)` (T5: 3 reserved: pad, eos, unk).
pub fn noise_token_to_random_token(
    tokens: &[u32],
    noise_mask: &[bool],
    vocab_size: u32,
    num_reserved_tokens: u32,
    rng: &mut ExampleRng,
    out: &mut Vec<u32>,
) {
    let range = (vocab_size - num_reserved_tokens) as u64;
    out.extend(tokens.iter().zip(noise_mask).map(|(&t, &n)| {
        if n {
            num_reserved_tokens + rng.below(range) as u32
        } else {
            t
        }
    }));
}

/// `noise_token_to_random_token_or_sentinel`: each noise token becomes a
/// random token with probability `random_prob` (T5: 0.1), else the sentinel.
pub fn noise_token_to_random_token_or_sentinel(
    tokens: &[u32],
    noise_mask: &[bool],
    vocab_size: u32,
    num_reserved_tokens: u32,
    random_prob: f64,
    rng: &mut ExampleRng,
    out: &mut Vec<u32>,
) {
    let range = (vocab_size - num_reserved_tokens) as u64;
    out.extend(tokens.iter().zip(noise_mask).map(|(&t, &n)| {
        if !n {
            t
        } else if rng.unit_f64() < random_prob {
            num_reserved_tokens + rng.below(range) as u32
        } else {
            vocab_size - 1
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_b5_worked_example() {
        let toks: Vec<u32> = (100..108).collect();
        let mask = [false, false, true, true, false, false, false, true];
        let mut inp = Vec::new();
        let mut tgt = Vec::new();
        noise_span_to_unique_sentinel(&toks, &mask, 32100, 100, &mut inp).unwrap();
        nonnoise_span_to_unique_sentinel(&toks, &mask, 32100, 100, &mut tgt).unwrap();
        assert_eq!(inp, vec![100, 101, 32099, 104, 105, 106, 32098]);
        assert_eq!(tgt, vec![32099, 102, 103, 32098, 107]);
    }

    #[test]
    fn too_many_spans_is_an_error() {
        let toks = [5u32; 6];
        let mask = [true, false, true, false, true, false];
        let mut out = Vec::new();
        assert!(noise_span_to_unique_sentinel(&toks, &mask, 32100, 2, &mut out).is_err());
    }

    #[test]
    fn t5_counts_for_568() {
        assert_eq!(noise_span_counts(568, 0.15, 3.0), (85, 28));
        // float32 rounding: 10 * 0.15f32 = 1.5000001 -> 2 (f64 would give 1).
        assert_eq!(noise_span_counts(10, 0.15, 3.0).0, 2);
    }
}
