//! `t5mix tasks`, `t5mix build` and `t5mix inspect`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use t5mix_pipeline::features::SequenceLength;
use t5mix_pipeline::manifest::Manifest;
use t5mix_pipeline::progress::counter;
use t5mix_pipeline::shards::Inspection;
use t5mix_pipeline::vocab::{Vocabulary, DEFAULT_EXTRA_IDS};
use t5mix_tasks::{BuildOptions, MixtureOptions, MixtureSize, Registry, Worker};

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
    /// Read clean-shard folders without a manifest.json (an interrupted clean).
    #[arg(long)]
    allow_partial: bool,
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
        o.allow_partial = self.allow_partial;
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
        TasksCommand::List => print!("{reg}"),
        TasksCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(reg.tasks.task(&name)?)?)
        }
        TasksCommand::Preview { name, task, n } => {
            let t = reg.tasks.task(&name)?;
            let v = task.vocab()?;
            let examples = t.preview(&task.input, &task.options(&v, t)?, n)?;
            for (k, e) in examples.iter().enumerate() {
                print!("--- {name} example {k} ---\n{}", e.describe(&v));
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
    /// Write Slurm and Kubernetes launch files into DIR for this build as
    /// --num-workers array tasks, then --finalize (nothing is built now).
    #[arg(long, value_name = "DIR")]
    launchers: Option<PathBuf>,
}

pub fn build(a: BuildArgs, reg: &Registry, quiet: bool) -> Result<()> {
    let worker = Worker::new(a.worker_index, a.num_workers)?;
    if let Some(dir) = &a.launchers {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let launch =
            t5mix_pipeline::launch::worker_launchers(dir, &args, "--launchers", a.num_workers)?;
        print!("build as {launch}");
        return Ok(());
    }
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
        eprintln!("{}", reg.mixtures.build(name, &a.caches, &a.out, &o)?);
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
    if a.finalize {
        let m = task.finalize_cache(&a.input.input, &a.out, &o)?;
        eprintln!("{}", t5mix_tasks::build::manifest_line(&m));
    } else {
        let bar = counter(quiet, &task.name, "source files");
        let b = task.build_cache(&a.input.input, &a.out, &o, |_, n| {
            bar.set_length(n as u64);
            bar.inc(1)
        })?;
        bar.finish_and_clear();
        eprintln!("{b}");
    }
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

pub fn inspect(a: InspectArgs) -> Result<()> {
    let found = Inspection::read(&a.path, a.n)?;
    let vocab = match &a.vocab {
        Some(p) => Some(Manifest::vocabulary_for(&a.path, p)?),
        None => None,
    };
    print!(
        "{} shard(s) in {}\n{}",
        found.files.len(),
        a.path.display(),
        found.report(vocab.as_ref())
    );
    Ok(())
}
