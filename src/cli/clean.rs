//! `t5mix clean`: arguments → `t5mix_pipeline::clean::run_clean`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use t5mix_pipeline::clean::output::prepare_out_dir;
use t5mix_pipeline::clean::{run_clean, BadWords, CleanConfig, CleanOptions, OutputFormat, Preset};
use t5mix_pipeline::readers::{expand_inputs, InputFormat, ReadOptions, TextUnit};

use super::progress::Bars;

/// Clean raw web text with the C4 rules.
///
/// Reads Common Crawl WET, JSONL(.gz), Parquet or plain text (detected by
/// content; `.gz` is transparent), applies tfds c4/en's rules in tfds order
/// (length, URL dedup, clean_page with NLTK Punkt sentence counts, global line
/// dedup, language ID, bad words) and writes shards plus manifest.json (with the run's statistics).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  t5mix clean data/crawl --out out/clean --badwords ../shared/data/ldnoobw/en.txt"
)]
pub struct CleanArgs {
    /// Input files, directories (read recursively) or glob patterns.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
    /// Output directory for the shards and manifest.json.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Rule preset to start from: c4 (tfds as it runs) or paper.
    #[arg(long, default_value = "c4")]
    preset: Preset,
    /// TOML file overriding any rule setting (keys as in `CleanConfig`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// LDNOOBW-style bad-words list (one word per line). Without it the filter is off.
    #[arg(long, value_name = "FILE")]
    badwords: Option<PathBuf>,
    /// Language of the bad-words list (ja/th/zh match without word boundaries).
    #[arg(long, default_value = "en", value_name = "LANG")]
    badwords_lang: String,

    /// Keep pages of this language ("en"); "none" turns language ID off.
    #[arg(long, value_name = "LANG")]
    language: Option<String>,
    /// Minimum language-ID confidence.
    #[arg(long, value_name = "P")]
    min_language_confidence: Option<f64>,
    /// Minimum Punkt sentences per page (0: off).
    #[arg(long, value_name = "N")]
    min_sentences: Option<usize>,
    /// Minimum words per line (0: off).
    #[arg(long, value_name = "N")]
    min_words: Option<usize>,
    /// Maximum word length in characters (0: off).
    #[arg(long, value_name = "N")]
    max_word_length: Option<usize>,
    /// Maximum page length in characters (0: off).
    #[arg(long, value_name = "N")]
    max_page_chars: Option<usize>,
    /// Keep every page of a URL (no newest-page URL dedup).
    #[arg(long)]
    no_url_dedup: bool,
    /// No global line de-duplication.
    #[arg(long)]
    no_line_dedup: bool,
    /// Keep citation markers like [1] and [edit].
    #[arg(long)]
    no_citation_removal: bool,
    /// Do not require terminal punctuation.
    #[arg(long)]
    no_end_marks: bool,
    /// Do not drop pages mentioning lorem ipsum.
    #[arg(long)]
    no_lorem_ipsum: bool,
    /// Do not drop lines mentioning javascript.
    #[arg(long)]
    no_javascript: bool,
    /// Do not drop pages containing '{'.
    #[arg(long)]
    no_curly_bracket: bool,
    /// Do not drop lines with policy phrases (cookies, terms of use).
    #[arg(long)]
    no_policy: bool,

    /// Input format: auto (detect by content), wet, jsonl, parquet or text.
    #[arg(long, default_value = "auto")]
    format: InputFormat,
    /// JSONL/Parquet text field (dotted path for nested JSON).
    #[arg(long, default_value = "text")]
    text_field: String,
    /// JSONL/Parquet URL field (missing: FILE#RECORD).
    #[arg(long, default_value = "url")]
    url_field: String,
    /// JSONL/Parquet timestamp field.
    #[arg(long, default_value = "timestamp")]
    timestamp_field: String,
    /// How plain text is cut into documents: file or paragraph.
    #[arg(long, default_value = "file")]
    text_unit: TextUnit,
    /// Any bad input (malformed record, invalid UTF-8, truncated gzip, empty file) is an error.
    #[arg(long)]
    strict: bool,

    /// Output format: parquet or jsonl (gzip).
    #[arg(long, default_value = "parquet")]
    output_format: OutputFormat,
    /// Pages per output shard.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pages_per_shard: usize,
    /// Memory for cleaned pages between the passes (MB); beyond it pages
    /// are spilled to temporary files inside --out.
    #[arg(long, default_value_t = 1024, value_name = "MB")]
    memory_budget_mb: u64,
    /// Replace shards left in --out by an earlier run.
    #[arg(long)]
    overwrite: bool,
}

fn build_config(a: &CleanArgs) -> Result<CleanConfig> {
    let base = CleanConfig::preset(a.preset);
    let mut c = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            CleanConfig::from_toml_over(&base, &text)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?
        }
        None => base,
    };
    if let Some(l) = &a.language {
        c.language = if l == "none" {
            String::new()
        } else {
            l.clone()
        };
    }
    if let Some(v) = a.min_language_confidence {
        c.min_language_confidence = v;
    }
    if let Some(v) = a.min_sentences {
        c.min_num_sentences = v;
    }
    if let Some(v) = a.min_words {
        c.min_words_per_line = v;
    }
    if let Some(v) = a.max_word_length {
        c.max_word_length = v;
    }
    if let Some(v) = a.max_page_chars {
        c.max_page_chars = v;
    }
    c.url_dedup &= !a.no_url_dedup;
    c.line_dedup &= !a.no_line_dedup;
    c.remove_citations &= !a.no_citation_removal;
    if a.no_end_marks {
        c.end_marks.clear();
        c.drop_ellipsis_lines = false;
    }
    c.drop_lorem_ipsum_pages &= !a.no_lorem_ipsum;
    c.drop_javascript_lines &= !a.no_javascript;
    c.drop_curly_bracket_pages &= !a.no_curly_bracket;
    if a.no_policy {
        c.policy_substrings.clear();
    }
    Ok(c)
}

pub fn run(a: CleanArgs, quiet: bool) -> Result<()> {
    let config = build_config(&a)?;
    let inputs = expand_inputs(&a.inputs)?;
    prepare_out_dir(&a.out, a.overwrite)?;
    let badwords = match &a.badwords {
        Some(p) => Some(BadWords::load(p, &a.badwords_lang)?),
        None => None,
    };
    let opts = CleanOptions {
        config,
        read: ReadOptions {
            format: a.format,
            text_field: a.text_field.clone(),
            url_field: a.url_field.clone(),
            timestamp_field: a.timestamp_field.clone(),
            text_unit: a.text_unit,
            strict: a.strict,
        },
        badwords,
        out_dir: a.out.clone(),
        output_format: a.output_format,
        pages_per_shard: a.pages_per_shard,
        batch_pages: 256,
        memory_budget: a.memory_budget_mb << 20,
    };
    let bars = Bars::new(quiet);
    let stats = run_clean(&inputs, &opts, &bars)?;
    bars.finish();
    eprintln!("{stats} to {}", a.out.display());
    Ok(())
}
