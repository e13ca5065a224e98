//! Cross-entropy + z-loss (+ label smoothing) over the vocabulary per row.

use dfdx::prelude::*;
use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

/// Per-row loss of logits `[n, v]`: `w·(CE + z·lse²)` with t5x's label
/// smoothing, and the per-row (cross-entropy, z-loss) parts for logging.
pub struct RowLoss<D: Device<f32>, T> {
    /// `[n]` weighted per-row loss, on the tape.
    pub loss: Tensor<(usize,), f32, D, T>,
    /// Σ weighted cross-entropy.
    pub cross_entropy: f64,
    /// Σ weighted z-loss.
    pub z_loss: f64,
}

/// Logits `[n, vocab]`.
pub type Logits<D, T> = Tensor<(usize, usize), f32, D, T>;

/// The fused loss on the CPU; `None` on other devices (the caller composes
/// dfdx primitives there).
pub fn row_loss_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    logits: Tensor<(usize, usize), f32, D, T>,
    targets: &[usize],
    weights: &[f32],
    z_loss: f32,
    smoothing: f32,
) -> Result<RowLoss<D, T>, Logits<D, T>> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let l = cast::<_, Cpu2<$tape>>(logits).ok().expect("checked type");
            let r = row_loss_impl(l, targets, weights, z_loss, smoothing);
            return Ok(RowLoss {
                loss: cast(r.loss).ok().expect("same type"),
                cross_entropy: r.cross_entropy,
                z_loss: r.z_loss,
            });
        }};
    }
    on_cpu_tapes!((usize, usize), Tensor<(usize, usize), f32, D, T>, on_cpu);
    Err(logits)
}

/// The output layer and the loss in one kernel: logits `h · wᵀ` (`h:
/// [n, d]`, `w: [vocab, d]`) and their [`row_loss_cpu`], on the CPU with
/// OpenBLAS; `Err` gives `(h, w)` back otherwise. The logits never become
/// a tensor: the backward pass turns them into their gradient in place and
/// multiplies it out (dfdx would zero-fill a gradient buffer of the
/// logits' size, 65 MB for the tiny config's batch, and add into it).
#[allow(clippy::type_complexity)]
pub fn logits_loss_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    h: Tensor<(usize, usize), f32, D, T>,
    w: Tensor<(usize, usize), f32, D, T>,
    targets: &[usize],
    weights: &[f32],
    z_loss: f32,
    smoothing: f32,
) -> Result<RowLoss<D, T>, (Logits<D, T>, Logits<D, T>)> {
    #[cfg(t5mix_openblas)]
    {
        macro_rules! on_cpu {
            ($tape:ty) => {{
                let hc = cast::<_, Cpu2<$tape>>(h).ok().expect("checked type");
                let wc = cast::<_, Cpu2<$tape>>(w)
                    .ok()
                    .expect("same device and tape");
                let rule = LossRule::new(z_loss, smoothing, wc.shape().0);
                let r = blas::logits_loss(hc, wc, targets, weights, rule);
                return Ok(RowLoss {
                    loss: cast(r.loss).ok().expect("same type"),
                    cross_entropy: r.cross_entropy,
                    z_loss: r.z_loss,
                });
            }};
        }
        on_cpu_tapes!((usize, usize), Tensor<(usize, usize), f32, D, T>, on_cpu);
    }
    let _ = (targets, weights, z_loss, smoothing);
    Err((h, w))
}

/// t5x's per-row loss over logits: cross-entropy against the smoothed
/// target distribution plus the z-loss, weighted.
pub(crate) struct LossRule {
    z: f32,
    smoothing: f32,
    confidence: f32,
    /// The probability of each non-target class.
    low: f32,
    /// Minus the entropy of the smoothed target distribution.
    constant: f32,
}

impl LossRule {
    pub(crate) fn new(z: f32, smoothing: f32, v: usize) -> Self {
        let confidence = 1.0 - smoothing;
        let low = if v > 1 {
            smoothing / (v as f32 - 1.0)
        } else {
            0.0
        };
        let constant = if smoothing > 0.0 {
            -(confidence * confidence.ln() + (v as f32 - 1.0) * low * (low + 1e-20).ln())
        } else {
            0.0
        };
        LossRule {
            z,
            smoothing,
            confidence,
            low,
            constant,
        }
    }

    /// (z, smoothing, confidence, low, constant): what the GPU kernel takes.
    pub(crate) fn params(&self) -> [f32; 5] {
        [
            self.z,
            self.smoothing,
            self.confidence,
            self.low,
            self.constant,
        ]
    }

    /// Per row of `x` (`[n, v]`): (weighted loss, weighted cross-entropy,
    /// weighted z-loss, log-sum-exp).
    pub(crate) fn rows(
        &self,
        x: &[f32],
        v: usize,
        targets: &[usize],
        weights: &[f32],
    ) -> Vec<[f32; 4]> {
        x.par_chunks(v)
            .enumerate()
            .map(|(i, row)| {
                let (m, s) = simd::max_and_sum_exp(row);
                let lse = m + s.ln() as f32;
                let t = targets[i];
                let mut ce = lse - row[t];
                if self.smoothing > 0.0 {
                    let sum: f64 = row.iter().map(|&a| a as f64).sum();
                    ce = lse
                        - (self.confidence - self.low) * row[t]
                        - self.low * sum as f32
                        - self.constant;
                }
                let w = weights[i];
                let zl = self.z * lse * lse;
                [w * (ce + zl), w * ce, w * zl, lse]
            })
            .collect()
    }

    /// The per-row losses and the sums of the weighted cross-entropy and
    /// z-loss, from [`LossRule::rows`].
    pub(super) fn totals(rows: &[[f32; 4]]) -> (Vec<f32>, f64, f64) {
        let cross_entropy = rows.iter().map(|r| r[1] as f64).sum();
        let z_loss = rows.iter().map(|r| r[2] as f64).sum();
        (rows.iter().map(|r| r[0]).collect(), cross_entropy, z_loss)
    }

    /// The gradient of a row's loss (its [`LossRule::rows`] values) with
    /// upstream gradient `g` (weight included): `d_j = scale·e^(x_j − lse)
    /// − shift`, and the target's entry less `target`, as (scale, shift,
    /// target, lse); `None` when `g` is 0 (the row has no gradient).
    pub(crate) fn grad(&self, g: f32, row: &[f32; 4]) -> Option<(f32, f32, f32, f32)> {
        if g == 0.0 {
            return None;
        }
        let lse = row[3];
        // d/dx_j [lse − (c−low)·x_t − low·Σx + z·lse²]
        let scale = g * (1.0 + 2.0 * self.z * lse);
        Some((scale, g * self.low, g * (self.confidence - self.low), lse))
    }

    /// The logits `x` (`[n, v]`) become the gradient of their rows' losses
    /// (`rows` from [`LossRule::rows`]), each row's upstream gradient
    /// `g_out[i] · weights[i]`; a row without gradient becomes zeros.
    pub(crate) fn grad_in_place(
        &self,
        x: &mut [f32],
        v: usize,
        targets: &[usize],
        weights: &[f32],
        (g_out, rows): (&[f32], &[[f32; 4]]),
    ) {
        x.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
            let Some((scale, shift, target, l)) = self.grad(g_out[i] * weights[i], &rows[i]) else {
                row.fill(0.0);
                return;
            };
            simd::loss_grad_in_place(row, scale, shift, l);
            row[targets[i]] -= target;
        });
    }
}

pub(super) fn row_loss_impl<T: Tape<f32, Cpu>>(
    logits: Cpu2<T>,
    targets: &[usize],
    weights: &[f32],
    z: f32,
    smoothing: f32,
) -> RowLoss<Cpu, T> {
    let (x, mut tape) = logits.contiguous().split_tape();
    let (n, v) = *x.shape();
    let xv = values(&x);
    let rule = LossRule::new(z, smoothing, v);
    let rows = rule.rows(&xv, v, targets, weights);
    let (losses, cross_entropy, z_loss) = LossRule::totals(&rows);
    let out = x.device().tensor_from_vec(losses, (n,));
    if T::OWNS_TAPE {
        let (gx, go) = (x.ghost(), out.ghost());
        let targets = targets.to_vec();
        let weights = weights.to_vec();
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&gx]);
            let dx = grads.get_or_alloc_mut(&gx)?;
            dx.par_chunks_mut(v)
                .zip(xv.par_chunks(v))
                .enumerate()
                .for_each(|(i, (d, row))| {
                    let Some((scale, shift, target, l)) =
                        rule.grad(g_out[i] * weights[i], &rows[i])
                    else {
                        return;
                    };
                    simd::add_loss_grad(d, row, scale, shift, l);
                    d[targets[i]] -= target;
                });
            Ok(())
        });
    }
    RowLoss {
        loss: out.put_tape(tape),
        cross_entropy,
        z_loss,
    }
}
