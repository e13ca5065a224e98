//! The subset of SentencePiece's `sentencepiece_model.proto` that encoding
//! and decoding need, declared with prost (field numbers as upstream; fields
//! not declared here are skipped when reading).

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PieceType {
    /// An ordinary piece.
    Normal = 1,
    /// `<unk>`.
    Unknown = 2,
    /// Control symbols (`<pad>`, `</s>`): never produced by encoding text.
    Control = 3,
    /// Always-matched symbols (T5's `<extra_id_*>` added by seqio).
    UserDefined = 4,
    /// Reserved but unused.
    Unused = 5,
    /// Byte-fallback pieces `<0xNN>`.
    Byte = 6,
}

/// `ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SentencePiece {
    /// The piece text (U+2581 for spaces).
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    /// Its log probability.
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// Its type.
    #[prost(enumeration = "PieceType", optional, tag = "3", default = "Normal")]
    pub r#type: Option<i32>,
}

/// `TrainerSpec` (the fields encoding and decoding read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpec {
    /// 1 = unigram, 2 = BPE, 3 = word, 4 = char.
    #[prost(int32, optional, tag = "3", default = "1")]
    pub model_type: Option<i32>,
    /// Target vocabulary size.
    #[prost(int32, optional, tag = "4", default = "8000")]
    pub vocab_size: Option<i32>,
    /// Whitespace as suffix instead of prefix.
    #[prost(bool, optional, tag = "24", default = "false")]
    pub treat_whitespace_as_suffix: Option<bool>,
    /// Unknown characters decomposed into byte pieces.
    #[prost(bool, optional, tag = "35", default = "false")]
    pub byte_fallback: Option<bool>,
    /// Id of `<unk>`.
    #[prost(int32, optional, tag = "40", default = "0")]
    pub unk_id: Option<i32>,
    /// Id of `<s>` (-1: none).
    #[prost(int32, optional, tag = "41", default = "1")]
    pub bos_id: Option<i32>,
    /// Id of `</s>`.
    #[prost(int32, optional, tag = "42", default = "2")]
    pub eos_id: Option<i32>,
    /// Id of `<pad>` (-1: none).
    #[prost(int32, optional, tag = "43", default = "-1")]
    pub pad_id: Option<i32>,
    /// What `<unk>` decodes to.
    #[prost(string, optional, tag = "44")]
    pub unk_surface: Option<String>,
}

/// `NormalizerSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpec {
    /// Rule name (`nmt_nfkc`, `identity`, …).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Compiled rules: `<u32 trie size><darts double array><normalized strings>`.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
    /// Prepend U+2581 to the text.
    #[prost(bool, optional, tag = "3", default = "true")]
    pub add_dummy_prefix: Option<bool>,
    /// Drop leading, trailing and repeated spaces.
    #[prost(bool, optional, tag = "4", default = "true")]
    pub remove_extra_whitespaces: Option<bool>,
    /// Spaces become U+2581.
    #[prost(bool, optional, tag = "5", default = "true")]
    pub escape_whitespaces: Option<bool>,
}

/// `ModelProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The pieces; a piece's index is its id.
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    /// Training settings (special ids among them).
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    /// How text is normalized before encoding.
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
    /// Denormalization after decoding (rarely set).
    #[prost(message, optional, tag = "5")]
    pub denormalizer_spec: Option<NormalizerSpec>,
}
