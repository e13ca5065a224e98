//! `t5mix tasks`, `t5mix build` and `t5mix inspect`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use t5mix_pipeline::features::SequenceLength;
use t5mix_pipeline::shards::{read_example_shard, ExampleStats};
use t5mix_pipeline::vocab::{Vocabulary, DEFAULT_EXTRA_IDS};
use t5mix_tasks::{BuildOptions, MixtureOptions, MixtureSize, Registry, Worker};

use super::progress::counter;

/// List and show the registered tasks.
#[derive(Debug, Args)]
pub struct TasksArgs {
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
        #[command(flatten)]
        task: TaskInput,
        /// Examples to show.
        #[arg(short, default_value_t = 5)]
        n: usize,
    },
}

/// A task's input and vocabulary (`build` and `tasks preview`).
#[derive(Debug, Args)]
pub struct TaskInput {
    /// Unsupervised tasks: clean shards (`t5mix clean` output), as
    /// directories, files or globs. Supervised tasks: the directory holding
    /// the task's files (e.g. GLUE's RTE/ for glue_rte).
    #[arg(long, num_args = 1..)]
    input: Vec<String>,
    /// SentencePiece model (T5: spiece.model).
    #[arg(long, value_name = "FILE")]
    vocab: Option<PathBuf>,
    /// Sentinels added to the vocabulary.
    #[arg(long, default_value_t = DEFAULT_EXTRA_IDS, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    extra_ids: u32,
    /// Feature lengths, e.g. inputs=512,targets=114 (default: the task's).
    #[arg(long, value_name = "inputs=N,targets=M")]
    sequence_length: Option<String>,
    /// Split to read.
    #[arg(long, default_value = "train")]
    split: String,
    /// Seed of every example's random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl TaskInput {
    fn vocab(&self) -> Result<Vocabulary> {
        let p = self
            .vocab
            .as_ref()
            .context("--vocab is needed to build a task")?;
        Ok(Vocabulary::load(p, self.extra_ids)?)
    }

    fn options<'a>(&self, v: &'a Vocabulary, task: &t5mix_tasks::Task) -> Result<BuildOptions<'a>> {
        let mut o = BuildOptions::new(v);
        o.split = self.split.clone();
        o.seed = self.seed;
        if let Some(s) = &self.sequence_length {
            let l = SequenceLength::parse_over(task.sequence_length(), s)
                .map_err(|e| anyhow::anyhow!("--sequence-length: {e}"))?;
            o.sequence_length = Some(l);
        }
        Ok(o)
    }
}

pub fn tasks(a: TasksArgs, reg: &Registry) -> Result<()> {
    match a.command {
        TasksCommand::List => {
            for t in reg.tasks.iter() {
                println!("{:<22} {}", t.name, t.description);
            }
            for m in reg.mixtures.names() {
                let tasks: Vec<String> = reg.mixtures.tasks(m)?.into_iter().collect();
                println!("{m:<22} mixture of {}", tasks.join(", "));
            }
        }
        TasksCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(reg.tasks.task(&name)?)?)
        }
        TasksCommand::Preview { name, task, n } => {
            let t = reg.tasks.task(&name)?;
            let v = task.vocab()?;
            for (k, e) in t
                .preview(&task.input, &task.options(&v, t)?, n)?
                .iter()
                .enumerate()
            {
                let text = |f: &str, ids: &[u32]| match &e.row {
                    Some(r) if r.contains_key(f) => r[f].clone(),
                    _ => v.decode(ids),
                };
                println!("--- {name} example {k} ---");
                println!("inputs:      {}", text("inputs", &e.tokens.inputs));
                println!("targets:     {}", text("targets", &e.tokens.targets));
                println!("inputs ids:  {:?}", e.tokens.inputs);
                println!("targets ids: {:?}", e.tokens.targets);
            }
        }
    }
    Ok(())
}

/// Build a task's example shards (a task cache) from its source, or a
/// mixture's shards from task caches.
///
/// Each source file becomes one output shard, written under a temporary name
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
    #[command(flatten)]
    input: TaskInput,
    /// Mixture name: sample built task caches (`--caches`) by rate into mixture shards.
    #[arg(long, requires = "caches")]
    mixture: Option<String>,
    /// Task cache directories (each with its manifest.json) for `--mixture`.
    #[arg(long, num_args = 1..)]
    caches: Vec<PathBuf>,
    /// Examples in the mixture (default: one epoch, the sum of the task caches' examples).
    #[arg(long, conflicts_with = "epochs", value_parser = clap::value_parser!(u64).range(1..=t5mix_tasks::build::MAX_MIXTURE_EXAMPLES))]
    examples: Option<u64>,
    /// Mixture size in epochs of the task caches (the sum of their examples times this).
    #[arg(long)]
    epochs: Option<f64>,
    /// Examples per mixture shard.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    shard_examples: u64,
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

pub fn build(a: BuildArgs, reg: &Registry, quiet: bool) -> Result<()> {
    let worker = Worker {
        index: a.worker_index,
        count: a.num_workers,
    };
    if worker.count == 0 || worker.index >= worker.count {
        bail!(
            "--worker-index {} of --num-workers {}",
            worker.index,
            worker.count
        );
    }
    let started = std::time::Instant::now();
    if let Some(name) = &a.mixture {
        let o = MixtureOptions {
            seed: a.input.seed,
            size: match (a.examples, a.epochs) {
                (Some(n), _) => MixtureSize::Examples(n),
                (None, e) => MixtureSize::Epochs(e.unwrap_or(1.0)),
            },
            shard_examples: a.shard_examples,
            worker,
        };
        let m = reg.mixtures.build(name, &a.caches, &a.out, &o)?;
        eprintln!(
            "build mixture {name}: {} examples from {} task(s), {} shard(s) written in {:.2} s",
            m.examples,
            m.probabilities.len(),
            m.written.len(),
            started.elapsed().as_secs_f64()
        );
        for (task, p) in &m.probabilities {
            eprintln!("  {task:<24} rate {:>12.3}  p {p:.4}", m.rates[task]);
        }
        return Ok(());
    }
    if a.input.input.is_empty() {
        bail!("--input is needed to build a task");
    }
    let task = reg.tasks.task(a.task.as_deref().unwrap_or_default())?;
    let vocab = a.input.vocab()?;
    let mut o = a.input.options(&vocab, task)?;
    o.pretokenized = a.pretokenized;
    o.worker = worker;
    let manifest = if a.finalize {
        task.finalize_cache(&a.input.input, &a.out, &o)?
    } else {
        let bar = counter(quiet, &task.name, "source files");
        let b = task.build_cache(&a.input.input, &a.out, &o, |_, n| {
            bar.set_length(n as u64);
            bar.inc(1)
        })?;
        bar.finish_and_clear();
        let (r, secs) = (&b.report, started.elapsed().as_secs_f64());
        eprintln!(
            "build {}: {} shard(s) written, {} kept from an earlier run; {} documents -> {} examples ({} input / {} target tokens) in {secs:.2} s ({:.0} examples/s)",
            task.name, r.written.len(), r.kept.len(), r.documents, r.stats.examples,
            r.stats.inputs_tokens, r.stats.targets_tokens, r.stats.examples as f64 / secs.max(1e-9)
        );
        match b.manifest {
            Some(m) => m,
            None => {
                eprintln!(
                    "  worker {} of {}: run `--finalize` once all workers are done",
                    worker.index, worker.count
                );
                return Ok(());
            }
        }
    };
    eprintln!(
        "  manifest: {} shards, {} examples, max lengths {}/{}, written to {}",
        manifest.shards.len(),
        manifest.stats.examples,
        manifest.stats.inputs_max_tokens,
        manifest.stats.targets_max_tokens,
        a.out.join("manifest.json").display()
    );
    Ok(())
}

/// Describe example shards: schema, counts per task, lengths, a decoded sample.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A shard or a directory of shards.
    path: PathBuf,
    /// SentencePiece model, to decode a sample (its sentinels: as the shards' manifest says).
    #[arg(long, value_name = "FILE")]
    vocab: Option<PathBuf>,
    /// Examples to decode.
    #[arg(long, short, default_value_t = 1)]
    n: usize,
}

fn histogram(lengths: &[usize]) -> String {
    let Some(&max) = lengths.iter().max() else {
        return "-".into();
    };
    let width = max.div_ceil(8).max(1);
    let mut counts = [0usize; 8];
    for &l in lengths {
        counts[(l / width).min(7)] += 1;
    }
    let bins: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| format!("[{}..{}]:{c}", i * width, (i + 1) * width))
        .collect();
    bins.join(" ")
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
    let vocab = match &a.vocab {
        Some(p) => Some(vocab_for_shards(p, &a.path, &meta0)?),
        None => None,
    };
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

/// The vocabulary at `path` with as many sentinels as the cache's manifest
/// says; refuses a model whose checksum differs from the shards'.
fn vocab_for_shards(
    path: &std::path::Path,
    shards: &std::path::Path,
    meta: &[(String, String)],
) -> Result<Vocabulary> {
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let base = Vocabulary::load(path, 0)?;
    if let Some(md5) = get("t5mix.vocabulary_md5") {
        if md5 != base.checksum() {
            bail!(
                "{}: md5 {} but the shards were built with a vocabulary of md5 {md5}",
                path.display(),
                base.checksum()
            );
        }
    }
    let manifest: Option<serde_json::Value> = std::fs::read(shards.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let size: Option<u32> = manifest
        .as_ref()
        .and_then(|m| m["vocabulary"]["vocab_size"].as_str()?.parse().ok());
    let extra = size.map_or(DEFAULT_EXTRA_IDS, |s| {
        s.saturating_sub(base.base_vocab_size())
    });
    Ok(Vocabulary::load(path, extra)?)
}
