//! Element-wise fused kernels: residual add, dropout masks, gated GELU.

use dfdx::prelude::*;
use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

/// `a + b` (the residual connections): dfdx's add runs forward and backward
/// on one thread, ~1% of a t5-v1_0-small step's CPU time with the other core idle.
pub fn add<D: Device<f32>, T: Tape<f32, D> + 'static>(
    a: Tensor<(usize, usize, usize), f32, D, T>,
    b: Tensor<(usize, usize, usize), f32, D, T>,
) -> Tensor<(usize, usize, usize), f32, D, T> {
    on_cpu_pair!(a, b, (usize, usize, usize), |a, b| add_cpu(a, b));
    a + b
}

pub(super) fn add_cpu<T: Tape<f32, Cpu>>(a: Cpu3<T>, b: Cpu3<T>) -> Cpu3<T> {
    assert_eq!(a.shape(), b.shape(), "added tensors' shapes");
    let (a, ta) = a.contiguous().split_tape();
    let (b, tb) = b.contiguous().split_tape();
    let mut tape = ta.merge(tb);
    let (av, bv) = (values(&a), values(&b));
    let out = written(av.len(), CHUNK, |i, o| {
        let (x, y) = (&av[i * CHUNK..], &bv[i * CHUNK..]);
        for j in 0..o.len() {
            o[j] = x[j] + y[j];
        }
    });
    let out = a.device().tensor_from_vec(out, *a.shape());
    if T::OWNS_TAPE {
        let (ga, gb, go) = (a.ghost(), b.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&ga, &gb]);
            // one input at a time: `a` and `b` may be the same tensor
            for g in [&ga, &gb] {
                grads
                    .get_or_alloc_mut(g)?
                    .par_chunks_mut(CHUNK)
                    .zip(g_out.par_chunks(CHUNK))
                    .for_each(|(d, g)| d.iter_mut().zip(g).for_each(|(d, g)| *d += g));
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `x ⊙ mask` for a constant mask of `x`'s size in standard order (dropout):
/// one parallel pass each way on the CPU, dfdx's multiply elsewhere.
pub fn mul_mask<S: Shape, D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<S, f32, D, T>,
    mask: Vec<f32>,
) -> Tensor<S, f32, D, T> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let xc = cast::<_, Tensor<S, f32, Cpu, $tape>>(x)
                .ok()
                .expect("checked type");
            return cast(mul_mask_cpu(xc, mask)).ok().expect("same type");
        }};
    }
    on_cpu_tapes!(S, Tensor<S, f32, D, T>, on_cpu);
    let shape = *x.shape();
    let m = x.device().tensor_from_vec(mask, shape);
    x * m
}

pub(super) fn mul_mask_cpu<S: Shape, T: Tape<f32, Cpu>>(
    x: Tensor<S, f32, Cpu, T>,
    mask: Vec<f32>,
) -> Tensor<S, f32, Cpu, T> {
    let (x, mut tape) = x.contiguous().split_tape();
    let xv = values(&x);
    assert_eq!(xv.len(), mask.len(), "mask size");
    let out = written(xv.len(), CHUNK, |i, o| {
        let (x, m) = (&xv[i * CHUNK..], &mask[i * CHUNK..]);
        for j in 0..o.len() {
            o[j] = x[j] * m[j];
        }
    });
    let out = x.device().tensor_from_vec(out, *x.shape());
    if T::OWNS_TAPE {
        let (gx, go) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&gx]);
            grads
                .get_or_alloc_mut(&gx)?
                .par_chunks_mut(CHUNK)
                .zip(g_out.par_chunks(CHUNK))
                .zip(mask.par_chunks(CHUNK))
                .for_each(|((d, g), m)| {
                    for j in 0..d.len() {
                        d[j] += g[j] * m[j];
                    }
                });
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `gelu_new(a) · b`, the gated feed-forward's hidden activation.
pub fn gated_gelu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    a: Tensor<(usize, usize, usize), f32, D, T>,
    b: Tensor<(usize, usize, usize), f32, D, T>,
) -> Tensor<(usize, usize, usize), f32, D, T> {
    on_cpu_pair!(a, b, (usize, usize, usize), |a, b| gated_gelu_cpu(a, b));
    a.fast_gelu() * b
}

pub(super) fn gated_gelu_cpu<T: Tape<f32, Cpu>>(a: Cpu3<T>, b: Cpu3<T>) -> Cpu3<T> {
    let (a, ta) = a.contiguous().split_tape();
    let (b, tb) = b.contiguous().split_tape();
    let mut tape = ta.merge(tb);
    let av = values(&a);
    let bv = values(&b);
    let out = written(av.len(), CHUNK, |i, o| {
        simd::gelu_gate(o, &av[i * CHUNK..], &bv[i * CHUNK..])
    });
    let out = a.device().tensor_from_vec(out, *a.shape());
    if T::OWNS_TAPE {
        let (ga, gb, go) = (a.ghost(), b.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&ga, &gb]);
            let da = grads.get_or_alloc_mut(&ga)?;
            da.par_chunks_mut(CHUNK)
                .zip(av.par_chunks(CHUNK))
                .zip(bv.par_chunks(CHUNK))
                .zip(g_out.par_chunks(CHUNK))
                .for_each(|(((d, x), y), g)| simd::gelu_gate_grad_a(d, x, y, g));
            let db = grads.get_or_alloc_mut(&gb)?;
            db.par_chunks_mut(CHUNK)
                .zip(av.par_chunks(CHUNK))
                .zip(g_out.par_chunks(CHUNK))
                .for_each(|((d, x), g)| simd::gelu_gate_grad_b(d, x, g));
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// The feed-forward's activations with their dropout mask, over a run of
/// values: the fused CPU feed-forward's loops and the GPU kernels' CPU
/// reference (`device::elementwise`), one home.
pub mod activation {
    use super::simd;

    /// Gated: `h = gelu_new(a) · b`, times the mask.
    pub fn gated_forward(h: &mut [f32], a: &[f32], b: &[f32], mask: Option<&[f32]>) {
        simd::gelu_gate(h, a, b);
        if let Some(mask) = mask {
            h.iter_mut().zip(mask).for_each(|(h, k)| *h *= k);
        }
    }

    /// ReLU in place, times the mask.
    pub fn relu_forward(h: &mut [f32], mask: Option<&[f32]>) {
        match mask {
            None => h.iter_mut().for_each(|h| *h = h.max(0.0)),
            Some(mask) => h
                .iter_mut()
                .zip(mask)
                .for_each(|(h, k)| *h = h.max(0.0) * k),
        }
    }

    /// Gated backward from the hidden gradient `g`: through the mask, then
    /// `g ← g · gelu_new'(a) · b` and `gl = g · gelu_new(a)`.
    pub fn gated_backward(
        g: &mut [f32],
        gl: &mut [f32],
        a: &[f32],
        b: &[f32],
        mask: Option<&[f32]>,
    ) {
        if let Some(mask) = mask {
            g.iter_mut().zip(mask).for_each(|(g, k)| *g *= k);
        }
        simd::gelu_gate_grads(g, gl, a, b);
    }

    /// ReLU backward in place from the hidden activation `h` (after the
    /// mask), then through the mask.
    pub fn relu_backward(g: &mut [f32], h: &[f32], mask: Option<&[f32]>) {
        simd::relu_grad(g, h);
        if let Some(mask) = mask {
            g.iter_mut().zip(mask).for_each(|(g, k)| *g *= k);
        }
    }
}
