//! `t5mix vocab`: inspect a SentencePiece model, encode text, decode ids.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use t5mix_pipeline::vocab::Vocabulary;

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
    #[arg(long, default_value_t = 100, value_name = "N")]
    extra_ids: u32,
}

#[derive(Debug, Subcommand)]
enum VocabCommand {
    /// Size, special ids and sentinel range of a model.
    Info(ModelArgs),
    /// Encode text to ids (arguments, or one text per stdin line).
    Encode {
        #[command(flatten)]
        model: ModelArgs,
        /// Print pieces instead of ids.
        #[arg(long)]
        pieces: bool,
        /// Append EOS, as T5 features with add_eos do.
        #[arg(long)]
        eos: bool,
        /// Texts to encode; none: read stdin.
        text: Vec<String>,
    },
    /// Train a unigram model with T5's settings (nmt_nfkc, coverage 0.9995,
    /// pad 0, eos 1, unk 2, no bos) on clean shards or any text input.
    Train {
        /// Inputs: clean shards, JSONL, WET, text (files, directories, globs).
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<String>,
        /// Pieces in the model.
        #[arg(long, default_value_t = 32000)]
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
    /// Decode ids to text (arguments, or one space-separated list per stdin line).
    Decode {
        #[command(flatten)]
        model: ModelArgs,
        /// Ids to decode; none: read stdin.
        ids: Vec<u32>,
    },
}

fn load(m: &ModelArgs) -> Result<Vocabulary> {
    Ok(Vocabulary::load(&m.model, m.extra_ids)?)
}

fn inputs(args: &[String]) -> Result<Vec<String>> {
    if !args.is_empty() {
        return Ok(args.to_vec());
    }
    std::io::stdin()
        .lock()
        .lines()
        .collect::<std::io::Result<Vec<_>>>()
        .context("reading stdin")
}

pub fn run(a: VocabArgs) -> Result<()> {
    match a.command {
        VocabCommand::Info(m) => {
            let v = load(&m)?;
            println!("model            {}", m.model.display());
            println!("md5              {}", v.checksum());
            println!(
                "pieces           {} (+ {} extra ids = vocab_size {})",
                v.base_vocab_size(),
                v.extra_ids(),
                v.vocab_size()
            );
            println!(
                "embedding rows   {} (vocab_size rounded up to 128)",
                v.padded_vocab_size(128)
            );
            println!(
                "pad / eos / unk  {} / {:?} / {}",
                v.pad_id(),
                v.eos_id(),
                v.unk_id()
            );
            println!("bos              {:?}", v.bos_id());
            if v.extra_ids() > 0 {
                println!(
                    "sentinels        <extra_id_0> = {} … <extra_id_{}> = {}",
                    v.sentinel(0),
                    v.extra_ids() - 1,
                    v.sentinel(v.extra_ids() - 1)
                );
            }
        }
        VocabCommand::Encode {
            model,
            pieces,
            eos,
            text,
        } => {
            let v = load(&model)?;
            for t in inputs(&text)? {
                let mut ids = v.encode(&t);
                if eos {
                    ids.extend(v.eos_id());
                }
                let out: Vec<String> = if pieces {
                    ids.iter()
                        .map(|&i| v.id_to_piece(i).unwrap_or("?").to_string())
                        .collect()
                } else {
                    ids.iter().map(u32::to_string).collect()
                };
                println!("{}", out.join(" "));
            }
        }
        VocabCommand::Train {
            input,
            vocab_size,
            out,
            input_sentence_size,
            character_coverage,
            seed,
        } => {
            use std::io::Write;
            if !t5mix_pipeline::vocab::train::trainer_available() {
                return Err(t5mix_pipeline::vocab::VocabError::TrainerUnavailable.into());
            }
            let files = t5mix_pipeline::readers::expand_inputs(&input)?;
            let dir = tempfile::tempdir().context("temporary directory")?;
            let text_path = dir.path().join("sentences.txt");
            let mut w = std::io::BufWriter::new(std::fs::File::create(&text_path)?);
            let (mut lines, mut bytes) = (0u64, 0u64);
            let opts = t5mix_pipeline::readers::ReadOptions::default();
            for f in &files {
                t5mix_pipeline::readers::read_file(f, &opts, &mut |d| {
                    for l in d.text.split('\n').filter(|l| !l.trim().is_empty()) {
                        lines += 1;
                        bytes += l.len() as u64;
                        w.write_all(l.as_bytes())
                            .and_then(|_| w.write_all(b"\n"))
                            .map_err(|e| t5mix_pipeline::PipelineError::io(&text_path, e))?;
                    }
                    Ok(())
                })?;
            }
            w.flush()?;
            drop(w);
            let t = std::time::Instant::now();
            let opts = t5mix_pipeline::vocab::train::TrainOptions {
                vocab_size,
                input_sentence_size,
                character_coverage,
                seed,
                ..Default::default()
            };
            let model =
                t5mix_pipeline::vocab::train::train_from_text_file(&text_path, &out, &opts)?;
            let v = Vocabulary::load(&model, 0)?;
            eprintln!(
                "vocab train: {lines} lines ({:.1} MB) from {} file(s) -> {} ({} pieces) in {:.1} s",
                bytes as f64 / 1e6,
                files.len(),
                model.display(),
                v.vocab_size(),
                t.elapsed().as_secs_f64()
            );
        }
        VocabCommand::Decode { model, ids } => {
            let v = load(&model)?;
            if !ids.is_empty() {
                println!("{}", v.decode(&ids));
            } else {
                for (n, line) in inputs(&[])?.iter().enumerate() {
                    let ids = line
                        .split_whitespace()
                        .map(|x| {
                            x.parse::<u32>().with_context(|| {
                                format!("stdin line {}: {x:?} is not an id", n + 1)
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    println!("{}", v.decode(&ids));
                }
            }
        }
    }
    Ok(())
}
