//! Vectorised element-wise helpers: `exp`, `tanh` and GELU without libm, lane
//! reductions, and the loops compiled per SIMD level (picked at run time).

#[allow(unused_imports)]
use super::*;

/// `e^x` without a libm call, so that loops over it vectorise: `x = k·ln 2
/// + r` with `|r| ≤ ln 2 / 2`, `e^r` by its degree-6 Taylor polynomial
/// (truncation < 1.3e-7 relative), `2^k` from the exponent bits. Within
/// 3 ulp of `f32::exp` on `[-87.3, 88.3]` (tested); inputs are clamped to
/// that range, so e.g. `exp_fast(-200.0)` is 1.2e-38 rather than 0.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // round to nearest by the 1.5·2^23 trick (no libm `roundf`)
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.376_26);
    let t = x * LOG2E + SHIFT;
    let k = t - SHIFT;
    // k as an integer from the low mantissa bits of t (no float → int cast)
    let ki = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

/// The element-wise loops of the fused kernels, compiled for each SIMD
/// level (AVX-512, AVX2 + FMA, …) and picked at run time: the default
/// x86-64 target has only SSE2 (a `-C target-cpu=native` build of the tiny
/// step was 7% faster on one thread). No value depends on the level: the
/// loops are the same IEEE operations in the same order, only wider.
pub(crate) mod simd {
    use super::{exp_fast, gelu_and_grad, lane_dot, lane_sum, row_max, sum_exp, LANES};

    simd_fns! {
        /// `o = gelu_new(x) · y`.
        pub(crate) fn gelu_gate(o: &mut [f32], x: &[f32], y: &[f32]) {
            let n = o.len();
            let (x, y) = (&x[..n], &y[..n]);
            for i in 0..n {
                o[i] = gelu_and_grad(x[i]).0 * y[i];
            }
        }

        /// `d += g · gelu_new'(x) · y`.
        pub(crate) fn gelu_gate_grad_a(d: &mut [f32], x: &[f32], y: &[f32], g: &[f32]) {
            let n = d.len();
            let (x, y, g) = (&x[..n], &y[..n], &g[..n]);
            for i in 0..n {
                d[i] += g[i] * gelu_and_grad(x[i]).1 * y[i];
            }
        }

        /// `d += g · gelu_new(x)`.
        pub(crate) fn gelu_gate_grad_b(d: &mut [f32], x: &[f32], g: &[f32]) {
            let n = d.len();
            let (x, g) = (&x[..n], &g[..n]);
            for i in 0..n {
                d[i] += g[i] * gelu_and_grad(x[i]).0;
            }
        }

        /// The gated activation's backward, assigned: from `g` (the
        /// gradient of `gelu_new(a) · b`), `g ← g · gelu_new'(a) · b`
        /// and `gb = g · gelu_new(a)`.
        pub(crate) fn gelu_gate_grads(g: &mut [f32], gb: &mut [f32], a: &[f32], b: &[f32]) {
            let n = g.len();
            let (gb, a, b) = (&mut gb[..n], &a[..n], &b[..n]);
            for i in 0..n {
                let (v, dv) = gelu_and_grad(a[i]);
                gb[i] = g[i] * v;
                g[i] = g[i] * dv * b[i];
            }
        }

        /// ReLU's backward from its output `h`, in place: `g` where `h > 0`.
        pub(crate) fn relu_grad(g: &mut [f32], h: &[f32]) {
            let h = &h[..g.len()];
            for i in 0..g.len() {
                g[i] = if h[i] > 0.0 { g[i] } else { 0.0 };
            }
        }

        /// RMS norm of rows of `w.len()` values: `o = x · inv · w`, `inv` per row.
        pub(crate) fn norm_rows(o: &mut [f32], x: &[f32], inv: &mut [f32], w: &[f32], eps: f32) {
            let d = w.len();
            for ((o, x), i) in o.chunks_mut(d).zip(x.chunks(d)).zip(inv.iter_mut()) {
                let ms = lane_dot(x, x) / d as f32;
                *i = 1.0 / (ms + eps).sqrt();
                for j in 0..d {
                    o[j] = x[j] * *i * w[j];
                }
            }
        }

        /// The norm's backward over rows: `dx = i·w·g − x·i³/d·Σₖ gₖwₖxₖ` added,
        /// and the weight gradient's `Σ g·x·i` added to `gw`.
        pub(crate) fn norm_rows_grad(
            dx: &mut [f32],
            x: &[f32],
            g: &[f32],
            inv: &[f32],
            w: &[f32],
            gw: &mut [f32],
        ) {
            let d = w.len();
            for (((dx, x), g), &i) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)).zip(inv) {
                // Σ g·w·x in lanes, as `lane_dot`
                let mut acc = [0f32; LANES];
                let lanes = g
                    .chunks_exact(LANES)
                    .zip(x.chunks_exact(LANES))
                    .zip(w.chunks_exact(LANES))
                    .zip(gw.chunks_exact_mut(LANES));
                for (((g, x), w), gw) in lanes {
                    for l in 0..LANES {
                        acc[l] += g[l] * w[l] * x[l];
                        gw[l] += g[l] * x[l] * i;
                    }
                }
                let mut dot: f32 = acc.iter().sum();
                for j in d - d % LANES..d {
                    dot += g[j] * w[j] * x[j];
                    gw[j] += g[j] * x[j] * i;
                }
                let c = dot * i * i * i / d as f32;
                for j in 0..d {
                    dx[j] += i * w[j] * g[j] - x[j] * c;
                }
            }
        }

        /// Softmax of each row of `s` values, in place.
        pub(crate) fn softmax_rows(p: &mut [f32], s: usize) {
            for row in p.chunks_mut(s) {
                let m = row_max(row);
                row.iter_mut().for_each(|x| *x = exp_fast(*x - m));
                let inv = 1.0 / lane_sum(row);
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }

        /// Softmax backward over rows: `p ← p ⊙ (dp − rowsum(dp ⊙ p))`.
        pub(crate) fn softmax_grad_rows(p: &mut [f32], dp: &[f32], s: usize) {
            for (drow, prow) in dp.chunks(s).zip(p.chunks_mut(s)) {
                let dot = lane_dot(drow, prow);
                for j in 0..s {
                    prow[j] *= drow[j] - dot;
                }
            }
        }

        /// A row's max and `Σ exp(x − max)` (in f64).
        pub(crate) fn max_and_sum_exp(row: &[f32]) -> (f32, f64) {
            let m = row_max(row);
            (m, sum_exp(row, m))
        }

        /// `d += scale · e^(x − lse) − shift`.
        pub(crate) fn add_loss_grad(d: &mut [f32], x: &[f32], scale: f32, shift: f32, lse: f32) {
            let x = &x[..d.len()];
            for j in 0..d.len() {
                d[j] += scale * exp_fast(x[j] - lse) - shift;
            }
        }

        /// `x ← scale · e^(x − lse) − shift`.
        pub(crate) fn loss_grad_in_place(x: &mut [f32], scale: f32, shift: f32, lse: f32) {
            for v in x.iter_mut() {
                *v = scale * exp_fast(*v - lse) - shift;
            }
        }
    }
}

/// Lanes of the vectorised reductions below.
pub(crate) const LANES: usize = 16;

/// `max(x)` (`-inf` for an empty slice) in independent lanes, so that it
/// vectorises (a plain fold is a serial chain).
#[inline(always)]
pub(super) fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(tail, |a, &b| a.max(b))
}

/// `Σ x` in f32 lanes.
#[inline(always)]
pub(super) fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ a·b` in f32 lanes (a plain `sum` of products is one serial chain of
/// additions: ~4 cycles per element).
#[inline(always)]
pub(super) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ exp(x − m)` with the exponentials in f32 lanes and the sum in f64.
#[inline(always)]
pub(super) fn sum_exp(x: &[f32], m: f32) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += exp_fast(c[l] - m) as f64;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&a| exp_fast(a - m) as f64)
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// `tanh` from one `exp`: accurate to a few ulp, much faster than libm's `tanhf`.
#[inline(always)]
pub(super) fn tanh_fast(x: f32) -> f32 {
    // tanh(±9) rounds to ±1 in f32: clamping (no branch) keeps e finite
    let x = x.clamp(-9.0, 9.0);
    let e = exp_fast(2.0 * x);
    (e - 1.0) / (e + 1.0)
}

pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
pub(crate) const GELU_C: f32 = 0.044715;

/// HF's `gelu_new` and its derivative.
#[inline(always)]
pub(super) fn gelu_and_grad(x: f32) -> (f32, f32) {
    let inner = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let t = tanh_fast(inner);
    let y = 0.5 * x * (1.0 + t);
    let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner;
    (y, dy)
}

#[cfg(test)]
mod simd_tests {
    use super::{exp_fast, gelu_and_grad, lane_dot, lane_sum, row_max, simd, sum_exp};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 0.0071)
            .collect()
    }

    /// The loops picked at run time (AVX-512 or AVX2 where the CPU has them)
    /// give exactly the values of the same loops compiled for baseline x86-64.
    #[test]
    fn simd_levels_give_the_baseline_values() {
        let n = 1000;
        let (x, y, g) = (values(n, 1), values(n, 2), values(n, 3));
        let mut o = vec![0f32; n];
        simd::gelu_gate(&mut o, &x, &y);
        let want: Vec<f32> = (0..n).map(|i| gelu_and_grad(x[i]).0 * y[i]).collect();
        assert_eq!(o, want);
        let mut d = g.clone();
        simd::gelu_gate_grad_a(&mut d, &x, &y, &g);
        let want: Vec<f32> = (0..n)
            .map(|i| g[i] + g[i] * gelu_and_grad(x[i]).1 * y[i])
            .collect();
        assert_eq!(d, want);
        // softmax over rows of 100
        let mut p = x.clone();
        simd::softmax_rows(&mut p, 100);
        for (row, got) in x.chunks(100).zip(p.chunks(100)) {
            let m = row_max(row);
            let e: Vec<f32> = row.iter().map(|v| exp_fast(v - m)).collect();
            let inv = 1.0 / lane_sum(&e);
            let want: Vec<f32> = e.iter().map(|v| v * inv).collect();
            assert_eq!(got, &want[..]);
        }
        let mut q = p.clone();
        simd::softmax_grad_rows(&mut q, &g, 100);
        for ((prow, grow), got) in p.chunks(100).zip(g.chunks(100)).zip(q.chunks(100)) {
            let dot = lane_dot(grow, prow);
            let want: Vec<f32> = prow.iter().zip(grow).map(|(p, g)| p * (g - dot)).collect();
            assert_eq!(got, &want[..]);
        }
        let (m, s) = simd::max_and_sum_exp(&x);
        assert_eq!((m, s), (row_max(&x), sum_exp(&x, row_max(&x))));
        // norm over rows of 50
        let w = values(50, 4);
        let mut inv = vec![0f32; n / 50];
        simd::norm_rows(&mut o, &x, &mut inv, &w, 1e-6);
        for (r, row) in x.chunks(50).enumerate() {
            let ms = lane_dot(row, row) / 50.0;
            let i = 1.0 / (ms + 1e-6f32).sqrt();
            assert_eq!(inv[r], i);
            for j in 0..50 {
                assert_eq!(o[r * 50 + j], row[j] * i * w[j]);
            }
        }
        let mut z = x.clone();
        simd::loss_grad_in_place(&mut z, 0.7, 0.01, 2.5);
        let want: Vec<f32> = x.iter().map(|v| 0.7 * exp_fast(v - 2.5) - 0.01).collect();
        assert_eq!(z, want);
    }
}

#[cfg(test)]
mod exp_tests {
    use super::{exp_fast, lane_dot, lane_sum, row_max, sum_exp, tanh_fast};

    #[test]
    fn lane_reductions_and_tanh() {
        let x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 * 0.1 - 3.0)
            .collect();
        for n in [0, 1, 15, 16, 17, 37] {
            let v = &x[..n];
            let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(row_max(v), m);
            let s: f64 = v.iter().map(|&a| ((a - 1.0) as f64).exp()).sum();
            assert!((sum_exp(v, 1.0) - s).abs() <= 1e-6 * s.max(1.0), "{n}");
            let t: f32 = v.iter().sum();
            assert!((lane_sum(v) - t).abs() <= 1e-5 * t.abs().max(1.0), "{n}");
            let w = &x[37 - n..];
            let t: f32 = v.iter().zip(w).map(|(a, b)| a * b).sum();
            assert!((lane_dot(v, w) - t).abs() <= 1e-5 * t.abs().max(1.0), "{n}");
        }
        assert_eq!(tanh_fast(9.0), 1.0);
        assert_eq!(tanh_fast(50.0), 1.0);
        assert_eq!(tanh_fast(-50.0), -1.0);
        assert!((tanh_fast(0.5) - 0.5f32.tanh()).abs() < 1e-6);
    }

    #[test]
    fn exp_fast_is_within_three_ulp() {
        let mut worst = 0u32;
        let mut x = -87.3f32;
        while x < 88.3 {
            let (a, b) = (exp_fast(x), x.exp());
            let ulp = (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32;
            assert!(ulp <= 3, "exp_fast({x}) = {a}, exp = {b}");
            worst = worst.max(ulp);
            x += 0.000_731;
        }
        assert!(worst >= 1, "compared against something other than exp");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-200.0) < 1.3e-38);
    }
}
