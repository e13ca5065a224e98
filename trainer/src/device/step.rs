//! The whole training step on one backend: the flat step's forward and
//! backward ([`crate::model::flat`]), the gradients' global norm, clipping
//! and the optimizer's update, parameters, gradients and optimizer state in
//! the backend's buffers. On the GPU ([`CudaBackend`], [`DeviceOptimizer`])
//! the host sends the batch (ahead, while the step before runs:
//! [`TrainStep::prepare`]) and receives the loss's per-row values and,
//! when asked, the gradient norm; on the CPU ([`CpuBackend`],
//! [`HostOptimizer`]) the same code runs on host vectors, which is how the
//! trainer's GPU path is tested without a GPU.

use super::backend::{Backend, CpuBackend};
use super::cuda_backend::CudaBackend;
use super::gpu_error;
use super::optimizer::DeviceOptimizer;
use super::products::Precision;
use super::twin::{FlatLayout, HostOptimizer};
use crate::error::TrainError;
use crate::model::flat::{FlatLoss, FlatModel, Inputs, PendingLoss};
use crate::model::{Batch, Dropout, LossConfig};
use crate::optim::{OptimizerConfig, ParamState};
use crate::Result;

/// For the error messages.
const PART: &str = "training step";

/// An optimizer over flat buffers `B`: global-norm clipping and updates,
/// its state readable and loadable as [`crate::optim::Optimizer`] keeps it
/// (checkpoints are one format wherever they were made).
pub trait FlatOptimizer<B> {
    /// Scales `grads` so that their global L2 norm is at most `max_norm`.
    fn clip_global_norm(&mut self, grads: &mut B, max_norm: Option<f64>) -> Result<()>;
    /// The norm before the last clipping.
    fn grad_norm(&self) -> Result<f64>;
    /// One update with rate `lr`.
    fn update(&mut self, params: &mut B, grads: &B, lr: f64) -> Result<()>;
    /// The state per parameter and the updates done.
    fn state(&self) -> Result<(Vec<ParamState>, u64)>;
    /// Replaces the state (from a checkpoint).
    fn load_state(&mut self, states: &[ParamState], step: u64) -> Result<()>;
}

/// `states` fit the parameters of `layout` under `cfg` (a checkpoint of
/// this model and optimizer).
pub(crate) fn check_states(
    cfg: OptimizerConfig,
    layout: &FlatLayout,
    states: &[ParamState],
) -> Result<()> {
    use crate::optim::{state_lens, StateLens};
    let fits =
        |&(_, shape): &(usize, (usize, usize)), s: &ParamState| match (state_lens(cfg, shape), s) {
            (StateLens::Adam(n), ParamState::Adam { m, v }) => m.len() == n && v.len() == n,
            (StateLens::Factored(a, b), ParamState::Factored { v_row, v_col }) => {
                v_row.len() == a && v_col.len() == b
            }
            (StateLens::Full(n), ParamState::Full { v }) => v.len() == n,
            _ => false,
        };
    if layout.params.len() == states.len()
        && layout.params.iter().zip(states).all(|(p, s)| fits(p, s))
    {
        Ok(())
    } else {
        Err(TrainError::Config(
            "the optimizer state does not fit this model and optimizer".into(),
        ))
    }
}

/// A backend the whole step runs on: its optimizer, and zeroing in place.
pub trait StepBackend: Backend {
    /// The optimizer on this backend's buffers.
    type Optimizer: FlatOptimizer<Self::Buf>;
    /// Fresh optimizer state for the parameters of `layout`.
    fn optimizer(&self, cfg: OptimizerConfig, layout: FlatLayout) -> Result<Self::Optimizer>;
    /// Sets `b` to zeros.
    fn fill_zeros(&self, b: &mut Self::Buf) -> Result<()>;
    /// Waits for the queued work.
    fn synchronize(&self) -> Result<()>;
    /// Where the step runs, for people.
    fn describe(&self) -> String;
    /// `f`, timed under `name` when the backend profiles
    /// ([`super::profile`]).
    fn timed<T>(&self, _name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        f()
    }
    /// The profile since the last call over `steps` steps, when profiling.
    fn profile(&self, _steps: usize) -> Result<Option<String>> {
        Ok(None)
    }
    /// The most device memory the step's buffers held at once (bytes), on
    /// a GPU.
    fn peak_memory(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

impl StepBackend for CpuBackend {
    type Optimizer = HostOptimizer;
    fn optimizer(&self, cfg: OptimizerConfig, layout: FlatLayout) -> Result<HostOptimizer> {
        Ok(HostOptimizer::new(cfg, layout))
    }
    fn fill_zeros(&self, b: &mut Vec<f32>) -> Result<()> {
        b.iter_mut().for_each(|x| *x = 0.0);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "the GPU's step code on the CPU".into()
    }
}

impl StepBackend for CudaBackend {
    type Optimizer = DeviceOptimizer;
    fn optimizer(&self, cfg: OptimizerConfig, layout: FlatLayout) -> Result<DeviceOptimizer> {
        let stream = self.stream().clone();
        DeviceOptimizer::new(stream, cfg, layout, self.flush_denormals())
    }
    fn fill_zeros(&self, b: &mut cudarc::driver::CudaSlice<f32>) -> Result<()> {
        self.stream()
            .memset_zeros(b)
            .map_err(|e| gpu_error(PART, "zeros", e))
    }
    fn synchronize(&self) -> Result<()> {
        self.stream()
            .synchronize()
            .map_err(|e| gpu_error(PART, "synchronize", e))
    }
    fn describe(&self) -> String {
        let ctx = self.stream().context();
        let name = ctx.name().unwrap_or_else(|_| "a GPU".into());
        let memory = match ctx.total_mem() {
            Ok(b) => format!(", {}", super::size(b as u64)),
            Err(_) => String::new(),
        };
        format!(
            "GPU {} ({name}{memory}), products in {}",
            ctx.ordinal(),
            self.precision()
        )
    }
    fn timed<T>(&self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.profile.time(name, f)
    }
    fn profile(&self, steps: usize) -> Result<Option<String>> {
        self.profile.report(steps)
    }
    fn peak_memory(&self) -> Result<Option<u64>> {
        super::peak_memory(self.stream().context())
            .map(Some)
            .map_err(|e| gpu_error(PART, "peak memory", e))
    }
}

/// A model's training on one backend.
pub struct DeviceStep<B: StepBackend> {
    /// The model as the step sees it.
    pub model: FlatModel,
    backend: B,
    params: B::Buf,
    grads: B::Buf,
    optimizer: B::Optimizer,
    /// A batch's inputs uploaded ahead ([`TrainStep::prepare`]).
    ahead: Option<(Batch, Inputs<B>)>,
    /// The queued micro-batches' losses, in order ([`TrainStep::losses`]).
    pending: Vec<PendingLoss<B>>,
}

impl DeviceStep<CudaBackend> {
    /// Training of `model` with the flat parameters `params` (in its
    /// layout) on GPU `ordinal`.
    pub fn new(
        model: FlatModel,
        params: &[f32],
        ordinal: usize,
        (optimizer, precision): (OptimizerConfig, Precision),
        flush_denormals: bool,
    ) -> Result<Self> {
        let ctx = super::gpu_context(ordinal)?;
        let backend = CudaBackend::new(ctx.default_stream(), precision, flush_denormals)?;
        Self::on(backend, model, params, optimizer)
    }
}

impl<B: StepBackend> DeviceStep<B> {
    /// `batch`'s inputs: those sent ahead when they are its (true), else
    /// sent now.
    fn inputs_for(&mut self, batch: &Batch) -> Result<(Inputs<B>, bool)> {
        Ok(match self.ahead.take() {
            Some((b, inputs)) if b == *batch => (inputs, true),
            _ => (self.model.inputs(&self.backend, batch)?, false),
        })
    }
}

impl DeviceStep<CpuBackend> {
    /// Training of `model` with the flat parameters `params` on the CPU,
    /// through the GPU's code path.
    pub fn cpu(model: FlatModel, params: &[f32], optimizer: OptimizerConfig) -> Result<Self> {
        Self::on(CpuBackend, model, params, optimizer)
    }
}

impl<B: StepBackend> DeviceStep<B> {
    /// Training of `model` with the flat parameters `params` on `backend`.
    pub fn on(
        backend: B,
        model: FlatModel,
        params: &[f32],
        optimizer: OptimizerConfig,
    ) -> Result<Self> {
        if params.len() != model.layout.len {
            return Err(gpu_error(
                PART,
                "parameters",
                format!(
                    "{} values for a layout of {}",
                    params.len(),
                    model.layout.len
                ),
            ));
        }
        // the model's own memory, whatever the batch
        let model_memory = advice(format!(
            "the model itself does not fit: its {} parameters with their gradients and the \
             optimizer's state",
            params.len()
        ));
        let optimizer = backend
            .optimizer(optimizer, model.layout.clone())
            .map_err(&model_memory)?;
        Ok(DeviceStep {
            params: backend.upload(params).map_err(&model_memory)?,
            grads: backend.zeros(model.layout.len).map_err(&model_memory)?,
            model,
            backend,
            optimizer,
            ahead: None,
            pending: Vec::new(),
        })
    }
}

/// What needs less memory when a batch's pass does not fit on the GPU.
const BATCH_ADVICE: &str = "a smaller --batch-size (with --grad-accum to keep the batch) or a \
                            shorter --sequence-length needs less";

/// An error with `advice` added when it is [`TrainError::OutOfMemory`].
fn advice(advice: impl std::fmt::Display) -> impl Fn(TrainError) -> TrainError {
    move |e| match e {
        TrainError::OutOfMemory(m) => TrainError::OutOfMemory(format!("{m}: {advice}")),
        e => e,
    }
}

/// A training step on some backend, as the trainer drives it (one type
/// for every backend: `Box<dyn TrainStep>`).
pub trait TrainStep {
    /// The model as the step sees it.
    fn model(&self) -> &FlatModel;
    /// Sets the gradients to zero (before a step's first micro-batch; the
    /// losses not read are dropped).
    fn zero_grads(&mut self) -> Result<()>;
    /// The loss of `batch` and its gradient added to the gradients,
    /// queued: the loss is read by [`Self::losses`].
    fn accumulate(&mut self, batch: &Batch, drop: &mut Dropout, loss: &LossConfig) -> Result<()>;
    /// Sends `batch`'s inputs to the backend ahead of its
    /// [`Self::accumulate`], while the queued work runs: the host's part
    /// of the next batch overlaps the device's work on this one.
    fn prepare(&mut self, batch: &Batch) -> Result<()>;
    /// The losses of the micro-batches queued since the last call, in
    /// order (waits for them).
    fn losses(&mut self) -> Result<Vec<FlatLoss>>;
    /// The loss of `batch` without dropout or gradients (held-out data).
    fn loss(&self, batch: &Batch, loss: &LossConfig) -> Result<FlatLoss>;
    /// Clips the gradients to the global norm `clip` (the norm stays on
    /// the backend: [`Self::grad_norm`]).
    fn clip(&mut self, clip: Option<f64>) -> Result<()>;
    /// The update with rate `lr` from the (clipped) gradients.
    fn update(&mut self, lr: f64) -> Result<()>;
    /// The gradients' norm of the last step (a copy to the host).
    fn grad_norm(&self) -> Result<f64>;
    /// The parameters (a copy to the host), in the model's layout.
    fn params(&self) -> Result<Vec<f32>>;
    /// The optimizer's state and updates done (copies to the host).
    fn optimizer_state(&self) -> Result<(Vec<ParamState>, u64)>;
    /// Loads the optimizer's state (a resumed run).
    fn load_optimizer_state(&mut self, states: &[ParamState], step: u64) -> Result<()>;
    /// Waits for the queued work.
    fn synchronize(&self) -> Result<()>;
    /// Where the step runs, for people.
    fn describe(&self) -> String;
    /// Where the GPU's time went since the last call, over `steps` steps,
    /// when profiling (`T5MIX_GPU_PROFILE`, [`super::profile`]).
    fn profile(&self, steps: usize) -> Result<Option<String>>;
    /// The most device memory the step's buffers have held at once
    /// (bytes), on a GPU.
    fn peak_memory(&self) -> Result<Option<u64>>;

    /// One step on `batch`: the loss and its gradient, clipped to the
    /// global norm `clip`, then the update with rate `lr`; the `next`
    /// step's batch prepared while it runs.
    fn step(
        &mut self,
        (batch, next): (&Batch, Option<&Batch>),
        drop: &mut Dropout,
        loss: &LossConfig,
        (lr, clip): (f64, Option<f64>),
    ) -> Result<FlatLoss> {
        self.zero_grads()?;
        self.accumulate(batch, drop, loss)?;
        self.clip(clip)?;
        self.update(lr)?;
        if let Some(next) = next {
            self.prepare(next)?;
        }
        let out = self.losses()?;
        out.last()
            .copied()
            .ok_or_else(|| gpu_error(PART, "loss", "no micro-batch queued"))
    }
}

impl<B: StepBackend> TrainStep for DeviceStep<B> {
    fn model(&self) -> &FlatModel {
        &self.model
    }
    fn zero_grads(&mut self) -> Result<()> {
        self.pending.clear();
        let (be, grads) = (&self.backend, &mut self.grads);
        be.timed("zero gradients", || be.fill_zeros(grads))
    }
    fn accumulate(&mut self, batch: &Batch, drop: &mut Dropout, loss: &LossConfig) -> Result<()> {
        let (inputs, _) = self.inputs_for(batch).map_err(advice(BATCH_ADVICE))?;
        let be = &self.backend;
        let pending = self
            .model
            .queue_loss_and_grads(
                be,
                &self.params,
                &mut self.grads,
                (batch, inputs),
                drop,
                loss,
                1.0,
            )
            .map_err(advice(BATCH_ADVICE))?;
        self.pending.push(pending);
        Ok(())
    }
    fn prepare(&mut self, batch: &Batch) -> Result<()> {
        let inputs = self
            .model
            .inputs(&self.backend, batch)
            .map_err(advice(BATCH_ADVICE))?;
        self.ahead = Some((batch.clone(), inputs));
        Ok(())
    }
    fn losses(&mut self) -> Result<Vec<FlatLoss>> {
        let be = &self.backend;
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| p.resolve(be))
            .collect()
    }
    fn loss(&self, batch: &Batch, loss: &LossConfig) -> Result<FlatLoss> {
        self.model
            .loss(
                &self.backend,
                &self.params,
                batch,
                &mut Dropout::off(),
                loss,
            )
            .map_err(advice(BATCH_ADVICE))
    }
    fn clip(&mut self, clip: Option<f64>) -> Result<()> {
        let (opt, grads) = (&mut self.optimizer, &mut self.grads);
        let clip_norm = || opt.clip_global_norm(grads, clip);
        self.backend.timed("optimizer: norm and clip", clip_norm)
    }
    fn update(&mut self, lr: f64) -> Result<()> {
        let (opt, params, grads) = (&mut self.optimizer, &mut self.params, &self.grads);
        self.backend
            .timed("optimizer: update", || opt.update(params, grads, lr))
    }
    fn grad_norm(&self) -> Result<f64> {
        self.optimizer.grad_norm()
    }
    fn params(&self) -> Result<Vec<f32>> {
        self.backend.download(&self.params)
    }
    fn optimizer_state(&self) -> Result<(Vec<ParamState>, u64)> {
        self.optimizer.state()
    }
    fn load_optimizer_state(&mut self, states: &[ParamState], step: u64) -> Result<()> {
        self.optimizer.load_state(states, step)
    }
    fn synchronize(&self) -> Result<()> {
        self.backend.synchronize()
    }
    fn describe(&self) -> String {
        self.backend.describe()
    }
    fn profile(&self, steps: usize) -> Result<Option<String>> {
        self.backend.profile(steps)
    }
    fn peak_memory(&self) -> Result<Option<u64>> {
        self.backend.peak_memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::flat::tests::{batch, tiny};
    use crate::model::T5;
    use dfdx::prelude::Cpu;

    fn step_on_cpu() -> DeviceStep<CpuBackend> {
        let model = T5::new(tiny(true, false), &Cpu::default(), Some(3));
        let flat = model.flat_model();
        let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
        let params = flat.layout.flatten(&host);
        DeviceStep::cpu(flat, &params, OptimizerConfig::adamw()).unwrap()
    }

    /// Inputs sent ahead serve their own batch only, and steps with them
    /// are the steps without, bit for bit.
    #[test]
    fn inputs_sent_ahead_serve_their_batch_only() {
        let batches: Vec<Batch> = (0..3)
            .map(|i| {
                let mut b = batch(i == 1, 3);
                b.enc_tokens[0] = 10 + i;
                b
            })
            .collect();
        let run = |ahead: bool| {
            let mut st = step_on_cpu();
            let mut out = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                let next = batches.get(i + 1).filter(|_| ahead);
                let mut drop = Dropout::new(0.1, 1, i as u64, 0);
                let cfg = LossConfig::default();
                out.push(
                    st.step((b, next), &mut drop, &cfg, (1e-2, Some(1.0)))
                        .unwrap()
                        .loss,
                );
            }
            out.extend(st.params().unwrap());
            out.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(run(true), run(false));
        let mut st = step_on_cpu();
        st.prepare(&batches[1]).unwrap();
        assert!(st.inputs_for(&batches[1]).unwrap().1, "its own inputs");
        assert!(!st.inputs_for(&batches[1]).unwrap().1, "used once");
        st.prepare(&batches[1]).unwrap();
        assert!(!st.inputs_for(&batches[2]).unwrap().1, "another batch's");
    }
}
