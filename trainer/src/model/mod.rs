//! The T5 encoder-decoder in dfdx, as HF transformers / t5x define it.
//!
//! Parameters live in one list, in HF's names and layouts (`[out, in]` for
//! dense layers, norms as `[1, d]`), so that loading, saving and the
//! optimizers treat them uniformly. Every forward function is generic over
//! the tape: `OwnedTape` for training, `NoneTape` for inference.
//!
//! Gradient bookkeeping: dfdx records a tensor's backward operations on the
//! tape that travels with it. A tensor used more than once (the normed input
//! of q/k/v, the position bias in every layer, the encoder output in every
//! cross-attention, the shared embedding) is `fork`ed: the first use keeps
//! its tape, the others get fresh tapes that merge back when the branches
//! meet. Parameters always enter through `retaped`, so their own view
//! operations are recorded. The test `every_parameter_gets_a_gradient` and
//! the numerical gradient check guard this.

use dfdx::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::config::{FeedForward, T5Config};

/// A 2-D parameter tensor.
pub type P2<D> = Tensor<(usize, usize), f32, D>;
type T1<D, T> = Tensor<(usize,), f32, D, T>;
type T2<D, T> = Tensor<(usize, usize), f32, D, T>;
type T3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;
type T4<D, T> = Tensor<(usize, usize, usize, usize), f32, D, T>;

/// The masking value added to disallowed attention scores.
pub(crate) const MASKED: f32 = -1e9;

/// Indices of one attention's projections in the parameter list.
#[derive(Debug, Clone, Copy)]
struct AttnIdx {
    q: usize,
    k: usize,
    v: usize,
    o: usize,
}

#[derive(Debug, Clone, Copy)]
enum FfIdx {
    Relu { wi: usize, wo: usize },
    Gated { wi0: usize, wi1: usize, wo: usize },
}

#[derive(Debug, Clone, Copy)]
struct BlockIdx {
    self_ln: usize,
    self_attn: AttnIdx,
    /// Decoder only: cross-attention norm and projections.
    cross: Option<(usize, AttnIdx)>,
    ff_ln: usize,
    ff: FfIdx,
}

#[derive(Debug, Clone)]
struct StackIdx {
    rel_bias: usize,
    blocks: Vec<BlockIdx>,
    final_ln: usize,
}

/// One parameter's name and the shape HF stores it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// HF transformers' tensor name.
    pub name: String,
    /// The stored shape (`[d]` for norms, which the model keeps as `[1, d]`).
    pub hf_shape: Vec<usize>,
}

/// A T5 model: configuration and parameters.
pub struct T5<D: Device<f32>> {
    /// The shape.
    pub cfg: T5Config,
    /// Parameters, in [`T5::param_info`] order.
    pub params: Vec<P2<D>>,
    info: Vec<ParamInfo>,
    shared: usize,
    lm_head: Option<usize>,
    encoder: StackIdx,
    decoder: StackIdx,
    dev: D,
}

/// Box–Muller standard normals from a seeded stream.
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = ((self.rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        self.spare = Some(r * th.sin());
        r * th.cos()
    }
}

impl<D: Device<f32>> T5<D> {
    /// The parameter names and stored shapes, in order.
    pub fn param_info(&self) -> &[ParamInfo] {
        &self.info
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Number of scalar parameters.
    /// Refuses a tokenizer with more ids than the model's embedding rows.
    pub fn check_vocabulary(&self, vocab_size: usize) -> crate::Result<()> {
        if vocab_size > self.cfg.vocab_size {
            return Err(crate::TrainError::Config(format!(
                "the vocabulary has {vocab_size} ids but the model only {} embedding rows",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.shape().num_elements()).sum()
    }

    /// A model with zero parameters (to be loaded) or, with `seed`, t5x's
    /// initialisation (embedding N(0,1), dense layers variance-scaled by
    /// fan-in with the 1/√d_kv query scaling folded in, norms 1).
    pub fn new(cfg: T5Config, dev: &D, seed: Option<u64>) -> Self {
        let mut info: Vec<ParamInfo> = Vec::new();
        let mut std: Vec<f32> = Vec::new();
        let d = cfg.d_model;
        let inner = cfg.inner_dim();
        let mut add = |name: String, shape: Vec<usize>, s: f32| -> usize {
            info.push(ParamInfo {
                name,
                hf_shape: shape,
            });
            std.push(s);
            info.len() - 1
        };
        let shared = add("shared.weight".into(), vec![cfg.vocab_size, d], 1.0);
        let stack = |add: &mut dyn FnMut(String, Vec<usize>, f32) -> usize,
                     prefix: &str,
                     layers: usize,
                     decoder: bool| {
            let mut blocks = Vec::new();
            let mut rel_bias = 0;
            for i in 0..layers {
                let p = format!("{prefix}.block.{i}");
                let attn =
                    |add: &mut dyn FnMut(String, Vec<usize>, f32) -> usize, a: &str| AttnIdx {
                        q: add(
                            format!("{a}.q.weight"),
                            vec![inner, d],
                            ((d * cfg.d_kv) as f32).powf(-0.5),
                        ),
                        k: add(
                            format!("{a}.k.weight"),
                            vec![inner, d],
                            (d as f32).powf(-0.5),
                        ),
                        v: add(
                            format!("{a}.v.weight"),
                            vec![inner, d],
                            (d as f32).powf(-0.5),
                        ),
                        o: add(
                            format!("{a}.o.weight"),
                            vec![d, inner],
                            (inner as f32).powf(-0.5),
                        ),
                    };
                let self_attn = attn(add, &format!("{p}.layer.0.SelfAttention"));
                if i == 0 {
                    rel_bias = add(
                        format!("{p}.layer.0.SelfAttention.relative_attention_bias.weight"),
                        vec![cfg.relative_attention_num_buckets, cfg.num_heads],
                        (d as f32).powf(-0.5),
                    );
                }
                let self_ln = add(format!("{p}.layer.0.layer_norm.weight"), vec![d], 0.0);
                let cross = if decoder {
                    let a = attn(add, &format!("{p}.layer.1.EncDecAttention"));
                    let ln = add(format!("{p}.layer.1.layer_norm.weight"), vec![d], 0.0);
                    Some((ln, a))
                } else {
                    None
                };
                let fl = if decoder { 2 } else { 1 };
                let f = format!("{p}.layer.{fl}.DenseReluDense");
                let ff = match cfg.feed_forward() {
                    FeedForward::Relu => FfIdx::Relu {
                        wi: add(
                            format!("{f}.wi.weight"),
                            vec![cfg.d_ff, d],
                            (d as f32).powf(-0.5),
                        ),
                        wo: add(
                            format!("{f}.wo.weight"),
                            vec![d, cfg.d_ff],
                            (cfg.d_ff as f32).powf(-0.5),
                        ),
                    },
                    FeedForward::GatedGelu => FfIdx::Gated {
                        wi0: add(
                            format!("{f}.wi_0.weight"),
                            vec![cfg.d_ff, d],
                            (d as f32).powf(-0.5),
                        ),
                        wi1: add(
                            format!("{f}.wi_1.weight"),
                            vec![cfg.d_ff, d],
                            (d as f32).powf(-0.5),
                        ),
                        wo: add(
                            format!("{f}.wo.weight"),
                            vec![d, cfg.d_ff],
                            (cfg.d_ff as f32).powf(-0.5),
                        ),
                    },
                };
                let ff_ln = add(format!("{p}.layer.{fl}.layer_norm.weight"), vec![d], 0.0);
                blocks.push(BlockIdx {
                    self_ln,
                    self_attn,
                    cross,
                    ff_ln,
                    ff,
                });
            }
            let final_ln = add(format!("{prefix}.final_layer_norm.weight"), vec![d], 0.0);
            StackIdx {
                rel_bias,
                blocks,
                final_ln,
            }
        };
        let encoder = stack(&mut add, "encoder", cfg.num_layers, false);
        let decoder = stack(&mut add, "decoder", cfg.num_decoder_layers, true);
        let lm_head = (!cfg.tie_word_embeddings).then(|| {
            add(
                "lm_head.weight".into(),
                vec![cfg.vocab_size, d],
                (d as f32).powf(-0.5),
            )
        });
        let mut normal = Normal {
            rng: ChaCha8Rng::seed_from_u64(seed.unwrap_or(0)),
            spare: None,
        };
        let params = info
            .iter()
            .zip(&std)
            .map(|(pi, &s)| {
                let shape = shape2(&pi.hf_shape);
                let n = shape.0 * shape.1;
                let data: Vec<f32> = match seed {
                    None => vec![0.0; n],
                    Some(_) if s == 0.0 => vec![1.0; n],
                    Some(_) => (0..n)
                        .map(|_| (normal.sample() * s as f64) as f32)
                        .collect(),
                };
                dev.tensor_from_vec(data, shape)
            })
            .collect();
        T5 {
            cfg,
            params,
            info,
            shared,
            lm_head,
            encoder,
            decoder,
            dev: dev.clone(),
        }
    }

    fn p<T: Tape<f32, D> + 'static>(&self, i: usize) -> T2<D, T> {
        self.params[i].retaped::<T>()
    }

    /// `x @ Wᵀ` for a dense weight stored `[out, in]`, as one 2-D product
    /// over all `b × s` rows: dfdx multiplies a 3-D tensor by a matrix one
    /// batch row at a time, and sums the weight gradient over `b` products
    /// with an inner size of only `s` (`--bench train_step -- matmul`: 123
    /// vs 143 GFLOP/s forward on the tiny shapes).
    fn dense<T: Tape<f32, D> + 'static>(&self, x: T3<D, T>, w: usize) -> T3<D, T> {
        let (b, s, i) = *x.shape();
        let (x, w) = (x.reshape_like(&(b * s, i)), self.p::<T>(w));
        let y = crate::kernels::matmul_nt(x, w);
        let o = y.shape().1;
        y.reshape_like(&(b, s, o))
    }

    fn rms_norm<T: Tape<f32, D> + 'static>(&self, x: T3<D, T>, w: usize) -> T3<D, T> {
        let eps = self.cfg.layer_norm_epsilon;
        let (x, w) = match crate::kernels::rms_norm_cpu(x, self.p::<T>(w), eps) {
            Ok(y) => return y,
            Err(inputs) => inputs,
        };
        let shape = *x.shape();
        let mut xs = fork(x, 2);
        let x2 = xs.pop().unwrap();
        let x1 = xs.pop().unwrap();
        let ms = x1.square().mean::<(usize, usize), Axis<2>>();
        let inv = (ms + self.cfg.layer_norm_epsilon).sqrt().recip();
        let y = inv.broadcast_like::<_, Axis<2>>(&shape) * x2;
        let w = w
            .reshape_like(&(shape.2,))
            .broadcast_like::<_, Axes2<0, 1>>(&shape);
        y * w
    }

    fn split_heads<T: Tape<f32, D> + 'static>(&self, x: T3<D, T>) -> T4<D, T> {
        let (b, t, _) = *x.shape();
        x.reshape_like(&(b, t, self.cfg.num_heads, self.cfg.d_kv))
            .permute::<_, Axes4<0, 2, 1, 3>>()
    }

    /// Attention of `q_in` over `kv_in` (self-attention when they are forks
    /// of the same tensor); `bias` is added to the scores: position bias
    /// and/or mask, `[b, h, tq, tk]`; `dropout`, a mask on the probabilities.
    fn attention<T: Tape<f32, D> + 'static>(
        &self,
        q: T4<D, T>,
        k: T4<D, T>,
        v: T4<D, T>,
        bias: T4<D, T>,
        a: AttnIdx,
        dropout: Option<Vec<f32>>,
    ) -> T3<D, T> {
        let (b, _, tq, _) = *q.shape();
        let kt = k.permute::<_, Axes4<0, 1, 3, 2>>();
        let scores = q.matmul(kt) + bias;
        let mut probs = scores.softmax::<Axis<3>>();
        if let Some(m) = dropout {
            probs = crate::kernels::mul_mask(probs, m);
        }
        let ctx = probs.matmul(v); // [b, h, tq, dk]
        let ctx =
            ctx.permute::<_, Axes4<0, 2, 1, 3>>()
                .reshape_like(&(b, tq, self.cfg.inner_dim()));
        self.dense(ctx, a.o)
    }

    /// Attention from un-split projections `[b, t, inner]` with a position
    /// bias `[h, tq, tk]` (self-attention), a mask and dropout on the
    /// probabilities: the fused CPU kernel, else dfdx primitives over the
    /// bias and mask broadcast to `[b, h, tq, tk]`.
    #[allow(clippy::too_many_arguments)]
    fn attention3<T: Tape<f32, D> + 'static>(
        &self,
        q: T3<D, T>,
        k: T3<D, T>,
        v: T3<D, T>,
        pos: Option<T3<D, T>>,
        mask: &Mask<D>,
        a: AttnIdx,
        drop: &mut Dropout,
    ) -> T3<D, T> {
        let heads = self.cfg.num_heads;
        let (b, tq, tk) = *mask.dev.shape();
        // drawn here for both paths: the same masks either way
        let dropout = (drop.rate > 0.0).then(|| drop.mask(b * heads * tq * tk));
        let (q, k, v, pos, dropout) =
            match crate::kernels::attention_cpu(q, k, v, pos, &mask.host, dropout, heads) {
                Ok(ctx) => return self.dense(ctx, a.o),
                Err(back) => *back,
            };
        let shape = (b, heads, tq, tk);
        let mask = mask.dev.clone().broadcast_like::<_, Axis<1>>(&shape);
        let bias = match pos {
            Some(p) => p.broadcast_like::<_, Axis<0>>(&shape) + mask,
            None => mask.retaped::<T>(),
        };
        let (q, k, v) = (
            self.split_heads(q),
            self.split_heads(k),
            self.split_heads(v),
        );
        self.attention(q, k, v, bias, a, dropout)
    }

    /// The feed-forward: the fused CPU kernel, else dfdx primitives.
    fn feed_forward<T: Tape<f32, D> + 'static>(
        &self,
        x: T3<D, T>,
        f: FfIdx,
        drop: &mut Dropout,
    ) -> T3<D, T> {
        let (b, s, d) = *x.shape();
        let (wi, wo) = match f {
            FfIdx::Relu { wi, wo } => (vec![self.p::<T>(wi)], wo),
            FfIdx::Gated { wi0, wi1, wo } => (vec![self.p::<T>(wi0), self.p::<T>(wi1)], wo),
        };
        // drawn here for both paths: the same mask either way
        let dropout = (drop.rate > 0.0).then(|| drop.mask(b * s * self.cfg.d_ff));
        let x = x.reshape_like(&(b * s, d));
        let (x, mut wi, wo, dropout) =
            match crate::kernels::feed_forward_cpu(x, wi, self.p::<T>(wo), dropout) {
                Ok(y) => return y.reshape_like(&(b, s, d)),
                Err(back) => *back,
            };
        use crate::kernels::matmul_nt as dense;
        let h = if wi.len() == 1 {
            dense(x, wi.remove(0)).relu()
        } else {
            let (wi0, wi1) = (wi.remove(0), wi.remove(0));
            let mut xs = fork(x, 2);
            let x1 = xs.pop().unwrap();
            let x0 = xs.pop().unwrap();
            let shape = (b, s, self.cfg.d_ff);
            let g = dense(x0, wi0).reshape_like(&shape);
            let l = dense(x1, wi1).reshape_like(&shape);
            crate::kernels::gated_gelu(g, l).reshape_like(&(b * s, self.cfg.d_ff))
        };
        let h = match dropout {
            Some(m) => crate::kernels::mul_mask(h, m),
            None => h,
        };
        dense(h, wo).reshape_like(&(b, s, d))
    }

    /// Pre-norm self-attention with its residual connection.
    fn self_attention_sublayer<T: Tape<f32, D> + 'static>(
        &self,
        x: T3<D, T>,
        blk: &BlockIdx,
        pos: T3<D, T>,
        mask: &Mask<D>,
        drop: &mut Dropout,
    ) -> T3<D, T> {
        let mut xs = fork(x, 2);
        let res = xs.pop().unwrap();
        let h = self.rms_norm(xs.pop().unwrap(), blk.self_ln);
        let mut hs = fork(h, 3);
        let hv = hs.pop().unwrap();
        let hk = hs.pop().unwrap();
        let hq = hs.pop().unwrap();
        let q = self.dense(hq, blk.self_attn.q);
        let k = self.dense(hk, blk.self_attn.k);
        let v = self.dense(hv, blk.self_attn.v);
        let a = self.attention3(q, k, v, Some(pos), mask, blk.self_attn, drop);
        crate::kernels::add(drop.apply(a), res)
    }

    /// Pre-norm feed-forward with its residual connection.
    fn ff_sublayer<T: Tape<f32, D> + 'static>(
        &self,
        x: T3<D, T>,
        blk: &BlockIdx,
        drop: &mut Dropout,
    ) -> T3<D, T> {
        let mut xs = fork(x, 2);
        let res = xs.pop().unwrap();
        let h = self.rms_norm(xs.pop().unwrap(), blk.ff_ln);
        let f = self.feed_forward(h, blk.ff, drop);
        crate::kernels::add(drop.apply(f), res)
    }

    /// Position bias `[h, tq, tk]` of a stack from its table (contiguous).
    fn position_table<T: Tape<f32, D> + 'static>(
        &self,
        stack: &StackIdx,
        buckets: Vec<usize>,
        tq: usize,
        tk: usize,
    ) -> T3<D, T> {
        let idx = self.dev.tensor_from_vec(buckets, (tq, tk));
        let table = self.p::<T>(stack.rel_bias); // [buckets, heads]
        let g: T3<D, T> = table.gather(idx); // [tq, tk, h]
        g.permute::<_, Axes3<2, 0, 1>>().contiguous()
    }

    /// Position bias `[b, h, tq, tk]` of a stack from its table.
    fn position_bias<T: Tape<f32, D> + 'static>(
        &self,
        stack: &StackIdx,
        b: usize,
        buckets: Vec<usize>,
        tq: usize,
        tk: usize,
    ) -> T4<D, T> {
        self.position_table(stack, buckets, tq, tk)
            .broadcast_like::<_, Axis<0>>(&(b, self.cfg.num_heads, tq, tk))
    }

    /// An attention mask `[b, tq, tk]` on the host and the device.
    fn mask(&self, m: Vec<f32>, b: usize, tq: usize, tk: usize) -> Mask<D> {
        Mask {
            dev: self.dev.tensor_from_vec(m.clone(), (b, tq, tk)),
            host: m,
        }
    }

    fn mask4(&self, m: Vec<f32>, b: usize, tq: usize, tk: usize) -> T4<D, NoneTape> {
        self.dev
            .tensor_from_vec(m, (b, tq, tk))
            .broadcast_like::<_, Axis<1>>(&(b, self.cfg.num_heads, tq, tk))
    }

    fn embed<T: Tape<f32, D> + 'static>(
        &self,
        tokens: &[usize],
        b: usize,
        t: usize,
        tape: T,
    ) -> T3<D, T> {
        let idx = self.dev.tensor_from_vec(tokens.to_vec(), (b, t));
        self.params[self.shared].clone().put_tape(tape).gather(idx)
    }

    /// Gradients with a zeroed buffer for every parameter (to trace a
    /// training forward with: a parameter the loss does not reach then
    /// shows as zeros instead of a missing entry).
    pub fn alloc_grads(&self) -> Gradients<f32, D> {
        let mut g = Gradients::leaky();
        for p in &self.params {
            g.try_alloc_for(p).expect("allocating gradients");
        }
        g
    }

    /// A recording tape over [`T5::alloc_grads`], to start a training forward.
    pub fn new_tape(&self) -> OwnedTape<f32, D> {
        let (_, tape) = self.params[0]
            .clone()
            .traced(self.alloc_grads())
            .split_tape();
        tape
    }

    /// Sets every parameter from host values (in parameter order), the CPU
    /// tensors in parallel (dfdx's `copy_from` is one `memcpy` per tensor on
    /// the calling thread: 240 MB per step for t5-v1_0-small).
    pub fn set_params(&mut self, host: &[Vec<f32>]) {
        assert_eq!(host.len(), self.params.len(), "parameter count");
        self.params
            .iter_mut()
            .zip(host)
            .for_each(|(p, h)| crate::kernels::copy_from(p, h));
    }

    /// Every parameter's gradient, in parameter order.
    pub fn param_grads(&self, mut g: Gradients<f32, D>) -> Vec<Vec<f32>> {
        // On the CPU each gradient buffer is moved out of `g` (`get` clones a
        // tensor and `as_vec` copies it again; `g` is dropped here anyway).
        let any: &mut dyn std::any::Any = &mut g;
        if let Some(gc) = any.downcast_mut::<Gradients<f32, Cpu>>() {
            return self
                .params
                .iter()
                .map(|p| {
                    let p: &dyn std::any::Any = p;
                    let p = p.downcast_ref::<P2<Cpu>>().expect("CPU parameters");
                    std::mem::take(&mut **gc.get_or_alloc_mut(p).expect("CPU gradient buffer"))
                })
                .collect();
        }
        self.params.iter().map(|p| g.get(p).as_vec()).collect()
    }

    /// The encoder: `[b, s, d]` after the final norm. The tape starts with
    /// `tape` (e.g. `OwnedTape` over [`T5::alloc_grads`]).
    pub fn encode<T: Tape<f32, D> + 'static>(
        &self,
        batch: &Batch,
        drop: &mut Dropout,
        tape: T,
    ) -> T3<D, T> {
        let (b, s) = (batch.batch, batch.enc_len);
        let mut x = drop.apply(self.embed::<T>(&batch.enc_tokens, b, s, tape));
        let m = attention_mask(batch, MaskKind::Encoder);
        let layers = self.encoder.blocks.len();
        let mask = self.mask(m, b, s, s);
        let pos =
            self.position_table::<T>(&self.encoder, bucket_matrix(&self.cfg, 0, s, s, true), s, s);
        let mut biases = fork(pos, layers.max(1));
        for blk in &self.encoder.blocks {
            x = self.self_attention_sublayer(x, blk, biases.remove(0), &mask, drop);
            x = self.ff_sublayer(x, blk, drop);
        }
        drop.apply(self.rms_norm(x, self.encoder.final_ln))
    }

    /// The decoder over full target rows: `[b, t, d]` after the final norm
    /// (before any output scaling).
    pub fn decode<T: Tape<f32, D> + 'static>(
        &self,
        batch: &Batch,
        enc: T3<D, T>,
        drop: &mut Dropout,
    ) -> T3<D, T> {
        let (b, s, t) = (batch.batch, batch.enc_len, batch.dec_len);
        let layers = self.decoder.blocks.len();
        let (selfm, crossm) = (
            attention_mask(batch, MaskKind::DecoderSelf),
            attention_mask(batch, MaskKind::Cross),
        );
        let mut x = drop.apply(self.embed::<T>(&batch.dec_inputs, b, t, T::default()));
        let self_mask = self.mask(selfm, b, t, t);
        let pos = self.position_table::<T>(
            &self.decoder,
            bucket_matrix(&self.cfg, 0, t, t, false),
            t,
            t,
        );
        let mut biases = fork(pos, layers.max(1));
        let cross_mask = self.mask(crossm, b, t, s);
        let mut encs = fork(enc, 2 * layers);
        for blk in &self.decoder.blocks {
            x = self.self_attention_sublayer(x, blk, biases.remove(0), &self_mask, drop);
            // cross-attention
            let (ln, ca) = blk.cross.expect("decoder block has cross-attention");
            let mut xs = fork(x, 2);
            let res = xs.pop().unwrap();
            let h = self.rms_norm(xs.pop().unwrap(), ln);
            let q = self.dense(h, ca.q);
            let ek = encs.remove(0);
            let ev = encs.remove(0);
            let k = self.dense(ek, ca.k);
            let v = self.dense(ev, ca.v);
            let a = self.attention3(q, k, v, None, &cross_mask, ca, drop);
            x = crate::kernels::add(drop.apply(a), res);
            x = self.ff_sublayer(x, blk, drop);
        }
        debug_assert!(encs.is_empty());
        drop.apply(self.rms_norm(x, self.decoder.final_ln))
    }

    /// The output layer's inputs: decoder states `[b, t, d]` as rows `[n, d]`
    /// (scaled for tied embeddings) and the weight `[vocab, d]`.
    fn output_layer<T: Tape<f32, D> + 'static>(&self, dec: T3<D, T>) -> (T2<D, T>, T2<D, T>) {
        let (b, t, d) = *dec.shape();
        let mut h = dec.reshape_like(&(b * t, d));
        if self.cfg.scales_decoder_output() {
            h = h * (d as f32).powf(-0.5);
        }
        (h, self.p::<T>(self.lm_head.unwrap_or(self.shared)))
    }

    /// Logits `[n, vocab]` of decoder states `[b, t, d]` (flattened rows).
    pub fn logits<T: Tape<f32, D> + 'static>(&self, dec: T3<D, T>) -> T2<D, T> {
        let (h, w) = self.output_layer(dec);
        crate::kernels::matmul_nt(h, w)
    }

    /// The training loss of a batch: [`loss`] of [`T5::forward`]'s logits,
    /// which on the CPU never materialise as a tensor (the output layer and
    /// the loss are one kernel there).
    pub fn forward_loss<T: Tape<f32, D> + 'static>(
        &self,
        batch: &Batch,
        drop: &mut Dropout,
        tape: T,
        cfg: &LossConfig,
        scale: f32,
    ) -> (Tensor<(), f32, D, T>, LossParts) {
        let enc = self.encode::<T>(batch, drop, tape);
        let dec = self.decode(batch, enc, drop);
        let (h, w) = self.output_layer(dec);
        match crate::kernels::logits_loss_cpu(
            h,
            w,
            &batch.targets,
            &batch.weights,
            cfg.z_loss,
            cfg.label_smoothing,
        ) {
            Ok(r) => loss_total(r, batch, cfg, scale),
            Err((h, w)) => loss(crate::kernels::matmul_nt(h, w), batch, cfg, scale),
        }
    }

    /// Logits `[b × t, vocab]` of a whole batch.
    pub fn forward<T: Tape<f32, D> + 'static>(
        &self,
        batch: &Batch,
        drop: &mut Dropout,
        tape: T,
    ) -> T2<D, T> {
        let enc = self.encode::<T>(batch, drop, tape);
        let dec = self.decode(batch, enc, drop);
        self.logits(dec)
    }
}

/// Which attention a mask is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// The encoder's self-attention `[b, s, s]`.
    Encoder = 0,
    /// The decoder's self-attention `[b, t, t]`.
    DecoderSelf = 1,
    /// The decoder's cross-attention `[b, t, s]`.
    Cross = 2,
}

/// Whether query `i` may not see key `j` in one batch row, from its
/// encoder segments `eseg` (0: padding) and, packed, decoder segments
/// `dseg`: the encoder masks padding keys and keys of another packed
/// example; the decoder's self-attention is causal within a packed
/// example; cross-attention sees the real encoder positions of its own
/// example. (`trainer/cuda/attention.cu`'s `attn_mask` is this rule.)
pub(crate) fn is_masked(
    kind: MaskKind,
    eseg: &[u32],
    dseg: Option<&[u32]>,
    (i, j): (usize, usize),
) -> bool {
    match kind {
        MaskKind::Encoder => eseg[j] == 0 || (eseg[i] != 0 && eseg[i] != eseg[j]),
        MaskKind::DecoderSelf => j > i || dseg.is_some_and(|d| d[i] != d[j]),
        MaskKind::Cross => eseg[j] == 0 || dseg.is_some_and(|d| d[i] != 0 && d[i] != eseg[j]),
    }
}

/// The attention mask of `kind` for `batch`, 0 or [`MASKED`] per
/// (row, query, key).
pub(crate) fn attention_mask(batch: &Batch, kind: MaskKind) -> Vec<f32> {
    let (b, s, t) = (batch.batch, batch.enc_len, batch.dec_len);
    let (tq, tk) = match kind {
        MaskKind::Encoder => (s, s),
        MaskKind::DecoderSelf => (t, t),
        MaskKind::Cross => (t, s),
    };
    let mut m = vec![0f32; b * tq * tk];
    for r in 0..b {
        let eseg = &batch.enc_segments[r * s..(r + 1) * s];
        let dseg = batch.dec_segments.as_ref().map(|d| &d[r * t..(r + 1) * t]);
        for i in 0..tq {
            for j in 0..tk {
                if is_masked(kind, eseg, dseg, (i, j)) {
                    m[(r * tq + i) * tk + j] = MASKED;
                }
            }
        }
    }
    m
}

/// A stored shape as the model's 2-D shape (`[d]` → `[1, d]`).
pub fn shape2(s: &[usize]) -> (usize, usize) {
    match s {
        [d] => (1, *d),
        [a, b] => (*a, *b),
        _ => panic!("parameters are 1-D or 2-D"),
    }
}

/// Splits a tensor into `n` uses: the first carries the tape, the rest get
/// fresh tapes of the same kind (their operations merge back later).
fn fork<S: Shape, D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<S, f32, D, T>,
    n: usize,
) -> Vec<Tensor<S, f32, D, T>> {
    let (x, tape) = x.split_tape();
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        out.push(x.retaped::<T>());
    }
    out.insert(0, x.put_tape(tape));
    out
}

mod batch;
mod decoding;
mod dropout;
pub mod flat;
mod loss;
mod position;

pub use batch::Batch;
pub use decoding::DecodeCache;
use decoding::*;
pub use dropout::{Dropout, MaskDraw};
use loss::*;
pub use loss::{loss, LossConfig, LossNormalization, LossParts};
pub use position::relative_position_bucket;
use position::*;
