//! The tasks crate's error type.

use t5mix_pipeline::preprocessors::PreprocessError;
use t5mix_pipeline::vocab::VocabError;
use t5mix_pipeline::PipelineError;

use crate::mixture::MixtureError;
use crate::supervised::SourceError;

/// Errors of tasks, mixtures, their files and their evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A source file that cannot be read or a row a format cannot use.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline failed (shards, readers, caches).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A mixture or name problem.
    #[error(transparent)]
    Mixture(#[from] MixtureError),
    /// The vocabulary could not be loaded.
    #[error(transparent)]
    Vocab(#[from] VocabError),
    /// A token preprocessor's parameters or output.
    #[error("task {task}: {source}")]
    Preprocess {
        /// The task.
        task: String,
        /// What went wrong.
        source: PreprocessError,
    },
    /// A task that cannot do what was asked (its definition, a split, a metric).
    #[error("task {task}: {message}")]
    Task {
        /// The task.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// A user's row, token, postprocessing or metric function failed.
    #[error("{path}: row {row}: {message}")]
    Row {
        /// The source file.
        path: String,
        /// 1-based row (or example) number.
        row: usize,
        /// The function's message.
        message: String,
    },
    /// A task file or cache manifest that cannot be used.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (TOML's message names the line and key).
        message: String,
    },
    /// An option out of range.
    #[error("{option}: {message}")]
    Option {
        /// The option.
        option: String,
        /// What is wrong.
        message: String,
    },
}

impl TaskError {
    /// A problem with task `task`.
    pub fn task(task: &str, message: impl Into<String>) -> Self {
        TaskError::Task {
            task: task.to_string(),
            message: message.into(),
        }
    }
}

/// Result alias of the tasks crate.
pub type Result<T, E = TaskError> = std::result::Result<T, E>;
