//! C4 cleaning (tfds `c4/en`): tfds `c4_utils` rules, Punkt sentence counting,
//! URL and line de-duplication, language ID, bad words, URL-hash split.
//!
//! [`PageCleaner`] applies the per-page rules to one text; [`run_clean`]
//! runs the whole corpus pipeline over files and writes shards.

pub mod config;
pub mod dedup;
pub mod filters;
pub mod output;
pub mod punkt;
pub mod rules;
pub mod run;
pub mod staged;

pub use config::{CleanConfig, Preset};
pub use filters::{BadWords, LanguageFilter};
pub use output::{CleanPage, OutputFormat};
pub use punkt::SentenceTokenizer;
pub use rules::{Cleaned, LineRule, PageCleaner, PageRule, RuleCounters};
pub use run::{run_clean, CleanOptions, CleanStats, NoProgress, Progress};
