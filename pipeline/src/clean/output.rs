//! Writing clean pages: sharded Parquet (`text`, `url`, `timestamp`, `split`;
//! zstd) or gzip JSON Lines, each shard written atomically.

use std::io::Write;
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
/// `pages_per_shard` pages.
pub struct ShardWriter {
    dir: PathBuf,
    format: OutputFormat,
    pages_per_shard: usize,
    metadata: Vec<(String, String)>,
    pending: Vec<CleanPage>,
    shards: Vec<PathBuf>,
    bytes_out: u64,
}

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
            shards: Vec::new(),
            bytes_out: 0,
        })
    }

    /// Adds a page; a full shard is written out.
    pub fn push(&mut self, page: CleanPage) -> Result<()> {
        self.bytes_out += page.text.len() as u64;
        self.pending.push(page);
        if self.pending.len() >= self.pages_per_shard {
            self.flush_shard()?;
        }
        Ok(())
    }

    /// Writes the last shard and returns the paths of all shards.
    pub fn finish(mut self) -> Result<(Vec<PathBuf>, u64)> {
        if !self.pending.is_empty() || self.shards.is_empty() {
            self.flush_shard()?;
        }
        Ok((self.shards, self.bytes_out))
    }

    fn flush_shard(&mut self) -> Result<()> {
        let ext = match self.format {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Jsonl => "jsonl.gz",
        };
        let path = self
            .dir
            .join(format!("part-{:05}.{ext}", self.shards.len()));
        let pages = std::mem::take(&mut self.pending);
        match self.format {
            OutputFormat::Parquet => write_parquet(&path, &pages, &self.metadata)?,
            OutputFormat::Jsonl => write_jsonl_gz(&path, &pages)?,
        }
        self.shards.push(path);
        Ok(())
    }
}

fn write_parquet(path: &Path, pages: &[CleanPage], metadata: &[(String, String)]) -> Result<()> {
    let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut file = AtomicFile::create(path)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| pq(&e))?,
        ))
        // Page texts and URLs are unique: no dictionary, no min/max statistics.
        .set_column_dictionary_enabled(ColumnPath::from("text"), false)
        .set_column_dictionary_enabled(ColumnPath::from("url"), false)
        .set_column_statistics_enabled(ColumnPath::from("text"), EnabledStatistics::None)
        .set_key_value_metadata(Some(
            metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ))
        .build();
    let schema = clean_schema();
    let mut writer = ArrowWriter::try_new(file.take_writer(), schema.clone(), Some(props))
        .map_err(|e| pq(&e))?;
    for chunk in pages.chunks(8192) {
        let col = |f: fn(&CleanPage) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(chunk.iter().map(f)))
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                col(|p| &p.text),
                col(|p| &p.url),
                col(|p| &p.timestamp),
                col(|p| &p.split),
            ],
        )
        .map_err(|e| pq(&e))?;
        writer.write(&batch).map_err(|e| pq(&e))?;
    }
    let inner = writer.into_inner().map_err(|e| pq(&e))?;
    file.commit_file(inner)?;
    Ok(())
}

fn write_jsonl_gz(path: &Path, pages: &[CleanPage]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let mut gz = flate2::write::GzEncoder::new(file.take_writer(), flate2::Compression::new(6));
    for p in pages {
        serde_json::to_writer(&mut gz, p).map_err(|e| PipelineError::io(path, e.into()))?;
        gz.write_all(b"\n")
            .map_err(|e| PipelineError::io(path, e))?;
    }
    let inner = gz.finish().map_err(|e| PipelineError::io(path, e))?;
    file.commit_file(inner)?;
    Ok(())
}
