//! The optimizer step on the GPU: parameters, gradients and moments in flat
//! device buffers, AdamW / t5x Adafactor / global-norm clipping as the
//! kernels of `trainer/cuda/optimizer.cu`, launched through `cudarc` on a
//! stream of the primary context (the one dfdx's device uses too). Nothing
//! goes to the host per step; [`DeviceOptimizer::grad_norm`] copies the one
//! logged scalar when asked.
//!
//! What it computes is [`super::twin`]'s computation, bit for bit.

use super::twin::FlatLayout;
use super::{
    gpu_error, grid_rows, launched, load, memory_error, BLOCKS, CHAIN_THREADS, MAX_GRID_Y,
    OPTIMIZER, THREADS,
};
use crate::optim::{adafactor_rates, state_lens, AdamStep, OptimizerConfig, ParamState, StateLens};
use crate::{Result, TrainError};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Slots of each parameter's four statistics in the device's scalar buffer
/// (`stats[k * 4 + slot]`); the gradients' sum of squares is parameter 0's
/// last slot (the global norm's one-entry table).
const ROW_SUM: u32 = 0;
const Y_SQUARES: u32 = 1;
const P_SQUARES: u32 = 2;
const GRAD_SQUARES: u32 = 3;

/// A parameter table's fields per parameter (`T5_FIELDS`), in the order
/// `optimizer.cu` reads them (`F_*`): offset, rows, columns, state offset,
/// sums offset, kind.
pub(crate) const FIELDS: usize = 6;
/// The kinds (`FULL`, `ROWS_FIRST`, `COLS_FIRST`).
const FULL: u64 = 0;
const ROWS_FIRST: u64 = 1;
const COLS_FIRST: u64 = 2;

/// For the error messages.
const PART: &str = "optimizer";

fn err(what: &str, e: impl std::fmt::Debug) -> TrainError {
    gpu_error(PART, what, e)
}

/// Adafactor's statistics of every parameter, flat, and where each lives.
struct FlatStates {
    /// (offset, kind, v_row's length, v_col's length) of each parameter's
    /// statistics (a full moment: its length, 0).
    at: Vec<(usize, u64, usize, usize)>,
    /// Values in all.
    len: usize,
    /// The batched launches' parameter table (`FIELDS` per parameter).
    table: Vec<u64>,
    /// Row and column sums in all (the factored parameters').
    sums: usize,
}

impl FlatStates {
    fn new(cfg: OptimizerConfig, layout: &FlatLayout) -> Self {
        let (mut len, mut sums) = (0, 0);
        let mut at = Vec::new();
        let mut table = Vec::with_capacity(FIELDS * layout.params.len());
        for &(off, (r, c)) in &layout.params {
            let (kind, n0, n1) = match state_lens(cfg, (r, c)) {
                StateLens::Factored(n0, n1) if n0 == r && n1 == c => (ROWS_FIRST, n0, n1),
                StateLens::Factored(n0, n1) => (COLS_FIRST, n0, n1),
                StateLens::Full(n) => (FULL, n, 0),
                StateLens::Adam(_) => unreachable!("Adafactor's state"),
            };
            at.push((len, kind, n0, n1));
            table.extend([off, r, c, len, sums].map(|x| x as u64));
            table.push(kind);
            len += n0 + n1;
            if kind != FULL {
                sums += r + c;
            }
        }
        FlatStates {
            at,
            len,
            table,
            sums,
        }
    }

    /// Each parameter's state from the flat statistics.
    fn split(&self, flat: &[f32]) -> Vec<ParamState> {
        self.at
            .iter()
            .map(|&(at, kind, n0, n1)| match kind {
                FULL => ParamState::Full {
                    v: flat[at..at + n0].to_vec(),
                },
                _ => ParamState::Factored {
                    v_row: flat[at..at + n0].to_vec(),
                    v_col: flat[at + n0..at + n0 + n1].to_vec(),
                },
            })
            .collect()
    }

    /// The flat statistics of `states` (checked against the layout).
    fn flatten(&self, states: &[ParamState]) -> Vec<f32> {
        let mut flat = Vec::with_capacity(self.len);
        for st in states {
            match st {
                ParamState::Factored { v_row, v_col } => {
                    flat.extend_from_slice(v_row);
                    flat.extend_from_slice(v_col);
                }
                ParamState::Full { v } => flat.extend_from_slice(v),
                ParamState::Adam { .. } => unreachable!("checked: Adafactor's state"),
            }
        }
        flat
    }
}

/// The optimizer's state on the GPU (one an optimizer: its variants' sizes
/// do not matter).
#[allow(clippy::large_enum_variant)]
enum DeviceStates {
    /// AdamW: the moments of every parameter, flat in the parameters'
    /// layout (one launch updates them all).
    Adam {
        m: CudaSlice<f32>,
        v: CudaSlice<f32>,
    },
    /// Adafactor: every parameter's statistics in one flat buffer; each of
    /// its kernels is launched once for all parameters (parameter k along
    /// the grid's y) from a parameter table on the device.
    Adafactor {
        layout: FlatStates,
        v: CudaSlice<f32>,
        table: CudaSlice<u64>,
        sums: CudaSlice<f64>,
        /// The scaled gradients, in the parameters' layout.
        y: CudaSlice<f32>,
        /// The element-wise kernels' work: (parameter, first value) a
        /// block, [`CHUNK`] values each ([`chunks`]).
        chunks: CudaSlice<u64>,
    },
}

/// Values a block of Adafactor's element-wise kernels takes (`T5_CHUNK`).
pub(crate) const CHUNK: usize = THREADS * 16;

/// Each parameter's values in pieces of at most [`CHUNK`]: (parameter,
/// first value) pairs, one a block of the element-wise kernels, so that a
/// block knows its parameter without a search and none is idle.
fn chunks(layout: &FlatLayout) -> Vec<u64> {
    let mut out = Vec::new();
    for (k, &(_, (r, c))) in layout.params.iter().enumerate() {
        for start in (0..r * c).step_by(CHUNK) {
            out.extend([k as u64, start as u64]);
        }
    }
    out
}

struct Kernels {
    sum_partials_by_param: CudaFunction,
    sum_partials: CudaFunction,
    clip_by_norm: CudaFunction,
    adamw: CudaFunction,
    sums: CudaFunction,
    moments: CudaFunction,
    y: CudaFunction,
    apply: CudaFunction,
}

/// An optimizer whose state lives on the GPU.
pub struct DeviceOptimizer {
    cfg: OptimizerConfig,
    layout: FlatLayout,
    stream: Arc<CudaStream>,
    k: Kernels,
    states: DeviceStates,
    /// The global norm's table: all gradients as one parameter.
    all: CudaSlice<u64>,
    partials: CudaSlice<f64>,
    stats: CudaSlice<f64>,
    /// Updates done.
    pub step: u64,
}

/// A grid for an element-wise kernel over `n` values of each of `params`
/// parameters (along y); its result does not depend on the grid: each
/// value is computed alone.
fn elementwise(n: usize, params: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS).clamp(1, 8 * BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, params as u32, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The grid of a `*_partials` kernel: the order of the sums depends on it.
fn reduction(blocks: usize, params: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, params as u32, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// stats[k * 4 + slot] = parameter k's sum of squares of `x` (`what` 0) or
/// of its v_row (`what` 1, `x` the flat statistics), for the `params`
/// parameters of `table`, in the twin's order ([`super::twin::grid_sum`]).
fn sums_into(
    stream: &CudaStream,
    k: &Kernels,
    (partials, stats): (&mut CudaSlice<f64>, &mut CudaSlice<f64>),
    (x, table, params): (&CudaSlice<f32>, &CudaSlice<u64>, usize),
    what: i32,
    slot: u32,
) -> Result<()> {
    let mut b = stream.launch_builder(&k.sum_partials_by_param);
    b.arg(x).arg(table).arg(&what).arg(&mut *partials);
    // SAFETY: block (b, k) reads parameter k's values as its table entry
    // says and writes partials[k * BLOCKS + b].
    launched(PART, unsafe { b.launch(reduction(BLOCKS, params)) }, "sum")?;
    let mut b = stream.launch_builder(&k.sum_partials);
    b.arg(&*partials).arg(stats).arg(&slot);
    // SAFETY: block k adds its BLOCKS partials into stats[k * 4 + slot].
    launched(PART, unsafe { b.launch(reduction(params, 1)) }, "sum")
}

impl DeviceOptimizer {
    /// An optimizer for the parameters of `layout` on `stream`'s GPU, with
    /// fresh state (as [`crate::optim::Optimizer::new`]); the kernels
    /// compiled for the GPU's architecture, flushing subnormals as asked.
    pub fn new(
        stream: Arc<CudaStream>,
        cfg: OptimizerConfig,
        layout: FlatLayout,
        flush_denormals: bool,
    ) -> Result<Self> {
        let [sum_partials_by_param, sum_partials, clip_by_norm, adamw, sums, moments, y, apply] =
            load(&stream, OPTIMIZER, flush_denormals)?;
        let k = Kernels {
            sum_partials_by_param,
            sum_partials,
            clip_by_norm,
            adamw,
            sums,
            moments,
            y,
            apply,
        };
        let params = layout.params.len();
        if params > MAX_GRID_Y {
            return Err(TrainError::Config(format!(
                "{params} parameters: the GPU optimizer takes at most {MAX_GRID_Y}"
            )));
        }
        let memory = |what: &str, n: usize, size: usize, e| {
            let what = format!("{what} {n} values of its state");
            memory_error(PART, &what, n * size, &stream, e)
        };
        let zeros = |n: usize| {
            stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(|e| memory("allocating", n, 4, e))
        };
        let f64s = |n: usize| {
            stream
                .alloc_zeros::<f64>(n.max(1))
                .map_err(|e| memory("allocating", n, 8, e))
        };
        let upload = |t: &[u64]| {
            stream
                .clone_htod(t)
                .map_err(|e| memory("uploading", t.len(), 8, e))
        };
        let states = match cfg {
            OptimizerConfig::AdamW { .. } => DeviceStates::Adam {
                m: zeros(layout.len)?,
                v: zeros(layout.len)?,
            },
            OptimizerConfig::Adafactor { .. } => {
                let flat = FlatStates::new(cfg, &layout);
                DeviceStates::Adafactor {
                    v: zeros(flat.len)?,
                    table: upload(&flat.table)?,
                    sums: f64s(flat.sums)?,
                    y: zeros(layout.len)?,
                    chunks: upload(&chunks(&layout))?,
                    layout: flat,
                }
            }
        };
        let all = [0, 1, layout.len as u64, 0, 0, FULL];
        Ok(DeviceOptimizer {
            cfg,
            all: upload(&all)?,
            partials: f64s(BLOCKS * params.max(1))?,
            stats: f64s(4 * params.max(1))?,
            layout,
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
        let bufs = (&mut self.partials, &mut self.stats);
        let all = (&*grads, &self.all, 1);
        sums_into(&self.stream, &self.k, bufs, all, 0, GRAD_SQUARES)?;
        let Some(max) = max_norm else { return Ok(()) };
        let n = self.layout.len;
        let n64 = n as u64;
        let slot = GRAD_SQUARES as usize;
        let squares = self.stats.slice(slot..slot + 1);
        let mut b = self.stream.launch_builder(&self.k.clip_by_norm);
        b.arg(&mut *grads).arg(&n64).arg(&squares).arg(&max);
        // SAFETY: the kernel scales n gradients in place.
        launched(PART, unsafe { b.launch(elementwise(n, 1)) }, "clip")
    }

    /// The gradients' norm from the last [`Self::clip_global_norm`] (one
    /// scalar copied to the host).
    pub fn grad_norm(&self) -> Result<f64> {
        let slot = GRAD_SQUARES as usize;
        let stats = self
            .stream
            .clone_dtoh(&self.stats.slice(slot..slot + 1))
            .map_err(|e| err("copy", e))?;
        Ok(stats[0].sqrt())
    }

    /// One update with rate `lr` of the flat `params` from the flat `grads`.
    pub fn update(
        &mut self,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        lr: f64,
    ) -> Result<()> {
        let step = self.step;
        let OptimizerConfig::Adafactor {
            decay_rate,
            clipping_threshold,
            multiply_by_parameter_scale,
            ..
        } = self.cfg
        else {
            let DeviceStates::Adam { m, v } = &mut self.states else {
                unreachable!("AdamW's state is flat")
            };
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
            launched(PART, unsafe { b.launch(elementwise(n, 1)) }, "adamw")?;
            self.step += 1;
            return Ok(());
        };
        let DeviceStates::Adafactor {
            layout: flat,
            v,
            table,
            sums,
            y,
            chunks,
        } = &mut self.states
        else {
            unreachable!("Adafactor's state")
        };
        let (decay, mix) = adafactor_rates(decay_rate, step);
        let params_n = self.layout.params.len();
        let (stream, k) = (&self.stream, &self.k);
        let most_lines = self.layout.params.iter().map(|&(_, (r, c))| r + c);
        let most_lines = most_lines.max().unwrap_or(1);
        // every parameter's sum of squares before its update
        let bufs = (&mut self.partials, &mut self.stats);
        sums_into(stream, k, bufs, (params, table, params_n), 0, P_SQUARES)?;
        if flat.sums > 0 {
            // the factored parameters' row and column sums, their moments,
            // and the sums of their v_row
            let mut b = stream.launch_builder(&k.sums);
            b.arg(grads).arg(&*table).arg(&mut *sums);
            // one thread a line (a tall matrix's columns over many
            // multiprocessors: CHAIN_THREADS)
            let lines = grid_rows(most_lines, params_n, CHAIN_THREADS);
            // SAFETY: each factored parameter's rows + cols sums written at
            // its table's offset.
            launched(PART, unsafe { b.launch(lines) }, "row and column sums")?;
            let mut b = stream.launch_builder(&k.moments);
            b.arg(&mut *v)
                .arg(&*sums)
                .arg(&*table)
                .arg(&decay)
                .arg(&mix);
            // SAFETY: each factored parameter's statistics updated from its
            // sums.
            launched(
                PART,
                unsafe { b.launch(elementwise(most_lines, params_n)) },
                "moments",
            )?;
            let bufs = (&mut self.partials, &mut self.stats);
            sums_into(stream, k, bufs, (v, table, params_n), 1, ROW_SUM)?;
        }
        let mut b = stream.launch_builder(&k.y);
        b.arg(grads).arg(&mut *v).arg(&*table).arg(&*chunks);
        b.arg(&self.stats).arg(&decay).arg(&mix).arg(&mut *y);
        // a block a chunk
        let all = LaunchConfig {
            grid_dim: ((chunks.len() / 2).max(1) as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: each chunk's values of y (and the full moments) from its
        // gradients, at its parameter's offsets in the table.
        launched(PART, unsafe { b.launch(all) }, "adafactor")?;
        let bufs = (&mut self.partials, &mut self.stats);
        sums_into(stream, k, bufs, (y, table, params_n), 0, Y_SQUARES)?;
        let (lr32, clip) = (lr as f32, clipping_threshold as f32);
        let scale = multiply_by_parameter_scale as i32;
        let mut b = stream.launch_builder(&k.apply);
        b.arg(&mut *params).arg(&*y).arg(&*table).arg(&*chunks);
        b.arg(&self.stats).arg(&lr32).arg(&clip).arg(&scale);
        // SAFETY: each chunk's parameters updated from its values of y.
        launched(PART, unsafe { b.launch(all) }, "adafactor")?;
        self.step += 1;
        Ok(())
    }

    /// The state on the host, as [`crate::optim::Optimizer`] keeps it (for
    /// checkpoints).
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
            DeviceStates::Adafactor { layout, v, .. } => Ok(layout.split(&get(v)?)),
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
        let pairs: Vec<(&mut CudaSlice<f32>, Vec<f32>)> = match &mut self.states {
            DeviceStates::Adam { m, v } => {
                let (mut hm, mut hv) = (Vec::new(), Vec::new());
                for st in states {
                    if let ParamState::Adam { m, v } = st {
                        hm.extend_from_slice(m);
                        hv.extend_from_slice(v);
                    }
                }
                vec![(m, hm), (v, hv)]
            }
            DeviceStates::Adafactor { layout, v, .. } => {
                let flat = layout.flatten(states);
                vec![(v, flat)]
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Optimizer;

    /// The flat statistics hold each parameter's state where the table
    /// says: factored both ways (a square one rows first, as t5x factors
    /// ties), unfactored (a vector; a side under 128), in the model's order.
    #[test]
    fn adafactors_flat_statistics_are_each_parameters_state() {
        let shapes = [(300, 1100), (1100, 256), (256, 256), (1, 512), (96, 200)];
        let cfg = OptimizerConfig::adafactor();
        let layout = FlatLayout::new(&shapes);
        let flat = FlatStates::new(cfg, &layout);
        let mut states = Optimizer::new(cfg, &shapes).states;
        let mut x = 0.0;
        for st in &mut states {
            let vs: Vec<&mut Vec<f32>> = match st {
                ParamState::Factored { v_row, v_col } => vec![v_row, v_col],
                ParamState::Full { v } => vec![v],
                ParamState::Adam { .. } => unreachable!(),
            };
            for v in vs {
                v.iter_mut().for_each(|e| {
                    x += 1.0;
                    *e = x
                });
            }
        }
        let values = flat.flatten(&states);
        assert_eq!(values.len(), flat.len);
        assert_eq!(values, (1..=flat.len).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(flat.split(&values), states);
        let (mut state_at, mut sums_at) = (0, 0);
        for (k, (&(at, (r, c)), st)) in layout.params.iter().zip(&states).enumerate() {
            let e = &flat.table[k * FIELDS..(k + 1) * FIELDS];
            let (kind, len) = match st {
                ParamState::Factored { v_row, v_col } => {
                    let kind = if v_row.len() == r && v_col.len() == c {
                        ROWS_FIRST
                    } else {
                        assert_eq!((v_row.len(), v_col.len()), (c, r));
                        COLS_FIRST
                    };
                    (kind, r + c)
                }
                _ => (FULL, r * c),
            };
            let want = [at, r, c, state_at, sums_at].map(|x| x as u64);
            assert_eq!(e[..5], want, "parameter {k}");
            assert_eq!(e[5], kind, "parameter {k}");
            state_at += len;
            if kind != FULL {
                sums_at += r + c;
            }
        }
        assert_eq!((flat.len, flat.sums), (state_at, sums_at));
        let kinds: Vec<u64> = flat.table.chunks(FIELDS).map(|e| e[5]).collect();
        assert_eq!(kinds, [ROWS_FIRST, COLS_FIRST, ROWS_FIRST, FULL, FULL]);
    }
}
