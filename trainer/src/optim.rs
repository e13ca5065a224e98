//! Optimizers and learning-rate schedules: t5x's Adafactor (factored second
//! moments, decay 0.8, update clipping 1.0, parameter scaling) and AdamW;
//! `rsqrt` (t5x pretraining), constant and cosine schedules; global-norm
//! gradient clipping. They update host copies of the parameters: one pass
//! over each tensor per step, in parallel across tensors.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `base / sqrt(max(step, warmup))` (t5x `constant * rsqrt_decay`; base
    /// 1.0, warmup 10,000: 0.01 flat for 10k steps).
    Rsqrt {
        /// Multiplier.
        base: f64,
        /// Steps of the flat start.
        warmup: u64,
    },
    /// A fixed rate (t5x fine-tuning: 0.001).
    Constant {
        /// The rate.
        lr: f64,
    },
    /// Linear warm-up to `peak`, then cosine decay to `min` at `total` steps.
    Cosine {
        /// Highest rate.
        peak: f64,
        /// Final rate.
        min: f64,
        /// Warm-up steps.
        warmup: u64,
        /// Steps of the whole schedule.
        total: u64,
    },
}

impl Schedule {
    /// The rate at optimizer step `step` (0 for the first update).
    pub fn lr(&self, step: u64) -> f64 {
        match *self {
            Schedule::Rsqrt { base, warmup } => base / (step.max(warmup).max(1) as f64).sqrt(),
            Schedule::Constant { lr } => lr,
            Schedule::Cosine {
                peak,
                min,
                warmup,
                total,
            } => {
                if step < warmup {
                    peak * (step + 1) as f64 / warmup as f64
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f64;
                    let p = ((step - warmup) as f64 / span).min(1.0);
                    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * p).cos())
                }
            }
        }
    }

    /// Every rate finite and not negative (a NaN or infinite rate trains
    /// to NaN weights), warm-ups of at most 10^9 steps.
    pub fn check(&self) -> Result<()> {
        let (rates, warmup) = match *self {
            Schedule::Rsqrt { base, warmup } => (vec![base], warmup),
            Schedule::Constant { lr } => (vec![lr], 0),
            Schedule::Cosine {
                peak, min, warmup, ..
            } => (vec![peak, min], warmup),
        };
        if rates.iter().any(|r| !r.is_finite() || *r < 0.0) || warmup > 1_000_000_000 {
            return Err(TrainError::Config(format!(
                "schedule {self:?}: learning rates must be finite and not negative, warm-ups at most 10^9 steps"
            )));
        }
        Ok(())
    }

    /// Parses `rsqrt`, `rsqrt:WARMUP`, `constant:LR`, `cosine:PEAK:WARMUP`
    /// (decaying to 0 over `total_steps`); values are checked.
    pub fn parse(s: &str, total_steps: u64) -> Result<Schedule> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize| -> Result<f64> {
            parts
                .get(i)
                .ok_or_else(|| TrainError::Config(format!("schedule {s:?}: missing a value")))?
                .parse::<f64>()
                .map_err(|_| TrainError::Config(format!("schedule {s:?}: bad number")))
        };
        let schedule = match parts[0] {
            "rsqrt" => Schedule::Rsqrt {
                base: 1.0,
                warmup: if parts.len() > 1 {
                    num(1)? as u64
                } else {
                    10_000
                },
            },
            "constant" => Schedule::Constant {
                lr: if parts.len() > 1 { num(1)? } else { 0.001 },
            },
            "cosine" => Schedule::Cosine {
                peak: num(1)?,
                min: 0.0,
                warmup: if parts.len() > 2 { num(2)? as u64 } else { 0 },
                total: total_steps,
            },
            _ => {
                return Err(TrainError::Config(format!(
                    "schedule {s:?}: use rsqrt[:WARMUP], constant[:LR] or cosine:PEAK[:WARMUP]"
                )))
            }
        };
        if parts
            .iter()
            .skip(1)
            .any(|p| p.parse::<f64>().map_or(true, |x| x < 0.0 || !x.is_finite()))
        {
            return Err(TrainError::Config(format!(
                "schedule {s:?}: values must be finite, not negative numbers"
            )));
        }
        schedule.check()?;
        Ok(schedule)
    }
}

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// t5x Adafactor.
    Adafactor {
        /// Second-moment decay exponent (0.8).
        decay_rate: f64,
        /// Update clipping threshold (1.0).
        clipping_threshold: f64,
        /// Scale updates by the parameter's RMS.
        multiply_by_parameter_scale: bool,
        /// Smallest dimension that is factored (128).
        min_dim_size_to_factor: usize,
    },
    /// AdamW (decoupled weight decay).
    AdamW {
        /// β1.
        beta1: f64,
        /// β2.
        beta2: f64,
        /// ε.
        eps: f64,
        /// Weight decay (multiplied by the rate).
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// t5x's Adafactor defaults.
    pub fn adafactor() -> Self {
        OptimizerConfig::Adafactor {
            decay_rate: 0.8,
            clipping_threshold: 1.0,
            multiply_by_parameter_scale: true,
            min_dim_size_to_factor: 128,
        }
    }
    /// AdamW with the usual defaults (0.9, 0.999, 1e-8, decay 0.01).
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
    /// By name: `adafactor` or `adamw`.
    pub fn named(s: &str) -> Result<Self> {
        match s {
            "adafactor" => Ok(Self::adafactor()),
            "adamw" => Ok(Self::adamw()),
            _ => Err(TrainError::Config(format!(
                "optimizer {s:?}: use adafactor or adamw"
            ))),
        }
    }
}

/// AdamW updates tensors in parallel chunks of this many values.
const ADAM_CHUNK: usize = 1 << 16;

/// State of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamState {
    /// Adafactor, factored: row and column statistics.
    Factored {
        /// Mean over the larger dimension, one per index of the smaller.
        v_row: Vec<f32>,
        /// Mean over the smaller dimension.
        v_col: Vec<f32>,
    },
    /// Adafactor, not factored: the full second moment.
    Full {
        /// Second moment.
        v: Vec<f32>,
    },
    /// AdamW moments.
    Adam {
        /// First moment.
        m: Vec<f32>,
        /// Second moment.
        v: Vec<f32>,
    },
}

/// An optimizer over a list of 2-D parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    /// Configuration.
    pub cfg: OptimizerConfig,
    /// Updates done.
    pub step: u64,
    /// One state per parameter.
    pub states: Vec<ParamState>,
    shapes: Vec<(usize, usize)>,
}

/// Adafactor's ε₁ (added to squared gradients) and ε₂ (the least
/// parameter scale), t5x's values; the GPU kernels get them from here.
pub(crate) const ADAFACTOR_EPS1: f32 = 1e-30;
pub(crate) const ADAFACTOR_EPS2: f32 = 1e-3;
use ADAFACTOR_EPS1 as EPS1;
use ADAFACTOR_EPS2 as EPS2;

/// The lengths of one parameter's optimizer state.
pub(crate) enum StateLens {
    /// AdamW: m and v, one value per parameter value.
    Adam(usize),
    /// Adafactor, factored: v_row and v_col.
    Factored(usize, usize),
    /// Adafactor, full second moment.
    Full(usize),
}

/// What state a parameter of shape (rows, columns) gets (one home for the
/// CPU optimizer and the GPU's).
pub(crate) fn state_lens(cfg: OptimizerConfig, (r, c): (usize, usize)) -> StateLens {
    match cfg {
        OptimizerConfig::Adafactor {
            min_dim_size_to_factor,
            ..
        } => match factored_dims((r, c), min_dim_size_to_factor) {
            Some((0, _)) => StateLens::Factored(r, c),
            Some(_) => StateLens::Factored(c, r),
            None => StateLens::Full(r * c),
        },
        OptimizerConfig::AdamW { .. } => StateLens::Adam(r * c),
    }
}

/// Adafactor's second-moment statistics updated from their sums over
/// `count` values each: `v = decay·v + mix·(sum / count)`.
pub(crate) fn adafactor_moments(v: &mut [f32], sums: &[f64], count: f64, decay: f32, mix: f32) {
    for (v, s) in v.iter_mut().zip(sums) {
        *v = decay * *v + mix * (s / count) as f32;
    }
}

/// Which axis Adafactor reduces for the row statistics: t5x factors the two
/// largest dimensions, `d0` the smaller and `d1` the larger (ties: d0 = 0).
fn factored_dims(shape: (usize, usize), min_dim: usize) -> Option<(usize, usize)> {
    let (a, b) = shape;
    let (d0, d1) = if b >= a { (0, 1) } else { (1, 0) };
    let small = if d0 == 0 { a } else { b };
    (small >= min_dim).then_some((d0, d1))
}

fn rms(x: &[f32]) -> f32 {
    ((x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len().max(1) as f64).sqrt())
        as f32
}

impl Optimizer {
    /// A fresh optimizer for parameters of these shapes.
    pub fn new(cfg: OptimizerConfig, shapes: &[(usize, usize)]) -> Self {
        let states = shapes
            .iter()
            .map(|&shape| match state_lens(cfg, shape) {
                StateLens::Factored(n0, n1) => ParamState::Factored {
                    v_row: vec![0.0; n0],
                    v_col: vec![0.0; n1],
                },
                StateLens::Full(n) => ParamState::Full { v: vec![0.0; n] },
                StateLens::Adam(n) => ParamState::Adam {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                },
            })
            .collect();
        Optimizer {
            cfg,
            step: 0,
            states,
            shapes: shapes.to_vec(),
        }
    }

    /// Applies one update with rate `lr` to `params` (host copies, updated in
    /// place) from `grads`.
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        let step = self.step;
        let cfg = self.cfg;
        params
            .par_iter_mut()
            .zip(grads.par_iter())
            .zip(self.states.par_iter_mut())
            .zip(self.shapes.par_iter())
            .for_each(|(((p, g), st), &shape)| match cfg {
                OptimizerConfig::Adafactor {
                    decay_rate,
                    clipping_threshold,
                    multiply_by_parameter_scale,
                    ..
                } => adafactor(
                    p,
                    g,
                    st,
                    shape,
                    step,
                    lr as f32,
                    decay_rate,
                    clipping_threshold as f32,
                    multiply_by_parameter_scale,
                ),
                OptimizerConfig::AdamW { .. } => {
                    let ParamState::Adam { m, v } = st else {
                        unreachable!("AdamW state")
                    };
                    let k = AdamStep::new(cfg, step, lr);
                    // element-wise: large tensors (the embedding) in parallel
                    // chunks, with the same result whatever the split
                    p.par_chunks_mut(ADAM_CHUNK)
                        .zip(g.par_chunks(ADAM_CHUNK))
                        .zip(m.par_chunks_mut(ADAM_CHUNK))
                        .zip(v.par_chunks_mut(ADAM_CHUNK))
                        .for_each(|(((p, g), m), v)| adamw_chunk(p, g, m, v, k));
                }
            });
        self.step += 1;
    }
}

/// AdamW's constants for one update: the bias corrections folded into the
/// rate and ε (as the CPU, the GPU kernel and its twin all take them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamStep {
    pub b1: f32,
    pub b2: f32,
    pub lr_t: f32,
    pub decay: f32,
    pub eps_t: f32,
}

impl AdamStep {
    /// For update `step` (0-based) at rate `lr`; `cfg` must be AdamW.
    pub(crate) fn new(cfg: OptimizerConfig, step: u64, lr: f64) -> Self {
        let OptimizerConfig::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = cfg
        else {
            unreachable!("AdamW")
        };
        let t = (step + 1) as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        AdamStep {
            b1: beta1 as f32,
            b2: beta2 as f32,
            lr_t: (lr * bc2.sqrt() / bc1) as f32,
            decay: (lr * weight_decay) as f32,
            eps_t: eps as f32 * bc2.sqrt() as f32,
        }
    }
}

/// Adafactor's decay and mixing rates for update `step` (t5x: decay_rate =
/// 1 - (step + 1)^-0.8, mixing rate = 1 - decay rate).
pub(crate) fn adafactor_rates(decay_exponent: f64, step: u64) -> (f32, f32) {
    let decay = (1.0 - ((step + 1) as f64).powf(-decay_exponent)) as f32;
    (decay, 1.0 - decay)
}

simd_fns! {
    /// AdamW on one chunk, compiled for each SIMD level (picked at run time;
    /// the same values at every level).
    pub(crate) fn adamw_chunk(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        AdamStep { b1, b2, lr_t, decay, eps_t }: AdamStep,
    ) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            p[i] -= decay * p[i];
            p[i] -= lr_t * m[i] / (v[i].sqrt() + eps_t);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn adafactor(
    p: &mut [f32],
    g: &[f32],
    st: &mut ParamState,
    (r, c): (usize, usize),
    step: u64,
    lr: f32,
    decay_exponent: f64,
    clipping: f32,
    param_scale: bool,
) {
    let (decay, mix) = adafactor_rates(decay_exponent, step);
    let mut update_scale = lr;
    if param_scale {
        update_scale *= rms(p).max(EPS2);
    }
    let mut y = vec![0f32; p.len()];
    match st {
        ParamState::Factored { v_row, v_col } => {
            // d0 indexes v_row; the row statistic is the mean over d1
            let rows_first = v_row.len() == r && v_col.len() == c;
            let (mut sum_row, mut sum_col) = (vec![0f64; v_row.len()], vec![0f64; v_col.len()]);
            for i in 0..r {
                for j in 0..c {
                    let gs = (g[i * c + j] * g[i * c + j] + EPS1) as f64;
                    let (a, b) = if rows_first { (i, j) } else { (j, i) };
                    sum_row[a] += gs;
                    sum_col[b] += gs;
                }
            }
            let (n_row, n_col) = (v_col.len() as f64, v_row.len() as f64);
            adafactor_moments(v_row, &sum_row, n_row, decay, mix);
            adafactor_moments(v_col, &sum_col, n_col, decay, mix);
            let row_mean =
                (v_row.iter().map(|&x| x as f64).sum::<f64>() / v_row.len() as f64) as f32;
            let row_factor: Vec<f32> = v_row.iter().map(|&v| 1.0 / (v / row_mean).sqrt()).collect();
            let col_factor: Vec<f32> = v_col.iter().map(|&v| 1.0 / v.sqrt()).collect();
            for i in 0..r {
                for j in 0..c {
                    let (a, b) = if rows_first { (i, j) } else { (j, i) };
                    y[i * c + j] = g[i * c + j] * row_factor[a] * col_factor[b];
                }
            }
        }
        ParamState::Full { v } => {
            for i in 0..p.len() {
                v[i] = decay * v[i] + mix * (g[i] * g[i] + EPS1);
                y[i] = g[i] / v[i].sqrt();
            }
        }
        ParamState::Adam { .. } => unreachable!("Adafactor state"),
    }
    if clipping > 0.0 {
        let denom = (rms(&y) / clipping).max(1.0);
        for v in &mut y {
            *v /= denom;
        }
    }
    for (pi, yi) in p.iter_mut().zip(&y) {
        *pi -= update_scale * yi;
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: Option<f64>) -> f64 {
    // per-tensor sums in parallel, added in tensor order: rayon's own
    // reduction tree depends on scheduling, which changed the last bit
    let squares: Vec<f64> = grads
        .par_iter()
        .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
        .collect();
    let norm = squares.iter().sum::<f64>().sqrt();
    if let Some(m) = max_norm {
        if norm > m && norm > 0.0 {
            let s = (m / norm) as f32;
            grads
                .par_iter_mut()
                .for_each(|g| g.iter_mut().for_each(|x| *x *= s));
        }
    }
    norm
}

impl Optimizer {
    /// The state as named tensors (for checkpoints): `{name}.v_row`,
    /// `.v_col`, `.v`, `.m`.
    pub fn to_tensors(&self, names: &[String]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (n, st) in names.iter().zip(&self.states) {
            match st {
                ParamState::Factored { v_row, v_col } => {
                    out.push((format!("{n}.v_row"), vec![v_row.len()], v_row.clone()));
                    out.push((format!("{n}.v_col"), vec![v_col.len()], v_col.clone()));
                }
                ParamState::Full { v } => out.push((format!("{n}.v"), vec![v.len()], v.clone())),
                ParamState::Adam { m, v } => {
                    out.push((format!("{n}.m"), vec![m.len()], m.clone()));
                    out.push((format!("{n}.v"), vec![v.len()], v.clone()));
                }
            }
        }
        out
    }

    /// Restores the state written by [`Optimizer::to_tensors`].
    pub fn load_tensors(
        &mut self,
        names: &[String],
        tensors: &crate::weights::NamedTensors,
    ) -> std::result::Result<(), String> {
        for (n, st) in names.iter().zip(self.states.iter_mut()) {
            let take = |suffix: &str, dst: &mut Vec<f32>| -> std::result::Result<(), String> {
                let key = format!("{n}.{suffix}");
                let (_, v) = tensors
                    .get(&key)
                    .ok_or_else(|| format!("optimizer state {key} is missing"))?;
                if v.len() != dst.len() {
                    return Err(format!("optimizer state {key} has the wrong size"));
                }
                dst.copy_from_slice(v);
                Ok(())
            };
            match st {
                ParamState::Factored { v_row, v_col } => {
                    take("v_row", v_row)?;
                    take("v_col", v_col)?;
                }
                ParamState::Full { v } => take("v", v)?,
                ParamState::Adam { m, v } => {
                    take("m", m)?;
                    take("v", v)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsqrt_is_flat_for_the_warmup_then_decays() {
        let s = Schedule::parse("rsqrt", 0).unwrap();
        assert_eq!(s.lr(0), 0.01);
        assert_eq!(s.lr(9_999), 0.01);
        assert_eq!(s.lr(40_000), 0.005);
        assert_eq!(Schedule::parse("constant", 0).unwrap().lr(5), 0.001);
        let c = Schedule::parse("cosine:0.1:10", 110).unwrap();
        assert!((c.lr(9) - 0.1).abs() < 1e-12);
        assert!((c.lr(60) - 0.05).abs() < 1e-12);
        assert!(c.lr(110).abs() < 1e-12);
    }

    #[test]
    fn adafactor_first_step_matches_hand_computation() {
        // not factored (2 < 128): v = g² + eps1; y = g / sqrt(v) = sign(g);
        // rms(y) = 1: no clipping; scale = lr · max(rms(p), 1e-3)
        let mut opt = Optimizer::new(OptimizerConfig::adafactor(), &[(1, 2)]);
        let mut p = vec![vec![3.0f32, 4.0]];
        opt.update(&mut p, &[vec![0.5, -2.0]], 0.01);
        let scale = 0.01 * (12.5f32).sqrt();
        assert!((p[0][0] - (3.0 - scale)).abs() < 1e-6);
        assert!((p[0][1] - (4.0 + scale)).abs() < 1e-6);
        // second step: decay = 1 - 2^-0.8
        let d = 1.0 - 2f32.powf(-0.8);
        let v0 = d * (0.25 + EPS1) + (1.0 - d) * 1.0;
        let y0 = 1.0 / v0.sqrt();
        let before = p[0].clone();
        opt.update(&mut p, &[vec![1.0, 0.0]], 0.01);
        // y = [y0, 0]; rms(y) = y0/√2, clipped if above 1
        let denom = (y0 / 2f32.sqrt()).max(1.0);
        let sc = 0.01 * rms(&before).max(EPS2);
        assert!((p[0][0] - (before[0] - sc * y0 / denom)).abs() < 1e-6);
        assert_eq!(p[0][1], before[1]);
    }

    #[test]
    fn adafactor_factored_statistics() {
        // 128 × 256: factored; with a constant gradient every factor is
        // equal and y = g / |g| = 1 everywhere.
        let mut opt = Optimizer::new(OptimizerConfig::adafactor(), &[(128, 256)]);
        let mut p = vec![vec![1.0f32; 128 * 256]];
        opt.update(&mut p, &[vec![0.1; 128 * 256]], 0.01);
        let ParamState::Factored { v_row, v_col } = &opt.states[0] else {
            panic!("factored")
        };
        assert_eq!((v_row.len(), v_col.len()), (128, 256));
        assert!((v_row[0] - 0.01).abs() < 1e-7);
        assert!((p[0][77] - 0.99).abs() < 1e-6, "{}", p[0][77]);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let mut opt = Optimizer::new(OptimizerConfig::adamw(), &[(1, 1)]);
        let mut p = vec![vec![1.0f32]];
        opt.update(&mut p, &[vec![0.3]], 0.1);
        // decay 0.1·0.01, then the bias-corrected step of size lr
        assert!(
            (p[0][0] - (1.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-5,
            "{}",
            p[0][0]
        );
    }

    #[test]
    fn global_norm_clipping() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        assert_eq!(clip_global_norm(&mut g, Some(1.0)), 5.0);
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[1][0] - 0.8).abs() < 1e-6);
    }
}
