//! The per-row loss on the GPU (`trainer/cuda/loss.cu`): t5x's
//! cross-entropy with label smoothing plus z-loss, forward and backward, in
//! the CPU fused loss's order, the gradient in place of the logits (as the
//! CPU's fused output layer makes it). The CPU side is here too
//! ([`cpu_forward`], [`cpu_grad_in_place`]: the fused kernel's own rule),
//! for the check on the device.

use super::{launched, load, out_args, Bf16Copy, LOSS, MAX_GRID_Y};
use crate::kernels::LossRule;
use crate::Result;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Rows per block of the forward (`ROWS_PER_BLOCK` in loss.cu).
const ROWS_PER_BLOCK: usize = 16;

/// For the error messages.
const PART: &str = "loss";

/// The loss's kernels on one GPU stream, for one rule.
pub struct DeviceLoss {
    stream: Arc<CudaStream>,
    fwd: CudaFunction,
    grad: CudaFunction,
}

/// The loss's settings: z-loss factor and label smoothing.
#[derive(Debug, Clone, Copy)]
pub struct LossSettings {
    /// z-loss factor.
    pub z: f32,
    /// Label smoothing.
    pub smoothing: f32,
}

impl DeviceLoss {
    /// The kernels compiled for `stream`'s GPU and loaded there.
    pub fn new(stream: Arc<CudaStream>, flush_denormals: bool) -> Result<Self> {
        let [fwd, grad] = load(&stream, LOSS, flush_denormals)?;
        Ok(DeviceLoss { fwd, grad, stream })
    }

    /// Per row of the `n × v` logits: (weighted loss, weighted
    /// cross-entropy, weighted z-loss, log-sum-exp) into `rows` (4n).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &CudaSlice<f32>,
        (n, v): (usize, usize),
        targets: &CudaSlice<u32>,
        weights: &CudaSlice<f32>,
        s: LossSettings,
        rows: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let [z, smoothing, confidence, low, constant] = LossRule::new(s.z, s.smoothing, v).params();
        let (n64, v32) = (n as u64, v as u32);
        let mut b = self.stream.launch_builder(&self.fwd);
        b.arg(x).arg(&n64).arg(&v32).arg(targets).arg(weights);
        b.arg(&z)
            .arg(&smoothing)
            .arg(&confidence)
            .arg(&low)
            .arg(&constant);
        b.arg(rows);
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1),
            block_dim: (crate::kernels::LANES as u32, ROWS_PER_BLOCK as u32, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: x holds n·v values, targets and weights n, rows 4n.
        launched(PART, unsafe { b.launch(cfg) }, "forward")
    }

    /// The logits `x` (`n × v`) become the loss's gradient (its bf16
    /// copy in `copy` too, when given: then `x` keeps the logits when only
    /// products read the gradient), from the upstream gradient per row
    /// `g_out` and the forward's `rows`.
    #[allow(clippy::too_many_arguments)]
    pub fn grad_in_place(
        &self,
        x: &mut CudaSlice<f32>,
        copy: Option<&mut Bf16Copy>,
        (n, v): (usize, usize),
        targets: &CudaSlice<u32>,
        weights: &CudaSlice<f32>,
        (g_out, rows): (&CudaSlice<f32>, &CudaSlice<f32>),
        s: LossSettings,
    ) -> Result<()> {
        let [z, _, confidence, low, _] = LossRule::new(s.z, s.smoothing, v).params();
        let (n64, v32) = (n as u64, v as u32);
        let mut b = self.stream.launch_builder(&self.grad);
        // (the kernel's input and its output: each value is read before the
        // same thread writes it)
        let x: &CudaSlice<f32> = x;
        b.arg(x);
        out_args(&mut b, x, copy, n * v, PART)?;
        b.arg(&n64).arg(&v32).arg(targets).arg(weights);
        b.arg(g_out).arg(rows).arg(&z).arg(&confidence).arg(&low);
        let cfg = LaunchConfig {
            grid_dim: (
                v.div_ceil(256).clamp(1, 64) as u32,
                n.clamp(1, MAX_GRID_Y) as u32,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: x holds n·v values, the others n (rows 4n).
        launched(PART, unsafe { b.launch(cfg) }, "gradient")
    }
}

/// The CPU fused loss's rows (see [`DeviceLoss::forward`]).
pub fn cpu_forward(
    x: &[f32],
    v: usize,
    targets: &[usize],
    weights: &[f32],
    s: LossSettings,
) -> Vec<[f32; 4]> {
    LossRule::new(s.z, s.smoothing, v).rows(x, v, targets, weights)
}

/// The CPU fused loss's gradient in place of the logits `x` (see
/// [`DeviceLoss::grad_in_place`]), as the fused output layer makes it.
pub fn cpu_grad_in_place(
    x: &mut [f32],
    v: usize,
    targets: &[usize],
    weights: &[f32],
    (g_out, rows): (&[f32], &[[f32; 4]]),
    s: LossSettings,
) {
    LossRule::new(s.z, s.smoothing, v).grad_in_place(x, v, targets, weights, (g_out, rows));
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::prelude::*;

    /// The CPU side of the device check is the trainer's own fused loss:
    /// the same per-row losses and gradient, bit for bit, with and without
    /// label smoothing (v = 1000: a tail past the lanes).
    #[test]
    fn the_reference_is_the_trainers_cpu_loss() {
        let (n, v) = (40, 1000);
        let mut seed = 9u64;
        let x = crate::device::test_values(&mut seed, n * v, 8.0);
        let targets: Vec<usize> = (0..n).map(|i| (i * 37) % v).collect();
        let weights: Vec<f32> = (0..n).map(|i| if i % 7 == 3 { 0.0 } else { 1.0 }).collect();
        let g_out = crate::device::test_values(&mut seed, n, 1.0);
        let dev = Cpu::default();
        for s in [
            LossSettings {
                z: 1e-4,
                smoothing: 0.0,
            },
            LossSettings {
                z: 1e-4,
                smoothing: 0.1,
            },
        ] {
            let xt = dev.tensor_from_vec(x.clone(), (n, v));
            let r = crate::kernels::row_loss_cpu(
                xt.clone().leaky_traced(),
                &targets,
                &weights,
                s.z,
                s.smoothing,
            )
            .unwrap_or_else(|_| panic!("the CPU kernel"));
            let rows = cpu_forward(&x, v, &targets, &weights, s);
            assert_eq!(
                r.loss.as_vec(),
                rows.iter().map(|r| r[0]).collect::<Vec<_>>()
            );
            let gt = dev.tensor_from_vec(g_out.clone(), (n,));
            let grads = (r.loss * gt).sum::<Rank0, _>().backward();
            let mut d = x.clone();
            cpu_grad_in_place(&mut d, v, &targets, &weights, (&g_out, &rows), s);
            assert_eq!(grads.get(&xt).as_vec(), d, "{s:?}");
        }
    }
}
