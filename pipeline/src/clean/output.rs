//! Writing clean pages: sharded Parquet (`text`, `url`, `timestamp`, `split`;
//! zstd) or gzip JSON Lines, each shard written atomically.
//!
//! Writing is split in three steps so that the expensive one can run on any
//! thread: [`ShardWriter::plan`] cuts a batch of pages into [`Chunk`]s (one
//! Parquet row group or one gzip member each, never across a shard
//! boundary), [`Chunk::encode`] compresses a chunk (thread-safe, no file
//! access) and [`ShardWriter::append`] writes encoded chunks in order. The
//! bytes depend only on the pages and the order of the chunks, never on
//! which thread encoded them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
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

/// Pages of one row group (Parquet) or one gzip member (JSON Lines), cut by
/// [`ShardWriter::plan`].
#[derive(Debug)]
pub struct Chunk {
    pages: Vec<CleanPage>,
    /// The shard is complete after this chunk.
    closes_shard: bool,
}

/// A compressed [`Chunk`], ready for [`ShardWriter::append`].
pub struct EncodedChunk {
    body: EncodedBody,
    closes_shard: bool,
    text_bytes: u64,
}

enum EncodedBody {
    Parquet(Vec<ArrowColumnChunk>),
    Gzip(Vec<u8>),
}

/// What encoding needs: for Parquet the column writers' factory (schema and
/// writer properties), `None` for JSON Lines.
pub struct Encoding {
    /// The output folder (named in errors).
    dir: PathBuf,
    parquet: Option<(ArrowRowGroupWriterFactory, Arc<WriterProperties>)>,
}

impl Chunk {
    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// True if the chunk holds no page.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Compresses the chunk (Parquet: the `text` column and the three short
    /// ones as two rayon tasks).
    pub fn encode(self, enc: &Encoding) -> Result<EncodedChunk> {
        let text_bytes = self.pages.iter().map(|p| p.text.len() as u64).sum();
        let body = match &enc.parquet {
            Some((factory, _)) => {
                let err = |e: parquet::errors::ParquetError| PipelineError::Parquet {
                    path: enc.dir.clone(),
                    message: e.to_string(),
                };
                let mut writers = factory.create_column_writers(0).map_err(err)?;
                let schema = clean_schema();
                let encode =
                    |writers: &mut [ArrowColumnWriter],
                     fields: std::ops::Range<usize>|
                     -> std::result::Result<(), parquet::errors::ParquetError> {
                        for (w, i) in writers.iter_mut().zip(fields) {
                            let f: fn(&CleanPage) -> &str = match i {
                                0 => |p| &p.text,
                                1 => |p| &p.url,
                                2 => |p| &p.timestamp,
                                _ => |p| &p.split,
                            };
                            let array: ArrayRef =
                                Arc::new(StringArray::from_iter_values(self.pages.iter().map(f)));
                            for leaf in compute_leaves(schema.field(i), &array)? {
                                w.write(&leaf)?;
                            }
                        }
                        Ok(())
                    };
                let (text, rest) = writers.split_at_mut(1);
                let (a, b) = rayon::join(|| encode(text, 0..1), || encode(rest, 1..4));
                a.and(b).map_err(err)?;
                EncodedBody::Parquet(
                    writers
                        .into_iter()
                        .map(|w| w.close())
                        .collect::<std::result::Result<_, _>>()
                        .map_err(err)?,
                )
            }
            None => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(text_bytes as usize / 3),
                    flate2::Compression::new(6),
                );
                let io = |e: std::io::Error| PipelineError::io(&enc.dir, e);
                for p in &self.pages {
                    serde_json::to_writer(&mut gz, p).map_err(|e| io(e.into()))?;
                    gz.write_all(b"\n").map_err(io)?;
                }
                EncodedBody::Gzip(gz.finish().map_err(io)?)
            }
        };
        Ok(EncodedChunk {
            body,
            closes_shard: self.closes_shard,
            text_bytes,
        })
    }
}

/// Writes pages into numbered shards `part-00000.<ext>` of at most
/// `pages_per_shard` pages, each appearing under its name only when
/// complete. Parquet shards hold one row group per chunk; JSON Lines shards
/// are concatenated gzip members (read by any gzip reader, e.g. `zcat`,
/// Python's `gzip`, flate2's `MultiGzDecoder`).
pub struct ShardWriter {
    dir: PathBuf,
    encoding: Arc<Encoding>,
    pages_per_shard: usize,
    /// Pages handed to `plan` for the current (last planned) shard.
    planned_in_shard: usize,
    /// Planned pages of a chunk not yet full, and their text bytes: chunks
    /// depend only on the sequence of pages, not on how it was handed in.
    carry: Vec<CleanPage>,
    carry_text: usize,
    /// Index of the first shard this writer writes.
    first_shard: usize,
    /// Pages buffered by [`ShardWriter::push`].
    pending: Vec<CleanPage>,
    open: Option<OpenShard>,
    shards: Vec<PathBuf>,
    bytes_out: u64,
}

enum Sink {
    Parquet(Box<SerializedFileWriter<BufWriter<File>>>),
    Gzip(BufWriter<File>),
}

struct OpenShard {
    file: AtomicFile,
    sink: Sink,
    /// Chunks appended so far.
    chunks: usize,
}

/// Pages buffered by [`ShardWriter::push`] before they are written.
const BATCH_PAGES: usize = 2048;

/// A chunk (row group) ends after this much page text.
pub const CHUNK_TEXT_BYTES: usize = 1 << 20;

impl ShardWriter {
    /// A writer into `dir` (created if missing); `metadata` goes into every
    /// Parquet footer.
    pub fn new(
        dir: &Path,
        format: OutputFormat,
        pages_per_shard: usize,
        metadata: Vec<(String, String)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
        let parquet = match format {
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(1).expect("zstd level 1"),
                    ))
                    // Page texts and URLs are unique: no dictionary, no min/max statistics.
                    .set_column_dictionary_enabled(ColumnPath::from("text"), false)
                    .set_column_dictionary_enabled(ColumnPath::from("url"), false)
                    .set_column_statistics_enabled(
                        ColumnPath::from("text"),
                        EnabledStatistics::None,
                    )
                    .set_key_value_metadata(Some(crate::shards::key_values(&metadata)))
                    .build();
                let (_, factory) =
                    ArrowWriter::try_new(std::io::sink(), clean_schema(), Some(props.clone()))
                        .and_then(|w| w.into_serialized_writer())
                        .map_err(|e| PipelineError::Parquet {
                            path: dir.to_path_buf(),
                            message: e.to_string(),
                        })?;
                Some((factory, Arc::new(props)))
            }
            OutputFormat::Jsonl => None,
        };
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            encoding: Arc::new(Encoding {
                dir: dir.to_path_buf(),
                parquet,
            }),
            pages_per_shard: pages_per_shard.max(1),
            planned_in_shard: 0,
            carry: Vec::new(),
            carry_text: 0,
            first_shard: 0,
            pending: Vec::new(),
            open: None,
            shards: Vec::new(),
            bytes_out: 0,
        })
    }

    /// What [`Chunk::encode`] needs (shareable across threads).
    pub fn encoding(&self) -> Arc<Encoding> {
        Arc::clone(&self.encoding)
    }

    /// A writer whose first shard is `part-<index>`: one shard of a run
    /// written on its own gives the bytes the whole run writes there.
    pub fn starting_at(mut self, index: usize) -> Self {
        self.first_shard = index;
        self
    }

    /// Cuts `pages` (the next pages in output order) into chunks at shard
    /// boundaries and after every [`CHUNK_TEXT_BYTES`] of text (so that a
    /// large batch encodes on several threads). The pages of a chunk not
    /// yet full wait for the next call (or [`ShardWriter::finish`]), so the
    /// chunks are the same however the pages are handed in. Every chunk
    /// must then be encoded and appended, in order.
    pub fn plan(&mut self, pages: Vec<CleanPage>) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for page in pages {
            self.carry_text += page.text.len();
            self.carry.push(page);
            self.planned_in_shard += 1;
            let closes_shard = self.planned_in_shard == self.pages_per_shard;
            if closes_shard || self.carry_text >= CHUNK_TEXT_BYTES {
                if closes_shard {
                    self.planned_in_shard = 0;
                }
                chunks.push(Chunk {
                    pages: std::mem::take(&mut self.carry),
                    closes_shard,
                });
                self.carry_text = 0;
            }
        }
        chunks
    }

    /// Writes an encoded chunk (chunks in the order `plan` made them).
    pub fn append(&mut self, chunk: EncodedChunk) -> Result<()> {
        self.open_shard()?;
        let shard = self.open.as_mut().expect("open shard");
        let path = shard.file.path().to_path_buf();
        match (&mut shard.sink, chunk.body) {
            (Sink::Parquet(w), EncodedBody::Parquet(columns)) => {
                let pq = |e: parquet::errors::ParquetError| PipelineError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                };
                let mut rg = w.next_row_group().map_err(pq)?;
                for c in columns {
                    c.append_to_row_group(&mut rg).map_err(pq)?;
                }
                rg.close().map_err(pq)?;
            }
            (Sink::Gzip(w), EncodedBody::Gzip(bytes)) => {
                w.write_all(&bytes)
                    .map_err(|e| PipelineError::io(&path, e))?;
            }
            _ => unreachable!("chunk encoded for another format"),
        }
        shard.chunks += 1;
        self.bytes_out += chunk.text_bytes;
        if chunk.closes_shard {
            self.close_shard()?;
        }
        Ok(())
    }

    /// Adds a page; full batches are encoded (on this thread) and written.
    pub fn push(&mut self, page: CleanPage) -> Result<()> {
        self.pending.push(page);
        if self.pending.len() >= BATCH_PAGES
            || self.planned_in_shard + self.pending.len() >= self.pages_per_shard
        {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        let pages = std::mem::take(&mut self.pending);
        for chunk in self.plan(pages) {
            let encoded = chunk.encode(&self.encoding)?;
            self.append(encoded)?;
        }
        Ok(())
    }

    /// Writes the last shard (an empty one if no page came at all) and
    /// returns the paths of all shards and the bytes of text written.
    pub fn finish(mut self) -> Result<(Vec<PathBuf>, u64)> {
        self.write_pending()?;
        if !self.carry.is_empty() {
            self.carry_text = 0;
            let last = Chunk {
                pages: std::mem::take(&mut self.carry),
                closes_shard: false,
            };
            let encoded = last.encode(&self.encoding)?;
            self.append(encoded)?;
        }
        if self.open.is_some() || self.shards.is_empty() {
            self.open_shard()?;
            self.close_shard()?;
        }
        Ok((std::mem::take(&mut self.shards), self.bytes_out))
    }

    fn shard_path(&self) -> PathBuf {
        let ext = if self.encoding.parquet.is_some() {
            "parquet"
        } else {
            "jsonl.gz"
        };
        self.dir.join(format!(
            "part-{:05}.{ext}",
            self.first_shard + self.shards.len()
        ))
    }

    fn open_shard(&mut self) -> Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        let path = self.shard_path();
        let mut file = AtomicFile::create(&path)?;
        let sink = match &self.encoding.parquet {
            Some((_, props)) => {
                let (w, _) = ArrowWriter::try_new(
                    file.take_writer(),
                    clean_schema(),
                    Some(props.as_ref().clone()),
                )
                .and_then(|w| w.into_serialized_writer())
                .map_err(|e| PipelineError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Sink::Parquet(Box::new(w))
            }
            None => Sink::Gzip(file.take_writer()),
        };
        self.open = Some(OpenShard {
            file,
            sink,
            chunks: 0,
        });
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let Some(OpenShard { file, sink, chunks }) = self.open.take() else {
            return Ok(());
        };
        let path = file.path().to_path_buf();
        let inner = match sink {
            Sink::Parquet(w) => w.into_inner().map_err(|e| PipelineError::Parquet {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Sink::Gzip(mut w) => {
                if chunks == 0 {
                    // an empty shard is still a valid gzip file
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6))
                        .finish()
                        .and_then(|b| w.write_all(&b))
                        .map_err(|e| PipelineError::io(&path, e))?;
                }
                w
            }
        };
        file.commit_file(inner)?;
        self.shards.push(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::io::Read;

    fn pages(n: usize) -> Vec<CleanPage> {
        (0..n)
            .map(|i| CleanPage {
                // every 10th page is large, so chunks end by size too
                text: format!("page {i} ") + &"x".repeat(if i % 10 == 9 { 600_000 } else { 50 }),
                url: format!("https://example.com/{i}"),
                timestamp: format!("2019-07-17T12:{:02}:00Z", i % 60),
                split: if i % 7 == 0 { "validation" } else { "train" }.into(),
            })
            .collect()
    }

    fn read_parquet(path: &Path) -> (Vec<CleanPage>, usize) {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let groups = b.metadata().num_row_groups();
        let mut out = Vec::new();
        for batch in b.build().unwrap() {
            let batch = batch.unwrap();
            let col = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone()
            };
            let (t, u, ts, s) = (col(0), col(1), col(2), col(3));
            for r in 0..batch.num_rows() {
                out.push(CleanPage {
                    text: t.value(r).into(),
                    url: u.value(r).into(),
                    timestamp: ts.value(r).into(),
                    split: s.value(r).into(),
                });
            }
        }
        (out, groups)
    }

    fn read_jsonl(path: &Path) -> Vec<CleanPage> {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(File::open(path).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Chunks end at shard boundaries and after CHUNK_TEXT_BYTES of text,
    /// however the pages are handed in; shards read back page for page, in
    /// order, and the pipelined plan/encode/append path and `push` write
    /// the same bytes.
    #[test]
    fn chunks_and_shards_read_back_in_order() {
        let all = pages(95);
        for format in [OutputFormat::Parquet, OutputFormat::Jsonl] {
            let a = tempfile::tempdir().unwrap();
            let b = tempfile::tempdir().unwrap();
            // pipelined, in uneven batches, chunks encoded in parallel
            let mut w = ShardWriter::new(a.path(), format, 40, vec![]).unwrap();
            let enc = w.encoding();
            let mut sizes = Vec::new();
            for batch in all.chunks(17) {
                let chunks = w.plan(batch.to_vec());
                sizes.extend(chunks.iter().map(|c| (c.len(), c.closes_shard)));
                let encoded: Vec<EncodedChunk> = {
                    use rayon::prelude::*;
                    chunks
                        .into_par_iter()
                        .map(|c| c.encode(&enc))
                        .collect::<Result<_>>()
                        .unwrap()
                };
                for e in encoded {
                    w.append(e).unwrap();
                }
            }
            let (shards, bytes) = w.finish().unwrap();
            assert_eq!(bytes, all.iter().map(|p| p.text.len() as u64).sum::<u64>());
            assert_eq!(shards.len(), 3, "40 + 40 + 15 pages");
            // every 10th page has 600 kB: a chunk ends after two of them
            // (pages 19, 59) or at a shard boundary (39, 79), whatever the
            // batches; the last 15 pages wait for `finish`
            assert_eq!(sizes, [(20, false), (20, true), (20, false), (20, true)]);
            let mut once = ShardWriter::new(a.path(), format, 40, vec![]).unwrap();
            let planned: Vec<_> = once
                .plan(all.clone())
                .iter()
                .map(|c| (c.len(), c.closes_shard))
                .collect();
            assert_eq!(planned, sizes, "one batch");
            // one page at a time through `push`
            let mut w = ShardWriter::new(b.path(), format, 40, vec![]).unwrap();
            for p in all.clone() {
                w.push(p).unwrap();
            }
            let (shards_b, _) = w.finish().unwrap();
            let mut back = Vec::new();
            for (s, sb) in shards.iter().zip(&shards_b) {
                assert_eq!(s.file_name(), sb.file_name());
                match format {
                    OutputFormat::Parquet => {
                        let (p, groups) = read_parquet(s);
                        assert!(groups >= 1);
                        back.extend(p);
                    }
                    OutputFormat::Jsonl => back.extend(read_jsonl(s)),
                }
                // chunks depend only on the page sequence: the same bytes
                assert_eq!(std::fs::read(s).unwrap(), std::fs::read(sb).unwrap());
            }
            assert_eq!(back, all);
            // no temporary files left
            for d in [a.path(), b.path()] {
                for e in std::fs::read_dir(d).unwrap() {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    assert!(!name.starts_with('.'), "{name}");
                }
            }
        }
    }

    #[test]
    fn no_pages_give_one_empty_valid_shard() {
        for format in [OutputFormat::Parquet, OutputFormat::Jsonl] {
            let d = tempfile::tempdir().unwrap();
            let (shards, bytes) = ShardWriter::new(d.path(), format, 10, vec![])
                .unwrap()
                .finish()
                .unwrap();
            assert_eq!((shards.len(), bytes), (1, 0));
            match format {
                OutputFormat::Parquet => assert_eq!(read_parquet(&shards[0]).0, vec![]),
                OutputFormat::Jsonl => assert_eq!(read_jsonl(&shards[0]), vec![]),
            }
        }
    }
}

crate::from_name!(OutputFormat, "output format", ["parquet", "jsonl"]);

/// Makes `out` ready for a clean run (creating it): refuses an `out` that is
/// a file or holds one of the `inputs` (an overwrite would delete them), and one
/// holding an earlier run's shards or manifest unless `overwrite`, which
/// removes them first.
pub fn prepare_out_dir(
    out: &std::path::Path,
    overwrite: bool,
    inputs: &[std::path::PathBuf],
) -> Result<()> {
    let bad = |message: String| PipelineError::Config {
        what: format!("--out {}", out.display()),
        message,
    };
    crate::atomic::create_out_dir(out)?;
    // a staged run under way resumes there (its plan is checked then), or
    // starts afresh with --overwrite
    let work = out.join(super::staged::WORK_DIR);
    if work.exists() {
        if !overwrite {
            return Ok(());
        }
        std::fs::remove_dir_all(&work).map_err(|e| PipelineError::io(&work, e))?;
    }
    if let Ok(o) = out.canonicalize() {
        if let Some(i) = inputs
            .iter()
            .find(|i| i.canonicalize().is_ok_and(|i| i.starts_with(&o)))
        {
            return Err(bad(format!(
                "holds the input {}: write the output elsewhere",
                i.display()
            )));
        }
    }
    let rd = std::fs::read_dir(out).map_err(|e| PipelineError::io(out, e))?;
    let entries: Vec<std::path::PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // what a killed run left: spill folders and half-written shards
    for p in &entries {
        let n = p.file_name().unwrap_or_default().to_string_lossy();
        let spill = n.starts_with(".t5mix-clean-") && p.is_dir();
        if spill || (n.starts_with(".part-") && n.ends_with(".tmp")) {
            let r = if spill {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            r.map_err(|e| PipelineError::Config {
                what: p.display().to_string(),
                message: format!("left by an interrupted run and cannot be removed: {e}"),
            })?;
        }
    }
    let stale: Vec<std::path::PathBuf> = entries
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("part-") || n == crate::manifest::MANIFEST
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(PipelineError::Config {
            what: out.display().to_string(),
            message: format!(
                "already holds shards of an earlier run ({} files); pass --overwrite to replace them",
                stale.len()
            ),
        });
    }
    for p in stale {
        std::fs::remove_file(&p).map_err(|e| PipelineError::io(&p, e))?;
    }
    Ok(())
}
