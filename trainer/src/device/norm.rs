//! T5's RMS norm on the GPU (`trainer/cuda/norm.cu`): the CPU fused norm's
//! arithmetic in its order, so the two agree bit for bit. The CPU side is
//! here too ([`cpu_forward`], [`cpu_backward`]: the fused kernel's own
//! row loops), for the check on the device.

use super::{
    copy_arg, grid_for, grid_rows, launched, load, out_args, Bf16Copy, CHAIN_THREADS, NORM,
};
use crate::kernels::{simd, NORM_ROWS};
use crate::Result;
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

/// Rows per block of the row kernels (`ROWS_PER_BLOCK` in norm.cu).
const ROWS_PER_BLOCK: usize = 16;

/// For the error messages.
const PART: &str = "RMS norm";

/// The norm's kernels on one GPU stream.
pub struct DeviceNorm {
    stream: Arc<CudaStream>,
    fwd: CudaFunction,
    bwd_x: CudaFunction,
    bwd_w_partials: CudaFunction,
    bwd_w: CudaFunction,
}

/// Row blocks of the weight gradient's partial sums for `rows` rows.
pub fn weight_blocks(rows: usize) -> usize {
    rows.div_ceil(NORM_ROWS)
}

impl DeviceNorm {
    /// The kernels compiled for `stream`'s GPU and loaded there.
    pub fn new(stream: Arc<CudaStream>, flush_denormals: bool) -> Result<Self> {
        let [fwd, bwd_x, bwd_w_partials, bwd_w] = load(&stream, NORM, flush_denormals)?;
        Ok(DeviceNorm {
            fwd,
            bwd_x,
            bwd_w_partials,
            bwd_w,
            stream,
        })
    }

    fn rows_grid(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1),
            block_dim: (crate::kernels::LANES as u32, ROWS_PER_BLOCK as u32, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `o = x · inv · w` for `rows` rows of `d` values; `inv` per row kept
    /// for the backward; `o`'s bf16 copy in `copy` too, when given (then
    /// `o` unwritten when only products read it). `w` may be a view (a
    /// parameter in a flat buffer).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &CudaSlice<f32>,
        w: &impl DevicePtr<f32>,
        (o, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        inv: &mut CudaSlice<f32>,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        let (rows64, d32) = (rows as u64, d as u32);
        let (w, _w) = w.device_ptr(&self.stream);
        let mut b = self.stream.launch_builder(&self.fwd);
        b.arg(x).arg(&w);
        out_args(&mut b, o, copy, rows * d, PART)?;
        b.arg(inv).arg(&rows64).arg(&d32).arg(&eps);
        // SAFETY: x and o hold rows·d values (o only copied is a null
        // pointer: out_args), w d, inv rows.
        launched(PART, unsafe { b.launch(Self::rows_grid(rows)) }, "forward")
    }

    /// Adds the input gradient to `dx` (the sum's bf16 copy in `copy` too,
    /// when given; `dx` is written in any case) and the weight gradient to `dw` (`partials`:
    /// [`weight_blocks`]`(rows) · d` scratch values). `w` and `dw` may be
    /// views (in flat buffers).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &CudaSlice<f32>,
        g: &CudaSlice<f32>,
        inv: &CudaSlice<f32>,
        w: &impl DevicePtr<f32>,
        (dx, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        (dw, partials): (&mut impl DevicePtrMut<f32>, &mut CudaSlice<f32>),
        rows: usize,
        d: usize,
    ) -> Result<()> {
        let (rows64, d32) = (rows as u64, d as u32);
        let (w, _w) = w.device_ptr(&self.stream);
        let (dw, _dw) = dw.device_ptr_mut(&self.stream);
        let mut b = self.stream.launch_builder(&self.bwd_x);
        b.arg(x).arg(g).arg(inv).arg(&w).arg(dx);
        copy_arg(&mut b, copy, rows * d, PART)?;
        b.arg(&rows64).arg(&d32);
        // SAFETY: x, g, dx hold rows·d values, inv rows, w d.
        launched(PART, unsafe { b.launch(Self::rows_grid(rows)) }, "backward")?;
        let blocks = weight_blocks(rows);
        let cols = grid_rows(d, blocks, CHAIN_THREADS);
        let mut b = self.stream.launch_builder(&self.bwd_w_partials);
        b.arg(x)
            .arg(g)
            .arg(inv)
            .arg(&mut *partials)
            .arg(&rows64)
            .arg(&d32);
        // SAFETY: partials holds blocks·d values.
        launched(PART, unsafe { b.launch(cols) }, "backward")?;
        let blocks64 = blocks as u64;
        let mut b = self.stream.launch_builder(&self.bwd_w);
        b.arg(&*partials).arg(&blocks64).arg(&d32).arg(&dw);
        // d chains over many multiprocessors (CHAIN_THREADS)
        let sums = grid_for(d, CHAIN_THREADS);
        // SAFETY: dw holds d values.
        launched(PART, unsafe { b.launch(sums) }, "backward")
    }
}

/// The CPU fused norm's forward over rows of `w.len()` values: (o, inv).
pub fn cpu_forward(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut o = vec![0f32; x.len()];
    let mut inv = vec![0f32; x.len() / d];
    simd::norm_rows(&mut o, x, &mut inv, w, eps);
    (o, inv)
}

/// The CPU fused norm's backward: dx added to `dx`, and dw added to `dw`
/// block by block of rows, as the fused kernel adds them.
pub fn cpu_backward(x: &[f32], g: &[f32], inv: &[f32], w: &[f32], dx: &mut [f32], dw: &mut [f32]) {
    let d = w.len();
    for (((dx, x), g), iv) in dx
        .chunks_mut(d * NORM_ROWS)
        .zip(x.chunks(d * NORM_ROWS))
        .zip(g.chunks(d * NORM_ROWS))
        .zip(inv.chunks(NORM_ROWS))
    {
        let mut gw = vec![0f32; d];
        simd::norm_rows_grad(dx, x, g, iv, w, &mut gw);
        for (a, b) in dw.iter_mut().zip(&gw) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::test_values;
    use dfdx::prelude::*;

    /// The CPU side of the device check is the trainer's own fused norm:
    /// the same output, input gradient and weight gradient, bit for bit
    /// (150 rows: three weight blocks; d = 72: a tail past the lanes).
    #[test]
    fn the_reference_is_the_trainers_cpu_norm() {
        let (b, s, d) = (3, 50, 72);
        let mut seed = 3;
        let x = test_values(&mut seed, b * s * d, 1.0);
        let w = test_values(&mut seed, d, 1.0);
        let g = test_values(&mut seed, b * s * d, 1.0);
        let dev = Cpu::default();
        let xt = dev.tensor_from_vec(x.clone(), (b, s, d));
        let wt = dev.tensor_from_vec(w.clone(), (1, d));
        let gt = dev.tensor_from_vec(g.clone(), (b, s, d));
        let out = crate::kernels::rms_norm_cpu(
            xt.clone().leaky_traced(),
            wt.clone().leaky_traced(),
            1e-6,
        )
        .unwrap_or_else(|_| panic!("the CPU kernel"));
        let (o, inv) = cpu_forward(&x, &w, 1e-6);
        assert_eq!(out.as_vec(), o);
        let grads = (out * gt).sum::<Rank0, _>().backward();
        let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; d]);
        cpu_backward(&x, &g, &inv, &w, &mut dx, &mut dw);
        assert_eq!(grads.get(&xt).as_vec(), dx);
        assert_eq!(grads.get(&wt).as_vec(), dw);
    }
}
