//! The operations of a T5 training step on flat buffers, the seam between
//! the step ([`crate::model::flat`]) and where it runs: [`CpuBackend`] (host
//! vectors, the CPU kernels the GPU kernels follow) and the GPU (our
//! kernels and cuBLAS, `device::cuda_backend`). The step is written once;
//! the CPU runs it in tests against the dfdx model, the GPU for speed.
//!
//! Buffers hold f32 values, `Ids` u32 values (tokens, targets, buckets).
//! Parameters and gradients are each one flat buffer; an operation that
//! reads a parameter or adds to a gradient takes it at an offset.

use super::attention::{self, AttnShape};
use super::loss::{self, LossSettings};
use super::products::GemmShape;
use crate::kernels::activation;
use crate::model::{attention_mask, Batch, MaskDraw, MaskKind};
use crate::Result;

/// A buffer at an offset (a parameter in the flat parameters).
pub type At<'a, B> = (&'a B, usize);
/// A buffer at an offset, written (a gradient in the flat gradients).
pub type AtMut<'a, B> = (&'a mut B, usize);
/// An operation's output and, when given ([`Backend::ready_output`]),
/// where it writes the output's ready form too (the GPU in bf16: the
/// rounded copy the products read, made in the same kernel).
pub type Written<'a, B, R> = (&'a mut B, Option<&'a mut R>);

/// What reads an operation's output, for [`Backend::ready_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Products, from the ready form, and other operations, from the
    /// values.
    Any,
    /// Products alone, and what reads the output as they do (dS for the
    /// position bias's gradient): they read the ready form, so a backend
    /// may leave the values themselves unwritten (the GPU in bf16 writes
    /// the bf16 copy alone, half the bytes).
    Products,
}

/// An attention's projections' shape: `b` batch rows of `rows` rows,
/// `parts` projections (q, k, v: 3; k and v: 2) of `heads` heads of `d`
/// values (see [`Backend::to_heads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadsShape {
    /// Batch rows.
    pub b: usize,
    /// Rows a batch row.
    pub rows: usize,
    /// Projections.
    pub parts: usize,
    /// Heads.
    pub heads: usize,
    /// Values a head.
    pub d: usize,
}

impl HeadsShape {
    /// Values in all.
    pub fn values(&self) -> usize {
        self.b * self.rows * self.parts * self.heads * self.d
    }

    /// [`Backend::to_heads`] (`back` false) and [`Backend::to_rows`] on
    /// the host.
    pub fn cpu_layout(&self, x: &[f32], back: bool) -> Vec<f32> {
        let HeadsShape {
            b,
            rows,
            parts,
            heads,
            d,
        } = *self;
        assert_eq!(x.len(), self.values(), "{self:?}");
        let mut out = vec![0f32; x.len()];
        for p in 0..parts {
            for bi in 0..b {
                for h in 0..heads {
                    for r in 0..rows {
                        let as_rows = (((bi * rows + r) * parts + p) * heads + h) * d;
                        let as_heads = (((p * b + bi) * heads + h) * rows + r) * d;
                        let (from, to) = if back {
                            (as_heads, as_rows)
                        } else {
                            (as_rows, as_heads)
                        };
                        out[to..to + d].copy_from_slice(&x[from..from + d]);
                    }
                }
            }
        }
        out
    }
}

/// Rows of `2f` values as their first halves and their second halves.
pub fn split_rows(ab: &[f32], f: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut b) = (
        Vec::with_capacity(ab.len() / 2),
        Vec::with_capacity(ab.len() / 2),
    );
    for row in ab.chunks(2 * f) {
        a.extend_from_slice(&row[..f]);
        b.extend_from_slice(&row[f..]);
    }
    (a, b)
}

/// Rows of `f` values of `a` and `b` side by side (the inverse of
/// [`split_rows`]).
pub fn join_rows(a: &[f32], b: &[f32], f: usize) -> Vec<f32> {
    a.chunks(f)
        .zip(b.chunks(f))
        .flat_map(|(a, b)| a.iter().chain(b))
        .copied()
        .collect()
}

/// A product's operand: a buffer at an offset, and the buffer made ready
/// for products ahead ([`Backend::ready`]), when it was.
pub struct Operand<'a, B, R> {
    /// The values.
    pub at: At<'a, B>,
    /// The whole buffer made ready (for `at`'s offset in it).
    pub ready: Option<&'a R>,
}

impl<B, R> Clone for Operand<'_, B, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B, R> Copy for Operand<'_, B, R> {}

impl<'a, B, R> From<At<'a, B>> for Operand<'a, B, R> {
    fn from(at: At<'a, B>) -> Self {
        Operand { at, ready: None }
    }
}

/// One product of [`Backend::gemms`]: `c (+)= op(a) · op(b)`.
pub struct Product<'a, B, R> {
    /// Its shape and the transposes.
    pub shape: GemmShape,
    /// The left operand.
    pub a: Operand<'a, B, R>,
    /// The right operand.
    pub b: Operand<'a, B, R>,
    /// The result.
    pub c: AtMut<'a, B>,
    /// Added to `c` (else `c` is overwritten).
    pub accumulate: bool,
}

/// The token positions of a batch grouped by token, for the embedding's
/// gradient in a fixed order: `tokens[u]` appears at rows
/// `positions[starts[u]..starts[u + 1]]`, in row order; tokens ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRows {
    /// Distinct tokens.
    pub tokens: Vec<u32>,
    /// Where each token's rows start in `positions` (one more than tokens).
    pub starts: Vec<u32>,
    /// Rows, grouped by token.
    pub positions: Vec<u32>,
}

impl TokenRows {
    /// Groups the rows of `ids` by token: a counting sort, in time and
    /// memory linear in the rows and the largest id (ids are below the
    /// vocabulary's size, checked with the batch: `Batch::check_ids`).
    pub fn new(ids: &[usize]) -> Self {
        let top = ids.iter().copied().max().map_or(0, |m| m + 1);
        // first[t]: where token t's rows start (then: where its next goes)
        let mut first = vec![0u32; top + 1];
        for &t in ids {
            first[t + 1] += 1;
        }
        let mut tokens = Vec::new();
        let mut starts = Vec::new();
        for t in 0..top {
            if first[t + 1] > 0 {
                tokens.push(t as u32);
                starts.push(first[t]);
            }
            first[t + 1] += first[t];
        }
        starts.push(ids.len() as u32);
        let mut positions = vec![0u32; ids.len()];
        for (i, &t) in ids.iter().enumerate() {
            positions[first[t] as usize] = i as u32;
            first[t] += 1;
        }
        TokenRows {
            tokens,
            starts,
            positions,
        }
    }
}

/// [`TokenRows`] on a backend.
#[derive(Debug)]
pub struct TokenIndex<I> {
    /// On the host.
    pub host: TokenRows,
    /// `tokens`, `starts`, `positions` on the backend.
    pub tokens: I,
    /// See [`TokenRows::starts`].
    pub starts: I,
    /// See [`TokenRows::positions`].
    pub positions: I,
}

impl<I> TokenIndex<I> {
    /// The rows of `ids` grouped by token, uploaded by `be`.
    pub fn new<B: Backend<Ids = I> + ?Sized>(be: &B, ids: &[usize]) -> Result<Self> {
        let host = TokenRows::new(ids);
        Ok(TokenIndex {
            tokens: be.upload_ids(&host.tokens)?,
            starts: be.upload_ids(&host.starts)?,
            positions: be.upload_ids(&host.positions)?,
            host,
        })
    }
}

/// Where a step runs. See the module documentation.
pub trait Backend {
    /// f32 values.
    type Buf;
    /// u32 values.
    type Ids;
    /// A buffer made ready for products ([`Backend::ready`]).
    type Ready;

    /// A pass (forward, or forward and backward) over `params` begins:
    /// they do not change until it ends (a backend may keep them in
    /// another form for the pass: the GPU in bf16 rounds them once).
    fn begin_pass(&self, _params: &Self::Buf) -> Result<()> {
        Ok(())
    }

    /// `n` zeros.
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// `n` values that the next operation on the buffer writes whole; until
    /// then they are unspecified (the GPU skips zeroing them; the CPU fills
    /// them with NaN, so that a read before the write fails the tests).
    fn output(&self, n: usize) -> Result<Self::Buf>;
    /// A buffer of `v`.
    fn upload(&self, v: &[f32]) -> Result<Self::Buf>;
    /// A buffer of `v`.
    fn upload_ids(&self, v: &[u32]) -> Result<Self::Ids>;
    /// The values of `b`.
    fn download(&self, b: &Self::Buf) -> Result<Vec<f32>>;
    /// The attention masks of `batch` (`model::attention_mask`): the
    /// encoder's, the decoder's self-attention's and cross-attention's.
    fn attention_masks(&self, batch: &Batch) -> Result<[Self::Buf; 3]>;
    /// `x` times the mask, or a copy of `x` without one.
    fn masked_copy(&self, x: &Self::Buf, mask: Option<&Self::Buf>) -> Result<Self::Buf>;

    /// `x` made ready for the products that will read it, where the
    /// backend reads operands in another form (the GPU in bf16 rounds `x`
    /// here once, for a forward's product and the backward's, while the
    /// caller keeps the copy); None where it reads `x` as it is.
    fn ready(&self, x: &Self::Buf) -> Result<Option<Self::Ready>>;
    /// Room for the ready form of `n` values, which an operation that
    /// takes a [`Written`] fills as it writes them (the GPU in bf16: no
    /// rounding pass of its own), for the output's `readers`; None where the
    /// backend reads values as they are (as [`Backend::ready`]).
    fn ready_output(&self, n: usize, readers: Readers) -> Result<Option<Self::Ready>>;
    /// The values of an output of `n` values made ready in `ready` (from
    /// [`Backend::ready_output`]): as [`Backend::output`], or where the
    /// operation writes the ready form alone (the GPU's copy for products
    /// only) a stand-in of one value that nothing writes or reads.
    fn output_for(&self, n: usize, _ready: Option<&Self::Ready>) -> Result<Self::Buf> {
        self.output(n)
    }

    /// The products in order (row-major, see [`GemmShape`]). An operand
    /// that several of them read and that is not ready yet is made ready
    /// once (the GPU in bf16 rounds it once); none of them reads what
    /// another writes (the borrows see to that).
    fn gemms(&self, products: Vec<Product<'_, Self::Buf, Self::Ready>>) -> Result<()>;

    /// One product: `c (+)= op(a) · op(b)`.
    fn gemm(
        &self,
        shape: &GemmShape,
        a: Operand<Self::Buf, Self::Ready>,
        b: Operand<Self::Buf, Self::Ready>,
        c: AtMut<Self::Buf>,
        accumulate: bool,
    ) -> Result<()> {
        self.gemms(vec![Product {
            shape: *shape,
            a,
            b,
            c,
            accumulate,
        }])
    }

    /// Rows of `d` values: `x[i] = table[ids[i]]`.
    fn embed(
        &self,
        table: At<Self::Buf>,
        ids: &Self::Ids,
        x: &mut Self::Buf,
        d: usize,
    ) -> Result<()>;
    /// `dtable[token] += Σ dx[row]` over its rows in row order.
    fn embed_grad(
        &self,
        dx: &Self::Buf,
        rows: &TokenIndex<Self::Ids>,
        dtable: AtMut<Self::Buf>,
        d: usize,
    ) -> Result<()>;

    /// RMS norm of `rows` rows of `d`: `o`, and `inv` per row.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: At<Self::Buf>,
        o: Written<Self::Buf, Self::Ready>,
        inv: &mut Self::Buf,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()>;
    /// The norm's backward, added to `dx` and `dw`.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_grad(
        &self,
        x: &Self::Buf,
        g: &Self::Buf,
        inv: &Self::Buf,
        w: At<Self::Buf>,
        dx: Written<Self::Buf, Self::Ready>,
        dw: AtMut<Self::Buf>,
        rows: usize,
        d: usize,
    ) -> Result<()>;

    /// `pos[h, r, j] = table[buckets[r, j], h]`.
    fn position_bias(
        &self,
        table: At<Self::Buf>,
        buckets: &Self::Ids,
        pos: &mut Self::Buf,
        heads: usize,
        tq: usize,
        tk: usize,
    ) -> Result<()>;
    /// See [`attention::DeviceAttention::softmax_forward`].
    fn softmax(
        &self,
        scores: &mut Self::Buf,
        pos: Option<&Self::Buf>,
        mask: &Self::Buf,
        dropout: Option<(&Self::Buf, &mut Self::Buf)>,
        ready: Option<&mut Self::Ready>,
        sh: AttnShape,
    ) -> Result<()>;
    /// See [`attention::DeviceAttention::softmax_backward`].
    fn softmax_grad(
        &self,
        dp: Written<Self::Buf, Self::Ready>,
        p: &Self::Buf,
        drop: Option<&Self::Buf>,
        sh: AttnShape,
    ) -> Result<()>;
    /// Adds dS summed over the batch rows to the position bias's gradient
    /// `dpos [h, t, s]` (see [`attention::DeviceAttention::bias_grad`]),
    /// dS as the products read it (the GPU in bf16: rounded).
    fn bias_grad(
        &self,
        ds: Operand<Self::Buf, Self::Ready>,
        dpos: &mut Self::Buf,
        sh: AttnShape,
    ) -> Result<()>;
    /// See [`attention::DeviceAttention::bucket_grad`].
    fn bucket_grad(
        &self,
        dpos: &Self::Buf,
        buckets: &Self::Ids,
        dtable: AtMut<Self::Buf>,
        shape: (usize, usize, usize),
        nb: usize,
    ) -> Result<()>;

    /// `h = gelu_new(a) · b`, times the mask: `ab`'s rows a row of `a`
    /// and then one of `b` (`f` values each; one product of wi_0 and wi_1
    /// joined makes them).
    fn gated(
        &self,
        ab: &Self::Buf,
        f: usize,
        mask: Option<&Self::Buf>,
        h: Written<Self::Buf, Self::Ready>,
    ) -> Result<()>;
    /// The gated activation's backward: `dab`, rows as `ab`'s, from `g`,
    /// the hidden gradient.
    fn gated_grad(
        &self,
        g: &Self::Buf,
        ab: &Self::Buf,
        f: usize,
        mask: Option<&Self::Buf>,
        dab: Written<Self::Buf, Self::Ready>,
    ) -> Result<()>;
    /// ReLU in place, times the mask.
    fn relu(&self, h: Written<Self::Buf, Self::Ready>, mask: Option<&Self::Buf>) -> Result<()>;
    /// ReLU's backward in place.
    fn relu_grad(
        &self,
        g: Written<Self::Buf, Self::Ready>,
        h: &Self::Buf,
        mask: Option<&Self::Buf>,
    ) -> Result<()>;
    /// A dropout mask.
    fn dropout_mask(&self, draw: &MaskDraw) -> Result<Self::Buf>;
    /// `x + y · mask` in a new buffer (a residual connection; `x` stays
    /// for the backward).
    fn residual(&self, x: &Self::Buf, y: &Self::Buf, mask: Option<&Self::Buf>)
        -> Result<Self::Buf>;
    /// An attention's projections as they come, `[b, rows, parts, heads,
    /// d]` (each row the parts' heads side by side: q, k, v), as heads of
    /// rows, `[parts, b, heads, rows, d]`, in a new buffer: every (batch
    /// row, head) pair's matrix one block, so that one batched product
    /// covers them all.
    fn to_heads(
        &self,
        x: &Self::Buf,
        sh: HeadsShape,
        ready: Option<&mut Self::Ready>,
    ) -> Result<Self::Buf>;
    /// The inverse of [`Backend::to_heads`], the parts (`sh.parts`, 1 to
    /// 3) in buffers of their own (`[b, heads, rows, d]` each: the
    /// backward's gradients of q, k and v come apart).
    fn to_rows(
        &self,
        parts: &[&Self::Buf],
        sh: HeadsShape,
        ready: Option<&mut Self::Ready>,
    ) -> Result<Self::Buf>;
    /// `x ·= s`.
    fn scale(&self, x: &mut Self::Buf, s: f32) -> Result<()>;

    /// Per row of the `n × v` logits: (weighted loss, weighted
    /// cross-entropy, weighted z-loss, log-sum-exp), `4n` values.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        logits: &Self::Buf,
        nv: (usize, usize),
        targets: &Self::Ids,
        weights: &Self::Buf,
        s: LossSettings,
        rows: &mut Self::Buf,
    ) -> Result<()>;
    /// The logits become the loss's gradient, in place, from the upstream
    /// gradient per row and the forward's rows (see [`Backend::loss`]).
    fn loss_grad(
        &self,
        logits: Written<Self::Buf, Self::Ready>,
        nv: (usize, usize),
        targets: &Self::Ids,
        weights: &Self::Buf,
        g_out_rows: (&Self::Buf, &Self::Buf),
        s: LossSettings,
    ) -> Result<()>;
}

/// The step on the CPU: host vectors and the CPU kernels the GPU's follow
/// (products by the `gemm` crate, one thread: a reference, not a trainer).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

fn masked(x: &[f32], mask: Option<&Vec<f32>>) -> Vec<f32> {
    match mask {
        Some(m) => x.iter().zip(m).map(|(x, m)| x * m).collect(),
        None => x.to_vec(),
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Ids = Vec<u32>;
    type Ready = ();

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn output(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![f32::NAN; n])
    }
    fn upload(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }
    fn upload_ids(&self, v: &[u32]) -> Result<Vec<u32>> {
        Ok(v.to_vec())
    }
    fn download(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(b.clone())
    }
    fn masked_copy(&self, x: &Vec<f32>, mask: Option<&Vec<f32>>) -> Result<Vec<f32>> {
        Ok(masked(x, mask))
    }
    fn attention_masks(&self, batch: &Batch) -> Result<[Vec<f32>; 3]> {
        Ok([MaskKind::Encoder, MaskKind::DecoderSelf, MaskKind::Cross]
            .map(|kind| attention_mask(batch, kind)))
    }

    fn ready(&self, _x: &Vec<f32>) -> Result<Option<()>> {
        Ok(None)
    }
    fn ready_output(&self, _n: usize, _readers: Readers) -> Result<Option<()>> {
        Ok(None)
    }
    fn gemms(&self, products: Vec<Product<'_, Vec<f32>, ()>>) -> Result<()> {
        for p in products {
            let sh = &p.shape;
            let ((a, ao), (b, bo), (c, co)) = (p.a.at, p.b.at, p.c);
            let (la, lb, lc) = sh.spans();
            assert!(
                ao + la <= a.len() && bo + lb <= b.len() && co + lc <= c.len(),
                "{sh:?} past its buffers"
            );
            let (lda, ldb, ldc) = sh.ld;
            let a_st = if sh.ta { (1, lda) } else { (lda, 1) };
            let b_st = if sh.tb { (1, ldb) } else { (ldb, 1) };
            for i in 0..sh.batch {
                // SAFETY: the spans checked above hold every element read and written.
                unsafe {
                    crate::kernels::mm(
                        (sh.m, sh.n, sh.k),
                        c.as_mut_ptr().add(co + i * sh.strides.2),
                        (ldc, 1),
                        p.accumulate,
                        a.as_ptr().add(ao + i * sh.strides.0),
                        a_st,
                        b.as_ptr().add(bo + i * sh.strides.1),
                        b_st,
                    );
                }
            }
        }
        Ok(())
    }

    fn embed(
        &self,
        (t, o): At<Vec<f32>>,
        ids: &Vec<u32>,
        x: &mut Vec<f32>,
        d: usize,
    ) -> Result<()> {
        for (row, &id) in x.chunks_mut(d).zip(ids) {
            let at = o + id as usize * d;
            row.copy_from_slice(&t[at..at + d]);
        }
        Ok(())
    }
    fn embed_grad(
        &self,
        dx: &Vec<f32>,
        rows: &TokenIndex<Vec<u32>>,
        (dt, o): AtMut<Vec<f32>>,
        d: usize,
    ) -> Result<()> {
        let r = &rows.host;
        for (u, &tok) in r.tokens.iter().enumerate() {
            let dst = &mut dt[o + tok as usize * d..o + (tok as usize + 1) * d];
            for &p in &r.positions[r.starts[u] as usize..r.starts[u + 1] as usize] {
                let src = &dx[p as usize * d..(p as usize + 1) * d];
                dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        (w, wo): At<Vec<f32>>,
        (o, _): Written<Vec<f32>, ()>,
        inv: &mut Vec<f32>,
        _rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        let (out, i) = super::norm::cpu_forward(x, &w[wo..wo + d], eps);
        *o = out;
        *inv = i;
        Ok(())
    }
    fn rms_norm_grad(
        &self,
        x: &Vec<f32>,
        g: &Vec<f32>,
        inv: &Vec<f32>,
        (w, wo): At<Vec<f32>>,
        (dx, _): Written<Vec<f32>, ()>,
        (dw, dwo): AtMut<Vec<f32>>,
        _rows: usize,
        d: usize,
    ) -> Result<()> {
        super::norm::cpu_backward(x, g, inv, &w[wo..wo + d], dx, &mut dw[dwo..dwo + d]);
        Ok(())
    }

    fn position_bias(
        &self,
        (table, o): At<Vec<f32>>,
        buckets: &Vec<u32>,
        pos: &mut Vec<f32>,
        heads: usize,
        tq: usize,
        tk: usize,
    ) -> Result<()> {
        for h in 0..heads {
            for (i, &bk) in buckets[..tq * tk].iter().enumerate() {
                pos[h * tq * tk + i] = table[o + bk as usize * heads + h];
            }
        }
        Ok(())
    }
    fn softmax(
        &self,
        scores: &mut Vec<f32>,
        pos: Option<&Vec<f32>>,
        mask: &Vec<f32>,
        dropout: Option<(&Vec<f32>, &mut Vec<f32>)>,
        _ready: Option<&mut ()>,
        sh: AttnShape,
    ) -> Result<()> {
        let (drop, pd) = match dropout {
            Some((d, pd)) => (Some(d.as_slice()), Some(pd)),
            None => (None, None),
        };
        let out = attention::cpu_softmax_forward(scores, pos.map(|p| p.as_slice()), mask, drop, sh);
        if let (Some(pd), Some(out)) = (pd, out) {
            *pd = out;
        }
        Ok(())
    }
    fn softmax_grad(
        &self,
        (dp, _): Written<Vec<f32>, ()>,
        p: &Vec<f32>,
        drop: Option<&Vec<f32>>,
        sh: AttnShape,
    ) -> Result<()> {
        attention::cpu_softmax_backward(dp, p, drop.map(|d| d.as_slice()), sh);
        Ok(())
    }
    fn bias_grad(
        &self,
        ds: Operand<Vec<f32>, ()>,
        dpos: &mut Vec<f32>,
        sh: AttnShape,
    ) -> Result<()> {
        let (ds, o) = ds.at;
        attention::cpu_bias_grad(&ds[o..], dpos, sh);
        Ok(())
    }
    fn bucket_grad(
        &self,
        dpos: &Vec<f32>,
        buckets: &Vec<u32>,
        (dt, o): AtMut<Vec<f32>>,
        (heads, t, s): (usize, usize, usize),
        nb: usize,
    ) -> Result<()> {
        attention::cpu_bucket_grad(dpos, buckets, &mut dt[o..o + nb * heads], (heads, t, s), nb);
        Ok(())
    }

    fn gated(
        &self,
        ab: &Vec<f32>,
        f: usize,
        mask: Option<&Vec<f32>>,
        (h, _): Written<Vec<f32>, ()>,
    ) -> Result<()> {
        let (a, b) = split_rows(ab, f);
        activation::gated_forward(h, &a, &b, mask.map(|m| m.as_slice()));
        Ok(())
    }
    fn gated_grad(
        &self,
        g: &Vec<f32>,
        ab: &Vec<f32>,
        f: usize,
        mask: Option<&Vec<f32>>,
        (dab, _): Written<Vec<f32>, ()>,
    ) -> Result<()> {
        let (a, b) = split_rows(ab, f);
        let (mut ga, mut gb) = (g.clone(), vec![0f32; g.len()]);
        activation::gated_backward(&mut ga, &mut gb, &a, &b, mask.map(|m| m.as_slice()));
        *dab = join_rows(&ga, &gb, f);
        Ok(())
    }
    fn relu(&self, (h, _): Written<Vec<f32>, ()>, mask: Option<&Vec<f32>>) -> Result<()> {
        activation::relu_forward(h, mask.map(|m| m.as_slice()));
        Ok(())
    }
    fn relu_grad(
        &self,
        (g, _): Written<Vec<f32>, ()>,
        h: &Vec<f32>,
        mask: Option<&Vec<f32>>,
    ) -> Result<()> {
        activation::relu_backward(g, h, mask.map(|m| m.as_slice()));
        Ok(())
    }
    fn dropout_mask(&self, draw: &MaskDraw) -> Result<Vec<f32>> {
        Ok(draw.values())
    }
    fn residual(&self, x: &Vec<f32>, y: &Vec<f32>, mask: Option<&Vec<f32>>) -> Result<Vec<f32>> {
        Ok(match mask {
            Some(m) => x
                .iter()
                .zip(y)
                .zip(m)
                .map(|((x, y), m)| x + y * m)
                .collect(),
            None => x.iter().zip(y).map(|(x, y)| x + y).collect(),
        })
    }
    fn to_heads(&self, x: &Vec<f32>, sh: HeadsShape, _ready: Option<&mut ()>) -> Result<Vec<f32>> {
        Ok(sh.cpu_layout(x, false))
    }
    fn to_rows(
        &self,
        parts: &[&Vec<f32>],
        sh: HeadsShape,
        _ready: Option<&mut ()>,
    ) -> Result<Vec<f32>> {
        assert_eq!(parts.len(), sh.parts, "{sh:?}");
        let joined: Vec<f32> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        Ok(sh.cpu_layout(&joined, true))
    }
    fn scale(&self, x: &mut Vec<f32>, s: f32) -> Result<()> {
        x.iter_mut().for_each(|x| *x *= s);
        Ok(())
    }

    fn loss(
        &self,
        logits: &Vec<f32>,
        (_, v): (usize, usize),
        targets: &Vec<u32>,
        weights: &Vec<f32>,
        s: LossSettings,
        rows: &mut Vec<f32>,
    ) -> Result<()> {
        let t: Vec<usize> = targets.iter().map(|&t| t as usize).collect();
        *rows = loss::cpu_forward(logits, v, &t, weights, s)
            .into_iter()
            .flatten()
            .collect();
        Ok(())
    }
    fn loss_grad(
        &self,
        (logits, _): Written<Vec<f32>, ()>,
        (_, v): (usize, usize),
        targets: &Vec<u32>,
        weights: &Vec<f32>,
        (g_out, rows): (&Vec<f32>, &Vec<f32>),
        s: LossSettings,
    ) -> Result<()> {
        let t: Vec<usize> = targets.iter().map(|&t| t as usize).collect();
        let r: Vec<[f32; 4]> = rows.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        loss::cpu_grad_in_place(logits, v, &t, weights, (g_out, &r), s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rows_group_rows_by_token_in_row_order() {
        let r = TokenRows::new(&[5, 2, 5, 0, 2, 5]);
        assert_eq!(r.tokens, [0, 2, 5]);
        assert_eq!(r.starts, [0, 1, 3, 6]);
        assert_eq!(r.positions, [3, 1, 4, 0, 2, 5]);
        let empty = TokenRows::new(&[]);
        assert!(empty.tokens.is_empty() && empty.positions.is_empty());
        assert_eq!(empty.starts, [0]);
        // against the definition: rows sorted by (token, row)
        let mut rng = 12345u64;
        let ids: Vec<usize> = (0..3000)
            .map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((rng >> 33) % 700) as usize
            })
            .collect();
        let r = TokenRows::new(&ids);
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by_key(|&i| (ids[i as usize], i));
        assert_eq!(r.positions, order);
        for (u, &t) in r.tokens.iter().enumerate() {
            let rows = &r.positions[r.starts[u] as usize..r.starts[u + 1] as usize];
            assert!(!rows.is_empty() && rows.iter().all(|&i| ids[i as usize] == t as usize));
        }
        assert!(r.tokens.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*r.starts.last().unwrap() as usize, ids.len());
    }

    #[test]
    fn projections_become_heads_of_rows_and_back() {
        // [b 2, rows 3, parts 2, heads 2, d 2]: value = 10000b + 1000r + 100p + 10h + c
        let sh = HeadsShape {
            b: 2,
            rows: 3,
            parts: 2,
            heads: 2,
            d: 2,
        };
        let digits = |v: [usize; 5]| v.iter().fold(0, |a, &x| 10 * a + x) as f32;
        let mut x = Vec::new();
        for b in 0..2 {
            for r in 0..3 {
                for p in 0..2 {
                    for h in 0..2 {
                        for c in 0..2 {
                            x.push(digits([b, r, p, h, c]));
                        }
                    }
                }
            }
        }
        let y = CpuBackend.to_heads(&x, sh, None).unwrap();
        // [parts, b, heads, rows, d]
        let mut want = Vec::new();
        for p in 0..2 {
            for b in 0..2 {
                for h in 0..2 {
                    for r in 0..3 {
                        for c in 0..2 {
                            want.push(digits([b, r, p, h, c]));
                        }
                    }
                }
            }
        }
        assert_eq!(y, want);
        let (p0, p1) = (y[..24].to_vec(), y[24..].to_vec());
        assert_eq!(CpuBackend.to_rows(&[&p0, &p1], sh, None).unwrap(), x);
    }
}
