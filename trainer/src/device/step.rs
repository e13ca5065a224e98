//! The whole training step on the GPU: the flat step's forward and
//! backward ([`crate::model::flat`]) on [`CudaBackend`], the gradients'
//! global norm, clipping and the optimizer's update by [`DeviceOptimizer`],
//! parameters, gradients and optimizer state in device buffers. Per step
//! the host sends the batch and receives the loss's per-row values and,
//! when asked, the gradient norm.

use super::cuda_backend::CudaBackend;
use super::gpu_error;
use super::optimizer::DeviceOptimizer;
use super::products::Precision;
use crate::model::flat::{FlatLoss, FlatModel};
use crate::model::{Batch, Dropout, LossConfig};
use crate::optim::OptimizerConfig;
use crate::Result;
use cudarc::driver::CudaSlice;

/// For the error messages.
const PART: &str = "training step";

/// A model's training on one GPU.
pub struct DeviceStep {
    /// The model as the step sees it.
    pub model: FlatModel,
    backend: CudaBackend,
    params: CudaSlice<f32>,
    grads: CudaSlice<f32>,
    optimizer: DeviceOptimizer,
}

impl DeviceStep {
    /// Training of `model` with the flat parameters `params` (in its
    /// layout) on GPU `ordinal`.
    pub fn new(
        model: FlatModel,
        params: &[f32],
        ordinal: usize,
        (optimizer, precision): (OptimizerConfig, Precision),
        flush_denormals: bool,
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
        let ctx = super::gpu_context(ordinal)?;
        let stream = ctx.default_stream();
        let backend = CudaBackend::new(stream.clone(), precision, flush_denormals)?;
        let params = stream
            .clone_htod(params)
            .map_err(|e| gpu_error(PART, "parameters", e))?;
        let grads = stream
            .alloc_zeros::<f32>(model.layout.len)
            .map_err(|e| gpu_error(PART, "gradients", e))?;
        let optimizer =
            DeviceOptimizer::new(stream, optimizer, model.layout.clone(), flush_denormals)?;
        Ok(DeviceStep {
            model,
            backend,
            params,
            grads,
            optimizer,
        })
    }

    /// One step on `batch`: the loss and its gradient, clipped to the
    /// global norm `clip`, then the update with rate `lr`.
    pub fn step(
        &mut self,
        batch: &Batch,
        drop: &mut Dropout,
        loss: &LossConfig,
        (lr, clip): (f64, Option<f64>),
    ) -> Result<FlatLoss> {
        let stream = self.backend.stream().clone();
        stream
            .memset_zeros(&mut self.grads)
            .map_err(|e| gpu_error(PART, "gradients", e))?;
        let out = self.model.loss_and_grads(
            &self.backend,
            &self.params,
            &mut self.grads,
            batch,
            drop,
            loss,
            1.0,
        )?;
        self.optimizer.clip_global_norm(&mut self.grads, clip)?;
        self.optimizer.update(&mut self.params, &self.grads, lr)?;
        Ok(out)
    }

    /// The gradients' norm of the last step (a copy to the host).
    pub fn grad_norm(&self) -> Result<f64> {
        self.optimizer.grad_norm()
    }

    /// The parameters (a copy to the host), in the model's layout.
    pub fn params(&self) -> Result<Vec<f32>> {
        self.backend
            .stream()
            .clone_dtoh(&self.params)
            .map_err(|e| gpu_error(PART, "parameters", e))
    }

    /// Waits for the GPU to finish the queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.backend
            .stream()
            .synchronize()
            .map_err(|e| gpu_error(PART, "synchronize", e))
    }
}
