//! The optimizer step on the GPU: parameters, gradients and moments in flat
//! device buffers, AdamW / t5x Adafactor / global-norm clipping as the
//! kernels of `trainer/cuda/optimizer.cu`, launched through `cudarc` on a
//! stream of the primary context (the one dfdx's device uses too). Nothing
//! goes to the host per step; [`DeviceOptimizer::grad_norm`] copies the one
//! logged scalar when asked.
//!
//! What it computes is [`super::twin`]'s computation, bit for bit.

use super::twin::FlatLayout;
use super::{gpu_error, launched, load, BLOCKS, OPTIMIZER, THREADS};
use crate::optim::{adafactor_rates, state_lens, AdamStep, OptimizerConfig, ParamState, StateLens};
use crate::{Result, TrainError};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Slots of the device's scalar buffer.
const ROW_SUM: usize = 0;
const Y_SQUARES: usize = 1;
const P_SQUARES: usize = 2;
const GRAD_SQUARES: usize = 3;

/// For the error messages.
const PART: &str = "optimizer";

fn err(what: &str, e: impl std::fmt::Debug) -> TrainError {
    gpu_error(PART, what, e)
}

/// The optimizer's state on the GPU.
enum DeviceStates {
    /// AdamW: the moments of every parameter, flat in the parameters'
    /// layout (one launch updates them all).
    Adam {
        m: CudaSlice<f32>,
        v: CudaSlice<f32>,
    },
    /// Adafactor: the second-moment statistics of each parameter.
    Adafactor(Vec<DeviceState>),
}

/// Adafactor's state of one parameter.
enum DeviceState {
    Factored {
        v_row: CudaSlice<f32>,
        v_col: CudaSlice<f32>,
    },
    Full {
        v: CudaSlice<f32>,
    },
}

struct Kernels {
    sumsq_partials: CudaFunction,
    sum_partials: CudaFunction,
    clip_by_norm: CudaFunction,
    adamw: CudaFunction,
    row_sums: CudaFunction,
    col_sums: CudaFunction,
    moments: CudaFunction,
    sum_f32_partials: CudaFunction,
    factored_y: CudaFunction,
    full_y: CudaFunction,
    apply: CudaFunction,
}

/// An optimizer whose state lives on the GPU.
pub struct DeviceOptimizer {
    cfg: OptimizerConfig,
    layout: FlatLayout,
    stream: Arc<CudaStream>,
    k: Kernels,
    states: DeviceStates,
    partials: CudaSlice<f64>,
    stats: CudaSlice<f64>,
    sums_a: CudaSlice<f64>,
    sums_b: CudaSlice<f64>,
    y: CudaSlice<f32>,
    /// Updates done.
    pub step: u64,
}

/// A grid for an element-wise kernel over `n` values (its result does not
/// depend on the grid: each value is computed alone).
fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS).clamp(1, 8 * BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The grid of a `*_partials` kernel: the order of the sums depends on it.
fn reduction(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// stats[slot] = the sum of squares (or, `squares` false, the sum) of `x`,
/// in the twin's order ([`super::twin::grid_sum`]).
fn sum_into(
    stream: &CudaStream,
    k: &Kernels,
    (partials, stats): (&mut CudaSlice<f64>, &mut CudaSlice<f64>),
    x: &CudaView<'_, f32>,
    squares: bool,
    slot: usize,
) -> Result<()> {
    let n = x.len() as u64;
    let f = if squares {
        &k.sumsq_partials
    } else {
        &k.sum_f32_partials
    };
    let mut b = stream.launch_builder(f);
    b.arg(x).arg(&n).arg(&mut *partials);
    // SAFETY: the kernel reads n values of x and writes BLOCKS partials.
    launched(PART, unsafe { b.launch(reduction(BLOCKS)) }, "sum")?;
    let slot = slot as u32;
    let mut b = stream.launch_builder(&k.sum_partials);
    b.arg(&*partials).arg(stats).arg(&slot);
    // SAFETY: one block adds the BLOCKS partials into stats[slot] (< 4).
    launched(PART, unsafe { b.launch(reduction(1)) }, "sum")
}

impl DeviceOptimizer {
    /// An optimizer for the parameters of `layout` on `stream`'s GPU, with
    /// fresh state (as [`Optimizer::new`]); the kernels compiled for the
    /// GPU's architecture, flushing subnormals as asked.
    pub fn new(
        stream: Arc<CudaStream>,
        cfg: OptimizerConfig,
        layout: FlatLayout,
        flush_denormals: bool,
    ) -> Result<Self> {
        let [sumsq_partials, sum_partials, clip_by_norm, adamw, row_sums, col_sums, moments, sum_f32_partials, factored_y, full_y, apply] =
            load(&stream, OPTIMIZER, flush_denormals)?;
        let k = Kernels {
            sumsq_partials,
            sum_partials,
            clip_by_norm,
            adamw,
            row_sums,
            col_sums,
            moments,
            sum_f32_partials,
            factored_y,
            full_y,
            apply,
        };
        let shapes: Vec<(usize, usize)> = layout.params.iter().map(|&(_, s)| s).collect();
        let zeros = |n: usize| {
            stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(|e| err("memory", e))
        };
        let states = match cfg {
            OptimizerConfig::AdamW { .. } => DeviceStates::Adam {
                m: zeros(layout.len)?,
                v: zeros(layout.len)?,
            },
            OptimizerConfig::Adafactor { .. } => DeviceStates::Adafactor(
                shapes
                    .iter()
                    .map(|&shape| {
                        Ok(match state_lens(cfg, shape) {
                            StateLens::Factored(n0, n1) => DeviceState::Factored {
                                v_row: zeros(n0)?,
                                v_col: zeros(n1)?,
                            },
                            StateLens::Full(n) => DeviceState::Full { v: zeros(n)? },
                            StateLens::Adam(_) => unreachable!("Adafactor's state"),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let largest = shapes.iter().map(|&(r, c)| r * c).max().unwrap_or(1);
        let longest = shapes.iter().map(|&(r, c)| r.max(c)).max().unwrap_or(1);
        let f64s = |n: usize| stream.alloc_zeros::<f64>(n).map_err(|e| err("memory", e));
        Ok(DeviceOptimizer {
            cfg,
            layout,
            partials: f64s(BLOCKS)?,
            stats: f64s(4)?,
            sums_a: f64s(longest)?,
            sums_b: f64s(longest)?,
            y: zeros(largest)?,
            stream,
            k,
            states,
            step: 0,
        })
    }

    /// Scales the flat gradients so their global L2 norm is at most
    /// `max_norm`; the norm stays on the GPU ([`Self::grad_norm`]).
    pub fn clip_global_norm(
        &mut self,
        grads: &mut CudaSlice<f32>,
        max_norm: Option<f64>,
    ) -> Result<()> {
        let n = self.layout.len;
        let all = grads.slice(0..n);
        let bufs = (&mut self.partials, &mut self.stats);
        sum_into(&self.stream, &self.k, bufs, &all, true, GRAD_SQUARES)?;
        let Some(max) = max_norm else { return Ok(()) };
        let n64 = n as u64;
        let squares = self.stats.slice(GRAD_SQUARES..GRAD_SQUARES + 1);
        let mut b = self.stream.launch_builder(&self.k.clip_by_norm);
        b.arg(&mut *grads).arg(&n64).arg(&squares).arg(&max);
        // SAFETY: the kernel scales n gradients in place.
        launched(PART, unsafe { b.launch(elementwise(n)) }, "clip")
    }

    /// The gradients' norm from the last [`Self::clip_global_norm`] (one
    /// scalar copied to the host).
    pub fn grad_norm(&self) -> Result<f64> {
        let stats = self
            .stream
            .clone_dtoh(&self.stats)
            .map_err(|e| err("copy", e))?;
        Ok(stats[GRAD_SQUARES].sqrt())
    }

    /// One update with rate `lr` of the flat `params` from the flat `grads`.
    pub fn update(
        &mut self,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        lr: f64,
    ) -> Result<()> {
        let step = self.step;
        if let DeviceStates::Adam { m, v } = &mut self.states {
            let AdamStep {
                b1,
                b2,
                lr_t,
                decay,
                eps_t,
            } = AdamStep::new(self.cfg, step, lr);
            let n = self.layout.len;
            let n64 = n as u64;
            let mut b = self.stream.launch_builder(&self.k.adamw);
            b.arg(&mut *params).arg(grads).arg(m).arg(v).arg(&n64);
            b.arg(&b1).arg(&b2).arg(&lr_t).arg(&decay).arg(&eps_t);
            // SAFETY: the kernel updates the n values of each flat buffer.
            launched(PART, unsafe { b.launch(elementwise(n)) }, "adamw")?;
            self.step += 1;
            return Ok(());
        }
        let OptimizerConfig::Adafactor {
            decay_rate,
            clipping_threshold,
            multiply_by_parameter_scale,
            ..
        } = self.cfg
        else {
            unreachable!("AdamW's state is flat")
        };
        let (decay, mix) = adafactor_rates(decay_rate, step);
        for k in 0..self.layout.params.len() {
            let (at, (r, c)) = self.layout.params[k];
            let n = r * c;
            let n64 = n as u64;
            let bufs = (&mut self.partials, &mut self.stats);
            let p = params.slice(at..at + n);
            sum_into(&self.stream, &self.k, bufs, &p, true, P_SQUARES)?;
            self.adafactor_y(k, grads, (at, r, c), decay, mix)?;
            let bufs = (&mut self.partials, &mut self.stats);
            let y = self.y.slice(0..n);
            sum_into(&self.stream, &self.k, bufs, &y, true, Y_SQUARES)?;
            let (lr32, clip) = (lr as f32, clipping_threshold as f32);
            let scale = multiply_by_parameter_scale as i32;
            let mut p = params.slice_mut(at..at + n);
            let y = self.y.slice(0..n);
            let mut b = self.stream.launch_builder(&self.k.apply);
            b.arg(&mut p).arg(&y).arg(&n64).arg(&self.stats);
            b.arg(&lr32).arg(&clip).arg(&scale);
            // SAFETY: the kernel updates n parameters from n values of y.
            launched(PART, unsafe { b.launch(elementwise(n)) }, "adafactor")?;
        }
        self.step += 1;
        Ok(())
    }

    /// The second moments' update and y = the scaled gradient of parameter
    /// `k` (at offset `at`, r x c).
    fn adafactor_y(
        &mut self,
        k: usize,
        grads: &CudaSlice<f32>,
        (at, r, c): (usize, usize, usize),
        decay: f32,
        mix: f32,
    ) -> Result<()> {
        let n = r * c;
        let (r64, c64, n64) = (r as u64, c as u64, n as u64);
        let g = grads.slice(at..at + n);
        let DeviceStates::Adafactor(states) = &mut self.states else {
            unreachable!("Adafactor's state")
        };
        match &mut states[k] {
            DeviceState::Factored { v_row, v_col } => {
                let rows_first = v_row.len() == r && v_col.len() == c;
                let mut b = self.stream.launch_builder(&self.k.row_sums);
                b.arg(&g).arg(&r64).arg(&c64).arg(&mut self.sums_a);
                // SAFETY: one thread per row, r sums written.
                launched(PART, unsafe { b.launch(elementwise(r)) }, "row sums")?;
                let mut b = self.stream.launch_builder(&self.k.col_sums);
                b.arg(&g).arg(&r64).arg(&c64).arg(&mut self.sums_b);
                // SAFETY: one thread per column, c sums written.
                launched(PART, unsafe { b.launch(elementwise(c)) }, "column sums")?;
                let (s_row, s_col) = if rows_first {
                    (&self.sums_a, &self.sums_b)
                } else {
                    (&self.sums_b, &self.sums_a)
                };
                let (n_row, n_col) = (v_col.len() as f64, v_row.len() as f64);
                for (v, s, count) in [(&mut *v_row, s_row, n_row), (&mut *v_col, s_col, n_col)] {
                    let len = v.len() as u64;
                    let mut b = self.stream.launch_builder(&self.k.moments);
                    b.arg(&mut *v)
                        .arg(s)
                        .arg(&len)
                        .arg(&count)
                        .arg(&decay)
                        .arg(&mix);
                    // SAFETY: len statistics updated from len sums.
                    launched(
                        PART,
                        unsafe { b.launch(elementwise(len as usize)) },
                        "moments",
                    )?;
                }
                // stats[ROW_SUM] = the sum of v_row
                let bufs = (&mut self.partials, &mut self.stats);
                let rows = v_row.slice(..);
                sum_into(&self.stream, &self.k, bufs, &rows, false, ROW_SUM)?;
                let rf = rows_first as i32;
                let mut b = self.stream.launch_builder(&self.k.factored_y);
                b.arg(&g)
                    .arg(&*v_row)
                    .arg(&*v_col)
                    .arg(&r64)
                    .arg(&c64)
                    .arg(&rf);
                b.arg(&self.stats).arg(&mut self.y);
                // SAFETY: n values of y from n gradients.
                launched(PART, unsafe { b.launch(elementwise(n)) }, "adafactor")
            }
            DeviceState::Full { v } => {
                let mut b = self.stream.launch_builder(&self.k.full_y);
                b.arg(&g)
                    .arg(&mut *v)
                    .arg(&mut self.y)
                    .arg(&n64)
                    .arg(&decay)
                    .arg(&mix);
                // SAFETY: n moments and n values of y.
                launched(PART, unsafe { b.launch(elementwise(n)) }, "adafactor")
            }
        }
    }

    /// The state on the host, as [`Optimizer`] keeps it (for checkpoints).
    pub fn states(&self) -> Result<Vec<ParamState>> {
        let get = |s: &CudaSlice<f32>| self.stream.clone_dtoh(s).map_err(|e| err("copy", e));
        match &self.states {
            DeviceStates::Adam { m, v } => {
                let (m, v) = (get(m)?, get(v)?);
                let (m, v) = (self.layout.split(&m), self.layout.split(&v));
                Ok(m.into_iter()
                    .zip(v)
                    .map(|(m, v)| ParamState::Adam { m, v })
                    .collect())
            }
            DeviceStates::Adafactor(states) => states
                .iter()
                .map(|st| {
                    Ok(match st {
                        DeviceState::Factored { v_row, v_col } => ParamState::Factored {
                            v_row: get(v_row)?,
                            v_col: get(v_col)?,
                        },
                        DeviceState::Full { v } => ParamState::Full { v: get(v)? },
                    })
                })
                .collect(),
        }
    }
}

impl super::step::FlatOptimizer<CudaSlice<f32>> for DeviceOptimizer {
    fn clip_global_norm(
        &mut self,
        grads: &mut CudaSlice<f32>,
        max_norm: Option<f64>,
    ) -> Result<()> {
        DeviceOptimizer::clip_global_norm(self, grads, max_norm)
    }
    fn grad_norm(&self) -> Result<f64> {
        DeviceOptimizer::grad_norm(self)
    }
    fn update(
        &mut self,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        lr: f64,
    ) -> Result<()> {
        DeviceOptimizer::update(self, params, grads, lr)
    }
    fn state(&self) -> Result<(Vec<ParamState>, u64)> {
        Ok((self.states()?, self.step))
    }
    fn load_state(&mut self, states: &[ParamState], step: u64) -> Result<()> {
        super::step::check_states(self.cfg, &self.layout, states)?;
        let mut pairs: Vec<(&mut CudaSlice<f32>, Vec<f32>)> = Vec::new();
        match &mut self.states {
            DeviceStates::Adam { m, v } => {
                let (mut hm, mut hv) = (Vec::new(), Vec::new());
                for st in states {
                    if let ParamState::Adam { m, v } = st {
                        hm.extend_from_slice(m);
                        hv.extend_from_slice(v);
                    }
                }
                pairs.push((m, hm));
                pairs.push((v, hv));
            }
            DeviceStates::Adafactor(dev) => {
                for (d, h) in dev.iter_mut().zip(states) {
                    match (d, h) {
                        (
                            DeviceState::Factored { v_row, v_col },
                            ParamState::Factored {
                                v_row: hr,
                                v_col: hc,
                            },
                        ) => {
                            pairs.push((v_row, hr.clone()));
                            pairs.push((v_col, hc.clone()));
                        }
                        (DeviceState::Full { v }, ParamState::Full { v: hv }) => {
                            pairs.push((v, hv.clone()))
                        }
                        _ => unreachable!("checked above"),
                    }
                }
            }
        }
        for (d, h) in pairs {
            // (a buffer holds at least one value: an empty state stays as it is)
            let mut d = d.slice_mut(0..h.len());
            self.stream
                .memcpy_htod(h.as_slice(), &mut d)
                .map_err(|e| err("copy", e))?;
        }
        self.step = step;
        Ok(())
    }
}
