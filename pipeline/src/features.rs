//! seqio's `EncDecFeatureConverter`: task features `inputs` /
//! `targets` (EOS included) → model features for an encoder-decoder, padded,
//! optionally packed several examples to a row.
//!
//! Unlike seqio, lengths come from the examples themselves, never from
//! counting non-zero tokens, so a token id 0 inside a sequence or an empty
//! `inputs` cannot corrupt a packed row (seqio's `_pack_with_tf_ops` drops the
//! tokens after a 0 and misnumbers segments after an empty feature).
//!
//! ```
//! use t5mix_pipeline::features::{EncDecExample, EncDecFeatureConverter, Packing};
//! // seqio's docstring example.
//! let conv = EncDecFeatureConverter::new(10, 7, Packing::Greedy);
//! let rows = conv.convert(&[
//!     EncDecExample::new(vec![7, 8, 5, 1], vec![3, 9, 1]),
//!     EncDecExample::new(vec![8, 4, 9, 3, 1], vec![4, 1]),
//! ]).unwrap();
//! assert_eq!(rows[0].encoder_input_tokens, vec![7, 8, 5, 1, 8, 4, 9, 3, 1, 0]);
//! assert_eq!(rows[0].decoder_input_tokens, vec![0, 3, 9, 0, 4, 0, 0]);
//! assert_eq!(rows[0].decoder_segment_ids, Some(vec![1, 1, 1, 2, 2, 0, 0]));
//! ```

use serde::{Deserialize, Serialize};

use crate::preprocessors::PreprocessError;

/// Feature lengths of an encoder-decoder example (seqio's
/// `sequence_length`): the one home of the default lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceLength {
    /// Encoder length.
    pub inputs: usize,
    /// Decoder length.
    pub targets: usize,
}

impl SequenceLength {
    /// T5's pre-training lengths (span corruption: 512 / 114).
    pub const PRETRAINING: SequenceLength = SequenceLength {
        inputs: 512,
        targets: 114,
    };
    /// T5's fine-tuning lengths for text-to-text tasks (512 / 128).
    pub const SUPERVISED: SequenceLength = SequenceLength {
        inputs: 512,
        targets: 128,
    };
    /// Upper bound of either length (2^20 tokens): longer is a typo, not a model.
    pub const MAX: usize = 1 << 20;

    /// Parses `inputs=N,targets=M` (either may be left out: it keeps
    /// `base`'s value); each length in `1..=MAX`.
    pub fn parse_over(base: SequenceLength, s: &str) -> Result<SequenceLength, String> {
        let mut out = base;
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not NAME=N (e.g. inputs=512,targets=114)"))?;
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("{v:?} is not a whole number"))?;
            match k.trim() {
                "inputs" => out.inputs = n,
                "targets" => out.targets = n,
                k => return Err(format!("unknown feature {k:?} (inputs, targets)")),
            }
        }
        out.check()?;
        Ok(out)
    }

    /// Both lengths in range (inputs may be 0: decoder-only objectives).
    pub fn check(&self) -> Result<(), String> {
        if self.targets == 0 || self.targets > Self::MAX || self.inputs > Self::MAX {
            return Err(format!(
                "lengths inputs={} targets={}: targets must be in 1..={max}, inputs in 0..={max}",
                self.inputs,
                self.targets,
                max = Self::MAX
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for SequenceLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inputs={},targets={}", self.inputs, self.targets)
    }
}

/// One task example: `inputs` and `targets`, EOS already appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncDecExample {
    /// Encoder tokens.
    pub inputs: Vec<u32>,
    /// Decoder target tokens.
    pub targets: Vec<u32>,
}

impl EncDecExample {
    /// An example from its two features.
    pub fn new(inputs: Vec<u32>, targets: Vec<u32>) -> Self {
        EncDecExample { inputs, targets }
    }
}

/// The model features of one row (seqio names; int32 as seqio).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncDecRow {
    /// Encoder tokens, padded with 0.
    pub encoder_input_tokens: Vec<i32>,
    /// Decoder targets, padded with 0.
    pub decoder_target_tokens: Vec<i32>,
    /// Targets shifted right within each segment, 0 at each segment start.
    pub decoder_input_tokens: Vec<i32>,
    /// 1 on real target positions, 0 on padding.
    pub decoder_loss_weights: Vec<i32>,
    /// Packed only: 1, 2, … per example in the row, 0 on padding.
    pub encoder_segment_ids: Option<Vec<i32>>,
    /// Packed only.
    pub decoder_segment_ids: Option<Vec<i32>>,
    /// Packed only: 0.. within each segment.
    pub encoder_positions: Option<Vec<i32>>,
    /// Packed only.
    pub decoder_positions: Option<Vec<i32>>,
}

/// How examples are put into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// One example per row (seqio `pack=False`).
    None,
    /// seqio's packing: greedy next-fit in arrival order, within windows of
    /// `max(lengths)` examples.
    #[default]
    Greedy,
    /// First-fit decreasing within each window: denser rows, same windows.
    FirstFitDecreasing,
}

impl std::str::FromStr for Packing {
    type Err = String;

    /// `greedy` (seqio), `ffd` (first-fit decreasing) or `none`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "greedy" => Packing::Greedy,
            "ffd" | "first-fit-decreasing" => Packing::FirstFitDecreasing,
            "none" => Packing::None,
            _ => return Err(format!("packing {s:?}: use greedy, ffd or none")),
        })
    }
}

/// `EncDecFeatureConverter` with fixed task feature lengths.
#[derive(Debug, Clone)]
pub struct EncDecFeatureConverter {
    inputs_length: usize,
    targets_length: usize,
    packing: Packing,
    apply_length_check: bool,
    window: usize,
}

#[derive(Default)]
struct Row {
    examples: Vec<(usize, usize, usize)>, // (example index, inputs len, targets len)
    enc: usize,
    dec: usize,
}

impl EncDecFeatureConverter {
    /// A converter for `inputs_length` / `targets_length` (e.g. 512 / 114).
    pub fn new(inputs_length: usize, targets_length: usize, packing: Packing) -> Self {
        EncDecFeatureConverter {
            inputs_length,
            targets_length,
            packing,
            apply_length_check: true,
            window: inputs_length.max(targets_length).max(1),
        }
    }

    /// With the check off, longer examples are trimmed instead of rejected
    /// (seqio `apply_length_check=False`).
    pub fn with_length_check(mut self, on: bool) -> Self {
        self.apply_length_check = on;
        self
    }

    /// Examples considered together when packing (seqio: `max(lengths)`).
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    fn check(&self, examples: &[EncDecExample]) -> Result<(), PreprocessError> {
        if !self.apply_length_check {
            return Ok(());
        }
        for e in examples {
            if e.inputs.len() > self.inputs_length {
                return Err(PreprocessError::TooLong {
                    feature: "inputs",
                    length: e.inputs.len(),
                    max: self.inputs_length,
                });
            }
            if e.targets.len() > self.targets_length {
                return Err(PreprocessError::TooLong {
                    feature: "targets",
                    length: e.targets.len(),
                    max: self.targets_length,
                });
            }
        }
        Ok(())
    }

    /// Converts a stream of examples, in order, to rows.
    pub fn convert(&self, examples: &[EncDecExample]) -> Result<Vec<EncDecRow>, PreprocessError> {
        self.check(examples)?;
        let mut rows = Vec::new();
        match self.packing {
            Packing::None => {
                for e in examples {
                    rows.push(self.build(examples, &[], Some(e)));
                }
            }
            Packing::Greedy | Packing::FirstFitDecreasing => {
                for (w, window) in examples.chunks(self.window).enumerate() {
                    let base = w * self.window;
                    for r in self.pack_window(window, base) {
                        rows.push(self.build(examples, &r.examples, None));
                    }
                }
            }
        }
        Ok(rows)
    }

    fn pack_window(&self, window: &[EncDecExample], base: usize) -> Vec<Row> {
        let lens: Vec<(usize, usize, usize)> = window
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    base + i,
                    e.inputs.len().min(self.inputs_length),
                    e.targets.len().min(self.targets_length),
                )
            })
            .collect();
        let mut rows: Vec<Row> = Vec::new();
        let fits = |r: &Row, (_, a, b): (usize, usize, usize)| {
            r.enc + a <= self.inputs_length && r.dec + b <= self.targets_length
        };
        // Greedy (seqio): arrival order, only the last row is open.
        // First-fit decreasing: largest first by the share of a row it fills
        // (ties by arrival), every row is open.
        let first_fit = self.packing == Packing::FirstFitDecreasing;
        let mut order = lens;
        if first_fit {
            let share = |x: &(usize, usize, usize)| {
                x.1 as f64 / self.inputs_length.max(1) as f64
                    + x.2 as f64 / self.targets_length.max(1) as f64
            };
            order.sort_by(|x, y| share(y).total_cmp(&share(x)).then(x.0.cmp(&y.0)));
        }
        for ex in order {
            let open = if first_fit {
                rows.iter().position(|r| fits(r, ex))
            } else {
                rows.len().checked_sub(1).filter(|&i| fits(&rows[i], ex))
            };
            let i = open.unwrap_or_else(|| {
                rows.push(Row::default());
                rows.len() - 1
            });
            let r = &mut rows[i];
            r.enc += ex.1;
            r.dec += ex.2;
            r.examples.push(ex);
        }
        rows
    }

    fn build(
        &self,
        examples: &[EncDecExample],
        packed: &[(usize, usize, usize)],
        single: Option<&EncDecExample>,
    ) -> EncDecRow {
        let (li, lt) = (self.inputs_length, self.targets_length);
        let mut row = EncDecRow {
            encoder_input_tokens: vec![0; li],
            decoder_target_tokens: vec![0; lt],
            decoder_input_tokens: vec![0; lt],
            decoder_loss_weights: vec![0; lt],
            encoder_segment_ids: None,
            decoder_segment_ids: None,
            encoder_positions: None,
            decoder_positions: None,
        };
        let place =
            |e: &EncDecExample, enc_at: usize, dec_at: usize, seg: i32, row: &mut EncDecRow| {
                let inp = &e.inputs[..e.inputs.len().min(li)];
                let tgt = &e.targets[..e.targets.len().min(lt)];
                for (k, &t) in inp.iter().enumerate() {
                    row.encoder_input_tokens[enc_at + k] = t as i32;
                    if let (Some(s), Some(p)) = (
                        row.encoder_segment_ids.as_mut(),
                        row.encoder_positions.as_mut(),
                    ) {
                        s[enc_at + k] = seg;
                        p[enc_at + k] = k as i32;
                    }
                }
                for (k, &t) in tgt.iter().enumerate() {
                    row.decoder_target_tokens[dec_at + k] = t as i32;
                    row.decoder_input_tokens[dec_at + k] =
                        if k == 0 { 0 } else { tgt[k - 1] as i32 };
                    row.decoder_loss_weights[dec_at + k] = 1;
                    if let (Some(s), Some(p)) = (
                        row.decoder_segment_ids.as_mut(),
                        row.decoder_positions.as_mut(),
                    ) {
                        s[dec_at + k] = seg;
                        p[dec_at + k] = k as i32;
                    }
                }
                (enc_at + inp.len(), dec_at + tgt.len())
            };
        match single {
            Some(e) => {
                let (_, d) = place(e, 0, 0, 1, &mut row);
                // Unpacked, seqio shifts the padded row as a whole: the last
                // target token also lands in the first padding position.
                if d > 0 && d < lt {
                    row.decoder_input_tokens[d] = row.decoder_target_tokens[d - 1];
                }
            }
            None => {
                row.encoder_segment_ids = Some(vec![0; li]);
                row.encoder_positions = Some(vec![0; li]);
                row.decoder_segment_ids = Some(vec![0; lt]);
                row.decoder_positions = Some(vec![0; lt]);
                let (mut ea, mut da) = (0, 0);
                for (seg, &(idx, _, _)) in packed.iter().enumerate() {
                    (ea, da) = place(&examples[idx], ea, da, seg as i32 + 1, &mut row);
                }
            }
        }
        row
    }
}

/// Share of real (non-padding) positions over all positions, counting the
/// encoder and decoder sides together.
pub fn packing_efficiency(
    rows: &[EncDecRow],
    examples: &[EncDecExample],
    inputs_length: usize,
    targets_length: usize,
) -> f64 {
    let real: usize = examples
        .iter()
        .map(|e| e.inputs.len().min(inputs_length) + e.targets.len().min(targets_length))
        .sum();
    let total = rows.len() * (inputs_length + targets_length);
    if total == 0 {
        0.0
    } else {
        real as f64 / total as f64
    }
}
