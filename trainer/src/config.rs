//! Model configuration: HF `config.json` fields and the named presets.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Feed-forward variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedForward {
    /// T5 v1.0: `wo(relu(wi x))`.
    Relu,
    /// T5 v1.1: `wo(gelu_new(wi_0 x) * wi_1 x)`.
    GatedGelu,
}

/// A T5 encoder-decoder's shape, as HF transformers' `T5Config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    /// Embedding rows (32128 for the T5 vocabulary padded to 128).
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Decoder layers.
    pub num_decoder_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative-position buckets (32).
    pub relative_attention_num_buckets: usize,
    /// Relative distance where the buckets end (128).
    pub relative_attention_max_distance: usize,
    /// Dropout rate in training.
    pub dropout_rate: f32,
    /// RMS norm epsilon (1e-6).
    pub layer_norm_epsilon: f32,
    /// `relu` or `gated-gelu`.
    pub feed_forward_proj: String,
    /// Whether logits use the shared embedding (v1.0) or an own `lm_head` (v1.1).
    pub tie_word_embeddings: bool,
    /// Whether the decoder output is scaled by `d_model^-0.5` before the
    /// output matrix (HF transformers 5 writes this key; absent: same as `tie_word_embeddings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_decoder_outputs: Option<bool>,
    /// Padding id (0).
    #[serde(default)]
    pub pad_token_id: u32,
    /// End of sequence (1).
    #[serde(default = "one")]
    pub eos_token_id: u32,
    /// First decoder input (0).
    #[serde(default)]
    pub decoder_start_token_id: u32,
}

fn one() -> u32 {
    1
}

impl T5Config {
    /// A configuration by name: `t5-v1_0-small`, `t5-v1_0-base`,
    /// `t5-v1_1-small`, `t5-v1_1-base`, `tiny` (d_model 256, 4+4 layers,
    /// 8 heads, d_ff 1024 gated-GELU: the benchmark model) and `micro`
    /// (d_model 64, 2+2 layers: fast tests).
    pub fn named(name: &str) -> Result<T5Config> {
        let base = |d_model, d_kv, d_ff, layers, heads, ff: FeedForward| T5Config {
            vocab_size: 32128,
            d_model,
            d_kv,
            d_ff,
            num_layers: layers,
            num_decoder_layers: layers,
            num_heads: heads,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            dropout_rate: if ff == FeedForward::Relu { 0.1 } else { 0.0 },
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: match ff {
                FeedForward::Relu => "relu".into(),
                FeedForward::GatedGelu => "gated-gelu".into(),
            },
            tie_word_embeddings: ff == FeedForward::Relu,
            scale_decoder_outputs: None,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: 0,
        };
        Ok(match name {
            "t5-v1_0-small" | "t5-small" => base(512, 64, 2048, 6, 8, FeedForward::Relu),
            "t5-v1_0-base" | "t5-base" => base(768, 64, 3072, 12, 12, FeedForward::Relu),
            "t5-v1_1-small" => base(512, 64, 1024, 8, 6, FeedForward::GatedGelu),
            "t5-v1_1-base" => base(768, 64, 2048, 12, 12, FeedForward::GatedGelu),
            "tiny" => base(256, 32, 1024, 4, 8, FeedForward::GatedGelu),
            "micro" => base(64, 16, 128, 2, 4, FeedForward::GatedGelu),
            other => {
                return Err(TrainError::Config(format!(
                    "unknown model config {other:?}: use t5-v1_0-small, t5-v1_0-base, \
                     t5-v1_1-small, t5-v1_1-base, tiny, micro or a config.json path"
                )))
            }
        })
    }

    /// A name from [`T5Config::named`] or the path of an HF `config.json`
    /// (or of the folder holding one).
    pub fn from_name_or_path(s: &str) -> Result<T5Config> {
        let p = Path::new(s);
        if p.is_dir() {
            return Self::from_file(&p.join("config.json"));
        }
        if p.is_file() {
            return Self::from_file(p);
        }
        Self::named(s)
    }

    /// Reads an HF `config.json`.
    pub fn from_file(path: &Path) -> Result<T5Config> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let cfg: T5Config = serde_json::from_str(&text).map_err(|e| {
            TrainError::Config(format!("{}: line {}: {e}", path.display(), e.line()))
        })?;
        cfg.validate()
            .map_err(|m| TrainError::Config(format!("{}: {m}", path.display())))?;
        Ok(cfg)
    }

    /// The feed-forward variant.
    pub fn feed_forward(&self) -> FeedForward {
        if self.feed_forward_proj.starts_with("gated") {
            FeedForward::GatedGelu
        } else {
            FeedForward::Relu
        }
    }

    /// Attention inner width (`num_heads × d_kv`).
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Whether the decoder output is scaled by `d_model^-0.5` (SOURCES.md's
    /// rule: `scale_decoder_outputs` if present, else `tie_word_embeddings`).
    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let ff = &self.feed_forward_proj;
        if !(ff == "relu" || ff == "gated-gelu") {
            return Err(format!(
                "feed_forward_proj {ff:?} is not supported (relu or gated-gelu)"
            ));
        }
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.num_decoder_layers),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ] {
            if v == 0 || v > 1 << 22 {
                return Err(format!("{k} {v}: must be in 1..={}", 1 << 22));
            }
        }
        if self.num_layers + self.num_decoder_layers > 4096 || self.num_heads > 4096 {
            return Err("more than 4096 layers or heads".into());
        }
        // what T5::new would allocate must fit in memory (f32 weights)
        let params = self.estimated_params();
        if params > 1 << 36 {
            return Err(format!(
                "{params} parameters: more than this program can hold"
            ));
        }
        Ok(())
    }

    /// Parameters of a model of this shape (from the layer shapes; the
    /// checkpoint reader compares it with the weights file's size).
    pub fn estimated_params(&self) -> u128 {
        let (d, inner) = (self.d_model as u128, (self.num_heads * self.d_kv) as u128);
        let attn = 4 * d * inner;
        let ff = (if self.feed_forward() == FeedForward::GatedGelu {
            3
        } else {
            2
        }) * d
            * self.d_ff as u128;
        let emb = self.vocab_size as u128 * d * if self.tie_word_embeddings { 1 } else { 2 };
        let bias = 2 * self.relative_attention_num_buckets as u128 * self.num_heads as u128;
        emb + bias
            + self.num_layers as u128 * (attn + ff + 2 * d)
            + self.num_decoder_layers as u128 * (2 * attn + ff + 3 * d)
            + 2 * d
    }

    /// Writes `config.json` in HF's layout.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        let m = v.as_object_mut().expect("object");
        m.insert(
            "architectures".into(),
            serde_json::json!(["T5ForConditionalGeneration"]),
        );
        m.insert("model_type".into(), "t5".into());
        m.insert("is_encoder_decoder".into(), true.into());
        m.insert(
            "dense_act_fn".into(),
            match self.feed_forward() {
                FeedForward::Relu => "relu".into(),
                FeedForward::GatedGelu => "gelu_new".into(),
            },
        );
        m.insert(
            "is_gated_act".into(),
            (self.feed_forward() == FeedForward::GatedGelu).into(),
        );
        m.insert(
            "scale_decoder_outputs".into(),
            self.scales_decoder_output().into(),
        );
        m.insert("initializer_factor".into(), 1.0.into());
        m.insert("use_cache".into(), true.into());
        m.insert("dtype".into(), "float32".into());
        v
    }
}
