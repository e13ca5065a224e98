//! T5's supervised text formats (`t5.data.preprocessors`: `glue`, `stsb`, `squad`, `summarize`, `translate`):
//! the strings a task's examples become before tokenization.
//!
//! ```
//! use t5mix_tasks::formats::{glue, GlueBenchmark};
//! let (inputs, targets) = glue(GlueBenchmark::Rte, &[("sentence1", "A."), ("sentence2", "B.")], 1);
//! assert_eq!(inputs, "rte sentence1: A. sentence2: B.");
//! assert_eq!(targets, "not_entailment");
//! ```

use std::sync::OnceLock;

use regex::Regex;

/// The GLUE benchmarks as T5 formats them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlueBenchmark {
    /// Corpus of Linguistic Acceptability.
    Cola,
    /// Stanford Sentiment Treebank.
    Sst2,
    /// Microsoft Research Paraphrase Corpus.
    Mrpc,
    /// Quora Question Pairs.
    Qqp,
    /// Multi-Genre NLI (also its matched/mismatched sets and the AX diagnostics).
    Mnli,
    /// Question NLI.
    Qnli,
    /// Recognizing Textual Entailment.
    Rte,
    /// Winograd NLI.
    Wnli,
}

impl GlueBenchmark {
    /// The prefix T5 writes (`benchmark_name`).
    pub fn name(self) -> &'static str {
        match self {
            GlueBenchmark::Cola => "cola",
            GlueBenchmark::Sst2 => "sst2",
            GlueBenchmark::Mrpc => "mrpc",
            GlueBenchmark::Qqp => "qqp",
            GlueBenchmark::Mnli => "mnli",
            GlueBenchmark::Qnli => "qnli",
            GlueBenchmark::Rte => "rte",
            GlueBenchmark::Wnli => "wnli",
        }
    }

    /// Label strings by class id (tfds `label_classes`).
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            GlueBenchmark::Cola => &["unacceptable", "acceptable"],
            GlueBenchmark::Sst2 => &["negative", "positive"],
            GlueBenchmark::Mrpc => &["not_equivalent", "equivalent"],
            GlueBenchmark::Qqp => &["not_duplicate", "duplicate"],
            GlueBenchmark::Mnli => &["entailment", "neutral", "contradiction"],
            GlueBenchmark::Qnli | GlueBenchmark::Rte => &["entailment", "not_entailment"],
            GlueBenchmark::Wnli => &["not_entailment", "entailment"],
        }
    }

    /// The text features, in the order T5 writes them (sorted by name).
    pub fn feature_names(self) -> &'static [&'static str] {
        match self {
            GlueBenchmark::Cola | GlueBenchmark::Sst2 => &["sentence"],
            GlueBenchmark::Mrpc | GlueBenchmark::Rte | GlueBenchmark::Wnli => {
                &["sentence1", "sentence2"]
            }
            GlueBenchmark::Qqp => &["question1", "question2"],
            GlueBenchmark::Mnli => &["hypothesis", "premise"],
            GlueBenchmark::Qnli => &["question", "sentence"],
        }
    }

    /// The benchmark of a tfds `glue` config name (`ax` and `mnli_*` are MNLI).
    pub fn from_config(config: &str) -> Option<Self> {
        Some(match config {
            "cola" => GlueBenchmark::Cola,
            "sst2" => GlueBenchmark::Sst2,
            "mrpc" => GlueBenchmark::Mrpc,
            "qqp" => GlueBenchmark::Qqp,
            "mnli" | "mnli_matched" | "mnli_mismatched" | "ax" => GlueBenchmark::Mnli,
            "qnli" => GlueBenchmark::Qnli,
            "rte" => GlueBenchmark::Rte,
            "wnli" => GlueBenchmark::Wnli,
            _ => return None,
        })
    }
}

/// `preprocessors.glue`: `"<benchmark> <key>: <text> …"` with the features
/// in the given order (no whitespace normalisation), and the label name as
/// target (`<unk>` for −1, the unlabeled test sets).
pub fn glue(benchmark: GlueBenchmark, features: &[(&str, &str)], label: i64) -> (String, String) {
    let mut inputs = benchmark.name().to_string();
    for (k, v) in features {
        inputs.push(' ');
        inputs.push_str(k);
        inputs.push_str(": ");
        inputs.push_str(v);
    }
    let names = benchmark.label_names();
    let targets = if label < 0 || label as usize >= names.len() {
        "<unk>".to_string()
    } else {
        names[label as usize].to_string()
    };
    (inputs, targets)
}

/// STS-B inputs: `"stsb sentence1: … sentence2: …"`.
pub fn stsb_inputs(sentence1: &str, sentence2: &str) -> String {
    format!("stsb sentence1: {sentence1} sentence2: {sentence2}")
}

/// T5's STS-B target (`preprocessors.stsb`, 26 classes): in float32,
/// `round_half_even(label·5)/5`, printed with one decimal.
pub fn stsb_target_t5(label: f32) -> String {
    let v = (label * 5.0).round_ties_even() / 5.0;
    format!("{:.1}", v as f64)
}

/// STS-B bucketed to `classes` evenly spaced values over [0, 5] (step
/// 5/(classes−1), rounding half to even), printed with the decimals the step
/// needs (at least one): 21 classes give "0.0", "0.25", …, "5.0". 26 classes
/// give exactly T5's labels ([`stsb_target_t5`]).
pub fn stsb_target(label: f32, classes: u32) -> String {
    if classes == 26 {
        return stsb_target_t5(label);
    }
    let classes = classes.max(2);
    let steps = (classes - 1) as f64;
    let k = (label as f64 * steps / 5.0)
        .round_ties_even()
        .clamp(0.0, steps);
    let v = k * 5.0 / steps;
    // Decimals of the step: enough to print every grid value exactly.
    let mut decimals = 1;
    while decimals < 6 {
        let scaled = 5.0 / steps * 10f64.powi(decimals);
        if (scaled - scaled.round()).abs() < 1e-9 {
            break;
        }
        decimals += 1;
    }
    let s = format!("{v:.decimals$}", decimals = decimals as usize);
    let trimmed = s.trim_end_matches('0');
    if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_string()
    }
}

/// Parses a predicted STS-B label back (`string_to_float`, −1 if unparsable).
pub fn parse_float_or(s: &str, default: f64) -> f64 {
    s.trim().parse().unwrap_or(default)
}

/// English names of the languages T5 translates between (babel's names).
pub fn language_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "en" => "English",
        "de" => "German",
        "fr" => "French",
        "ro" => "Romanian",
        "es" => "Spanish",
        "it" => "Italian",
        "ru" => "Russian",
        "zh" => "Chinese",
        "ja" => "Japanese",
        "cs" => "Czech",
        "fi" => "Finnish",
        "tr" => "Turkish",
        _ => return None,
    })
}

/// `preprocessors.translate`: `"translate English to German: <source>"`,
/// the target text as is.
pub fn translate(
    source_language: &str,
    target_language: &str,
    source: &str,
    target: &str,
) -> Option<(String, String)> {
    Some((
        format!(
            "translate {} to {}: {source}",
            language_name(source_language)?,
            language_name(target_language)?
        ),
        target.to_string(),
    ))
}

/// `preprocessors.summarize`: `"summarize: <article>"`, the summary as target.
pub fn summarize(article: &str, summary: &str) -> (String, String) {
    (format!("summarize: {article}"), summary.to_string())
}

fn regexes() -> &'static (Regex, Regex) {
    static R: OnceLock<(Regex, Regex)> = OnceLock::new();
    R.get_or_init(|| {
        (
            // RE2 as TF runs it: any character that is not _, whitespace,
            // number, letter or mark gets spaces around it.
            Regex::new(r"([^_\s\p{N}\p{L}\p{M}])").unwrap(),
            // RE2's \s is ASCII: [\t\n\f\r ].
            Regex::new(r"[\t\n\x0c\r ]+").unwrap(),
        )
    })
}

/// T5's `_pad_punctuation`: spaces around punctuation, whitespace runs
/// collapsed (ends not stripped).
pub fn pad_punctuation(text: &str) -> String {
    let (punct, ws) = regexes();
    let padded = punct.replace_all(text, " $1 ");
    ws.replace_all(&padded, " ").into_owned()
}

/// `preprocessors.squad`: `"question: <q> context: <c>"` (or
/// `"squad trivia question: <q>"` without context) with padded punctuation;
/// the first (padded) answer as target.
pub fn squad(
    question: &str,
    context: &str,
    first_answer: &str,
    include_context: bool,
) -> (String, String) {
    let q = pad_punctuation(question);
    let parts = if include_context {
        format!("question: {q} context: {}", pad_punctuation(context))
    } else {
        format!("squad trivia question: {q}")
    };
    let (_, ws) = regexes();
    (
        ws.replace_all(&parts, " ").into_owned(),
        pad_punctuation(first_answer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stsb_21_classes() {
        let got: Vec<String> = [0.0f32, 0.1, 0.13, 0.37, 2.5, 4.9, 5.0]
            .iter()
            .map(|&x| stsb_target(x, 21))
            .collect();
        assert_eq!(got, vec!["0.0", "0.0", "0.25", "0.25", "2.5", "5.0", "5.0"]);
        let all: std::collections::BTreeSet<String> = (0..=500)
            .map(|i| stsb_target(i as f32 / 100.0, 21))
            .collect();
        assert_eq!(all.len(), 21);
    }

    #[test]
    fn squad_padding() {
        let (i, t) = squad("Who won in 1858?", "He did.", "1858.", true);
        assert_eq!(i, "question: Who won in 1858 ? context: He did . ");
        assert_eq!(t, "1858 . ");
    }
}
