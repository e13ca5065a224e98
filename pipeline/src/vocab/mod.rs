//! SentencePiece vocabularies with T5's sentinels (`seqio.SentencePieceVocabulary`), in pure Rust.
//!
//! [`Vocabulary`] reads a SentencePiece unigram `.model`, appends `extra_ids`
//! sentinel pieces as seqio's `SentencePieceVocabulary` does (in reverse, so
//! `<extra_id_0>` gets the highest id: 32099 for T5's 32000 pieces + 100), and
//! encodes with SentencePiece's own algorithm: the model's precompiled
//! normalizer, then the optimized unigram Viterbi with its float arithmetic
//! and tie-breaking, then the merge of unknown runs (or, for models trained
//! with `byte_fallback`, their UTF-8 bytes as `<0xNN>` pieces). Decoding follows seqio
//! (cut after the first EOS, ids past the vocabulary read as UNK) and
//! SentencePiece's `DecodeIds`.
//!
//! ```no_run
//! use t5mix_pipeline::vocab::Vocabulary;
//! let v = Vocabulary::load("spiece.model".as_ref(), 100).unwrap();
//! assert_eq!(v.vocab_size(), 32100);
//! assert_eq!(v.sentinel(0), 32099);
//! assert_eq!(v.encode("Hello world"), vec![8774, 296]);
//! assert_eq!(v.decode(&[8774, 296, 1, 5]), "Hello world");
//! ```

pub mod lines;
mod model_proto;
mod normalizer;
pub mod train;
mod unigram;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use rayon::prelude::*;

pub use model_proto::{ModelProto, NormalizerSpec, PieceType, SentencePiece, TrainerSpec};
use normalizer::Normalizer;
use unigram::{viterbi, Model, PieceInfo, PieceTrie};

/// Sentinels seqio adds to T5's vocabulary (`<extra_id_0>` … `<extra_id_99>`).
pub const DEFAULT_EXTRA_IDS: u32 = 100;

/// Errors of loading a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid SentencePiece model.
    #[error("{path}: not a valid SentencePiece model: {message}")]
    Invalid {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A corrupt part of a model (path added by [`Vocabulary::load`]).
    #[error("{0}")]
    Corrupt(String),
    /// The SentencePiece trainer failed.
    #[error("SentencePiece trainer: {0}")]
    Train(String),
    /// Reading lines to encode or writing the result failed.
    #[error("{0}")]
    Lines(String),
    /// This build has no SentencePiece trainer.
    #[error("this t5mix was built without the SentencePiece C++ library: install libsentencepiece-dev and pkg-config (Debian/Ubuntu) and rebuild to enable training")]
    TrainerUnavailable,
}

/// Models' embedding rows are the vocabulary size rounded up to this (t5x:
/// 32100 ids -> 32128 rows).
pub const EMBEDDING_ROW_MULTIPLE: u32 = 128;

/// `vocab_size` rounded up to [`EMBEDDING_ROW_MULTIPLE`].
pub fn padded_vocab_size(vocab_size: u32) -> u32 {
    vocab_size.div_ceil(EMBEDDING_ROW_MULTIPLE) * EMBEDDING_ROW_MULTIPLE
}

const SPACE_SYMBOL: &str = "\u{2581}";

/// Reusable buffers for encoding many texts on one thread.
#[derive(Debug, Default)]
pub struct EncodeScratch {
    normalized: Vec<u8>,
    best: Vec<(f32, i32, i32)>,
}

/// A SentencePiece unigram vocabulary with `extra_ids` sentinels.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pieces: Vec<String>,
    types: Vec<PieceType>,
    info: Vec<PieceInfo>,
    piece_to_id: HashMap<String, u32>,
    trie: PieceTrie,
    normalizer: Normalizer,
    min_score: f32,
    max_score: f32,
    unk_id: u32,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    bos_id: Option<u32>,
    base_size: u32,
    extra_ids: u32,
    unk_surface: String,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    /// With `byte_fallback`: the ids of `<0x00>` … `<0xFF>`.
    byte_ids: Option<Box<[u32; 256]>>,
    checksum: String,
}

/// The byte of a `<0xNN>` piece (every byte piece is checked at load).
fn byte_piece_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// Appends the text of a run of byte pieces and empties it: valid UTF-8 as
/// it is, each byte of an invalid or cut sequence as one U+FFFD (what
/// SentencePiece's decoder writes; Rust's `from_utf8_lossy` would write one
/// per maximal invalid subpart).
fn push_bytes_lossy(text: &mut String, bytes: &mut Vec<u8>) {
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        match normalizer::utf8_char_len(rest) {
            Some(n) => {
                text.push_str(std::str::from_utf8(&rest[..n]).expect("checked"));
                rest = &rest[n..];
            }
            None => {
                text.push('\u{fffd}');
                rest = &rest[1..];
            }
        }
    }
    bytes.clear();
}

impl Vocabulary {
    /// Loads a `.model` file and adds `extra_ids` sentinels (T5: 100).
    pub fn load(path: &Path, extra_ids: u32) -> Result<Self, VocabError> {
        let bytes = std::fs::read(path).map_err(|source| VocabError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, extra_ids).map_err(|e| match e {
            VocabError::Corrupt(message) => VocabError::Invalid {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Reads a serialized `ModelProto` and adds `extra_ids` sentinels.
    pub fn from_bytes(bytes: &[u8], extra_ids: u32) -> Result<Self, VocabError> {
        let mut proto =
            ModelProto::decode(bytes).map_err(|e| VocabError::Corrupt(format!("protobuf: {e}")))?;
        if proto.pieces.is_empty() {
            return Err(VocabError::Corrupt("the model has no pieces".into()));
        }
        let trainer = proto.trainer_spec.clone().unwrap_or_default();
        if trainer.model_type() != 1 {
            let name = match trainer.model_type() {
                2 => "BPE",
                3 => "word",
                4 => "char",
                _ => "unknown",
            };
            return Err(VocabError::Corrupt(format!(
                "a {name} model (type {}); only unigram models (T5's) are supported",
                trainer.model_type()
            )));
        }
        let base_size = proto.pieces.len() as u32;
        // seqio `_load_model_internal`: USER_DEFINED `▁<extra_id_i>`, highest i first.
        for i in (0..extra_ids).rev() {
            proto.pieces.push(SentencePiece {
                piece: Some(format!("{SPACE_SYMBOL}<extra_id_{i}>")),
                score: Some(0.0),
                r#type: Some(PieceType::UserDefined as i32),
            });
        }
        let checksum = {
            use md5::{Digest, Md5};
            format!("{:x}", Md5::digest(bytes))
        };
        let mut pieces = Vec::with_capacity(proto.pieces.len());
        let mut types = Vec::with_capacity(proto.pieces.len());
        let mut info = Vec::with_capacity(proto.pieces.len());
        let mut piece_to_id = HashMap::with_capacity(proto.pieces.len());
        let mut unk = None;
        let mut user_defined = Vec::new();
        let mut trie_pieces = Vec::new();
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
        for (i, sp) in proto.pieces.iter().enumerate() {
            let piece = sp.piece.clone().unwrap_or_default();
            if piece.is_empty() {
                return Err(VocabError::Corrupt(format!("piece {i} is empty")));
            }
            let ty = PieceType::try_from(sp.r#type.unwrap_or(PieceType::Normal as i32))
                .map_err(|_| VocabError::Corrupt(format!("piece {i} has an unknown type")))?;
            if piece_to_id.insert(piece.clone(), i as u32).is_some() {
                return Err(VocabError::Corrupt(format!(
                    "piece {piece:?} is defined twice"
                )));
            }
            match ty {
                PieceType::Normal => {
                    min_score = min_score.min(sp.score());
                    max_score = max_score.max(sp.score());
                }
                PieceType::Unknown if unk.replace(i as u32).is_some() => {
                    return Err(VocabError::Corrupt("two <unk> pieces".into()));
                }
                PieceType::UserDefined => user_defined.push(piece.as_bytes().to_vec()),
                PieceType::Byte if !trainer.byte_fallback() => {
                    return Err(VocabError::Corrupt(format!(
                        "byte piece {piece} without byte_fallback"
                    )))
                }
                PieceType::Byte if byte_piece_value(&piece).is_none() => {
                    return Err(VocabError::Corrupt(format!(
                        "piece {i} ({piece:?}) has the byte type but is not <0xNN>"
                    )))
                }
                _ => {}
            }
            if matches!(
                ty,
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused
            ) {
                trie_pieces.push((piece.as_bytes().to_vec(), i as i32));
            }
            info.push(PieceInfo {
                score: sp.score(),
                user_defined: ty == PieceType::UserDefined,
                unused: ty == PieceType::Unused,
            });
            pieces.push(piece);
            types.push(ty);
        }
        let unk_id = unk.ok_or_else(|| VocabError::Corrupt("no <unk> piece".into()))?;
        let ns = proto.normalizer_spec.clone().unwrap_or_default();
        let normalizer = Normalizer::new(
            ns.precompiled_charsmap(),
            ns.add_dummy_prefix(),
            ns.remove_extra_whitespaces(),
            ns.escape_whitespaces(),
            trainer.treat_whitespace_as_suffix(),
            user_defined,
        )?;
        let byte_ids = if trainer.byte_fallback() {
            let mut ids = Box::new([0u32; 256]);
            for (b, slot) in ids.iter_mut().enumerate() {
                let piece = format!("<0x{b:02X}>");
                *slot = piece_to_id
                    .get(&piece)
                    .copied()
                    .filter(|&i| types[i as usize] == PieceType::Byte)
                    .ok_or_else(|| {
                        VocabError::Corrupt(format!(
                            "byte_fallback is on but the byte piece {piece} is missing"
                        ))
                    })?;
            }
            Some(ids)
        } else {
            None
        };
        let id = |v: i32| (v >= 0 && (v as usize) < pieces.len()).then_some(v as u32);
        Ok(Vocabulary {
            byte_ids,
            trie: PieceTrie::build(&trie_pieces),
            unk_id,
            eos_id: id(trainer.eos_id()),
            pad_id: id(trainer.pad_id()),
            bos_id: id(trainer.bos_id()),
            base_size,
            extra_ids,
            unk_surface: trainer
                .unk_surface
                .clone()
                .unwrap_or_else(|| " \u{2047} ".to_string()),
            add_dummy_prefix: ns.add_dummy_prefix(),
            remove_extra_whitespaces: ns.remove_extra_whitespaces(),
            min_score,
            max_score,
            pieces,
            types,
            info,
            piece_to_id,
            normalizer,
            checksum,
        })
    }

    /// Ids of `text`, as `SentencePieceProcessor.EncodeAsIds` (no EOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut EncodeScratch::default(), &mut out);
        out
    }

    /// Appends the ids of `text` to `out`, reusing `scratch`.
    pub fn encode_into(&self, text: &str, scratch: &mut EncodeScratch, out: &mut Vec<u32>) {
        self.normalizer.normalize(text, &mut scratch.normalized);
        let model = Model {
            trie: &self.trie,
            info: &self.info,
            min_score: self.min_score,
            max_score: self.max_score,
            unk_id: self.unk_id as i32,
            byte_ids: self.byte_ids.as_deref(),
        };
        viterbi(&scratch.normalized, &model, &mut scratch.best, out);
    }

    /// The normalized form of `text` (U+2581 for spaces), for debugging.
    pub fn normalize(&self, text: &str) -> String {
        let mut v = Vec::new();
        self.normalizer.normalize(text, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Encodes many texts in parallel (rayon); the result does not depend on
    /// the number of threads.
    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .map_init(EncodeScratch::default, |s, t| {
                let mut out = Vec::new();
                self.encode_into(t, s, &mut out);
                out
            })
            .collect()
    }

    /// Text of `ids` as seqio's `Vocabulary.decode`: everything after the
    /// first EOS is dropped, ids past the vocabulary read as UNK, then
    /// SentencePiece's `DecodeIds`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let size = self.vocab_size();
        let mut end = ids.len();
        if let Some(eos) = self.eos_id {
            if let Some(p) = ids.iter().position(|&i| i == eos) {
                end = p + 1;
            }
        }
        let mut text = String::new();
        // SentencePieceProcessor::Decode: the first pieces lose their
        // leading space (the dummy prefix) until the text is not empty or,
        // when extra whitespace is kept, one space has been dropped.
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        // a run of byte pieces, decoded together when it ends
        let mut bytes = Vec::new();
        for &raw in &ids[..end] {
            let id = if raw >= size { self.unk_id } else { raw };
            let ty = self.types[id as usize];
            if ty == PieceType::Byte {
                bytes.extend(byte_piece_value(&self.pieces[id as usize]));
                continue;
            }
            push_bytes_lossy(&mut text, &mut bytes);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match ty {
                PieceType::Control | PieceType::Byte => {}
                PieceType::Unknown => text.push_str(&self.unk_surface),
                _ => {
                    let mut piece = self.pieces[id as usize].as_str();
                    if is_bos_ws && (self.add_dummy_prefix || self.remove_extra_whitespaces) {
                        if let Some(rest) = piece.strip_prefix(SPACE_SYMBOL) {
                            piece = rest;
                            bos_ws_seen = !self.remove_extra_whitespaces;
                        }
                    }
                    text.push_str(&piece.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        push_bytes_lossy(&mut text, &mut bytes);
        text
    }

    /// Sum of the piece scores of a segmentation (unknowns at the unigram
    /// model's unknown score). Two encoders that disagree only on ties give
    /// segmentations of equal score.
    pub fn segmentation_score(&self, ids: &[u32]) -> f64 {
        ids.iter()
            .map(|&i| match self.types.get(i as usize) {
                Some(PieceType::Unknown) => (self.min_score - 10.0) as f64,
                Some(PieceType::UserDefined) => 0.0,
                Some(_) => self.info[i as usize].score as f64,
                None => f64::NAN,
            })
            .sum()
    }

    /// The piece of an id (`▁` for spaces), if the id exists.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of a piece.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.piece_to_id.get(piece).copied()
    }

    /// The type of an id's piece.
    pub fn piece_type(&self, id: u32) -> Option<PieceType> {
        self.types.get(id as usize).copied()
    }

    /// The id of sentinel `<extra_id_k>`: `vocab_size - 1 - k` (32099 for k = 0).
    pub fn sentinel(&self, k: u32) -> u32 {
        assert!(
            k < self.extra_ids,
            "sentinel {k} of only {} extra ids",
            self.extra_ids
        );
        self.vocab_size() - 1 - k
    }

    /// Pieces including the sentinels (32100 for T5).
    pub fn vocab_size(&self) -> u32 {
        self.base_size + self.extra_ids
    }

    /// Pieces of the model file alone (32000 for T5).
    pub fn base_vocab_size(&self) -> u32 {
        self.base_size
    }

    /// Number of sentinels.
    pub fn extra_ids(&self) -> u32 {
        self.extra_ids
    }

    /// Embedding rows for this vocabulary: `vocab_size` rounded up to
    /// [`EMBEDDING_ROW_MULTIPLE`] (32128 for T5's).
    pub fn padded_vocab_size(&self) -> u32 {
        padded_vocab_size(self.vocab_size())
    }

    /// PAD id (0 for T5; seqio hard-wires 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id.unwrap_or(0)
    }

    /// EOS id (1 for T5).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// UNK id (2 for T5).
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// BOS id (none for T5).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// md5 of the model file's bytes (recorded in shard manifests).
    pub fn checksum(&self) -> &str {
        &self.checksum
    }
}
