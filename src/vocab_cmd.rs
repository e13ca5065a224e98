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
