//! The knobs of the C4 cleaner, with the two presets.

use serde::{Deserialize, Serialize};

/// Which reading of the C4 rules to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// tfds `c4_utils` as it runs (the default): 3 sentences per page, 5 words per line.
    #[default]
    C4,
    /// The "5 sentences / 3 words" reading quoted by datatrove and some copies of
    /// the T5 paper (its wording, not `c4_utils`'s constants).
    Paper,
}

/// Every rule of the C4 cleaner, each with its switch and constant.
///
/// Defaults are tfds `c4_utils` (`Preset::C4`). A TOML file with any subset of
/// these keys overrides them (`t5mix clean --config clean.toml`); unknown keys
/// are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanConfig {
    /// Pages longer than this many characters are dropped (`is_valid_length`, 1.9e5); 0: off.
    pub max_page_chars: usize,
    /// Lines with a whitespace-separated word longer than this are dropped (1000); 0: off.
    pub max_word_length: usize,
    /// Remove `[1]`, `[edit]`, `[citation needed]` markers.
    pub remove_citations: bool,
    /// Lines must end with one of these (`.`, `?`, `!`, `"`); empty list: off.
    pub end_marks: Vec<String>,
    /// Lines ending with `...` are dropped.
    pub drop_ellipsis_lines: bool,
    /// Minimum whitespace-separated words per line (5); 0: off.
    pub min_words_per_line: usize,
    /// A line containing `lorem ipsum` drops the page.
    pub drop_lorem_ipsum_pages: bool,
    /// Lines containing `javascript` are dropped.
    pub drop_javascript_lines: bool,
    /// A line containing `{` drops the page.
    pub drop_curly_bracket_pages: bool,
    /// Lines containing any of these (lower-cased) are dropped.
    pub policy_substrings: Vec<String>,
    /// Minimum Punkt sentences per page (3); 0: off.
    pub min_num_sentences: usize,
    /// Keep only the newest page per normalized URL.
    pub url_dedup: bool,
    /// Global exact line de-duplication (`remove_duplicate_text`).
    pub line_dedup: bool,
    /// Language filter: keep pages detected as this language (ISO 639-1, "en");
    /// empty: off.
    pub language: String,
    /// Minimum language-ID confidence (whatlang's scale). C4 asks langdetect
    /// for p ≥ 0.99; with whatlang, 0.5 on the first 2000 bytes agrees best
    /// with that rule on the shared crawl (411 of 411 pages; 0.99 on whole
    /// pages: 410 of 411), see `tests/c4_reference.rs`.
    pub min_language_confidence: f64,
    /// Bytes of the page given to language ID (0: all of it). langdetect
    /// itself reads at most 10,000 characters.
    pub language_id_max_bytes: usize,
    /// A page is in the validation split when md5(normalized url) % this == 0 (1000).
    pub validation_modulus: u64,
}

impl Default for CleanConfig {
    fn default() -> Self {
        Self::preset(Preset::C4)
    }
}

/// The policy phrases of tfds `_POLICY_SUBSTRINGS`.
pub const POLICY_SUBSTRINGS: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

impl CleanConfig {
    /// The configuration of a preset.
    pub fn preset(preset: Preset) -> Self {
        let mut c = CleanConfig {
            max_page_chars: 190_000,
            max_word_length: 1000,
            remove_citations: true,
            end_marks: [".", "?", "!", "\""]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            drop_ellipsis_lines: true,
            min_words_per_line: 5,
            drop_lorem_ipsum_pages: true,
            drop_javascript_lines: true,
            drop_curly_bracket_pages: true,
            policy_substrings: POLICY_SUBSTRINGS.iter().map(|s| s.to_string()).collect(),
            min_num_sentences: 3,
            url_dedup: true,
            line_dedup: true,
            language: "en".to_string(),
            min_language_confidence: 0.5,
            language_id_max_bytes: 2000,
            validation_modulus: 1000,
        };
        if preset == Preset::Paper {
            c.min_num_sentences = 5;
            c.min_words_per_line = 3;
        }
        c
    }

    /// Reads a TOML file of overrides on top of `base`.
    pub fn from_toml_over(base: &CleanConfig, toml_text: &str) -> Result<Self, String> {
        // Parse once on its own so that unknown keys and type errors are
        // reported with their line and column.
        toml::from_str::<CleanConfig>(toml_text).map_err(|e| e.to_string())?;
        let base_value = toml::Value::try_from(base).map_err(|e| e.to_string())?;
        let over: toml::Value = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let mut merged = base_value;
        if let (Some(m), toml::Value::Table(o)) = (merged.as_table_mut(), over) {
            for (k, v) in o {
                m.insert(k, v);
            }
        }
        let c: CleanConfig = merged
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    /// Applies `key=value` settings (`t5mix clean --set`): the keys of the
    /// TOML file, values in TOML syntax (`true`, `3`, `0.5`, `[".", "!"]`)
    /// or plain text for strings (`language=de`).
    pub fn with_settings(&self, settings: &[String]) -> Result<Self, String> {
        let mut toml_text = String::new();
        for s in settings {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("--set {s:?}: use KEY=VALUE (e.g. line_dedup=false)"))?;
            let (k, v) = (k.trim(), v.trim());
            let line = format!("{k} = {v}\n");
            let line = match toml::from_str::<toml::Table>(&line) {
                Ok(_) => line,
                Err(_) => format!("{k} = {}\n", toml::Value::String(v.to_string())),
            };
            toml_text.push_str(&line);
        }
        Self::from_toml_over(self, &toml_text).map_err(|e| format!("--set: {e}"))
    }

    /// The configuration as TOML (`t5mix clean --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// Every value in its range: confidences in [0, 1], a positive modulus.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.min_language_confidence) {
            return Err(format!(
                "min_language_confidence {}: must be in [0, 1]",
                self.min_language_confidence
            ));
        }
        if self.validation_modulus == 0 {
            return Err("validation_modulus must be at least 1".into());
        }
        Ok(())
    }
}

crate::from_name!(Preset, "preset", ["c4", "paper"]);
