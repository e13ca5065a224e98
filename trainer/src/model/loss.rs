//! The loss: cross-entropy with t5x's z-loss and label smoothing, and its
//! normalisation (`loss_normalizing_factor`).

use dfdx::prelude::*;

#[allow(unused_imports)]
use super::*;

/// Loss options (t5x `cross_entropy_with_logits` + normalisation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// z-loss coefficient (t5x: 1e-4).
    pub z_loss: f32,
    /// Label smoothing (t5x: 0).
    pub label_smoothing: f32,
    /// How the summed loss is normalised.
    pub normalization: LossNormalization,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            z_loss: 1e-4,
            label_smoothing: 0.0,
            normalization: LossNormalization::Sum,
        }
    }
}

/// t5x's `loss_normalizing_factor`; written `sum`, `tokens` or a number.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LossNormalization {
    /// None: the weighted sum over target tokens (t5x's default).
    Sum,
    /// Divided by a constant (e.g. 233472 = 2048 × 114 for Mesh-TF fine-tuning).
    Constant(f32),
    /// Divided by the number of real target tokens (a mean).
    NumRealTargetTokens,
}

impl std::str::FromStr for LossNormalization {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "sum" => LossNormalization::Sum,
            "tokens" | "num_real_target_tokens" => LossNormalization::NumRealTargetTokens,
            _ => match s.parse::<f32>() {
                Ok(c) if c.is_finite() && c > 0.0 => LossNormalization::Constant(c),
                _ => {
                    return Err(format!(
                    "loss normalization {s:?}: use sum, tokens or a positive number (e.g. 233472)"
                ))
                }
            },
        })
    }
}

impl TryFrom<String> for LossNormalization {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<LossNormalization> for String {
    fn from(n: LossNormalization) -> String {
        match n {
            LossNormalization::Sum => "sum".into(),
            LossNormalization::NumRealTargetTokens => "tokens".into(),
            LossNormalization::Constant(c) => c.to_string(),
        }
    }
}

/// Loss values of a batch, for logging.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossParts {
    /// Weighted cross-entropy sum.
    pub cross_entropy: f64,
    /// Weighted z-loss sum.
    pub z_loss: f64,
    /// Real target tokens.
    pub tokens: usize,
}

/// The factor on the summed loss: the normalisation times `scale`.
pub(super) fn loss_norm(batch: &Batch, cfg: &LossConfig, scale: f32) -> f32 {
    let norm = match cfg.normalization {
        LossNormalization::Sum => 1.0,
        LossNormalization::Constant(c) => 1.0 / c,
        LossNormalization::NumRealTargetTokens => 1.0 / batch.target_tokens().max(1) as f32,
    };
    norm * scale
}

/// The training loss from a fused kernel's per-row losses.
pub(super) fn loss_total<D: Device<f32>, T: Tape<f32, D> + 'static>(
    r: crate::kernels::RowLoss<D, T>,
    batch: &Batch,
    cfg: &LossConfig,
    scale: f32,
) -> (Tensor<(), f32, D, T>, LossParts) {
    let parts = LossParts {
        cross_entropy: r.cross_entropy,
        z_loss: r.z_loss,
        tokens: batch.target_tokens(),
    };
    (r.loss.sum::<(), _>() * loss_norm(batch, cfg, scale), parts)
}

/// The training loss of `logits` `[n, vocab]` (a scalar on the tape) and its
/// parts. `scale` multiplies the result (gradient accumulation).
pub fn loss<D: Device<f32>, T: Tape<f32, D> + 'static>(
    logits: T2<D, T>,
    batch: &Batch,
    cfg: &LossConfig,
    scale: f32,
) -> (Tensor<(), f32, D, T>, LossParts) {
    let dev = logits.device().clone();
    let (n, v) = *logits.shape();
    let smoothing = cfg.label_smoothing;
    let logits = match crate::kernels::row_loss_cpu(
        logits,
        &batch.targets,
        &batch.weights,
        cfg.z_loss,
        smoothing,
    ) {
        Ok(r) => return loss_total(r, batch, cfg, scale),
        Err(logits) => logits,
    };
    let tokens = batch.target_tokens();
    let norm = loss_norm(batch, cfg, scale);
    let mut ls = fork(logits, if smoothing > 0.0 { 3 } else { 2 });
    let sum_logits = (smoothing > 0.0).then(|| ls.pop().unwrap().sum::<(usize,), Axis<1>>());
    let picked_in = ls.pop().unwrap();
    let lse: T1<D, T> = ls.pop().unwrap().logsumexp::<(usize,), Axis<1>>();
    let idx = dev.tensor_from_vec(batch.targets.clone(), (n,));
    let picked: T1<D, T> = picked_in.select(idx);
    let mut lses = fork(lse, 2);
    let lse_z = lses.pop().unwrap();
    let lse_ce = lses.pop().unwrap();
    let ce = match sum_logits {
        None => lse_ce - picked,
        Some(s) => {
            let confidence = 1.0 - smoothing;
            let low = smoothing / (v as f32 - 1.0);
            let constant =
                -(confidence * confidence.ln() + (v as f32 - 1.0) * low * (low + 1e-20).ln());
            lse_ce - picked * (confidence - low) - s * low - constant
        }
    };
    let w = dev.tensor_from_vec(batch.weights.clone(), (n,));
    let ce_w = ce * w.clone();
    let z_w = lse_z.square() * cfg.z_loss * w;
    let sum = |t: &T1<D, T>| -> f64 {
        t.retaped::<NoneTape>()
            .as_vec()
            .iter()
            .map(|&x| x as f64)
            .sum()
    };
    let parts = LossParts {
        cross_entropy: sum(&ce_w),
        z_loss: sum(&z_w),
        tokens,
    };
    let total = (ce_w + z_w).sum::<(), _>() * norm;
    (total, parts)
}
