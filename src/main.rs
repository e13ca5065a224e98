//! `t5mix`: the command line. It only parses arguments and calls the
//! libraries (`t5mix-pipeline`, `t5mix-tasks`, `t5mix-trainer`).

mod build_cmd;
mod clean_cmd;
mod progress;
mod train_cmd;
mod vocab_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

// large zero-filled buffers (the trainer's gradients) are cleared on all cores
#[global_allocator]
static ALLOC: t5mix_trainer::ParallelZeroing = t5mix_trainer::ParallelZeroing;

/// The T5 data pipeline and trainer, without TensorFlow.
///
/// Stages: `clean` raw crawl text with the C4 rules, `vocab` (SentencePiece
/// with T5's sentinels), `tasks` and `build` (task and mixture shards),
/// `inspect`, `train` (a T5 model from shards) and `eval` (task metrics).
#[derive(Debug, Parser)]
#[command(name = "t5mix", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Worker threads (default: all cores). Output does not depend on it.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Clean raw web text with the C4 rules (tfds c4/en) into Parquet or JSONL.gz shards.
    Clean(Box<clean_cmd::CleanArgs>),
    /// SentencePiece vocabulary with T5's sentinels: info, encode, decode.
    Vocab(vocab_cmd::VocabArgs),
    /// The registered tasks.
    Tasks(build_cmd::TasksArgs),
    /// Build a task's example shards (a task cache) or a mixture's shards from task caches.
    Build(Box<build_cmd::BuildArgs>),
    /// Describe example shards.
    Inspect(build_cmd::InspectArgs),
    /// Train a T5 model from example shards.
    Train(Box<train_cmd::TrainArgs>),
    /// Score a model on tasks (greedy decoding + the task's metrics).
    Eval(Box<train_cmd::EvalArgs>),
}

fn main() {
    // Like other Unix tools: `t5mix tasks list | head` ends quietly instead
    // of panicking on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at start-up.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()?;
    }
    match cli.command {
        Command::Clean(args) => clean_cmd::run(*args, cli.quiet),
        Command::Vocab(args) => vocab_cmd::run(args),
        Command::Tasks(args) => build_cmd::tasks(args),
        Command::Build(args) => build_cmd::build(*args, cli.quiet),
        Command::Inspect(args) => build_cmd::inspect(args),
        Command::Train(args) => train_cmd::train(*args, cli.quiet),
        Command::Eval(args) => train_cmd::eval(*args),
    }
}
