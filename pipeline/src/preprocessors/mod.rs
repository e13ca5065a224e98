//! Token preprocessors: T5's span corruption and the other unsupervised
//! objectives, document chunking and concatenation, EOS handling, and the
//! deterministic per-example random streams they draw from (`t5.data.preprocessors`).
//!
//! Everything works on `&[u32]` token slices and appends into caller-owned
//! buffers, so a hot loop allocates nothing per token.

mod documents;
mod objectives;
mod rng;
mod spans;

pub use documents::{
    append_eos_after_trim, select_random_chunk, ConcatSplitter, DEFAULT_DOCS_PER_GROUP,
    DEFAULT_MAX_CHUNK,
};
pub use objectives::{Denoiser, Objective, ShardCorruptor};
pub use rng::{ExampleKey, ExampleRng};
pub use spans::{
    drop_noise_tokens, drop_nonnoise_tokens, iid_noise_mask, noise_span_counts,
    noise_span_to_sentinel, noise_span_to_unique_sentinel, noise_token_to_random_token,
    noise_token_to_random_token_or_sentinel, noise_token_to_sentinel,
    nonnoise_span_to_unique_sentinel, permute_noise_tokens, random_prefix_noise_mask,
    random_spans_helper, random_spans_noise_mask, SpanLayout, DEFAULT_MEAN_NOISE_SPAN_LENGTH,
    DEFAULT_NOISE_DENSITY,
};

/// Errors of the token preprocessors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    /// A parameter out of range (T5 raises here too).
    #[error("invalid preprocessor parameter: {0}")]
    Invalid(String),
    /// More spans than sentinel ids: T5 would silently run into ordinary ids.
    #[error("more noise spans than the {extra_ids} sentinel ids")]
    TooManySpans {
        /// Number of sentinels available.
        extra_ids: u32,
    },
    /// A feature longer than its length with the length check on.
    #[error("feature '{feature}' has length {length}, more than the expected {max}")]
    TooLong {
        /// `inputs` or `targets`.
        feature: &'static str,
        /// Its length.
        length: usize,
        /// The task feature length.
        max: usize,
    },
}
