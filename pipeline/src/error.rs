//! The pipeline's error type: every variant names the file (and where it
//! helps the record, line or byte offset) that the problem is in.

use std::path::{Path, PathBuf};

/// Errors of the data pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bad input data (only an error in `--strict` mode or when fatal).
    #[error("{path}: {location}: {message}")]
    BadInput {
        /// The file.
        path: PathBuf,
        /// Where in it: "line 12", "byte 4096", "record 7", "row group 2".
        location: String,
        /// What was wrong.
        message: String,
    },
    /// A configuration problem (a flag, a TOML key, a list file).
    #[error("{what}: {message}")]
    Config {
        /// What was being configured.
        what: String,
        /// What was wrong.
        message: String,
    },
    /// Parquet or Arrow failed while reading or writing a file.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// No input files matched.
    #[error("no input files: {0}")]
    NoInput(String),
}

impl PipelineError {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The same error naming `shown` where it names `local` (a downloaded
    /// copy named by its URL).
    pub fn naming(self, local: &Path, shown: &Path) -> Self {
        let rename = |p: PathBuf| if p == local { shown.to_path_buf() } else { p };
        match self {
            PipelineError::Io { path, source } => PipelineError::Io {
                path: rename(path),
                source,
            },
            PipelineError::BadInput {
                path,
                location,
                message,
            } => PipelineError::BadInput {
                path: rename(path),
                location,
                message,
            },
            PipelineError::Parquet { path, message } => PipelineError::Parquet {
                path: rename(path),
                message,
            },
            e => e,
        }
    }
}

/// Result alias of the pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Runs a Parquet/Arrow decode of `path`, turning a panic inside those
/// libraries (they assert on some corrupt pages; found by fuzzing) into an
/// error naming the file.
pub(crate) fn parquet_guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the decoder failed");
        Err(PipelineError::Parquet {
            path: path.to_path_buf(),
            message: format!("corrupt file ({why})"),
        })
    })
}
