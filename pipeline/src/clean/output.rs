//! Writing clean pages: sharded Parquet (`text`, `url`, `timestamp`, `split`;
//! zstd) or gzip JSON Lines, each shard written atomically.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::atomic::AtomicFile;
use crate::error::{PipelineError, Result};

/// Output format of `t5mix clean`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Parquet shards, zstd-compressed.
    #[default]
    Parquet,
    /// gzip-compressed JSON Lines shards.
    Jsonl,
}

/// A page that survived cleaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanPage {
    /// Cleaned text.
    pub text: String,
    /// Original URL.
    pub url: String,
    /// Timestamp from the input.
    pub timestamp: String,
    /// `train` or `validation` (md5 of the normalized URL).
    pub split: String,
}

/// The schema of clean Parquet shards.
pub fn clean_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("timestamp", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
    ]))
}

/// Writes pages into numbered shards `part-00000.<ext>` of at most
/// `pages_per_shard` pages. Pages are encoded in batches as they arrive (so
/// encoding overlaps the work that produces them); a shard appears under its
/// name only when complete.
pub struct ShardWriter {
    dir: PathBuf,
    format: OutputFormat,
    pages_per_shard: usize,
    metadata: Vec<(String, String)>,
    pending: Vec<CleanPage>,
    open: Option<OpenShard>,
    pages_in_shard: usize,
    shards: Vec<PathBuf>,
    bytes_out: u64,
}

enum Encoder {
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    Jsonl(flate2::write::GzEncoder<BufWriter<File>>),
}

struct OpenShard {
    file: AtomicFile,
    encoder: Encoder,
}

const BATCH_PAGES: usize = 2048;

impl ShardWriter {
    /// A writer into `dir` (created if missing).
    pub fn new(
        dir: &Path,
        format: OutputFormat,
        pages_per_shard: usize,
        metadata: Vec<(String, String)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            format,
            pages_per_shard: pages_per_shard.max(1),
            metadata,
            pending: Vec::new(),
            open: None,
            pages_in_shard: 0,
            shards: Vec::new(),
            bytes_out: 0,
        })
    }

    /// Adds a page; full batches are encoded, a full shard is closed.
    pub fn push(&mut self, page: CleanPage) -> Result<()> {
        self.bytes_out += page.text.len() as u64;
        self.pending.push(page);
        self.pages_in_shard += 1;
        if self.pages_in_shard >= self.pages_per_shard {
            self.encode_pending()?;
            self.close_shard()?;
        } else if self.pending.len() >= BATCH_PAGES {
            self.encode_pending()?;
        }
        Ok(())
    }

    /// Writes the last shard and returns the paths of all shards and the
    /// bytes of text written.
    pub fn finish(mut self) -> Result<(Vec<PathBuf>, u64)> {
        if !self.pending.is_empty() || self.open.is_some() || self.shards.is_empty() {
            self.encode_pending()?;
            self.close_shard()?;
        }
        Ok((std::mem::take(&mut self.shards), self.bytes_out))
    }

    fn shard_path(&self) -> PathBuf {
        let ext = match self.format {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Jsonl => "jsonl.gz",
        };
        self.dir
            .join(format!("part-{:05}.{ext}", self.shards.len()))
    }

    fn open_shard(&mut self) -> Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        let path = self.shard_path();
        let mut file = AtomicFile::create(&path)?;
        let encoder = match self.format {
            OutputFormat::Parquet => {
                let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                };
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(1).map_err(|e| pq(&e))?,
                    ))
                    // Page texts and URLs are unique: no dictionary, no min/max statistics.
                    .set_column_dictionary_enabled(ColumnPath::from("text"), false)
                    .set_column_dictionary_enabled(ColumnPath::from("url"), false)
                    .set_column_statistics_enabled(
                        ColumnPath::from("text"),
                        EnabledStatistics::None,
                    )
                    .set_key_value_metadata(Some(
                        self.metadata
                            .iter()
                            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                            .collect(),
                    ))
                    .build();
                Encoder::Parquet(Box::new(
                    ArrowWriter::try_new(file.take_writer(), clean_schema(), Some(props))
                        .map_err(|e| pq(&e))?,
                ))
            }
            OutputFormat::Jsonl => Encoder::Jsonl(flate2::write::GzEncoder::new(
                file.take_writer(),
                flate2::Compression::new(6),
            )),
        };
        self.open = Some(OpenShard { file, encoder });
        Ok(())
    }

    fn encode_pending(&mut self) -> Result<()> {
        self.open_shard()?;
        let pages = std::mem::take(&mut self.pending);
        let path = self.shard_path();
        let shard = self.open.as_mut().expect("open shard");
        match &mut shard.encoder {
            Encoder::Parquet(w) => {
                if pages.is_empty() {
                    return Ok(());
                }
                let col = |f: fn(&CleanPage) -> &str| -> ArrayRef {
                    Arc::new(StringArray::from_iter_values(pages.iter().map(f)))
                };
                let batch = RecordBatch::try_new(
                    clean_schema(),
                    vec![
                        col(|p| &p.text),
                        col(|p| &p.url),
                        col(|p| &p.timestamp),
                        col(|p| &p.split),
                    ],
                )
                .and_then(|b| {
                    w.write(&b)
                        .map(|_| ())
                        .map_err(|e| arrow_schema::ArrowError::ExternalError(Box::new(e)))
                })
                .map_err(|e| PipelineError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                });
                batch?;
            }
            Encoder::Jsonl(gz) => {
                for p in &pages {
                    serde_json::to_writer(&mut *gz, p)
                        .map_err(|e| PipelineError::io(&path, e.into()))?;
                    gz.write_all(b"\n")
                        .map_err(|e| PipelineError::io(&path, e))?;
                }
            }
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let Some(OpenShard { file, encoder }) = self.open.take() else {
            return Ok(());
        };
        let path = file.path().to_path_buf();
        let inner = match encoder {
            Encoder::Parquet(w) => w.into_inner().map_err(|e| PipelineError::Parquet {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Encoder::Jsonl(gz) => gz.finish().map_err(|e| PipelineError::io(&path, e))?,
        };
        file.commit_file(inner)?;
        self.shards.push(path);
        self.pages_in_shard = 0;
        Ok(())
    }
}
