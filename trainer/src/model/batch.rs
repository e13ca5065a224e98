//! A batch of model features: encoder tokens, decoder inputs and targets,
//! loss weights and segment ids (packed or not).

#[allow(unused_imports)]
use super::*;

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
