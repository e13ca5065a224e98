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
pub mod manifest;
pub mod mixing;
pub mod preprocessors;
pub mod readers;
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
