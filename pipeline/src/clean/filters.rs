//! The document-level filters that run after line de-duplication: language
//! identification and the LDNOOBW bad-words filter (tfds `c4_utils.detect_english` and
//! `get_badwords_filter_fn`).

use std::collections::BTreeSet;
use std::path::Path;

use regex::{Regex, RegexBuilder};

use super::rules::{py_lower, py_strip};
use crate::error::PipelineError;

/// tfds's document-level bad-words filter: the regex
/// `(?:\W|^)(w1|w2|…)(?:\W|$)` over the lower-cased page, words escaped
/// (`get_badwords_filter_fn`, tfds ≥ 3.1.0), or without word boundaries for
/// ja/th/zh.
#[derive(Debug, Clone)]
pub struct BadWords {
    regex: Regex,
    words: usize,
}

impl BadWords {
    /// Builds the filter from a list of words (each stripped, duplicates
    /// removed, as tfds reads `en.txt`). `lang` decides the word boundaries.
    pub fn new<I, S>(words: I, lang: &str) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        // a blank line is no word (as a regex alternative it would match
        // every page)
        let set: BTreeSet<String> = words
            .into_iter()
            .map(|w| py_strip(w.as_ref()).to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if set.is_empty() {
            return Err("the list has no words (only blank lines)".into());
        }
        let alts: Vec<String> = set.iter().map(|w| regex::escape(w)).collect();
        let pattern = if matches!(lang, "ja" | "th" | "zh") {
            alts.join("|")
        } else {
            format!(r"(?:\W|^)({})(?:\W|$)", alts.join("|"))
        };
        let regex = RegexBuilder::new(&pattern)
            .size_limit(1 << 28)
            .dfa_size_limit(1 << 28)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(BadWords {
            regex,
            words: set.len(),
        })
    }

    /// Reads a list file, one word per line (LDNOOBW layout).
    pub fn load(path: &Path, lang: &str) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
        BadWords::new(text.lines(), lang).map_err(|m| PipelineError::Config {
            what: format!("bad-words list {}", path.display()),
            message: m,
        })
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.words
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// Whether the page holds a bad word (the page is then dropped).
    pub fn matches(&self, text: &str) -> bool {
        self.regex.is_match(&py_lower(text))
    }
}

/// Language identification with `whatlang` (trigram model, 69 languages).
///
/// C4 used langdetect (`p ≥ 0.99` for `en`); whatlang's confidence is on its
/// own scale, so the agreement with that rule is measured on the shared crawl
/// samples (see the clean reference tests and the closing notes of the
/// cleaning issue).
#[derive(Debug, Clone)]
pub struct LanguageFilter {
    lang: whatlang::Lang,
    min_confidence: f64,
    max_bytes: usize,
}

/// A language-ID verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanguageGuess {
    /// ISO 639-3 code of the best language, if any.
    pub lang: Option<&'static str>,
    /// whatlang's confidence in it (0..1).
    pub confidence: f64,
}

impl LanguageFilter {
    /// The filter `cfg` asks for (none when its `language` is empty).
    pub fn for_config(cfg: &super::CleanConfig) -> Result<Option<Self>, PipelineError> {
        if cfg.language.is_empty() {
            return Ok(None);
        }
        Self::new(
            &cfg.language,
            cfg.min_language_confidence,
            cfg.language_id_max_bytes,
        )
        .map(Some)
    }

    /// Keeps pages whose best language is `code` (ISO 639-1 or 639-3) with
    /// at least `min_confidence`; only the first `max_bytes` (0 = all) are read.
    pub fn new(code: &str, min_confidence: f64, max_bytes: usize) -> Result<Self, PipelineError> {
        let lang = lang_from_code(code).ok_or_else(|| PipelineError::Config {
            what: "language".into(),
            message: format!(
                "unknown language code {code:?} (use ISO 639-1 like \"en\" or 639-3 like \"eng\")"
            ),
        })?;
        Ok(LanguageFilter {
            lang,
            min_confidence,
            max_bytes,
        })
    }

    /// The best guess for `text`.
    pub fn guess(&self, text: &str) -> LanguageGuess {
        let t = if self.max_bytes > 0 && text.len() > self.max_bytes {
            let mut end = self.max_bytes;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            &text[..end]
        } else {
            text
        };
        match whatlang::detect(t) {
            Some(info) => LanguageGuess {
                lang: Some(info.lang().code()),
                confidence: info.confidence(),
            },
            None => LanguageGuess {
                lang: None,
                confidence: 0.0,
            },
        }
    }

    /// Whether the page is kept.
    pub fn keep(&self, text: &str) -> bool {
        let g = self.guess(text);
        g.lang == Some(self.lang.code()) && g.confidence >= self.min_confidence
    }
}

fn lang_from_code(code: &str) -> Option<whatlang::Lang> {
    let three = match code {
        "en" => "eng",
        "de" => "deu",
        "fr" => "fra",
        "es" => "spa",
        "it" => "ita",
        "pt" => "por",
        "nl" => "nld",
        "ru" => "rus",
        "zh" => "cmn",
        "ja" => "jpn",
        "ko" => "kor",
        "ar" => "ara",
        "pl" => "pol",
        "ro" => "ron",
        "tr" => "tur",
        "sv" => "swe",
        other => other,
    };
    whatlang::Lang::from_code(three)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badwords_need_word_boundaries() {
        let b = BadWords::new(["butt", "a.b"], "en").unwrap();
        assert!(b.matches("What a BUTT."));
        assert!(b.matches("butt"));
        assert!(!b.matches("a button"));
        assert!(b.matches("x a.b y"));
        assert!(!b.matches("x aXb y"), "words are escaped");
    }

    /// A blank line in the list is no word (it used to drop every page); a
    /// list of only blank lines is an error, not a filter that is off.
    #[test]
    fn blank_lines_are_not_bad_words() {
        let b = BadWords::new(["", "butt", "   ", ""], "en").unwrap();
        assert_eq!(b.len(), 1);
        assert!(!b.matches("An ordinary page about gardening."));
        assert!(b.matches("a butt"));
        assert!(BadWords::new(["", "  "], "en").is_err());
    }

    #[test]
    fn english_is_detected() {
        let f = LanguageFilter::new("en", 0.5, 0).unwrap();
        assert!(f.keep("This is a perfectly ordinary English sentence about the weather today."));
        assert!(!f.keep(
            "Rotkäppchen wohnt bei ihrer Mutter. An einem Morgen gibt die Mutter ihr einen Korb."
        ));
        assert!(LanguageFilter::new("xx-nope", 0.5, 0).is_err());
    }
}
