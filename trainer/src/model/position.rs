//! T5's relative position buckets (`_relative_position_bucket`).

#[allow(unused_imports)]
use super::*;

/// HF's `_relative_position_bucket` (t5x's `_relative_position_bucket`):
/// the bucket of `relative = key − query`.
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        num_buckets /= 2;
        if relative > 0 {
            bucket += num_buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = num_buckets / 2;
    if n < max_exact {
        return (bucket + n) as usize;
    }
    // float32 log, as the reference computes it
    let v = ((n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln()
        * (num_buckets - max_exact) as f32) as i64;
    let large = (max_exact + v).min(num_buckets - 1);
    (bucket + large) as usize
}

/// Builds the `[len_q × len_k]` bucket matrix (queries start at `q0`).
pub(super) fn bucket_matrix(
    cfg: &T5Config,
    q0: usize,
    len_q: usize,
    len_k: usize,
    bidi: bool,
) -> Vec<usize> {
    let mut v = Vec::with_capacity(len_q * len_k);
    for i in 0..len_q {
        for j in 0..len_k {
            v.push(relative_position_bucket(
                j as i64 - (q0 + i) as i64,
                bidi,
                cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance,
            ));
        }
    }
    v
}
