//! Batched greedy generation for evaluation: inputs sorted by length so each
//! batch pads little, decoded with the KV cache, returned in input order.

use dfdx::prelude::*;

use crate::model::{Batch, T5};

/// Greedy outputs (EOS and what follows removed) of every `inputs` row.
pub fn generate<D: Device<f32>>(
    model: &T5<D>,
    inputs: &[Vec<u32>],
    batch_size: usize,
    max_len: usize,
) -> Vec<Vec<u32>> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].len()));
    let mut out = vec![Vec::new(); inputs.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = chunk
            .iter()
            .map(|&i| (inputs[i].clone(), vec![model.cfg.eos_token_id]))
            .collect();
        let batch = Batch::from_pairs(&pairs, model.cfg.decoder_start_token_id);
        let gen = model.greedy(&batch, max_len, true);
        for (&i, mut g) in chunk.iter().zip(gen) {
            if let Some(p) = g.iter().position(|&t| t == model.cfg.eos_token_id) {
                g.truncate(p);
            }
            out[i] = g;
        }
    }
    out
}
