//! The subcommands: argument mapping and printing over the libraries.

mod build;
mod clean;
mod train;
mod vocab;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use t5mix_tasks::Registry;

/// The T5 data pipeline and trainer, without TensorFlow.
#[derive(Debug, Parser)]
#[command(name = "t5mix", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Worker threads (default: all cores). Output does not depend on it.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// TOML task files whose tasks and mixtures are added to the registry.
    #[arg(long, global = true, value_name = "FILE")]
    tasks_file: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Clean raw web text with the C4 rules (tfds c4/en) into Parquet or JSONL.gz shards.
    Clean(Box<clean::CleanArgs>),
    /// SentencePiece vocabulary with T5's sentinels: info, encode, decode, train.
    Vocab(vocab::VocabArgs),
    /// The registered tasks and mixtures.
    Tasks(build::TasksArgs),
    /// Build a task's example shards (a task cache) or a mixture's shards from task caches.
    Build(Box<build::BuildArgs>),
    /// Describe example shards.
    Inspect(build::InspectArgs),
    /// Train a T5 model from example shards.
    Train(Box<train::TrainArgs>),
    /// Score a model on tasks (greedy decoding + the task's metrics).
    Eval(Box<train::EvalArgs>),
}

/// Parses the process's arguments and runs the command over `registry`;
/// prints the error and exits with 1 if it fails.
pub fn main(registry: Registry) -> ! {
    // Like other Unix tools: `t5mix tasks list | head` ends quietly instead
    // of panicking on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at start-up.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let code = match run(Cli::parse(), registry) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

/// Runs parsed arguments over `registry`.
pub fn run(cli: Cli, mut registry: Registry) -> Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.into())
            .build_global()?;
    }
    for f in &cli.tasks_file {
        registry.add_toml_file(f)?;
    }
    let reg = &registry;
    match cli.command {
        Command::Clean(args) => clean::run(*args, cli.quiet),
        Command::Vocab(args) => vocab::run(args),
        Command::Tasks(args) => build::tasks(args, reg),
        Command::Build(args) => build::build(*args, reg, cli.quiet),
        Command::Inspect(args) => build::inspect(args),
        Command::Train(args) => train::train(*args, reg, cli.quiet),
        Command::Eval(args) => train::eval(*args, reg),
    }
}
