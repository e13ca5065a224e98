//! The whole `c4/en` page pipeline over many input files (tfds `c4.C4`, in
//! its order): length → URL normalization and newest-page dedup → `clean_page` →
//! global line dedup → language ID → bad words → URL-hash split.
//!
//! URL dedup and line dedup need the whole corpus, so the run makes three
//! passes, each parallel with rayon and each deterministic:
//!
//! 1. read and clean every page (files in parallel, pages in parallel batches),
//!    keeping the cleaned pages (or spilling them to a temporary file per
//!    input file), and
//!    build the table *normalized URL → newest page*;
//! 2. read the spills and build the table *line → the page that keeps it*
//!    (smallest md5 of the URL, as tfds);
//! 3. read the spills again, drop lines and pages, run language ID and the
//!    bad-words filter, and write the shards in input order (each batch's
//!    kept pages are compressed in parallel while the next batch is
//!    filtered).
//!
//! Pages stay in memory between the passes within `memory_budget`; beyond
//! it an input file's pages go to its spill file.
//!
//! Memory: the two tables grow with the number of distinct URLs and distinct
//! kept lines (about 50 and 40 bytes each); everything else is streamed.
//! Output bytes do not depend on the number of threads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::config::CleanConfig;
use super::dedup::{
    is_validation, line_keys, md5_u128, normalize_url, remove_unowned_lines, LineOwners,
    LineVerdicts, UrlDedup,
};
use super::filters::{BadWords, LanguageFilter};
use super::output::{Chunk, CleanPage, EncodedChunk, OutputFormat, ShardWriter};
use super::rules::{Cleaned, LineRule, PageCleaner, PageRule, RuleCounters};
use crate::error::{PipelineError, Result};
use crate::readers::{read_file, Document, ReadIssue, ReadOptions, WetCounters};

/// Everything `t5mix clean` needs besides its inputs.
#[derive(Debug, Clone)]
pub struct CleanOptions {
    /// The rules.
    pub config: CleanConfig,
    /// How inputs are read.
    pub read: ReadOptions,
    /// The bad-words filter, if a list was given.
    pub badwords: Option<BadWords>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Parquet or JSONL.gz.
    pub output_format: OutputFormat,
    /// Pages per output shard.
    pub pages_per_shard: usize,
    /// Pages cleaned together in one parallel batch.
    pub batch_pages: usize,
    /// Bytes of cleaned pages kept in memory between the passes; beyond
    /// it, pages are spilled to temporary files in the output folder.
    pub memory_budget: u64,
}

impl CleanOptions {
    /// Options with the default C4 rules writing Parquet to `out_dir`.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        CleanOptions {
            config: CleanConfig::default(),
            read: ReadOptions::default(),
            badwords: None,
            out_dir: out_dir.into(),
            output_format: OutputFormat::Parquet,
            pages_per_shard: 100_000,
            batch_pages: 256,
            memory_budget: 1 << 30,
        }
    }
}

/// Receives progress: stages and bytes of page text done.
pub trait Progress: Sync {
    /// A new stage over `total` bytes of page text (0 if unknown).
    fn stage(&self, name: &str, total: u64);
    /// `n` more bytes done.
    fn advance(&self, n: u64);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// The summary of a clean run (in its `manifest.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CleanStats {
    /// Input files.
    pub files: u64,
    /// Bytes of the input files on disk.
    pub file_bytes_in: u64,
    /// Pages read.
    pub pages_in: u64,
    /// Bytes of page text read (UTF-8).
    pub bytes_in: u64,
    /// Pages written.
    pub pages_out: u64,
    /// Bytes of text written.
    pub bytes_out: u64,
    /// Pages written per split.
    pub pages_per_split: BTreeMap<String, u64>,
    /// Lines that passed `clean_page`.
    pub lines_passed: u64,
    /// Lines dropped, by rule.
    pub lines_dropped: BTreeMap<String, u64>,
    /// Pages dropped, by rule (pipeline order: each page counts once).
    pub pages_dropped: BTreeMap<String, u64>,
    /// Bad input skipped, by kind.
    pub read_issues: BTreeMap<String, u64>,
    /// The first bad inputs, with file and offset.
    pub read_issue_examples: Vec<ReadIssue>,
    /// WET records skipped as tfds `split_wet_file` does (no URL/text/date) or by type.
    pub wet_records_skipped: WetCounters,
    /// Distinct normalized URLs (size of the URL dedup table).
    pub distinct_urls: u64,
    /// Distinct kept lines (size of the line dedup table).
    pub distinct_lines: u64,
    /// Wall time per stage and in total, in seconds.
    pub seconds: BTreeMap<String, f64>,
    /// Page text bytes in per second of total wall time, in MB/s.
    pub mb_per_s: f64,
    /// Worker threads.
    pub threads: usize,
    /// Language filter in force.
    pub language_filter: String,
    /// Bad-words filter in force.
    pub badwords_filter: String,
    /// Output shards (the manifest lists their names).
    #[serde(skip)]
    pub shards: Vec<PathBuf>,
}

const SPILL_LINE_FIELDS: [LineRule; 5] = [
    LineRule::TooLongWord,
    LineRule::NoEndmark,
    LineRule::TooShort,
    LineRule::Javascript,
    LineRule::Policy,
];

/// A page after pass 1, as spilled to disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spilled {
    pub(crate) record: u64,
    /// 0: kept; k: dropped by `PageRule::ALL[k - 1]`.
    pub(crate) verdict: u8,
    pub(crate) lines: [u32; 6],
    pub(crate) normalized_url: String,
    pub(crate) url: String,
    pub(crate) timestamp: String,
    pub(crate) text: String,
    /// md5 of the URL (the line-ownership key).
    pub(crate) url_hash: u128,
    /// `line_keys(text)` when line dedup is on (hashed in the parallel pass).
    pub(crate) line_keys: Vec<u128>,
}

pub(crate) fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

pub(crate) fn get_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

pub(crate) fn get_str(r: &mut impl Read) -> std::io::Result<String> {
    let n = get_u32(r)? as usize;
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    String::from_utf8(v).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Spilled {
    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.record.to_le_bytes())?;
        w.write_all(&[self.verdict])?;
        for l in self.lines {
            w.write_all(&l.to_le_bytes())?;
        }
        put_str(w, &self.normalized_url)?;
        put_str(w, &self.url)?;
        put_str(w, &self.timestamp)?;
        put_str(w, &self.text)?;
        w.write_all(&self.url_hash.to_le_bytes())?;
        w.write_all(&(self.line_keys.len() as u32).to_le_bytes())?;
        for k in &self.line_keys {
            w.write_all(&k.to_le_bytes())?;
        }
        Ok(())
    }

    /// Reads the next record; without `with_text` (the line-dedup index)
    /// the URL, timestamp and text are skipped, not read.
    fn read(r: &mut (impl Read + std::io::Seek), with_text: bool) -> std::io::Result<Option<Self>> {
        let mut rec = [0u8; 8];
        match r.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut v = [0u8; 1];
        r.read_exact(&mut v)?;
        let mut lines = [0u32; 6];
        for l in &mut lines {
            *l = get_u32(r)?;
        }
        let normalized_url = get_str(r)?;
        let mut fields = [String::new(), String::new(), String::new()];
        for f in &mut fields {
            if with_text {
                *f = get_str(r)?;
            } else {
                let n = get_u32(r)?;
                r.seek_relative(n as i64)?;
            }
        }
        let [url, timestamp, text] = fields;
        let mut h = [0u8; 16];
        r.read_exact(&mut h)?;
        let n = get_u32(r)? as usize;
        let mut keys = vec![0u8; n * 16];
        r.read_exact(&mut keys)?;
        Ok(Some(Spilled {
            record: u64::from_le_bytes(rec),
            verdict: v[0],
            lines,
            normalized_url,
            url,
            timestamp,
            text,
            url_hash: u128::from_le_bytes(h),
            line_keys: keys
                .chunks_exact(16)
                .map(|c| u128::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }))
    }

    fn counters(&self) -> RuleCounters {
        let mut c = RuleCounters::default();
        for (k, r) in SPILL_LINE_FIELDS.iter().enumerate() {
            c.lines_dropped[*r as usize] = self.lines[k] as u64;
        }
        c.lines_passed = self.lines[5] as u64;
        c
    }
}

/// Where pass 1 left one input file's pages.
pub(crate) enum Store {
    /// In memory (within the budget).
    Memory(Vec<Spilled>),
    /// Spilled to a temporary file.
    File(PathBuf),
}

impl Spilled {
    /// Approximate heap bytes, for the memory budget.
    fn size(&self) -> u64 {
        (self.text.len()
            + self.url.len()
            + self.normalized_url.len()
            + self.timestamp.len()
            + 16 * self.line_keys.len()
            + 96) as u64
    }
}

/// What pass 1 produced for one input file.
pub(crate) struct FileSpill {
    pub(crate) spill: Store,
    pub(crate) urls: UrlDedup,
    pub(crate) pages_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) too_long: u64,
    pub(crate) report: crate::readers::FileReport,
}

fn clean_one(doc: Document, cleaner: &PageCleaner, line_dedup: bool) -> Option<Spilled> {
    if !cleaner.valid_length(&doc.text) {
        return None;
    }
    let mut counters = RuleCounters::default();
    let verdict = cleaner.clean_page(&doc.text, &mut counters, None);
    let mut lines = [0u32; 6];
    for (k, r) in SPILL_LINE_FIELDS.iter().enumerate() {
        lines[k] = counters.lines(*r) as u32;
    }
    lines[5] = counters.lines_passed as u32;
    let (verdict, text) = match verdict {
        Cleaned::Kept { text, .. } => (0u8, text),
        Cleaned::Dropped(rule) => (rule as u8 + 1, String::new()),
    };
    let line_keys = if line_dedup && verdict == 0 {
        line_keys(&text)
    } else {
        Vec::new()
    };
    Some(Spilled {
        record: doc.record,
        verdict,
        lines,
        normalized_url: normalize_url(&doc.url),
        url_hash: md5_u128(&doc.url),
        url: doc.url,
        timestamp: doc.timestamp,
        text,
        line_keys,
    })
}

pub(crate) fn pass1_file(
    file_index: usize,
    path: &Path,
    spill_dir: &Path,
    opts: &CleanOptions,
    cleaner: &PageCleaner,
    progress: &dyn Progress,
    budget: &std::sync::atomic::AtomicU64,
) -> Result<FileSpill> {
    use std::sync::atomic::Ordering;
    let spill = spill_dir.join(format!("{file_index:06}.spill"));
    // pages stay in memory while the shared budget lasts, then this file's
    // pages (those kept so far first, in order) go to its spill file
    let mut memory: Vec<Spilled> = Vec::new();
    let mut held = 0u64;
    let mut w: Option<BufWriter<File>> = None;
    let mut urls = UrlDedup::default();
    let mut batch: Vec<Document> = Vec::with_capacity(opts.batch_pages);
    let (mut pages_in, mut bytes_in, mut too_long) = (0u64, 0u64, 0u64);
    let url_dedup = opts.config.url_dedup;
    let mut keep = |s: Spilled, w: &mut Option<BufWriter<File>>| -> Result<()> {
        if w.is_none() {
            let size = s.size();
            let took = budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    b.checked_sub(size)
                })
                .is_ok();
            if took {
                held += size;
                memory.push(s);
                return Ok(());
            }
            let f = File::create(&spill).map_err(|e| PipelineError::io(&spill, e))?;
            let mut fw = BufWriter::with_capacity(1 << 20, f);
            for m in memory.drain(..) {
                m.write(&mut fw).map_err(|e| PipelineError::io(&spill, e))?;
            }
            budget.fetch_add(held, Ordering::Relaxed);
            held = 0;
            *w = Some(fw);
        }
        let fw = w.as_mut().expect("spill writer");
        s.write(fw).map_err(|e| PipelineError::io(&spill, e))
    };
    let mut flush = |batch: &mut Vec<Document>,
                     w: &mut Option<BufWriter<File>>,
                     urls: &mut UrlDedup,
                     too_long: &mut u64|
     -> Result<()> {
        let bytes: u64 = batch.iter().map(|d| d.text.len() as u64).sum();
        let done: Vec<Option<Spilled>> = std::mem::take(batch)
            .into_par_iter()
            .map(|d| clean_one(d, cleaner, opts.config.line_dedup))
            .collect();
        for s in done {
            match s {
                None => *too_long += 1,
                Some(s) => {
                    if url_dedup {
                        urls.offer(
                            &s.normalized_url,
                            &s.timestamp,
                            (file_index as u64, s.record),
                        );
                    }
                    keep(s, w)?;
                }
            }
        }
        progress.advance(bytes);
        Ok(())
    };
    // a remote input is read from a local copy, one file at a time
    let download = match path.to_str().filter(|s| crate::remote::is_remote(s)) {
        Some(url) => Some(crate::remote::Download::fetch(url, spill_dir, file_index)?),
        None => None,
    };
    let local = download.as_ref().map_or(path, |d| d.path());
    let report = read_file(local, &opts.read, &mut |doc| {
        pages_in += 1;
        bytes_in += doc.text.len() as u64;
        batch.push(doc);
        if batch.len() >= opts.batch_pages {
            flush(&mut batch, &mut w, &mut urls, &mut too_long)?;
        }
        Ok(())
    })
    .map(|r| r.naming(local, path))
    .map_err(|e| e.naming(local, path))?;
    flush(&mut batch, &mut w, &mut urls, &mut too_long)?;
    let store = match w {
        Some(mut fw) => {
            fw.flush().map_err(|e| PipelineError::io(&spill, e))?;
            Store::File(spill)
        }
        None => Store::Memory(memory),
    };
    Ok(FileSpill {
        spill: store,
        urls,
        pages_in,
        bytes_in,
        too_long,
        report,
    })
}

/// Calls `f` on every page of a store, in order (pages read back without
/// their text).
fn for_each_page_keys(store: &Store, n: usize, mut f: impl FnMut(&Spilled)) -> Result<()> {
    match store {
        Store::Memory(v) => {
            v.iter().for_each(f);
            Ok(())
        }
        Store::File(path) => for_each_spill_batch(path, n, true, |batch| {
            batch.iter().for_each(&mut f);
            Ok(())
        }),
    }
}

/// Hands the pages of a store to `f` in batches of `n`, in order.
fn for_each_store_batch(
    store: Store,
    n: usize,
    mut f: impl FnMut(Vec<Spilled>) -> Result<()>,
) -> Result<()> {
    match store {
        Store::Memory(v) => {
            // each page moves once (not the whole tail at every batch)
            let mut pages = v.into_iter();
            loop {
                let batch: Vec<Spilled> = pages.by_ref().take(n.max(1)).collect();
                if batch.is_empty() {
                    return Ok(());
                }
                f(batch)?;
            }
        }
        Store::File(path) => for_each_spill_batch(&path, n, false, f),
    }
}

/// Reads a spill file in batches of `n` pages (without their text if
/// `keys_only`).
pub(crate) fn for_each_spill_batch(
    path: &Path,
    n: usize,
    keys_only: bool,
    mut f: impl FnMut(Vec<Spilled>) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut batch = Vec::with_capacity(n);
    while let Some(s) = Spilled::read(&mut r, !keys_only).map_err(|e| PipelineError::io(path, e))? {
        batch.push(s);
        if batch.len() >= n {
            f(std::mem::replace(&mut batch, Vec::with_capacity(n)))?;
        }
    }
    if !batch.is_empty() {
        f(batch)?;
    }
    Ok(())
}

/// Pass 3 filters pages in batches of this many `batch_pages`; the pages a
/// batch keeps become Parquet row groups (or gzip members) of at most
/// [`super::output::CHUNK_TEXT_BYTES`] of text, compressed on the rayon pool
/// while the next batch is filtered.
pub(crate) const PASS3_BATCHES: usize = 4;

/// The pass-3 decision for one spilled page.
pub(crate) struct Outcome {
    pub(crate) counters: RuleCounters,
    pub(crate) page: Option<CleanPage>,
}

pub(crate) struct Finisher<'a> {
    pub(crate) cfg: &'a CleanConfig,
    pub(crate) cleaner: &'a PageCleaner,
    /// Whether the page at (file, record) is the one kept for its URL.
    pub(crate) url_winner: &'a (dyn Fn(&str, (u64, u64)) -> bool + Sync),
    pub(crate) lines: Option<LineVerdicts<'a>>,
    pub(crate) language: Option<&'a LanguageFilter>,
    pub(crate) badwords: Option<&'a BadWords>,
}

impl Finisher<'_> {
    /// Decides a page; with [`LineVerdicts::Owned`], `first_line` is the
    /// index of its first line.
    pub(crate) fn finish(&self, file_index: usize, s: Spilled, first_line: u64) -> Outcome {
        let mut counters = RuleCounters::default();
        if self.cfg.url_dedup
            && !(self.url_winner)(&s.normalized_url, (file_index as u64, s.record))
        {
            counters.page(PageRule::DuplicateUrl);
            return Outcome {
                counters,
                page: None,
            };
        }
        counters.merge(&s.counters());
        if s.verdict > 0 {
            counters.page(PageRule::ALL[s.verdict as usize - 1]);
            return Outcome {
                counters,
                page: None,
            };
        }
        let mut text = s.text;
        if let Some(lines) = &self.lines {
            let (new_text, [_, global, local]) = match lines {
                LineVerdicts::Owners(owners) => {
                    owners.remove_lines_keyed(text, &s.line_keys, s.url_hash)
                }
                LineVerdicts::Owned(bits) => remove_unowned_lines(text, &s.line_keys, |j, _| {
                    bits.contains(first_line + j as u64)
                }),
            };
            counters.lines_dropped[LineRule::GlobalDuplicate as usize] += global;
            counters.lines_dropped[LineRule::LocalDuplicate as usize] += local;
            let drop = if new_text.is_empty() {
                Some(PageRule::DedupEmpty)
            } else if self.cfg.min_num_sentences > 0
                && self
                    .cleaner
                    .sentence_tokenizer()
                    .count_sentences_up_to(&new_text, self.cfg.min_num_sentences)
                    < self.cfg.min_num_sentences
            {
                Some(PageRule::DedupTooFewSentences)
            } else {
                None
            };
            if let Some(rule) = drop {
                counters.page(rule);
                return Outcome {
                    counters,
                    page: None,
                };
            }
            text = new_text;
        }
        if let Some(lang) = self.language {
            if !lang.keep(&text) {
                counters.page(PageRule::Language);
                return Outcome {
                    counters,
                    page: None,
                };
            }
        }
        if let Some(bad) = self.badwords {
            if bad.matches(&text) {
                counters.page(PageRule::Badwords);
                return Outcome {
                    counters,
                    page: None,
                };
            }
        }
        let split = if is_validation(&s.normalized_url, self.cfg.validation_modulus) {
            "validation"
        } else {
            "train"
        };
        Outcome {
            counters,
            page: Some(CleanPage {
                text,
                url: s.url,
                timestamp: s.timestamp,
                split: split.to_string(),
            }),
        }
    }
}

/// The key/value metadata of every clean shard: the version and the rules.
pub(crate) fn shard_metadata(cfg: &CleanConfig) -> Vec<(String, String)> {
    vec![
        (
            "t5mix.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "t5mix.clean_config".to_string(),
            serde_json::to_string(cfg).unwrap_or_default(),
        ),
    ]
}

/// Runs the cleaner over `inputs` (in that order) and writes shards and
/// `manifest.json` into `opts.out_dir`.
pub fn run_clean(
    inputs: &[PathBuf],
    opts: &CleanOptions,
    progress: &dyn Progress,
) -> Result<CleanStats> {
    let t0 = Instant::now();
    let cfg = &opts.config;
    let cleaner = PageCleaner::new(cfg.clone());
    let language = LanguageFilter::for_config(cfg)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| PipelineError::io(&opts.out_dir, e))?;
    let spill_dir = tempfile::Builder::new()
        .prefix(".t5mix-clean-")
        .tempdir_in(&opts.out_dir)
        .map_err(|e| PipelineError::io(&opts.out_dir, e))?;

    let mut stats = CleanStats::start(inputs.len(), opts);

    // Pass 1: read, clean, spill; URL table.
    let total: u64 = inputs
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    progress.stage("clean", total);
    let t = Instant::now();
    let budget = std::sync::atomic::AtomicU64::new(opts.memory_budget);
    let spills: Vec<FileSpill> = inputs
        .par_iter()
        .enumerate()
        .map(|(i, p)| pass1_file(i, p, spill_dir.path(), opts, &cleaner, progress, &budget))
        .collect::<Result<_>>()?;
    stats
        .seconds
        .insert("1_read_clean".into(), t.elapsed().as_secs_f64());
    let mut urls = UrlDedup::default();
    let mut counters = RuleCounters::default();
    let mut spill_files = Vec::new();
    for s in spills {
        stats.add_read(s.pages_in, s.bytes_in, s.report);
        counters.pages_dropped[PageRule::TooLong as usize] += s.too_long;
        urls.merge(s.urls);
        spill_files.push(s.spill);
    }
    stats.distinct_urls = urls.len() as u64;

    // Pass 2: which page keeps each line.
    let owners = if cfg.line_dedup {
        progress.stage("dedup-index", 0);
        let t = Instant::now();
        let tables: Vec<LineOwners> = spill_files
            .par_iter()
            .enumerate()
            .map(|(i, store)| {
                let mut owners = LineOwners::default();
                for_each_page_keys(store, opts.batch_pages, |s| {
                    if s.verdict == 0
                        && (!cfg.url_dedup
                            || urls.is_winner(&s.normalized_url, (i as u64, s.record)))
                    {
                        owners.offer_keys(&s.line_keys, s.url_hash);
                    }
                })?;
                Ok(owners)
            })
            .collect::<Result<_>>()?;
        let mut owners = LineOwners::default();
        for t in tables {
            owners.merge(t);
        }
        stats.distinct_lines = owners.len() as u64;
        stats
            .seconds
            .insert("2_dedup_index".into(), t.elapsed().as_secs_f64());
        Some(owners)
    } else {
        None
    };

    // Pass 3: finish pages and write shards in input order.
    progress.stage("write", 0);
    let t = Instant::now();
    let url_winner = |u: &str, pos: (u64, u64)| urls.is_winner(u, pos);
    let fin = Finisher {
        cfg,
        cleaner: &cleaner,
        url_winner: &url_winner,
        lines: owners.as_ref().map(LineVerdicts::Owners),
        language: language.as_ref(),
        badwords: opts.badwords.as_ref(),
    };
    let metadata = shard_metadata(cfg);
    let mut writer = ShardWriter::new(
        &opts.out_dir,
        opts.output_format,
        opts.pages_per_shard,
        metadata,
    )?;
    // Pipelined: while a batch is filtered, the pages kept from the previous
    // one are compressed (both on the rayon pool), then written in order.
    let encoding = writer.encoding();
    let mut to_encode: Vec<Chunk> = Vec::new();
    let encode_and_write = |chunks: Vec<Chunk>, writer: &mut ShardWriter| -> Result<()> {
        let encoded: Vec<EncodedChunk> = chunks
            .into_par_iter()
            .map(|c| c.encode(&encoding))
            .collect::<Result<_>>()?;
        encoded.into_iter().try_for_each(|e| writer.append(e))
    };
    for (i, store) in spill_files.into_iter().enumerate() {
        for_each_store_batch(store, opts.batch_pages * PASS3_BATCHES, |batch| {
            let bytes: u64 = batch.iter().map(|s| s.text.len() as u64).sum();
            let previous = std::mem::take(&mut to_encode);
            let (outcomes, written) = rayon::join(
                || {
                    batch
                        .into_par_iter()
                        .map(|s| fin.finish(i, s, 0))
                        .collect::<Vec<Outcome>>()
                },
                || encode_and_write(previous, &mut writer),
            );
            written?;
            let pages = stats.add_outcomes(outcomes, &mut counters);
            to_encode = writer.plan(pages);
            progress.advance(bytes);
            Ok(())
        })?;
    }
    encode_and_write(to_encode, &mut writer)?;
    let (shards, bytes_out) = writer.finish()?;
    stats.shards = shards;
    stats.bytes_out = bytes_out;
    stats
        .seconds
        .insert("3_filter_write".into(), t.elapsed().as_secs_f64());

    stats.close(&counters, t0);
    stats.write_manifest(&opts.out_dir)?;
    Ok(stats)
}

impl CleanStats {
    /// The statistics of a run over `files` inputs before any is read.
    pub(crate) fn start(files: usize, opts: &CleanOptions) -> Self {
        let cfg = &opts.config;
        CleanStats {
            files: files as u64,
            threads: rayon::current_num_threads(),
            language_filter: if cfg.language.is_empty() {
                "off".into()
            } else {
                format!(
                    "whatlang: {} with confidence >= {}",
                    cfg.language, cfg.min_language_confidence
                )
            },
            badwords_filter: match &opts.badwords {
                Some(b) => format!("{} words", b.len()),
                None => "off (no list given)".into(),
            },
            ..Default::default()
        }
    }

    /// Adds what reading one input file gave.
    pub(crate) fn add_read(
        &mut self,
        pages_in: u64,
        bytes_in: u64,
        report: crate::readers::FileReport,
    ) {
        self.pages_in += pages_in;
        self.bytes_in += bytes_in;
        self.file_bytes_in += report.file_bytes;
        self.wet_records_skipped.merge(&report.wet);
        for issue in report.issues {
            *self.read_issues.entry(issue.kind.clone()).or_default() += 1;
            if self.read_issue_examples.len() < 20 {
                self.read_issue_examples.push(issue);
            }
        }
    }

    /// Counts the final decisions on a batch of pages; returns the kept ones.
    pub(crate) fn add_outcomes(
        &mut self,
        outcomes: Vec<Outcome>,
        counters: &mut RuleCounters,
    ) -> Vec<CleanPage> {
        let mut pages = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            counters.merge(&o.counters);
            if let Some(p) = o.page {
                *self.pages_per_split.entry(p.split.clone()).or_default() += 1;
                self.pages_out += 1;
                pages.push(p);
            }
        }
        pages
    }

    /// Fills in the rule counts and the run's time.
    pub(crate) fn close(&mut self, counters: &RuleCounters, t0: Instant) {
        self.lines_passed = counters.lines_passed;
        for r in LineRule::ALL {
            self.lines_dropped
                .insert(r.name().into(), counters.lines(r));
        }
        for r in PageRule::ALL {
            self.pages_dropped
                .insert(r.name().into(), counters.pages(r));
        }
        let secs = t0.elapsed().as_secs_f64();
        self.seconds.insert("total".into(), secs);
        self.mb_per_s = self.bytes_in as f64 / 1e6 / secs.max(1e-9);
    }

    /// Writes the clean folder's `manifest.json` (shards and these statistics).
    pub(crate) fn write_manifest(&self, dir: &Path) -> Result<()> {
        crate::manifest::Manifest::Clean(crate::manifest::CleanManifest {
            shards: self
                .shards
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect(),
            stats: self.clone(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .write(dir)
    }
}

impl std::fmt::Display for CleanStats {
    /// The summary `t5mix clean` prints: pages and bytes in and out, speed,
    /// splits, what each rule dropped, skipped input.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self;

        let mb = |b: u64| b as f64 / 1e6;
        writeln!(f,
        "clean: {} files, {} pages ({:.1} MB of text) in, {} pages ({:.1} MB) out in {:.2} s ({:.1} MB/s, {} threads)",
        s.files,
        s.pages_in,
        mb(s.bytes_in),
        s.pages_out,
        mb(s.bytes_out),
        s.seconds.get("total").copied().unwrap_or(0.0),
        s.mb_per_s,
        s.threads
    )?;
        let splits: Vec<String> = s
            .pages_per_split
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "  splits: {}",
            if splits.is_empty() {
                "-".into()
            } else {
                splits.join(", ")
            }
        )?;
        let dropped: Vec<String> = s
            .pages_dropped
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "  pages dropped: {}",
            if dropped.is_empty() {
                "none".into()
            } else {
                dropped.join(", ")
            }
        )?;
        let lines: Vec<String> = s
            .lines_dropped
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "  lines: {} kept by clean_page; dropped: {}",
            s.lines_passed,
            if lines.is_empty() {
                "none".into()
            } else {
                lines.join(", ")
            }
        )?;
        let w = &s.wet_records_skipped;
        if w.no_url + w.no_content + w.no_timestamp + w.other_record_type > 0 {
            writeln!(f,
            "  WET records skipped: no url {}, no content {}, no timestamp {}, other record type {}",
            w.no_url, w.no_content, w.no_timestamp, w.other_record_type
        )?;
        }
        if w.warc_lines_in_content > 0 {
            writeln!(
                f,
                "  WARC/1.0 lines inside pages (tfds would have cut those pages there): {}",
                w.warc_lines_in_content
            )?;
        }
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !w.responses.is_empty() {
            writeln!(
                f,
                "  WARC records by type: {}; responses: {}; charsets: {}",
                list(&w.records_by_type),
                list(&w.responses),
                list(&w.charsets)
            )?;
        }
        writeln!(
            f,
            "  language: {}; bad words: {}",
            s.language_filter, s.badwords_filter
        )?;
        if !s.read_issues.is_empty() {
            let kinds: Vec<String> = s
                .read_issues
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  bad input skipped: {}", kinds.join(", "))?;
            for i in s.read_issue_examples.iter().take(5) {
                writeln!(
                    f,
                    "    {}: {}: {}: {}",
                    i.path.display(),
                    i.location,
                    i.kind,
                    i.message
                )?;
            }
        }
        write!(f, "  wrote {} shard(s) and manifest.json", s.shards.len())
    }
}
