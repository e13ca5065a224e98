//! `t5mix clean`: arguments → `t5mix_pipeline::clean::run_clean`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use t5mix_pipeline::clean::output::prepare_out_dir;
use t5mix_pipeline::clean::staged::{self, Stage, StagedPlan};
use t5mix_pipeline::clean::{run_clean, BadWords, CleanConfig, CleanOptions, OutputFormat, Preset};
use t5mix_pipeline::progress::Bars;
use t5mix_pipeline::readers::html::Extractor;
use t5mix_pipeline::readers::{expand_inputs, InputFormat, ReadOptions, TextUnit};
use t5mix_pipeline::remote;

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
    #[arg(required_unless_present_any = ["print_config", "task", "finish"], value_name = "INPUT")]
    inputs: Vec<String>,
    /// Output directory for the shards and manifest.json, or an object
    /// storage URL (s3://, gs://, az://). With --task / --finish: the folder
    /// of the staged run's plan (its --work-dir if --out was a URL).
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
    /// How WARC response records (raw HTML) become text: main (the main
    /// content, boilerplate removed) or plain (all visible text, as WET).
    #[arg(long, default_value = "main")]
    extractor: Extractor,

    /// Output format: parquet or jsonl (gzip).
    #[arg(long, default_value = "parquet")]
    output_format: OutputFormat,
    /// Pages per output shard.
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pages_per_shard: u64,
    /// Memory for cleaned pages between the passes (MB); beyond it pages
    /// are spilled to temporary files inside --out. In a staged run: the
    /// records each task sorts in memory before it spills a sorted run.
    #[arg(long, default_value_t = 1024, value_name = "MB", value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    memory_budget_mb: u64,
    /// Replace shards left in --out by an earlier run.
    #[arg(long)]
    overwrite: bool,

    /// Run as map/reduce stages with this many tasks per file stage
    /// (datatrove-style, for batch schedulers; the shards are the same).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    num_tasks: Option<u64>,
    /// Hash buckets of the staged reduce stages.
    #[arg(long, value_name = "R", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    buckets: u64,
    /// Staged tasks run at once on this machine.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    local_workers: u64,
    /// Staged with --out on object storage: the folder every task sees
    /// for the plan and the files between stages (the write tasks upload
    /// their shards to --out, --finish the manifest last).
    #[arg(long, value_name = "DIR", requires = "num_tasks")]
    work_dir: Option<PathBuf>,
    /// Staged: only write the plan into --out and print each task's command.
    #[arg(long, requires = "num_tasks")]
    plan_only: bool,
    /// Run one task of the staged run planned in --out (what one element
    /// of a scheduler's array job runs): STAGE:INDEX, e.g. extract:3.
    #[arg(long, value_name = "STAGE:INDEX", conflicts_with_all = ["num_tasks", "finish"])]
    task: Option<String>,
    /// Write the manifest of the staged run in --out once every task is done.
    #[arg(long)]
    finish: bool,
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
    let bars = Bars::new(quiet);
    if let Some(task) = &a.task {
        let (stage, t) = Stage::parse_task(task)?;
        let ran = staged::run_task(&out, stage, t, &bars)?;
        bars.finish();
        eprintln!("{task}: {}", if ran { "done" } else { "already done" });
        return Ok(());
    }
    if a.finish {
        let (stats, to) = staged::finish_run(&out, std::time::Instant::now())?;
        eprintln!("{stats} to {to}");
        return Ok(());
    }
    let inputs = expand_inputs(&a.inputs)?;
    let dest = remote::Destination::new(&out, a.work_dir.as_deref(), a.num_tasks.is_some())?;
    let out = dest.dir().to_path_buf();
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
            extractor: a.extractor,
        },
        badwords,
        output_format: a.output_format,
        pages_per_shard: a.pages_per_shard as usize,
        memory_budget: a.memory_budget_mb << 20,
        // (the batch size: the library's default)
        ..CleanOptions::new(out.clone())
    };
    let (stats, to) = match a.num_tasks {
        None => {
            let stats = run_clean(&inputs, &opts, &bars)?;
            (stats, dest.publish()?)
        }
        Some(n) => {
            let badwords = a.badwords.clone().map(|p| (p, a.badwords_lang.clone()));
            let plan = StagedPlan::new(inputs, n as usize, a.buckets as usize, &opts, badwords)?
                .publishing_to(dest.url());
            if a.plan_only {
                plan.install(&out)?;
                print!("{}", staged::write_launchers(&plan, &out)?);
                return Ok(());
            }
            staged::run_local(&plan, &out, a.local_workers as usize, None, &bars)?
        }
    };
    bars.finish();
    eprintln!("{stats} to {to}");
    Ok(())
}
