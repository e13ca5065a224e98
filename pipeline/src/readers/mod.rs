//! Document readers: Common Crawl WET, JSONL (C4's `c4-train.*.json.gz`,
//! dolma), Parquet with a text column, and plain text, with transparent gzip
//! and format detection by content.
//!
//! A reader hands each [`Document`] to a callback, in file order, and records
//! bad input (a malformed record, invalid UTF-8, a truncated gzip, an empty
//! file) as a [`ReadIssue`] naming the file and byte offset, then carries on;
//! with `strict` the first issue is an error instead. Documents read before a
//! bad spot are never lost.

pub mod html;
mod jsonl;
mod main_content;
mod parquet_text;
mod plain;
pub mod rows;
mod wet;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

pub use wet::WetCounters;

/// One document of the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Its URL (`WARC-Target-URI`, the JSON url field, or `path#record`).
    pub url: String,
    /// Its timestamp (`WARC-Date`, the JSON timestamp field, or empty).
    pub timestamp: String,
    /// Its text.
    pub text: String,
    /// Its index in the file (0-based, counting only documents handed out).
    pub record: u64,
}

/// The kinds of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Decide by content: `WARC/` → WET, `{` → JSONL, `PAR1` → Parquet, else text.
    #[default]
    Auto,
    /// Common Crawl WET (`WARC/1.0` conversion records).
    Wet,
    /// One JSON object per line.
    Jsonl,
    /// Parquet with a text column.
    Parquet,
    /// Plain text.
    Text,
}

/// How plain text is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TextUnit {
    /// The whole file is one document.
    #[default]
    File,
    /// Each blank-line-separated block is a document.
    Paragraph,
}

/// Options of the readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Format of every input (auto-detected by default).
    pub format: InputFormat,
    /// JSONL / Parquet field of the text (dotted path for nested JSON).
    pub text_field: String,
    /// JSONL / Parquet field of the URL; missing → `path#record`.
    pub url_field: String,
    /// JSONL / Parquet field of the timestamp; missing → empty.
    pub timestamp_field: String,
    /// Plain-text documents: whole file or blank-line blocks.
    pub text_unit: TextUnit,
    /// Any bad input is an error instead of a counted issue.
    pub strict: bool,
    /// How WARC `response` records (raw HTML) become text.
    #[serde(default)]
    pub extractor: html::Extractor,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: InputFormat::Auto,
            text_field: "text".into(),
            url_field: "url".into(),
            timestamp_field: "timestamp".into(),
            text_unit: TextUnit::File,
            strict: false,
            extractor: html::Extractor::Main,
        }
    }
}

/// A problem with the input that was counted and skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReadIssue {
    /// The file.
    pub path: PathBuf,
    /// Where: "line 3 (byte 512)", "byte 1024", "row 7".
    pub location: String,
    /// Kind of problem, for counting: `malformed_record`, `invalid_utf8`,
    /// `truncated_gzip`, `empty_file`, `missing_field`, `read_error`.
    pub kind: String,
    /// What was wrong.
    pub message: String,
}

/// What reading one file produced besides its documents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileReport {
    /// Detected format.
    pub format: Option<InputFormat>,
    /// Bytes of the file on disk.
    pub file_bytes: u64,
    /// Documents handed out.
    pub documents: u64,
    /// Bad input that was skipped.
    pub issues: Vec<ReadIssue>,
    /// WET records skipped for a missing URL, text or timestamp, or for their type.
    pub wet: WetCounters,
}

impl FileReport {
    /// The same report naming `shown` where it names `local` (see
    /// [`PipelineError::naming`]).
    pub fn naming(mut self, local: &Path, shown: &Path) -> Self {
        for i in &mut self.issues {
            if i.path == local {
                i.path = shown.to_path_buf();
            }
        }
        self
    }

    /// Records an issue, or fails in strict mode.
    pub(crate) fn issue(
        &mut self,
        strict: bool,
        path: &Path,
        location: String,
        kind: &str,
        message: String,
    ) -> Result<()> {
        if strict {
            return Err(PipelineError::BadInput {
                path: path.to_path_buf(),
                location,
                message: format!("{kind}: {message}"),
            });
        }
        self.issues.push(ReadIssue {
            path: path.to_path_buf(),
            location,
            kind: kind.to_string(),
            message,
        });
        Ok(())
    }
}

/// Counts the bytes read through it (the compressed position of a gzip file).
pub(crate) struct CountingReader<R> {
    inner: R,
    pub(crate) count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input: the decompressed stream and whether it was gzip.
pub(crate) struct Opened {
    pub(crate) reader: Box<dyn BufRead + Send>,
    pub(crate) gzip: bool,
    pub(crate) compressed_pos: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn open(path: &Path) -> Result<Opened> {
    let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut raw = BufReader::with_capacity(
        1 << 16,
        CountingReader {
            inner: file,
            count: count.clone(),
        },
    );
    let head = raw.fill_buf().map_err(|e| PipelineError::io(path, e))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead + Send> = if gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    Ok(Opened {
        reader,
        gzip,
        compressed_pos: count,
    })
}

/// Reads every document of `path`, handing each to `sink` in order.
///
/// Returns what was found besides the documents. Fails only when the file
/// cannot be opened, when `sink` fails, or (with `strict`) at the first issue.
pub fn read_file(
    path: &Path,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<FileReport> {
    let mut report = FileReport {
        file_bytes: std::fs::metadata(path)
            .map_err(|e| PipelineError::io(path, e))?
            .len(),
        ..Default::default()
    };
    if report.file_bytes == 0 {
        report.issue(
            opts.strict,
            path,
            "byte 0".into(),
            "empty_file",
            "the file is empty".into(),
        )?;
        return Ok(report);
    }
    let mut opened = open(path)?;
    let format = match opts.format {
        InputFormat::Auto => detect(&mut opened, path)?,
        f => f,
    };
    report.format = Some(format);
    let mut counted = |d: Document, report: &mut FileReport| {
        report.documents += 1;
        sink(d)
    };
    match format {
        InputFormat::Wet => wet::read(path, opened, opts, &mut report, &mut counted)?,
        InputFormat::Jsonl => jsonl::read(path, opened, opts, &mut report, &mut counted)?,
        InputFormat::Parquet => {
            drop(opened);
            parquet_text::read(path, opts, &mut report, &mut counted)?
        }
        InputFormat::Text | InputFormat::Auto => {
            plain::read(path, opened, opts, &mut report, &mut counted)?
        }
    }
    Ok(report)
}

fn detect(opened: &mut Opened, path: &Path) -> Result<InputFormat> {
    let head = match opened.reader.fill_buf() {
        Ok(h) => h,
        // A stream that fails at once (a broken gzip header) is read as text,
        // which then reports the error with its offset.
        Err(_) => return Ok(InputFormat::Text),
    };
    if !opened.gzip && head.starts_with(b"PAR1") {
        return Ok(InputFormat::Parquet);
    }
    if opened.gzip && head.starts_with(b"PAR1") {
        return Err(PipelineError::BadInput {
            path: path.to_path_buf(),
            location: "byte 0".into(),
            message: "gzip-compressed Parquet is not supported; decompress it first".into(),
        });
    }
    let trimmed = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &head[i..])
        .unwrap_or(&[]);
    if trimmed.starts_with(b"WARC/") {
        Ok(InputFormat::Wet)
    } else if trimmed.starts_with(b"{") {
        Ok(InputFormat::Jsonl)
    } else {
        Ok(InputFormat::Text)
    }
}

/// Expands files, directories (recursively, sorted) and glob patterns into a
/// sorted, de-duplicated list of files. Fails if a pattern matches nothing.
pub fn expand_inputs(specs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for spec in specs {
        let p = Path::new(spec);
        if crate::remote::is_paths_list(spec) {
            // Common Crawl's wet.paths.gz: one input per line
            out.extend(
                crate::remote::read_paths_list(spec)?
                    .into_iter()
                    .map(PathBuf::from),
            );
        } else if crate::remote::is_remote(spec) {
            if spec.ends_with('/') {
                let found = crate::remote::list(spec)?;
                if found.is_empty() {
                    return Err(PipelineError::NoInput(format!("{spec} holds no objects")));
                }
                out.extend(found.into_iter().map(PathBuf::from));
            } else {
                out.push(PathBuf::from(spec));
            }
        } else if p.is_dir() {
            let mut files = Vec::new();
            walk_dir(p, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(PipelineError::NoInput(format!(
                    "directory {spec} holds no files"
                )));
            }
            out.extend(files);
        } else if p.is_file() {
            out.push(p.to_path_buf());
        } else {
            let paths = glob::glob(spec).map_err(|e| PipelineError::Config {
                what: format!("input pattern {spec:?}"),
                message: e.to_string(),
            })?;
            let mut files: Vec<PathBuf> = paths
                .filter_map(|r| r.ok())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(PipelineError::NoInput(format!("{spec} matches no file")));
            }
            out.extend(files);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| PipelineError::io(dir, e))? {
        let entry = entry.map_err(|e| PipelineError::io(dir, e))?;
        let p = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk_dir(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Turns a read error into an issue kind: a truncated or corrupt gzip
/// stream, invalid data, or another I/O error.
pub(crate) fn classify_io(e: &io::Error, gzip: bool) -> &'static str {
    match e.kind() {
        io::ErrorKind::UnexpectedEof if gzip => "truncated_gzip",
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData if gzip => "corrupt_gzip",
        _ => "read_error",
    }
}

/// `std::str::from_utf8` with a SIMD check first (simdutf8; ~5× faster on
/// crawl text, which is mostly but not all ASCII); std explains failures.
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> std::result::Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(_) => std::str::from_utf8(bytes),
    }
}

crate::from_name!(
    InputFormat,
    "input format",
    ["auto", "wet", "jsonl", "parquet", "text"]
);
crate::from_name!(TextUnit, "text unit", ["file", "paragraph"]);
