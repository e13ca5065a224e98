//! `t5mix clean`: arguments → `t5mix_pipeline::clean::run_clean`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use t5mix_pipeline::clean::{
    run_clean, BadWords, CleanConfig, CleanOptions, CleanStats, OutputFormat, Preset,
};
use t5mix_pipeline::readers::{expand_inputs, InputFormat, ReadOptions, TextUnit};

use super::progress::Bars;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PresetArg {
    /// tfds c4_utils as it runs: ≥ 3 sentences per page, ≥ 5 words per line.
    C4,
    /// The "5 sentences / 3 words" reading of the T5 paper quoted by datatrove.
    Paper,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Wet,
    Jsonl,
    Parquet,
    Text,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputArg {
    Parquet,
    Jsonl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TextUnitArg {
    /// The whole file is one document.
    File,
    /// Each blank-line-separated block is a document.
    Paragraph,
}

/// Clean raw web text with the C4 rules.
///
/// Reads Common Crawl WET, JSONL(.gz), Parquet or plain text (detected by
/// content; `.gz` is transparent), applies tfds c4/en's rules in tfds order
/// (length, URL dedup, clean_page with NLTK Punkt sentence counts, global line
/// dedup, language ID, bad words) and writes shards plus stats.json.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  t5mix clean data/crawl --out out/clean --badwords ../shared/data/ldnoobw/en.txt"
)]
pub struct CleanArgs {
    /// Input files, directories (read recursively) or glob patterns.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
    /// Output directory for the shards and stats.json.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Rule preset to start from.
    #[arg(long, value_enum, default_value = "c4")]
    preset: PresetArg,
    /// TOML file overriding any rule setting (keys as in stats.json's config).
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

    /// Input format (default: detect by content).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// JSONL/Parquet text field (dotted path for nested JSON).
    #[arg(long, default_value = "text")]
    text_field: String,
    /// JSONL/Parquet URL field (missing: FILE#RECORD).
    #[arg(long, default_value = "url")]
    url_field: String,
    /// JSONL/Parquet timestamp field.
    #[arg(long, default_value = "timestamp")]
    timestamp_field: String,
    /// How plain text is cut into documents.
    #[arg(long, value_enum, default_value = "file")]
    text_unit: TextUnitArg,
    /// Any bad input (malformed record, invalid UTF-8, truncated gzip, empty file) is an error.
    #[arg(long)]
    strict: bool,

    /// Output format.
    #[arg(long, value_enum, default_value = "parquet")]
    output_format: OutputArg,
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
    let base = CleanConfig::preset(match a.preset {
        PresetArg::C4 => Preset::C4,
        PresetArg::Paper => Preset::Paper,
    });
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

fn check_out_dir(a: &CleanArgs) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(&a.out) else {
        return Ok(());
    };
    let stale: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("part-") || n == "stats.json"
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    if !a.overwrite {
        bail!(
            "{} already holds shards of an earlier run ({} files); pass --overwrite to replace them",
            a.out.display(),
            stale.len()
        );
    }
    for p in stale {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

pub fn run(a: CleanArgs, quiet: bool) -> Result<()> {
    let config = build_config(&a)?;
    let inputs = expand_inputs(&a.inputs)?;
    check_out_dir(&a)?;
    let badwords = match &a.badwords {
        Some(p) => Some(BadWords::load(p, &a.badwords_lang)?),
        None => None,
    };
    let opts = CleanOptions {
        config,
        read: ReadOptions {
            format: match a.format {
                FormatArg::Auto => InputFormat::Auto,
                FormatArg::Wet => InputFormat::Wet,
                FormatArg::Jsonl => InputFormat::Jsonl,
                FormatArg::Parquet => InputFormat::Parquet,
                FormatArg::Text => InputFormat::Text,
            },
            text_field: a.text_field.clone(),
            url_field: a.url_field.clone(),
            timestamp_field: a.timestamp_field.clone(),
            text_unit: match a.text_unit {
                TextUnitArg::File => TextUnit::File,
                TextUnitArg::Paragraph => TextUnit::Paragraph,
            },
            strict: a.strict,
        },
        badwords,
        out_dir: a.out.clone(),
        output_format: match a.output_format {
            OutputArg::Parquet => OutputFormat::Parquet,
            OutputArg::Jsonl => OutputFormat::Jsonl,
        },
        pages_per_shard: a.pages_per_shard,
        batch_pages: 256,
        memory_budget: a.memory_budget_mb << 20,
    };
    let bars = Bars::new(quiet);
    let stats = run_clean(&inputs, &opts, &bars)?;
    bars.finish();
    print_summary(&stats, &a.out);
    Ok(())
}

fn print_summary(s: &CleanStats, out: &std::path::Path) {
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "clean: {} files, {} pages ({:.1} MB of text) in, {} pages ({:.1} MB) out in {:.2} s ({:.1} MB/s, {} threads)",
        s.files,
        s.pages_in,
        mb(s.bytes_in),
        s.pages_out,
        mb(s.bytes_out),
        s.seconds.get("total").copied().unwrap_or(0.0),
        s.mb_per_s,
        s.threads
    );
    let splits: Vec<String> = s
        .pages_per_split
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    eprintln!(
        "  splits: {}",
        if splits.is_empty() {
            "-".into()
        } else {
            splits.join(", ")
        }
    );
    let dropped: Vec<String> = s
        .pages_dropped
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    eprintln!(
        "  pages dropped: {}",
        if dropped.is_empty() {
            "none".into()
        } else {
            dropped.join(", ")
        }
    );
    let lines: Vec<String> = s
        .lines_dropped
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    eprintln!(
        "  lines: {} kept by clean_page; dropped: {}",
        s.lines_passed,
        if lines.is_empty() {
            "none".into()
        } else {
            lines.join(", ")
        }
    );
    let w = &s.wet_records_skipped;
    if w.no_url + w.no_content + w.no_timestamp + w.other_record_type > 0 {
        eprintln!(
            "  WET records skipped: no url {}, no content {}, no timestamp {}, other record type {}",
            w.no_url, w.no_content, w.no_timestamp, w.other_record_type
        );
    }
    eprintln!(
        "  language: {}; bad words: {}",
        s.language_filter, s.badwords_filter
    );
    if !s.read_issues.is_empty() {
        let kinds: Vec<String> = s
            .read_issues
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        eprintln!("  bad input skipped: {}", kinds.join(", "));
        for i in s.read_issue_examples.iter().take(5) {
            eprintln!(
                "    {}: {}: {}: {}",
                i.path.display(),
                i.location,
                i.kind,
                i.message
            );
        }
    }
    eprintln!(
        "  wrote {} shard(s) and stats.json to {}",
        s.shards.len(),
        out.display()
    );
}
