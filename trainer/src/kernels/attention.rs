//! Attention with T5's relative position bias, padding/causal mask and
//! dropout, one fused kernel per (row, head), forward and backward.

use dfdx::prelude::*;
use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

pub(super) type Attn3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;
/// The inputs handed back when the fused kernel does not apply.
pub type AttnInputs<D, T> = Box<(
    Attn3<D, T>,
    Attn3<D, T>,
    Attn3<D, T>,
    Option<Attn3<D, T>>,
    Option<Vec<f32>>,
)>;

/// `c[m×n] (+)= a[m×k] · b[k×n]`; each matrix as (pointer, row stride,
/// column stride). One thread: the callers parallelise over heads.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    (b_rs, b_cs): (usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        c_cs as isize,
        c_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Multi-head attention `softmax(q·kᵀ + pos + mask)·v` from the un-split
/// projections `q [b, t, h·dk]`, `k`, `v [b, s, h·dk]`, a position bias
/// `pos [h, t, s]` shared by the batch rows (none for cross-attention) and
/// a mask `[b, t, s]` shared by the heads (0 or a large negative value,
/// no gradient), to `[b, t, h·dk]`: one fused kernel per (row, head),
/// parallel over them, with its backward. `dropout` is an optional mask
/// `[b, h, t, s]` (0 or 1 / keep) on the probabilities. `Err` gives the
/// inputs back on devices other than the CPU.
pub fn attention_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    q: Attn3<D, T>,
    k: Attn3<D, T>,
    v: Attn3<D, T>,
    pos: Option<Attn3<D, T>>,
    mask: &[f32],
    dropout: Option<Vec<f32>>,
    heads: usize,
) -> Result<Attn3<D, T>, AttnInputs<D, T>> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let q = cast::<_, Cpu3<$tape>>(q).ok().expect("checked type");
            let k = cast::<_, Cpu3<$tape>>(k).ok().expect("same type");
            let v = cast::<_, Cpu3<$tape>>(v).ok().expect("same type");
            let pos = pos.map(|p| cast::<_, Cpu3<$tape>>(p).ok().expect("same type"));
            return Ok(cast(attention_impl(q, k, v, pos, mask, dropout, heads))
                .ok()
                .expect("same type"));
        }};
    }
    on_cpu_tapes!((usize, usize, usize), Attn3<D, T>, on_cpu);
    Err(Box::new((q, k, v, pos, dropout)))
}

/// The probabilities `p` of (row, head) `bh` as multiplied by v: after
/// dropout (written to `scratch`) when there is a mask.
pub(super) fn dropped(
    dropout: &Option<Vec<f32>>,
    bh: usize,
    p: &[f32],
    scratch: &mut Vec<f32>,
) -> *const f32 {
    match dropout {
        None => p.as_ptr(),
        Some(d) => {
            let m = &d[bh * p.len()..(bh + 1) * p.len()];
            scratch.clear();
            scratch.extend(p.iter().zip(m).map(|(p, m)| p * m));
            scratch.as_ptr()
        }
    }
}

pub(super) fn attention_impl<T: Tape<f32, Cpu>>(
    q: Cpu3<T>,
    k: Cpu3<T>,
    v: Cpu3<T>,
    pos: Option<Cpu3<T>>,
    mask: &[f32],
    dropout: Option<Vec<f32>>,
    heads: usize,
) -> Cpu3<T> {
    let (q, tq) = q.contiguous().split_tape();
    let (k, tk) = k.contiguous().split_tape();
    let (v, tv) = v.contiguous().split_tape();
    let mut tape = tq.merge(tk).merge(tv);
    let pos = pos.map(|p| {
        let (p, tp) = p.contiguous().split_tape();
        tape = std::mem::take(&mut tape).merge(tp);
        p
    });
    let (b, t, inner) = *q.shape();
    let s = k.shape().1;
    let dk = inner / heads;
    assert_eq!(mask.len(), b * t * s, "mask size");
    if let Some(d) = &dropout {
        assert_eq!(d.len(), b * heads * t * s, "dropout mask size");
    }

    let (qv, kv, vv) = (values(&q), values(&k), values(&v));
    let posv = pos.as_ref().map(values);
    if let Some(p) = &posv {
        assert_eq!(p.len(), heads * t * s, "position bias size");
    }
    // probabilities [b, h, t, s], kept for the backward pass
    let probs = written_with(b * heads * t * s, t * s, |bh, p| {
        let (bi, h) = (bh / heads, bh % heads);
        // p = mask + pos + q·kᵀ
        let m = &mask[bi * t * s..(bi + 1) * t * s];
        let p = match &posv {
            Some(pos) => {
                let pos = &pos[h * t * s..(h + 1) * t * s];
                init_with(p, |j| m[j] + pos[j])
            }
            None => init_with(p, |j| m[j]),
        };
        unsafe {
            mm(
                (t, s, dk),
                p.as_mut_ptr(),
                (s, 1),
                true,
                qv.as_ptr().add(bi * t * inner + h * dk),
                (inner, 1),
                kv.as_ptr().add(bi * s * inner + h * dk),
                (1, inner),
            );
        }
        simd::softmax_rows(p, s);
    });
    // every value is written by one (row, head) task below (no zero-filling)
    let mut out: Vec<f32> = Vec::with_capacity(b * t * inner);
    let op = SyncPtr(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / heads, bh % heads);
        let mut scratch = Vec::new();
        let p = dropped(
            &dropout,
            bh,
            &probs[bh * t * s..(bh + 1) * t * s],
            &mut scratch,
        );
        unsafe {
            mm(
                (t, dk, s),
                op.get().add(bi * t * inner + h * dk),
                (inner, 1),
                false,
                p,
                (s, 1),
                vv.as_ptr().add(bi * s * inner + h * dk),
                (inner, 1),
            );
        }
    });
    // SAFETY: the tasks wrote all b·t·inner values (each its rows' head columns)
    unsafe { out.set_len(b * t * inner) };
    let out = q.device().tensor_from_vec(out, (b, t, inner));
    if T::OWNS_TAPE {
        let (gq, gk, gv, go) = (q.ghost(), k.ghost(), v.ghost(), out.ghost());
        let gp = pos.as_ref().map(|p| p.ghost());
        let mut probs = probs;
        tape.add_backward_op(move |grads| {
            if let Some(gp) = &gp {
                grads.try_alloc_for(gp)?;
            }
            let g_out = output_grad!(grads, &go, [&gq, &gk, &gv]);
            // SAFETY: three distinct buffers, none reallocated while in use;
            // each (row, head) task writes its own part of dq, dk, dv.
            let dq = SyncPtr(grads.get_or_alloc_mut(&gq)?.as_mut_ptr());
            let dkp = SyncPtr(grads.get_or_alloc_mut(&gk)?.as_mut_ptr());
            let dv = SyncPtr(grads.get_or_alloc_mut(&gv)?.as_mut_ptr());
            // each task turns its probabilities into the scores' gradient dS
            probs.par_chunks_mut(t * s).enumerate().for_each(|(bh, p)| {
                let (bi, h) = (bh / heads, bh % heads);
                let (dq, dkp, dv) = (dq, dkp, dv);
                let qo = bi * t * inner + h * dk;
                let ko = bi * s * inner + h * dk;
                // written by the first product (no zero-filling: 1 MB per task at 512 × 512)
                let mut ds: Vec<f32> = Vec::with_capacity(t * s);
                let mut scratch = Vec::new();
                let pd = dropped(&dropout, bh, p, &mut scratch);
                unsafe {
                    // dP = dO · vᵀ
                    mm(
                        (t, s, dk),
                        ds.as_mut_ptr(),
                        (s, 1),
                        false,
                        g_out.as_ptr().add(qo),
                        (inner, 1),
                        vv.as_ptr().add(ko),
                        (1, inner),
                    );
                    ds.set_len(t * s);
                    // dV += Pᵀ · dO (P after dropout)
                    mm(
                        (s, dk, t),
                        dv.0.add(ko),
                        (inner, 1),
                        true,
                        pd,
                        (1, s),
                        g_out.as_ptr().add(qo),
                        (inner, 1),
                    );
                }
                // through the dropout: dP ⊙ mask
                if let Some(d) = &dropout {
                    let m = &d[bh * t * s..(bh + 1) * t * s];
                    ds.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                }
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), over P
                simd::softmax_grad_rows(p, &ds, s);
                unsafe {
                    // dQ += dS · k
                    mm(
                        (t, dk, s),
                        dq.0.add(qo),
                        (inner, 1),
                        true,
                        p.as_ptr(),
                        (s, 1),
                        kv.as_ptr().add(ko),
                        (inner, 1),
                    );
                    // dK += dSᵀ · q
                    mm(
                        (s, dk, t),
                        dkp.0.add(ko),
                        (inner, 1),
                        true,
                        p.as_ptr(),
                        (1, s),
                        qv.as_ptr().add(qo),
                        (inner, 1),
                    );
                }
            });
            // the position bias gets dS summed over the batch rows (in row order)
            if let Some(gp) = &gp {
                let dpos = grads.get_or_alloc_mut(gp)?;
                dpos.par_chunks_mut(s).enumerate().for_each(|(hr, d)| {
                    let (h, r) = (hr / t, hr % t);
                    for bi in 0..b {
                        let o = ((bi * heads + h) * t + r) * s;
                        for (x, y) in d.iter_mut().zip(&probs[o..o + s]) {
                            *x += y;
                        }
                    }
                });
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}
