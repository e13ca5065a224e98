//! Matrix products: `x · wᵀ` and the fused feed-forward, in OpenBLAS when
//! the build found it (its FFI, the splitter across cores, the output layer
//! with the loss).

use dfdx::prelude::*;

#[allow(unused_imports)]
use super::*;

/// `x · wᵀ` for `x: [m, k]` and a weight stored `[n, k]` (dense layers, the
/// output layer). On the CPU, when the build found OpenBLAS, one `sgemm`
/// forward and two backward (OpenBLAS's AVX-512 kernels run the tiny model's
/// shapes at 150–183 GFLOP/s on 2 threads here, dfdx's `gemm` crate at
/// 113–143); otherwise dfdx's product.
pub fn matmul_nt<D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<(usize, usize), f32, D, T>,
    w: Tensor<(usize, usize), f32, D, T>,
) -> Tensor<(usize, usize), f32, D, T> {
    #[cfg(t5mix_openblas)]
    {
        on_cpu_pair!(x, w, (usize, usize), |x, w| blas::matmul_nt(x, w));
    }
    x.matmul(w.permute::<_, Axes2<1, 0>>())
}

/// The inputs handed back when the fused feed-forward does not apply.
pub type FfInputs<D, T> = Box<(T2<D, T>, Vec<T2<D, T>>, T2<D, T>, Option<Vec<f32>>)>;

/// The feed-forward `act(x · wiᵀ) ⊙ dropout · woᵀ` for `x: [m, d]`, `wi`
/// one weight `[f, d]` (ReLU, v1.0) or two (`gelu_new(x · wi₀ᵀ) ⊙ x · wi₁ᵀ`,
/// v1.1), `wo: [d, f]` and an optional dropout mask `[m, f]` on the hidden
/// activation. On the CPU with OpenBLAS, one kernel whose backward keeps the
/// hidden gradient in a private buffer, written once by its product (a
/// dfdx tensor's gradient is zero-filled, then added into, then masked
/// into another buffer: three extra passes over the step's largest
/// activations). Otherwise the inputs come back for the composition.
pub fn feed_forward_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: T2<D, T>,
    wi: Vec<T2<D, T>>,
    wo: T2<D, T>,
    dropout: Option<Vec<f32>>,
) -> Result<T2<D, T>, FfInputs<D, T>> {
    #[cfg(t5mix_openblas)]
    {
        macro_rules! on_cpu {
            ($tape:ty) => {{
                let x = cast::<_, Cpu2<$tape>>(x).ok().expect("checked type");
                let wi = wi
                    .into_iter()
                    .map(|w| cast::<_, Cpu2<$tape>>(w).ok().expect("same type"))
                    .collect();
                let wo = cast::<_, Cpu2<$tape>>(wo).ok().expect("same type");
                return Ok(cast(blas::feed_forward(x, wi, wo, dropout))
                    .ok()
                    .expect("same type"));
            }};
        }
        on_cpu_tapes!((usize, usize), T2<D, T>, on_cpu);
    }
    Err(Box::new((x, wi, wo, dropout)))
}

/// Whether the CPU matrix products run in OpenBLAS (found at build time).
pub fn uses_openblas() -> bool {
    cfg!(t5mix_openblas)
}

#[cfg(t5mix_openblas)]
pub(super) mod blas {
    use super::{Cpu2, SyncPtr as Ptr};
    use crate::kernels::activation;
    use dfdx::prelude::*;
    use rayon::prelude::*;
    use std::os::raw::c_int;

    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    extern "C" {
        fn cblas_sgemm(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn openblas_set_num_threads(n: c_int);
    }

    /// The backward of `y = x · wᵀ` (`x: [m, k]`, `w: [n, k]`) from `g = dy`
    /// `[m, n]`: `dx += g·w`, `dw += gᵀ·x`, into the gradients of the ghosts
    /// (in a backward op: `?` on errors). A macro: dfdx's ghost type and its
    /// trait are private to it.
    macro_rules! nt_backward {
        ($grads:ident, $g:expr, ($m:expr, $n:expr, $k:expr), ($x:expr, $gx:expr), ($w:expr, $gw:expr)) => {
            let (m, n, k) = ($m, $n, $k);
            sgemm(
                false,
                false,
                (m, k, n),
                $g,
                $w,
                1.0,
                $grads.get_or_alloc_mut($gx)?,
            );
            sgemm(
                true,
                false,
                (n, k, m),
                $g,
                $x,
                1.0,
                $grads.get_or_alloc_mut($gw)?,
            );
        };
    }

    /// Blocks of an inner-dimension split.
    const KSPLIT: usize = 2;
    static ONE_THREAD: std::sync::Once = std::sync::Once::new();

    /// One single-threaded row-major `C = op(A)·op(B) + beta·C` call.
    ///
    /// # Safety
    /// The pointers address matrices of the given sizes and leading dimensions.
    #[allow(clippy::too_many_arguments)]
    unsafe fn call(
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        cblas_sgemm(
            ROW_MAJOR,
            t(ta),
            t(tb),
            m as c_int,
            n as c_int,
            k as c_int,
            1.0,
            a,
            lda as c_int,
            b,
            ldb as c_int,
            beta,
            c,
            ldc as c_int,
        )
    }

    /// Row-major `C = op(A)·op(B) + beta·C` with `C: [m, n]`, `op(A): [m, k]`,
    /// `op(B): [k, n]`, one block per rayon thread, each one single-threaded
    /// OpenBLAS call (OpenBLAS's own threads would spin between calls and
    /// take cores from the rayon kernels). Each call packs its whole share of
    /// A and B, so the blocks split the dimension that repacks the least:
    /// C's rows (B packed once per block), C's columns (A packed once per
    /// block; the logits' 32128-row weight), or the inner dimension when it
    /// dwarfs both (partial products summed in block order: the result does
    /// not depend on the thread count, since the blocks are fixed by shape).
    pub(super) fn sgemm(
        ta: bool,
        tb: bool,
        dims: (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        assert!(c.len() >= dims.0 * dims.1);
        // SAFETY: `c` holds m·n values.
        unsafe { sgemm_raw(ta, tb, dims, a, b, beta, c.as_mut_ptr()) }
    }

    /// `op(A)·op(B)` into a new buffer (written once: no zero-filling).
    pub(super) fn sgemm_new(
        ta: bool,
        tb: bool,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
    ) -> Vec<f32> {
        if k == 0 {
            return vec![0f32; m * n];
        }
        let mut c = Vec::with_capacity(m * n);
        // SAFETY: `c` has room for m·n values; with beta 0 and k ≥ 1,
        // OpenBLAS writes each of them (and reads none before writing).
        unsafe {
            sgemm_raw(ta, tb, (m, n, k), a, b, 0.0, c.as_mut_ptr());
            c.set_len(m * n);
        }
        c
    }

    /// [`sgemm`] into `c`, which must hold m·n values (readable unless beta
    /// is 0).
    unsafe fn sgemm_raw(
        ta: bool,
        tb: bool,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: *mut f32,
    ) {
        assert!(a.len() >= m * k && b.len() >= k * n);
        ONE_THREAD.call_once(|| {
            // SAFETY: sets OpenBLAS's thread count.
            unsafe { openblas_set_num_threads(1) }
        });
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        let p = rayon::current_num_threads().max(1);
        // values packed when q blocks split C's rows (A once, B q times) or
        // its columns (A q times, B once)
        let packed = |q: usize| (m * k + q * k * n, q * m * k + k * n);
        let (by_rows, by_cols) = packed(p);
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), Ptr(c));
        let (ap, bp) = (Ptr(ap as *mut f32), Ptr(bp as *mut f32));
        // split the inner dimension into KSPLIT blocks (fixed, so that the
        // rounding does not depend on the thread count): A and B packed
        // once, plus the partial products written and summed
        let by_inner = m * k + k * n + 2 * KSPLIT * m * n;
        let (rows_k, cols_k) = packed(KSPLIT);
        if by_inner < rows_k.min(cols_k) {
            let kb = k.div_ceil(KSPLIT);
            // written with beta 0 by their blocks
            let mut parts = Vec::with_capacity((KSPLIT - 1) * m * n);
            let pp = Ptr(parts.as_mut_ptr());
            (0..KSPLIT).into_par_iter().for_each(|i| {
                let (ap, bp, cp, pp) = (ap, bp, cp, pp);
                let k0 = (i * kb).min(k);
                let kk = kb.min(k - k0);
                // op(A)'s columns k0.. and op(B)'s rows k0..
                let a0 = if ta { k0 * lda } else { k0 };
                let b0 = if tb { k0 } else { k0 * ldb };
                // block 0 adds into C, the others write their own partial C
                let (out, beta) = match i {
                    0 => (cp.0, beta),
                    // SAFETY: part i − 1 of `parts`, m·n values
                    _ => (unsafe { pp.0.add((i - 1) * m * n) }, 0.0),
                };
                // SAFETY: the blocks read inside the sizes checked above and
                // write distinct m × n outputs.
                unsafe {
                    call(
                        (ta, tb),
                        (m, n, kk),
                        ap.0.add(a0),
                        lda,
                        bp.0.add(b0),
                        ldb,
                        beta,
                        out,
                        n,
                    )
                }
            });
            // SAFETY: every block wrote its m·n values
            let c = unsafe {
                parts.set_len((KSPLIT - 1) * m * n);
                std::slice::from_raw_parts_mut(c, m * n)
            };
            for part in parts.chunks(m * n) {
                c.par_chunks_mut(super::CHUNK)
                    .zip(part.par_chunks(super::CHUNK))
                    .for_each(|(c, p)| c.iter_mut().zip(p).for_each(|(c, p)| *c += p));
            }
            return;
        }
        if by_rows <= by_cols {
            let rows = m.div_ceil(p).next_multiple_of(16).max(16);
            (0..m.div_ceil(rows)).into_par_iter().for_each(|i| {
                let (ap, bp, cp) = (ap, bp, cp);
                let r0 = i * rows;
                let mb = rows.min(m - r0);
                // op(A)'s rows r0.. : A's rows (no transpose) or columns
                let a0 = if ta { r0 } else { r0 * lda };
                // SAFETY: block i covers C's rows r0..r0+mb, inside the sizes checked above.
                unsafe {
                    call(
                        (ta, tb),
                        (mb, n, k),
                        ap.0.add(a0),
                        lda,
                        bp.0,
                        ldb,
                        beta,
                        cp.0.add(r0 * n),
                        n,
                    )
                }
            });
        } else {
            let cols = n.div_ceil(p).next_multiple_of(16).max(16);
            (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
                let (ap, bp, cp) = (ap, bp, cp);
                let c0 = j * cols;
                let nb = cols.min(n - c0);
                // op(B)'s columns c0.. : B's columns (no transpose) or rows
                let b0 = if tb { c0 * ldb } else { c0 };
                // SAFETY: block j covers C's columns c0..c0+nb, inside the sizes checked above.
                unsafe {
                    call(
                        (ta, tb),
                        (m, nb, k),
                        ap.0,
                        lda,
                        bp.0.add(b0),
                        ldb,
                        beta,
                        cp.0.add(c0),
                        n,
                    )
                }
            });
        }
    }

    /// `x · wᵀ`.
    pub(super) fn matmul_nt<T: Tape<f32, Cpu>>(x: Cpu2<T>, w: Cpu2<T>) -> Cpu2<T> {
        let (x, tx) = x.contiguous().split_tape();
        let (w, tw) = w.contiguous().split_tape();
        let mut tape = tx.merge(tw);
        let ((m, k), n) = (*x.shape(), w.shape().0);
        assert_eq!(w.shape().1, k, "inner sizes");
        let (xv, wv) = (super::values(&x), super::values(&w));
        let out = sgemm_new(false, true, (m, n, k), &xv, &wv);
        let out = x.device().tensor_from_vec(out, (m, n));
        if T::OWNS_TAPE {
            let (gx, gw, go) = (x.ghost(), w.ghost(), out.ghost());
            tape.add_backward_op(move |grads| {
                let g_out = output_grad!(grads, &go, [&gx, &gw]);
                nt_backward!(grads, g_out, (m, n, k), (&xv, &gx), (&wv, &gw));
                Ok(())
            });
        }
        out.put_tape(tape)
    }

    /// See [`super::feed_forward_cpu`].
    pub(super) fn feed_forward<T: Tape<f32, Cpu>>(
        x: Cpu2<T>,
        wi: Vec<Cpu2<T>>,
        wo: Cpu2<T>,
        dropout: Option<Vec<f32>>,
    ) -> Cpu2<T> {
        assert!(matches!(wi.len(), 1 | 2), "one or two input weights");
        let gated = wi.len() == 2;
        let (x, mut tape) = x.contiguous().split_tape();
        let mut wis = Vec::with_capacity(wi.len());
        for w in wi {
            let (w, t) = w.contiguous().split_tape();
            tape = tape.merge(t);
            wis.push(w);
        }
        let (wo, t) = wo.contiguous().split_tape();
        let mut tape = tape.merge(t);
        let ((m, d), f) = (*x.shape(), wis[0].shape().0);
        for w in &wis {
            assert_eq!(*w.shape(), (f, d), "feed-forward input weight");
        }
        assert_eq!(*wo.shape(), (d, f), "feed-forward output weight");
        if let Some(mask) = &dropout {
            assert_eq!(mask.len(), m * f, "dropout mask size");
        }
        let xv = super::values(&x);
        let wiv: Vec<_> = wis.iter().map(super::values).collect();
        let wov = super::values(&wo);
        // Gated: both pre-activations are kept for the backward. ReLU: none;
        // its gradient passes where the hidden activation is positive
        // (dropout scales kept values by 1/keep > 0, and dropped ones have
        // no gradient either way).
        let pre: Vec<Vec<f32>> = if gated {
            wiv.iter()
                .map(|w| sgemm_new(false, true, (m, f, d), &xv, w))
                .collect()
        } else {
            Vec::new()
        };
        let hidden = if gated {
            super::written(m * f, super::CHUNK, |i, h| {
                let o = i * super::CHUNK;
                let mask = dropout.as_ref().map(|m| &m[o..]);
                activation::gated_forward(h, &pre[0][o..], &pre[1][o..], mask);
            })
        } else {
            let mut h = sgemm_new(false, true, (m, f, d), &xv, &wiv[0]);
            h.par_chunks_mut(super::CHUNK)
                .enumerate()
                .for_each(|(i, h)| {
                    let mask = dropout.as_ref().map(|m| &m[i * super::CHUNK..]);
                    activation::relu_forward(h, mask)
                });
            h
        };
        let out = sgemm_new(false, true, (m, d, f), &hidden, &wov);
        let out = x.device().tensor_from_vec(out, (m, d));
        if T::OWNS_TAPE {
            let (gx, go, gwo) = (x.ghost(), out.ghost(), wo.ghost());
            let gwi: Vec<_> = wis.iter().map(|w| w.ghost()).collect();
            tape.add_backward_op(move |grads| {
                for w in &gwi {
                    grads.try_alloc_for(w)?;
                }
                let g_out = output_grad!(grads, &go, [&gx, &gwo]);
                // dwo += gᵀ·hidden
                let gw = grads.get_or_alloc_mut(&gwo)?;
                sgemm(true, false, (d, f, m), g_out, &hidden, 1.0, gw);
                // the hidden activation's gradient g·wo, then back through
                // dropout and the activation, in place (gated: the gate's
                // part in place, the linear part into `g_lin`)
                let mut g_hid = sgemm_new(false, false, (m, f, d), g_out, &wov);
                let mut g_lin = Vec::new();
                if gated {
                    g_lin.reserve_exact(m * f);
                    g_hid
                        .par_chunks_mut(super::CHUNK)
                        .zip(g_lin.spare_capacity_mut()[..m * f].par_chunks_mut(super::CHUNK))
                        .enumerate()
                        .for_each(|(i, (g, gl))| {
                            let o = i * super::CHUNK;
                            let gl = super::zeroed(gl);
                            let mask = dropout.as_ref().map(|m| &m[o..]);
                            activation::gated_backward(g, gl, &pre[0][o..], &pre[1][o..], mask);
                        });
                    // SAFETY: every chunk of the m·f values was initialised above
                    unsafe { g_lin.set_len(m * f) };
                } else {
                    g_hid
                        .par_chunks_mut(super::CHUNK)
                        .zip(hidden.par_chunks(super::CHUNK))
                        .enumerate()
                        .for_each(|(i, (g, h))| {
                            let mask = dropout.as_ref().map(|m| &m[i * super::CHUNK..]);
                            activation::relu_backward(g, h, mask)
                        });
                }
                // dx += Σ gᵢ·wiᵢ, dwiᵢ += gᵢᵀ·x
                for (g, (w, gw)) in [&g_hid, &g_lin].into_iter().zip(wiv.iter().zip(&gwi)) {
                    nt_backward!(grads, g, (m, f, d), (&xv, &gx), (w, gw));
                }
                Ok(())
            });
        }
        out.put_tape(tape)
    }

    /// See [`super::logits_loss_cpu`].
    pub(crate) fn logits_loss<T: Tape<f32, Cpu>>(
        h: Cpu2<T>,
        w: Cpu2<T>,
        targets: &[usize],
        weights: &[f32],
        rule: crate::kernels::loss::LossRule,
    ) -> crate::kernels::loss::RowLoss<Cpu, T> {
        let (h, th) = h.contiguous().split_tape();
        let (w, tw) = w.contiguous().split_tape();
        let mut tape = th.merge(tw);
        let ((n, d), v) = (*h.shape(), w.shape().0);
        assert_eq!(w.shape().1, d, "inner sizes");
        let (hv, wv) = (super::values(&h), super::values(&w));
        let mut logits = sgemm_new(false, true, (n, v, d), &hv, &wv);
        let rows = rule.rows(&logits, v, targets, weights);
        let (losses, cross_entropy, z_loss) = crate::kernels::loss::LossRule::totals(&rows);
        let out = h.device().tensor_from_vec(losses, (n,));
        if T::OWNS_TAPE {
            let (gh, gw, go) = (h.ghost(), w.ghost(), out.ghost());
            let targets = targets.to_vec();
            let weights = weights.to_vec();
            tape.add_backward_op(move |grads| {
                let g_out = output_grad!(grads, &go, [&gh, &gw]);
                // the logits become their gradient
                rule.grad_in_place(&mut logits, v, &targets, &weights, (g_out, &rows));
                // dh += dlogits·w, dw += dlogitsᵀ·h
                nt_backward!(grads, &logits, (n, v, d), (&hv, &gh), (&wv, &gw));
                Ok(())
            });
        }
        crate::kernels::loss::RowLoss {
            loss: out.put_tape(tape),
            cross_entropy,
            z_loss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way `sgemm` splits a product (C's rows, C's columns, the inner
    /// dimension), each transpose, beta 0 and 1, and a fresh output, against
    /// a product in f64.
    #[cfg(t5mix_openblas)]
    #[test]
    fn blas_products_split_three_ways() {
        // the split depends on the thread count: two, as on CI
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(blas_products_split_three_ways_on_two_threads);
    }

    #[cfg(t5mix_openblas)]
    fn blas_products_split_three_ways_on_two_threads() {
        let val = |i: usize| ((i * 7919) % 23) as f32 * 0.125 - 1.4;
        // (m, n, k): rows (tall C), columns (wide C), inner (long k)
        for (m, n, k) in [(67, 5, 9), (6, 1043, 9), (7, 5, 903), (1, 1, 1)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a: Vec<f32> = (0..m * k).map(val).collect();
                let b: Vec<f32> = (0..k * n).map(|i| val(i + 5)).collect();
                let at = |i: usize, l: usize| if ta { a[l * m + i] } else { a[i * k + l] };
                let bt = |l: usize, j: usize| if tb { b[j * k + l] } else { b[l * n + j] };
                let c0: Vec<f32> = (0..m * n).map(|i| val(i + 11)).collect();
                let fresh = blas::sgemm_new(ta, tb, (m, n, k), &a, &b);
                for beta in [0.0f32, 1.0] {
                    let mut c = c0.clone();
                    blas::sgemm(ta, tb, (m, n, k), &a, &b, beta, &mut c);
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|l| at(i, l) as f64 * bt(l, j) as f64).sum();
                            let want = dot + beta as f64 * c0[i * n + j] as f64;
                            let tol = 1e-4 * (k as f64).sqrt();
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < tol,
                                "{m}x{n}x{k} {ta} {tb} beta {beta}: {got} vs {want}"
                            );
                            if beta == 0.0 {
                                assert_eq!(fresh[i * n + j], c[i * n + j]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_loss_matches_the_definition() {
        let dev = Cpu::default();
        let v = 5;
        let x = vec![0.5f32, -1.0, 2.0, 0.0, 0.25, 1.5, 1.5, -0.5, 0.0, 3.0];
        let t = dev.tensor_from_vec(x.clone(), (2, v));
        for (z, s) in [(0.0f32, 0.0f32), (1e-4, 0.0), (1e-4, 0.1)] {
            let r = row_loss_cpu(t.clone(), &[2, 4], &[1.0, 0.5], z, s)
                .ok()
                .unwrap();
            let got = r.loss.as_vec();
            for (i, row) in x.chunks(v).enumerate() {
                let lse = row.iter().map(|a| (*a as f64).exp()).sum::<f64>().ln();
                let target = [2, 4][i];
                let c = 1.0 - s as f64;
                let low = s as f64 / (v as f64 - 1.0);
                // −Σ q_j log p_j minus the entropy of q (t5x's normalising constant)
                let mut ce = 0.0;
                let mut ent = 0.0;
                for (j, a) in row.iter().enumerate() {
                    let q = if j == target { c } else { low };
                    ce -= q * (*a as f64 - lse);
                    if q > 0.0 {
                        ent -= q * q.ln();
                    }
                }
                let want = [1.0, 0.5][i] * (ce - ent + z as f64 * lse * lse);
                assert!(
                    (got[i] as f64 - want).abs() < 1e-5,
                    "row {i} z {z} s {s}: {} vs {want}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn parallel_copy_sets_every_value_of_its_own_buffer() {
        let dev = Cpu::default();
        let mut t = dev.tensor_from_vec(vec![0f32; 3 * 70_000], (3, 70_000));
        let before = t.clone();
        let src: Vec<f32> = (0..3 * 70_000).map(|i| i as f32).collect();
        copy_from(&mut t, &src);
        assert_eq!(t.as_vec(), src);
        assert!(before.as_vec().iter().all(|&x| x == 0.0), "a clone changed");
    }

    #[test]
    fn gated_gelu_matches_dfdx() {
        let dev = Cpu::default();
        let a: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 0.37).collect();
        let b: Vec<f32> = (0..24).map(|i| 1.0 + i as f32 * 0.1).collect();
        let ta = dev.tensor_from_vec(a, (2, 3, 4));
        let tb = dev.tensor_from_vec(b, (2, 3, 4));
        let fused = gated_gelu(ta.clone(), tb.clone()).as_vec();
        let plain = (ta.fast_gelu() * tb).as_vec();
        for (f, p) in fused.iter().zip(&plain) {
            assert!((f - p).abs() < 1e-5 * p.abs().max(1.0), "{f} vs {p}");
        }
    }
}
