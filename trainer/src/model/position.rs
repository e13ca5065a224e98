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

/// Builds the `[len_q × len_k]` bucket matrix (queries start at `q0`):
/// each distance's bucket once, then the matrix from that table.
pub(super) fn bucket_matrix(
    cfg: &T5Config,
    q0: usize,
    len_q: usize,
    len_k: usize,
    bidi: bool,
) -> Vec<usize> {
    // relative = j − (q0 + i) runs from −(q0 + len_q − 1) to len_k − 1
    let lowest = -((q0 + len_q) as i64 - 1);
    let table: Vec<usize> = (lowest..len_k as i64)
        .map(|rel| {
            relative_position_bucket(
                rel,
                bidi,
                cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance,
            )
        })
        .collect();
    let mut v = Vec::with_capacity(len_q * len_k);
    for i in 0..len_q {
        // relative of (i, 0) − lowest
        let start = len_q - 1 - i;
        v.extend_from_slice(&table[start..start + len_k]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix from the distance table is the bucket of every pair.
    #[test]
    fn the_bucket_matrix_is_each_pairs_bucket() {
        let mut cfg = T5Config::named("micro").expect("a named config");
        for (buckets, max) in [(32, 128), (8, 20)] {
            cfg.relative_attention_num_buckets = buckets;
            cfg.relative_attention_max_distance = max;
            for (q0, len_q, len_k, bidi) in [
                (0, 300, 300, true),
                (0, 37, 300, true),
                (0, 114, 114, false),
                (7, 1, 8, false),
                (0, 1, 1, true),
            ] {
                let m = bucket_matrix(&cfg, q0, len_q, len_k, bidi);
                assert_eq!(m.len(), len_q * len_k);
                for i in 0..len_q {
                    for j in 0..len_k {
                        let want = relative_position_bucket(
                            j as i64 - (q0 + i) as i64,
                            bidi,
                            buckets,
                            max,
                        );
                        assert_eq!(
                            m[i * len_k + j],
                            want,
                            "{q0} {len_q} {len_k} {bidi} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}
