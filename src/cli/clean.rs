//! `t5mix clean`: arguments → `t5mix_pipeline::clean::run_clean`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use t5mix_pipeline::clean::output::prepare_out_dir;
use t5mix_pipeline::clean::{run_clean, BadWords, CleanConfig, CleanOptions, OutputFormat, Preset};
use t5mix_pipeline::progress::Bars;
use t5mix_pipeline::readers::{expand_inputs, InputFormat, ReadOptions, TextUnit};

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
    #[arg(required_unless_present = "print_config", value_name = "INPUT")]
    inputs: Vec<String>,
    /// Output directory for the shards and manifest.json.
    #[arg(
        long,
        short,
        value_name = "DIR",
        required_unless_present = "print_config"
    )]
    out: Option<PathBuf>,
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

    /// Set a rule: KEY=VALUE, keys as in --config (line_dedup=false, language=de,
    /// language="" for no language ID, …; all of them: --print-config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Print the rules in effect (preset, --config, --set) as TOML and exit.
    #[arg(long)]
    print_config: bool,

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
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pages_per_shard: u64,
    /// Memory for cleaned pages between the passes (MB); beyond it pages
    /// are spilled to temporary files inside --out.
    #[arg(long, default_value_t = 1024, value_name = "MB", value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    memory_budget_mb: u64,
    /// Replace shards left in --out by an earlier run.
    #[arg(long)]
    overwrite: bool,
}

fn build_config(a: &CleanArgs) -> Result<CleanConfig> {
    let base = CleanConfig::preset(a.preset);
    let c = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            CleanConfig::from_toml_over(&base, &text)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?
        }
        None => base,
    };
    c.with_settings(&a.settings).map_err(anyhow::Error::msg)
}

pub fn run(a: CleanArgs, quiet: bool) -> Result<()> {
    let config = build_config(&a)?;
    if a.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let out = a.out.clone().context("--out is needed")?;
    let inputs = expand_inputs(&a.inputs)?;
    prepare_out_dir(&out, a.overwrite, &inputs)?;
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
        out_dir: out.clone(),
        output_format: a.output_format,
        pages_per_shard: a.pages_per_shard as usize,
        batch_pages: 256,
        memory_budget: a.memory_budget_mb << 20,
    };
    let bars = Bars::new(quiet);
    let stats = run_clean(&inputs, &opts, &bars)?;
    bars.finish();
    eprintln!("{stats} to {}", out.display());
    Ok(())
}
