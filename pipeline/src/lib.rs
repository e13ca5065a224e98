//! # t5mix-pipeline
//!
//! The data side of t5mix, with no task knowledge: document readers
//! ([`readers`]), C4 cleaning ([`clean`]), the SentencePiece vocabulary
//! ([`vocab`]), T5's token preprocessors ([`preprocessors`]), feature
//! conversion and packing ([`features`]), Parquet example shards
//! ([`shards`]), the cache engine that turns source files into task shards
//! ([`cache`], fed by `t5mix_tasks::Task`), the mixing engine ([`mixing`])
//! and the manifests that say what each folder holds ([`manifest`]).
//!
//! The path a task takes through it — register a task (in `t5mix_tasks`)
//! → build its cache → build a mixture → train (in `t5mix_trainer`):
//!
//! ```no_run
//! use t5mix_pipeline::{clean, manifest::Manifest, vocab::Vocabulary};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // crawl text → clean shards with the C4 rules (manifest.json says what was kept)
//! let inputs = t5mix_pipeline::readers::expand_inputs(&["data/crawl".into()])?;
//! let opts = clean::CleanOptions::new("out/clean");
//! clean::run_clean(&inputs, &opts, &clean::NoProgress)?;
//! // a task's cache: `t5mix_tasks::Task::build_cache` runs its preprocessors
//! // through `cache::build_cache` with this vocabulary
//! let vocab = Vocabulary::load("spiece.model".as_ref(), 100)?;
//! # let _ = vocab;
//! // mixtures read the caches' manifests; the trainer reads the mixture's
//! let m = Manifest::read("out/mix".as_ref())?;
//! println!("{} shards of {} examples", m.shards().len(), m.example_stats().unwrap().examples);
//! # Ok(()) }
//! ```
//!
//! Every stage is a library call that the `t5mix` binary only wires together.

pub mod atomic;
pub mod cache;
pub mod clean;
pub mod error;
pub mod features;
pub mod launch;
pub mod manifest;
pub mod mixing;
pub mod preprocessors;
pub mod progress;
pub mod readers;
pub mod remote;
pub mod shards;
pub mod shared_data;
pub mod vocab;

pub use error::{PipelineError, Result};

/// Parses a lower-case name into an enum that serde names (`InputFormat`,
/// `Preset`, …): the one way command-line and TOML names are read.
pub fn parse_name<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
    names: &[&str],
) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{what} {s:?}: use one of {}", names.join(", ")))
}

/// `FromStr` for enums that serde names, with the accepted names in the error.
macro_rules! from_name {
    ($t:ty, $what:literal, [$($name:literal),+]) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                $crate::parse_name(s, $what, &[$($name),+])
            }
        }
    };
}
pub(crate) use from_name;
