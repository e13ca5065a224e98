//! Attention's memory-bound parts on the GPU (`trainer/cuda/attention.cu`),
//! around the products (`q·kᵀ`, `p·v` and their gradients, batched GEMMs):
//! the scores' mask, position bias, softmax and dropout, the softmax's and
//! dropout's backward, the position bias's gradient over the batch rows and
//! then per bucket. The row kernels compute what the CPU's fused attention
//! computes, in its order ([`cpu_softmax_forward`], [`cpu_softmax_backward`],
//! [`cpu_bias_grad`]; a test ties them to `attention_cpu`), so the same
//! scores give the same probabilities bit for bit. The bucket sums have an
//! order of their own, fixed ([`cpu_bucket_grad`]): dfdx's gather backward
//! on CUDA adds with atomics, in no fixed order.

use super::{
    arg_or_null, copy_arg, grid_for, launched, load, out_args, Bf16Copy, ATTENTION, CHAIN_THREADS,
};
use crate::kernels::simd;
use crate::Result;
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

/// Rows per block of the row kernels (`ROWS_PER_BLOCK` in attention.cu).
const ROWS_PER_BLOCK: usize = 16;

/// Buckets the bucket kernels can sum (`MAX_BUCKETS` in attention.cu).
pub const MAX_BUCKETS: usize = 64;

/// For the error messages.
const PART: &str = "attention";

/// The scores' shape: `[b, heads, t, s]` (queries `t`, keys `s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Batch rows.
    pub b: usize,
    /// Heads.
    pub heads: usize,
    /// Queries.
    pub t: usize,
    /// Keys.
    pub s: usize,
}

impl AttnShape {
    /// Rows of scores: `b · heads · t`.
    pub fn rows(&self) -> usize {
        self.b * self.heads * self.t
    }
}

/// The attention kernels on one GPU stream.
pub struct DeviceAttention {
    stream: Arc<CudaStream>,
    softmax_fwd: CudaFunction,
    softmax_bwd: CudaFunction,
    bias_grad: CudaFunction,
    bucket_partials: CudaFunction,
    bucket_grad: CudaFunction,
    position_bias: CudaFunction,
    mask: CudaFunction,
}

fn rows_grid(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1),
        block_dim: (crate::kernels::LANES as u32, ROWS_PER_BLOCK as u32, 1),
        shared_mem_bytes: 0,
    }
}

impl DeviceAttention {
    /// The kernels compiled for `stream`'s GPU and loaded there.
    pub fn new(stream: Arc<CudaStream>, flush_denormals: bool) -> Result<Self> {
        let [softmax_fwd, softmax_bwd, bias_grad, bucket_partials, bucket_grad, position_bias, mask] =
            load(&stream, ATTENTION, flush_denormals)?;
        Ok(DeviceAttention {
            stream,
            softmax_fwd,
            softmax_bwd,
            bias_grad,
            bucket_partials,
            bucket_grad,
            position_bias,
            mask,
        })
    }

    /// The attention mask of `kind` (`model::attention_mask`) from the
    /// rows' encoder segments `eseg [b, s]` and, packed, decoder segments
    /// `dseg [b, t]`, into `m`.
    pub fn mask(
        &self,
        kind: crate::model::MaskKind,
        (eseg, dseg): (&CudaSlice<u32>, Option<&CudaSlice<u32>>),
        (b, s, t): (usize, usize, usize),
        m: &mut CudaSlice<f32>,
    ) -> Result<()> {
        use crate::model::MaskKind;
        let n = b * match kind {
            MaskKind::Encoder => s * s,
            MaskKind::DecoderSelf => t * t,
            MaskKind::Cross => t * s,
        };
        let (b64, s32, t32, k32) = (b as u64, s as u32, t as u32, kind as i32);
        let mut l = self.stream.launch_builder(&self.mask);
        l.arg(eseg);
        arg_or_null(&mut l, dseg);
        l.arg(&b64).arg(&s32).arg(&t32).arg(&k32).arg(m);
        // SAFETY: eseg holds b·s ids, dseg b·t, m the mask's n values.
        launched(PART, unsafe { l.launch(grid_for(n, 256)) }, "mask")
    }

    /// `scores` (`q·kᵀ`) become the probabilities `softmax((mask + pos) +
    /// scores)`; with dropout `(drop, pd)`, `pd` the probabilities times
    /// the mask `drop`. `pos [h, t, s]` (none for cross-attention), `mask
    /// [b, t, s]`. `copy`, when given, gets the bf16 copy of what `p · v`
    /// reads (`pd` with dropout, then unwritten when only products read
    /// it; else the probabilities).
    pub fn softmax_forward(
        &self,
        scores: &mut CudaSlice<f32>,
        pos: Option<&CudaSlice<f32>>,
        mask: &CudaSlice<f32>,
        dropout: Option<(&CudaSlice<f32>, &mut CudaSlice<f32>)>,
        copy: Option<&mut Bf16Copy>,
        sh: AttnShape,
    ) -> Result<()> {
        let (b64, h32, t32, s32) = (sh.b as u64, sh.heads as u32, sh.t as u32, sh.s as u32);
        let mut l = self.stream.launch_builder(&self.softmax_fwd);
        l.arg(scores);
        arg_or_null(&mut l, pos);
        l.arg(mask);
        let n = sh.rows() * sh.s;
        match dropout {
            Some((drop, pd)) => {
                l.arg(drop);
                out_args(&mut l, pd, copy, n, PART)?;
            }
            None => {
                arg_or_null::<f32>(&mut l, None);
                arg_or_null::<f32>(&mut l, None);
                copy_arg(&mut l, copy, n, PART)?;
            }
        };
        l.arg(&b64).arg(&h32).arg(&t32).arg(&s32);
        // SAFETY: scores, drop and pd hold b·h·t·s values (pd only copied is
        // a null pointer: out_args), pos h·t·s, mask b·t·s.
        launched(PART, unsafe { l.launch(rows_grid(sh.rows())) }, "softmax")
    }

    /// `dp` (`dO·vᵀ`) becomes the scores' gradient, from the forward's
    /// probabilities `p` (before dropout) and the dropout mask; its bf16
    /// copy in `copy` too, when given (then `dp` holds scratch values when
    /// only products read the gradient).
    pub fn softmax_backward(
        &self,
        dp: &mut CudaSlice<f32>,
        p: &CudaSlice<f32>,
        drop: Option<&CudaSlice<f32>>,
        copy: Option<&mut Bf16Copy>,
        sh: AttnShape,
    ) -> Result<()> {
        let (rows, s32) = (sh.rows() as u64, sh.s as u32);
        let mut l = self.stream.launch_builder(&self.softmax_bwd);
        // (dp the kernel's input and scratch, and its output in place)
        let dp: &CudaSlice<f32> = dp;
        l.arg(dp).arg(p);
        arg_or_null(&mut l, drop);
        out_args(&mut l, dp, copy, sh.rows() * sh.s, PART)?;
        l.arg(&rows).arg(&s32);
        // SAFETY: dp, p and drop hold b·h·t·s values.
        launched(
            PART,
            unsafe { l.launch(rows_grid(sh.rows())) },
            "softmax backward",
        )
    }

    /// Adds the scores' gradient `ds` summed over the batch rows to the
    /// position bias's gradient `dpos [h, t, s]`, `ds` as `read` says.
    pub fn bias_grad(
        &self,
        ds: &CudaSlice<f32>,
        read: ScoresGrad<'_>,
        dpos: &mut CudaSlice<f32>,
        sh: AttnShape,
    ) -> Result<()> {
        let (b64, h32, t32, s32) = (sh.b as u64, sh.heads as u32, sh.t as u32, sh.s as u32);
        let n = sh.rows() * sh.s;
        let (bits, round) = match read {
            ScoresGrad::Values => (None, 0i32),
            ScoresGrad::Rounded => (None, 1),
            ScoresGrad::Bits(b) if b.len() < n => {
                let e = format!("{} bf16 values for {n}", b.len());
                return Err(super::gpu_error(PART, "position bias gradient", e));
            }
            ScoresGrad::Bits(b) => (Some(b), 0),
        };
        let mut l = self.stream.launch_builder(&self.bias_grad);
        l.arg(ds);
        arg_or_null(&mut l, bits);
        l.arg(&round)
            .arg(dpos)
            .arg(&b64)
            .arg(&h32)
            .arg(&t32)
            .arg(&s32);
        // SAFETY: ds (and bits) hold b·h·t·s values, dpos h·t·s.
        launched(
            PART,
            unsafe { l.launch(grid_for(sh.heads * sh.t * sh.s, 256)) },
            "position bias gradient",
        )
    }

    /// Adds `dpos [h, t, s]` summed per bucket (`buckets [t, s]`, each
    /// below `nb` ≤ [`MAX_BUCKETS`]) to the table's gradient `dtable [nb,
    /// h]` (a view in the flat gradients, say); `partials` is scratch of
    /// `h · t · nb` values.
    #[allow(clippy::too_many_arguments)]
    pub fn bucket_grad(
        &self,
        dpos: &CudaSlice<f32>,
        buckets: &CudaSlice<u32>,
        partials: &mut CudaSlice<f32>,
        dtable: &mut impl DevicePtrMut<f32>,
        (heads, t, s): (usize, usize, usize),
        nb: usize,
    ) -> Result<()> {
        if nb > MAX_BUCKETS {
            return Err(super::gpu_error(
                PART,
                "position buckets",
                format!("{nb} buckets, at most {MAX_BUCKETS}"),
            ));
        }
        let (h32, t32, s32, nb32) = (heads as u32, t as u32, s as u32, nb as u32);
        let mut l = self.stream.launch_builder(&self.bucket_partials);
        l.arg(dpos)
            .arg(buckets)
            .arg(&mut *partials)
            .arg(&h32)
            .arg(&t32)
            .arg(&s32)
            .arg(&nb32);
        // SAFETY: dpos holds h·t·s values, buckets t·s (each < nb), partials h·t·nb.
        launched(
            PART,
            unsafe { l.launch(grid_for(heads * t, 128)) },
            "bucket sums",
        )?;
        let (dtable, _dtable) = dtable.device_ptr_mut(&self.stream);
        let mut l = self.stream.launch_builder(&self.bucket_grad);
        l.arg(&*partials)
            .arg(&dtable)
            .arg(&h32)
            .arg(&t32)
            .arg(&nb32);
        // SAFETY: partials holds h·t·nb values, dtable nb·h (nb·h chains
        // of t sums over many multiprocessors: CHAIN_THREADS).
        launched(
            PART,
            unsafe { l.launch(grid_for(nb * heads, CHAIN_THREADS)) },
            "bucket sums",
        )
    }

    /// The position bias `pos [h, t, s]` from its table `[nb, h]` (a view,
    /// say) and the buckets `[t, s]`.
    pub fn position_bias(
        &self,
        table: &impl cudarc::driver::DevicePtr<f32>,
        buckets: &CudaSlice<u32>,
        pos: &mut CudaSlice<f32>,
        (heads, t, s): (usize, usize, usize),
    ) -> Result<()> {
        let (h32, t32, s32) = (heads as u32, t as u32, s as u32);
        let (table, _t) = table.device_ptr(&self.stream);
        let mut l = self.stream.launch_builder(&self.position_bias);
        l.arg(&table)
            .arg(buckets)
            .arg(pos)
            .arg(&h32)
            .arg(&t32)
            .arg(&s32);
        // SAFETY: buckets holds t·s values (each a row of the table), pos h·t·s.
        launched(
            PART,
            unsafe { l.launch(grid_for(heads * t * s, 256)) },
            "position bias",
        )
    }
}

/// How [`DeviceAttention::bias_grad`] reads dS: as the products read it.
#[derive(Debug, Clone, Copy)]
pub enum ScoresGrad<'a> {
    /// The f32 values (f32 and TF32 products).
    Values,
    /// The f32 values, rounded to bf16 as they are read (bf16 products that
    /// round their operands themselves).
    Rounded,
    /// A bf16 copy (bf16 products that read it; the values may be unwritten).
    Bits(&'a CudaSlice<u16>),
}

/// The CPU's forward in the kernel's terms: `scores` become the
/// probabilities; with a dropout mask, the probabilities after it are
/// returned.
pub fn cpu_softmax_forward(
    scores: &mut [f32],
    pos: Option<&[f32]>,
    mask: &[f32],
    drop: Option<&[f32]>,
    sh: AttnShape,
) -> Option<Vec<f32>> {
    let (t, s) = (sh.t, sh.s);
    for (bh, x) in scores.chunks_mut(t * s).enumerate() {
        let (bi, h) = (bh / sh.heads, bh % sh.heads);
        let m = &mask[bi * t * s..(bi + 1) * t * s];
        match pos {
            Some(pos) => {
                let p = &pos[h * t * s..(h + 1) * t * s];
                for j in 0..t * s {
                    x[j] += m[j] + p[j];
                }
            }
            None => x.iter_mut().zip(m).for_each(|(x, m)| *x += m),
        }
        simd::softmax_rows(x, s);
    }
    drop.map(|d| scores.iter().zip(d).map(|(p, d)| p * d).collect())
}

/// The CPU's backward in the kernel's terms: `dp` becomes the scores'
/// gradient.
pub fn cpu_softmax_backward(dp: &mut [f32], p: &[f32], drop: Option<&[f32]>, sh: AttnShape) {
    if let Some(d) = drop {
        dp.iter_mut().zip(d).for_each(|(x, m)| *x *= m);
    }
    let mut ds = p.to_vec();
    simd::softmax_grad_rows(&mut ds, dp, sh.s);
    dp.copy_from_slice(&ds);
}

/// The position bias's gradient as the CPU adds it: `ds` of the batch rows
/// in row order.
pub fn cpu_bias_grad(ds: &[f32], dpos: &mut [f32], sh: AttnShape) {
    let per_row = sh.heads * sh.t * sh.s;
    for bi in 0..sh.b {
        for (d, x) in dpos.iter_mut().zip(&ds[bi * per_row..(bi + 1) * per_row]) {
            *d += x;
        }
    }
}

/// The bucket sums in the kernels' order: per (head, query row) each
/// bucket's values in key order, then per (bucket, head) the rows in order.
pub fn cpu_bucket_grad(
    dpos: &[f32],
    buckets: &[u32],
    dtable: &mut [f32],
    (heads, t, s): (usize, usize, usize),
    nb: usize,
) {
    let mut partials = vec![0f32; heads * t * nb];
    for (hr, part) in partials.chunks_mut(nb).enumerate() {
        let r = hr % t;
        for j in 0..s {
            part[buckets[r * s + j] as usize] += dpos[hr * s + j];
        }
    }
    for (i, d) in dtable.iter_mut().enumerate() {
        let (k, h) = (i / heads, i % heads);
        for r in 0..t {
            *d += partials[(h * t + r) * nb + k];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::test_values as values;
    use crate::kernels::mm;
    use dfdx::prelude::*;

    /// The products around the kernels (as the GPU runs them, here by the
    /// CPU attention's own products) and the kernels' CPU side give the
    /// CPU fused attention's output and gradients bit for bit: with and
    /// without position bias and dropout, a tail past the lanes (s = 21).
    #[test]
    fn products_and_the_reference_kernels_are_the_cpu_attention() {
        let (b, heads, t, s, dk) = (2, 3, 5, 21, 4);
        let inner = heads * dk;
        let sh = AttnShape { b, heads, t, s };
        for (with_pos, with_drop) in [(true, true), (false, false), (true, false), (false, true)] {
            let mut seed = 9;
            let q = values(&mut seed, b * t * inner, 2.0);
            let k = values(&mut seed, b * s * inner, 2.0);
            let v = values(&mut seed, b * s * inner, 2.0);
            let pos = with_pos.then(|| values(&mut seed, heads * t * s, 1.0));
            let mask: Vec<f32> = (0..b * t * s)
                .map(|i| if i % 7 == 3 { -1e9 } else { 0.0 })
                .collect();
            let drop = with_drop.then(|| {
                (0..b * heads * t * s)
                    .map(|i| if i % 5 == 1 { 0.0 } else { 1.25 })
                    .collect::<Vec<f32>>()
            });
            let g = values(&mut seed, b * t * inner, 1.0);

            // the CPU fused attention, forward and backward
            let dev = Cpu::default();
            let qt = dev.tensor_from_vec(q.clone(), (b, t, inner));
            let kt = dev.tensor_from_vec(k.clone(), (b, s, inner));
            let vt = dev.tensor_from_vec(v.clone(), (b, s, inner));
            let pt = pos.clone().map(|p| dev.tensor_from_vec(p, (heads, t, s)));
            let out = crate::kernels::attention_cpu(
                qt.clone().leaky_traced(),
                kt.clone().leaky_traced(),
                vt.clone().leaky_traced(),
                pt.clone().map(|p| p.leaky_traced()),
                &mask,
                drop.clone(),
                heads,
            )
            .unwrap_or_else(|_| panic!("the CPU kernel"));
            let out_v = out.as_vec();
            let gt = dev.tensor_from_vec(g.clone(), (b, t, inner));
            let grads = (out * gt).sum::<Rank0, _>().backward();

            // the GPU's decomposition: products per (row, head), kernels between
            let n = b * heads * t * s;
            let mut probs = vec![0f32; n];
            let (qo, ko) = (
                |bh: usize| (bh / heads) * t * inner + (bh % heads) * dk,
                |bh: usize| (bh / heads) * s * inner + (bh % heads) * dk,
            );
            for bh in 0..b * heads {
                unsafe {
                    mm(
                        (t, s, dk),
                        probs.as_mut_ptr().add(bh * t * s),
                        (s, 1),
                        false,
                        q.as_ptr().add(qo(bh)),
                        (inner, 1),
                        k.as_ptr().add(ko(bh)),
                        (1, inner),
                    );
                }
            }
            let pd = cpu_softmax_forward(&mut probs, pos.as_deref(), &mask, drop.as_deref(), sh);
            let p_used = pd.as_ref().unwrap_or(&probs);
            let mut o = vec![0f32; b * t * inner];
            let mut dp = vec![0f32; n];
            let (mut dq, mut dkv, mut dv) = (
                vec![0f32; q.len()],
                vec![0f32; k.len()],
                vec![0f32; v.len()],
            );
            for bh in 0..b * heads {
                unsafe {
                    mm(
                        (t, dk, s),
                        o.as_mut_ptr().add(qo(bh)),
                        (inner, 1),
                        false,
                        p_used.as_ptr().add(bh * t * s),
                        (s, 1),
                        v.as_ptr().add(ko(bh)),
                        (inner, 1),
                    );
                    mm(
                        (t, s, dk),
                        dp.as_mut_ptr().add(bh * t * s),
                        (s, 1),
                        false,
                        g.as_ptr().add(qo(bh)),
                        (inner, 1),
                        v.as_ptr().add(ko(bh)),
                        (1, inner),
                    );
                    mm(
                        (s, dk, t),
                        dv.as_mut_ptr().add(ko(bh)),
                        (inner, 1),
                        true,
                        p_used.as_ptr().add(bh * t * s),
                        (1, s),
                        g.as_ptr().add(qo(bh)),
                        (inner, 1),
                    );
                }
            }
            cpu_softmax_backward(&mut dp, &probs, drop.as_deref(), sh);
            for bh in 0..b * heads {
                unsafe {
                    mm(
                        (t, dk, s),
                        dq.as_mut_ptr().add(qo(bh)),
                        (inner, 1),
                        true,
                        dp.as_ptr().add(bh * t * s),
                        (s, 1),
                        k.as_ptr().add(ko(bh)),
                        (inner, 1),
                    );
                    mm(
                        (s, dk, t),
                        dkv.as_mut_ptr().add(ko(bh)),
                        (inner, 1),
                        true,
                        dp.as_ptr().add(bh * t * s),
                        (1, s),
                        q.as_ptr().add(qo(bh)),
                        (inner, 1),
                    );
                }
            }
            let case = format!("pos {with_pos} dropout {with_drop}");
            assert_eq!(out_v, o, "{case}: output");
            assert_eq!(grads.get(&kt).as_vec(), dkv, "{case}: key gradient");
            assert_eq!(grads.get(&vt).as_vec(), dv, "{case}: value gradient");
            if let Some(pt) = &pt {
                let mut dpos = vec![0f32; heads * t * s];
                cpu_bias_grad(&dp, &mut dpos, sh);
                assert_eq!(
                    grads.get(pt).as_vec(),
                    dpos,
                    "{case}: position bias gradient"
                );
            }
            assert!(dq.iter().any(|&x| x != 0.0), "{case}: a query gradient");
        }
    }

    /// The bucket sums in the kernels' order are dfdx's gather backward
    /// (which adds in another order) up to rounding.
    #[test]
    fn bucket_sums_are_the_gather_backward() {
        let (heads, t, s, nb) = (3, 40, 40, 32);
        let buckets: Vec<usize> = (0..t * s)
            .map(|i| {
                crate::model::relative_position_bucket(
                    (i % s) as i64 - (i / s) as i64,
                    true,
                    nb,
                    128,
                )
            })
            .collect();
        let mut seed = 4;
        let table = values(&mut seed, nb * heads, 1.0);
        let g = values(&mut seed, heads * t * s, 1.0);
        let dev = Cpu::default();
        let tt = dev.tensor_from_vec(table, (nb, heads));
        let idx = dev.tensor_from_vec(buckets.clone(), (t, s));
        let gathered: Tensor<(usize, usize, usize), f32, Cpu, _> =
            tt.clone().leaky_traced().gather(idx);
        let pos = gathered.permute::<_, Axes3<2, 0, 1>>();
        let gt = dev.tensor_from_vec(g.clone(), (heads, t, s));
        let grads = (pos * gt).sum::<Rank0, _>().backward();
        let want = grads.get(&tt).as_vec();
        let b32: Vec<u32> = buckets.iter().map(|&b| b as u32).collect();
        let mut got = vec![0f32; nb * heads];
        cpu_bucket_grad(&g, &b32, &mut got, (heads, t, s), nb);
        for (i, (a, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - w).abs() <= 1e-5 * w.abs().max(1.0),
                "bucket {} head {}: {a} vs {w}",
                i / heads,
                i % heads
            );
        }
        assert!(
            want.iter().filter(|&&w| w != 0.0).count() > nb,
            "buckets reached"
        );
    }
}
