//! Trainer errors.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A bad model or training configuration.
    #[error("{0}")]
    Config(String),
    /// A checkpoint that does not fit the model.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Training data could not be read.
    #[error(transparent)]
    Pipeline(#[from] t5mix_pipeline::PipelineError),
    /// Bad data.
    #[error("{0}")]
    Data(String),
    /// The GPU's memory is used up (what was asked, what is free, what
    /// needs less).
    #[error("{0}")]
    OutOfMemory(String),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    /// A checkpoint error on `path`.
    pub fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The trainer's result type.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
