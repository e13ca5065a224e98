//! `t5mix vocab`: inspect a SentencePiece model, encode text, decode ids.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use t5mix_pipeline::vocab::lines::{decode_lines, encode_lines, with_lines, LineFormat};
use t5mix_pipeline::vocab::train::{train_from_inputs, TrainOptions};
use t5mix_pipeline::vocab::{Vocabulary, DEFAULT_EXTRA_IDS};

/// SentencePiece vocabularies with T5's sentinels.
#[derive(Debug, Args)]
pub struct VocabArgs {
    #[command(subcommand)]
    command: VocabCommand,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// The SentencePiece `.model` file (T5: spiece.model, 32000 pieces).
    #[arg(long, short, value_name = "FILE")]
    model: PathBuf,
    /// Sentinels appended as seqio does (`<extra_id_0>` gets the highest id).
    #[arg(long, default_value_t = DEFAULT_EXTRA_IDS, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    extra_ids: u32,
}

#[derive(Debug, Subcommand)]
enum VocabCommand {
    /// Size, special ids and sentinel range of a model.
    Info(ModelArgs),
    /// Encode text (arguments, or the lines of --input / stdin) in parallel batches.
    Encode {
        #[command(flatten)]
        model: ModelArgs,
        /// Output: ids, pieces or jsonl ({"text", "ids"} per line).
        #[arg(long, default_value = "ids")]
        format: LineFormat,
        /// Append EOS, as T5 features with add_eos do.
        #[arg(long)]
        eos: bool,
        #[command(flatten)]
        io: LineFiles,
        /// Texts to encode; none: read --input or stdin.
        text: Vec<String>,
    },
    /// Train a unigram model with T5's settings (nmt_nfkc, coverage 0.9995,
    /// pad 0, eos 1, unk 2, no bos) on clean shards or any text input.
    Train {
        /// Inputs: clean shards, JSONL, WET, text (files, directories, globs).
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<String>,
        /// Pieces in the model.
        #[arg(long, default_value_t = 32000, value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
        vocab_size: u32,
        /// Output prefix: writes PREFIX.model and PREFIX.vocab.
        #[arg(long, short)]
        out: PathBuf,
        /// Sentences sampled for training (0: all).
        #[arg(long, default_value_t = 10_000_000)]
        input_sentence_size: u64,
        /// Share of characters the pieces must cover.
        #[arg(long, default_value_t = 0.9995)]
        character_coverage: f64,
        /// Seed of the trainer's sampling.
        #[arg(long, default_value_t = 0)]
        seed: u32,
    },
    /// Decode ids (arguments, or one space-separated list per line of --input / stdin).
    Decode {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        io: LineFiles,
        /// Ids to decode; none: read --input or stdin.
        ids: Vec<u32>,
    },
}

/// Where lines come from and go.
#[derive(Debug, Args)]
struct LineFiles {
    /// Read lines from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Write to this file (written whole, then renamed) instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn load(m: &ModelArgs) -> Result<Vocabulary> {
    Ok(Vocabulary::load(&m.model, m.extra_ids)?)
}

pub fn run(a: VocabArgs) -> Result<()> {
    match a.command {
        VocabCommand::Info(m) => println!("model            {}\n{}", m.model.display(), load(&m)?),
        VocabCommand::Encode {
            model,
            format,
            eos,
            io,
            text,
        } => {
            let v = load(&model)?;
            with_lines(&text, io.input.as_deref(), io.output.as_deref(), |i, o| {
                encode_lines(&v, i, o, format, eos).map(|_| ())
            })?;
        }
        VocabCommand::Train {
            input,
            vocab_size,
            out,
            input_sentence_size,
            character_coverage,
            seed,
        } => {
            let opts = TrainOptions {
                vocab_size,
                input_sentence_size,
                character_coverage,
                seed,
                num_threads: rayon::current_num_threads(),
                ..Default::default()
            };
            eprintln!("{}", train_from_inputs(&input, &out, &opts)?);
        }
        VocabCommand::Decode { model, io, ids } => {
            let v = load(&model)?;
            let lines = if ids.is_empty() {
                vec![]
            } else {
                vec![ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")]
            };
            with_lines(&lines, io.input.as_deref(), io.output.as_deref(), |i, o| {
                decode_lines(&v, i, o).map(|_| ())
            })?;
        }
    }
    Ok(())
}
