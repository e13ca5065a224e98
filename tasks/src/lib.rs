//! # t5mix-tasks
//!
//! seqio's vocabulary in Rust: a [`Task`] is a source, an ordered list of
//! [`Preprocessor`]s (row-level, `tokenize`, token-level, including the
//! user's own functions), [`OutputFeatures`], a postprocessor and metrics; a
//! [`Mixture`] samples tasks by rate. The built-in catalog ([`catalog`]) is
//! written with the same API.
//!
//! Register a task → build its cache → build a mixture → train:
//!
//! ```no_run
//! use t5mix_tasks::{pair, BuildOptions, Metric, Mixture, MixtureOptions, Preprocessor, Rate, Registry, Source, Task};
//! use t5mix_tasks::supervised::FileFormat;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reg = Registry::builtin();
//! reg.add_task(
//!     Task::new("trivia", Source::files(FileFormat::Jsonl {}, &[("train", "train.jsonl")]))
//!         .preprocessor(Preprocessor::rows("qa", |r: &t5mix_tasks::supervised::Row| {
//!             Ok(pair(format!("trivia: {}", r["q"]), r["a"].clone()))
//!         }))
//!         .preprocessor(Preprocessor::Tokenize)
//!         .preprocessor(Preprocessor::AppendEosAfterTrim)
//!         .lengths(64, 8)
//!         .metric(Metric::ExactMatch),
//! )?;
//! reg.add_mixture(Mixture::new("mine").task("trivia", Rate::fixed(1.0)).task("glue_rte", Rate::fixed(1.0)))?;
//! let vocab = t5mix_pipeline::vocab::Vocabulary::load("spiece.model".as_ref(), 100)?;
//! let opts = BuildOptions::new(&vocab);
//! reg.tasks.task("trivia")?.build_cache(&["data/trivia".into()], "out/trivia".as_ref(), &opts, |_, _| {})?;
//! reg.tasks.task("glue_rte")?.build_cache(&["GLUE/RTE".into()], "out/rte".as_ref(), &opts, |_, _| {})?;
//! reg.mixtures.build("mine", &["out/trivia".into(), "out/rte".into()], "out/mix".as_ref(), &MixtureOptions::default())?;
//! // then train from out/mix: t5mix_trainer::train::Trainer, or `t5mix train --data out/mix`,
//! // and score with Evaluator::new(&reg.tasks, …).evaluate(&mut predict)
//! # Ok(()) }
//! ```
//!
//! A program serves its own registry with every `t5mix` subcommand through
//! `t5mix::cli::main(registry)` (see the repository's `examples/`).

pub mod build;
pub mod catalog;
pub mod error;
pub mod evaluation;
pub mod formats;
pub mod metrics;
pub mod mixture;
pub mod registry;
pub mod supervised;
pub mod task;

pub use build::{BuildOptions, CacheBuild, Example, MixtureBuild, MixtureOptions, MixtureSize};
pub use error::{Result, TaskError};
pub use evaluation::{EvalExample, EvalSet, Evaluator, PredictFn, TaskScores};
pub use metrics::{Metric, MetricFn, PostprocessFn, Postprocessor, Value};
pub use mixture::{
    rate_num_examples, validate_name, Member, Mixture, MixtureError, MixtureRegistry, Rate,
};
pub use registry::Registry;
pub use t5mix_pipeline::cache::Worker;
pub use task::{
    pair, Custom, Feature, OutputFeatures, Preprocessor, RowFn, Source, Task, TaskRegistry,
    TokenContext, TokenFn, Tokens,
};
