//! What the optimizer kernels (`trainer/cuda/optimizer.cu`) compute, on the
//! CPU, over the same flat buffers and in the same order: every sum in f64
//! in the kernels' fixed order ([`grid_sum`]), every element-wise formula
//! as the kernel writes it. A GPU run is checked against this twin bit for
//! bit; the twin is checked here against the CPU optimizer
//! ([`crate::optim`]): the weights agree bit for bit after three clipped
//! AdamW and Adafactor steps (the f64 sums, added in another order, round
//! to the same f32 values).

use super::{BLOCKS, THREADS};
use crate::optim::{
    adafactor_moments, adafactor_rates, adamw_chunk, AdamStep, OptimizerConfig, ParamState,
    ADAFACTOR_EPS1 as EPS1, ADAFACTOR_EPS2 as EPS2,
};
use crate::Result;

/// Where each parameter lives in the flat buffers: its offset and shape
/// (rows, columns), in the model's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatLayout {
    /// (offset, (rows, columns)) of each parameter.
    pub params: Vec<(usize, (usize, usize))>,
    /// Values in all.
    pub len: usize,
}

impl FlatLayout {
    /// The parameters one after the other.
    pub fn new(shapes: &[(usize, usize)]) -> Self {
        let mut len = 0;
        let params = shapes
            .iter()
            .map(|&(r, c)| {
                let at = len;
                len += r * c;
                (at, (r, c))
            })
            .collect();
        FlatLayout { params, len }
    }

    /// The tensors, one after the other in one buffer.
    pub fn flatten(&self, tensors: &[Vec<f32>]) -> Vec<f32> {
        let mut flat = Vec::with_capacity(self.len);
        for t in tensors {
            flat.extend_from_slice(t);
        }
        flat
    }

    /// The tensors of one flat buffer (the inverse of [`Self::flatten`]).
    pub fn split(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .map(|&(at, (r, c))| flat[at..at + r * c].to_vec())
            .collect()
    }
}

/// The pairwise sum of one value per thread of a block (`block_sum`).
fn block_sum(mut sh: [f64; THREADS]) -> f64 {
    let mut s = THREADS / 2;
    while s > 0 {
        for t in 0..s {
            sh[t] += sh[t + s];
        }
        s /= 2;
    }
    sh[0]
}

/// The sum of `value(i)` for i < n in the order of a `*_partials` kernel
/// and `sum_partials`: per thread in index order, per block pairwise, then
/// the blocks' sums the same way.
pub fn grid_sum(n: usize, value: impl Fn(usize) -> f64) -> f64 {
    let stride = BLOCKS * THREADS;
    let partials: Vec<f64> = (0..BLOCKS)
        .map(|b| {
            let mut sh = [0f64; THREADS];
            for (t, acc) in sh.iter_mut().enumerate() {
                let mut i = b * THREADS + t;
                while i < n {
                    *acc += value(i);
                    i += stride;
                }
            }
            block_sum(sh)
        })
        .collect();
    let mut sh = [0f64; THREADS];
    for (t, acc) in sh.iter_mut().enumerate() {
        let mut i = t;
        while i < BLOCKS {
            *acc += partials[i];
            i += THREADS;
        }
    }
    block_sum(sh)
}

/// The sum of squares in the kernels' order (`sum_partials_by_param`).
pub fn sumsq(x: &[f32]) -> f64 {
    grid_sum(x.len(), |i| {
        let v = x[i] as f64;
        v * v
    })
}

/// Global-norm clipping of the flat gradients (`clip_by_norm`); the norm
/// before clipping.
pub fn clip_global_norm(g: &mut [f32], max_norm: Option<f64>) -> f64 {
    let norm = sumsq(g).sqrt();
    if let Some(m) = max_norm {
        if norm > m && norm > 0.0 {
            let s = (m / norm) as f32;
            g.iter_mut().for_each(|x| *x *= s);
        }
    }
    norm
}

/// One optimizer step over flat buffers, as the kernels take it: `states`
/// one per parameter (as [`crate::optim::Optimizer`] keeps them), `step`
/// the updates done before.
pub fn update(
    cfg: OptimizerConfig,
    layout: &FlatLayout,
    params: &mut [f32],
    grads: &[f32],
    states: &mut [ParamState],
    step: u64,
    lr: f64,
) {
    for (k, &(at, (r, c))) in layout.params.iter().enumerate() {
        let n = r * c;
        let (p, g) = (&mut params[at..at + n], &grads[at..at + n]);
        match (cfg, &mut states[k]) {
            (OptimizerConfig::AdamW { .. }, ParamState::Adam { m, v }) => {
                // kernel `adamw`: the CPU's formula, which rounds the same
                adamw_chunk(p, g, m, v, AdamStep::new(cfg, step, lr));
            }
            (
                OptimizerConfig::Adafactor {
                    decay_rate,
                    clipping_threshold,
                    multiply_by_parameter_scale,
                    ..
                },
                st,
            ) => {
                let (decay, mix) = adafactor_rates(decay_rate, step);
                let sum_p2 = sumsq(p);
                let y = match st {
                    ParamState::Factored { v_row, v_col } => {
                        let rows_first = v_row.len() == r && v_col.len() == c;
                        // kernel `adafactor_sums`
                        let gs = |i: usize, j: usize| (g[i * c + j] * g[i * c + j] + EPS1) as f64;
                        let row_sums: Vec<f64> =
                            (0..r).map(|i| (0..c).map(|j| gs(i, j)).sum()).collect();
                        let col_sums: Vec<f64> = (0..c)
                            .map(|j| (0..r).fold(0.0, |acc, i| acc + gs(i, j)))
                            .collect();
                        let (s_row, s_col) = if rows_first {
                            (row_sums, col_sums)
                        } else {
                            (col_sums, row_sums)
                        };
                        // kernel `adafactor_moments`, counts as the CPU's
                        let (n_row, n_col) = (v_col.len() as f64, v_row.len() as f64);
                        adafactor_moments(v_row, &s_row, n_row, decay, mix);
                        adafactor_moments(v_col, &s_col, n_col, decay, mix);
                        // `sum_partials_by_param` (v_row) + `adafactor_y`
                        let row_sum = grid_sum(v_row.len(), |i| v_row[i] as f64);
                        let row_mean = (row_sum / v_row.len() as f64) as f32;
                        (0..n)
                            .map(|k| {
                                let (i, j) = (k / c, k % c);
                                let (a, b) = if rows_first { (i, j) } else { (j, i) };
                                let row_factor = 1.0 / (v_row[a] / row_mean).sqrt();
                                let col_factor = 1.0 / v_col[b].sqrt();
                                g[k] * row_factor * col_factor
                            })
                            .collect::<Vec<f32>>()
                    }
                    ParamState::Full { v } => (0..n)
                        .map(|i| {
                            // kernel `adafactor_y`
                            v[i] = decay * v[i] + mix * (g[i] * g[i] + EPS1);
                            g[i] / v[i].sqrt()
                        })
                        .collect(),
                    ParamState::Adam { .. } => unreachable!("Adafactor state"),
                };
                // kernel `adafactor_apply`
                let mut update_scale = lr as f32;
                if multiply_by_parameter_scale {
                    update_scale *= ((sum_p2 / n as f64).sqrt() as f32).max(EPS2);
                }
                let clipping = clipping_threshold as f32;
                let mut denom = 1.0f32;
                if clipping > 0.0 {
                    let rms_y = (sumsq(&y) / n as f64).sqrt() as f32;
                    denom = (rms_y / clipping).max(1.0);
                }
                for (pi, yi) in p.iter_mut().zip(&y) {
                    *pi -= update_scale * (yi / denom);
                }
            }
            (OptimizerConfig::AdamW { .. }, _) => unreachable!("AdamW state"),
        }
    }
}

/// The optimizer of the flat step on the CPU: the twin's arithmetic, its
/// state kept as [`crate::optim::Optimizer`] keeps it.
#[derive(Debug, Clone)]
pub struct HostOptimizer {
    cfg: OptimizerConfig,
    layout: FlatLayout,
    states: Vec<ParamState>,
    step: u64,
    norm: f64,
}

impl HostOptimizer {
    /// Fresh state for the parameters of `layout`.
    pub fn new(cfg: OptimizerConfig, layout: FlatLayout) -> Self {
        let shapes: Vec<(usize, usize)> = layout.params.iter().map(|&(_, s)| s).collect();
        HostOptimizer {
            states: crate::optim::Optimizer::new(cfg, &shapes).states,
            cfg,
            layout,
            step: 0,
            norm: 0.0,
        }
    }
}

impl super::step::FlatOptimizer<Vec<f32>> for HostOptimizer {
    fn clip_global_norm(&mut self, grads: &mut Vec<f32>, max_norm: Option<f64>) -> Result<()> {
        self.norm = clip_global_norm(grads, max_norm);
        Ok(())
    }
    fn grad_norm(&self) -> Result<f64> {
        Ok(self.norm)
    }
    fn update(&mut self, params: &mut Vec<f32>, grads: &Vec<f32>, lr: f64) -> Result<()> {
        let (cfg, step) = (self.cfg, self.step);
        update(cfg, &self.layout, params, grads, &mut self.states, step, lr);
        self.step += 1;
        Ok(())
    }
    fn state(&self) -> Result<(Vec<ParamState>, u64)> {
        Ok((self.states.clone(), self.step))
    }
    fn load_state(&mut self, states: &[ParamState], step: u64) -> Result<()> {
        super::step::check_states(self.cfg, &self.layout, states)?;
        self.states = states.to_vec();
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{clip_global_norm as cpu_clip, Optimizer};
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    fn random(rng: &mut rand_chacha::ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_u32() as f64 / u32::MAX as f64) as f32 - 0.5) * scale)
            .collect()
    }

    /// Shapes with factored (both orientations, beyond one grid's stride)
    /// and unfactored parameters.
    const SHAPES: [(usize, usize); 4] = [(300, 1100), (1100, 256), (64, 96), (1, 512)];

    fn run(cfg: OptimizerConfig, steps: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let layout = FlatLayout::new(&SHAPES);
        let mut tensors: Vec<Vec<f32>> = SHAPES
            .iter()
            .map(|&(r, c)| random(&mut rng, r * c, 2.0))
            .collect();
        let mut flat = layout.flatten(&tensors);
        let mut cpu = Optimizer::new(cfg, &SHAPES);
        let mut dev_states = cpu.states.clone();
        for step in 0..steps {
            let mut grads: Vec<Vec<f32>> = SHAPES
                .iter()
                .map(|&(r, c)| random(&mut rng, r * c, 0.1))
                .collect();
            let mut flat_g = layout.flatten(&grads);
            let norm = cpu_clip(&mut grads, Some(1.0));
            let dev_norm = clip_global_norm(&mut flat_g, Some(1.0));
            assert!((norm - dev_norm).abs() <= 1e-12 * norm, "{norm} {dev_norm}");
            cpu.update(&mut tensors, &grads, 1e-2);
            update(
                cfg,
                &layout,
                &mut flat,
                &flat_g,
                &mut dev_states,
                step,
                1e-2,
            );
        }
        (layout.flatten(&tensors), flat)
    }

    /// The weights after three clipped steps, twin and CPU: how many differ.
    fn differing(cfg: OptimizerConfig) -> usize {
        let (cpu, dev) = run(cfg, 3);
        assert_ne!(cpu, run(cfg, 2).0, "the steps change the weights");
        cpu.iter()
            .zip(&dev)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count()
    }

    #[test]
    fn adamw_on_flat_buffers_equals_the_cpu_optimizer_bit_for_bit() {
        // (the clipped gradients could differ in their last bit when the
        // two norms do; here they agree, and so do all the weights)
        assert_eq!(differing(OptimizerConfig::adamw()), 0);
    }

    #[test]
    fn adafactor_on_flat_buffers_equals_the_cpu_optimizer_bit_for_bit() {
        // its sums of squares and row means are added in the kernels' order
        // here and sequentially there, both in f64: rounded to f32 they
        // agree on these shapes (a last-bit difference is possible in
        // principle, and would show here)
        assert_eq!(differing(OptimizerConfig::adafactor()), 0);
    }

    #[test]
    fn grid_sum_adds_every_value_once() {
        for n in [
            0,
            1,
            THREADS - 1,
            BLOCKS * THREADS + 3,
            3 * BLOCKS * THREADS,
        ] {
            assert_eq!(grid_sum(n, |_| 1.0), n as f64);
            let exact = (n as f64) * (n as f64 - 1.0) / 2.0;
            assert_eq!(grid_sum(n, |i| i as f64), exact);
        }
    }
}
