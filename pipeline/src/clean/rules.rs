//! tfds `c4_utils.clean_page`: the per-line and per-page C4 rules.
//!
//! Text handling follows Python's `str` methods exactly, since that is what
//! C4 ran: `splitlines()` (which also breaks on `\r`, `\x0b`, `\x0c`,
//! `\x1c`–`\x1e`, `\x85`, U+2028, U+2029), `strip()`/`split()` on
//! `str.isspace` characters, lengths in code points.

use std::borrow::Cow;

use regex::Regex;
use serde::Serialize;

use super::config::CleanConfig;
use super::punkt::{is_py_space, SentenceTokenizer};

/// Why a line was dropped (tfds counter names in `name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum LineRule {
    /// A word longer than `max_word_length`.
    TooLongWord,
    /// No terminal punctuation, or ends with `...`.
    NoEndmark,
    /// Fewer than `min_words_per_line` words.
    TooShort,
    /// Contains `javascript`.
    Javascript,
    /// Contains a policy phrase.
    Policy,
    /// A line kept by another page (global line dedup).
    GlobalDuplicate,
    /// A repeat of a line earlier in the same page.
    LocalDuplicate,
}

impl LineRule {
    /// All rules, in counter order.
    pub const ALL: [LineRule; 7] = [
        LineRule::TooLongWord,
        LineRule::NoEndmark,
        LineRule::TooShort,
        LineRule::Javascript,
        LineRule::Policy,
        LineRule::GlobalDuplicate,
        LineRule::LocalDuplicate,
    ];
    /// The counter name tfds uses.
    pub fn name(self) -> &'static str {
        match self {
            LineRule::TooLongWord => "too_long_word",
            LineRule::NoEndmark => "no_endmark",
            LineRule::TooShort => "too_short",
            LineRule::Javascript => "javascript",
            LineRule::Policy => "policy",
            LineRule::GlobalDuplicate => "global_duplicate",
            LineRule::LocalDuplicate => "local_duplicate",
        }
    }
}

/// Why a page was dropped, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PageRule {
    /// Longer than `max_page_chars`.
    TooLong,
    /// An older page with the same normalized URL exists... or a newer one won.
    DuplicateUrl,
    /// A line mentions lorem ipsum.
    LoremIpsum,
    /// A line holds `{`.
    CurlyBracket,
    /// Fewer than `min_num_sentences` after line cleaning.
    TooFewSentences,
    /// Nothing left after line de-duplication.
    DedupEmpty,
    /// Fewer than `min_num_sentences` after line de-duplication.
    DedupTooFewSentences,
    /// Not the requested language with enough confidence.
    Language,
    /// Contains a word of the bad-words list.
    Badwords,
}

impl PageRule {
    /// All rules, in pipeline order.
    pub const ALL: [PageRule; 9] = [
        PageRule::TooLong,
        PageRule::DuplicateUrl,
        PageRule::LoremIpsum,
        PageRule::CurlyBracket,
        PageRule::TooFewSentences,
        PageRule::DedupEmpty,
        PageRule::DedupTooFewSentences,
        PageRule::Language,
        PageRule::Badwords,
    ];
    /// Stable snake-case name for stats.
    pub fn name(self) -> &'static str {
        match self {
            PageRule::TooLong => "too_long",
            PageRule::DuplicateUrl => "duplicate_url",
            PageRule::LoremIpsum => "lorem_ipsum",
            PageRule::CurlyBracket => "curly_bracket",
            PageRule::TooFewSentences => "too_few_sentences",
            PageRule::DedupEmpty => "dedup_empty",
            PageRule::DedupTooFewSentences => "dedup_too_few_sentences",
            PageRule::Language => "language",
            PageRule::Badwords => "badwords",
        }
    }
}

/// Per-rule line and page counters; add them up with [`RuleCounters::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleCounters {
    /// Lines dropped, indexed like [`LineRule::ALL`].
    pub lines_dropped: [u64; 7],
    /// Lines that passed `clean_page`.
    pub lines_passed: u64,
    /// Pages dropped, indexed like [`PageRule::ALL`].
    pub pages_dropped: [u64; 9],
}

impl RuleCounters {
    /// Counts a dropped line.
    pub fn line(&mut self, r: LineRule) {
        self.lines_dropped[r as usize] += 1;
    }
    /// Counts a dropped page.
    pub fn page(&mut self, r: PageRule) {
        self.pages_dropped[r as usize] += 1;
    }
    /// Lines dropped by `r`.
    pub fn lines(&self, r: LineRule) -> u64 {
        self.lines_dropped[r as usize]
    }
    /// Pages dropped by `r`.
    pub fn pages(&self, r: PageRule) -> u64 {
        self.pages_dropped[r as usize]
    }
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &RuleCounters) {
        for (a, b) in self.lines_dropped.iter_mut().zip(o.lines_dropped) {
            *a += b;
        }
        for (a, b) in self.pages_dropped.iter_mut().zip(o.pages_dropped) {
            *a += b;
        }
        self.lines_passed += o.lines_passed;
    }
}

/// Python's `str.splitlines()` (no keepends).
pub fn py_splitlines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let brk = match b {
                b'\n' | 0x0b | 0x0c | 0x1c | 0x1d | 0x1e => Some(1),
                b'\r' => Some(if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                }),
                0xc2 if bytes.get(i + 1) == Some(&0x85) => Some(2),
                0xe2 if bytes.get(i + 1) == Some(&0x80)
                    && matches!(bytes.get(i + 2), Some(&0xa8) | Some(&0xa9)) =>
                {
                    Some(3)
                }
                _ => None,
            };
            if let Some(n) = brk {
                let line = &rest[..i];
                rest = &rest[i + n..];
                return Some(line);
            }
            i += 1;
        }
        let line = rest;
        rest = "";
        Some(line)
    })
}

/// Python's `str.strip()`.
#[inline]
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.split()` (runs of `str.isspace` characters).
#[inline]
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// Python's `str.lower()`, borrowing when nothing changes.
pub fn py_lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Case-insensitive substring tests as Python's `needle in line.lower()`,
/// for lower-case needles.
///
/// When every needle is ASCII and the line holds neither U+0130 nor U+212A
/// (the only non-ASCII characters whose lower case contains ASCII letters),
/// lower-casing the ASCII bytes alone gives the same answers without a
/// Unicode case mapping.
#[derive(Debug, Clone)]
struct LowerMatcher {
    lorem: memchr::memmem::Finder<'static>,
    javascript: memchr::memmem::Finder<'static>,
    policy: Vec<memchr::memmem::Finder<'static>>,
    ascii_needles: bool,
}

impl LowerMatcher {
    fn new(policy: &[String]) -> Self {
        LowerMatcher {
            lorem: memchr::memmem::Finder::new(b"lorem ipsum").into_owned(),
            javascript: memchr::memmem::Finder::new(b"javascript").into_owned(),
            policy: policy
                .iter()
                .map(|p| memchr::memmem::Finder::new(p.as_bytes()).into_owned())
                .collect(),
            ascii_needles: policy.iter().all(|p| p.is_ascii()),
        }
    }

    /// The bytes to search: ASCII-lower-cased, or fully lower-cased.
    fn lower<'b>(&self, line: &str, buf: &'b mut Vec<u8>) -> &'b [u8] {
        buf.clear();
        let bytes = line.as_bytes();
        let fast = self.ascii_needles
            && (line.is_ascii()
                || (memchr::memmem::find(bytes, "\u{130}".as_bytes()).is_none()
                    && memchr::memmem::find(bytes, "\u{212a}".as_bytes()).is_none()));
        if fast {
            buf.extend(bytes.iter().map(u8::to_ascii_lowercase));
        } else {
            buf.extend_from_slice(line.to_lowercase().as_bytes());
        }
        buf
    }
}

/// The compiled form of a [`CleanConfig`]'s line and page rules.
#[derive(Debug, Clone)]
pub struct PageCleaner {
    cfg: CleanConfig,
    citation: Regex,
    sentences: &'static SentenceTokenizer,
    matcher: LowerMatcher,
}

/// The outcome of [`PageCleaner::clean_page`] for one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    /// The cleaned text and its sentence count.
    Kept {
        /// Kept lines joined with `\n`, stripped.
        text: String,
        /// Sum of the Punkt sentence counts of the kept lines, counted up to
        /// `min_num_sentences` (all of them when sentence counts are asked for).
        num_sentences: usize,
    },
    /// Dropped by this page rule.
    Dropped(PageRule),
}

impl PageCleaner {
    /// Compiles the rules of `cfg`.
    pub fn new(cfg: CleanConfig) -> Self {
        PageCleaner {
            citation: Regex::new(r"\[\d*\]|\[edit\]|\[citation needed\]").unwrap(),
            sentences: SentenceTokenizer::english(),
            matcher: LowerMatcher::new(&cfg.policy_substrings),
            cfg,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CleanConfig {
        &self.cfg
    }

    /// The sentence tokenizer (NLTK English Punkt).
    pub fn sentence_tokenizer(&self) -> &SentenceTokenizer {
        self.sentences
    }

    /// `is_valid_length`: at most `max_page_chars` characters.
    pub fn valid_length(&self, text: &str) -> bool {
        let max = self.cfg.max_page_chars;
        // A byte count at or under the limit is a char count under it.
        max == 0 || text.len() <= max || text.chars().count() <= max
    }

    /// tfds `clean_page`: drops lines and perhaps the page; counts every
    /// decision in `counters`. `sentence_counts`, if given, receives the Punkt
    /// count of each kept line.
    pub fn clean_page(
        &self,
        text: &str,
        counters: &mut RuleCounters,
        mut sentence_counts: Option<&mut Vec<usize>>,
    ) -> Cleaned {
        let cfg = &self.cfg;
        let mut kept: Vec<Cow<str>> = Vec::new();
        let mut num_sentences = 0usize;
        let mut lower_buf = Vec::new();
        for raw in py_splitlines(text) {
            let line = py_strip(raw);
            // A line no longer than the limit cannot hold a longer word.
            if cfg.max_word_length > 0
                && line.len() > cfg.max_word_length
                && py_split(line).any(|w| {
                    w.len() > cfg.max_word_length && w.chars().count() > cfg.max_word_length
                })
            {
                counters.line(LineRule::TooLongWord);
                continue;
            }
            let line: Cow<str> = if cfg.remove_citations && line.contains('[') {
                self.citation.replace_all(line, "")
            } else {
                Cow::Borrowed(line)
            };
            if !cfg.end_marks.is_empty()
                && !cfg.end_marks.iter().any(|m| line.ends_with(m.as_str()))
                || cfg.drop_ellipsis_lines && line.ends_with("...")
            {
                counters.line(LineRule::NoEndmark);
                continue;
            }
            if cfg.min_words_per_line > 0
                && py_split(&line).take(cfg.min_words_per_line).count() < cfg.min_words_per_line
            {
                counters.line(LineRule::TooShort);
                continue;
            }
            let m = &self.matcher;
            let lower = m.lower(&line, &mut lower_buf);
            if cfg.drop_lorem_ipsum_pages && m.lorem.find(lower).is_some() {
                return Cleaned::Dropped(PageRule::LoremIpsum);
            }
            if cfg.drop_javascript_lines && m.javascript.find(lower).is_some() {
                counters.line(LineRule::Javascript);
                continue;
            }
            if cfg.drop_curly_bracket_pages && line.contains('{') {
                return Cleaned::Dropped(PageRule::CurlyBracket);
            }
            if m.policy.iter().any(|p| p.find(lower).is_some()) {
                counters.line(LineRule::Policy);
                continue;
            }
            // Only `num_sentences < min_num_sentences` matters for the page,
            // so counting stops once the minimum is reached (unless the
            // caller asked for every line's count).
            if let Some(v) = sentence_counts.as_deref_mut() {
                let n = self.sentences.count_sentences(&line);
                num_sentences += n;
                v.push(n);
            } else if num_sentences < cfg.min_num_sentences {
                num_sentences += self
                    .sentences
                    .count_sentences_up_to(&line, cfg.min_num_sentences - num_sentences);
            }
            counters.lines_passed += 1;
            kept.push(line);
        }
        if num_sentences < cfg.min_num_sentences {
            return Cleaned::Dropped(PageRule::TooFewSentences);
        }
        let mut out = String::with_capacity(kept.iter().map(|l| l.len() + 1).sum());
        for (i, l) in kept.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(l);
        }
        let stripped = py_strip(&out);
        if stripped.len() != out.len() {
            out = stripped.to_string();
        }
        Cleaned::Kept {
            text: out,
            num_sentences,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_matches_python() {
        let v: Vec<&str> = py_splitlines("a\nb\r\nc\rd\x0be\u{2028}f\n\ng\n").collect();
        assert_eq!(v, vec!["a", "b", "c", "d", "e", "f", "", "g"]);
        assert_eq!(py_splitlines("").count(), 0);
        assert_eq!(py_strip("\x1c a \u{a0}"), "a");
    }
}
