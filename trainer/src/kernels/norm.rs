//! T5's RMS norm (no mean, no bias), forward and backward in one pass per row block.

use dfdx::prelude::*;
use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

/// T5's RMS norm over the last axis, `x · w / sqrt(mean(x²) + eps)`, for
/// `x: [b, s, d]` and the weight `w` stored `[d, 1]` or `[1, d]`; `Err`
/// gives the inputs back on other devices (the caller composes dfdx
/// primitives there). dfdx's composition is ~9 one-thread passes forward
/// and ~15 backward, each allocating its output.
#[allow(clippy::type_complexity)]
pub fn rms_norm_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<(usize, usize, usize), f32, D, T>,
    w: Tensor<(usize, usize), f32, D, T>,
    eps: f32,
) -> Result<
    Tensor<(usize, usize, usize), f32, D, T>,
    (
        Tensor<(usize, usize, usize), f32, D, T>,
        Tensor<(usize, usize), f32, D, T>,
    ),
> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let xc = cast::<_, Cpu3<$tape>>(x).ok().expect("checked type");
            let wc = cast::<_, Cpu2<$tape>>(w)
                .ok()
                .expect("same device and tape");
            return Ok(cast(rms_norm_impl(xc, wc, eps)).ok().expect("same type"));
        }};
    }
    on_cpu_tapes!((usize, usize, usize), Tensor<(usize, usize, usize), f32, D, T>, on_cpu);
    Err((x, w))
}

/// Rows per rayon task in the norm.
pub(crate) const NORM_ROWS: usize = 64;

pub(super) fn rms_norm_impl<T: Tape<f32, Cpu>>(x: Cpu3<T>, w: Cpu2<T>, eps: f32) -> Cpu3<T> {
    let (x, tx) = x.contiguous().split_tape();
    let (w, tw) = w.contiguous().split_tape();
    let mut tape = tx.merge(tw);
    let d = x.shape().2;
    let xv = values(&x);
    let wv = values(&w);
    assert_eq!(wv.len(), d, "norm weight size");
    let rows = xv.len() / d.max(1);
    let mut inv = vec![0f32; rows];
    let mut out = vec![0f32; xv.len()];
    out.par_chunks_mut(d * NORM_ROWS)
        .zip(xv.par_chunks(d * NORM_ROWS))
        .zip(inv.par_chunks_mut(NORM_ROWS))
        .for_each(|((o, x), iv)| {
            simd::norm_rows(o, x, iv, &wv, eps);
        });
    let out = x.device().tensor_from_vec(out, *x.shape());
    if T::OWNS_TAPE {
        let (gx, gw, go) = (x.ghost(), w.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&gx, &gw]);
            let dx = grads.get_or_alloc_mut(&gx)?;
            // dx = i·w·g − x·i³/d·Σₖ gₖwₖxₖ; per block, the weight gradient's
            // partial sums Σ g·x·i (added in block order: deterministic)
            let partial: Vec<Vec<f32>> = dx
                .par_chunks_mut(d * NORM_ROWS)
                .zip(xv.par_chunks(d * NORM_ROWS))
                .zip(g_out.par_chunks(d * NORM_ROWS))
                .zip(inv.par_chunks(NORM_ROWS))
                .map(|(((dx, x), g), iv)| {
                    let mut gw = vec![0f32; d];
                    simd::norm_rows_grad(dx, x, g, iv, &wv, &mut gw);
                    gw
                })
                .collect();
            let dw = grads.get_or_alloc_mut(&gw)?;
            for p in partial {
                for (a, b) in dw.iter_mut().zip(&p) {
                    *a += b;
                }
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}
