//! # t5mix-pipeline
//!
//! The data side of t5mix, with no task knowledge: document readers
//! ([`readers`]), C4 cleaning ([`clean`]), atomic file output ([`atomic`]) and,
//! as later issues land, the vocabulary, token preprocessors, feature
//! conversion, Parquet shard I/O and the mixing engine.
//!
//! Every stage is a library call that the `t5mix` binary only wires together.

pub mod atomic;
pub mod cache;
pub mod clean;
pub mod error;
pub mod features;
pub mod mixing;
pub mod preprocessors;
pub mod readers;
pub mod shards;
pub mod shared_data;
pub mod vocab;

pub use error::{PipelineError, Result};
