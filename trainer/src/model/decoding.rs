//! Incremental greedy decoding with a KV cache (single and batched-padded).

use dfdx::prelude::*;

use super::Dropout;
#[allow(unused_imports)]
use super::*;

pub(super) type KeyValue<D> = (T4<D, NoneTape>, T4<D, NoneTape>);

/// An attention mask `[b, tq, tk]` (0 or [`MASKED`]), shared by the heads
/// and layers: host values for the fused CPU kernel, a tensor for dfdx.
pub(super) struct Mask<D: Device<f32>> {
    pub(super) host: Vec<f32>,
    pub(super) dev: T3<D, NoneTape>,
}

/// Per-forward cached state of the decoder for incremental decoding.
pub struct DecodeCache<D: Device<f32>> {
    pub(super) cross_kv: Vec<KeyValue<D>>,
    pub(super) self_kv: Vec<Option<KeyValue<D>>>,
    pub(super) cross_mask: T4<D, NoneTape>,
    pub(super) step: usize,
}

impl<D: Device<f32>> T5<D> {
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
