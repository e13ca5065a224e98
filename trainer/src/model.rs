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
//! cross-attention, the shared embedding) is [`fork`]ed: the first use keeps
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
const MASKED: f32 = -1e9;

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

/// What the model needs of one batch (rows of equal length).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows.
    pub batch: usize,
    /// Encoder length.
    pub enc_len: usize,
    /// Decoder length.
    pub dec_len: usize,
    /// `[batch × enc_len]` encoder tokens (0 = padding).
    pub enc_tokens: Vec<usize>,
    /// `[batch × dec_len]` decoder inputs (targets shifted right).
    pub dec_inputs: Vec<usize>,
    /// `[batch × dec_len]` targets.
    pub targets: Vec<usize>,
    /// `[batch × dec_len]` loss weights (1 on real targets).
    pub weights: Vec<f32>,
    /// `[batch × enc_len]` segment ids: 0 = padding, 1… = the example of a
    /// packed row (unpacked rows: 1 on every real token).
    pub enc_segments: Vec<u32>,
    /// `[batch × dec_len]` decoder segment ids for packed rows; `None`:
    /// one example per row (only causal masking in the decoder).
    pub dec_segments: Option<Vec<u32>>,
}

impl Batch {
    /// Checks that every token id is a row of an embedding of `vocab_size`
    /// (shards built with another vocabulary would index past it).
    pub fn check_ids(&self, vocab_size: usize) -> crate::Result<()> {
        let max = self
            .enc_tokens
            .iter()
            .chain(&self.dec_inputs)
            .chain(&self.targets)
            .max()
            .copied()
            .unwrap_or(0);
        if max >= vocab_size {
            return Err(crate::TrainError::Data(format!(
                "token id {max} is past the model's {vocab_size} embedding rows: the shards were \
                 built with a larger vocabulary (or more --extra-ids) than the model has"
            )));
        }
        Ok(())
    }

    /// An unpacked batch from (inputs, targets) pairs, EOS already in place;
    /// right-padded to the longest of each.
    pub fn from_pairs(pairs: &[(Vec<u32>, Vec<u32>)], start: u32) -> Batch {
        let b = pairs.len();
        let s = pairs.iter().map(|p| p.0.len()).max().unwrap_or(1).max(1);
        let t = pairs.iter().map(|p| p.1.len()).max().unwrap_or(1).max(1);
        let mut out = Batch {
            batch: b,
            enc_len: s,
            dec_len: t,
            enc_tokens: vec![0; b * s],
            dec_inputs: vec![0; b * t],
            targets: vec![0; b * t],
            weights: vec![0.0; b * t],
            enc_segments: vec![0; b * s],
            dec_segments: None,
        };
        for (r, (inp, tgt)) in pairs.iter().enumerate() {
            for (i, &x) in inp.iter().enumerate() {
                out.enc_tokens[r * s + i] = x as usize;
                out.enc_segments[r * s + i] = 1;
            }
            for (i, &y) in tgt.iter().enumerate() {
                out.targets[r * t + i] = y as usize;
                out.weights[r * t + i] = 1.0;
                out.dec_inputs[r * t + i] = if i == 0 {
                    start as usize
                } else {
                    tgt[i - 1] as usize
                };
            }
        }
        out
    }

    /// Number of real target tokens.
    pub fn target_tokens(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }
}

/// Dropout state for one forward pass: a counter-keyed stream, so a resumed
/// run draws the same masks as an uninterrupted one.
pub struct Dropout {
    pub(crate) rate: f32,
    rng: ChaCha8Rng,
}

impl Dropout {
    /// No dropout (evaluation).
    pub fn off() -> Self {
        Dropout {
            rate: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }
    /// Dropout at `rate`, seeded by (seed, step, micro-batch).
    pub fn new(rate: f32, seed: u64, step: u64, micro: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&step.to_le_bytes());
        key[16..24].copy_from_slice(&micro.to_le_bytes());
        key[24..].copy_from_slice(b"dropout!");
        Dropout {
            rate,
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    /// The next `n` mask values (0, or 1 / keep with probability keep), as
    /// drawn one `u32` at a time from the stream, generated in parallel
    /// chunks that each start at their own word of the stream.
    pub(crate) fn mask(&mut self, n: usize) -> Vec<f32> {
        use rayon::prelude::*;
        const WORDS: usize = 1 << 16;
        let keep = 1.0 - self.rate;
        let threshold = (keep as f64 * u32::MAX as f64) as u32;
        let scale = 1.0 / keep;
        let start = self.rng.get_word_pos();
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(WORDS).enumerate().for_each(|(i, c)| {
            let mut rng = self.rng.clone();
            rng.set_word_pos(start + (i * WORDS) as u128);
            for x in c {
                *x = if rng.next_u32() <= threshold {
                    scale
                } else {
                    0.0
                };
            }
        });
        self.rng.set_word_pos(start + n as u128);
        mask
    }

    fn apply<S: Shape, D: Device<f32>, T: Tape<f32, D> + 'static>(
        &mut self,
        x: Tensor<S, f32, D, T>,
    ) -> Tensor<S, f32, D, T> {
        if self.rate <= 0.0 {
            return x;
        }
        let mask = self.mask(x.shape().num_elements());
        crate::kernels::mul_mask(x, mask)
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

/// HF's `_relative_position_bucket` (t5x's `_relative_position_bucket`):
/// the bucket of `relative = key − query`.
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        num_buckets /= 2;
        if relative > 0 {
            bucket += num_buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = num_buckets / 2;
    if n < max_exact {
        return (bucket + n) as usize;
    }
    // float32 log, as the reference computes it
    let v = ((n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln()
        * (num_buckets - max_exact) as f32) as i64;
    let large = (max_exact + v).min(num_buckets - 1);
    (bucket + large) as usize
}

/// Builds the `[len_q × len_k]` bucket matrix (queries start at `q0`).
fn bucket_matrix(cfg: &T5Config, q0: usize, len_q: usize, len_k: usize, bidi: bool) -> Vec<usize> {
    let mut v = Vec::with_capacity(len_q * len_k);
    for i in 0..len_q {
        for j in 0..len_k {
            v.push(relative_position_bucket(
                j as i64 - (q0 + i) as i64,
                bidi,
                cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance,
            ));
        }
    }
    v
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

type KeyValue<D> = (T4<D, NoneTape>, T4<D, NoneTape>);

/// An attention mask `[b, tq, tk]` (0 or [`MASKED`]), shared by the heads
/// and layers: host values for the fused CPU kernel, a tensor for dfdx.
struct Mask<D: Device<f32>> {
    host: Vec<f32>,
    dev: T3<D, NoneTape>,
}

/// Per-forward cached state of the decoder for incremental decoding.
pub struct DecodeCache<D: Device<f32>> {
    cross_kv: Vec<KeyValue<D>>,
    self_kv: Vec<Option<KeyValue<D>>>,
    cross_mask: T4<D, NoneTape>,
    step: usize,
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
        let mut m = vec![0f32; b * s * s];
        for r in 0..b {
            let seg = &batch.enc_segments[r * s..(r + 1) * s];
            for i in 0..s {
                for j in 0..s {
                    if seg[j] == 0 || (seg[i] != 0 && seg[i] != seg[j]) {
                        m[(r * s + i) * s + j] = MASKED;
                    }
                }
            }
        }
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

    fn decoder_masks(&self, batch: &Batch) -> (Vec<f32>, Vec<f32>) {
        let (b, s, t) = (batch.batch, batch.enc_len, batch.dec_len);
        let mut selfm = vec![0f32; b * t * t];
        let mut cross = vec![0f32; b * t * s];
        for r in 0..b {
            let eseg = &batch.enc_segments[r * s..(r + 1) * s];
            let dseg = batch.dec_segments.as_ref().map(|d| &d[r * t..(r + 1) * t]);
            for i in 0..t {
                for j in 0..t {
                    let same = dseg.is_none_or(|d| d[i] == d[j]);
                    if j > i || !same {
                        selfm[(r * t + i) * t + j] = MASKED;
                    }
                }
                for j in 0..s {
                    let ok = eseg[j] != 0 && dseg.is_none_or(|d| d[i] == 0 || d[i] == eseg[j]);
                    if !ok {
                        cross[(r * t + i) * s + j] = MASKED;
                    }
                }
            }
        }
        (selfm, cross)
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
        let (selfm, crossm) = self.decoder_masks(batch);
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

    /// Starts incremental decoding: runs the encoder and precomputes every
    /// layer's cross-attention keys and values.
    pub fn start_decoding(&self, batch: &Batch) -> DecodeCache<D> {
        let mut off = Dropout::off();
        let enc = self.encode::<NoneTape>(batch, &mut off, NoneTape);
        let (b, s) = (batch.batch, batch.enc_len);
        let cross_kv = self
            .decoder
            .blocks
            .iter()
            .map(|blk| {
                let (_, ca) = blk.cross.expect("decoder block has cross-attention");
                let k = self.split_heads(self.dense(enc.clone(), ca.k));
                let v = self.split_heads(self.dense(enc.clone(), ca.v));
                (k, v)
            })
            .collect();
        let mut m = vec![0f32; b * s];
        for (i, &seg) in batch.enc_segments.iter().enumerate() {
            if seg == 0 {
                m[i] = MASKED;
            }
        }
        let cross_mask = self.mask4(m, b, 1, s);
        DecodeCache {
            cross_kv,
            self_kv: vec![None; self.decoder.blocks.len()],
            cross_mask,
            step: 0,
        }
    }

    /// One decoding step: the logits `[b, vocab]` of the next token given the
    /// current input ids (one per row), with keys and values cached.
    pub fn decode_step(&self, cache: &mut DecodeCache<D>, ids: &[usize]) -> T2<D, NoneTape> {
        let b = ids.len();
        let t = cache.step;
        let mut off = Dropout::off();
        let mut x = self.embed::<NoneTape>(ids, b, 1, NoneTape);
        let buckets = bucket_matrix(&self.cfg, t, 1, t + 1, false);
        let bias = self.position_bias::<NoneTape>(&self.decoder, b, buckets, 1, t + 1);
        for (l, blk) in self.decoder.blocks.iter().enumerate() {
            let h = self.rms_norm(x.clone(), blk.self_ln);
            let q = self.split_heads(self.dense(h.clone(), blk.self_attn.q));
            let k = self.split_heads(self.dense(h.clone(), blk.self_attn.k));
            let v = self.split_heads(self.dense(h, blk.self_attn.v));
            let (k, v) = match cache.self_kv[l].take() {
                None => (k, v),
                Some((pk, pv)) => (
                    (pk, k).concat_along(Axis::<2>).realize(),
                    (pv, v).concat_along(Axis::<2>).realize(),
                ),
            };
            let k = k.contiguous();
            let v = v.contiguous();
            cache.self_kv[l] = Some((k.clone(), v.clone()));
            x = self.attention(q, k, v, bias.clone(), blk.self_attn, None) + x;
            let (ln, ca) = blk.cross.expect("decoder block has cross-attention");
            let h = self.rms_norm(x.clone(), ln);
            let q = self.split_heads(self.dense(h, ca.q));
            let (ck, cv) = &cache.cross_kv[l];
            x = self.attention(
                q,
                ck.clone(),
                cv.clone(),
                cache.cross_mask.clone(),
                ca,
                None,
            ) + x;
            let h = self.rms_norm(x.clone(), blk.ff_ln);
            x = self.feed_forward(h, blk.ff, &mut off) + x;
        }
        cache.step += 1;
        let out = self.rms_norm(x, self.decoder.final_ln);
        self.logits(out)
    }

    /// Greedy decoding with a KV cache: up to `max_len` tokens per row,
    /// stopping a row at EOS (which is kept) and all rows when all stopped.
    pub fn greedy(&self, batch: &Batch, max_len: usize, stop_at_eos: bool) -> Vec<Vec<u32>> {
        let b = batch.batch;
        let mut cache = self.start_decoding(batch);
        let mut ids = vec![self.cfg.decoder_start_token_id as usize; b];
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let v = self.cfg.vocab_size;
        for _ in 0..max_len {
            let logits = self.decode_step(&mut cache, &ids).as_vec();
            for r in 0..b {
                let row = &logits[r * v..(r + 1) * v];
                let mut best = 0;
                for (i, &x) in row.iter().enumerate() {
                    if x > row[best] {
                        best = i;
                    }
                }
                ids[r] = best;
                if !done[r] {
                    out[r].push(best as u32);
                    if stop_at_eos && best as u32 == self.cfg.eos_token_id {
                        done[r] = true;
                    }
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        out
    }
}

/// A stored shape as the model's 2-D shape (`[d]` → `[1, d]`).
pub fn shape2(s: &[usize]) -> (usize, usize) {
    match s {
        [d] => (1, *d),
        [a, b] => (*a, *b),
        _ => panic!("parameters are 1-D or 2-D"),
    }
}

/// Loss options (t5x `cross_entropy_with_logits` + normalisation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// z-loss coefficient (t5x: 1e-4).
    pub z_loss: f32,
    /// Label smoothing (t5x: 0).
    pub label_smoothing: f32,
    /// How the summed loss is normalised.
    pub normalization: LossNormalization,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            z_loss: 1e-4,
            label_smoothing: 0.0,
            normalization: LossNormalization::Sum,
        }
    }
}

/// t5x's `loss_normalizing_factor`; written `sum`, `tokens` or a number.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LossNormalization {
    /// None: the weighted sum over target tokens (t5x's default).
    Sum,
    /// Divided by a constant (e.g. 233472 = 2048 × 114 for Mesh-TF fine-tuning).
    Constant(f32),
    /// Divided by the number of real target tokens (a mean).
    NumRealTargetTokens,
}

impl std::str::FromStr for LossNormalization {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "sum" => LossNormalization::Sum,
            "tokens" | "num_real_target_tokens" => LossNormalization::NumRealTargetTokens,
            _ => match s.parse::<f32>() {
                Ok(c) if c.is_finite() && c > 0.0 => LossNormalization::Constant(c),
                _ => {
                    return Err(format!(
                    "loss normalization {s:?}: use sum, tokens or a positive number (e.g. 233472)"
                ))
                }
            },
        })
    }
}

impl TryFrom<String> for LossNormalization {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<LossNormalization> for String {
    fn from(n: LossNormalization) -> String {
        match n {
            LossNormalization::Sum => "sum".into(),
            LossNormalization::NumRealTargetTokens => "tokens".into(),
            LossNormalization::Constant(c) => c.to_string(),
        }
    }
}

/// Loss values of a batch, for logging.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossParts {
    /// Weighted cross-entropy sum.
    pub cross_entropy: f64,
    /// Weighted z-loss sum.
    pub z_loss: f64,
    /// Real target tokens.
    pub tokens: usize,
}

/// The factor on the summed loss: the normalisation times `scale`.
fn loss_norm(batch: &Batch, cfg: &LossConfig, scale: f32) -> f32 {
    let norm = match cfg.normalization {
        LossNormalization::Sum => 1.0,
        LossNormalization::Constant(c) => 1.0 / c,
        LossNormalization::NumRealTargetTokens => 1.0 / batch.target_tokens().max(1) as f32,
    };
    norm * scale
}

/// The training loss from a fused kernel's per-row losses.
fn loss_total<D: Device<f32>, T: Tape<f32, D> + 'static>(
    r: crate::kernels::RowLoss<D, T>,
    batch: &Batch,
    cfg: &LossConfig,
    scale: f32,
) -> (Tensor<(), f32, D, T>, LossParts) {
    let parts = LossParts {
        cross_entropy: r.cross_entropy,
        z_loss: r.z_loss,
        tokens: batch.target_tokens(),
    };
    (r.loss.sum::<(), _>() * loss_norm(batch, cfg, scale), parts)
}

/// The training loss of `logits` `[n, vocab]` (a scalar on the tape) and its
/// parts. `scale` multiplies the result (gradient accumulation).
pub fn loss<D: Device<f32>, T: Tape<f32, D> + 'static>(
    logits: T2<D, T>,
    batch: &Batch,
    cfg: &LossConfig,
    scale: f32,
) -> (Tensor<(), f32, D, T>, LossParts) {
    let dev = logits.device().clone();
    let (n, v) = *logits.shape();
    let smoothing = cfg.label_smoothing;
    let logits = match crate::kernels::row_loss_cpu(
        logits,
        &batch.targets,
        &batch.weights,
        cfg.z_loss,
        smoothing,
    ) {
        Ok(r) => return loss_total(r, batch, cfg, scale),
        Err(logits) => logits,
    };
    let tokens = batch.target_tokens();
    let norm = loss_norm(batch, cfg, scale);
    let mut ls = fork(logits, if smoothing > 0.0 { 3 } else { 2 });
    let sum_logits = (smoothing > 0.0).then(|| ls.pop().unwrap().sum::<(usize,), Axis<1>>());
    let picked_in = ls.pop().unwrap();
    let lse: T1<D, T> = ls.pop().unwrap().logsumexp::<(usize,), Axis<1>>();
    let idx = dev.tensor_from_vec(batch.targets.clone(), (n,));
    let picked: T1<D, T> = picked_in.select(idx);
    let mut lses = fork(lse, 2);
    let lse_z = lses.pop().unwrap();
    let lse_ce = lses.pop().unwrap();
    let ce = match sum_logits {
        None => lse_ce - picked,
        Some(s) => {
            let confidence = 1.0 - smoothing;
            let low = smoothing / (v as f32 - 1.0);
            let constant =
                -(confidence * confidence.ln() + (v as f32 - 1.0) * low * (low + 1e-20).ln());
            lse_ce - picked * (confidence - low) - s * low - constant
        }
    };
    let w = dev.tensor_from_vec(batch.weights.clone(), (n,));
    let ce_w = ce * w.clone();
    let z_w = lse_z.square() * cfg.z_loss * w;
    let sum = |t: &T1<D, T>| -> f64 {
        t.retaped::<NoneTape>()
            .as_vec()
            .iter()
            .map(|&x| x as f64)
            .sum()
    };
    let parts = LossParts {
        cross_entropy: sum(&ce_w),
        z_loss: sum(&z_w),
        tokens,
    };
    let total = (ce_w + z_w).sum::<(), _>() * norm;
    (total, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Masks generated in parallel chunks are the values drawn one at a time
    /// from the stream, and the stream goes on after them.
    #[test]
    fn dropout_masks_follow_the_stream() {
        let mut d = Dropout::new(0.25, 3, 5, 1);
        let mut serial = d.rng.clone();
        let threshold = (0.75f64 * u32::MAX as f64) as u32;
        for n in [1, 70_000, 200_000, 3] {
            let mask = d.mask(n);
            let want: Vec<f32> = (0..n)
                .map(|_| {
                    if serial.next_u32() <= threshold {
                        1.0 / 0.75
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_eq!(mask, want, "n {n}");
        }
        let dropped = d.mask(10_000).iter().filter(|&&x| x == 0.0).count();
        assert!(
            (2_200..2_800).contains(&dropped),
            "{dropped} of 10000 dropped"
        );
    }
}
