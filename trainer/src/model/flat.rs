//! T5's training step on flat buffers, with its backward written out: the
//! forward keeps what the backward needs, the backward walks the layers
//! back. It runs on a [`Backend`]: the GPU (our kernels and cuBLAS, every
//! buffer on the device, parameters and gradients one flat buffer each for
//! the device optimizer) or the CPU, where tests hold it to the dfdx model's
//! loss and gradients ([`T5::forward_loss`]).
//!
//! Dropout masks are drawn from the same stream in the same order as the
//! dfdx model draws them, so both drop the same values.

use super::*;
use crate::device::attention::AttnShape;
use crate::device::backend::{AtMut, Backend, HeadsShape, Operand, Product, Readers, TokenIndex};
use crate::device::loss::LossSettings;
use crate::device::products::GemmShape;
use crate::device::twin::FlatLayout;
use crate::Result;

/// The step's view of a model: its shape and where each parameter lies in
/// the flat parameters (in [`T5::param_info`] order).
#[derive(Debug, Clone)]
pub struct FlatModel {
    /// The shape.
    pub cfg: T5Config,
    /// The parameters in one buffer.
    pub layout: FlatLayout,
    shared: usize,
    lm_head: Option<usize>,
    encoder: StackIdx,
    decoder: StackIdx,
}

impl<D: Device<f32>> T5<D> {
    /// The model as the flat step sees it.
    pub fn flat_model(&self) -> FlatModel {
        let shapes: Vec<(usize, usize)> = self.info.iter().map(|i| shape2(&i.hf_shape)).collect();
        FlatModel {
            cfg: self.cfg.clone(),
            layout: FlatLayout::new(&shapes),
            shared: self.shared,
            lm_head: self.lm_head,
            encoder: self.encoder.clone(),
            decoder: self.decoder.clone(),
        }
    }
}

/// What one attention keeps for its backward.
///
/// The `_r` fields: what the backend made ready for the products
/// ([`Backend::ready`]: the GPU in bf16, a rounded copy), once for the
/// forward's product and the backward's. Where products alone read a
/// buffer ([`Readers::Products`]: the normed input, the heads, the context),
/// the GPU in bf16 keeps the copy alone and leaves the f32 values unwritten.
struct Attn<B: Backend> {
    /// The normed input the projections read (self-attention: q, k and v;
    /// cross-attention: q).
    n: B::Buf,
    n_r: Option<B::Ready>,
    inv: B::Buf,
    x_in: B::Buf,
    /// The projections as heads of rows ([`Backend::to_heads`]):
    /// self-attention's q, k and v; cross-attention's q, its k and v in
    /// `kv`.
    heads: B::Buf,
    heads_r: Option<B::Ready>,
    kv: Option<Readied<B>>,
    p: B::Buf,
    /// The probabilities after dropout and the mask.
    pd: Option<(B::Buf, B::Buf)>,
    /// The probabilities the context product read (after dropout) made
    /// ready.
    used_r: Option<B::Ready>,
    ctx: B::Buf,
    ctx_r: Option<B::Ready>,
    /// The residual branch's dropout mask.
    rm: Option<B::Buf>,
    sh: AttnShape,
}

impl<B: Backend> Attn<B> {
    /// Where q, k and v lie (`d_kv` values a head).
    fn qkv(&self, d_kv: usize) -> [Op<'_, B>; 3] {
        qkv_at::<B>(
            (&self.heads, &self.heads_r),
            self.kv.as_ref(),
            self.sh,
            d_kv,
        )
    }
}

/// A product's operand on the backend `B`.
type Op<'a, B> = Operand<'a, <B as Backend>::Buf, <B as Backend>::Ready>;

/// A buffer and what the backend made ready of it, as the operation that
/// wrote it did ([`Backend::ready_output`]).
type Readied<B> = (<B as Backend>::Buf, Option<<B as Backend>::Ready>);

/// `x` from its start as an operand, with what the backend made ready of
/// it.
fn op<'a, B: Backend>(x: &'a B::Buf, ready: &'a Option<B::Ready>) -> Op<'a, B> {
    Operand {
        at: (x, 0),
        ready: ready.as_ref(),
    }
}

/// A sublayer's output gradient: the residual stream's gradient `dx` as
/// it is, with what the backend made ready of it, or through the
/// sublayer's dropout mask (`masked`; not ready).
fn residual_grad<'a, B: Backend>(masked: &'a Option<B::Buf>, dx: &'a Readied<B>) -> Op<'a, B> {
    match masked {
        Some(m) => (m, 0).into(),
        None => op::<B>(&dx.0, &dx.1),
    }
}

/// Where q, k and v lie: self-attention's in `heads`, or q there and k and
/// v in `kv` (cross-attention).
fn qkv_at<'a, B: Backend>(
    (heads, heads_r): (&'a B::Buf, &'a Option<B::Ready>),
    kv: Option<&'a Readied<B>>,
    sh: AttnShape,
    d_kv: usize,
) -> [Op<'a, B>; 3] {
    let kv_len = sh.b * sh.heads * sh.s * d_kv;
    let at = |x: &'a B::Buf, r: &'a Option<B::Ready>, o: usize| Operand {
        at: (x, o),
        ready: r.as_ref(),
    };
    match kv {
        None => [0, 1, 2].map(|i| at(heads, heads_r, i * kv_len)),
        Some((kv, kv_r)) => [at(heads, heads_r, 0), at(kv, kv_r, 0), at(kv, kv_r, kv_len)],
    }
}

/// What one feed-forward keeps for its backward.
struct Ff<B: Backend> {
    x_in: B::Buf,
    n: B::Buf,
    /// (see [`Attn`])
    n_r: Option<B::Ready>,
    inv: B::Buf,
    /// Gated: the two pre-activations, side by side per row; ReLU: none.
    pre: Option<B::Buf>,
    h: B::Buf,
    h_r: Option<B::Ready>,
    hm: Option<B::Buf>,
    ym: Option<B::Buf>,
}

/// What a block keeps: self-attention, cross-attention, feed-forward.
type Block<B> = (Attn<B>, Option<Attn<B>>, Ff<B>);

/// What a stack keeps.
struct Stack<B: Backend> {
    tokens: TokenIndex<B::Ids>,
    emb_mask: Option<B::Buf>,
    buckets: B::Ids,
    blocks: Vec<Block<B>>,
    final_in: B::Buf,
    final_inv: B::Buf,
    final_mask: Option<B::Buf>,
}

/// A batch's inputs on a backend, uploaded ahead of its pass
/// ([`FlatModel::inputs`]) so that the host's part of the next batch can
/// overlap the device's work on this one.
pub struct Inputs<B: Backend> {
    /// (rows, encoder length, decoder length), checked against the batch.
    shape: (usize, usize, usize),
    masks: [B::Buf; 3],
    enc: StackInputs<B>,
    dec: StackInputs<B>,
    targets: B::Ids,
    weights: B::Buf,
}

/// A stack's inputs: its tokens, grouped by token, its position buckets.
struct StackInputs<B: Backend> {
    ids: B::Ids,
    index: TokenIndex<B::Ids>,
    buckets: B::Ids,
}

impl<B: Backend> StackInputs<B> {
    fn new(be: &B, tokens: &[usize], buckets: Vec<usize>) -> Result<Self> {
        Ok(StackInputs {
            ids: be.upload_ids(&ids(tokens))?,
            index: TokenIndex::new(be, tokens)?,
            buckets: be.upload_ids(&ids(&buckets))?,
        })
    }
}

/// A queued pass's loss: the loss kernel's per-row values, read (a wait
/// for the device) by [`PendingLoss::resolve`].
pub struct PendingLoss<B: Backend> {
    rows: B::Buf,
    norm: f32,
    tokens: usize,
}

impl<B: Backend> PendingLoss<B> {
    /// The loss and its parts (a copy to the host).
    pub fn resolve(self, be: &B) -> Result<FlatLoss> {
        let host_rows = be.download(&self.rows)?;
        let total: f64 = host_rows.chunks(4).map(|r| r[0] as f64).sum();
        let parts = LossParts {
            cross_entropy: host_rows.chunks(4).map(|r| r[1] as f64).sum(),
            z_loss: host_rows.chunks(4).map(|r| r[2] as f64).sum(),
            tokens: self.tokens,
        };
        Ok(FlatLoss {
            loss: (total * self.norm as f64) as f32,
            parts,
        })
    }
}

/// One forward and backward.
struct Step<'a, B: Backend> {
    m: &'a FlatModel,
    be: &'a B,
    params: &'a B::Buf,
    drop: &'a mut Dropout,
}

/// The loss of a batch and what the step computed it from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlatLoss {
    /// The training loss (normalised, times the scale).
    pub loss: f32,
    /// Its parts, for logging.
    pub parts: LossParts,
}

impl FlatModel {
    /// The inputs of `batch` on `be`: its masks, tokens, position buckets,
    /// targets and weights.
    pub fn inputs<B: Backend>(&self, be: &B, batch: &Batch) -> Result<Inputs<B>> {
        let (s, t) = (batch.enc_len, batch.dec_len);
        Ok(Inputs {
            shape: (batch.batch, s, t),
            masks: be.attention_masks(batch)?,
            enc: StackInputs::new(
                be,
                &batch.enc_tokens,
                bucket_matrix(&self.cfg, 0, s, s, true),
            )?,
            dec: StackInputs::new(
                be,
                &batch.dec_inputs,
                bucket_matrix(&self.cfg, 0, t, t, false),
            )?,
            targets: be.upload_ids(&ids(&batch.targets))?,
            weights: be.upload(&batch.weights)?,
        })
    }

    /// The loss of `batch` and its gradient added to `grads` (flat, in the
    /// parameters' layout), on `be`.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        batch: &Batch,
        drop: &mut Dropout,
        cfg: &LossConfig,
        scale: f32,
    ) -> Result<FlatLoss> {
        let inputs = self.inputs(be, batch)?;
        self.queue_loss_and_grads(be, params, grads, (batch, inputs), drop, cfg, scale)?
            .resolve(be)
    }

    /// [`Self::loss_and_grads`] from the batch's [`Self::inputs`], its work
    /// queued on `be`; the loss read later.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_loss_and_grads<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        (batch, inputs): (&Batch, Inputs<B>),
        drop: &mut Dropout,
        cfg: &LossConfig,
        scale: f32,
    ) -> Result<PendingLoss<B>> {
        Step::new(self, be, params, drop).run(batch, inputs, Some(grads), cfg, scale)
    }

    /// The loss of `batch` alone, without the backward (held-out data).
    pub fn loss<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        batch: &Batch,
        drop: &mut Dropout,
        cfg: &LossConfig,
    ) -> Result<FlatLoss> {
        let inputs = self.inputs(be, batch)?;
        Step::new(self, be, params, drop)
            .run(batch, inputs, None, cfg, 1.0)?
            .resolve(be)
    }

    fn off(&self, i: usize) -> usize {
        self.layout.params[i].0
    }
}

fn ids(v: &[usize]) -> Vec<u32> {
    v.iter().map(|&x| x as u32).collect()
}

impl<'a, B: Backend> Step<'a, B> {
    fn mask(&mut self, n: usize) -> Result<Option<B::Buf>> {
        if self.drop.rate <= 0.0 {
            return Ok(None);
        }
        let draw = self.drop.draw(n);
        Ok(Some(self.be.dropout_mask(&draw)?))
    }

    /// `x` times a dropout mask as a new buffer; None without a mask (the
    /// caller uses `x` itself: no copy when dropout is off).
    fn masked(&self, x: &B::Buf, mask: Option<&B::Buf>) -> Result<Option<B::Buf>> {
        mask.map(|m| self.be.masked_copy(x, Some(m))).transpose()
    }

    /// `x[rows, in] · Wᵀ` for the dense weight `w` `[out, in]`.
    fn dense(&self, x: Op<'_, B>, rows: usize, w: usize) -> Result<B::Buf> {
        self.dense_joined(x, rows, (w, 1))
    }

    /// The dense weights `first..first + parts` as one `[parts · out, in]`
    /// weight: its offset and shape. They lie one after the other in the
    /// flat parameters and gradients (`T5::new` adds an attention's q, k
    /// and v in a row, and a gated feed-forward's wi_0 and wi_1).
    fn joined(&self, (first, parts): (usize, usize)) -> Result<(usize, (usize, usize))> {
        let (at, (r, c)) = self.m.layout.params[first];
        for i in 1..parts {
            if self.m.layout.params[first + i] != (at + i * r * c, (r, c)) {
                return Err(crate::TrainError::Config(format!(
                    "parameters {first}..{}: not one weight after the other",
                    first + parts
                )));
            }
        }
        Ok((at, (parts * r, c)))
    }

    /// `x[rows, in] · Wᵀ` for the joined weights `ws` ([`Step::joined`]):
    /// one product for q, k and v.
    fn dense_joined(&self, x: Op<'_, B>, rows: usize, ws: (usize, usize)) -> Result<B::Buf> {
        let (at, (out, inn)) = self.joined(ws)?;
        let mut y = self.be.output(rows * out)?;
        let shape = GemmShape::dense((rows, out, inn), false, true);
        let w = (self.params, at).into();
        self.be.gemm(&shape, x, w, (&mut y, 0), false)?;
        Ok(y)
    }

    /// The dense layer's backward: `dW += dyᵀ · x`, `dx (+)= dy · W` for
    /// the joined weights `ws` ([`Step::joined`]; one weight: `(w, 1)`);
    /// the GPU's bf16 products round `dy` once for both, unless it is
    /// ready.
    #[allow(clippy::too_many_arguments)]
    fn dense_grad(
        &self,
        x: Op<'_, B>,
        dy: Op<'_, B>,
        rows: usize,
        ws: (usize, usize),
        dx: &mut B::Buf,
        add_dx: bool,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let (at, (out, inn)) = self.joined(ws)?;
        self.be.gemms(vec![
            Product {
                shape: GemmShape::dense((out, inn, rows), true, false),
                a: dy,
                b: x,
                c: (grads, at),
                accumulate: true,
            },
            Product {
                shape: GemmShape::dense((rows, inn, out), false, false),
                a: dy,
                b: (self.params, at).into(),
                c: (dx, 0),
                accumulate: add_dx,
            },
        ])
    }

    /// RMS norm of `x` (`rows` rows) by the weight `w`: (normed, the
    /// normed made ready when `ready` asks: then only products read it,
    /// inv).
    #[allow(clippy::type_complexity)]
    fn norm(
        &self,
        x: &B::Buf,
        rows: usize,
        w: usize,
        ready: bool,
    ) -> Result<(B::Buf, Option<B::Ready>, B::Buf)> {
        let d = self.m.cfg.d_model;
        let mut o_r = match ready {
            true => self.be.ready_output(rows * d, Readers::Products)?,
            false => None,
        };
        let mut o = self.be.output_for(rows * d, o_r.as_ref())?;
        let mut inv = self.be.output(rows)?;
        self.be.rms_norm(
            x,
            (self.params, self.m.off(w)),
            (&mut o, o_r.as_mut()),
            &mut inv,
            rows,
            d,
            self.m.cfg.layer_norm_epsilon,
        )?;
        Ok((o, o_r, inv))
    }

    /// The norm's backward, added to the residual stream's gradient `dx`
    /// (made ready again as it is summed).
    #[allow(clippy::too_many_arguments)]
    fn norm_grad(
        &self,
        x: &B::Buf,
        g: &B::Buf,
        inv: &B::Buf,
        rows: usize,
        w: usize,
        (dx, dx_r): &mut Readied<B>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let (params, o) = (self.params, self.m.off(w));
        self.be.rms_norm_grad(
            x,
            g,
            inv,
            (params, o),
            (dx, dx_r.as_mut()),
            (grads, o),
            rows,
            self.m.cfg.d_model,
        )
    }

    /// The shape of `parts` projections of `rows` rows a batch row.
    fn heads_shape(&self, sh: AttnShape, rows: usize, parts: usize) -> HeadsShape {
        HeadsShape {
            b: sh.b,
            rows,
            parts,
            heads: sh.heads,
            d: self.m.cfg.d_kv,
        }
    }

    /// `x` as heads of rows ([`Backend::to_heads`]), made ready as it is
    /// laid out (for the products that read it alone).
    fn to_heads(&self, x: &B::Buf, hs: HeadsShape) -> Result<Readied<B>> {
        let mut r = self.be.ready_output(hs.values(), Readers::Products)?;
        Ok((self.be.to_heads(x, hs, r.as_mut())?, r))
    }

    /// The parts back as rows ([`Backend::to_rows`]), made ready as they
    /// are laid out (for the products that read them alone).
    fn to_rows(&self, parts: &[&B::Buf], hs: HeadsShape) -> Result<Readied<B>> {
        let mut r = self.be.ready_output(hs.values(), Readers::Products)?;
        Ok((self.be.to_rows(parts, hs, r.as_mut())?, r))
    }

    /// `c = op(a) · op(b)` for every (batch row, head) pair of an attention
    /// in one batched product: `(m, n, k)` and the transposes per pair,
    /// each operand a pair's block after another (heads of rows, or the
    /// probabilities `[b, heads, t, s]`).
    fn head_product<'p>(
        sh: AttnShape,
        (mnk, ta, tb): ((usize, usize, usize), bool, bool),
        a: Op<'p, B>,
        b: Op<'p, B>,
        c: AtMut<'p, B::Buf>,
    ) -> Product<'p, B::Buf, B::Ready> {
        Product {
            shape: GemmShape {
                batch: sh.b * sh.heads,
                ..GemmShape::dense(mnk, ta, tb)
            },
            a,
            b,
            c,
            accumulate: false,
        }
    }

    /// An attention sublayer's forward, its residual added to `x`: self-
    /// attention (`kv_in` None: keys and values from the normed `x`, with
    /// the position bias) or cross-attention over `kv_in` (`s` rows a batch
    /// row).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        x: &mut B::Buf,
        (ln, a): (usize, AttnIdx),
        kv_in: Option<Op<'_, B>>,
        pos: Option<&B::Buf>,
        mask: &B::Buf,
        sh: AttnShape,
    ) -> Result<Attn<B>> {
        let be = self.be;
        let (b, t, s) = (sh.b, sh.t, sh.s);
        let (n, n_r, inv) = self.norm(x, b * t, ln, true)?;
        // q, k and v (self-attention), or q and then k and v, each one product
        let ((heads, heads_r), kv) = match kv_in {
            None => {
                let qkv = self.dense_joined(op::<B>(&n, &n_r), b * t, (a.q, 3))?;
                (self.to_heads(&qkv, self.heads_shape(sh, t, 3))?, None)
            }
            Some(src) => {
                let q = self.dense(op::<B>(&n, &n_r), b * t, a.q)?;
                let kv = self.dense_joined(src, b * s, (a.k, 2))?;
                let kv = self.to_heads(&kv, self.heads_shape(sh, s, 2))?;
                (self.to_heads(&q, self.heads_shape(sh, t, 1))?, Some(kv))
            }
        };
        let dk = self.m.cfg.d_kv;
        let [q, k, v] = qkv_at::<B>((&heads, &heads_r), kv.as_ref(), sh, dk);
        // scores = q · kᵀ, per pair t x s over dk
        let mut p = be.output(sh.rows() * s)?;
        let scores = ((t, s, dk), false, true);
        be.gemms(vec![Self::head_product(sh, scores, q, k, (&mut p, 0))])?;
        let drop_mask = self.mask(sh.rows() * s)?;
        // what p · v reads, made ready by the softmax (the probabilities
        // after dropout: by products alone; without: by the backward too)
        let readers = match drop_mask {
            Some(_) => Readers::Products,
            None => Readers::Any,
        };
        let mut used_r = be.ready_output(sh.rows() * s, readers)?;
        let mut pd = match drop_mask {
            Some(m) => Some((m, be.output_for(sh.rows() * s, used_r.as_ref())?)),
            None => None,
        };
        let drop = pd.as_mut().map(|(m, d)| (&*m, d));
        be.softmax(&mut p, pos, mask, drop, used_r.as_mut(), sh)?;
        let mut ctx = be.output(b * t * self.m.cfg.inner_dim())?;
        let used = pd.as_ref().map(|(_, d)| d).unwrap_or(&p);
        // ctx = p · v, per pair t x dk over s
        let pv = ((t, dk, s), false, false);
        let used_op = op::<B>(used, &used_r);
        be.gemms(vec![Self::head_product(sh, pv, used_op, v, (&mut ctx, 0))])?;
        let (ctx, ctx_r) = self.to_rows(&[&ctx], self.heads_shape(sh, t, 1))?;
        let o = self.dense(op::<B>(&ctx, &ctx_r), b * t, a.o)?;
        let rm = self.mask(b * t * self.m.cfg.d_model)?;
        let out = be.residual(x, &o, rm.as_ref())?;
        let x_in = std::mem::replace(x, out);
        Ok(Attn {
            n,
            n_r,
            inv,
            x_in,
            heads,
            heads_r,
            kv,
            p,
            pd,
            used_r,
            ctx,
            ctx_r,
            rm,
            sh,
        })
    }

    /// The attention sublayer's backward: `dx` gets the normed input's
    /// share (the residual's passes as it is), `dkv` (cross-attention) the
    /// keys' and values' input's, `dpos` the position bias's.
    #[allow(clippy::too_many_arguments)]
    fn attention_grad(
        &self,
        s_: &Attn<B>,
        (ln, a): (usize, AttnIdx),
        kv_in: Option<(Op<'_, B>, &mut B::Buf)>,
        dpos: Option<&mut B::Buf>,
        dx: &mut Readied<B>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let be = self.be;
        let sh = s_.sh;
        let (b, t, s) = (sh.b, sh.t, sh.s);
        let masked = self.masked(&dx.0, s_.rm.as_ref())?;
        let d_o = residual_grad::<B>(&masked, dx);
        let mut dctx = be.output(b * t * self.m.cfg.inner_dim())?;
        let ctx = op::<B>(&s_.ctx, &s_.ctx_r);
        self.dense_grad(ctx, d_o, b * t, (a.o, 1), &mut dctx, false, grads)?;
        let dctx = self.to_heads(&dctx, self.heads_shape(sh, t, 1))?;
        let d_o = op::<B>(&dctx.0, &dctx.1);
        let d_kv = self.m.cfg.d_kv;
        let [q, k, v] = s_.qkv(d_kv);
        // the gradients of q, k and v as heads of rows, as the forward's
        let (q_shape, kv_shape) = (self.heads_shape(sh, t, 1), self.heads_shape(sh, s, 1));
        let mut dq = be.output(q_shape.values())?;
        let (mut dk, mut dv) = (be.output(kv_shape.values())?, be.output(kv_shape.values())?);
        let mut ds = be.output(sh.rows() * s)?;
        let used = s_.pd.as_ref().map(|(_, d)| d).unwrap_or(&s_.p);
        let used = op::<B>(used, &s_.used_r);
        // dP = dO · vᵀ; dV = Pdᵀ · dO (dO made ready as laid out as heads)
        let tr = ((s, d_kv, t), true, false);
        let dp = ((t, s, d_kv), false, true);
        be.gemms(vec![
            Self::head_product(sh, dp, d_o, v, (&mut ds, 0)),
            Self::head_product(sh, tr, used, d_o, (&mut dv, 0)),
        ])?;
        // dS, made ready by the softmax's backward (the position bias's
        // gradient reads it as the products do)
        let mut ds_r = be.ready_output(sh.rows() * s, Readers::Products)?;
        let drop = s_.pd.as_ref().map(|(m, _)| m);
        be.softmax_grad((&mut ds, ds_r.as_mut()), &s_.p, drop, sh)?;
        // dQ = dS · k; dK = dSᵀ · q
        let ds_k = ((t, d_kv, s), false, false);
        let ds_op = op::<B>(&ds, &ds_r);
        be.gemms(vec![
            Self::head_product(sh, ds_k, ds_op, k, (&mut dq, 0)),
            Self::head_product(sh, tr, ds_op, q, (&mut dk, 0)),
        ])?;
        if let Some(dpos) = dpos {
            be.bias_grad(ds_op, dpos, sh)?;
        }
        let mut dn = be.output(b * t * self.m.cfg.d_model)?;
        let n = op::<B>(&s_.n, &s_.n_r);
        match kv_in {
            None => {
                let (dqkv, r) = self.to_rows(&[&dq, &dk, &dv], self.heads_shape(sh, t, 3))?;
                let dqkv = op::<B>(&dqkv, &r);
                self.dense_grad(n, dqkv, b * t, (a.q, 3), &mut dn, false, grads)?;
            }
            Some((src, dsrc)) => {
                let (dq, r) = self.to_rows(&[&dq], q_shape)?;
                let dq = op::<B>(&dq, &r);
                self.dense_grad(n, dq, b * t, (a.q, 1), &mut dn, false, grads)?;
                let (dkv, r) = self.to_rows(&[&dk, &dv], self.heads_shape(sh, s, 2))?;
                let dkv = op::<B>(&dkv, &r);
                self.dense_grad(src, dkv, b * s, (a.k, 2), dsrc, true, grads)?;
            }
        }
        self.norm_grad(&s_.x_in, &dn, &s_.inv, b * t, ln, dx, grads)
    }

    /// The feed-forward sublayer's forward, its residual added to `x`.
    fn feed_forward(&mut self, x: &mut B::Buf, rows: usize, blk: &BlockIdx) -> Result<Ff<B>> {
        let be = self.be;
        let f = self.m.cfg.d_ff;
        let (n, n_r, inv) = self.norm(x, rows, blk.ff_ln, true)?;
        let hm = self.mask(rows * f)?;
        // the hidden layer, made ready by its activation (ReLU's backward
        // reads it too)
        let readers = match blk.ff {
            FfIdx::Relu { .. } => Readers::Any,
            FfIdx::Gated { .. } => Readers::Products,
        };
        let mut h_r = be.ready_output(rows * f, readers)?;
        let (pre, h, wo) = match blk.ff {
            FfIdx::Relu { wi, wo } => {
                let mut h = self.dense(op::<B>(&n, &n_r), rows, wi)?;
                be.relu((&mut h, h_r.as_mut()), hm.as_ref())?;
                (None, h, wo)
            }
            FfIdx::Gated { wi0, wo, .. } => {
                // wi_0's and wi_1's products side by side, one product
                let ab = self.dense_joined(op::<B>(&n, &n_r), rows, (wi0, 2))?;
                let mut h = be.output_for(rows * f, h_r.as_ref())?;
                be.gated(&ab, f, hm.as_ref(), (&mut h, h_r.as_mut()))?;
                (Some(ab), h, wo)
            }
        };
        let y = self.dense(op::<B>(&h, &h_r), rows, wo)?;
        let ym = self.mask(rows * self.m.cfg.d_model)?;
        let out = be.residual(x, &y, ym.as_ref())?;
        let x_in = std::mem::replace(x, out);
        Ok(Ff {
            x_in,
            n,
            n_r,
            inv,
            pre,
            h,
            h_r,
            hm,
            ym,
        })
    }

    fn feed_forward_grad(
        &self,
        s_: &Ff<B>,
        rows: usize,
        blk: &BlockIdx,
        dx: &mut Readied<B>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let be = self.be;
        let f = self.m.cfg.d_ff;
        let masked = self.masked(&dx.0, s_.ym.as_ref())?;
        let dy = residual_grad::<B>(&masked, dx);
        let mut dh = be.output(rows * f)?;
        let mut dn = be.output(rows * self.m.cfg.d_model)?;
        let (FfIdx::Relu { wo, .. } | FfIdx::Gated { wo, .. }) = blk.ff;
        let h = op::<B>(&s_.h, &s_.h_r);
        self.dense_grad(h, dy, rows, (wo, 1), &mut dh, false, grads)?;
        let n = op::<B>(&s_.n, &s_.n_r);
        // the pre-activations' gradient, made ready by the activation's
        // backward
        match (blk.ff, &s_.pre) {
            (FfIdx::Relu { wi, .. }, _) => {
                let mut r = be.ready_output(rows * f, Readers::Products)?;
                be.relu_grad((&mut dh, r.as_mut()), &s_.h, s_.hm.as_ref())?;
                let dh = op::<B>(&dh, &r);
                self.dense_grad(n, dh, rows, (wi, 1), &mut dn, false, grads)?;
            }
            (FfIdx::Gated { wi0, .. }, Some(ab)) => {
                let mut r = be.ready_output(2 * rows * f, Readers::Products)?;
                let mut dab = be.output_for(2 * rows * f, r.as_ref())?;
                be.gated_grad(&dh, ab, f, s_.hm.as_ref(), (&mut dab, r.as_mut()))?;
                let dab = op::<B>(&dab, &r);
                self.dense_grad(n, dab, rows, (wi0, 2), &mut dn, false, grads)?;
            }
            (FfIdx::Gated { .. }, None) => unreachable!("a gated layer keeps its pre-activations"),
        }
        self.norm_grad(&s_.x_in, &dn, &s_.inv, rows, blk.ff_ln, dx, grads)
    }

    /// A stack's forward: its embedded tokens (`inputs`) through its blocks
    /// and the final norm; the decoder attends to `enc`.
    fn stack(
        &mut self,
        stack: &StackIdx,
        (b, t): (usize, usize),
        masks: (&B::Buf, Option<&B::Buf>),
        enc: Option<(Op<'_, B>, usize)>,
        inputs: StackInputs<B>,
    ) -> Result<(B::Buf, Stack<B>)> {
        let be = self.be;
        let (d, heads) = (self.m.cfg.d_model, self.m.cfg.num_heads);
        let rows = b * t;
        let StackInputs {
            ids,
            index,
            buckets,
        } = inputs;
        let mut x = be.output(rows * d)?;
        be.embed((self.params, self.m.off(self.m.shared)), &ids, &mut x, d)?;
        let emb_mask = self.mask(rows * d)?;
        if let Some(m) = &emb_mask {
            x = be.masked_copy(&x, Some(m))?;
        }
        let mut pos = be.output(heads * t * t)?;
        be.position_bias(
            (self.params, self.m.off(stack.rel_bias)),
            &buckets,
            &mut pos,
            heads,
            t,
            t,
        )?;
        let self_sh = AttnShape { b, heads, t, s: t };
        let mut blocks = Vec::with_capacity(stack.blocks.len());
        for blk in &stack.blocks {
            let sa = self.attention(
                &mut x,
                (blk.self_ln, blk.self_attn),
                None,
                Some(&pos),
                masks.0,
                self_sh,
            )?;
            let ca = match (blk.cross, enc, masks.1) {
                (Some(cross), Some((e, s)), Some(cm)) => {
                    let sh = AttnShape { b, heads, t, s };
                    Some(self.attention(&mut x, cross, Some(e), None, cm, sh)?)
                }
                _ => None,
            };
            let ff = self.feed_forward(&mut x, rows, blk)?;
            blocks.push((sa, ca, ff));
        }
        // (made ready by the caller, after the mask and any scaling)
        let (mut out, _, final_inv) = self.norm(&x, rows, stack.final_ln, false)?;
        let final_mask = self.mask(rows * d)?;
        if let Some(m) = &final_mask {
            out = be.masked_copy(&out, Some(m))?;
        }
        Ok((
            out,
            Stack {
                tokens: index,
                emb_mask,
                buckets,
                blocks,
                final_in: x,
                final_inv,
                final_mask,
            },
        ))
    }

    /// A stack's backward from the gradient `g` of its output; the decoder
    /// adds the encoder output's gradient to `denc`.
    fn stack_grad(
        &self,
        stack: &StackIdx,
        s_: &Stack<B>,
        g: &B::Buf,
        (b, t): (usize, usize),
        mut enc: Option<(Op<'_, B>, &mut B::Buf)>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let be = self.be;
        let (d, heads) = (self.m.cfg.d_model, self.m.cfg.num_heads);
        let rows = b * t;
        let masked = self.masked(g, s_.final_mask.as_ref())?;
        let g = masked.as_ref().unwrap_or(g);
        // the residual stream's gradient, made ready by each norm's backward
        let mut dx = (
            be.zeros(rows * d)?,
            be.ready_output(rows * d, Readers::Any)?,
        );
        self.norm_grad(
            &s_.final_in,
            g,
            &s_.final_inv,
            rows,
            stack.final_ln,
            &mut dx,
            grads,
        )?;
        let mut dpos = be.zeros(heads * t * t)?;
        for (blk, (sa, ca, ff)) in stack.blocks.iter().zip(&s_.blocks).rev() {
            self.feed_forward_grad(ff, rows, blk, &mut dx, grads)?;
            if let (Some(cross), Some(ca), Some((e, de))) = (blk.cross, ca, enc.as_mut()) {
                self.attention_grad(ca, cross, Some((*e, de)), None, &mut dx, grads)?;
            }
            self.attention_grad(
                sa,
                (blk.self_ln, blk.self_attn),
                None,
                Some(&mut dpos),
                &mut dx,
                grads,
            )?;
        }
        let nb = self.m.cfg.relative_attention_num_buckets;
        be.bucket_grad(
            &dpos,
            &s_.buckets,
            (grads, self.m.off(stack.rel_bias)),
            (heads, t, t),
            nb,
        )?;
        let masked = self.masked(&dx.0, s_.emb_mask.as_ref())?;
        let demb = masked.as_ref().unwrap_or(&dx.0);
        be.embed_grad(demb, &s_.tokens, (grads, self.m.off(self.m.shared)), d)
    }

    fn new(m: &'a FlatModel, be: &'a B, params: &'a B::Buf, drop: &'a mut Dropout) -> Self {
        Step {
            m,
            be,
            params,
            drop,
        }
    }

    /// The loss of `batch` (its `inputs` on the backend) and, with
    /// `grads`, its gradient added there; queued, the loss read later.
    fn run(
        &mut self,
        batch: &Batch,
        inputs: Inputs<B>,
        grads: Option<&mut B::Buf>,
        cfg: &LossConfig,
        scale: f32,
    ) -> Result<PendingLoss<B>> {
        let be = self.be;
        let m = self.m;
        let (b, s, t) = (batch.batch, batch.enc_len, batch.dec_len);
        let (d, v) = (m.cfg.d_model, m.cfg.vocab_size);
        if inputs.shape != (b, s, t) {
            return Err(crate::TrainError::Config(format!(
                "inputs of a {:?} batch for a {:?} one",
                inputs.shape,
                (b, s, t)
            )));
        }
        let Inputs {
            masks: [enc_mask, self_mask, cross_mask],
            enc: enc_in,
            dec: dec_in,
            targets,
            weights,
            ..
        } = inputs;
        be.begin_pass(self.params)?;
        // forward, drawing dropout masks in the dfdx model's order
        let (enc, enc_s) = self.stack(&m.encoder, (b, s), (&enc_mask, None), None, enc_in)?;
        // (every cross-attention reads the encoder's output)
        let enc_r = be.ready(&enc)?;
        let (mut h, dec_s) = self.stack(
            &m.decoder,
            (b, t),
            (&self_mask, Some(&cross_mask)),
            Some((op::<B>(&enc, &enc_r), s)),
            dec_in,
        )?;
        let out_scale = m.cfg.scales_decoder_output().then(|| (d as f32).powf(-0.5));
        if let Some(sc) = out_scale {
            be.scale(&mut h, sc)?;
        }
        let h_r = be.ready(&h)?;
        let n = b * t;
        let w = m.lm_head.unwrap_or(m.shared);
        let mut logits = self.dense(op::<B>(&h, &h_r), n, w)?;
        let settings = LossSettings {
            z: cfg.z_loss,
            smoothing: cfg.label_smoothing,
        };
        let mut rows = be.zeros(4 * n)?;
        be.loss(&logits, (n, v), &targets, &weights, settings, &mut rows)?;
        let norm = loss_norm(batch, cfg, scale);
        let pending = PendingLoss {
            rows,
            norm,
            tokens: batch.target_tokens(),
        };
        let Some(grads) = grads else {
            return Ok(pending);
        };
        // backward
        let g_out = be.upload(&vec![norm; n])?;
        // the logits become their gradient (no logits-sized buffer of its
        // own), made ready as they do
        let mut dlogits_r = be.ready_output(n * v, Readers::Products)?;
        be.loss_grad(
            (&mut logits, dlogits_r.as_mut()),
            (n, v),
            &targets,
            &weights,
            (&g_out, &pending.rows),
            settings,
        )?;
        let mut dh = be.output(n * d)?;
        let dlogits = op::<B>(&logits, &dlogits_r);
        self.dense_grad(op::<B>(&h, &h_r), dlogits, n, (w, 1), &mut dh, false, grads)?;
        drop((logits, dlogits_r));
        if let Some(sc) = out_scale {
            be.scale(&mut dh, sc)?;
        }
        let mut denc = be.zeros(b * s * d)?;
        self.stack_grad(
            &m.decoder,
            &dec_s,
            &dh,
            (b, t),
            Some((op::<B>(&enc, &enc_r), &mut denc)),
            grads,
        )?;
        self.stack_grad(&m.encoder, &enc_s, &denc, (b, s), None, grads)?;
        Ok(pending)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::device::backend::CpuBackend;

    /// A small config: gated GELU or ReLU, tied embeddings or not.
    pub(crate) fn tiny(gated: bool, tied: bool) -> T5Config {
        let mut c = T5Config::named("micro").expect("a named config");
        (c.vocab_size, c.d_model, c.d_kv, c.d_ff, c.num_heads) = (96, 24, 6, 40, 4);
        (
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance,
        ) = (8, 20);
        c.feed_forward_proj = if gated { "gated-gelu" } else { "relu" }.into();
        c.tie_word_embeddings = tied;
        c
    }

    /// `b` rows (2 or more) of 7/5 tokens: padding in the first, two
    /// examples packed in the second when `packed`.
    pub(crate) fn batch(packed: bool, b: usize) -> Batch {
        let (s, t) = (7, 5);
        let enc_tokens: Vec<usize> = (0..b * s).map(|i| (i * 37 + 5) % 90 + 1).collect();
        let targets: Vec<usize> = (0..b * t).map(|i| (i * 53 + 11) % 90 + 1).collect();
        let mut dec_inputs = vec![0; b * t];
        for r in 0..b {
            for i in 1..t {
                dec_inputs[r * t + i] = targets[r * t + i - 1];
            }
        }
        let mut enc_segments = vec![1u32; b * s];
        enc_segments[s - 1] = 0; // padding
        let mut weights = vec![1f32; b * t];
        weights[t - 1] = 0.0;
        let dec_segments = packed.then(|| {
            let mut d = vec![1u32; b * t];
            for i in 3..t {
                d[t + i] = 2;
            }
            for i in 4..s {
                enc_segments[s + i] = 2;
            }
            d
        });
        Batch {
            batch: b,
            enc_len: s,
            dec_len: t,
            enc_tokens,
            dec_inputs,
            targets,
            weights,
            enc_segments,
            dec_segments,
        }
    }

    /// The flat step on the CPU gives the dfdx model's loss and gradients
    /// (to float rounding: the products sum in another order), with and
    /// without dropout (the same masks), gated and ReLU, tied and untied
    /// embeddings, packed rows, label smoothing and z-loss.
    #[test]
    fn the_flat_step_is_the_models_loss_and_gradient() {
        for (gated, tied, packed, rate, rows) in [
            (true, false, false, 0.0, 2),
            (true, false, true, 0.1, 6),
            (false, true, false, 0.1, 5),
            (false, true, true, 0.0, 3),
        ] {
            let case =
                format!("gated {gated} tied {tied} packed {packed} dropout {rate} rows {rows}");
            let cfg = tiny(gated, tied);
            let model = T5::new(cfg.clone(), &Cpu::default(), Some(3));
            let batch = batch(packed, rows);
            let loss_cfg = LossConfig {
                z_loss: 1e-4,
                label_smoothing: 0.1,
                normalization: LossNormalization::NumRealTargetTokens,
            };
            // the dfdx model
            let mut drop = Dropout::new(rate, 7, 2, 0);
            let (loss, parts) =
                model.forward_loss(&batch, &mut drop, model.new_tape(), &loss_cfg, 0.5);
            let want_loss = loss.array();
            let want = model.param_grads(loss.backward());
            // the flat step, the same dropout stream
            let flat = model.flat_model();
            let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
            let params = flat.layout.flatten(&host);
            let mut grads = vec![0f32; flat.layout.len];
            let mut drop = Dropout::new(rate, 7, 2, 0);
            let got = flat
                .loss_and_grads(
                    &CpuBackend,
                    &params,
                    &mut grads,
                    &batch,
                    &mut drop,
                    &loss_cfg,
                    0.5,
                )
                .unwrap();
            assert!(
                (got.loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
                "{case}: loss {} vs {want_loss}",
                got.loss
            );
            assert_eq!(got.parts.tokens, parts.tokens, "{case}");
            assert!(
                (got.parts.cross_entropy - parts.cross_entropy).abs()
                    <= 1e-5 * parts.cross_entropy.abs(),
                "{case}"
            );
            for ((info, w), &(at, (r, c))) in model
                .param_info()
                .iter()
                .zip(&want)
                .zip(&flat.layout.params)
            {
                let g = &grads[at..at + r * c];
                let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                let worst = crate::max_abs_diff(g, w);
                assert!(
                    worst <= 2e-4 * scale,
                    "{case}: {}: worst {worst} of {scale}",
                    info.name
                );
                assert!(
                    w.iter().any(|&x| x != 0.0),
                    "{case}: {} has a gradient",
                    info.name
                );
            }
        }
    }
}
