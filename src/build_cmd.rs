//! `t5mix tasks`, `t5mix build` and `t5mix inspect`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use t5mix_pipeline::cache::{build_cache, finalize, CacheSpec, ExampleSource, TextPairFn, Worker};
use t5mix_pipeline::preprocessors::Denoiser;
use t5mix_pipeline::readers::expand_inputs;
use t5mix_pipeline::shards::{read_example_shard, ExampleStats};
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::{MixtureRegistry, Preprocessing, Source, TaskRegistry};

fn registries(tasks_files: &[PathBuf]) -> Result<(TaskRegistry, MixtureRegistry)> {
    let mut reg = TaskRegistry::builtin();
    let mut mix = MixtureRegistry::builtin();
    for f in tasks_files {
        reg.add_toml_file_with_mixtures(f, &mut mix)
            .map_err(anyhow::Error::msg)?;
    }
    Ok((reg, mix))
}

/// The clean Parquet shards among the inputs (files, directories, globs).
fn clean_shards(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = expand_inputs(inputs)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    if files.is_empty() {
        bail!("no clean Parquet shards among {inputs:?}");
    }
    Ok(files)
}

pub(crate) fn registry(tasks_files: &[PathBuf]) -> Result<TaskRegistry> {
    Ok(registries(tasks_files)?.0)
}

/// List and show the registered tasks.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// TOML task files to add to the built-in tasks.
    #[arg(long, global = true, value_name = "FILE")]
    tasks_file: Vec<PathBuf>,
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Names and one-line descriptions.
    List,
    /// A task's definition as JSON.
    Show {
        /// Task name.
        name: String,
    },
    /// The formatted text and ids of a task's first examples.
    Preview {
        /// Task name.
        name: String,
        /// Task input: clean shards (unsupervised) or the task's directory.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<String>,
        /// SentencePiece model.
        #[arg(long, value_name = "FILE")]
        vocab: PathBuf,
        /// Split.
        #[arg(long, default_value = "train")]
        split: String,
        /// Examples to show.
        #[arg(short, default_value_t = 5)]
        n: usize,
    },
}

pub fn tasks(a: TasksArgs) -> Result<()> {
    let (reg, mix) = registries(&a.tasks_file)?;
    match a.command {
        TasksCommand::List => {
            for t in reg.iter() {
                println!("{:<22} {}", t.name, t.description);
            }
            for m in mix.names() {
                let tasks = mix.tasks(m)?;
                println!(
                    "{m:<22} mixture of {}",
                    tasks.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        TasksCommand::Show { name } => {
            let t = reg
                .get(&name)
                .with_context(|| format!("no task {name:?} (see `t5mix tasks list`)"))?;
            println!("{}", serde_json::to_string_pretty(t)?);
        }
        TasksCommand::Preview {
            name,
            input,
            vocab,
            split,
            n,
        } => preview(&reg, &name, &input, &vocab, &split, n)?,
    }
    Ok(())
}

fn preview(
    reg: &TaskRegistry,
    name: &str,
    input: &[String],
    vocab: &std::path::Path,
    split: &str,
    n: usize,
) -> Result<()> {
    let t = reg
        .get(name)
        .with_context(|| format!("no task {name:?} (see `t5mix tasks list`)"))?;
    let v = Vocabulary::load(vocab, 100)?;
    let li = t.sequence_length.get("inputs").copied().unwrap_or(512);
    let lt = t.sequence_length.get("targets").copied().unwrap_or(128);
    let mut shown = Vec::new();
    match (&t.preprocessing, &t.source) {
        (Preprocessing::Unsupervised { objective }, _) => {
            let d = Denoiser::new(*objective, li, lt, v.vocab_size(), v.extra_ids())?;
            let files = clean_shards(input)?;
            let texts = t5mix_pipeline::cache::read_clean_texts(&files[0], split)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let docs = v.encode_batch(&refs);
            t5mix_pipeline::preprocessors::ShardCorruptor::new(&d, 0, &t.name, 0).run(
                docs.iter().map(Vec::as_slice),
                |i, g| {
                    if shown.len() < n {
                        shown.push((v.decode(i), v.decode(g), i.to_vec(), g.to_vec()));
                    }
                },
            )?;
        }
        (_, Source::CleanShards) => {
            bail!("task {name}: a supervised task needs a files source")
        }
        (_, source @ Source::Files { .. }) => {
            let file = source
                .split_files(name, split, input)
                .map_err(anyhow::Error::msg)?
                .remove(0);
            for (i, g) in t
                .text_pairs(&file, split)
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .take(n)
            {
                let mut ii = v.encode(&i);
                t5mix_pipeline::preprocessors::append_eos_after_trim(&mut ii, li, 1);
                let mut gg = v.encode(&g);
                t5mix_pipeline::preprocessors::append_eos_after_trim(&mut gg, lt, 1);
                shown.push((i, g, ii, gg));
            }
        }
    }
    for (k, (i, g, ii, gg)) in shown.iter().enumerate() {
        println!("--- {name} example {k} ---");
        println!("inputs:      {i}");
        println!("targets:     {g}");
        println!("inputs ids:  {ii:?}");
        println!("targets ids: {gg:?}");
    }
    Ok(())
}

/// Build a task's example shards (a task cache) from clean text shards.
///
/// Each input shard becomes one output shard, written under a temporary name
/// and renamed when whole: an interrupted build resumes where it stopped, and
/// `--worker-index/--num-workers` splits a build over machines (Slurm job
/// arrays, Kubernetes indexed jobs) with the same bytes as one machine.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  t5mix build --task c4_span_corruption --input out/clean --vocab spiece.model --out out/c4"
)]
pub struct BuildArgs {
    /// Task name (`t5mix tasks list`).
    #[arg(long, required_unless_present = "mixture", conflicts_with = "mixture")]
    task: Option<String>,
    /// Mixture name: sample built task caches (`--caches`) by rate into mixture shards.
    #[arg(long, requires = "caches")]
    mixture: Option<String>,
    /// Task cache directories (each with its manifest.json) for `--mixture`.
    #[arg(long, num_args = 1..)]
    caches: Vec<PathBuf>,
    /// Examples in the mixture (default: one epoch, the sum of the task caches' examples).
    #[arg(long, conflicts_with = "epochs")]
    examples: Option<u64>,
    /// Mixture size in epochs of the task caches (the sum of their examples times this).
    #[arg(long)]
    epochs: Option<f64>,
    /// Examples per mixture shard.
    #[arg(long, default_value_t = 100_000)]
    shard_examples: u64,
    /// Unsupervised tasks: clean shards (`t5mix clean` output), as
    /// directories, files or globs. Supervised tasks: the directory holding
    /// the task's files (e.g. GLUE's RTE/ for glue_rte).
    #[arg(long, required_unless_present = "mixture", num_args = 1..)]
    input: Vec<String>,
    /// TOML task files to add to the built-in tasks.
    #[arg(long, value_name = "FILE")]
    tasks_file: Vec<PathBuf>,
    /// SentencePiece model (T5: spiece.model).
    #[arg(long, value_name = "FILE", required_unless_present = "mixture")]
    vocab: Option<PathBuf>,
    /// Sentinels added to the vocabulary.
    #[arg(long, default_value_t = 100)]
    extra_ids: u32,
    /// Feature lengths, e.g. inputs=512,targets=114 (default: the task's).
    #[arg(long, value_name = "inputs=N,targets=M")]
    sequence_length: Option<String>,
    /// Split of the clean shards to read.
    #[arg(long, default_value = "train")]
    split: String,
    /// Seed of every example's random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep supervised examples' text as `inputs_pretokenized` /
    /// `targets_pretokenized` columns (seqio's features).
    #[arg(long)]
    pretokenized: bool,
    /// Output directory.
    #[arg(long, short)]
    out: PathBuf,
    /// This worker's index (0-based).
    #[arg(long, default_value_t = 0)]
    worker_index: usize,
    /// Number of workers; with more than one, run `--finalize` at the end.
    #[arg(long, default_value_t = 1)]
    num_workers: usize,
    /// Only check that all shards are there and write manifest.json.
    #[arg(long)]
    finalize: bool,
}

pub(crate) fn parse_lengths(s: &str) -> Result<BTreeMap<String, usize>> {
    let mut m = BTreeMap::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--sequence-length: {part:?} is not NAME=N"))?;
        if k != "inputs" && k != "targets" {
            bail!("--sequence-length: unknown feature {k:?} (inputs, targets)");
        }
        m.insert(
            k.to_string(),
            v.parse()
                .with_context(|| format!("--sequence-length: {v:?} is not a number"))?,
        );
    }
    Ok(m)
}

fn build_mixture_cmd(a: &BuildArgs, name: &str) -> Result<()> {
    use std::collections::BTreeMap;
    use t5mix_pipeline::mixing::{build_mixture, MixSpec, TaskCache};
    let (_, mix) = registries(&a.tasks_file)?;
    let t = std::time::Instant::now();
    let mut caches = BTreeMap::new();
    for dir in &a.caches {
        let c = TaskCache::load(dir)
            .with_context(|| format!("loading task cache {}", dir.display()))?;
        caches.insert(c.manifest.task.clone(), c);
    }
    let count = |t: &str| caches.get(t).map(|c: &TaskCache| c.manifest.stats.examples);
    let rates = mix.task_rates(name, &count)?;
    let probabilities = mix.task_probabilities(name, &count)?;
    let examples = a
        .examples
        .unwrap_or_else(|| caches.values().map(|c| c.manifest.stats.examples).sum());
    let spec = MixSpec {
        name,
        seed: a.seed,
        probabilities: &probabilities,
        rates: &rates,
        examples,
        shard_examples: a.shard_examples,
    };
    let worker = (a.num_workers > 1).then_some((a.worker_index, a.num_workers));
    let written = build_mixture(&spec, &caches, &a.out, worker)?;
    eprintln!(
        "build mixture {name}: {examples} examples from {} task(s), {} shard(s) written in {:.2} s",
        caches.len(),
        written.len(),
        t.elapsed().as_secs_f64()
    );
    for (task, p) in &probabilities {
        eprintln!("  {task:<24} rate {:>12.3}  p {:.4}", rates[task], p);
    }
    Ok(())
}

pub fn build(a: BuildArgs, quiet: bool) -> Result<()> {
    if let Some(name) = a.mixture.clone() {
        return build_mixture_cmd(&a, &name);
    }
    let reg = registry(&a.tasks_file)?;
    let task_name = a.task.clone().unwrap_or_default();
    let task = reg
        .get(&task_name)
        .with_context(|| format!("no task {task_name:?} (see `t5mix tasks list`)"))?;
    let mut lengths = task.sequence_length.clone();
    if let Some(s) = &a.sequence_length {
        lengths.extend(parse_lengths(s)?);
    }
    let (li, lt) = (
        lengths.get("inputs").copied().unwrap_or(512),
        lengths.get("targets").copied().unwrap_or(512),
    );
    let vocab_path = a
        .vocab
        .clone()
        .context("--vocab is needed to build a task")?;
    let vocab = Vocabulary::load(&vocab_path, a.extra_ids)?;
    let denoiser;
    let reader: Box<TextPairFn>;
    let (examples, inputs) = match (&task.preprocessing, &task.source) {
        (Preprocessing::Unsupervised { objective }, _) => {
            denoiser = Denoiser::new(*objective, li, lt, vocab.vocab_size(), vocab.extra_ids())
                .with_context(|| format!("task {}", task.name))?;
            let inputs = clean_shards(&a.input)?;
            (ExampleSource::Unsupervised(&denoiser), inputs)
        }
        (_, Source::CleanShards) => {
            bail!("task {}: a supervised task needs a files source", task.name)
        }
        (_, source @ Source::Files { .. }) => {
            let inputs = source
                .split_files(&task.name, &a.split, &a.input)
                .map_err(anyhow::Error::msg)?;
            let (task, split) = (task.clone(), a.split.clone());
            reader = Box::new(move |path: &std::path::Path| task.text_pairs(path, &split));
            (ExampleSource::TextPairs(reader.as_ref()), inputs)
        }
    };
    let spec = CacheSpec {
        task: &task.name,
        split: &a.split,
        seed: a.seed,
        examples,
        vocab: &vocab,
        inputs_length: li,
        targets_length: lt,
        pretokenized: a.pretokenized,
    };
    if !a.finalize {
        let t = std::time::Instant::now();
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(inputs.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} shards {elapsed}")
                .unwrap(),
        );
        bar.set_prefix(task.name.clone());
        let report = build_cache(
            &spec,
            &inputs,
            &a.out,
            Worker {
                index: a.worker_index,
                count: a.num_workers,
            },
            |_, _| bar.inc(1),
        )?;
        bar.finish_and_clear();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "build {}: {} shard(s) written, {} kept from an earlier run; {} documents -> {} examples ({} input / {} target tokens) in {:.2} s ({:.0} examples/s)",
            task.name,
            report.written.len(),
            report.kept.len(),
            report.documents,
            report.stats.examples,
            report.stats.inputs_tokens,
            report.stats.targets_tokens,
            secs,
            report.stats.examples as f64 / secs.max(1e-9)
        );
        if a.num_workers > 1 {
            eprintln!(
                "  worker {} of {}: run `--finalize` once all workers are done",
                a.worker_index, a.num_workers
            );
            return Ok(());
        }
    }
    let m = finalize(&spec, inputs.len(), &a.out)?;
    eprintln!(
        "  manifest: {} shards, {} examples, max lengths {}/{}, written to {}",
        m.shards.len(),
        m.stats.examples,
        m.stats.inputs_max_tokens,
        m.stats.targets_max_tokens,
        a.out.join("manifest.json").display()
    );
    Ok(())
}

/// Describe example shards: schema, counts per task, lengths, a decoded sample.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A shard or a directory of shards.
    path: PathBuf,
    /// SentencePiece model, to decode a sample.
    #[arg(long, value_name = "FILE")]
    vocab: Option<PathBuf>,
    /// Examples to decode.
    #[arg(long, short, default_value_t = 1)]
    n: usize,
}

fn histogram(lengths: &[usize]) -> String {
    if lengths.is_empty() {
        return "-".into();
    }
    let max = *lengths.iter().max().unwrap();
    let bins = 8usize;
    let width = max.div_ceil(bins).max(1);
    let mut counts = vec![0usize; bins];
    for &l in lengths {
        counts[(l / width).min(bins - 1)] += 1;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| format!("[{}..{}]:{c}", i * width, (i + 1) * width))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let files: Vec<PathBuf> = if a.path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&a.path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        v.sort();
        v
    } else {
        vec![a.path.clone()]
    };
    if files.is_empty() {
        bail!("{}: no Parquet shards", a.path.display());
    }
    let vocab = match &a.vocab {
        Some(p) => Some(Vocabulary::load(p, 100)?),
        None => None,
    };
    let mut per_task: BTreeMap<String, ExampleStats> = BTreeMap::new();
    let (mut li, mut lt) = (Vec::new(), Vec::new());
    let mut sample = Vec::new();
    let mut meta0 = Vec::new();
    for f in &files {
        let (ex, meta) =
            read_example_shard(f).with_context(|| format!("reading {}", f.display()))?;
        if meta0.is_empty() {
            meta0 = meta;
        }
        for e in ex {
            per_task
                .entry(e.task.clone())
                .or_default()
                .add(e.inputs.len(), e.targets.len());
            li.push(e.inputs.len());
            lt.push(e.targets.len());
            if sample.len() < a.n {
                sample.push(e);
            }
        }
    }
    println!("{} shard(s) in {}", files.len(), a.path.display());
    println!("schema: task: dictionary<int32, utf8>, inputs: list<int32>, targets: list<int32>");
    for (k, v) in meta0.iter().filter(|(k, _)| k.starts_with("t5mix.")) {
        println!("  {k} = {v}");
    }
    let total: u64 = per_task.values().map(|s| s.examples).sum();
    for (t, s) in &per_task {
        println!(
            "task {t}: {} examples ({:.1}%), inputs {} tokens (max {}), targets {} tokens (max {})",
            s.examples,
            100.0 * s.examples as f64 / total.max(1) as f64,
            s.inputs_tokens,
            s.inputs_max_tokens,
            s.targets_tokens,
            s.targets_max_tokens
        );
    }
    println!("inputs lengths:  {}", histogram(&li));
    println!("targets lengths: {}", histogram(&lt));
    for e in &sample {
        println!("--- {} ---", e.task);
        match &vocab {
            Some(v) => {
                println!("inputs:  {}", v.decode(&e.inputs));
                println!("targets: {}", v.decode(&e.targets));
            }
            None => {
                println!("inputs:  {:?}", &e.inputs[..e.inputs.len().min(32)]);
                println!("targets: {:?}", &e.targets[..e.targets.len().min(32)]);
            }
        }
    }
    Ok(())
}
